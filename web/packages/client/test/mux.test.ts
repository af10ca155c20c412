import { describe, expect, it } from 'vitest';
import { decodeMux, encodeMux, nthStreamId, streamKind } from '../src/mux.js';
import type { MuxFrame } from '../src/mux.js';
import { VARINT_MAX, decodeVarint, encodeVarint } from '../src/varint.js';
import { hex, rng, toHex } from './helpers.js';

describe('varints', () => {
  it('match the RFC 9000 §A.1 examples', () => {
    for (const [h, v] of [
      ['c2197c5eff14e88c', 151288809941952652n],
      ['9d7f3e7d', 494878333n],
      ['7bbd', 15293n],
      ['25', 37n],
    ] as const) {
      expect(decodeVarint(hex(h))).toEqual({ value: v, length: h.length / 2 });
      expect(toHex(encodeVarint(v))).toBe(h);
    }
    expect(decodeVarint(hex('4025'))).toEqual({ value: 37n, length: 2 });
    expect(decodeVarint(hex('40'))).toBeNull();
    expect(decodeVarint(new Uint8Array())).toBeNull();
  });

  it('round-trip at every length boundary and refuse out-of-range values', () => {
    for (const v of [0n, 63n, 64n, 16383n, 16384n, (1n << 30n) - 1n, 1n << 30n, VARINT_MAX]) {
      const b = encodeVarint(v);
      expect(decodeVarint(b)).toEqual({ value: v, length: b.length });
    }
    expect(() => encodeVarint(VARINT_MAX + 1n)).toThrow(RangeError);
    expect(() => encodeVarint(-1)).toThrow(RangeError);
  });
});

describe('stream ids', () => {
  it('follow QUIC', () => {
    expect(streamKind(2)).toEqual({ serverInitiated: false, unidirectional: true });
    expect(streamKind(3)).toEqual({ serverInitiated: true, unidirectional: true });
    expect(nthStreamId(0, streamKind(2))).toBe(2);
    expect(nthStreamId(2, streamKind(2))).toBe(10);
    expect(nthStreamId(1, streamKind(3))).toBe(7);
    expect(nthStreamId(0, streamKind(0))).toBe(0);
  });
});

describe('mux frames', () => {
  it('rejects malformed messages', () => {
    const bad: Array<[number[], string]> = [
      [[], 'Empty'],
      [[0x07, 0], 'UnknownType'],
      [[0x00], 'TruncatedVarint'],
      [[0x02, 3], 'TruncatedVarint'],
      [[0x01, 3, 9], 'TrailingBytes'],
      [[0x03, 3, 5, 0], 'TrailingBytes'],
      [[0x10, 0, 1, 2], 'BadPing'],
      [[0x10, 1, 0, 0, 0, 0, 0, 0, 0, 0], 'BadPing'],
      [[0x11, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], 'BadPing'],
    ];
    for (const [bytes, kind] of bad) {
      const r = decodeMux(new Uint8Array(bytes));
      expect(r.ok ? 'ok' : r.error.kind, JSON.stringify(bytes)).toBe(kind);
    }
  });

  it('round-trip random frames', () => {
    const rand = rng(3);
    const id = () => Math.floor(rand() * 2 ** (1 + Math.floor(rand() * 52)));
    for (let i = 0; i < 500; i++) {
      const data = new Uint8Array(Math.floor(rand() * 64)).map(() => Math.floor(rand() * 256));
      const eight = new Uint8Array(8).map(() => Math.floor(rand() * 256));
      const frames: MuxFrame[] = [
        { type: 'stream', id: id(), data },
        { type: 'fin', id: id() },
        { type: 'reset_stream', id: id(), code: id() },
        { type: 'stop_sending', id: id(), code: id() },
        { type: 'ping', data: eight },
        { type: 'pong', data: eight },
      ];
      for (const f of frames) expect(decodeMux(encodeMux(f))).toEqual({ ok: true, frame: f });
    }
  });

  it('never throws on garbage', () => {
    const rand = rng(9);
    for (let i = 0; i < 5000; i++) {
      decodeMux(new Uint8Array(Math.floor(rand() * 32)).map(() => Math.floor(rand() * 256)));
    }
  });
});
