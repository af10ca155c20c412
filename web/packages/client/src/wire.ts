/**
 * Byte-level framing of voq/1 (docs/PROTOCOL.md, "Control stream" and "Audio streams"), a mirror
 * of `crates/voq-proto/src/wire.rs`. Every decoder is incremental (bytes arrive in arbitrary
 * pieces) and total: any input yields a value, "need more bytes", or a typed error — it never
 * throws.
 *
 * ```text
 * control stream : { u32 length (BE) ; length bytes of UTF-8 JSON event }*
 * audio stream   : u8 kind ; u16 header_length (BE) ; header JSON ;
 *                  { u16 payload_length (BE) ; u32 pts (BE, samples) ; payload }*  FIN
 * ```
 */

import { ByteQueue, utf8, utf8Strict } from './bytes.js';
import { Code } from './errors.js';

/** Largest control event accepted. */
export const MAX_EVENT_LEN = 64 * 1024;
/** Largest audio stream header. */
export const MAX_HEADER_LEN = 4 * 1024;
/** Largest audio frame payload. */
export const MAX_FRAME_PAYLOAD = 8 * 1024;
/** Bytes before a frame's payload: u16 length + u32 pts. */
export const FRAME_OVERHEAD = 6;

/** The first byte of every unidirectional stream. */
export const StreamKind = { UserAudio: 0x01, AgentAudio: 0x02 } as const;
export type StreamKind = (typeof StreamKind)[keyof typeof StreamKind];

/** The JSON header that opens an audio stream. */
export interface AudioHeader {
  item_id: string;
  /** Agent audio only: the response the stream carries. */
  response_id?: string;
  /** `pcm16` or `opus`. */
  codec: string;
  sample_rate: number;
  frame_ms: number;
}

/** Why bytes are not valid voq/1 framing. `code` is the wire code to stop the stream with. */
export interface WireError {
  kind:
    | 'event_too_large'
    | 'unknown_stream_kind'
    | 'header_too_large'
    | 'bad_header'
    | 'frame_too_large'
    | 'failed';
  code: Code;
  message: string;
}

function wireError(kind: WireError['kind'], message: string): WireError {
  const code = {
    event_too_large: Code.ProtocolViolation,
    unknown_stream_kind: Code.StreamRefused,
    header_too_large: Code.BadStreamHeader,
    bad_header: Code.BadStreamHeader,
    frame_too_large: Code.FrameTooLarge,
    failed: Code.ProtocolViolation,
  }[kind];
  return { kind, code, message };
}

/** Thrown by the encoders when asked to produce something the protocol forbids. */
export class WireEncodeError extends Error {
  constructor(readonly error: WireError) {
    super(error.message);
    this.name = 'WireEncodeError';
  }
}

/** One control event (serialized JSON text or bytes) with its length prefix. */
export function encodeEvent(json: string | Uint8Array): Uint8Array {
  const body = typeof json === 'string' ? utf8.encode(json) : json;
  if (body.length > MAX_EVENT_LEN) {
    throw new WireEncodeError(
      wireError('event_too_large', `control event of ${body.length} bytes exceeds the ${MAX_EVENT_LEN} byte limit`),
    );
  }
  const out = new Uint8Array(4 + body.length);
  new DataView(out.buffer).setUint32(0, body.length);
  out.set(body, 4);
  return out;
}

/** The JSON text of a header, fields in the order the Rust side writes them. */
export function headerJson(header: AudioHeader): string {
  const ordered: AudioHeader = { item_id: header.item_id } as AudioHeader;
  if (header.response_id !== undefined) ordered.response_id = header.response_id;
  ordered.codec = header.codec;
  ordered.sample_rate = header.sample_rate;
  ordered.frame_ms = header.frame_ms;
  return JSON.stringify(ordered);
}

/** A stream preamble: kind, u16 length, header JSON (an object, or its exact JSON text). */
export function encodeHeader(kind: StreamKind, header: AudioHeader | string): Uint8Array {
  const body = utf8.encode(typeof header === 'string' ? header : headerJson(header));
  if (body.length > MAX_HEADER_LEN) {
    throw new WireEncodeError(
      wireError('header_too_large', `audio stream header of ${body.length} bytes exceeds the ${MAX_HEADER_LEN} byte limit`),
    );
  }
  const out = new Uint8Array(3 + body.length);
  out[0] = kind;
  new DataView(out.buffer).setUint16(1, body.length);
  out.set(body, 3);
  return out;
}

/** One audio frame: u16 length, u32 pts, payload. */
export function encodeFrame(pts: number, payload: Uint8Array): Uint8Array {
  if (payload.length > MAX_FRAME_PAYLOAD) {
    throw new WireEncodeError(
      wireError('frame_too_large', `audio frame payload of ${payload.length} bytes exceeds the ${MAX_FRAME_PAYLOAD} byte limit`),
    );
  }
  const out = new Uint8Array(FRAME_OVERHEAD + payload.length);
  const view = new DataView(out.buffer);
  view.setUint16(0, payload.length);
  view.setUint32(2, pts >>> 0);
  out.set(payload, FRAME_OVERHEAD);
  return out;
}

/** A result of {@link EventDecoder.poll}. */
export type DecodedEvent =
  /** A complete event body (JSON bytes, not yet parsed). */
  | { type: 'event'; body: Uint8Array }
  /** An event over {@link MAX_EVENT_LEN} was skipped whole; the stream stays in sync. */
  | { type: 'skipped'; length: number };

/** Incremental decoder of the control stream; oversized events are skipped, never buffered. */
export class EventDecoder {
  private buf = new ByteQueue();
  private skipping = 0;

  push(bytes: Uint8Array): void {
    const skip = Math.min(this.skipping, bytes.length);
    this.skipping -= skip;
    this.buf.push(skip ? bytes.subarray(skip) : bytes);
  }

  /** The next complete event, or `null`. Call until `null` after every `push`. */
  poll(): DecodedEvent | null {
    if (this.skipping > 0 || this.buf.length < 4) return null;
    const len = this.buf.u32(0);
    if (len > MAX_EVENT_LEN) {
      const drop = Math.min(this.buf.length - 4, len);
      this.buf.consume(4 + drop);
      this.skipping = len - drop;
      return { type: 'skipped', length: len };
    }
    if (this.buf.length < 4 + len) return null;
    const body = this.buf.slice(4, 4 + len);
    this.buf.consume(4 + len);
    return { type: 'event', body };
  }

  /** Bytes of an incomplete event (non-zero at end of stream means truncation). */
  pending(): number {
    return this.buf.length + this.skipping;
  }
}

/** A result of {@link AudioStreamDecoder.poll}. */
export type AudioItem =
  | { type: 'header'; kind: StreamKind; header: AudioHeader }
  | { type: 'frame'; pts: number; payload: Uint8Array };

export type AudioPoll = { ok: true; item: AudioItem | null } | { ok: false; error: WireError };

function isU32(v: unknown): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= 0xffffffff;
}

/** Validates a header as serde does on the Rust side (unknown fields are ignored). */
export function parseHeader(body: Uint8Array): AudioHeader | WireError {
  let value: unknown;
  try {
    value = JSON.parse(utf8Strict.decode(body));
  } catch (e) {
    return wireError('bad_header', `malformed audio stream header: ${(e as Error).message}`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    return wireError('bad_header', 'malformed audio stream header: not a JSON object');
  }
  const h = value as Record<string, unknown>;
  const bad = (what: string) => wireError('bad_header', `malformed audio stream header: ${what}`);
  if (typeof h.item_id !== 'string') return bad('"item_id" must be a string');
  if (h.response_id !== undefined && h.response_id !== null && typeof h.response_id !== 'string') {
    return bad('"response_id" must be a string');
  }
  if (typeof h.codec !== 'string') return bad('"codec" must be a string');
  if (!isU32(h.sample_rate)) return bad('"sample_rate" must be an unsigned integer');
  if (!isU32(h.frame_ms)) return bad('"frame_ms" must be an unsigned integer');
  if (h.sample_rate === 0 || h.frame_ms === 0) return bad('sample_rate and frame_ms must be > 0');
  const header: AudioHeader = {
    item_id: h.item_id,
    codec: h.codec,
    sample_rate: h.sample_rate,
    frame_ms: h.frame_ms,
  };
  if (typeof h.response_id === 'string') header.response_id = h.response_id;
  return header;
}

/**
 * Incremental decoder of one audio stream: the preamble, then frames. After an error it stays
 * failed (the caller stops the stream with the error's `code`).
 */
export class AudioStreamDecoder {
  private buf = new ByteQueue();
  private state: 'preamble' | 'frames' | 'failed' = 'preamble';

  push(bytes: Uint8Array): void {
    if (this.state !== 'failed') this.buf.push(bytes);
  }

  /** The next header or frame; `item: null` when more bytes are needed. Call until then. */
  poll(): AudioPoll {
    if (this.state === 'failed') return { ok: false, error: wireError('failed', 'the stream already failed') };
    const r = this.state === 'preamble' ? this.preamble() : this.frame();
    if (!r.ok) {
      this.state = 'failed';
      this.buf.clear();
    }
    return r;
  }

  /** Bytes of an incomplete header or frame (non-zero at FIN means a truncated stream). */
  pending(): number {
    return this.buf.length;
  }

  private preamble(): AudioPoll {
    if (this.buf.length < 3) return { ok: true, item: null };
    const kind = this.buf.at(0);
    if (kind !== StreamKind.UserAudio && kind !== StreamKind.AgentAudio) {
      return {
        ok: false,
        error: wireError('unknown_stream_kind', `unknown audio stream kind 0x${kind.toString(16).padStart(2, '0')}`),
      };
    }
    const len = this.buf.u16(1);
    if (len > MAX_HEADER_LEN) {
      return {
        ok: false,
        error: wireError('header_too_large', `audio stream header of ${len} bytes exceeds the ${MAX_HEADER_LEN} byte limit`),
      };
    }
    if (this.buf.length < 3 + len) return { ok: true, item: null };
    const header = parseHeader(this.buf.slice(3, 3 + len));
    if ('kind' in header) return { ok: false, error: header };
    this.buf.consume(3 + len);
    this.state = 'frames';
    return { ok: true, item: { type: 'header', kind, header } };
  }

  private frame(): AudioPoll {
    if (this.buf.length < FRAME_OVERHEAD) return { ok: true, item: null };
    const len = this.buf.u16(0);
    if (len > MAX_FRAME_PAYLOAD) {
      return {
        ok: false,
        error: wireError('frame_too_large', `audio frame payload of ${len} bytes exceeds the ${MAX_FRAME_PAYLOAD} byte limit`),
      };
    }
    if (this.buf.length < FRAME_OVERHEAD + len) return { ok: true, item: null };
    const pts = this.buf.u32(2);
    const payload = this.buf.slice(FRAME_OVERHEAD, FRAME_OVERHEAD + len);
    this.buf.consume(FRAME_OVERHEAD + len);
    return { ok: true, item: { type: 'frame', pts, payload } };
  }
}
