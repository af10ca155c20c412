import { describe, expect, it } from 'vitest';
import { To24k, floatToPcm16, pcm16ToFloat } from '../src/audio/codecs.js';

describe('pcm16', () => {
  it('round-trips every 16-bit value bit-exactly', () => {
    const bytes = new Uint8Array(65536 * 2);
    const v = new DataView(bytes.buffer);
    for (let i = 0; i < 65536; i++) v.setInt16(2 * i, i - 32768, true);
    expect(floatToPcm16(pcm16ToFloat(bytes))).toEqual(bytes);
  });

  it('clamps out-of-range floats', () => {
    const out = new DataView(floatToPcm16(new Float32Array([2, -2, 1, -1])).buffer);
    expect([0, 1, 2, 3].map((i) => out.getInt16(2 * i, true))).toEqual([32767, -32768, 32767, -32768]);
  });
});

describe('To24k (Chrome decodes Opus at 48 kHz whatever it is asked for)', () => {
  const sine = (rate: number, hz: number, n: number, from = 0) => Float32Array.from({ length: n }, (_, i) => Math.sin((2 * Math.PI * hz * (from + i)) / rate));

  it('halves 48 kHz: 960 samples per 20 ms packet become 480, the same tone, seamlessly', () => {
    const r = new To24k(48000);
    const chunks: Float32Array[] = [];
    for (let p = 0; p < 10; p++) chunks.push(r.process(sine(48000, 1000, 960, p * 960)));
    expect(chunks.map((c) => c.length)).toEqual(new Array(10).fill(480));
    const all = Float32Array.from(chunks.flatMap((c) => Array.from(c)));
    // The FIR delays by 15 input samples = 7.5 output samples.
    const want = Float32Array.from({ length: all.length }, (_, i) => Math.sin((2 * Math.PI * 1000 * (2 * i + 1 - 15)) / 48000));
    let err = 0;
    for (let i = 40; i < all.length; i++) err = Math.max(err, Math.abs((all[i] ?? 0) - (want[i] ?? 0)));
    expect(err).toBeLessThan(0.01);
  });

  it('gives the same output whatever the chunking (odd chunks too)', () => {
    const x = sine(48000, 440, 3001);
    const whole = new To24k(48000).process(x);
    const r = new To24k(48000);
    const parts = [r.process(x.subarray(0, 7)), r.process(x.subarray(7, 1000)), r.process(x.subarray(1000))];
    expect(Array.from(parts.flatMap((p) => Array.from(p)))).toEqual(Array.from(whole));
  });

  it('removes what 24 kHz cannot carry', () => {
    const y = new To24k(48000).process(sine(48000, 18000, 4800));
    let peak = 0;
    for (let i = 40; i < y.length; i++) peak = Math.max(peak, Math.abs(y[i] ?? 0));
    expect(peak).toBeLessThan(0.05);
  });

  it('passes 24 kHz through and interpolates other rates', () => {
    const x = sine(24000, 300, 100);
    expect(new To24k(24000).process(x)).toBe(x);
    const r = new To24k(16000);
    let n = 0;
    for (let p = 0; p < 50; p++) n += r.process(sine(16000, 300, 320, p * 320)).length;
    expect(Math.abs(n - 50 * 480)).toBeLessThanOrEqual(2);
  });
});
