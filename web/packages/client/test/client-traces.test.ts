// The shared behaviour traces of the client session (testdata/session/client-traces.json), run
// against the TypeScript ClientSession with the semantics of the Rust runner
// (crates/voq-proto/tests/client_traces.rs), so the two session cores cannot drift apart. The
// file's `about` says what a trace is.
//
// The TypeScript core keeps its playout buffer in the shell (the playout AudioWorklet); this
// runner stands in for the worklet with the same Playout, as the `about` says.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { concat, utf8, utf8Strict } from '../src/bytes.js';
import type { Codec } from '../src/events.js';
import { Playout } from '../src/playout.js';
import { ClientSession } from '../src/session.js';
import type { ClientOutput, SessionConfig, TurnStats, ResponseStats } from '../src/session.js';
import { EventDecoder, WireEncodeError, encodeEvent, encodeFrame, encodeHeader } from '../src/wire.js';
import type { StreamKind } from '../src/wire.js';
import { hex, toHex } from './helpers.js';

type Step = Record<string, unknown>;
interface Case {
  name: string;
  config?: Record<string, unknown>;
  start?: unknown[];
  steps: Step[];
}

const TRACES_PATH = fileURLToPath(new URL('../../../../testdata/session/client-traces.json', import.meta.url));
const traces = JSON.parse(readFileSync(TRACES_PATH, 'utf8')) as { about: string; cases: Case[] };

function only(v: object): [string, unknown] {
  const entries = Object.entries(v);
  if (entries.length !== 1) throw new Error(`one key expected: ${JSON.stringify(v)}`);
  return entries[0]!;
}

/** The bytes a BYTES value of the trace file stands for. */
function bytes(spec: unknown): Uint8Array {
  if (typeof spec === 'string') {
    if (!/^([0-9a-f]{2})*$/.test(spec)) throw new Error(`not hex: ${spec}`);
    return hex(spec);
  }
  if (Array.isArray(spec)) return concat(spec.map(bytes));
  if (typeof spec !== 'object' || spec === null) throw new Error(`not BYTES: ${JSON.stringify(spec)}`);
  const [kind, v] = only(spec);
  switch (kind) {
    case 'repeat': {
      const [b, n] = v as [unknown, number];
      const one = bytes(b);
      const out = new Uint8Array(one.length * n);
      for (let i = 0; i < n; i++) out.set(one, i * one.length);
      return out;
    }
    case 'utf8':
      return utf8.encode(v as string);
    case 'event':
      return encodeEvent(v as string);
    case 'header': {
      const [k, text] = v as [number, string];
      return encodeHeader(k as StreamKind, text);
    }
    case 'frame': {
      const [pts, payload] = v as [number, unknown];
      return encodeFrame(pts, bytes(payload));
    }
    default:
      throw new Error(`unknown BYTES ${kind}`);
  }
}

/** An expected output with every BYTES written out as hex, as {@link describeOutput} writes it. */
function normalize(o: unknown): unknown {
  const [kind, v] = only(o as object);
  const a = v as unknown[];
  switch (kind) {
    case 'open':
    case 'write':
      return { [kind]: [a[0], toHex(bytes(a[1]))] };
    case 'reply_frame':
      return { reply_frame: [a[0], a[1], a[2], toHex(bytes(a[3]))] };
    default:
      return o;
  }
}

/** The one event of a control write, parsed. */
function controlEvent(b: Uint8Array): unknown {
  const d = new EventDecoder();
  d.push(b);
  const e = d.poll();
  if (e?.type !== 'event' || d.pending() !== 0) throw new Error(`a control write is one whole event: ${toHex(b)}`);
  return JSON.parse(utf8Strict.decode(e.body));
}

/** The outputs that instruct the playout worklet, or notify about it: the stand-in's business. */
const WORKLET_OUTPUTS = new Set<ClientOutput['type']>(['playout_start', 'playout_finish', 'playout_flush', 'playback']);

/** An output as the trace file writes it (worklet outputs excluded). */
function describeOutput(o: ClientOutput): unknown {
  switch (o.type) {
    case 'control':
      return { control: controlEvent(o.bytes) };
    case 'open_stream':
      return { open: [o.stream, toHex(o.bytes)] };
    case 'stream_data':
      return { write: [o.stream, toHex(o.bytes)] };
    case 'finish_stream':
      return { finish: o.stream };
    case 'reset_stream':
      return { reset: [o.stream, o.code] };
    case 'stop_sending':
      return { stop_sending: [o.stream, o.code] };
    case 'reply_frame':
      return { reply_frame: [o.responseId, o.codec, o.pts, toHex(o.payload)] };
    case 'turn_stopped':
      return { turn_stopped: [o.itemId, o.code] };
    case 'event':
      return { event: o.event.type };
    case 'problem':
      return { problem: o.code };
    default:
      throw new Error(`not a trace output: ${o.type}`);
  }
}

const pcm16 = (b: Uint8Array): number[] => {
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  return Array.from({ length: b.length >> 1 }, (_, i) => v.getInt16(2 * i, true));
};

/** The playout AudioWorklet, as far as the session sees it: one playout, the latest started. */
class Worklet {
  cur: { id: string; p: Playout } | null = null;
  /** Something changed since the last snapshot. */
  dirty = false;

  apply(o: ClientOutput): void {
    const p = this.cur && 'responseId' in o && this.cur.id === o.responseId ? this.cur.p : null;
    switch (o.type) {
      case 'playout_start':
        this.cur = { id: o.responseId, p: new Playout(24000, o.startThresholdMs) };
        break;
      case 'reply_frame':
        if (o.codec !== 'pcm16') throw new Error('the traces carry pcm16');
        if (p) {
          p.push(o.pts, pcm16(o.payload));
          this.dirty = true;
        }
        break;
      case 'playout_finish':
        p?.finish();
        break;
      case 'playout_flush':
        p?.flush();
        break;
      default:
        break;
    }
  }

  render(n: number): number {
    if (!this.cur) return 0;
    this.dirty = true;
    return this.cur.p.render(new Float32Array(n)).audio;
  }
}

/** A turn record as the trace file writes it. */
function turnRecord(t: TurnStats): unknown {
  return {
    item_id: t.itemId,
    frames_sent: t.framesSent,
    bytes_sent: t.bytesSent,
    audio_ms_sent: t.audioMsSent,
    frames_confirmed: t.framesConfirmed ?? null,
    audio_ms_confirmed: t.audioMsConfirmed ?? null,
    bytes_confirmed: t.bytesConfirmed ?? null,
    ended_at: t.endedAt ?? null,
    confirmed_at: t.confirmedAt ?? null,
    stopped: t.stoppedCode ?? null,
    frames_dropped: t.framesDropped,
  };
}

/** A response record as the trace file writes it (without the TypeScript-only `bufferedMs`). */
function responseRecord(r: ResponseStats): unknown {
  const i = r.interrupt;
  return {
    response_id: r.responseId,
    item_id: r.itemId,
    bytes_received: r.bytesReceived,
    frames_received: r.framesReceived,
    first_frame_at: r.firstFrameAt ?? null,
    first_audio_at: r.firstAudioAt ?? null,
    played_ms: r.playedMs,
    underruns: r.underruns,
    stall_ms: r.stallMs,
    status: r.status ?? null,
    interrupt: i
      ? {
          at: i.at,
          played_ms: i.playedMs,
          unplayed_bytes: i.unplayedBytes,
          truncated_audio_end_ms: i.truncatedAudioEndMs ?? null,
          truncated_at: i.truncatedAt ?? null,
          reset_at: i.resetAt ?? null,
        }
      : null,
  };
}

const CONFIG_KEYS = ['input_codec', 'output_codec', 'start_threshold_ms', 'send_ahead_ms', 'server_vad'];
const ACTIONS = ['at', 'start_turn', 'send_audio', 'end_turn', 'commit', 'recv_event', 'recv_control', 'recv_data', 'recv_fin', 'recv_reset', 'recv_stop_sending', 'render', 'interrupt'];
const CHECKS = ['expect', 'error', 'rendered', 'timeout', 'session', 'playback_done', 'turns', 'responses'];

function config(c: Case): Partial<SessionConfig> {
  const k = c.config ?? {};
  // A key this runner does not know would be ignored silently: refuse it instead.
  for (const key of Object.keys(k)) if (!CONFIG_KEYS.includes(key)) throw new Error(`${c.name}: unknown config ${key}`);
  const cfg: Partial<SessionConfig> = { pingIntervalMs: null };
  if (k.input_codec !== undefined) cfg.inputCodec = k.input_codec as Codec;
  if (k.output_codec !== undefined) cfg.outputCodec = k.output_codec as Codec;
  if (k.start_threshold_ms !== undefined) cfg.startThresholdMs = k.start_threshold_ms as number;
  if (k.send_ahead_ms !== undefined) cfg.sendAheadMs = k.send_ahead_ms as number;
  if (k.server_vad !== undefined) cfg.serverVad = k.server_vad as boolean;
  return cfg;
}

const DEFAULT_START = [
  {
    control: {
      type: 'session.update',
      session: {
        type: 'realtime',
        audio: { input: { format: { type: 'audio/pcm', rate: 24000 }, turn_detection: null }, output: { format: { type: 'audio/pcm', rate: 24000 } } },
      },
    },
  },
];

/** Runs one case; every mismatch throws with the case, step and what differed. */
function run(c: Case): void {
  let now = 0;
  const s = new ClientSession(config(c));
  const worklet = new Worklet();
  const drain = (): unknown[] => {
    const out: unknown[] = [];
    for (;;) {
      const o = s.poll();
      if (!o) {
        // The worklet's snapshot of what changed; the session may answer it.
        if (!worklet.dirty || !worklet.cur) break;
        worklet.dirty = false;
        const { id, p } = worklet.cur;
        s.handlePlayout(now, { responseId: id, state: p.state, played: p.played, buffered: p.buffered, underruns: p.underruns, stalled: p.stalledSamples });
        continue;
      }
      worklet.apply(o);
      if (!WORKLET_OUTPUTS.has(o.type)) out.push(describeOutput(o));
    }
    return out;
  };
  expect(drain(), `${c.name}: start`).toEqual((c.start ?? DEFAULT_START).map(normalize));
  c.steps.forEach((step, i) => {
    const where = `${c.name}: step ${i} (${JSON.stringify(step).slice(0, 200)})`;
    const keys = Object.keys(step);
    expect(keys.filter((k) => ACTIONS.includes(k)), `${where}: one action`).toHaveLength(1);
    expect(keys.filter((k) => !ACTIONS.includes(k) && !CHECKS.includes(k)), `${where}: unknown keys`).toEqual([]);
    let error: string | undefined;
    let rendered: number | undefined;
    if (typeof step.at === 'number') {
      now = step.at;
      s.handleTimeout(now);
    } else if (typeof step.start_turn === 'string') {
      expect(s.startTurn(now), `${where}: item id`).toBe(step.start_turn);
    } else if (step.send_audio !== undefined) {
      const [payload, samples] = step.send_audio as [unknown, number];
      try {
        s.sendAudio(now, bytes(payload), samples);
      } catch (e) {
        if (!(e instanceof WireEncodeError)) throw e;
        error = e.error.kind;
      }
    } else if (step.end_turn === true) {
      s.endTurn(now);
    } else if (step.commit === true) {
      s.commit();
    } else if (step.recv_event !== undefined) {
      s.handleControl(now, encodeEvent(JSON.stringify(step.recv_event)));
    } else if (step.recv_control !== undefined) {
      s.handleControl(now, bytes(step.recv_control));
    } else if (step.recv_data !== undefined) {
      const [stream, b] = step.recv_data as [number, unknown];
      s.handleStreamData(now, stream, bytes(b));
    } else if (typeof step.recv_fin === 'number') {
      s.handleStreamFin(now, step.recv_fin);
    } else if (step.recv_reset !== undefined) {
      const [stream, code] = step.recv_reset as [number, number];
      s.handleStreamReset(now, stream, code);
    } else if (step.recv_stop_sending !== undefined) {
      const [stream, code] = step.recv_stop_sending as [number, number];
      s.handleStreamStopped(now, stream, code);
    } else if (typeof step.render === 'number') {
      rendered = worklet.render(step.render);
    } else if ('interrupt' in step) {
      // The shell silences the worklet first and passes the exact samples it played.
      const cur = s.currentResponse;
      const played = cur && worklet.cur?.id === cur.responseId ? worklet.cur.p.played : undefined;
      expect(s.interrupt(now, played), `${where}: played ms`).toBe(step.interrupt);
    } else {
      throw new Error(`${where}: no action`);
    }
    expect(error, `${where}: command result`).toBe(step.error);
    expect(drain(), where).toEqual(((step.expect as unknown[] | undefined) ?? []).map(normalize));
    if ('rendered' in step) expect(rendered, `${where}: rendered`).toBe(step.rendered);
    if ('timeout' in step) expect(s.pollTimeout(), `${where}: timeout`).toBe(step.timeout);
    if ('session' in step) expect(s.session?.id ?? null, `${where}: session`).toBe(step.session);
    if ('playback_done' in step) expect(s.playbackDone, `${where}: playback_done`).toBe(step.playback_done);
    if ('turns' in step) expect(s.turns.map(turnRecord), `${where}: turns`).toEqual(step.turns);
    if ('responses' in step) expect(s.responses.map(responseRecord), `${where}: responses`).toEqual(step.responses);
  });
}

describe('client session behaviour traces (testdata/session/client-traces.json)', () => {
  it('the trace file has its cases', () => {
    // A file that lost its cases would pass vacuously.
    expect(traces.cases.length, 'the trace file lost cases').toBeGreaterThanOrEqual(20);
    expect(new Set(traces.cases.map((c) => c.name)).size).toBe(traces.cases.length);
  });

  for (const c of traces.cases) {
    it(c.name, () => run(c));
  }
});

describe('the trace runner', () => {
  it('writes BYTES out as the wire format does', () => {
    expect(toHex(bytes([{ repeat: ['ab', 3] }, { utf8: 'A' }]))).toBe('ababab41');
    expect(toHex(bytes({ event: '{}' }))).toBe('000000027b7d');
    expect(toHex(bytes({ header: [2, '{}'] }))).toBe('0200027b7d');
    expect(toHex(bytes({ frame: [0x01020304, ['aa', 'bb']] }))).toBe('000201020304aabb');
    expect(() => bytes('0g')).toThrow();
  });
});
