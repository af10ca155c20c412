import type { CloseInfo, RecvStream, SendStream, Transport, TransportName } from '../src/transport.js';
import type { AudioIO, EchoLoopbackState, PlayerIO } from '../src/audio/io.js';
import type { PlayoutSnapshot } from '../src/session.js';
import { concat } from '../src/bytes.js';

export class FakeSend implements SendStream {
  onStop: ((code: number) => void) | null = null;
  chunks: Uint8Array[] = [];
  finished = false;
  resetCode: number | null = null;
  write(bytes: Uint8Array): void {
    if (this.finished || this.resetCode !== null) throw new Error('write after end');
    this.chunks.push(bytes);
  }
  finish(): void {
    this.finished = true;
  }
  reset(code: number): void {
    this.resetCode = code;
  }
  bytes(): Uint8Array {
    return concat(this.chunks);
  }
}

export class FakeRecv implements RecvStream {
  onData: ((bytes: Uint8Array) => void) | null = null;
  onFin: (() => void) | null = null;
  onReset: ((code: number) => void) | null = null;
  stopped: number | null = null;
  constructor(readonly id: number) {}
  stop(code: number): void {
    this.stopped = code;
  }
}

/** A transport whose streams record what the client writes; the test plays the server. */
export class FakeTransport implements Transport {
  onIncomingUni: ((stream: RecvStream) => void) | null = null;
  readonly closed: Promise<CloseInfo>;
  private resolveClosed!: (c: CloseInfo) => void;
  control: { send: FakeSend; recv: FakeRecv } | null = null;
  uni: FakeSend[] = [];
  closedWith: { code: number; reason: string } | null = null;
  private nextIn = 1;
  constructor(readonly name: TransportName = 'websocket') {
    this.closed = new Promise((r) => (this.resolveClosed = r));
  }
  openBidi() {
    this.control = { send: new FakeSend(), recv: new FakeRecv(0) };
    return this.control;
  }
  openUni(): SendStream {
    const s = new FakeSend();
    this.uni.push(s);
    return s;
  }
  rttMs(): number | null {
    return 12;
  }
  close(code = 0, reason = ''): void {
    if (this.closedWith) return;
    this.closedWith = { code, reason };
    this.resolveClosed({ code, reason, local: true });
  }
  /** The server closes or the network drops. */
  drop(reason = 'network'): void {
    this.resolveClosed({ code: null, reason, local: false });
  }
  /** The server opens an agent-audio stream. */
  incoming(): FakeRecv {
    const r = new FakeRecv(this.nextIn++);
    this.onIncomingUni?.(r);
    return r;
  }
}

export class FakePlayer implements PlayerIO {
  onSnapshot: ((s: PlayoutSnapshot) => void) | null = null;
  log: string[] = [];
  pushed: Array<{ id: string; pts: number; samples: Float32Array }> = [];
  played = 0;
  current: string | null = null;
  start(id: string, thresholdMs: number): void {
    this.current = id;
    this.played = 0;
    this.log.push(`start ${id} ${thresholdMs}`);
  }
  push(id: string, pts: number, samples: Float32Array): void {
    this.pushed.push({ id, pts, samples });
  }
  finish(id: string): void {
    this.log.push(`finish ${id}`);
  }
  async flush(id?: string): Promise<{ responseId: string | null; played: number }> {
    this.log.push(`flush ${id ?? '*'}`);
    return { responseId: this.current, played: this.played };
  }
}

export class FakeAudio implements AudioIO {
  player = new FakePlayer();
  onFrame: ((s: Float32Array) => void) | null = null;
  captureStarted = false;
  stopped = false;
  async startCapture(onFrame: (samples: Float32Array) => void): Promise<void> {
    this.onFrame = onFrame;
    this.captureStarted = true;
  }
  stopCapture(): void {
    this.stopped = true;
  }
  async startPlayback(): Promise<void> {}
  /** Set to simulate the echo-cancellation loopback and its measured delay. */
  loopback: { state: EchoLoopbackState; latencyMs: number | null } = { state: 'off', latencyMs: null };
  echoLoopback(): EchoLoopbackState {
    return this.loopback.state;
  }
  loopbackLatencyMs(): number | null {
    return this.loopback.latencyMs;
  }
  /** Set to simulate the output device's latency (`AudioContext.outputLatency`). */
  outputLatency: number | null = null;
  outputLatencyMs(): number | null {
    return this.outputLatency;
  }
  async close(): Promise<void> {
    this.stopped = true;
  }
  /** Speaks one 20 ms frame whose samples are all `value` (a pcm16 step of 1/32768). */
  frame(value: number): void {
    this.onFrame?.(new Float32Array(480).fill(value / 32768));
  }
}

export function deferred<T>(): { promise: Promise<T>; resolve: (v: T) => void; reject: (e: unknown) => void } {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((a, b) => {
    resolve = a;
    reject = b;
  });
  return { promise, resolve, reject };
}
