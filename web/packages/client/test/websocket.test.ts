import { describe, expect, it } from 'vitest';
import { WebSocketTransport } from '../src/websocket.js';
import type { WebSocketLike } from '../src/websocket.js';
import { decodeMux, encodeMux } from '../src/mux.js';
import type { MuxFrame } from '../src/mux.js';
import type { MuxConfig } from '../src/muxconn.js';
import type { RecvStream } from '../src/transport.js';
import { hex, toHex } from './helpers.js';

class FakeWs implements WebSocketLike {
  binaryType = 'blob';
  readyState = 1;
  sent: MuxFrame[] = [];
  closedWith: { code: number | undefined; reason: string | undefined } | null = null;
  onopen: ((ev: unknown) => void) | null = null;
  onmessage: ((ev: { data: unknown }) => void) | null = null;
  onerror: ((ev: unknown) => void) | null = null;
  onclose: ((ev: { code: number; reason: string }) => void) | null = null;
  send(data: ArrayBufferLike | ArrayBufferView): void {
    const r = decodeMux(new Uint8Array(data as ArrayBuffer));
    if (!r.ok) throw new Error('client sent garbage');
    this.sent.push(r.frame);
  }
  closes = 0;
  close(code?: number, reason?: string): void {
    this.closes++;
    this.closedWith = { code, reason };
  }
  deliver(frame: MuxFrame | string): void {
    if (typeof frame === 'string') return this.onmessage?.({ data: frame });
    const b = encodeMux(frame);
    this.onmessage?.({ data: b.buffer.slice(b.byteOffset, b.byteOffset + b.length) });
  }
}

/** A transport on a fake socket, with a fake clock and fake timers that `advance` fires in order. */
function setup(mux: Partial<MuxConfig> = {}) {
  const ws = new FakeWs();
  let t = 1000;
  let handles = 0;
  const timers = new Map<number, { fn: () => void; at: number }>();
  const tr = new WebSocketTransport(ws, {
    now: () => t,
    setTimeout: (fn, ms) => {
      if (timers.size > 0) throw new Error('a second timer while one is pending');
      timers.set(++handles, { fn, at: t + ms });
      return handles;
    },
    clearTimeout: (h) => timers.delete(h as number),
    mux,
  });
  /** Moves the clock `ms` on, firing each timer at its time. */
  const advance = (ms: number) => {
    const end = t + ms;
    for (;;) {
      const due = [...timers].filter(([, x]) => x.at <= end).sort((a, b) => a[1].at - b[1].at)[0];
      if (!due) break;
      timers.delete(due[0]);
      t = Math.max(t, due[1].at);
      due[1].fn();
    }
    t = end;
  };
  return { ws, tr, advance, timers: () => [...timers.values()].map((x) => x.at) };
}

const pings = (ws: FakeWs) => ws.sent.flatMap((f) => (f.type === 'ping' ? [toHex(f.data)] : []));

describe('WebSocketTransport', () => {
  it('pings on open and every second with its clock in the payload, and measures RTT from the pongs', () => {
    const { ws, tr, advance, timers } = setup();
    expect(ws.binaryType).toBe('arraybuffer');
    const first = ws.sent[0];
    expect(first).toEqual({ type: 'ping', data: new Uint8Array(8) }); // 0 µs since the start
    expect(timers()).toEqual([2000]); // one timer, for the next PING
    advance(40);
    if (first?.type === 'ping') ws.deliver({ type: 'pong', data: first.data });
    expect(tr.rttMs()).toBe(40);
    advance(960);
    const second = ws.sent[1];
    expect(second).toEqual({ type: 'ping', data: hex('00000000000f4240') }); // 1 000 000 µs
    expect(timers()).toEqual([3000]);
    advance(80);
    if (second?.type === 'ping') ws.deliver({ type: 'pong', data: second.data });
    expect(tr.rttMs()).toBe(45); // 7/8 · 40 + 1/8 · 80
    // A PONG that is none of ours (a payload from the future) is no sample.
    ws.deliver({ type: 'pong', data: hex('00000000ffffffff') });
    expect(tr.rttMs()).toBe(45);
    // The server's pings are answered at once with the same bytes.
    const data = new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8]);
    ws.deliver({ type: 'ping', data });
    expect(ws.sent.at(-1)).toEqual({ type: 'pong', data });
    advance(2920);
    expect(pings(ws)).toEqual(['0000000000000000', '00000000000f4240', '00000000001e8480', '00000000002dc6c0', '00000000003d0900']);
    expect(timers()).toHaveLength(1);
  });

  it('numbers streams as QUIC: control 0, user audio 2, 6, 10', () => {
    const { ws, tr } = setup();
    ws.sent = [];
    const { send } = tr.openBidi();
    send.write(new Uint8Array([1]));
    const a = tr.openUni();
    const b = tr.openUni();
    const c = tr.openUni();
    a.write(new Uint8Array([2]));
    a.finish();
    a.write(new Uint8Array([9])); // after FIN: dropped
    b.reset(5);
    c.finish();
    expect(ws.sent).toEqual([
      { type: 'stream', id: 0, data: new Uint8Array([1]) },
      { type: 'stream', id: 2, data: new Uint8Array([2]) },
      { type: 'fin', id: 2 },
      { type: 'reset_stream', id: 6, code: 5 },
      { type: 'fin', id: 10 },
    ]);
  });

  it('delivers server streams, FIN, RESET and STOP_SENDING', () => {
    const { ws, tr } = setup();
    const { recv } = tr.openBidi();
    const control: Uint8Array[] = [];
    recv.onData = (b) => control.push(b);
    const streams: Array<{ s: RecvStream; log: string[] }> = [];
    tr.onIncomingUni = (s) => {
      const log: string[] = [];
      s.onData = (b) => log.push(`data ${b.length}`);
      s.onFin = () => log.push('fin');
      s.onReset = (c) => log.push(`reset ${c}`);
      streams.push({ s, log });
    };
    ws.deliver({ type: 'stream', id: 0, data: new Uint8Array(4) });
    ws.deliver({ type: 'stream', id: 3, data: new Uint8Array(10) });
    ws.deliver({ type: 'stream', id: 3, data: new Uint8Array(5) });
    ws.deliver({ type: 'fin', id: 3 });
    ws.deliver({ type: 'stream', id: 3, data: new Uint8Array(1) }); // late: ignored
    ws.deliver({ type: 'fin', id: 7 }); // an empty stream opens with FIN
    ws.deliver({ type: 'stream', id: 11, data: new Uint8Array(2) });
    ws.deliver({ type: 'reset_stream', id: 11, code: 5 });
    expect(control.map((b) => b.length)).toEqual([4]);
    expect(streams.map((x) => [x.s.id, x.log])).toEqual([
      [3, ['data 10', 'data 5', 'fin']],
      [7, ['fin']],
      [11, ['data 2', 'reset 5']],
    ]);
    // STOP_SENDING from us, and from the server on our stream.
    const s15 = (ws.deliver({ type: 'stream', id: 15, data: new Uint8Array(1) }), streams[3]!.s);
    s15.stop(5);
    expect(ws.sent.at(-1)).toEqual({ type: 'stop_sending', id: 15, code: 5 });
    const up = tr.openUni();
    let stopped: number | null = null;
    up.onStop = (c) => (stopped = c);
    ws.deliver({ type: 'stop_sending', id: 2, code: 7 });
    expect(stopped).toBe(7);
    ws.sent = [];
    up.write(new Uint8Array(1));
    expect(ws.sent).toEqual([]);
    expect(ws.closedWith).toBeNull();
  });

  it('closes with 4002 on a text message, garbage, data on our own uni stream, or ids out of order', async () => {
    for (const bad of ['hello', { type: 'stream', id: 2, data: new Uint8Array(1) }, { type: 'stream', id: 7, data: new Uint8Array(1) }] as const) {
      const { ws, tr } = setup();
      ws.deliver(bad as MuxFrame | string);
      expect(ws.closedWith?.code).toBe(4002);
      expect((await tr.closed).code).toBe(2);
    }
    const { ws } = setup();
    ws.onmessage?.({ data: new Uint8Array([0x07, 0]).buffer });
    expect(ws.closedWith?.code).toBe(4002);
  });

  it('maps close codes 4000 + voq code', async () => {
    const { ws, tr, timers } = setup();
    ws.onclose?.({ code: 4007, reason: 'going away' });
    expect(await tr.closed).toEqual({ code: 7, reason: 'going away', local: false });
    expect(timers()).toEqual([]);
    expect(ws.closes).toBe(0); // the peer closed: nothing more is sent
    const b = setup();
    b.tr.close(0, 'bye');
    expect(b.ws.closedWith).toEqual({ code: 4000, reason: 'bye' });
    expect(await b.tr.closed).toEqual({ code: 0, reason: 'bye', local: true });
    expect(b.timers()).toEqual([]);
    // Closed: nothing more is sent, and a second close is no second close frame.
    b.ws.sent = [];
    b.tr.close(7, 'again');
    b.tr.openUni().write(new Uint8Array(1));
    b.ws.deliver({ type: 'ping', data: new Uint8Array(8) });
    b.advance(60_000);
    expect(b.ws.sent).toEqual([]);
    expect(b.ws.closes).toBe(1);
  });

  it('a violation reports its reason', async () => {
    const { ws, tr } = setup();
    ws.deliver({ type: 'stream', id: 7, data: new Uint8Array(1) });
    expect(ws.closedWith).toEqual({ code: 4002, reason: 'stream ids of one kind must be used in order' });
    expect(await tr.closed).toEqual({ code: 2, reason: 'protocol violation: stream ids of one kind must be used in order', local: true });
  });

  it('closes a server that has been silent for 30 s; anything it sends keeps the connection open', async () => {
    const { ws, tr, advance, timers } = setup();
    for (let i = 0; i < 6; i++) {
      advance(10_000);
      ws.deliver({ type: 'ping', data: new Uint8Array(8) });
    }
    expect(ws.closedWith).toBeNull();
    advance(29_999);
    expect(ws.closedWith).toBeNull();
    advance(1);
    expect(ws.closedWith?.code).toBe(4000);
    const info = await tr.closed;
    expect(info).toMatchObject({ code: 0, local: true });
    expect(info.reason).toContain('nothing received');
    expect(timers()).toEqual([]);
    // PINGs went out once a second all along (at 0 … 89 s; at 90 s the idle timeout comes first).
    expect(pings(ws)).toHaveLength(90);
  });

  it('the idle timeout follows the mux config', () => {
    const { ws, advance } = setup({ idleTimeoutMs: 2500 });
    advance(2499);
    expect(ws.closedWith).toBeNull();
    advance(1);
    expect(ws.closedWith?.code).toBe(4000);
  });

  it('refuses server bidirectional streams and more than 16 open server unidirectional streams', () => {
    const { ws, tr } = setup();
    const opened: number[] = [];
    tr.onIncomingUni = (s) => opened.push(s.id);
    ws.sent = [];
    ws.deliver({ type: 'stream', id: 1, data: new Uint8Array(1) });
    expect(ws.sent).toEqual([
      { type: 'stop_sending', id: 1, code: 6 },
      { type: 'reset_stream', id: 1, code: 6 },
    ]);
    ws.sent = [];
    for (let i = 0; i < 17; i++) ws.deliver({ type: 'stream', id: 3 + 4 * i, data: new Uint8Array(1) });
    expect(opened).toEqual(Array.from({ length: 16 }, (_, i) => 3 + 4 * i));
    expect(ws.sent).toEqual([{ type: 'stop_sending', id: 3 + 4 * 16, code: 6 }]);
    // One ends: the next one is accepted.
    ws.deliver({ type: 'fin', id: 3 });
    ws.deliver({ type: 'stream', id: 3 + 4 * 17, data: new Uint8Array(1) });
    expect(opened.at(-1)).toBe(3 + 4 * 17);
    expect(ws.closedWith).toBeNull();
  });

  it('a stream stopped from onIncomingUni hears nothing of its first frame', () => {
    const { ws, tr } = setup();
    const log: string[] = [];
    tr.onIncomingUni = (s) => {
      s.onData = () => log.push('data');
      s.stop(5);
    };
    ws.sent = [];
    ws.deliver({ type: 'stream', id: 3, data: new Uint8Array(1) });
    ws.deliver({ type: 'stream', id: 3, data: new Uint8Array(1) });
    expect(log).toEqual([]);
    expect(ws.sent).toEqual([{ type: 'stop_sending', id: 3, code: 5 }]);
  });

  it('a callback that closes the transport closes it once, after what was queued before', async () => {
    const { ws, tr } = setup();
    const { recv } = tr.openBidi();
    recv.onData = () => tr.close(8, 'enough');
    ws.sent = [];
    ws.deliver({ type: 'stream', id: 0, data: new Uint8Array(1) });
    ws.deliver({ type: 'stream', id: 0, data: new Uint8Array(1) });
    expect(ws.closes).toBe(1);
    expect(ws.closedWith).toEqual({ code: 4008, reason: 'enough' });
    expect(await tr.closed).toEqual({ code: 8, reason: 'enough', local: true });
  });

  it('cuts writes into frames of 64 KiB', () => {
    const { ws, tr } = setup();
    ws.sent = [];
    tr.openUni().write(new Uint8Array(150_000));
    expect(ws.sent.map((f) => (f.type === 'stream' ? f.data.length : f.type))).toEqual([65536, 65536, 150_000 - 131072]);
  });

  it('a stopped stream takes no more writes but may still be reset', () => {
    const { ws, tr } = setup();
    const up = tr.openUni();
    const stops: number[] = [];
    up.onStop = (c) => stops.push(c);
    up.finish();
    ws.deliver({ type: 'stop_sending', id: 2, code: 6 }); // late, after FIN: still heard
    expect(stops).toEqual([6]);
    const next = tr.openUni();
    next.onStop = (c) => stops.push(c);
    ws.deliver({ type: 'stop_sending', id: 6, code: 5 });
    ws.deliver({ type: 'stop_sending', id: 6, code: 5 });
    expect(stops).toEqual([6, 5]);
    ws.sent = [];
    next.write(new Uint8Array(1));
    next.finish();
    next.reset(5);
    next.reset(5);
    expect(ws.sent).toEqual([{ type: 'reset_stream', id: 6, code: 5 }]);
  });
});
