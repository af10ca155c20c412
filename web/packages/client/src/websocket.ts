/**
 * voq/1 over WebSocket: the stream mux of docs/PROTOCOL.md ("WebSocket stream mux"). Every rule
 * of the mux (stream ids, which streams are accepted, PING/PONG and RTT, the idle timeout,
 * protocol violations) lives in the sans-IO {@link MuxConnection} (muxconn.ts); this is the thin
 * shell around it: it feeds the socket's messages in, drains the outputs after every input and
 * command (messages to send, stream callbacks, the close), and drives the connection's clock with
 * one timer set from `pollTimeout()`. The connection closes with `4000 + voq code`.
 */

import { Code } from './errors.js';
import { UnreachableError } from './errors.js';
import { DEFAULT_MUX_CONFIG, MuxConnection } from './muxconn.js';
import type { MuxConfig } from './muxconn.js';
import type { CloseInfo, RecvStream, SendStream, Transport } from './transport.js';

/** WebSocket close codes are `CLOSE_CODE_BASE + voq code`. */
export const CLOSE_CODE_BASE = 4000;
/** PING period (the mux's default). */
export const PING_INTERVAL_MS = DEFAULT_MUX_CONFIG.pingIntervalMs;

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
  constructor(
    readonly id: number,
    private readonly t: WebSocketTransport,
  ) {}
  write(bytes: Uint8Array): void {
    this.t.command((c) => void c.write(this.id, bytes));
  }
  finish(): void {
    this.t.command((c) => void c.finish(this.id));
  }
  reset(code: number): void {
    this.t.command((c) => c.reset(this.id, code));
  }
}

export interface WebSocketTransportOptions {
  /** Clock in ms for the mux (PINGs, RTT, idle timeout); default `performance.now`. */
  now?: () => number;
  /** Timers (default the global ones); the tests pass fakes. One timer is pending at a time. */
  setTimeout?: (fn: () => void, ms: number) => unknown;
  clearTimeout?: (h: unknown) => void;
  /** Mux limits and periods (default {@link DEFAULT_MUX_CONFIG}). */
  mux?: Partial<MuxConfig>;
}

export class WebSocketTransport implements Transport {
  readonly name = 'websocket' as const;
  onIncomingUni: ((stream: RecvStream) => void) | null = null;
  readonly closed: Promise<CloseInfo>;
  private resolveClosed!: (c: CloseInfo) => void;
  private isClosed = false;
  private closingLocally = false;
  private readonly conn: MuxConnection;
  private readers = new Map<number, MuxRecv>();
  private writers = new Map<number, MuxSend>();
  private draining = false;
  /** The pending timer and the deadline it was set for. */
  private timer: unknown = null;
  private timerAt: number | null = null;
  private readonly now: () => number;
  private readonly setTimer: (fn: () => void, ms: number) => unknown;
  private readonly clearTimer: (h: unknown) => void;

  /** Wraps an open WebSocket. Use {@link connectWebSocket} to dial. */
  constructor(
    private readonly ws: WebSocketLike,
    opts: WebSocketTransportOptions = {},
  ) {
    this.now = opts.now ?? (() => performance.now());
    this.setTimer = opts.setTimeout ?? ((fn: () => void, ms: number) => setTimeout(fn, ms));
    this.clearTimer = opts.clearTimeout ?? ((h: unknown) => clearTimeout(h as ReturnType<typeof setTimeout>));
    this.closed = new Promise((r) => (this.resolveClosed = r));
    ws.binaryType = 'arraybuffer';
    ws.onmessage = (ev) => this.onMessage(ev.data);
    ws.onclose = (ev) => {
      const code = ev.code >= CLOSE_CODE_BASE && ev.code < CLOSE_CODE_BASE + 1000 ? ev.code - CLOSE_CODE_BASE : null;
      const reason = ev.reason || `WebSocket closed (${ev.code})`;
      this.conn.handlePeerClosed(reason);
      this.finishClose({ code, reason, local: this.closingLocally });
    };
    ws.onerror = () => {};
    this.conn = new MuxConnection('client', opts.mux ?? {}, this.now());
    this.drain(); // the first PING
  }

  openBidi(): { send: SendStream; recv: RecvStream } {
    const id = this.openId(true);
    const send = new MuxSend(id, this);
    const recv = new MuxRecv(id, this);
    if (!this.isClosed) {
      this.writers.set(id, send);
      this.readers.set(id, recv);
    }
    return { send, recv };
  }

  openUni(): SendStream {
    const send = new MuxSend(this.openId(false), this);
    if (!this.isClosed) this.writers.set(send.id, send);
    return send;
  }

  rttMs(): number | null {
    return this.conn.rtt();
  }

  close(code: number = Code.NoError, reason = ''): void {
    this.command((c) => c.close(code, reason));
  }

  /** @internal Runs a command on the mux, then carries out what it asks for. */
  command(f: (conn: MuxConnection) => void): void {
    f(this.conn);
    this.drain();
  }

  /** @internal */
  stopStream(id: number, code: number): void {
    this.readers.delete(id);
    this.command((c) => c.stop(id, code));
  }

  /**
   * The id of a new stream of ours. Once closed the mux opens nothing: the stream gets id -1
   * and its writes go nowhere (the `closed` promise has already said why).
   */
  private openId(bidirectional: boolean): number {
    const r = this.conn.open(bidirectional);
    return r.ok ? r.value : -1;
  }

  private onMessage(data: unknown): void {
    if (this.isClosed) return;
    if (data instanceof ArrayBuffer) {
      this.conn.handleMessage(this.now(), new Uint8Array(data));
    } else if (ArrayBuffer.isView(data)) {
      this.conn.handleMessage(this.now(), new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
    } else {
      this.conn.handleText(); // binaryType is 'arraybuffer': anything else is text
    }
    this.drain();
  }

  private onTimer(): void {
    this.timer = null;
    this.timerAt = null;
    this.conn.handleTimeout(this.now());
    this.drain();
  }

  /**
   * Carries out the mux's outputs, then sets the timer for its next deadline. Reentrant: a
   * callback that writes, stops or closes queues more outputs, which the running loop carries
   * out in order.
   */
  private drain(): void {
    if (this.draining) return;
    this.draining = true;
    try {
      for (let o = this.conn.pollOutput(); o; o = this.conn.pollOutput()) {
        switch (o.type) {
          case 'transmit':
            try {
              this.ws.send(o.bytes);
            } catch {
              // The close handler reports it.
            }
            break;
          case 'opened': {
            // The client only ever accepts the server's unidirectional streams: the mux
            // refuses the rest.
            const recv = new MuxRecv(o.id, this);
            this.readers.set(o.id, recv);
            this.onIncomingUni?.(recv);
            break;
          }
          case 'data':
            this.readers.get(o.id)?.onData?.(o.data);
            break;
          case 'fin': {
            const r = this.readers.get(o.id);
            this.readers.delete(o.id);
            r?.onFin?.();
            break;
          }
          case 'reset': {
            const r = this.readers.get(o.id);
            this.readers.delete(o.id);
            r?.onReset?.(o.code);
            break;
          }
          case 'stopped':
            this.writers.get(o.id)?.onStop?.(o.code);
            break;
          case 'close': {
            this.closingLocally = true;
            try {
              this.ws.close(CLOSE_CODE_BASE + o.code, o.reason.slice(0, 120));
            } catch {
              // already closing
            }
            const reason = o.code === Code.ProtocolViolation ? `protocol violation: ${o.reason}` : o.reason || 'closed locally';
            this.finishClose({ code: o.code, reason, local: true });
            break;
          }
        }
      }
    } finally {
      this.draining = false;
    }
    this.schedule();
  }

  /** One timer, for the mux's next deadline; none once closed. */
  private schedule(): void {
    const at = this.conn.pollTimeout();
    if (at === this.timerAt) return;
    if (this.timer !== null) this.clearTimer(this.timer);
    this.timer = null;
    this.timerAt = at;
    if (at !== null) this.timer = this.setTimer(() => this.onTimer(), Math.max(0, Math.ceil(at - this.now())));
  }

  private finishClose(info: CloseInfo): void {
    if (this.isClosed) return;
    this.isClosed = true;
    this.readers.clear();
    this.writers.clear();
    this.schedule();
    this.resolveClosed(info);
  }
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
