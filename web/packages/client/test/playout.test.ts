// The playout arithmetic of crates/voq-proto/src/playout.rs, ported with its tests.
import { describe, expect, it } from 'vitest';
import { MAX_GAP_SAMPLES, MAX_QUEUED_SAMPLES, Playout } from '../src/playout.js';
import { rng } from './helpers.js';

const Q = 240; // 10 ms at 24 kHz

function ramp(start: number, n: number): number[] {
  return Array.from({ length: n }, (_, i) => start + i);
}

describe('Playout', () => {
  it('waits for the threshold, then plays in order', () => {
    const p = new Playout(24000, 100);
    const out = new Float32Array(Q).fill(1);
    p.push(0, ramp(0, 480));
    expect(p.render(out).audio).toBe(0);
    expect(out.every((s) => s === 0)).toBe(true);
    p.push(480, ramp(480, 2000));
    expect(p.render(out).audio).toBe(Q);
    expect(Array.from(out)).toEqual(ramp(0, Q));
    expect(p.playedMs).toBe(10);
  });

  it('counts an underrun and resumes where it stopped', () => {
    const p = new Playout(24000, 20);
    const out = new Float32Array(Q);
    p.push(0, ramp(0, 600));
    p.render(out);
    p.render(out);
    const r = p.render(out);
    expect(r).toEqual({ audio: 120, underrunStarted: true });
    expect(p.state).toBe('stalled');
    p.render(out);
    expect(p.underruns).toBe(1);
    expect(p.stallMs).toBe(5 + 10);
    p.push(600, ramp(600, 480));
    expect(p.render(out).audio).toBe(Q);
    expect(out[0]).toBe(600);
  });

  it('flush silences the next quantum and counts what was discarded', () => {
    const p = new Playout(24000, 0);
    const out = new Float32Array(Q);
    p.push(0, ramp(1, 24000));
    p.render(out);
    expect(p.flush()).toBe(24000 - Q);
    expect(p.render(out).audio).toBe(0);
    expect(out.every((s) => s === 0)).toBe(true);
    p.push(24000, ramp(0, 100));
    expect(p.discarded).toBe(24000 - Q + 100);
    expect(p.played).toBe(Q);
    expect(p.state).toBe('flushed');
  });

  it('fills gaps with silence and trims overlaps', () => {
    const p = new Playout(24000, 0);
    p.push(0, new Array(10).fill(5));
    p.push(20, new Array(10).fill(7));
    p.push(25, new Array(10).fill(9));
    p.finish();
    const out = new Float32Array(40).fill(1);
    expect(p.render(out).audio).toBe(35);
    expect(Array.from(out.subarray(8, 22))).toEqual([5, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7, 7]);
    expect(Array.from(out.subarray(28, 36))).toEqual([7, 7, 9, 9, 9, 9, 9, 0]);
    expect([p.gapSamples, p.overlapSamples]).toEqual([10, 5]);
    expect(p.state).toBe('finished');
  });

  it('places audio by pts: the cursor is an exact position in the speech', () => {
    // 20 ms frames arriving out of step with 128-sample quanta: after k quanta the cursor is
    // exactly k × 128 samples (minus any stall), whatever the frame boundaries.
    const p = new Playout(24000, 100);
    const out = new Float32Array(128);
    for (let f = 0; f < 50; f++) p.push(f * 480, new Array(480).fill(0.5));
    for (let k = 1; k <= 100; k++) {
      p.render(out);
      expect(p.played).toBe(k * 128);
    }
    expect(p.playedMs).toBe(Math.floor((100 * 128 * 1000) / 24000));
    expect(p.bufferedMs).toBe(Math.floor(((50 * 480 - 100 * 128) * 1000) / 24000));
  });

  it('ignores a gap too large to be real', () => {
    const p = new Playout(24000, 0);
    p.push(0xffffff00, [1, 2, 3]);
    expect(p.buffered).toBe(0);
    expect(p.discarded).toBe(3);
  });

  it('queues at most MAX_QUEUED_SAMPLES, gaps included (as the Rust playout)', () => {
    const p = new Playout(24000, 0);
    const gap = MAX_GAP_SAMPLES - 1;
    p.push(0, new Array(480).fill(1));
    p.push(480 + gap, new Array(480).fill(1));
    expect(p.buffered).toBe(480 + gap + 480);
    p.push(960 + 2 * gap, new Array(480).fill(1));
    expect(p.buffered).toBe(480 + gap + 480);
    expect(p.discarded).toBe(480);
    expect(p.buffered).toBeLessThanOrEqual(MAX_QUEUED_SAMPLES);
  });

  it('plays every sample exactly once, whatever the arrival pattern', () => {
    const rand = rng(11);
    for (let round = 0; round < 200; round++) {
      const p = new Playout(24000, Math.floor(rand() * 200));
      const played: number[] = [];
      const sent: number[] = [];
      const out = new Float32Array(Q);
      let pts = 0;
      for (let c = 0, n = 1 + Math.floor(rand() * 40); c < n; c++) {
        const len = 1 + Math.floor(rand() * 700);
        const s = ramp(pts, len);
        sent.push(...s);
        p.push(pts, s);
        pts += len;
        for (let r = Math.floor(rand() * 4); r > 0; r--) {
          const x = p.render(out);
          played.push(...out.subarray(0, x.audio));
        }
      }
      p.finish();
      while (p.state !== 'finished') {
        const x = p.render(out);
        played.push(...out.subarray(0, x.audio));
      }
      expect(played).toEqual(sent);
      expect(p.played).toBe(pts);
    }
  });
});
