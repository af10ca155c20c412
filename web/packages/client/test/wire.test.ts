import { describe, expect, it } from 'vitest';
import {
  AudioStreamDecoder,
  EventDecoder,
  MAX_EVENT_LEN,
  MAX_FRAME_PAYLOAD,
  StreamKind,
  WireEncodeError,
  encodeEvent,
  encodeFrame,
  encodeHeader,
} from '../src/wire.js';
import type { AudioItem } from '../src/wire.js';
import { Code } from '../src/errors.js';
import { concat } from '../src/bytes.js';
import { rng } from './helpers.js';

const header = { item_id: 'item_1', codec: 'pcm16', sample_rate: 24000, frame_ms: 20 };

describe('framing', () => {
  it('writes frames and events as specified', () => {
    expect(Array.from(encodeFrame(0x01020304, new Uint8Array([0xaa, 0xbb])))).toEqual([0, 2, 1, 2, 3, 4, 0xaa, 0xbb]);
    expect(Array.from(encodeEvent('{"type":"x"}').subarray(0, 4))).toEqual([0, 0, 0, 12]);
  });

  it('refuses to encode over the limits', () => {
    expect(() => encodeFrame(0, new Uint8Array(MAX_FRAME_PAYLOAD + 1))).toThrow(WireEncodeError);
    expect(() => encodeEvent(new Uint8Array(MAX_EVENT_LEN + 1))).toThrow(WireEncodeError);
    expect(encodeEvent(new Uint8Array(MAX_EVENT_LEN)).length).toBe(MAX_EVENT_LEN + 4);
  });
});

describe('EventDecoder', () => {
  it('skips an oversized event fed in pieces and stays in sync', () => {
    const big = MAX_EVENT_LEN + 10;
    const prefix = new Uint8Array(4);
    new DataView(prefix.buffer).setUint32(0, big);
    const bytes = concat([prefix, new Uint8Array(big).fill(0x20), encodeEvent('{}')]);
    const d = new EventDecoder();
    const got: unknown[] = [];
    for (let i = 0; i < bytes.length; i += 1000) {
      d.push(bytes.subarray(i, i + 1000));
      for (let e = d.poll(); e; e = d.poll()) got.push(e);
    }
    expect(got).toEqual([
      { type: 'skipped', length: big },
      { type: 'event', body: new TextEncoder().encode('{}') },
    ]);
    expect(d.pending()).toBe(0);
  });

  it('reassembles events split at every byte', () => {
    const events = ['{"type":"a"}', '{}', '{"type":"é—"}'];
    const bytes = concat(events.map((e) => encodeEvent(e)));
    const d = new EventDecoder();
    const got: string[] = [];
    for (const b of bytes) {
      d.push(new Uint8Array([b]));
      for (let e = d.poll(); e; e = d.poll()) if (e.type === 'event') got.push(new TextDecoder().decode(e.body));
    }
    expect(got).toEqual(events);
  });

  it('reports a truncated event as pending', () => {
    const d = new EventDecoder();
    d.push(encodeEvent('{"type":"x"}').subarray(0, 7));
    expect(d.poll()).toBeNull();
    expect(d.pending()).toBe(7);
  });
});

function drain(d: AudioStreamDecoder): AudioItem[] {
  const out: AudioItem[] = [];
  for (;;) {
    const r = d.poll();
    if (!r.ok) throw new Error(r.error.message);
    if (!r.item) return out;
    out.push(r.item);
  }
}

describe('AudioStreamDecoder', () => {
  it('round-trips in any chunking', () => {
    const rand = rng(7);
    for (let round = 0; round < 50; round++) {
      const frames: Array<[number, Uint8Array]> = [];
      for (let i = 0, n = Math.floor(rand() * 20); i < n; i++) {
        const p = new Uint8Array(Math.floor(rand() * 1500)).map(() => Math.floor(rand() * 256));
        frames.push([Math.floor(rand() * 0xffffffff), p]);
      }
      const bytes = concat([encodeHeader(StreamKind.AgentAudio, { ...header, response_id: 'r' }), ...frames.map(([pts, p]) => encodeFrame(pts, p))]);
      const split = 1 + Math.floor(rand() * 97);
      const d = new AudioStreamDecoder();
      const got: AudioItem[] = [];
      for (let i = 0; i < bytes.length; i += split) {
        d.push(bytes.subarray(i, i + split));
        got.push(...drain(d));
      }
      expect(d.pending()).toBe(0);
      expect(got[0]).toEqual({ type: 'header', kind: StreamKind.AgentAudio, header: { ...header, response_id: 'r' } });
      expect(got.slice(1)).toEqual(frames.map(([pts, payload]) => ({ type: 'frame', pts, payload })));
    }
  });

  it('types its errors with the stream code', () => {
    const cases: Array<[Uint8Array, string, number]> = [
      [new Uint8Array([0x07, 0, 0]), 'unknown_stream_kind', Code.StreamRefused],
      [new Uint8Array([0x01, 0xff, 0xff]), 'header_too_large', Code.BadStreamHeader],
      [new Uint8Array([0x01, 0, 2, 0x7b, 0x78]), 'bad_header', Code.BadStreamHeader],
      [encodeHeader(StreamKind.UserAudio, '[1]'), 'bad_header', Code.BadStreamHeader],
      [encodeHeader(StreamKind.UserAudio, '{"item_id":"i","codec":"pcm16","sample_rate":0,"frame_ms":20}'), 'bad_header', Code.BadStreamHeader],
      [encodeHeader(StreamKind.UserAudio, '{"item_id":"i","codec":"pcm16","sample_rate":-1,"frame_ms":20}'), 'bad_header', Code.BadStreamHeader],
      [encodeHeader(StreamKind.UserAudio, '{"item_id":7,"codec":"pcm16","sample_rate":24000,"frame_ms":20}'), 'bad_header', Code.BadStreamHeader],
      [concat([encodeHeader(StreamKind.UserAudio, header), new Uint8Array([0xff, 0xff, 0, 0, 0, 0])]), 'frame_too_large', Code.FrameTooLarge],
      // Invalid UTF-8 is an error (as serde_json), not a replacement character.
      [new Uint8Array([0x01, 0, 3, 0x22, 0xff, 0x22]), 'bad_header', Code.BadStreamHeader],
    ];
    for (const [bytes, kind, code] of cases) {
      const d = new AudioStreamDecoder();
      d.push(bytes);
      let r = d.poll();
      while (r.ok && r.item) r = d.poll();
      expect(r.ok ? 'ok' : r.error.kind, kind).toBe(kind);
      if (!r.ok) expect(r.error.code).toBe(code);
      const again = d.poll();
      expect(!again.ok && again.error.kind).toBe('failed');
    }
  });

  it('accepts unknown header fields and a null response_id', () => {
    const d = new AudioStreamDecoder();
    d.push(encodeHeader(StreamKind.UserAudio, '{"item_id":"i","response_id":null,"codec":"opus","sample_rate":24000,"frame_ms":20,"x":[1]}'));
    expect(drain(d)).toEqual([{ type: 'header', kind: 1, header: { item_id: 'i', codec: 'opus', sample_rate: 24000, frame_ms: 20 } }]);
  });

  it('never throws on garbage', () => {
    const rand = rng(42);
    for (let round = 0; round < 2000; round++) {
      const bytes = new Uint8Array(Math.floor(rand() * 300)).map(() => Math.floor(rand() * 256));
      if (round % 3 === 0 && bytes.length > 0) bytes[0] = 1 + (round % 2);
      const a = new AudioStreamDecoder();
      a.push(bytes);
      for (let i = 0; i < 1000; i++) {
        const r = a.poll();
        if (!r.ok || !r.item) break;
      }
      const e = new EventDecoder();
      e.push(bytes);
      while (e.poll()) {
        // drain
      }
    }
  });

  it('reports a stream that ends inside a frame as pending bytes', () => {
    const d = new AudioStreamDecoder();
    d.push(concat([encodeHeader(StreamKind.AgentAudio, header), encodeFrame(0, new Uint8Array(10)).subarray(0, 9)]));
    expect(drain(d)).toHaveLength(1);
    expect(d.pending()).toBe(9);
  });
});
