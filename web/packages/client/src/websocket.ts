/**
 * voq/1 over WebSocket: the stream mux of docs/PROTOCOL.md ("WebSocket stream mux"). Every
 * message is binary and carries one mux frame; stream ids follow QUIC; each side PINGs every
 * second (and on open) and takes its RTT from the PONGs; the connection closes with
 * `4000 + voq code`.
 */

import { Code } from './errors.js';
import { UnreachableError } from './errors.js';
import { decodeMux, encodeMux, muxErrorMessage, nthStreamId, streamKind } from './mux.js';
import type { MuxFrame } from './mux.js';
import type { CloseInfo, RecvStream, SendStream, Transport } from './transport.js';

/** WebSocket close codes are `CLOSE_CODE_BASE + voq code`. */
export const CLOSE_CODE_BASE = 4000;
/** PING period. */
export const PING_INTERVAL_MS = 1000;

/** The minimal surface of a WebSocket this transport uses (the browser's, or a test double). */
export interface WebSocketLike {
  binaryType: string;
  readonly readyState: number;
  send(data: ArrayBufferLike | ArrayBufferView): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  onclose: ((ev: { code: number; reason: string; wasClean?: boolean }) => void) | null;
}

class MuxRecv implements RecvStream {
  onData: ((bytes: Uint8Array) => void) | null = null;
  onFin: (() => void) | null = null;
  onReset: ((code: number) => void) | null = null;
  constructor(
    readonly id: number,
    private readonly t: WebSocketTransport,
  ) {}
  stop(code: number): void {
    this.t.stopStream(this.id, code);
  }
}

class MuxSend implements SendStream {
  onStop: ((code: number) => void) | null = null;
  done = false;
  constructor(
    readonly id: number,
    private readonly t: WebSocketTransport,
  ) {}
  write(bytes: Uint8Array): void {
    if (!this.done) this.t.sendFrame({ type: 'stream', id: this.id, data: bytes });
  }
  finish(): void {
    if (this.done) return;
    this.done = true;
    this.t.sendFrame({ type: 'fin', id: this.id });
  }
  reset(code: number): void {
    if (this.done) return;
    this.done = true;
    this.t.sendFrame({ type: 'reset_stream', id: this.id, code });
  }
}

export interface WebSocketTransportOptions {
  /** Clock for RTT (default `performance.now`). */
  now?: () => number;
  /** Timers (default the global ones); the tests pass fakes. */
  setInterval?: (fn: () => void, ms: number) => unknown;
  clearInterval?: (h: unknown) => void;
}

export class WebSocketTransport implements Transport {
  readonly name = 'websocket' as const;
  onIncomingUni: ((stream: RecvStream) => void) | null = null;
  readonly closed: Promise<CloseInfo>;
  private resolveClosed!: (c: CloseInfo) => void;
  private isClosed = false;
  private closingLocally = false;
  private readers = new Map<number, MuxRecv>();
  private writers = new Map<number, MuxSend>();
  /** Next index of each stream kind we open. */
  private ourNextBidi = 0;
  private ourNextUni = 0;
  /** Next index of each stream kind the server opens: [bidi, uni]. */
  private peerNext = [0, 0];
  private rtt: number | null = null;
  private pings = new Map<string, number>();
  private pingSeq = 0;
  private timer: unknown = null;
  private readonly now: () => number;
  private readonly opts: WebSocketTransportOptions;

  /** Wraps an open WebSocket. Use {@link connectWebSocket} to dial. */
  constructor(
    private readonly ws: WebSocketLike,
    opts: WebSocketTransportOptions = {},
  ) {
    this.opts = opts;
    this.now = opts.now ?? (() => performance.now());
    this.closed = new Promise((r) => (this.resolveClosed = r));
    ws.binaryType = 'arraybuffer';
    ws.onmessage = (ev) => this.onMessage(ev.data);
    ws.onclose = (ev) => {
      const code = ev.code >= CLOSE_CODE_BASE && ev.code < CLOSE_CODE_BASE + 1000 ? ev.code - CLOSE_CODE_BASE : null;
      this.finishClose({ code, reason: ev.reason || `WebSocket closed (${ev.code})`, local: this.closingLocally });
    };
    ws.onerror = () => {};
    this.ping();
    const si = opts.setInterval ?? ((fn: () => void, ms: number) => setInterval(fn, ms));
    this.timer = si(() => this.ping(), PING_INTERVAL_MS);
  }

  openBidi(): { send: SendStream; recv: RecvStream } {
    const id = nthStreamId(this.ourNextBidi++, { serverInitiated: false, unidirectional: false });
    const send = new MuxSend(id, this);
    const recv = new MuxRecv(id, this);
    this.writers.set(id, send);
    this.readers.set(id, recv);
    return { send, recv };
  }

  openUni(): SendStream {
    const id = nthStreamId(this.ourNextUni++, { serverInitiated: false, unidirectional: true });
    const send = new MuxSend(id, this);
    this.writers.set(id, send);
    return send;
  }

  rttMs(): number | null {
    return this.rtt;
  }

  close(code: number = Code.NoError, reason = ''): void {
    if (this.isClosed) return;
    this.closingLocally = true;
    try {
      this.ws.close(CLOSE_CODE_BASE + code, reason.slice(0, 120));
    } catch {
      // already closing
    }
    this.finishClose({ code, reason: reason || 'closed locally', local: true });
  }

  /** @internal */
  sendFrame(frame: MuxFrame): void {
    if (this.isClosed) return;
    try {
      this.ws.send(encodeMux(frame));
    } catch {
      // The close handler reports it.
    }
  }

  /** @internal */
  stopStream(id: number, code: number): void {
    if (this.readers.delete(id)) this.sendFrame({ type: 'stop_sending', id, code });
  }

  private finishClose(info: CloseInfo): void {
    if (this.isClosed) return;
    this.isClosed = true;
    const ci = this.opts.clearInterval ?? ((h: unknown) => clearInterval(h as ReturnType<typeof setInterval>));
    ci(this.timer);
    this.readers.clear();
    this.writers.clear();
    this.resolveClosed(info);
  }

  private ping(): void {
    const data = new Uint8Array(8);
    const seq = this.pingSeq++;
    new DataView(data.buffer).setUint32(4, seq);
    data[0] = 0x76; // 'v': our pings, for the eye in a packet dump
    this.pings.set(key(data), this.now());
    if (this.pings.size > 32) this.pings.delete(this.pings.keys().next().value as string);
    this.sendFrame({ type: 'ping', data });
  }

  private violation(why: string): void {
    if (this.isClosed) return;
    this.closingLocally = true;
    try {
      this.ws.close(CLOSE_CODE_BASE + Code.ProtocolViolation, why.slice(0, 120));
    } catch {
      // already closing
    }
    this.finishClose({ code: Code.ProtocolViolation, reason: `protocol violation: ${why}`, local: true });
  }

  private onMessage(data: unknown): void {
    if (this.isClosed) return;
    if (!(data instanceof ArrayBuffer)) {
      this.violation(typeof data === 'string' ? 'text message on a voq mux' : 'unexpected message type');
      return;
    }
    const r = decodeMux(new Uint8Array(data));
    if (!r.ok) {
      this.violation(muxErrorMessage(r.error));
      return;
    }
    const f = r.frame;
    switch (f.type) {
      case 'ping':
        this.sendFrame({ type: 'pong', data: f.data });
        return;
      case 'pong': {
        const sent = this.pings.get(key(f.data));
        if (sent === undefined) return;
        this.pings.delete(key(f.data));
        const sample = Math.max(0, this.now() - sent);
        this.rtt = this.rtt === null ? sample : (this.rtt * 7 + sample) / 8;
        return;
      }
      case 'stop_sending': {
        const w = this.writers.get(f.id);
        if (w) {
          this.writers.delete(f.id);
          w.done = true;
          w.onStop?.(f.code);
        }
        return;
      }
      default:
        this.deliver(f);
    }
  }

  /** Hands a stream frame to its reader, opening the stream if it is the server's next one. */
  private deliver(f: MuxFrame & { type: 'stream' | 'fin' | 'reset_stream' }): void {
    const existing = this.readers.get(f.id);
    if (existing) {
      this.apply(existing, f);
      return;
    }
    const kind = streamKind(f.id);
    if (!kind.serverInitiated) {
      // One of ours: only the bidirectional control stream carries data back, and we hold its
      // reader; anything else is the server writing on our unidirectional stream.
      if (kind.unidirectional) this.violation('data on a unidirectional stream of the receiver');
      return; // a stream we stopped reading
    }
    const slot = kind.unidirectional ? 1 : 0;
    const index = Math.floor(f.id / 4);
    const next = this.peerNext[slot] ?? 0;
    if (index < next) return; // already ended or stopped: late frames are ignored
    if (index !== next) {
      this.violation('stream ids of one kind must be used in order');
      return;
    }
    this.peerNext[slot] = next + 1;
    if (!kind.unidirectional) {
      // voq/1 has no server-opened bidirectional streams.
      this.sendFrame({ type: 'stop_sending', id: f.id, code: Code.StreamRefused });
      this.sendFrame({ type: 'reset_stream', id: f.id, code: Code.StreamRefused });
      return;
    }
    const recv = new MuxRecv(f.id, this);
    this.readers.set(f.id, recv);
    this.onIncomingUni?.(recv);
    if (!this.readers.has(f.id)) return; // stopped from the callback
    this.apply(recv, f);
  }

  private apply(r: MuxRecv, f: MuxFrame & { type: 'stream' | 'fin' | 'reset_stream' }): void {
    if (f.type === 'stream') {
      r.onData?.(f.data);
    } else if (f.type === 'fin') {
      this.readers.delete(f.id);
      r.onFin?.();
    } else {
      this.readers.delete(f.id);
      r.onReset?.(f.code);
    }
  }
}

function key(b: Uint8Array): string {
  let s = '';
  for (const x of b) s += x.toString(16).padStart(2, '0');
  return s;
}

export interface ConnectWebSocketOptions extends WebSocketTransportOptions {
  /** Give up after this long (default 10 s). */
  timeoutMs?: number;
  signal?: AbortSignal;
  /** Creates the socket (default `new WebSocket(url)`); for tests. */
  create?: (url: string) => WebSocketLike;
}

/** Dials `url` (`ws://…/voq` or `wss://…/voq`) and resolves with the open transport. */
export function connectWebSocket(url: string, opts: ConnectWebSocketOptions = {}): Promise<WebSocketTransport> {
  return new Promise((resolve, reject) => {
    let ws: WebSocketLike;
    try {
      ws = opts.create ? opts.create(url) : (new WebSocket(url) as unknown as WebSocketLike);
    } catch (e) {
      reject(new UnreachableError(`cannot open a WebSocket to ${url}: ${(e as Error).message}`, { cause: e }));
      return;
    }
    ws.binaryType = 'arraybuffer';
    let settled = false;
    const fail = (err: Error) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      try {
        ws.close();
      } catch {
        // not open
      }
      reject(err);
    };
    const timer = setTimeout(
      () => fail(new UnreachableError(`WebSocket ${url}: no answer within ${opts.timeoutMs ?? 10000} ms`)),
      opts.timeoutMs ?? 10000,
    );
    opts.signal?.addEventListener('abort', () => fail(new UnreachableError(`WebSocket ${url}: cancelled`)));
    ws.onopen = () => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(new WebSocketTransport(ws, opts));
    };
    ws.onerror = () => {};
    ws.onclose = (ev) => {
      fail(
        new UnreachableError(
          `WebSocket ${url} failed (close code ${ev.code}${ev.reason ? `: ${ev.reason}` : ''}): the server is not reachable over TCP, refused the upgrade, or its TLS certificate is not trusted`,
        ),
      );
    };
  });
}
