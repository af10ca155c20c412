import { describe, expect, it } from 'vitest';
import { ClientSession } from '../src/session.js';
import type { ClientOutput } from '../src/session.js';
import { AudioStreamDecoder, EventDecoder, StreamKind, encodeEvent, encodeFrame, encodeHeader } from '../src/wire.js';
import { Code } from '../src/errors.js';
import { concat } from '../src/bytes.js';
import { parseServerEvent } from '../src/events.js';
import { loadVectors, toHex } from './helpers.js';

function drain(s: ClientSession): ClientOutput[] {
  const out: ClientOutput[] = [];
  for (let o = s.poll(); o; o = s.poll()) out.push(o);
  return out;
}

function controlEvents(outs: ClientOutput[]): Array<Record<string, unknown>> {
  const d = new EventDecoder();
  const evs: Array<Record<string, unknown>> = [];
  for (const o of outs) if (o.type === 'control') d.push(o.bytes);
  for (let e = d.poll(); e; e = d.poll()) if (e.type === 'event') evs.push(JSON.parse(new TextDecoder().decode(e.body)));
  return evs;
}

const ev = (e: object) => encodeEvent(JSON.stringify(e));
const created = ev({
  type: 'session.created',
  session: {
    id: 'sess_1',
    type: 'realtime',
    audio: { input: { format: { type: 'audio/opus', rate: 24000 }, turn_detection: null }, output: { format: { type: 'audio/opus', rate: 24000 } } },
    voq: { version: 'voq/1', send_ahead_ms: 2000, played_report_interval_ms: 100, transport: 'ws' },
  },
});
const agentHeader = (codec = 'pcm16') => encodeHeader(StreamKind.AgentAudio, { item_id: 'item_s2', response_id: 'resp_1', codec, sample_rate: 24000, frame_ms: 20 });

describe('ClientSession', () => {
  it('opens with the session.update of the shared vectors', () => {
    const s = new ClientSession({ inputCodec: 'opus', outputCodec: 'opus' });
    const [first] = drain(s);
    const vec = loadVectors().events.find((e) => e.name === 'session.update push-to-talk opus')!;
    expect(first?.type === 'control' && toHex(first.bytes)).toBe(vec.hex);
    const vad = new ClientSession({ serverVad: true, sendAheadMs: 2500 });
    expect(controlEvents(drain(vad))[0]).toEqual({
      type: 'session.update',
      session: {
        type: 'realtime',
        audio: { input: { format: { type: 'audio/pcm', rate: 24000 }, turn_detection: { type: 'server_vad' } }, output: { format: { type: 'audio/pcm', rate: 24000 } } },
        voq: { send_ahead_ms: 2500 },
      },
    });
  });

  it('sends a push-to-talk turn as header, frames with pts in samples, FIN', () => {
    const s = new ClientSession();
    drain(s);
    expect(s.startTurn(0)).toBe('item_c1');
    s.sendAudio(1, new Uint8Array(960), 480);
    s.sendAudio(2, new Uint8Array(960), 480);
    s.endTurn(3);
    const outs = drain(s);
    expect(outs.map((o) => o.type)).toEqual(['open_stream', 'stream_data', 'stream_data', 'finish_stream']);
    const d = new AudioStreamDecoder();
    for (const o of outs) if (o.type === 'open_stream' || o.type === 'stream_data') d.push(o.bytes);
    const items = [d.poll(), d.poll(), d.poll()].map((r) => (r.ok ? r.item : null));
    expect(items[0]).toEqual({ type: 'header', kind: 1, header: { item_id: 'item_c1', codec: 'pcm16', sample_rate: 24000, frame_ms: 20 } });
    expect(items.slice(1).map((i) => i?.type === 'frame' && i.pts)).toEqual([0, 480]);
    expect(s.turns[0]).toMatchObject({ itemId: 'item_c1', framesSent: 2, bytesSent: 1920, audioMsSent: 40, endedAt: 3 });
    s.handleControl(5, ev({ type: 'input_audio_buffer.committed', item_id: 'item_c1', previous_item_id: null, voq: { frames: 2, audio_ms: 40, bytes: 1920 } }));
    expect(s.turns[0]).toMatchObject({ framesConfirmed: 2, audioMsConfirmed: 40, bytesConfirmed: 1920, confirmedAt: 5 });
    // The next turn is a new stream.
    s.sendAudio(6, new Uint8Array(2), 1);
    expect(drain(s).find((o) => o.type === 'open_stream')).toMatchObject({ stream: 2 });
  });

  it('stops writing a turn the server stopped: no frames, no FIN, the next turn on a new stream', () => {
    const s = new ClientSession();
    drain(s);
    s.startTurn(0);
    s.sendAudio(1, new Uint8Array(960), 480);
    expect(drain(s).map((o) => o.type)).toEqual(['open_stream', 'stream_data']);
    s.handleStreamStopped(2, 1, Code.GoingAway);
    expect(drain(s)).toEqual([{ type: 'turn_stopped', itemId: 'item_c1', code: Code.GoingAway }]);
    // The turn stays open (the user is still talking) but nothing more goes out on it.
    expect(s.turnOpen).toBe(true);
    s.sendAudio(3, new Uint8Array(960), 480);
    s.sendAudio(4, new Uint8Array(960), 480);
    expect(drain(s)).toEqual([]);
    s.endTurn(5);
    expect(drain(s)).toEqual([]);
    expect(s.turnOpen).toBe(false);
    expect(s.turns[0]).toEqual({ itemId: 'item_c1', framesSent: 1, bytesSent: 960, audioMsSent: 20, endedAt: 5, stoppedCode: Code.GoingAway, framesDropped: 2 });
    // The next turn opens a new stream and is sent in full.
    s.sendAudio(6, new Uint8Array(960), 480);
    s.endTurn(7);
    const outs = drain(s);
    expect(outs.map((o) => o.type)).toEqual(['open_stream', 'stream_data', 'finish_stream']);
    expect(outs.map((o) => ('stream' in o ? o.stream : null))).toEqual([2, 2, 2]);
    expect(s.turns[1]).toMatchObject({ itemId: 'item_c2', framesSent: 1, endedAt: 7 });
    expect(s.turns[1]!.stoppedCode).toBeUndefined();
    // startTurn over a stopped open turn closes it without a FIN too.
    s.startTurn(8);
    s.handleStreamStopped(9, 3, Code.StreamRefused);
    drain(s);
    expect(s.startTurn(10)).toBe('item_c4');
    expect(drain(s).map((o) => o.type)).toEqual(['open_stream']);
    expect(s.turns[2]).toMatchObject({ itemId: 'item_c3', stoppedCode: Code.StreamRefused, framesDropped: 0, endedAt: 10 });
    // clear() resets an open turn's stream, but not a stopped one (it is gone).
    s.handleStreamStopped(11, 4, Code.GoingAway);
    drain(s);
    s.clear();
    expect(drain(s).map((o) => o.type)).toEqual(['control']);
  });

  it('records a stop after the FIN until the turn is confirmed; ignores unknown streams and repeated stops', () => {
    const s = new ClientSession();
    drain(s);
    s.startTurn(0);
    s.sendAudio(1, new Uint8Array(960), 480);
    s.endTurn(2);
    s.startTurn(3);
    drain(s);
    s.handleStreamStopped(4, 1, Code.BadStreamHeader);
    expect(drain(s)).toEqual([{ type: 'turn_stopped', itemId: 'item_c1', code: Code.BadStreamHeader }]);
    expect(s.turns[0]).toMatchObject({ framesSent: 1, endedAt: 2, stoppedCode: Code.BadStreamHeader, framesDropped: 0 });
    // The open turn (stream 2) is not affected.
    s.sendAudio(5, new Uint8Array(960), 480);
    expect(drain(s)).toMatchObject([{ type: 'stream_data', stream: 2 }]);
    s.handleStreamStopped(6, 1, Code.GoingAway);
    s.handleStreamStopped(6, 99, Code.GoingAway);
    expect(drain(s)).toEqual([]);
    expect(s.turns[0]!.stoppedCode).toBe(Code.BadStreamHeader);
    expect(s.turns[1]!.stoppedCode).toBeUndefined();
    // Once the server has confirmed a turn, it does not stop its stream any more.
    s.endTurn(7);
    s.handleControl(8, ev({ type: 'input_audio_buffer.committed', item_id: 'item_c2', previous_item_id: null, voq: { frames: 1, audio_ms: 20, bytes: 960 } }));
    drain(s);
    s.handleStreamStopped(9, 2, Code.GoingAway);
    expect(drain(s)).toEqual([]);
    expect(s.turns[1]!.stoppedCode).toBeUndefined();
  });

  it('remembers the streams of the last 64 unconfirmed turns, no more', () => {
    const s = new ClientSession();
    drain(s);
    for (let i = 0; i < 65; i++) {
      s.startTurn(i);
      s.endTurn(i);
    }
    drain(s);
    s.handleStreamStopped(100, 1, Code.GoingAway); // the oldest, forgotten
    s.handleStreamStopped(100, 2, Code.GoingAway);
    expect(drain(s)).toEqual([{ type: 'turn_stopped', itemId: 'item_c2', code: Code.GoingAway }]);
  });

  it('pings once the session is created and smooths the RTT of the pongs', () => {
    const s = new ClientSession({ pingIntervalMs: 1000 });
    drain(s);
    expect(s.pollTimeout()).toBeNull();
    s.handleControl(100, created);
    expect(controlEvents(drain(s))).toEqual([{ type: 'voq.ping', id: 1 }]);
    expect(s.rttMs).toBeNull();
    s.handleControl(140, ev({ type: 'voq.pong', id: 1 }));
    expect(s.rttMs).toBe(40);
    expect(s.pollTimeout()).toBe(1100);
    s.handleTimeout(1100);
    expect(controlEvents(drain(s))).toEqual([{ type: 'voq.ping', id: 2 }]);
    s.handleControl(1180, ev({ type: 'voq.pong', id: 2 }));
    expect(s.rttMs).toBe((7 * 40 + 80) / 8);
    s.handleControl(1190, ev({ type: 'voq.pong', id: 99 }));
    expect(s.rttMs).toBe((7 * 40 + 80) / 8);
    const off = new ClientSession({ pingIntervalMs: null });
    drain(off);
    off.handleControl(100, created);
    expect(controlEvents(drain(off))).toEqual([]);
    expect(off.pollTimeout()).toBeNull();
  });

  it('plays a response, reporting at start, on the timer and at the end', () => {
    const s = new ClientSession({ pingIntervalMs: null });
    drain(s);
    s.handleControl(0, created);
    s.handleControl(1, ev({ type: 'response.created', response: { id: 'resp_1', status: 'in_progress', output: [{ id: 'item_s2', type: 'message', role: 'assistant', content: [] }] } }));
    let outs = drain(s);
    expect(outs.map((o) => o.type)).toEqual(['event', 'playout_start', 'event']);
    s.handleStreamData(2, 7, concat([agentHeader(), encodeFrame(0, new Uint8Array(960)), encodeFrame(480, new Uint8Array(960))]));
    outs = drain(s);
    expect(outs.map((o) => o.type)).toEqual(['reply_frame', 'reply_frame']);
    expect(outs.map((o) => o.type === 'reply_frame' && o.pts)).toEqual([0, 480]);
    expect(s.pollTimeout()).toBe(102);

    s.handlePlayout(10, { responseId: 'resp_1', state: 'playing', played: 128, buffered: 832, underruns: 0, stalled: 0 });
    outs = drain(s);
    expect(outs[0]).toMatchObject({ type: 'playback', change: 'started', responseId: 'resp_1' });
    expect(controlEvents(outs)).toEqual([{ type: 'output_audio_buffer.played', response_id: 'resp_1', played_ms: 5, buffered_ms: 34 }]);
    expect(s.pollTimeout()).toBe(110);
    s.handlePlayout(50, { responseId: 'resp_1', state: 'playing', played: 1200, buffered: 0, underruns: 0, stalled: 0 });
    expect(drain(s)).toEqual([]);
    s.handleTimeout(110);
    expect(controlEvents(drain(s))).toEqual([{ type: 'output_audio_buffer.played', response_id: 'resp_1', played_ms: 50, buffered_ms: 0 }]);
    s.handlePlayout(60, { responseId: 'resp_1', state: 'stalled', played: 1280, buffered: 0, underruns: 1, stalled: 48 });
    outs = drain(s);
    expect(outs[0]).toMatchObject({ type: 'playback', change: 'underrun' });
    expect(controlEvents(outs)).toHaveLength(1);

    s.handleStreamFin(70, 7);
    expect(drain(s)).toEqual([{ type: 'playout_finish', responseId: 'resp_1' }]);
    s.handlePlayout(80, { responseId: 'resp_1', state: 'finished', played: 2400, buffered: 0, underruns: 1, stalled: 48 });
    outs = drain(s);
    expect(outs[0]).toMatchObject({ type: 'playback', change: 'ended', reason: 'finished', playedMs: 100 });
    expect(controlEvents(outs)).toEqual([{ type: 'output_audio_buffer.played', response_id: 'resp_1', played_ms: 100, buffered_ms: 0 }]);
    expect(s.pollTimeout()).toBeNull();
    expect(s.playbackDone).toBe(true);
    expect(s.responses[0]).toMatchObject({ framesReceived: 2, bytesReceived: 2 * 966, underruns: 1, stallMs: 2 });
  });

  it('barges in: flush, truncate at the played position, STOP_SENDING cancelled — in that order', () => {
    const s = new ClientSession();
    drain(s);
    s.handleStreamData(0, 3, agentHeader());
    for (let i = 0; i < 100; i++) s.handleStreamData(1, 3, encodeFrame(i * 480, new Uint8Array(960)));
    s.handlePlayout(2, { responseId: 'resp_1', state: 'playing', played: 12000, buffered: 36000, underruns: 0, stalled: 0 });
    drain(s);
    // The worklet went silent at 15 360 samples (640 ms).
    expect(s.interrupt(3, 15360)).toBe(640);
    const outs = drain(s);
    expect(outs.map((o) => o.type)).toEqual(['playout_flush', 'playback', 'control', 'stop_sending']);
    expect(controlEvents(outs)).toEqual([{ type: 'conversation.item.truncate', item_id: 'item_s2', content_index: 0, audio_end_ms: 640 }]);
    expect(outs[3]).toEqual({ type: 'stop_sending', stream: 3, code: Code.Cancelled });
    const i = s.responses[0]!.interrupt!;
    // Frames at pts ≥ 15 360 (32 of 100) were received and never played.
    expect(i).toMatchObject({ playedMs: 640, unplayedBytes: (100 - 32) * 966 });
    // Late frames count as unplayed; they reach no decoder.
    s.handleStreamData(4, 3, encodeFrame(48000, new Uint8Array(960)));
    expect(drain(s)).toEqual([]);
    expect(s.responses[0]!.interrupt!.unplayedBytes).toBe(69 * 966);
    // The server's answer.
    s.handleStreamReset(5, 3, Code.Cancelled);
    s.handleControl(6, ev({ type: 'conversation.item.truncated', item_id: 'item_s2', content_index: 0, audio_end_ms: 640 }));
    expect(s.responses[0]!.interrupt).toMatchObject({ resetAt: 5, truncatedAudioEndMs: 640, truncatedAt: 6 });
    // Only once, and not after the end.
    expect(s.interrupt(7)).toBeNull();
  });

  it('flushes at once on a cancelled reset and plays out on a failed one', () => {
    const s = new ClientSession();
    drain(s);
    s.handleStreamData(0, 3, agentHeader());
    drain(s);
    s.handleStreamReset(1, 3, Code.Cancelled);
    expect(drain(s).map((o) => o.type)).toEqual(['playout_flush', 'playback']);
    const t = new ClientSession();
    drain(t);
    t.handleStreamData(0, 3, agentHeader());
    drain(t);
    t.handleStreamReset(1, 3, Code.AgentFailed);
    expect(drain(t).map((o) => o.type)).toEqual(['playout_finish']);
  });

  it('stops a malformed agent stream with its code', () => {
    const s = new ClientSession();
    drain(s);
    s.handleStreamData(0, 3, concat([agentHeader(), new Uint8Array([0xff, 0xff, 0, 0, 0, 0])]));
    const outs = drain(s);
    expect(outs.find((o) => o.type === 'stop_sending')).toEqual({ type: 'stop_sending', stream: 3, code: Code.FrameTooLarge });
    const u = new ClientSession();
    drain(u);
    u.handleStreamData(0, 3, encodeHeader(StreamKind.AgentAudio, { item_id: 'x', codec: 'flac', sample_rate: 24000, frame_ms: 20, response_id: 'r' }));
    expect(drain(u).find((o) => o.type === 'stop_sending')).toEqual({ type: 'stop_sending', stream: 3, code: Code.BadStreamHeader });
  });

  it('a new response supersedes the one still playing', () => {
    const s = new ClientSession();
    drain(s);
    s.handleControl(0, ev({ type: 'response.created', response: { id: 'r1', status: 'in_progress', output: [{ id: 'i1', type: 'message', role: 'assistant', content: [] }] } }));
    s.handleControl(0, ev({ type: 'response.created', response: { id: 'r2', status: 'in_progress', output: [{ id: 'i2', type: 'message', role: 'assistant', content: [] }] } }));
    const outs = drain(s).filter((o) => o.type !== 'event');
    expect(outs).toEqual([
      { type: 'playout_start', responseId: 'r1', codec: 'pcm16', startThresholdMs: 100 },
      { type: 'playout_flush', responseId: 'r1' },
      { type: 'playback', change: 'ended', responseId: 'r1', playedMs: 0, reason: 'superseded' },
      { type: 'playout_start', responseId: 'r2', codec: 'pcm16', startThresholdMs: 100 },
    ]);
  });

  it('skips oversized and unknown server events and goes on', () => {
    const s = new ClientSession();
    drain(s);
    const big = new Uint8Array(4);
    new DataView(big.buffer).setUint32(0, 70000);
    s.handleControl(0, concat([big, new Uint8Array(70000), ev({ type: 'future.thing' }), ev({ type: 'input_audio_buffer.cleared' })]));
    const outs = drain(s);
    expect(outs.map((o) => (o.type === 'problem' ? o.code : o.type))).toEqual(['event_too_large', 'unknown_event_type', 'event']);
  });

  it('forgets the oldest of more than 64 refused streams: more bytes on it are parsed afresh', () => {
    const s = new ClientSession();
    drain(s);
    for (let id = 1; id <= 65; id++) s.handleStreamData(0, id, new Uint8Array([0x07, 0, 0]));
    expect(drain(s).filter((o) => o.type === 'stop_sending')).toHaveLength(65);
    s.handleStreamData(1, 2, new Uint8Array([0x07, 0, 0])); // still refused: dropped
    expect(drain(s)).toEqual([]);
    s.handleStreamData(1, 1, new Uint8Array([0x07, 0, 0])); // forgotten: refused again
    expect(drain(s).map((o) => o.type)).toEqual(['problem', 'stop_sending']);
  });

  it('parses optional fields as Rust does: absent or null, else of their type', () => {
    const committed = { type: 'input_audio_buffer.committed', item_id: 'i', voq: { frames: 1, audio_ms: 20, bytes: 2 } };
    const codes = (evs: object[]) =>
      evs.map((e) => {
        const r = parseServerEvent(JSON.stringify(e));
        return r.ok ? 'ok' : r.error.code;
      });
    expect(
      codes([
        committed,
        { ...committed, previous_item_id: null },
        { ...committed, previous_item_id: 'p' },
        { ...committed, previous_item_id: 5 },
        { type: 'response.done', response: { id: 'r', status: 'completed', output: [{ id: 'i', type: 'message', role: 'assistant', content: [] }], voq: null } },
        { type: 'response.done', response: { id: 'r', status: 'completed', output: [{ id: 'i', type: 'message', role: 'assistant', content: [] }], voq: { audio_ms_generated: 1 } } },
        { type: 'response.done', response: { id: 'r', status: 'paused', output: [{ id: 'i', type: 'message', role: 'assistant', content: [] }] } },
        { type: 'error', error: { type: 'server_error', code: 'x', message: 'm', event_id: null } },
        { type: 'error', error: { type: 'server_error', code: 'x', message: 'm', event_id: 3 } },
        { type: 'conversation.item.truncated', item_id: 'i', content_index: 2 ** 32, audio_end_ms: 0 },
        { type: 'response.done', response: { id: 'r', status: 'completed', output: [] } },
        { type: 'input_audio_buffer.committed', item_id: 'i', frames: 1, audio_ms: 20, bytes: 2 },
      ]),
    ).toEqual(['ok', 'ok', 'ok', 'invalid_event', 'ok', 'invalid_event', 'invalid_event', 'ok', 'invalid_event', 'invalid_event', 'invalid_event', 'invalid_event']);
  });

  it('server VAD: committed items the server cut become turns; commit and clear are events', () => {
    const s = new ClientSession({ serverVad: true });
    drain(s);
    s.startTurn(0);
    s.sendAudio(0, new Uint8Array(10), 5);
    s.handleControl(1, ev({ type: 'input_audio_buffer.committed', item_id: 'item_s1', voq: { frames: 50, audio_ms: 1000, bytes: 48000 } }));
    expect(s.turns.map((t) => t.itemId)).toEqual(['item_c1', 'item_s1']);
    s.commit();
    s.clear();
    const outs = drain(s);
    expect(outs.find((o) => o.type === 'reset_stream')).toEqual({ type: 'reset_stream', stream: 1, code: Code.Cancelled });
    expect(controlEvents(outs).map((e) => e.type)).toEqual(['input_audio_buffer.commit', 'input_audio_buffer.clear']);
  });
});
