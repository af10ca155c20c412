/**
 * `MuxConnection`: one end of the WebSocket stream mux as a sans-IO state machine, a mirror of
 * `crates/voq-proto/src/mux/connection.rs` (same methods in camelCase, same semantics, same
 * defaults). Both pass the shared behaviour traces in `testdata/mux/traces.json`
 * (test/muxconn.test.ts here, crates/voq-proto/tests/mux_traces.rs there), so a rule changed on
 * one side and not the other fails a test.
 *
 * Every rule of the mux lives here, once: which stream ids a side may use and in what order,
 * which of the peer's streams are accepted and which refused, how many the peer may hold open,
 * PING/PONG and the RTT estimate, the idle timeout, and which messages are protocol violations
 * that close the connection. The shell ({@link WebSocketTransport} in websocket.ts) only moves
 * messages between the socket and this machine and routes its outputs to stream callbacks.
 *
 * - getters: `side`, `rtt()`, `isClosed`, `closeReason()`;
 * - inputs from the peer: `handleMessage` (a binary message), `handleText`, `handlePeerClosed`;
 * - commands from the local application: `open`, `write`, `finish`, `reset`, `stop`,
 *   `releaseSend`, `releaseRecv`, `close`;
 * - time: `handleTimeout` at `pollTimeout`;
 * - outputs: `pollOutput`, drained after every input and command.
 *
 * Times are milliseconds on one monotonic clock (`performance.now()` in the browser). The clock
 * advances only through `now` arguments: the constructor, `handleMessage` (which also resets the
 * idle timer) and `handleTimeout`. No timers, no sockets, no promises.
 *
 * Stream ids and codes are `number`s, as in mux.ts (the codec refuses ids past 2^53).
 */

import { Code, codeName } from './errors.js';
import { decodeMux, encodeMux, muxErrorMessage, nthStreamId, streamKind } from './mux.js';
import type { MuxError, MuxFrame } from './mux.js';

/**
 * Which end of the connection this is: it decides stream ids (bit 0) and which of the peer's
 * bidirectional streams exist in voq/1 (only the client's first, the control stream).
 */
export type Side = 'client' | 'server';

/** The limits and periods of a mux connection. */
export interface MuxConfig {
  /** How often this side PINGs (also once at the start), in ms. */
  pingIntervalMs: number;
  /**
   * A connection that receives nothing for this long (ms) is closed. The peer PINGs every
   * second, so silence this long means it is gone.
   */
  idleTimeoutMs: number;
  /** Most of the peer's unidirectional streams open at once; more are refused (`stream_refused`). */
  maxPeerUniStreams: number;
  /** Largest stream payload per frame: writes are cut into frames of at most this many bytes. */
  maxFrameData: number;
}

/** The defaults, as in Rust's `MuxConfig::default()`. */
export const DEFAULT_MUX_CONFIG: Readonly<MuxConfig> = Object.freeze({
  pingIntervalMs: 1000,
  idleTimeoutMs: 30_000,
  maxPeerUniStreams: 16,
  maxFrameData: 64 * 1024,
});

/** What the mux asks its shell to do or tells it. */
export type MuxOutput =
  /** Send this binary WebSocket message (one encoded mux frame). */
  | { type: 'transmit'; bytes: Uint8Array }
  /**
   * The peer opened a stream that this side accepts: a unidirectional stream, or (on the server)
   * the client's control stream. Its first frame follows as `data`/`fin`/`reset`.
   */
  | { type: 'opened'; id: number }
  /** Bytes of a stream this side reads, in order. */
  | { type: 'data'; id: number; data: Uint8Array }
  /** A stream this side reads ended cleanly. */
  | { type: 'fin'; id: number }
  /** The peer abandoned a stream this side reads. */
  | { type: 'reset'; id: number; code: number }
  /** The peer wants no more of a stream this side writes (STOP_SENDING). */
  | { type: 'stopped'; id: number; code: number }
  /**
   * Close the WebSocket with close code `4000 + code`, then stop. Emitted once, for a local
   * close, a protocol violation or the idle timeout; never after the peer closed.
   */
  | { type: 'close'; code: number; reason: string };

/** Why a stream command could not be carried out. */
export type StreamError =
  /** The peer stopped the stream (STOP_SENDING) with this code. */
  | { kind: 'stopped'; code: number }
  /** The stream was finished, reset or released, or never writable by this side. */
  | { kind: 'not_writable' }
  /** The connection is closed. */
  | { kind: 'closed'; reason: string };

/** The result of a stream command (as `decodeMux` returns its result). */
export type MuxResult<T> = { ok: true; value: T } | { ok: false; error: StreamError };

/** A {@link StreamError} as a sentence (the Rust error's `Display`). */
export function streamErrorMessage(e: StreamError): string {
  switch (e.kind) {
    case 'stopped':
      return `the peer stopped the stream (code ${e.code})`;
    case 'not_writable':
      return 'the stream is not open for writing';
    case 'closed':
      return `the connection is closed: ${e.reason}`;
  }
}

/**
 * A writable stream's state: open for writing; `done` (FIN or RESET_STREAM sent, a late
 * STOP_SENDING is still reported); or stopped by the peer with a code.
 */
type SendState = { kind: 'open' } | { kind: 'done' } | { kind: 'stopped'; code: number };

/** A stream frame's content, on its way to a reader. */
type Delivery = { kind: 'data'; data: Uint8Array } | { kind: 'fin' } | { kind: 'reset'; code: number };

const OK: MuxResult<void> = { ok: true, value: undefined };

/** One end of the WebSocket stream mux. See the module docs. */
export class MuxConnection {
  private readonly config: MuxConfig;
  /** Time zero of the PING payloads (microseconds since it). */
  private readonly epoch: number;
  /** Our next stream index per kind: `[bidirectional, unidirectional]`. */
  private readonly next: [number, number] = [0, 0];
  /** The peer's next expected stream index per kind; lower ones are old. */
  private readonly peerNext: [number, number] = [0, 0];
  /** Streams this side reads, until they end, are stopped or released. */
  private readonly reading = new Set<number>();
  /** Streams this side writes, until released. */
  private readonly writing = new Map<number, SendState>();
  private readonly out: MuxOutput[] = [];
  private outHead = 0;
  private _rtt: number | null = null;
  private nextPing: number;
  private lastReceived: number;
  private closed: string | null = null;

  /** A connection that starts at `now` (ms); its first output is a PING. */
  constructor(
    /** Which end this is. */
    readonly side: Side,
    config: Partial<MuxConfig>,
    now: number,
  ) {
    this.config = { ...DEFAULT_MUX_CONFIG, ...config };
    this.epoch = now;
    this.nextPing = now;
    this.lastReceived = now;
    this.handleTimeout(now);
  }

  /** The smoothed round-trip time in ms from PING/PONG (RFC 9002's 7/8 smoothing), once measured. */
  rtt(): number | null {
    return this._rtt;
  }

  /**
   * Whether the connection is closed (locally, by a violation, by the idle timeout, or by the
   * peer). A closed connection ignores every input and command.
   */
  get isClosed(): boolean {
    return this.closed !== null;
  }

  /** Why the connection closed, once it has. */
  closeReason(): string | null {
    return this.closed;
  }

  /** The next output, if any. Drain after every input and command. */
  pollOutput(): MuxOutput | null {
    if (this.outHead >= this.out.length) return null;
    const o = this.out[this.outHead++] ?? null;
    if (this.outHead === this.out.length) {
      this.out.length = 0;
      this.outHead = 0;
    }
    return o;
  }

  /**
   * When (ms) {@link handleTimeout} must next be called: the next PING or the idle deadline.
   * `null` once closed.
   */
  pollTimeout(): number | null {
    if (this.closed !== null) return null;
    return Math.min(this.nextPing, this.lastReceived + this.config.idleTimeoutMs);
  }

  /** Time has reached `now`: PING when due, close when the peer has been silent too long. */
  handleTimeout(now: number): void {
    if (this.closed !== null) return;
    if (now >= this.lastReceived + this.config.idleTimeoutMs) {
      const why = `nothing received for ${this.config.idleTimeoutMs} ms`;
      this.close(Code.NoError, why);
      return;
    }
    if (now >= this.nextPing) {
      const micros = Math.max(0, Math.floor((now - this.epoch) * 1000));
      this.send({ type: 'ping', data: u64be(micros) });
      // The next PING one period after this one, however late this one was: a stalled shell
      // does not make up for lost PINGs in a burst.
      this.nextPing = now + this.config.pingIntervalMs;
    }
  }

  /**
   * The peer sent a binary message. A malformed one or a breach of the mux rules closes the
   * connection (`protocol_violation`).
   */
  handleMessage(now: number, message: Uint8Array): void {
    if (this.closed !== null) return;
    this.lastReceived = now;
    const r = decodeMux(message);
    if (!r.ok) {
      this.violation(badFrame(r.error));
      return;
    }
    const frame = r.frame;
    switch (frame.type) {
      case 'ping':
        this.send({ type: 'pong', data: frame.data });
        return;
      case 'pong':
        this.pong(now, frame.data);
        return;
      case 'stop_sending': {
        const state = this.writing.get(frame.id);
        if (state && (state.kind === 'open' || state.kind === 'done')) {
          this.writing.set(frame.id, { kind: 'stopped', code: frame.code });
          this.out.push({ type: 'stopped', id: frame.id, code: frame.code });
        }
        return;
      }
      case 'stream':
        this.deliver(frame.id, { kind: 'data', data: frame.data });
        return;
      case 'fin':
        this.deliver(frame.id, { kind: 'fin' });
        return;
      case 'reset_stream':
        this.deliver(frame.id, { kind: 'reset', code: frame.code });
        return;
    }
  }

  /** The peer sent a text message: the mux is binary only. */
  handleText(): void {
    this.violation('text message on a voq mux');
  }

  /**
   * The WebSocket closed underneath (the peer's close frame, an error, EOF). Nothing more is
   * sent; the shell reports `reason` to the streams.
   */
  handlePeerClosed(reason: string): void {
    if (this.closed === null) {
      this.closed = reason;
      this.reading.clear();
      this.writing.clear();
    }
  }

  /** Opens a stream of ours: bidirectional (the client's control stream) or unidirectional. */
  open(bidirectional: boolean): MuxResult<number> {
    if (this.closed !== null) return { ok: false, error: { kind: 'closed', reason: this.closed } };
    const kind = { serverInitiated: this.side === 'server', unidirectional: !bidirectional };
    const slot = bidirectional ? 0 : 1;
    const id = nthStreamId(this.next[slot], kind);
    this.next[slot] += 1;
    this.writing.set(id, { kind: 'open' });
    if (bidirectional) this.reading.add(id);
    return { ok: true, value: id };
  }

  /**
   * Writes bytes on a stream this side writes, cut into frames of at most
   * {@link MuxConfig.maxFrameData} bytes.
   */
  write(id: number, data: Uint8Array): MuxResult<void> {
    const w = this.writable(id);
    if (!w.ok) return w;
    const size = Math.max(1, this.config.maxFrameData);
    for (let at = 0; at < data.length; at += size) {
      this.send({ type: 'stream', id, data: data.subarray(at, at + size) });
    }
    return OK;
  }

  /** Ends a stream cleanly (FIN) after what was written. */
  finish(id: number): MuxResult<void> {
    const w = this.writable(id);
    if (!w.ok) return w;
    this.writing.set(id, { kind: 'done' });
    this.send({ type: 'fin', id });
    return OK;
  }

  /**
   * Abandons a stream this side writes (RESET_STREAM with `code`). Also after the peer stopped
   * it, as QUIC answers STOP_SENDING.
   */
  reset(id: number, code: number): void {
    if (this.closed !== null) return;
    const state = this.writing.get(id);
    if (state && state.kind !== 'done') {
      this.writing.set(id, { kind: 'done' });
      this.send({ type: 'reset_stream', id, code });
    }
  }

  /**
   * Asks the peer to stop sending a stream this side reads (STOP_SENDING with `code`); its later
   * frames are ignored.
   */
  stop(id: number, code: number): void {
    if (this.closed === null && this.reading.delete(id)) {
      this.send({ type: 'stop_sending', id, code });
    }
  }

  /**
   * The application no longer writes this stream (its handle is gone): a later STOP_SENDING has
   * nobody to tell and is ignored.
   */
  releaseSend(id: number): void {
    this.writing.delete(id);
  }

  /**
   * The application no longer reads this stream (its handle is gone, without {@link stop}):
   * later frames are dropped.
   */
  releaseRecv(id: number): void {
    this.reading.delete(id);
  }

  /** Closes the connection with `code`; emits a `close` output once. */
  close(code: number, reason: string): void {
    if (this.closed !== null) return;
    this.closed = `closed locally: ${codeName(code)} ${reason}`;
    this.reading.clear();
    this.writing.clear();
    this.out.push({ type: 'close', code, reason });
  }

  private violation(why: string): void {
    // Only the close this violation causes takes its reason: an already closed connection keeps
    // the reason it closed with.
    if (this.closed !== null) return;
    this.close(Code.ProtocolViolation, why);
    this.closed = `protocol violation: ${why}`;
  }

  private writable(id: number): MuxResult<void> {
    if (this.closed !== null) return { ok: false, error: { kind: 'closed', reason: this.closed } };
    const state = this.writing.get(id);
    if (state?.kind === 'open') return OK;
    if (state?.kind === 'stopped') return { ok: false, error: { kind: 'stopped', code: state.code } };
    return { ok: false, error: { kind: 'not_writable' } };
  }

  private send(frame: MuxFrame): void {
    this.out.push({ type: 'transmit', bytes: encodeMux(frame) });
  }

  private pong(now: number, payload: Uint8Array): void {
    const sentUs = readU64be(payload);
    const elapsedUs = Math.max(0, (now - this.epoch) * 1000);
    if (sentUs > elapsedUs) return; // not one of our PINGs (a payload from the future)
    const sample = (elapsedUs - sentUs) / 1000;
    this._rtt = this._rtt === null ? sample : (this._rtt * 7 + sample) / 8;
  }

  /** A stream frame from the peer: to a stream this side reads, or the peer's next new one. */
  private deliver(id: number, what: Delivery): void {
    if (this.reading.has(id)) {
      this.emit(id, what);
      return;
    }
    const kind = streamKind(id);
    const ours = kind.serverInitiated === (this.side === 'server');
    if (ours) {
      // Only our bidirectional streams carry data back, and we read those until they end or we
      // stop them; anything else is the peer writing on our unidirectional stream.
      if (kind.unidirectional) this.violation('data on a unidirectional stream of the receiver');
      return; // a stream we stopped reading or that already ended
    }
    const slot = kind.unidirectional ? 1 : 0;
    const index = Math.floor(id / 4);
    if (index < this.peerNext[slot]) return; // already ended, stopped or refused: late frames are ignored
    if (index !== this.peerNext[slot]) {
      this.violation('stream ids of one kind must be used in order');
      return;
    }
    this.peerNext[slot] += 1;
    // voq/1's only bidirectional stream is the client's first, the control stream.
    const controlStream = this.side === 'server' && !kind.unidirectional && index === 0;
    if (!kind.unidirectional && !controlStream) {
      this.send({ type: 'stop_sending', id, code: Code.StreamRefused });
      this.send({ type: 'reset_stream', id, code: Code.StreamRefused });
      return;
    }
    if (kind.unidirectional && this.openPeerUni() >= this.config.maxPeerUniStreams) {
      this.send({ type: 'stop_sending', id, code: Code.StreamRefused });
      return;
    }
    this.reading.add(id);
    if (controlStream) this.writing.set(id, { kind: 'open' });
    this.out.push({ type: 'opened', id });
    this.emit(id, what);
  }

  private openPeerUni(): number {
    const ours = this.side === 'server';
    let n = 0;
    for (const id of this.reading) {
      const k = streamKind(id);
      if (k.unidirectional && k.serverInitiated !== ours) n++;
    }
    return n;
  }

  private emit(id: number, what: Delivery): void {
    switch (what.kind) {
      case 'data':
        this.out.push({ type: 'data', id, data: what.data });
        return;
      case 'fin':
        this.reading.delete(id);
        this.out.push({ type: 'fin', id });
        return;
      case 'reset':
        this.reading.delete(id);
        this.out.push({ type: 'reset', id, code: what.code });
        return;
    }
  }
}

/** `n` (an integer below 2^53) as 8 bytes, big-endian. */
function u64be(n: number): Uint8Array {
  const out = new Uint8Array(8);
  const view = new DataView(out.buffer);
  view.setUint32(0, Math.floor(n / 2 ** 32));
  view.setUint32(4, n % 2 ** 32);
  return out;
}

/** 8 bytes, big-endian, as a number (exact below 2^53, which is 285 years of microseconds). */
function readU64be(b: Uint8Array): number {
  const view = new DataView(b.buffer, b.byteOffset, 8);
  return view.getUint32(0) * 2 ** 32 + view.getUint32(4);
}

function badFrame(e: MuxError): string {
  return `bad mux frame: ${muxErrorMessage(e)}`;
}
