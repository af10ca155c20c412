// The shared behaviour traces of the WebSocket mux (testdata/mux/traces.json), run against the
// TypeScript MuxConnection with the semantics of the Rust runner
// (crates/voq-proto/tests/mux_traces.rs), so the two implementations of the mux rules cannot
// drift apart. The file's `about` says what a trace is.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { STREAM_CODES, codeName } from '../src/errors.js';
import { decodeMux, encodeMux } from '../src/mux.js';
import type { MuxFrame } from '../src/mux.js';
import { DEFAULT_MUX_CONFIG, MuxConnection } from '../src/muxconn.js';
import type { MuxConfig, MuxOutput, MuxResult, Side } from '../src/muxconn.js';
import { hex, toHex } from './helpers.js';

/** A frame as the trace file writes it: `{ "stream": [id, hex] }`, `{ "fin": id }`, … */
type TraceFrame = Record<string, unknown>;
type Step = Record<string, unknown>;
interface Case {
  name: string;
  side: Side;
  config?: { ping_interval_ms?: number; idle_timeout_ms?: number; max_peer_uni_streams?: number; max_frame_data?: number };
  start?: unknown[];
  steps: Step[];
}

const TRACES_PATH = fileURLToPath(new URL('../../../../testdata/mux/traces.json', import.meta.url));
const traces = JSON.parse(readFileSync(TRACES_PATH, 'utf8')) as { about: string; cases: Case[] };

function only(v: TraceFrame): [string, unknown] {
  const entries = Object.entries(v);
  if (entries.length !== 1) throw new Error(`a frame has exactly one key: ${JSON.stringify(v)}`);
  return entries[0]!;
}

function idCode(v: unknown): [number, number] {
  const [id, code] = v as [number, number];
  return [id, code];
}

/** A structural frame of the trace file as message bytes. */
function message(frame: TraceFrame): Uint8Array {
  const [kind, v] = only(frame);
  let f: MuxFrame;
  switch (kind) {
    case 'raw':
      return hex(v as string);
    case 'stream': {
      const [id, data] = v as [number, string];
      f = { type: 'stream', id, data: hex(data) };
      break;
    }
    case 'fin':
      f = { type: 'fin', id: v as number };
      break;
    case 'reset_stream': {
      const [id, code] = idCode(v);
      f = { type: 'reset_stream', id, code };
      break;
    }
    case 'stop_sending': {
      const [id, code] = idCode(v);
      f = { type: 'stop_sending', id, code };
      break;
    }
    case 'ping':
    case 'pong': {
      const data = hex(v as string);
      if (data.length !== 8) throw new Error(`${kind} carries 8 bytes: ${String(v)}`);
      f = { type: kind, data };
      break;
    }
    default:
      throw new Error(`unknown frame ${kind}`);
  }
  return encodeMux(f);
}

/** A voq code by its trace name (`protocol_violation`). */
function code(name: unknown): number {
  const c = (STREAM_CODES as Record<string, number>)[name as string];
  if (c === undefined) throw new Error(`unknown code ${String(name)}`);
  return c;
}

/** An output as the trace file writes it. */
function describeOutput(o: MuxOutput): unknown {
  switch (o.type) {
    case 'transmit': {
      const r = decodeMux(o.bytes);
      if (!r.ok) throw new Error(`the connection sent a malformed frame: ${toHex(o.bytes)}`);
      const f = r.frame;
      let frame: unknown;
      switch (f.type) {
        case 'stream':
          frame = { stream: [f.id, toHex(f.data)] };
          break;
        case 'fin':
          frame = { fin: f.id };
          break;
        case 'reset_stream':
          frame = { reset_stream: [f.id, f.code] };
          break;
        case 'stop_sending':
          frame = { stop_sending: [f.id, f.code] };
          break;
        case 'ping':
          frame = { ping: toHex(f.data) };
          break;
        case 'pong':
          frame = { pong: toHex(f.data) };
          break;
      }
      return { send: frame };
    }
    case 'opened':
      return { opened: o.id };
    case 'data':
      return { data: [o.id, toHex(o.data)] };
    case 'fin':
      return { fin: o.id };
    case 'reset':
      return { reset: [o.id, o.code] };
    case 'stopped':
      return { stopped: [o.id, o.code] };
    case 'close':
      return { close: codeName(o.code) };
  }
}

function drain(conn: MuxConnection): unknown[] {
  const out: unknown[] = [];
  for (let o = conn.pollOutput(); o; o = conn.pollOutput()) out.push(describeOutput(o));
  return out;
}

const ACTIONS = ['at', 'recv', 'recv_text', 'peer_closed', 'open', 'write', 'finish', 'reset', 'stop', 'release_send', 'release_recv', 'close'];
const CHECKS = ['expect', 'error', 'rtt_ms', 'id'];
const CONFIG_KEYS = ['ping_interval_ms', 'idle_timeout_ms', 'max_peer_uni_streams', 'max_frame_data'];

function config(c: Case): MuxConfig {
  // A key this runner does not know would be ignored silently: refuse it instead.
  for (const k of Object.keys(c.config ?? {})) if (!CONFIG_KEYS.includes(k)) throw new Error(`${c.name}: unknown config ${k}`);
  const config: MuxConfig = { ...DEFAULT_MUX_CONFIG };
  if (c.config?.ping_interval_ms !== undefined) config.pingIntervalMs = c.config.ping_interval_ms;
  if (c.config?.idle_timeout_ms !== undefined) config.idleTimeoutMs = c.config.idle_timeout_ms;
  if (c.config?.max_peer_uni_streams !== undefined) config.maxPeerUniStreams = c.config.max_peer_uni_streams;
  if (c.config?.max_frame_data !== undefined) config.maxFrameData = c.config.max_frame_data;
  return config;
}

/** Runs one case; every mismatch throws with the case, step and what differed. */
function run(c: Case): void {
  if (c.side !== 'client' && c.side !== 'server') throw new Error(`${c.name}: side ${String(c.side)}`);
  let now = 0;
  const conn = new MuxConnection(c.side, config(c), now);
  const start = c.start ?? [{ send: { ping: '0000000000000000' } }];
  expect(drain(conn), `${c.name}: start`).toEqual(start);
  c.steps.forEach((step, i) => {
    const where = `${c.name}: step ${i} (${JSON.stringify(step)})`;
    const keys = Object.keys(step);
    expect(keys.filter((k) => ACTIONS.includes(k)), `${where}: one action`).toHaveLength(1);
    expect(keys.filter((k) => !ACTIONS.includes(k) && !CHECKS.includes(k)), `${where}: unknown keys`).toEqual([]);
    let error: string | undefined;
    const check = (r: MuxResult<unknown>) => {
      if (!r.ok) error = r.error.kind;
    };
    if (typeof step.at === 'number') {
      now = step.at;
      conn.handleTimeout(now);
    } else if (step.recv !== undefined) {
      conn.handleMessage(now, message(step.recv as TraceFrame));
    } else if (step.recv_text !== undefined) {
      conn.handleText();
    } else if (typeof step.peer_closed === 'string') {
      conn.handlePeerClosed(step.peer_closed);
    } else if (typeof step.open === 'string') {
      const r = conn.open(step.open === 'bidi');
      if (r.ok) expect(r.value, `${where}: id`).toBe(step.id);
      else error = r.error.kind;
    } else if (step.write !== undefined) {
      const [id, data] = step.write as [number, string];
      check(conn.write(id, hex(data)));
    } else if (typeof step.finish === 'number') {
      check(conn.finish(step.finish));
    } else if (step.reset !== undefined) {
      conn.reset(...idCode(step.reset));
    } else if (step.stop !== undefined) {
      conn.stop(...idCode(step.stop));
    } else if (typeof step.release_send === 'number') {
      conn.releaseSend(step.release_send);
    } else if (typeof step.release_recv === 'number') {
      conn.releaseRecv(step.release_recv);
    } else if (step.close !== undefined) {
      conn.close(code(step.close), 'trace');
    } else {
      throw new Error(`${where}: no action`);
    }
    expect(error, `${where}: command result`).toBe(step.error);
    expect(drain(conn), where).toEqual(step.expect ?? []);
    if (typeof step.rtt_ms === 'number') expect(conn.rtt(), `${where}: rtt`).toBe(step.rtt_ms);
  });
}

describe('mux behaviour traces (testdata/mux/traces.json)', () => {
  it('the trace file has its cases', () => {
    // A file that lost its cases would pass vacuously.
    expect(traces.cases.length, 'the trace file lost cases').toBeGreaterThanOrEqual(20);
    expect(new Set(traces.cases.map((c) => c.name)).size).toBe(traces.cases.length);
  });

  for (const c of traces.cases) {
    it(c.name, () => run(c));
  }
});

describe('MuxConnection', () => {
  it('a violation leaves the connection closed with the reason', () => {
    const conn = new MuxConnection('server', {}, 0);
    conn.handleText();
    expect(conn.isClosed).toBe(true);
    expect(conn.closeReason()).toContain('text message');
    expect(conn.pollTimeout()).toBeNull();
  });

  it('keeps the reason it closed with', () => {
    const conn = new MuxConnection('client', {}, 0);
    conn.handlePeerClosed('closed by peer');
    conn.handleText();
    expect(conn.closeReason()).toBe('closed by peer');
    expect(drain(conn)).toEqual([{ send: { ping: '0000000000000000' } }]);
  });

  it('pollTimeout is the next PING, or the idle deadline when that comes first', () => {
    const conn = new MuxConnection('client', {}, 100);
    expect(conn.pollTimeout()).toBe(1100);
    const quiet = new MuxConnection('client', { pingIntervalMs: 60_000, idleTimeoutMs: 5000 }, 100);
    expect(quiet.pollTimeout()).toBe(5100);
    quiet.handleMessage(2000, encodeMux({ type: 'ping', data: new Uint8Array(8) }));
    expect(quiet.pollTimeout()).toBe(7000);
  });

  it('PINGs carry microseconds since the start, fractions of a ms included, and PONGs of them give the RTT', () => {
    const conn = new MuxConnection('client', {}, 500.25);
    drain(conn);
    conn.handleTimeout(1500.5);
    const o = conn.pollOutput();
    expect(o?.type).toBe('transmit');
    const r = o?.type === 'transmit' ? decodeMux(o.bytes) : null;
    expect(r?.ok && r.frame.type === 'ping' && toHex(r.frame.data)).toBe('00000000000f433a'); // 1000.25 ms
    if (r?.ok && r.frame.type === 'ping') conn.handleMessage(1512.75, encodeMux({ type: 'pong', data: r.frame.data }));
    expect(conn.rtt()).toBeCloseTo(12.25, 9);
    conn.handleMessage(1600, encodeMux({ type: 'pong', data: hex('ffffffffffffffff') })); // from the future
    expect(conn.rtt()).toBeCloseTo(12.25, 9);
  });

  it('PING payloads past 2^32 µs use the high word', () => {
    const conn = new MuxConnection('server', { idleTimeoutMs: 1e9 }, 0);
    drain(conn);
    conn.handleTimeout(2 ** 33 / 1000 + 1); // 8 589 935.592 ms
    expect(drain(conn)).toEqual([{ send: { ping: '00000002000003e8' } }]);
    conn.handleMessage(2 ** 33 / 1000 + 31, encodeMux({ type: 'pong', data: hex('00000002000003e8') }));
    expect(conn.rtt()).toBeCloseTo(30, 6);
  });

  it('writes of nothing send nothing; writes of more than a frame are cut at 64 KiB', () => {
    const conn = new MuxConnection('client', {}, 0);
    drain(conn);
    const id = conn.open(false);
    expect(id).toEqual({ ok: true, value: 2 });
    expect(conn.write(2, new Uint8Array(0))).toEqual({ ok: true, value: undefined });
    expect(conn.pollOutput()).toBeNull();
    conn.write(2, new Uint8Array(64 * 1024 + 1));
    const sizes: number[] = [];
    for (let o = conn.pollOutput(); o; o = conn.pollOutput()) {
      const r = o.type === 'transmit' ? decodeMux(o.bytes) : null;
      if (r?.ok && r.frame.type === 'stream') sizes.push(r.frame.data.length);
    }
    expect(sizes).toEqual([64 * 1024, 1]);
  });

  it('has the defaults of the Rust MuxConfig', () => {
    expect(DEFAULT_MUX_CONFIG).toEqual({ pingIntervalMs: 1000, idleTimeoutMs: 30_000, maxPeerUniStreams: 16, maxFrameData: 65536 });
  });
});
