/**
 * The two AudioWorklet processors of @voq/client, bundled by `web/scripts/worklets.mjs` into one
 * string (`worklets.gen.ts`) that the client loads from a Blob URL, so the package needs no
 * separate file on the server.
 *
 * - `voq-capture`: microphone → 20 ms frames of 480 samples at 24 kHz (linear resampling when the
 *   context runs at another rate), posted to the main thread.
 * - `voq-playout`: the timestamp-driven playout buffer ({@link Playout}) rendered by the audio
 *   clock; posts a snapshot on every state change and every ~43 ms while a response plays, and
 *   answers a flush (barge-in) with the exact samples played.
 */

import { Playout } from '../../playout.js';
import type { PlayoutState } from '../../playout.js';

declare const sampleRate: number;
declare function registerProcessor(name: string, ctor: unknown): void;
declare class AudioWorkletProcessor {
  readonly port: MessagePort;
  constructor(options?: unknown);
}

const RATE = 24000;
const FRAME = 480;

class CaptureProcessor extends AudioWorkletProcessor {
  private frame = new Float32Array(FRAME);
  private fill = 0;
  private readonly step = sampleRate / RATE;
  /** Position of the next output sample in the current input block (may be −1: the previous sample). */
  private pos = 0;
  private prev = 0;
  private active = true;

  constructor() {
    super();
    this.port.onmessage = (e: MessageEvent) => {
      if ((e.data as { t?: string })?.t === 'stop') this.active = false;
    };
  }

  process(inputs: Float32Array[][]): boolean {
    const ch = inputs[0]?.[0];
    if (!ch || ch.length === 0) return this.active;
    if (this.step === 1) {
      for (let i = 0; i < ch.length; i++) this.put(ch[i] ?? 0);
    } else {
      const n = ch.length;
      while (this.pos < n - 1) {
        const j = Math.floor(this.pos);
        const f = this.pos - j;
        const a = j < 0 ? this.prev : (ch[j] ?? 0);
        const b = ch[j + 1] ?? 0;
        this.put(a + (b - a) * f);
        this.pos += this.step;
      }
      this.pos -= n;
      this.prev = ch[n - 1] ?? 0;
    }
    return this.active;
  }

  private put(v: number): void {
    this.frame[this.fill++] = v;
    if (this.fill === FRAME) {
      const f = this.frame;
      this.port.postMessage({ t: 'frame', samples: f }, [f.buffer]);
      this.frame = new Float32Array(FRAME);
      this.fill = 0;
    }
  }
}

type Msg =
  | { t: 'start'; id: string; thresholdMs: number }
  | { t: 'push'; id: string; pts: number; samples: Float32Array }
  | { t: 'finish'; id: string }
  | { t: 'flush'; seq: number; id?: string };

const SNAPSHOT_EVERY = 8; // quanta (8 × 128 samples ≈ 43 ms at 24 kHz)

class PlayoutProcessor extends AudioWorkletProcessor {
  private cur: { id: string; p: Playout; last: PlayoutState } | null = null;
  private tick = 0;
  // Resampling (only when the context does not run at 24 kHz).
  private readonly step = RATE / sampleRate;
  private src = new Float32Array(512);
  private srcLen = 0;
  private pos = 0;

  constructor() {
    super();
    this.port.onmessage = (e: MessageEvent) => this.onMessage(e.data as Msg);
  }

  private onMessage(m: Msg): void {
    const cur = this.cur;
    switch (m.t) {
      case 'start':
        if (cur && cur.p.state !== 'finished' && cur.p.state !== 'flushed') {
          cur.p.flush();
          this.snapshot();
        }
        this.cur = { id: m.id, p: new Playout(RATE, m.thresholdMs), last: 'buffering' };
        this.srcLen = 0;
        this.pos = 0;
        this.snapshot();
        break;
      case 'push':
        if (cur?.id === m.id) cur.p.push(m.pts, m.samples);
        break;
      case 'finish':
        if (cur?.id === m.id) cur.p.finish();
        break;
      case 'flush': {
        if (cur && (m.id === undefined || m.id === cur.id)) {
          if (cur.p.state !== 'finished' && cur.p.state !== 'flushed') cur.p.flush();
          this.srcLen = 0;
          this.pos = 0;
          cur.last = cur.p.state;
        }
        const c = this.cur;
        this.port.postMessage({ t: 'flushed', seq: m.seq, id: c?.id ?? null, played: c?.p.played ?? 0, state: c?.p.state ?? null });
        break;
      }
    }
  }

  private snapshot(): void {
    const c = this.cur;
    if (!c) return;
    const p = c.p;
    c.last = p.state;
    this.port.postMessage({
      t: 'snap',
      id: c.id,
      state: p.state,
      played: p.played,
      buffered: p.buffered,
      underruns: p.underruns,
      stalled: p.stalledSamples,
    });
  }

  process(_inputs: Float32Array[][], outputs: Float32Array[][]): boolean {
    const channels = outputs[0];
    const out = channels?.[0];
    if (!channels || !out) return true;
    const c = this.cur;
    if (!c) {
      out.fill(0);
    } else if (this.step === 1) {
      c.p.render(out);
    } else {
      this.resampled(c.p, out);
    }
    for (let i = 1; i < channels.length; i++) channels[i]?.set(out);
    if (c) {
      const active = c.p.state !== 'finished' && c.p.state !== 'flushed';
      this.tick += 1;
      if (c.p.state !== c.last || (active && this.tick % SNAPSHOT_EVERY === 0)) this.snapshot();
    }
    return true;
  }

  private resampled(p: Playout, out: Float32Array): void {
    const n = out.length;
    const need = Math.floor(this.pos + (n - 1) * this.step) + 2;
    if (need > this.src.length) {
      const next = new Float32Array(need * 2);
      next.set(this.src.subarray(0, this.srcLen));
      this.src = next;
    }
    if (need > this.srcLen) {
      p.render(this.src.subarray(this.srcLen, need));
      this.srcLen = need;
    }
    for (let i = 0; i < n; i++) {
      const x = this.pos + i * this.step;
      const j = Math.floor(x);
      const f = x - j;
      const a = this.src[j] ?? 0;
      const b = this.src[j + 1] ?? 0;
      out[i] = a + (b - a) * f;
    }
    this.pos += n * this.step;
    const drop = Math.min(Math.floor(this.pos), this.srcLen);
    this.src.copyWithin(0, drop, this.srcLen);
    this.srcLen -= drop;
    this.pos -= drop;
  }
}

registerProcessor('voq-capture', CaptureProcessor);
registerProcessor('voq-playout', PlayoutProcessor);
