/**
 * The playout buffer, a mirror of `crates/voq-proto/src/playout.rs`: agent audio is placed by its
 * presentation timestamp and rendered by the audio device's clock, one quantum at a time. It runs
 * inside the playout AudioWorklet (see `audio/worklets/processors.worklet.ts`) and in the tests.
 *
 * Playback starts once `startThreshold` of audio is buffered (or the response is complete). When
 * the buffer runs dry before the response is complete the playout *stalls*: silence is rendered,
 * the underrun is counted, and playback resumes from the same timestamp once the threshold is
 * buffered again. A stall never skips audio, so `played` is an exact position in the agent's
 * speech — the `audio_end_ms` of a barge-in.
 */

export type PlayoutState =
  /** Waiting for the start threshold. */
  | 'buffering'
  | 'playing'
  /** Ran dry before the end; waiting for the start threshold again. */
  | 'stalled'
  /** Every sample played. */
  | 'finished'
  /** Stopped by a barge-in (or a cancelled response); the rest was discarded. */
  | 'flushed';

export interface Rendered {
  /** Samples of agent audio written (the rest of the quantum is silence). */
  audio: number;
  /** This quantum began an underrun. */
  underrunStarted: boolean;
}

/** Gaps between frames larger than this are not filled (a broken peer could ask for hours). */
export const MAX_GAP_SAMPLES = 60 * 24000;
/** Audio queued (gaps included) beyond this is discarded (an honest server stays within its lead). */
export const MAX_QUEUED_SAMPLES = 120 * 24000;

export class Playout {
  readonly rate: number;
  readonly startThreshold: number;
  private _state: PlayoutState = 'buffering';
  private ring: Float32Array;
  private head = 0;
  private len = 0;
  /** Samples played so far (= the timestamp of the next sample to play). */
  private _played = 0;
  private complete = false;
  private _underruns = 0;
  private stalled = 0;
  private _discarded = 0;
  private _gap = 0;
  private _overlap = 0;

  constructor(rate: number, startThresholdMs: number) {
    this.rate = rate;
    this.startThreshold = Math.floor((rate * startThresholdMs) / 1000);
    this.ring = new Float32Array(Math.max(1024, rate));
  }

  /**
   * Places decoded audio that starts at sample `pts`. Frames arrive in order on a reliable
   * stream; a gap in timestamps is filled with silence, an overlap is trimmed.
   */
  push(pts: number, samples: ArrayLike<number>): void {
    if (this._state === 'flushed' || this._state === 'finished') {
      this._discarded += samples.length;
      return;
    }
    const end = this._played + this.len;
    let from = 0;
    if (this.len + Math.max(0, pts - end) + samples.length > MAX_QUEUED_SAMPLES) {
      this._discarded += samples.length;
      return;
    }
    if (pts > end) {
      const gap = pts - end;
      if (gap > MAX_GAP_SAMPLES) {
        this._discarded += samples.length;
        return;
      }
      this._gap += gap;
      this.append(null, 0, gap);
    } else if (pts < end) {
      from = Math.min(end - pts, samples.length);
      this._overlap += from;
    }
    this.append(samples, from, samples.length - from);
  }

  /** No more audio will come: play out what is queued without waiting for the threshold. */
  finish(): void {
    this.complete = true;
  }

  /** Barge-in: stop at once, discard what is queued. Returns the samples discarded. */
  flush(): number {
    const n = this.len;
    this._discarded += n;
    this.head = 0;
    this.len = 0;
    this._state = 'flushed';
    return n;
  }

  /** Renders one device quantum into `out` (audio, then silence). */
  render(out: Float32Array): Rendered {
    const r: Rendered = { audio: 0, underrunStarted: false };
    if (
      (this._state === 'buffering' || this._state === 'stalled') &&
      (this.len >= Math.max(this.startThreshold, 1) || this.complete)
    ) {
      this._state = 'playing';
    }
    if (this._state === 'playing') {
      const n = Math.min(out.length, this.len);
      this.take(out, n);
      this._played += n;
      r.audio = n;
      if (this.len === 0) {
        if (this.complete) {
          this._state = 'finished';
        } else if (n < out.length) {
          this._state = 'stalled';
          this._underruns += 1;
          r.underrunStarted = true;
        }
      }
    }
    out.fill(0, r.audio);
    if (this._state === 'stalled') this.stalled += out.length - r.audio;
    return r;
  }

  get state(): PlayoutState {
    return this._state;
  }
  /** Samples of the response played so far: the exact position in the agent's speech. */
  get played(): number {
    return this._played;
  }
  get playedMs(): number {
    return Math.floor((this._played * 1000) / this.rate);
  }
  get buffered(): number {
    return this.len;
  }
  get bufferedMs(): number {
    return Math.floor((this.len * 1000) / this.rate);
  }
  get underruns(): number {
    return this._underruns;
  }
  get stalledSamples(): number {
    return this.stalled;
  }
  get stallMs(): number {
    return Math.floor((this.stalled * 1000) / this.rate);
  }
  /** Samples received but never played (flushed by a barge-in or arriving after it). */
  get discarded(): number {
    return this._discarded;
  }
  get gapSamples(): number {
    return this._gap;
  }
  get overlapSamples(): number {
    return this._overlap;
  }

  private append(src: ArrayLike<number> | null, from: number, n: number): void {
    if (n <= 0) return;
    if (this.len + n > this.ring.length) {
      let cap = this.ring.length;
      while (cap < this.len + n) cap *= 2;
      const next = new Float32Array(cap);
      this.take(next, this.len, false);
      this.ring = next;
      this.head = 0;
    }
    const cap = this.ring.length;
    let w = (this.head + this.len) % cap;
    for (let i = 0; i < n; i++) {
      this.ring[w] = src ? (src[from + i] ?? 0) : 0;
      w = w + 1 === cap ? 0 : w + 1;
    }
    this.len += n;
  }

  /** Copies the first `n` queued samples into `out` and (unless `peek`) removes them. */
  private take(out: Float32Array, n: number, consume = true): void {
    const cap = this.ring.length;
    const first = Math.min(n, cap - this.head);
    out.set(this.ring.subarray(this.head, this.head + first), 0);
    if (n > first) out.set(this.ring.subarray(0, n - first), first);
    if (consume) {
      this.head = (this.head + n) % cap;
      this.len -= n;
      if (this.len === 0) this.head = 0;
    }
  }
}
