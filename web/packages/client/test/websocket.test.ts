import { describe, expect, it } from 'vitest';
import { WebSocketTransport } from '../src/websocket.js';
import type { WebSocketLike } from '../src/websocket.js';
import { decodeMux, encodeMux } from '../src/mux.js';
import type { MuxFrame } from '../src/mux.js';
import type { RecvStream } from '../src/transport.js';

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
  close(code?: number, reason?: string): void {
    this.closedWith = { code, reason };
  }
  deliver(frame: MuxFrame | string): void {
    if (typeof frame === 'string') return this.onmessage?.({ data: frame });
    const b = encodeMux(frame);
    this.onmessage?.({ data: b.buffer.slice(b.byteOffset, b.byteOffset + b.length) });
  }
}

function setup() {
  const ws = new FakeWs();
  let t = 1000;
  let tick: (() => void) | null = null;
  const tr = new WebSocketTransport(ws, { now: () => t, setInterval: (fn) => (tick = fn), clearInterval: () => (tick = null) });
  return { ws, tr, advance: (ms: number) => (t += ms), tick: () => tick?.() };
}

describe('WebSocketTransport', () => {
  it('pings on open and every second, and measures RTT from the pongs', () => {
    const { ws, tr, advance, tick } = setup();
    expect(ws.binaryType).toBe('arraybuffer');
    const first = ws.sent[0];
    expect(first?.type).toBe('ping');
    advance(40);
    if (first?.type === 'ping') ws.deliver({ type: 'pong', data: first.data });
    expect(tr.rttMs()).toBe(40);
    tick();
    const second = ws.sent[1];
    advance(80);
    if (second?.type === 'ping') ws.deliver({ type: 'pong', data: second.data });
    expect(tr.rttMs()).toBe(45); // 7/8 · 40 + 1/8 · 80
    // The server's pings are answered at once with the same bytes.
    const data = new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8]);
    ws.deliver({ type: 'ping', data });
    expect(ws.sent.at(-1)).toEqual({ type: 'pong', data });
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
    const { ws, tr } = setup();
    ws.onclose?.({ code: 4007, reason: 'going away' });
    expect(await tr.closed).toEqual({ code: 7, reason: 'going away', local: false });
    const b = setup();
    b.tr.close(0, 'bye');
    expect(b.ws.closedWith).toEqual({ code: 4000, reason: 'bye' });
    expect((await b.tr.closed).local).toBe(true);
  });
});
