/**
 * Audio codecs: `pcm16` (little-endian 16-bit, bit-exact) in plain code, `opus` through WebCodecs
 * (`AudioEncoder`/`AudioDecoder`, 24 kHz mono, 20 ms, raw Opus packets — not Ogg).
 */

import { UnsupportedError } from '../errors.js';
import type { Codec } from '../events.js';
import { FRAME_SAMPLES, SAMPLE_RATE } from '../events.js';

/** Encodes 20 ms frames (480 samples at 24 kHz, −1…1) into codec payloads. */
export interface AudioFrameEncoder {
  encode(samples: Float32Array): void;
  /** Resolves when every frame given so far has come out of `onPacket`. */
  flush(): Promise<void>;
  close(): void;
}

/** Decodes codec payloads into samples placed at their pts. */
export interface AudioFrameDecoder {
  decode(pts: number, payload: Uint8Array): void;
  /** Resolves when every payload given so far has come out of `onSamples`. */
  flush(): Promise<void>;
  close(): void;
}

export interface CodecFactory {
  encoder(codec: Codec, onPacket: (payload: Uint8Array, samples: number) => void, onError: (e: Error) => void): AudioFrameEncoder;
  decoder(codec: Codec, onSamples: (pts: number, samples: Float32Array) => void, onError: (e: Error) => void): AudioFrameDecoder;
}

/** Float samples → pcm16 little-endian (round to nearest; the inverse of {@link pcm16ToFloat}). */
export function floatToPcm16(samples: Float32Array): Uint8Array {
  const out = new Uint8Array(samples.length * 2);
  const view = new DataView(out.buffer);
  for (let i = 0; i < samples.length; i++) {
    const v = Math.round((samples[i] ?? 0) * 32768);
    view.setInt16(2 * i, v > 32767 ? 32767 : v < -32768 ? -32768 : v, true);
  }
  return out;
}

/** pcm16 little-endian → float samples (s / 32768: exact, so a round trip is bit-exact). */
export function pcm16ToFloat(payload: Uint8Array): Float32Array {
  const n = payload.length >> 1;
  const out = new Float32Array(n);
  const view = new DataView(payload.buffer, payload.byteOffset, n * 2);
  for (let i = 0; i < n; i++) out[i] = view.getInt16(2 * i, true) / 32768;
  return out;
}

class Pcm16Encoder implements AudioFrameEncoder {
  constructor(private readonly onPacket: (payload: Uint8Array, samples: number) => void) {}
  encode(samples: Float32Array): void {
    this.onPacket(floatToPcm16(samples), samples.length);
  }
  flush(): Promise<void> {
    return Promise.resolve();
  }
  close(): void {}
}

class Pcm16Decoder implements AudioFrameDecoder {
  constructor(private readonly onSamples: (pts: number, samples: Float32Array) => void) {}
  decode(pts: number, payload: Uint8Array): void {
    this.onSamples(pts, pcm16ToFloat(payload));
  }
  flush(): Promise<void> {
    return Promise.resolve();
  }
  close(): void {}
}

export const OPUS_ENCODER_CONFIG: AudioEncoderConfig = {
  codec: 'opus',
  sampleRate: SAMPLE_RATE,
  numberOfChannels: 1,
  bitrate: 32000,
  // 20 ms frames, raw packets (not Ogg), tuned for speech.
  opus: { frameDuration: 20000, format: 'opus', complexity: 9, application: 'voip' } as OpusEncoderConfig,
};

export const OPUS_DECODER_CONFIG: AudioDecoderConfig = {
  codec: 'opus',
  sampleRate: SAMPLE_RATE,
  numberOfChannels: 1,
};

const usPerSample = 1e6 / SAMPLE_RATE;

class OpusEncoder implements AudioFrameEncoder {
  private enc: AudioEncoder;
  private samples = 0;
  constructor(onPacket: (payload: Uint8Array, samples: number) => void, onError: (e: Error) => void) {
    this.enc = new AudioEncoder({
      output: (chunk) => {
        const payload = new Uint8Array(chunk.byteLength);
        chunk.copyTo(payload);
        const samples = chunk.duration ? Math.round(chunk.duration / usPerSample) : FRAME_SAMPLES;
        onPacket(payload, samples);
      },
      error: (e) => onError(e),
    });
    this.enc.configure(OPUS_ENCODER_CONFIG);
  }
  encode(samples: Float32Array): void {
    if (this.enc.state !== 'configured') return;
    const data = new AudioData({
      format: 'f32-planar',
      sampleRate: SAMPLE_RATE,
      numberOfFrames: samples.length,
      numberOfChannels: 1,
      timestamp: Math.round(this.samples * usPerSample),
      data: samples as Float32Array<ArrayBuffer>,
    });
    this.samples += samples.length;
    this.enc.encode(data);
    data.close();
  }
  flush(): Promise<void> {
    return this.enc.state === 'configured' ? this.enc.flush() : Promise.resolve();
  }
  close(): void {
    if (this.enc.state !== 'closed') this.enc.close();
  }
}

/**
 * Streaming conversion to 24 kHz of decoder output. Chrome's Opus decoder always outputs 48 kHz,
 * whatever rate it was configured with: a 2:1 half-band FIR decimator for that case, linear
 * interpolation for any other rate. State carries across calls, so consecutive packets join
 * without a seam.
 */
export class To24k {
  private static readonly TAPS = halfbandTaps(31);
  private hist: Float32Array;
  private phase = 0;
  private pos = 0;
  private prev = 0;

  constructor(readonly inRate: number) {
    this.hist = new Float32Array(To24k.TAPS.length - 1);
  }

  process(x: Float32Array): Float32Array {
    if (this.inRate === SAMPLE_RATE) return x;
    if (this.inRate === 2 * SAMPLE_RATE) return this.decimate(x);
    return this.linear(x);
  }

  private decimate(x: Float32Array): Float32Array {
    const h = To24k.TAPS;
    const L = h.length;
    const buf = new Float32Array(L - 1 + x.length);
    buf.set(this.hist);
    buf.set(x, L - 1);
    const out = new Float32Array(Math.floor((x.length + this.phase) / 2));
    let o = 0;
    // Output n takes the L inputs ending at input index 2n+1-phase (delay (L-1)/2 inputs).
    for (let i = 1 - this.phase; i < x.length && o < out.length; i += 2) {
      let acc = 0;
      for (let k = 0; k < L; k++) acc += (h[k] ?? 0) * (buf[i + L - 1 - k] ?? 0);
      out[o++] = acc;
    }
    this.phase = (this.phase + x.length) % 2;
    this.hist = buf.slice(buf.length - (L - 1));
    return out.subarray(0, o);
  }

  private linear(x: Float32Array): Float32Array {
    const step = this.inRate / SAMPLE_RATE;
    const out: number[] = [];
    while (this.pos < x.length - 1) {
      const j = Math.floor(this.pos);
      const f = this.pos - j;
      const a = j < 0 ? this.prev : (x[j] ?? 0);
      const b = x[j + 1] ?? 0;
      out.push(a + (b - a) * f);
      this.pos += step;
    }
    this.pos -= x.length;
    this.prev = x[x.length - 1] ?? 0;
    return Float32Array.from(out);
  }
}

/** A windowed-sinc low-pass at a quarter of the input rate (the output's Nyquist), unity gain. */
function halfbandTaps(n: number): Float32Array {
  const h = new Float32Array(n);
  const m = (n - 1) / 2;
  let sum = 0;
  for (let i = 0; i < n; i++) {
    const t = i - m;
    const sinc = t === 0 ? 0.5 : Math.sin(Math.PI * 0.5 * t) / (Math.PI * t);
    const w = 0.42 - 0.5 * Math.cos((2 * Math.PI * i) / (n - 1)) + 0.08 * Math.cos((4 * Math.PI * i) / (n - 1));
    h[i] = sinc * w;
    sum += h[i] ?? 0;
  }
  for (let i = 0; i < n; i++) h[i] = (h[i] ?? 0) / sum;
  return h;
}

class OpusDecoder implements AudioFrameDecoder {
  private dec: AudioDecoder;
  private resampler: To24k | null = null;
  constructor(onSamples: (pts: number, samples: Float32Array) => void, onError: (e: Error) => void) {
    this.dec = new AudioDecoder({
      output: (data) => {
        const n = data.numberOfFrames;
        const raw = new Float32Array(n);
        data.copyTo(raw, { planeIndex: 0, format: 'f32-planar' });
        const pts = Math.round(data.timestamp / usPerSample);
        if (!this.resampler || this.resampler.inRate !== data.sampleRate) this.resampler = new To24k(data.sampleRate);
        data.close();
        onSamples(pts, this.resampler.process(raw));
      },
      error: (e) => onError(e),
    });
    this.dec.configure(OPUS_DECODER_CONFIG);
  }
  decode(pts: number, payload: Uint8Array): void {
    if (this.dec.state !== 'configured' || payload.length === 0) return;
    this.dec.decode(
      new EncodedAudioChunk({ type: 'key', timestamp: Math.round(pts * usPerSample), duration: Math.round(FRAME_SAMPLES * usPerSample), data: payload as Uint8Array<ArrayBuffer> }),
    );
  }
  flush(): Promise<void> {
    return this.dec.state === 'configured' ? this.dec.flush() : Promise.resolve();
  }
  close(): void {
    if (this.dec.state !== 'closed') this.dec.close();
  }
}

/** Whether this browser can encode and decode Opus with WebCodecs. */
export async function opusSupport(): Promise<{ encode: boolean; decode: boolean }> {
  const g = globalThis as { AudioEncoder?: typeof AudioEncoder; AudioDecoder?: typeof AudioDecoder };
  const encode = typeof g.AudioEncoder === 'function' && !!(await g.AudioEncoder.isConfigSupported(OPUS_ENCODER_CONFIG).then((r) => r.supported, () => false));
  const decode = typeof g.AudioDecoder === 'function' && !!(await g.AudioDecoder.isConfigSupported(OPUS_DECODER_CONFIG).then((r) => r.supported, () => false));
  return { encode, decode };
}

/** pcm16 in plain code, opus through WebCodecs. */
export const browserCodecs: CodecFactory = {
  encoder(codec, onPacket, onError) {
    if (codec === 'pcm16') return new Pcm16Encoder(onPacket);
    if (typeof AudioEncoder !== 'function') throw new UnsupportedError('this browser has no WebCodecs AudioEncoder for Opus (use codec "pcm16")');
    return new OpusEncoder(onPacket, onError);
  },
  decoder(codec, onSamples, onError) {
    if (codec === 'pcm16') return new Pcm16Decoder(onSamples);
    if (typeof AudioDecoder !== 'function') throw new UnsupportedError('this browser has no WebCodecs AudioDecoder for Opus (use codec "pcm16")');
    return new OpusDecoder(onSamples, onError);
  },
};

/** pcm16 only, no browser APIs: for tests and for Node. */
export const pcm16Codecs: CodecFactory = {
  encoder(codec, onPacket) {
    if (codec !== 'pcm16') throw new UnsupportedError(`codec ${codec} needs WebCodecs`);
    return new Pcm16Encoder(onPacket);
  },
  decoder(codec, onSamples) {
    if (codec !== 'pcm16') throw new UnsupportedError(`codec ${codec} needs WebCodecs`);
    return new Pcm16Decoder(onSamples);
  },
};
