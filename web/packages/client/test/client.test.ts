import { describe, expect, it } from 'vitest';
import { VoqClient, microphoneConstraints } from '../src/client.js';
import type { ConnectOptions, Connected } from '../src/connect.js';
import { pcm16Codecs } from '../src/audio/codecs.js';
import { AudioStreamDecoder, EventDecoder, StreamKind, encodeEvent, encodeFrame, encodeHeader } from '../src/wire.js';
import type { AudioItem } from '../src/wire.js';
import { Code } from '../src/errors.js';
import { concat } from '../src/bytes.js';
import { FakeAudio, FakeTransport, deferred } from './fakes.js';

const tick = () => new Promise((r) => setTimeout(r, 0));

/** Waits until the client has dialed `n` times (its reconnect backoff passed); fails after 5 s. */
async function dialed(dials: readonly unknown[], n: number): Promise<void> {
  for (const deadline = Date.now() + 5000; dials.length < n; ) {
    if (Date.now() > deadline) throw new Error(`${dials.length} dials of ${n} within 5 s`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/**
 * A resumable session (token `tok1`) whose 4-frame push-to-talk turn was not confirmed when the
 * connection dropped; resolves once the client has dialed again, with that second connection.
 */
async function aKeptTurnReconnecting() {
  const { c, audio, dials, accept } = client();
  const started = c.start();
  const t1 = accept(0);
  await started;
  t1.control!.recv.onData!(encodeEvent(JSON.stringify({ type: 'session.created', session: sessionObject({ resume_token: 'tok1' }) })));
  c.startTurn();
  for (let i = 0; i < 4; i++) audio.frame(i);
  await c.endTurn();
  t1.drop();
  await dialed(dials, 2);
  const t2 = accept(1);
  await tick();
  return { c, dials, accept, t2 };
}

function parseStream(bytes: Uint8Array): AudioItem[] {
  const d = new AudioStreamDecoder();
  d.push(bytes);
  const out: AudioItem[] = [];
  for (let r = d.poll(); r.ok && r.item; r = d.poll()) out.push(r.item);
  return out;
}

function events(bytes: Uint8Array): Array<Record<string, unknown>> {
  const d = new EventDecoder();
  d.push(bytes);
  const out: Array<Record<string, unknown>> = [];
  for (let e = d.poll(); e; e = d.poll()) if (e.type === 'event') out.push(JSON.parse(new TextDecoder().decode(e.body)));
  return out;
}

/** A `session.created`/`voq.session.resumed` session object, with `voq` fields added. */
function sessionObject(voq: object) {
  const pcm = { type: 'audio/pcm', rate: 24000 };
  return {
    type: 'realtime',
    id: 'sess_a1',
    audio: { input: { format: pcm, turn_detection: null }, output: { format: pcm } },
    voq: { version: 'voq/1', send_ahead_ms: 2000, played_report_interval_ms: 100, transport: 'quic', ...voq },
  };
}

function client(opts: { mode?: 'push_to_talk' | 'server_vad'; keepCapturedAudio?: boolean; reconnect?: boolean; maxReconnectAttempts?: number } = {}) {
  const audio = new FakeAudio();
  const dials: Array<ReturnType<typeof deferred<Connected>>> = [];
  const c = new VoqClient({
    codec: 'pcm16',
    audio,
    codecs: pcm16Codecs,
    ...opts,
    connect: () => {
      const d = deferred<Connected>();
      dials.push(d);
      return d.promise;
    },
  });
  const accept = (i: number, t = new FakeTransport()) => {
    dials[i]!.resolve({ transport: t, config: {}, winner: t.name, attempts: [], connectMs: 5 });
    return t;
  };
  return { c, audio, dials, accept };
}

describe('VoqClient options for integrators', () => {
  it('passes a given server config to connect (no /voq/config.json fetch) and only the microphone settings given', async () => {
    const seen: ConnectOptions[] = [];
    const serverConfig = {
      webtransport: { url: 'https://anycast.example:443/voq', certificate_hashes: [{ algorithm: 'sha-256', value: 'ab' }] },
      websocket: { path: '/voq', tls: true },
    };
    const c = new VoqClient({
      codec: 'pcm16',
      audio: new FakeAudio(),
      codecs: pcm16Codecs,
      serverConfig,
      connect: (o) => {
        seen.push(o);
        return new Promise<Connected>(() => {});
      },
    });
    void c.start();
    await tick();
    expect(seen[0]?.config).toEqual(serverConfig);
    expect(microphoneConstraints({ echoCancellation: false })).toEqual({ echoCancellation: false });
    expect(microphoneConstraints({ noiseSuppression: true, autoGainControl: false })).toEqual({ noiseSuppression: true, autoGainControl: false });
    expect(microphoneConstraints({})).toEqual({});
  });
});

describe('VoqClient', () => {
  it('buffers audio captured before the connection is up and sends all of it, in order', async () => {
    const { c, audio, accept } = client();
    const started = c.start();
    await tick();
    expect(audio.captureStarted).toBe(true);
    c.startTurn();
    for (let i = 0; i < 25; i++) audio.frame(i); // 500 ms spoken while connecting
    const t = accept(0);
    await started;
    for (let i = 25; i < 30; i++) audio.frame(i);
    await c.endTurn();
    expect(t.uni).toHaveLength(1);
    const items = parseStream(t.uni[0]!.bytes());
    expect(items[0]).toMatchObject({ type: 'header', kind: StreamKind.UserAudio, header: { item_id: 'item_c1', codec: 'pcm16' } });
    const frames = items.slice(1) as Array<AudioItem & { type: 'frame' }>;
    expect(frames.map((f) => f.pts)).toEqual(Array.from({ length: 30 }, (_, i) => i * 480));
    // Every frame bit-exact: frame i is 480 samples of value i.
    frames.forEach((f, i) => {
      const v = new DataView(f.payload.buffer, f.payload.byteOffset);
      expect(f.payload.length).toBe(960);
      expect(v.getInt16(0, true)).toBe(i);
      expect(v.getInt16(958, true)).toBe(i);
    });
    expect(t.uni[0]!.finished).toBe(true);
    expect(events(t.control!.send.bytes())[0]).toMatchObject({ type: 'session.update', session: { type: 'realtime', audio: { input: { format: { type: 'audio/pcm' } } } } });
    expect(c.stats()).toMatchObject({ turnsSent: 1, framesSent: 30, bytesSent: 30 * 960, capturedMs: 600, transport: 'websocket', rttMs: 12 });
  });

  it('ends a turn by itself after durationMs of captured audio', async () => {
    const { c, audio, accept } = client();
    const started = c.start();
    const t = accept(0);
    await started;
    const ended = c.once('input.turn_ended');
    c.startTurn({ durationMs: 50 }); // 2.5 frames
    for (let i = 0; i < 5; i++) audio.frame(1);
    const e = await ended;
    expect(e).toMatchObject({ item_id: 'item_c1', frames: 3, audio_ms: 50 });
    const frames = parseStream(t.uni[0]!.bytes()).slice(1);
    expect(frames.map((f) => (f.type === 'frame' ? f.payload.length : 0))).toEqual([960, 960, 480]);
    expect(t.uni[0]!.finished).toBe(true);
  });

  it('keepCapturedAudio: a copy of each turn as captured, equal to the pcm16 payloads it sent', async () => {
    const { c, audio, accept } = client({ keepCapturedAudio: true });
    const started = c.start();
    c.startTurn({ durationMs: 50 }); // 2.5 frames: the copy ends where the turn does
    for (let i = 1; i <= 2; i++) audio.frame(i); // captured while connecting
    const t = accept(0);
    await started;
    for (let i = 3; i <= 5; i++) audio.frame(i);
    const copy = c.capturedAudio('item_c1');
    expect(copy).toHaveLength(1200);
    expect([copy![0], copy![479], copy![480], copy![960], copy![1199]]).toEqual([1, 1, 2, 3, 3]);
    const payloads = parseStream(t.uni[0]!.bytes()).flatMap((f) => (f.type === 'frame' ? [f.payload] : []));
    const sent = concat(payloads);
    expect(new Int16Array(sent.buffer, sent.byteOffset, sent.length / 2)).toEqual(copy);
    expect(c.capturedAudio('item_c9')).toBeNull();
    const plain = client();
    const p = plain.c.start();
    plain.c.startTurn();
    plain.audio.frame(1);
    plain.accept(0);
    await p;
    expect(plain.c.capturedAudio('item_c1')).toBeNull();
    await Promise.all([c.close(), plain.c.close()]);
  });

  it('plays a reply and barges in: silence first, then truncate at the played ms, then STOP_SENDING', async () => {
    const { c, audio, accept } = client();
    const started = c.start();
    const t = accept(0);
    await started;
    const log: string[] = [];
    c.on('*', (e) => log.push(e.type));
    const ev = (e: object) => t.control!.recv.onData!(encodeEvent(JSON.stringify(e)));
    ev({ type: 'response.created', response: { id: 'resp_1', status: 'in_progress', output: [{ id: 'item_s2', type: 'message', role: 'assistant', content: [] }] } });
    const s = t.incoming();
    s.onData!(encodeHeader(StreamKind.AgentAudio, { item_id: 'item_s2', response_id: 'resp_1', codec: 'pcm16', sample_rate: 24000, frame_ms: 20 }));
    s.onData!(concat([encodeFrame(0, new Uint8Array(960)), encodeFrame(480, new Uint8Array(960))]));
    expect(audio.player.log).toEqual(['start resp_1 100']);
    expect(audio.player.pushed.map((p) => [p.id, p.pts, p.samples.length])).toEqual([
      ['resp_1', 0, 480],
      ['resp_1', 480, 480],
    ]);
    audio.player.onSnapshot!({ responseId: 'resp_1', state: 'playing', played: 256, buffered: 704, underruns: 0, stalled: 0 });
    expect(log).toContain('playback.started');
    audio.player.played = 7200; // 300 ms heard when the worklet went silent
    t.control!.send.chunks = [];
    const ms = await c.interrupt();
    expect(ms).toBe(300);
    expect(audio.player.log.slice(1, 2)).toEqual(['flush resp_1']);
    expect(events(t.control!.send.bytes())).toEqual([{ type: 'conversation.item.truncate', item_id: 'item_s2', content_index: 0, audio_end_ms: 300 }]);
    expect(s.stopped).toBe(Code.Cancelled);
    expect(log).toContain('interrupted');
    expect(log).toContain('playback.ended');
  });

  it.each([
    { why: 'the echo loopback delays the ear behind the worklet', device: null, heard: 240 },
    { why: 'the output device delays it too', device: 40, heard: 200 },
  ])('truncates at what the user heard: $why', async ({ device, heard }) => {
    const { c, audio, accept } = client();
    audio.loopback = { state: 'active', latencyMs: 60 };
    audio.outputLatency = device;
    const started = c.start();
    const t = accept(0);
    await started;
    const ev = (e: object) => t.control!.recv.onData!(encodeEvent(JSON.stringify(e)));
    ev({ type: 'response.created', response: { id: 'resp_1', status: 'in_progress', output: [{ id: 'item_s2', type: 'message', role: 'assistant', content: [] }] } });
    const s = t.incoming();
    s.onData!(encodeHeader(StreamKind.AgentAudio, { item_id: 'item_s2', response_id: 'resp_1', codec: 'pcm16', sample_rate: 24000, frame_ms: 20 }));
    s.onData!(encodeFrame(0, new Uint8Array(960)));
    audio.player.played = 7200; // the worklet rendered 300 ms; the ear is 60 ms (+ the device's) behind
    t.control!.send.chunks = [];
    expect(await c.interrupt()).toBe(heard);
    expect(events(t.control!.send.bytes())).toEqual([{ type: 'conversation.item.truncate', item_id: 'item_s2', content_index: 0, audio_end_ms: heard }]);
  });

  it('sends an unconfirmed turn again, whole, after the connection drops', async () => {
    const { c, audio, dials, accept } = client();
    const started = c.start();
    const t1 = accept(0);
    await started;
    c.startTurn();
    for (let i = 0; i < 10; i++) audio.frame(i);
    await c.endTurn();
    t1.drop();
    await tick();
    expect(c.state).toBe('reconnecting');
    // Spoken while reconnecting: queued.
    c.startTurn();
    for (let i = 100; i < 105; i++) audio.frame(i);
    await new Promise((r) => setTimeout(r, 300)); // the first backoff
    expect(dials).toHaveLength(2);
    const t2 = accept(1);
    await tick();
    await c.endTurn();
    expect(c.state).toBe('connected');
    expect(t2.uni).toHaveLength(2);
    const replay = parseStream(t2.uni[0]!.bytes());
    expect(replay).toHaveLength(11);
    expect(t2.uni[0]!.finished).toBe(true);
    const second = parseStream(t2.uni[1]!.bytes());
    expect(second).toHaveLength(6);
    expect(events(t2.control!.send.bytes())[0]!.type).toBe('session.update');
    // Once confirmed, a turn is not sent again.
    t2.control!.recv.onData!(encodeEvent(JSON.stringify({ type: 'input_audio_buffer.committed', item_id: 'item_c1', voq: { frames: 10, audio_ms: 200, bytes: 9600 } })));
    t2.control!.recv.onData!(encodeEvent(JSON.stringify({ type: 'input_audio_buffer.committed', item_id: 'item_c2', voq: { frames: 5, audio_ms: 100, bytes: 4800 } })));
    t2.drop();
    await new Promise((r) => setTimeout(r, 300));
    const t3 = accept(2);
    await tick();
    expect(t3.uni).toHaveLength(0);
    expect(c.stats().reconnects).toBe(2);
    await c.close();
  });

  it('takes a resumable session back: only the rest of a turn goes again, under its item id', async () => {
    const { c, audio, dials, accept } = client();
    const started = c.start();
    const t1 = accept(0);
    await started;
    const session = (token: string) => sessionObject({ resume_token: token });
    t1.control!.recv.onData!(encodeEvent(JSON.stringify({ type: 'session.created', session: session('tok1') })));
    c.startTurn();
    for (let i = 0; i < 10; i++) audio.frame(i);
    t1.drop();
    await tick();
    expect(c.state).toBe('reconnecting');
    // Spoken while reconnecting: kept with the turn.
    for (let i = 10; i < 15; i++) audio.frame(i);
    await dialed(dials, 2);
    const t2 = accept(1);
    await tick();
    const first = events(t2.control!.send.bytes())[0] as { type: string; session: { voq?: unknown } };
    expect(first.type).toBe('session.update');
    expect(first.session.voq).toEqual({ resume: { token: 'tok1' } });
    expect(t2.uni).toHaveLength(0); // nothing until the server says what it holds
    // The server holds the first 6 frames of item_c1.
    const resumed = { type: 'voq.session.resumed', session: session('tok2'), voq: { turns: [{ item_id: 'item_c1', held_pts: 6 * 480 }] } };
    t2.control!.recv.onData!(encodeEvent(JSON.stringify(resumed)));
    await tick();
    for (let i = 15; i < 17; i++) audio.frame(i);
    const ended: unknown[] = [];
    c.on('input.turn_ended', (e) => ended.push(e));
    await c.endTurn();
    // The turn's whole account: what the server held and the rest.
    expect(ended).toEqual([{ type: 'input.turn_ended', item_id: 'item_c1', frames: 17, audio_ms: 340, bytes: 17 * 960 }]);
    expect(t2.uni).toHaveLength(1);
    const items = parseStream(t2.uni[0]!.bytes());
    expect(items[0]).toMatchObject({ type: 'header', header: { item_id: 'item_c1' } });
    const pts = items.slice(1).map((i) => (i.type === 'frame' ? i.pts : -1));
    expect(pts).toEqual(Array.from({ length: 11 }, (_, k) => (6 + k) * 480));
    expect(t2.uni[0]!.finished).toBe(true);
    // The next turn is numbered on from the session's: the server refuses an id it has seen.
    c.startTurn();
    audio.frame(99);
    await c.endTurn();
    const next = parseStream(t2.uni[1]!.bytes())[0];
    expect(next?.type === 'header' ? next.header.item_id : null).toMatch(/^item_c[2-9]$/);
    await c.close();
  });

  it('starts a new session with the kept turns whole when the server refuses the resume', async () => {
    const { c, dials, accept, t2 } = await aKeptTurnReconnecting();
    t2.control!.recv.onData!(encodeEvent(JSON.stringify({ type: 'error', error: { type: 'invalid_request_error', code: 'unauthorized', message: 'session sess_a1 cannot be resumed' } })));
    t2.drop();
    await dialed(dials, 3);
    const t3 = accept(2);
    await tick();
    const first = events(t3.control!.send.bytes())[0] as { session: { voq?: unknown } };
    expect(first.session.voq).toBeUndefined();
    expect(t3.uni).toHaveLength(1);
    expect(parseStream(t3.uni[0]!.bytes())).toHaveLength(5);
    await c.close();
  });

  it('sends the kept turns whole when the new server starts a new session instead of resuming', async () => {
    const { c, t2 } = await aKeptTurnReconnecting();
    expect(t2.uni).toHaveLength(0);
    // A server without a session store: a new session, no resume token.
    t2.control!.recv.onData!(encodeEvent(JSON.stringify({ type: 'session.created', session: sessionObject({}) })));
    await tick();
    expect(t2.uni).toHaveLength(1);
    expect(parseStream(t2.uni[0]!.bytes())).toHaveLength(5);
    expect(t2.uni[0]!.finished).toBe(true);
    await c.close();
  });

  it('does not send a turn the server stopped again after a reconnect, nor count what it dropped', async () => {
    const { c, audio, dials, accept } = client();
    const started = c.start();
    const t1 = accept(0);
    await started;
    // Turn 1: ended, then refused before the server confirmed it.
    c.startTurn();
    for (let i = 0; i < 3; i++) audio.frame(i);
    await c.endTurn();
    t1.uni[0]!.onStop!(Code.StreamRefused);
    // Turn 2: ended and not confirmed: kept.
    c.startTurn();
    for (let i = 0; i < 2; i++) audio.frame(10 + i);
    await c.endTurn();
    // Turn 3: refused while the user is still talking; the rest of it goes nowhere.
    c.startTurn();
    for (let i = 0; i < 2; i++) audio.frame(20 + i);
    t1.uni[2]!.onStop!(Code.BadStreamHeader);
    t1.uni[2]!.finished = true; // FakeSend throws on a write after this
    audio.frame(22);
    t1.drop();
    await tick();
    expect(c.state).toBe('reconnecting');
    audio.frame(23);
    audio.frame(24);
    await new Promise((r) => setTimeout(r, 300)); // the first backoff
    expect(dials).toHaveLength(2);
    const t2 = accept(1);
    await tick();
    const ended = c.once('input.turn_ended');
    await c.endTurn();
    expect(await ended).toMatchObject({ frames: 2 }); // what went out before the stop
    // Only turn 2 was sent again (as the new session's item_c1), whole.
    expect(t2.uni).toHaveLength(1);
    const replay = parseStream(t2.uni[0]!.bytes());
    expect(replay[0]).toMatchObject({ type: 'header', header: { item_id: 'item_c1' } });
    expect(replay.slice(1).map((f) => (f.type === 'frame' ? new DataView(f.payload.buffer, f.payload.byteOffset).getInt16(0, true) : -1))).toEqual([10, 11]);
    expect(t2.uni[0]!.finished).toBe(true);
    // The next turn opens a new stream on the new connection.
    c.startTurn();
    audio.frame(30);
    await c.endTurn();
    expect(t2.uni).toHaveLength(2);
    expect(parseStream(t2.uni[1]!.bytes())).toHaveLength(2);
    expect(t2.uni[1]!.finished).toBe(true);
    // Sent: 3 + 2 + 2 + 1 frames; the 3 of turn 3 after its stop were not.
    expect(c.stats()).toMatchObject({ turnsSent: 4, framesSent: 8, bytesSent: 8 * 960, reconnects: 1 });
    await c.close();
  });

  it('sends a turn stopped with going_away again, whole, to the next server', async () => {
    const { c, audio, dials, accept } = client();
    const started = c.start();
    const t1 = accept(0);
    await started;
    const stopped: unknown[] = [];
    c.on('input.stream_stopped', (e) => stopped.push(e));
    c.startTurn();
    for (let i = 0; i < 2; i++) audio.frame(i);
    // The server starts draining: it says so and refuses the turn being spoken.
    t1.control!.recv.onData!(encodeEvent(JSON.stringify({ type: 'error', error: { type: 'server_error', code: 'going_away', message: 'draining' } })));
    t1.uni[0]!.onStop!(Code.GoingAway);
    t1.uni[0]!.finished = true; // FakeSend throws on a write after this
    expect(stopped).toMatchObject([{ item_id: 'item_c1', code_name: 'going_away' }]);
    // The user goes on talking; nothing more goes to this server.
    for (let i = 2; i < 4; i++) audio.frame(i);
    expect(parseStream(t1.uni[0]!.bytes())).toHaveLength(3);
    expect(t1.closedWith).toBeNull(); // not idle yet: the turn is open
    await c.endTurn();
    // Idle: the client leaves and sends the whole turn, the audio after the stop included, to
    // the next server.
    expect(t1.closedWith).not.toBeNull();
    await tick();
    expect(dials).toHaveLength(2);
    const t2 = accept(1);
    await tick();
    expect(t2.uni).toHaveLength(1);
    const replay = parseStream(t2.uni[0]!.bytes());
    expect(replay[0]).toMatchObject({ type: 'header', header: { item_id: 'item_c1' } });
    expect(replay.slice(1).map((f) => (f.type === 'frame' ? new DataView(f.payload.buffer, f.payload.byteOffset).getInt16(0, true) : -1))).toEqual([0, 1, 2, 3]);
    expect(t2.uni[0]!.finished).toBe(true);
    expect(c.stats()).toMatchObject({ turnsSent: 1, framesSent: 4, reconnects: 1 });
    await c.close();
  });

  it('gives up after maxReconnectAttempts failed dials: client.error unreachable, closed', async () => {
    const { c, audio, dials, accept } = client({ maxReconnectAttempts: 1 });
    const started = c.start();
    const t1 = accept(0);
    await started;
    const reconnecting: unknown[] = [];
    c.on('transport.reconnecting', (e) => reconnecting.push(e));
    const failed = c.once('client.error');
    t1.drop();
    await new Promise((r) => setTimeout(r, 300));
    expect(dials).toHaveLength(2);
    dials[1]!.reject(new Error('connection refused'));
    const e = await failed;
    expect(e.error.code).toBe('unreachable');
    expect(e.error.message).toContain('connection refused');
    expect(c.state).toBe('closed');
    expect(audio.stopped).toBe(true);
    expect(reconnecting).toEqual([{ type: 'transport.reconnecting', attempt: 1, delayMs: 250, reason: 'network' }]);
  });

  it('with reconnect: false, a lost connection closes the client', async () => {
    const { c, audio, dials, accept } = client({ reconnect: false });
    const started = c.start();
    const t1 = accept(0);
    await started;
    const failed = c.once('client.error');
    t1.drop('bye');
    const e = await failed;
    expect(e.error.code).toBe('closed');
    expect(c.state).toBe('closed');
    expect(audio.stopped).toBe(true); // the microphone and the output are released
    await new Promise((r) => setTimeout(r, 300));
    expect(dials).toHaveLength(1);
  });

  it('server VAD streams continuously from start and barges in when the server hears speech', async () => {
    const { c, audio, accept } = client({ mode: 'server_vad' });
    const started = c.start();
    for (let i = 0; i < 3; i++) audio.frame(i); // before connecting
    const t = accept(0);
    await started;
    audio.frame(3);
    expect(parseStream(t.uni[0]!.bytes())).toHaveLength(5);
    expect(t.uni[0]!.finished).toBe(false);
    expect(events(t.control!.send.bytes())[0]).toMatchObject({ session: { audio: { input: { turn_detection: { type: 'server_vad' } } } } });
    expect(() => c.startTurn()).toThrow();
    const s = t.incoming();
    s.onData!(encodeHeader(StreamKind.AgentAudio, { item_id: 'i', response_id: 'r', codec: 'pcm16', sample_rate: 24000, frame_ms: 20 }));
    const interrupted = c.once('interrupted');
    t.control!.recv.onData!(encodeEvent(JSON.stringify({ type: 'input_audio_buffer.speech_started', item_id: 'item_s3', audio_start_ms: 900 })));
    expect(await interrupted).toMatchObject({ response_id: 'r' });
    expect(s.stopped).toBe(Code.Cancelled);
  });

  it('stops sending a turn the server stopped and sends the next one on a new stream', async () => {
    const { c, audio, accept } = client();
    const started = c.start();
    const t = accept(0);
    await started;
    const stopped: unknown[] = [];
    c.on('input.stream_stopped', (e) => stopped.push(e));
    c.startTurn();
    for (let i = 0; i < 3; i++) audio.frame(i);
    const s1 = t.uni[0]!;
    // The server refuses the turn (STOP_SENDING going_away). FakeSend throws on a write after
    // the stream has ended, so writing the rest of the turn would fail this test.
    s1.onStop!(Code.GoingAway);
    expect(stopped).toEqual([{ type: 'input.stream_stopped', item_id: 'item_c1', code: Code.GoingAway, code_name: 'going_away' }]);
    s1.finished = true;
    for (let i = 3; i < 6; i++) audio.frame(i);
    await c.endTurn();
    expect(parseStream(s1.bytes())).toHaveLength(4); // the header and the 3 frames before the stop
    expect(c.session.turns[0]).toMatchObject({ itemId: 'item_c1', framesSent: 3, framesDropped: 3, stoppedCode: Code.GoingAway });
    // The next turn is a new stream, sent whole and finished.
    c.startTurn();
    for (let i = 0; i < 2; i++) audio.frame(i);
    await c.endTurn();
    expect(t.uni).toHaveLength(2);
    expect(parseStream(t.uni[1]!.bytes())).toHaveLength(3);
    expect(t.uni[1]!.finished).toBe(true);
    await c.close();
  });

  it('moves to another server when this one goes away, once idle', async () => {
    const { c, dials, accept } = client();
    const started = c.start();
    const t1 = accept(0);
    await started;
    t1.control!.recv.onData!(encodeEvent(JSON.stringify({ type: 'error', error: { type: 'server_error', code: 'going_away', message: 'draining' } })));
    expect(t1.closedWith).not.toBeNull();
    await tick();
    expect(dials).toHaveLength(2);
    accept(1);
    await tick();
    expect(c.state).toBe('connected');
  });

  it('rejects start() with the microphone error and closes the connection', async () => {
    const { c, audio, accept } = client();
    const { MicrophoneError } = await import('../src/errors.js');
    audio.startCapture = async () => {
      throw new MicrophoneError('mic_denied', 'denied');
    };
    const started = c.start().catch((e: unknown) => e);
    const t = accept(0);
    const e = await started;
    expect((e as { code: string }).code).toBe('mic_denied');
    expect(c.state).toBe('closed');
    expect(t.closedWith).not.toBeNull();
  });

  it('reports a denied microphone at once, without waiting for a slow connection', async () => {
    const { c, audio, accept } = client();
    const { MicrophoneError } = await import('../src/errors.js');
    audio.startCapture = async () => {
      throw new MicrophoneError('mic_denied', 'denied');
    };
    const e = await c.start().catch((err: unknown) => err); // the dial is still pending
    expect((e as { code: string }).code).toBe('mic_denied');
    expect(c.state).toBe('closed');
    const late = accept(0); // the connection completes afterwards: it is closed, not used
    await tick();
    expect(late.closedWith).not.toBeNull();
  });
});
