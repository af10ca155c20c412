//! The shared speech assets (testdata/audio) through every part of the crate.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::Duration;

use voq_audio::{
    Codec, Decoder, Encoder, FRAME_SAMPLES, SAMPLE_RATE, SampleFormat, Vad, VadConfig, VadEvent,
    Wav, best_correlation, metrics, read_wav, read_wav_file, resample_i16, rms_dbfs, write_wav,
};

fn asset(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/audio")
        .join(name)
}

fn prompt() -> Vec<i16> {
    read_wav_file(asset("prompt-carwash-24k.wav"))
        .unwrap()
        .samples
}

#[test]
fn assets_parse_with_their_durations() {
    for (name, secs) in [
        ("prompt-carwash-24k.wav", 2.765),
        ("prompt-lisbon-24k.wav", 13.679),
        ("reply-carwash-24k.wav", 16.130),
    ] {
        let wav = read_wav_file(asset(name)).unwrap();
        assert_eq!(
            (wav.rate, wav.channels, wav.format),
            (24_000, 1, SampleFormat::I16),
            "{name}"
        );
        let d = wav.duration().as_secs_f64();
        assert!((d - secs).abs() < 0.001, "{name}: {d} s");
        // 24 kHz mono is voq's format already: untouched.
        assert_eq!(wav.to_mono_24k().unwrap(), wav.samples, "{name}");
        // Writing gives back the same samples.
        let again = read_wav(&write_wav(&wav.samples, wav.rate).unwrap()).unwrap();
        assert_eq!(again, wav, "{name}");
    }
}

#[test]
fn pcm16_round_trip_of_the_prompt_is_bit_exact() {
    let pcm = prompt();
    let mut enc = Encoder::new(Codec::Pcm16).unwrap();
    let mut dec = Decoder::new(Codec::Pcm16).unwrap();
    let mut out = Vec::new();
    for frame in pcm.chunks(FRAME_SAMPLES) {
        let mut payload = Vec::new();
        assert_eq!(enc.encode(frame, &mut payload).unwrap(), frame.len() * 2);
        dec.decode(&payload, &mut out).unwrap();
    }
    // 66 359 samples: the last frame is short, and stays short.
    assert_ne!(pcm.len() % FRAME_SAMPLES, 0);
    assert_eq!(out, pcm);
}

#[test]
fn opus_round_trip_of_the_prompt() {
    let pcm = prompt();
    let mut enc = Encoder::new(Codec::Opus).unwrap();
    let mut dec = Decoder::new(Codec::Opus).unwrap();
    let lookahead = enc.lookahead().unwrap();
    let mut out = Vec::new();
    let mut bytes = 0;
    for frame in pcm.chunks(FRAME_SAMPLES) {
        let mut payload = Vec::new();
        bytes += enc.encode(frame, &mut payload).unwrap();
        assert_eq!(dec.decode(&payload, &mut out).unwrap(), FRAME_SAMPLES);
    }
    // Duration preserved within one frame (the last one is padded to a whole frame).
    assert!(out.len() >= pcm.len() && out.len() < pcm.len() + FRAME_SAMPLES);
    // About 32 kbit/s.
    let kbps = bytes as f64 * 8.0 / metrics::duration(pcm.len(), SAMPLE_RATE).as_secs_f64() / 1e3;
    assert!((20.0..40.0).contains(&kbps), "{kbps} kbit/s");

    // The decoded speech is the prompt, late by the encoder's look-ahead: libopus reports 156
    // samples (6.5 ms); the correlation peak of this SILK/hybrid-mode speech measures 155 (at
    // 64 kbit/s and up, CELT mode, it is 156).
    let (corr, lag) = best_correlation(&pcm, &out, 960);
    assert_eq!(lookahead, 156, "6.5 ms at 24 kHz");
    assert!(
        (lag - 156).abs() <= 1,
        "measured delay {lag}, correlation {corr}"
    );
    assert!(corr > 0.9, "correlation {corr} at lag {lag}");
    let aligned = &out[lag.unsigned_abs()..];
    let snr = metrics::snr_db(&pcm, aligned);
    assert!(snr > 8.0, "aligned SNR {snr} dB");
    assert!((rms_dbfs(&pcm) - rms_dbfs(&aligned[..pcm.len()])).abs() < 1.0);
}

#[test]
fn opus_concealment_fills_lost_frames() {
    let pcm = prompt();
    let mut enc = Encoder::new(Codec::Opus).unwrap();
    let mut dec = Decoder::new(Codec::Opus).unwrap();
    let mut out = Vec::new();
    let mut lost = 0;
    for (k, frame) in pcm.chunks(FRAME_SAMPLES).enumerate() {
        let mut payload = Vec::new();
        enc.encode(frame, &mut payload).unwrap();
        if k % 10 == 5 {
            lost += 1;
            assert_eq!(dec.conceal(&mut out).unwrap(), FRAME_SAMPLES);
        } else {
            dec.decode(&payload, &mut out).unwrap();
        }
    }
    assert_eq!(lost, 14);
    assert_eq!(out.len(), pcm.len().div_ceil(FRAME_SAMPLES) * FRAME_SAMPLES);
    // 10 % loss, concealed: still clearly the same speech, worse than no loss.
    let (corr, lag) = best_correlation(&pcm, &out, 480);
    assert!((lag - 156).abs() <= 1, "measured delay {lag}");
    assert!(corr > 0.6 && corr < 0.97, "correlation {corr}");
}

#[test]
fn other_rates_and_layouts_become_voq_audio() {
    let pcm = prompt();
    // The prompt as a 48 kHz stereo float file (right channel = left).
    let up = resample_i16(&pcm, 24_000, 48_000).unwrap();
    assert_eq!(up.len(), pcm.len() * 2);
    let data: Vec<u8> = up
        .iter()
        .flat_map(|&s| {
            let f = f32::from(s) / 32768.0;
            [f, f]
        })
        .flat_map(f32::to_le_bytes)
        .collect();
    let mut file = b"RIFF\0\0\0\0WAVEfmt \x10\0\0\0".to_vec();
    file.extend_from_slice(&3u16.to_le_bytes()); // IEEE float
    file.extend_from_slice(&2u16.to_le_bytes());
    file.extend_from_slice(&48_000u32.to_le_bytes());
    file.extend_from_slice(&(48_000u32 * 8).to_le_bytes());
    file.extend_from_slice(&8u16.to_le_bytes());
    file.extend_from_slice(&32u16.to_le_bytes());
    file.extend_from_slice(b"data");
    file.extend_from_slice(&(data.len() as u32).to_le_bytes());
    file.extend_from_slice(&data);
    let riff = file.len() as u32 - 8;
    file[4..8].copy_from_slice(&riff.to_le_bytes());

    let wav: Wav = read_wav(&file).unwrap();
    assert_eq!(
        (wav.rate, wav.channels, wav.format),
        (48_000, 2, SampleFormat::F32)
    );
    assert_eq!(wav.duration(), Duration::from_nanos(2_764_958_333));
    let back = wav.to_mono_24k().unwrap();
    assert_eq!(back.len(), pcm.len());
    let (corr, lag) = best_correlation(&pcm, &back, 100);
    assert_eq!(lag, 0, "the resampler adds no delay");
    assert!(corr > 0.999, "correlation {corr}");
    let snr = metrics::snr_db(&pcm, &back);
    assert!(snr > 25.0, "up/down SNR {snr} dB");
}

/// VAD events over `pcm` followed by `tail_ms` of silence: (reported at ms, event).
fn vad_events(pcm: &[i16], tail_ms: usize) -> Vec<(u64, VadEvent)> {
    let mut pcm = pcm.to_vec();
    pcm.resize(pcm.len() + tail_ms * 24, 0);
    let mut vad = Vad::new(VadConfig::default());
    let events: Vec<_> = pcm
        .chunks(FRAME_SAMPLES)
        .filter_map(|f| vad.push(f).map(|e| (vad.elapsed_ms(), e)))
        .collect();
    assert_eq!(vad.finish(), None, "speech stopped before the input ended");
    events
}

#[test]
fn vad_finds_the_prompt() {
    // The carwash prompt: speech from the very start to 2.38 s, then 0.38 s of silence.
    let events = vad_events(&prompt(), 1000);
    assert_eq!(events.len(), 2, "{events:?}");
    let (reported, VadEvent::SpeechStarted { at_ms: start }) = events[0] else {
        panic!("{events:?}")
    };
    assert!(start <= 40, "started at {start} ms");
    assert_eq!(reported, start + 80, "after min_speech_ms");
    let (reported, VadEvent::SpeechStopped { at_ms: end }) = events[1] else {
        panic!("{events:?}")
    };
    assert!((2_300..=2_460).contains(&end), "stopped at {end} ms");
    assert_eq!(reported, end + 500, "after the hangover");

    // The Lisbon prompt: pauses of up to 400 ms between phrases stay one utterance.
    let lisbon = read_wav_file(asset("prompt-lisbon-24k.wav"))
        .unwrap()
        .samples;
    let events: Vec<VadEvent> = vad_events(&lisbon, 1000).into_iter().map(|e| e.1).collect();
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(matches!(events[0], VadEvent::SpeechStarted { at_ms } if at_ms <= 60));
    assert!(
        matches!(events[1], VadEvent::SpeechStopped { at_ms } if (13_260..=13_420).contains(&at_ms))
    );

    // A shorter hangover splits it at the pauses.
    let short = VadConfig {
        hangover_ms: 300,
        ..VadConfig::default()
    };
    let mut vad = Vad::new(short);
    let n = lisbon
        .chunks(FRAME_SAMPLES)
        .filter(|f| matches!(vad.push(f), Some(VadEvent::SpeechStarted { .. })))
        .count();
    assert!(n >= 3, "{n} utterances");
}
