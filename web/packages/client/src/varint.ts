/**
 * QUIC variable-length integers (RFC 9000 §16): the two high bits of the first byte give the
 * length (1, 2, 4 or 8 bytes), the rest is the value, big-endian. Used by the WebSocket mux.
 *
 * Values are `bigint` at this level (a varint holds up to 2^62 − 1, past JavaScript's exact
 * integers); the mux converts stream ids and codes to `number`.
 */

export const VARINT_MAX = (1n << 62n) - 1n;

/** Length in bytes of the minimal encoding of `v`. */
export function varintLength(v: bigint | number): number {
  const x = BigInt(v);
  if (x < 0n || x > VARINT_MAX) throw new RangeError(`varint out of range: ${x}`);
  if (x < 1n << 6n) return 1;
  if (x < 1n << 14n) return 2;
  if (x < 1n << 30n) return 4;
  return 8;
}

/** The minimal encoding of `v` (throws a RangeError outside 0..2^62−1). */
export function encodeVarint(v: bigint | number): Uint8Array {
  const x = BigInt(v);
  const len = varintLength(x);
  const out = new Uint8Array(len);
  writeVarint(x, len, out, 0);
  return out;
}

/** Writes `v` in exactly `len` bytes at `out[offset]` (len must hold it). */
export function writeVarint(v: bigint, len: number, out: Uint8Array, offset: number): void {
  const prefix = BigInt({ 1: 0, 2: 1, 4: 2, 8: 3 }[len] ?? 0) << BigInt(len * 8 - 2);
  let x = v | prefix;
  for (let i = len - 1; i >= 0; i--) {
    out[offset + i] = Number(x & 0xffn);
    x >>= 8n;
  }
}

/** A decoded varint: its value and how many bytes it took. */
export interface Varint {
  value: bigint;
  length: number;
}

/** Reads a varint (minimal or not) at `buf[offset]`; `null` if the buffer ends inside it. */
export function decodeVarint(buf: Uint8Array, offset = 0): Varint | null {
  if (offset >= buf.length) return null;
  const first = buf[offset] ?? 0;
  const length = 1 << (first >> 6);
  if (offset + length > buf.length) return null;
  if (length <= 4) {
    // Fast path in plain numbers (at most 30 bits).
    let v = first & 0x3f;
    for (let i = 1; i < length; i++) v = v * 256 + (buf[offset + i] ?? 0);
    return { value: BigInt(v), length };
  }
  let v = BigInt(first & 0x3f);
  for (let i = 1; i < length; i++) v = (v << 8n) | BigInt(buf[offset + i] ?? 0);
  return { value: v, length };
}
