//! Opus encode and decode cost at each complexity, on the demo prompt (ms of CPU per second of
//! audio), for choosing the server's encoder settings: `cargo run --release -p voq-audio
//! --example opus_cost`.
#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::disallowed_methods)]

fn main() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/audio/prompt-carwash-24k.wav");
    let pcm = voq_audio::read_wav_file(path)
        .unwrap()
        .to_mono_24k()
        .unwrap();
    let seconds = pcm.len() as f64 / 24_000.0;
    for complexity in [0, 2, 3, 5, 7, 10] {
        let mut enc =
            opus::Encoder::new(24_000, opus::Channels::Mono, opus::Application::Voip).unwrap();
        enc.set_bitrate(opus::Bitrate::Bits(32_000)).unwrap();
        enc.set_complexity(complexity).unwrap();
        let mut out = vec![0u8; 4000];
        let t = std::time::Instant::now();
        let mut frames = Vec::new();
        for _ in 0..20 {
            frames.clear();
            for f in pcm.chunks_exact(480) {
                let n = enc.encode(f, &mut out).unwrap();
                frames.push(out[..n].to_vec());
            }
        }
        let enc_ms = t.elapsed().as_secs_f64() * 1000.0 / (20.0 * seconds);
        let mut dec = opus::Decoder::new(24_000, opus::Channels::Mono).unwrap();
        let mut pcm_out = vec![0i16; 480];
        let t = std::time::Instant::now();
        for _ in 0..20 {
            for f in &frames {
                dec.decode(f, &mut pcm_out, false).unwrap();
            }
        }
        let dec_ms = t.elapsed().as_secs_f64() * 1000.0 / (20.0 * seconds);
        println!(
            "complexity {complexity:>2}: encode {enc_ms:.2} ms, decode {dec_ms:.2} ms per second of audio"
        );
    }
}
