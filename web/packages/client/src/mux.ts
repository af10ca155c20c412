/**
 * The WebSocket stream mux (docs/PROTOCOL.md, "WebSocket stream mux"), a mirror of
 * `crates/voq-proto/src/mux.rs`: QUIC-like streams inside binary WebSocket messages, one frame
 * per message.
 *
 * ```text
 * u8 type ; varint stream_id (0 for PING/PONG) ; then by type:
 *   0x00 STREAM        the rest: the next bytes of the stream (may be empty)
 *   0x01 FIN           nothing
 *   0x02 RESET_STREAM  varint code
 *   0x03 STOP_SENDING  varint code
 *   0x10 PING          8 opaque bytes
 *   0x11 PONG          the 8 bytes of the PING it answers
 * ```
 *
 * Stream ids follow QUIC (RFC 9000 §2.1): bit 0 is who opened the stream (0 client, 1 server),
 * bit 1 its direction (0 bidirectional, 1 unidirectional).
 */

import { decodeVarint, encodeVarint, varintLength, writeVarint } from './varint.js';

/** The control stream: the client's first bidirectional stream. */
export const CONTROL_STREAM = 0;

export const MuxType = {
  Stream: 0x00,
  Fin: 0x01,
  ResetStream: 0x02,
  StopSending: 0x03,
  Ping: 0x10,
  Pong: 0x11,
} as const;

/** One mux frame (= one binary WebSocket message). */
export type MuxFrame =
  | { type: 'stream'; id: number; data: Uint8Array }
  | { type: 'fin'; id: number }
  | { type: 'reset_stream'; id: number; code: number }
  | { type: 'stop_sending'; id: number; code: number }
  | { type: 'ping'; data: Uint8Array }
  | { type: 'pong'; data: Uint8Array };

/** Why a message is not a mux frame (names as in the Rust `MuxError`). */
export type MuxError =
  | { kind: 'Empty' }
  | { kind: 'UnknownType'; type: number }
  | { kind: 'TruncatedVarint' }
  | { kind: 'BadPing' }
  | { kind: 'TrailingBytes'; count: number }
  /** A stream id or code past 2^53 (JavaScript numbers); no voq peer sends one. */
  | { kind: 'VarintTooLarge' };

export function muxErrorMessage(e: MuxError): string {
  switch (e.kind) {
    case 'Empty':
      return 'empty message';
    case 'UnknownType':
      return `unknown mux frame type 0x${e.type.toString(16).padStart(2, '0')}`;
    case 'TruncatedVarint':
      return 'message ends inside a varint';
    case 'BadPing':
      return 'PING/PONG must carry exactly 8 bytes after stream id 0';
    case 'TrailingBytes':
      return `${e.count} bytes after the end of the frame`;
    case 'VarintTooLarge':
      return 'stream id or code over 2^53';
  }
}

/** Who opened a stream and which way it goes. */
export function streamKind(id: number): { serverInitiated: boolean; unidirectional: boolean } {
  return { serverInitiated: (id & 1) === 1, unidirectional: (id & 2) === 2 };
}

/** The `n`-th (0-based) stream id of a kind. */
export function nthStreamId(n: number, kind: { serverInitiated: boolean; unidirectional: boolean }): number {
  return n * 4 + (kind.unidirectional ? 2 : 0) + (kind.serverInitiated ? 1 : 0);
}

/** The frame as one WebSocket message payload. */
export function encodeMux(frame: MuxFrame): Uint8Array {
  switch (frame.type) {
    case 'stream': {
      const idLen = varintLength(frame.id);
      const out = new Uint8Array(1 + idLen + frame.data.length);
      out[0] = MuxType.Stream;
      writeVarint(BigInt(frame.id), idLen, out, 1);
      out.set(frame.data, 1 + idLen);
      return out;
    }
    case 'fin':
      return join(MuxType.Fin, encodeVarint(frame.id));
    case 'reset_stream':
      return join(MuxType.ResetStream, encodeVarint(frame.id), encodeVarint(frame.code));
    case 'stop_sending':
      return join(MuxType.StopSending, encodeVarint(frame.id), encodeVarint(frame.code));
    case 'ping':
    case 'pong': {
      if (frame.data.length !== 8) throw new RangeError('PING/PONG carry exactly 8 bytes');
      const out = new Uint8Array(10);
      out[0] = frame.type === 'ping' ? MuxType.Ping : MuxType.Pong;
      out[1] = 0;
      out.set(frame.data, 2);
      return out;
    }
  }
}

function join(type: number, ...parts: Uint8Array[]): Uint8Array {
  let n = 1;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  out[0] = type;
  let o = 1;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

export type MuxDecode = { ok: true; frame: MuxFrame } | { ok: false; error: MuxError };

/** Parses one WebSocket message. Never throws. */
export function decodeMux(msg: Uint8Array): MuxDecode {
  if (msg.length === 0) return { ok: false, error: { kind: 'Empty' } };
  const type = msg[0] ?? 0;
  const known: number[] = Object.values(MuxType);
  if (!known.includes(type)) return { ok: false, error: { kind: 'UnknownType', type } };
  const id = decodeVarint(msg, 1);
  if (!id) return { ok: false, error: { kind: 'TruncatedVarint' } };
  let pos = 1 + id.length;
  const rest = msg.length - pos;
  if (id.value > BigInt(Number.MAX_SAFE_INTEGER)) return { ok: false, error: { kind: 'VarintTooLarge' } };
  const sid = Number(id.value);
  const withCode = (): { ok: true; code: number } | { ok: false; error: MuxError } => {
    const code = decodeVarint(msg, pos);
    if (!code) return { ok: false, error: { kind: 'TruncatedVarint' } };
    const extra = msg.length - pos - code.length;
    if (extra > 0) return { ok: false, error: { kind: 'TrailingBytes', count: extra } };
    if (code.value > BigInt(Number.MAX_SAFE_INTEGER)) return { ok: false, error: { kind: 'VarintTooLarge' } };
    return { ok: true, code: Number(code.value) };
  };
  switch (type) {
    case MuxType.Stream:
      return { ok: true, frame: { type: 'stream', id: sid, data: msg.slice(pos) } };
    case MuxType.Fin:
      if (rest > 0) return { ok: false, error: { kind: 'TrailingBytes', count: rest } };
      return { ok: true, frame: { type: 'fin', id: sid } };
    case MuxType.ResetStream:
    case MuxType.StopSending: {
      const c = withCode();
      if (!c.ok) return c;
      return {
        ok: true,
        frame: { type: type === MuxType.ResetStream ? 'reset_stream' : 'stop_sending', id: sid, code: c.code },
      };
    }
    default: {
      if (rest !== 8 || sid !== 0) return { ok: false, error: { kind: 'BadPing' } };
      const data = msg.slice(pos, pos + 8);
      pos += 8;
      return { ok: true, frame: { type: type === MuxType.Ping ? 'ping' : 'pong', data } };
    }
  }
}
