// The voq demo page: @voq/client with a talk button, a playout meter and an event log.
//
// Query parameters (for people and for web/e2e/call.test.mjs):
//   transport=auto|webtransport|websocket   codec=opus|pcm16   mode=push_to_talk|server_vad
//   autostart=1 turn_ms=N   connect, capture one push-to-talk turn of N ms, play the reply
//   autostart=wait          the same once a test calls window.voq.go()
//   disable_webtransport=1  hide WebTransport from the client (proves the WebSocket fallback)
//   aec=0                   no echo-cancellation loopback
//   capture=worklet|track-processor   how the microphone is read (default: the best available)
//   interrupt_after_ms=N    autostart: barge in N ms after the reply starts playing
//   talk_during_reply_ms=N  autostart: once the reply starts playing, capture a second push-to-talk
//                           turn of N ms (double talk, for web/e2e/echo.test.mjs); the call is
//                           complete when the server has committed that turn
//   keep_capture=1          keep each turn's captured audio for window.voq.captured()
// window.voq = { client, stats(), events, done, captured(itemId) } lets a test read what
// happened; captured(itemId) is the turn's audio as the page captured and encoded it (pcm16
// samples, with keep_capture=1), which the test compares with the server's recording.

import { VoqClient, VoqError } from '@voq/client';
import type { Codec, Mode, TransportChoice, VoqEvent, VoqServerConfig, VoqStats } from '@voq/client';

interface LogEntry {
  t: number;
  type: string;
  event: unknown;
}

interface Outcome {
  ok: boolean;
  error?: { code: string; message: string };
  turn?: unknown;
  response?: unknown;
  playback?: unknown;
  /** `talk_during_reply_ms`: the second turn (`input.turn_ended`) and the server's commit of it. */
  duringReply?: { turn: unknown; committed: unknown };
  interrupt?: unknown;
  stats: VoqStats | null;
  /** Wall-clock time (Unix ms) of the call to `start()`: a test sets it beside the server's
   *  first_frame_unix_ms (same machine, same clock) to measure setup. */
  connectStartUnixMs?: number;
}

declare global {
  interface Window {
    voq: {
      client: VoqClient | null;
      stats(): VoqStats | null;
      events: LogEntry[];
      done: Promise<Outcome>;
      captured(itemId: string): number[] | null;
      /** Wall-clock time (Unix ms) that `events[].t` counts from. */
      pageStartUnixMs: number;
      /** With autostart: the wall-clock time (Unix ms) of the call to `start()`, at once. */
      connectStartUnixMs?: number;
      /** With `autostart=wait`: starts the scripted call. */
      go?: () => void;
    };
  }
}

const params = new URLSearchParams(location.search);
const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const t0 = performance.now();
const pageStartUnixMs = performance.timeOrigin + t0;
const events: LogEntry[] = [];

if (params.get('disable_webtransport') === '1') {
  // As if the browser had no WebTransport: the auto race must fall back to WebSocket.
  (window as unknown as { WebTransport?: unknown }).WebTransport = undefined;
}

/** A checkbox of the settings; `?PARAM=0` or `=1` in the URL sets it. */
function toggle(id: string, param: string): boolean {
  const box = $<HTMLInputElement>(id);
  const fromUrl = params.get(param);
  if (fromUrl === '0' || fromUrl === '1') box.checked = fromUrl === '1';
  return box.checked;
}

/** The server's `/voq/config.json`, when `voq serve` put it into the page (no fetch needed). */
function embeddedConfig(): VoqServerConfig | null {
  const text = document.getElementById('voq-config')?.textContent;
  if (!text) return null;
  try {
    return JSON.parse(text) as VoqServerConfig;
  } catch {
    return null;
  }
}

function choose<T extends string>(name: string, allowed: readonly T[]): T {
  const fromUrl = params.get(name) as T | null;
  if (fromUrl && allowed.includes(fromUrl)) {
    const input = document.querySelector<HTMLInputElement>(`input[name="${name}"][value="${fromUrl}"]`);
    if (input) input.checked = true;
  }
  return (document.querySelector<HTMLInputElement>(`input[name="${name}"]:checked`)?.value ?? allowed[0]) as T;
}

let client: VoqClient | null = null;
let starting: Promise<void> | null = null;

function setStatus(text: string, kind: '' | 'ok' | 'error' = '') {
  const el = $('status');
  el.textContent = text;
  el.className = `status ${kind}`;
}

function plainError(e: unknown): string {
  if (e instanceof VoqError) {
    switch (e.code) {
      case 'mic_denied':
        return 'The microphone is blocked. Allow it for this page (the icon in the address bar) and try again.';
      case 'mic_unavailable':
        return `No microphone could be opened. ${e.message}`;
      case 'unreachable':
        return 'Cannot reach the voq server. Is `voq serve` running? (Details in the event log.)';
      case 'certificate':
        return "The secure (WebTransport) connection failed: the server's certificate did not match. Reload the page — a restarted server has a new certificate — or choose WebSocket. (Details in the event log.)";
      case 'unsupported':
        return `This browser lacks something voq needs: ${e.message}`;
      case 'closed':
        return `The connection closed: ${e.message}`;
      default:
        return e.message;
    }
  }
  return String((e as Error)?.message ?? e);
}

/** The error in plain words on the status line, with the technical details in the log. */
function showError(e: unknown) {
  setStatus(plainError(e), 'error');
  if (e instanceof VoqError) log({ type: 'client.error', error: e });
}

function summary(e: VoqEvent): string {
  switch (e.type) {
    case 'session.created':
    case 'session.updated':
      return `${e.session.id} via ${e.session.voq.transport}, ${e.session.audio.input.format.type}/${e.session.audio.output.format.type}, send-ahead ${e.session.voq.send_ahead_ms} ms`;
    case 'input_audio_buffer.committed':
      return `${e.item_id}: ${e.voq.frames} frames, ${e.voq.audio_ms} ms, ${e.voq.bytes} bytes confirmed`;
    case 'response.created':
      return e.response.id;
    case 'response.done':
      return `${e.response.id} ${e.response.status}${e.response.voq ? `, ${e.response.voq.audio_ms_sent} ms sent` : ''}`;
    case 'conversation.item.truncated':
      return `${e.item_id} at ${e.audio_end_ms} ms`;
    case 'error':
      return `${e.error.code}: ${e.error.message}`;
    case 'transport.connected':
      return `${e.transport} in ${e.connectMs} ms${e.attempts.length ? ` (${e.attempts.map((a) => `${a.transport} ${a.result}${a.error ? `: ${a.error}` : ''}`).join(', ')})` : ''}`;
    case 'transport.closed':
      return `${e.transport}: ${e.reason}`;
    case 'input.turn_started':
      return e.item_id;
    case 'input.turn_ended':
      return `${e.item_id}: ${e.frames} frames, ${e.audio_ms} ms, ${e.bytes} bytes`;
    case 'playback.started':
    case 'playback.underrun':
    case 'playback.resumed':
      return `${e.response_id} at ${e.played_ms} ms`;
    case 'playback.ended':
      return `${e.response_id}: ${e.reason} at ${e.played_ms} ms`;
    case 'interrupted':
      return `${e.response_id}: heard ${e.played_ms} ms`;
    case 'warning':
      return e.message;
    case 'client.error':
      return `${e.error.code}: ${e.error.message}`;
    default:
      return '';
  }
}

function log(e: VoqEvent) {
  const entry: LogEntry = { t: Math.round(performance.now() - t0), type: e.type, event: e };
  events.push(entry);
  const li = document.createElement('li');
  const t = document.createElement('span');
  t.className = 't';
  t.textContent = `${(entry.t / 1000).toFixed(3)}s`;
  li.append(t, `${e.type}  ${summary(e)}`);
  if (e.type === 'warning') li.className = 'warn';
  if (e.type === 'error' || e.type === 'client.error') li.className = 'err';
  const ol = $('log');
  ol.append(li);
  while (ol.children.length > 300) ol.firstElementChild?.remove();
  ol.scrollTop = ol.scrollHeight;
}

function settingsLocked(locked: boolean) {
  for (const el of document.querySelectorAll<HTMLInputElement>('.settings input')) el.disabled = locked;
}

function makeClient(): VoqClient {
  const mode = choose<Mode>('mode', ['push_to_talk', 'server_vad']);
  const codec = choose<Codec>('codec', ['opus', 'pcm16']);
  const transport = choose<TransportChoice>('transport', ['auto', 'webtransport', 'websocket']);
  const capture = params.get('capture');
  // `?config=fetch`: ask /voq/config.json as an integrator's page without the embedded one does.
  const serverConfig = params.get('config') === 'fetch' ? null : embeddedConfig();
  const c = new VoqClient({
    mode,
    codec,
    transport,
    echoCancellationLoopback: params.get('aec') !== '0',
    microphone: {
      echoCancellation: toggle('mic-ec', 'ec'),
      noiseSuppression: toggle('mic-ns', 'ns'),
      autoGainControl: toggle('mic-agc', 'agc'),
    },
    keepCapturedAudio: params.get('keep_capture') === '1',
    ...(capture === 'worklet' || capture === 'track-processor' ? { capture } : {}),
    ...(serverConfig ? { serverConfig } : {}),
  });
  c.on('*', (e) => {
    // RTT probes once a second would drown the log; the RTT shows in the stats instead.
    if (e.type !== 'voq.pong') log(e);
    onEvent(e);
  });
  $('talk').hidden = mode === 'server_vad';
  $('commit').hidden = mode !== 'server_vad';
  return c;
}

function onEvent(e: VoqEvent) {
  const c = client;
  if (!c) return;
  switch (e.type) {
    case 'transport.connected':
      setStatus(`Connected over ${e.transport === 'webtransport' ? 'WebTransport (QUIC)' : 'WebSocket (TCP)'}. ${c.stats().mode === 'server_vad' ? 'Just talk.' : 'Hold Talk and speak.'}`, 'ok');
      break;
    case 'transport.reconnecting':
      setStatus(`Connection lost (${e.reason}). Reconnecting… (attempt ${e.attempt}); your audio is kept.`);
      break;
    case 'playback.started':
      setStatus('The agent is speaking. Interrupt to cut it off.', 'ok');
      break;
    case 'playback.ended':
      if (c.state === 'connected') setStatus(e.reason === 'interrupted' ? `Interrupted: you heard ${e.played_ms} ms.` : 'Your turn.', 'ok');
      break;
    case 'error':
      if (e.error.code === 'going_away') setStatus('The server is shutting down; moving to another one when this reply ends.');
      else setStatus(`The server reported: ${e.error.message}`, 'error');
      break;
    case 'client.error':
      setStatus(plainError(e.error), 'error');
      break;
    default:
      break;
  }
}

async function ensureStarted(): Promise<void> {
  if (client && starting) return starting;
  client = makeClient();
  window.voq.client = client;
  settingsLocked(true);
  setStatus('Connecting… (the microphone is already recording)');
  $('connect').textContent = 'Hang up';
  const c = client;
  starting = c.start().catch(async (e: unknown) => {
    showError(e);
    await hangUp();
    throw e;
  });
  return starting;
}

async function hangUp(): Promise<void> {
  const c = client;
  client = null;
  starting = null;
  $('connect').textContent = 'Connect';
  $('talk').classList.remove('on');
  settingsLocked(false);
  if (c) {
    await c.close();
    if (!$('status').classList.contains('error')) setStatus('Not connected.');
  }
}

// ---- controls ----

$('connect').addEventListener('click', () => {
  if (client) void hangUp();
  else void ensureStarted().catch(() => {});
});

let pressedAt = 0;
let latched = false;
function talkDown() {
  const talk = $('talk');
  if (latched) {
    latched = false;
    talkStop();
    return;
  }
  pressedAt = performance.now();
  const run = ensureStarted();
  run.catch(() => talk.classList.remove('on'));
  client?.startTurn();
  talk.classList.add('on');
  talk.textContent = 'Listening… release to send';
}
function talkUp() {
  if (!client?.talking) return;
  if (performance.now() - pressedAt < 300) {
    // A click: stay on until the next click.
    latched = true;
    $('talk').textContent = 'Listening… click to send';
    return;
  }
  talkStop();
}
function talkStop() {
  const talk = $('talk');
  talk.classList.remove('on');
  talk.textContent = 'Hold to talk';
  void client?.endTurn();
}
const talk = $('talk');
talk.addEventListener('pointerdown', (e) => {
  e.preventDefault();
  talkDown();
});
talk.addEventListener('pointerup', talkUp);
talk.addEventListener('pointerleave', () => {
  if (!latched && client?.talking) talkStop();
});
window.addEventListener('keydown', (e) => {
  if (e.code === 'Space' && !e.repeat && !(e.target instanceof HTMLInputElement) && !$('talk').hidden) {
    e.preventDefault();
    if (!client?.talking) talkDown();
  }
});
window.addEventListener('keyup', (e) => {
  if (e.code === 'Space' && !$('talk').hidden) {
    pressedAt = 0;
    talkUp();
  }
});
$('interrupt').addEventListener('click', () => void client?.interrupt());
$('commit').addEventListener('click', () => client?.commit());
for (const input of document.querySelectorAll<HTMLInputElement>('input[name="mode"]')) {
  input.addEventListener('change', () => {
    $('talk').hidden = input.value === 'server_vad' && input.checked;
    $('commit').hidden = !$('talk').hidden;
  });
}

// ---- live numbers (10 per second: cheap) ----

setInterval(() => {
  const s = client?.stats();
  const buffered = s?.bufferedMs ?? 0;
  $('buffer-bar').style.width = `${Math.min(100, (buffered / 3000) * 100)}%`;
  $('buffer-text').textContent = `${buffered} ms`;
  $('transport').textContent = s?.transport ?? '—';
  $('rtt').textContent = s?.rttMs != null ? `${s.rttMs.toFixed(1)} ms` : '—';
  $('played').textContent = s ? `${s.playedMs} ms` : '—';
  $('underruns').textContent = String(s?.underruns ?? 0);
  $('sent').textContent = s ? `${s.turnsSent} turns, ${(s.bytesSent / 1024).toFixed(1)} KiB` : '—';
  $('aec').textContent = s ? `${s.echoLoopback}${s.loopbackLatencyMs != null ? ` (+${s.loopbackLatencyMs} ms)` : ''}` : '—';
  ($('interrupt') as HTMLButtonElement).disabled = !client || !(s && s.bufferedMs + s.playedMs > 0 && client.session.currentResponse);
}, 100);

// ---- autostart: one scripted call, for tests ----

async function autostart(): Promise<Outcome> {
  const turnMs = Number(params.get('turn_ms') ?? 3000);
  const deadline = Number(params.get('timeout_ms') ?? 60000);
  const c = makeClient();
  client = c;
  window.voq.client = c;
  settingsLocked(true);
  setStatus('Autostart: connecting and speaking…');
  let turn: unknown = null;
  let response: { type: 'response.done'; response: { id: string; status: string } } | null = null;
  const connectStartUnixMs = performance.timeOrigin + performance.now();
  window.voq.connectStartUnixMs = connectStartUnixMs;
  const run = async (): Promise<Outcome> => {
    const started = c.start();
    starting = started;
    if (c.stats().mode === 'push_to_talk') {
      const ended = c.once('input.turn_ended');
      c.startTurn({ durationMs: turnMs });
      await started;
      turn = await ended;
    } else {
      await started;
    }
    const interruptAfter = params.get('interrupt_after_ms');
    if (interruptAfter !== null) {
      // Barge in while the reply plays; the call is complete when the server confirms the cut.
      const playing = await c.once('playback.started');
      await new Promise((r) => setTimeout(r, Number(interruptAfter)));
      const truncated = c.once('conversation.item.truncated');
      const done = c.once('response.done');
      const heard = await c.interrupt();
      const [t, d] = await Promise.all([truncated, done]);
      response = d;
      const interrupt = c.session.responses.find((r) => r.responseId === playing.response_id)?.interrupt ?? null;
      return { ok: heard !== null && t.audio_end_ms === heard && d.response.status === 'cancelled', turn, response, interrupt: { heard, truncated: t, stats: interrupt }, stats: c.stats() };
    }
    const duringReply = params.get('talk_during_reply_ms');
    if (duringReply !== null) {
      // The user speaks while the agent does: a second turn, captured as the reply plays.
      if (!events.some((x) => x.type === 'playback.started')) await c.once('playback.started');
      const ended = c.once('input.turn_ended');
      c.startTurn({ durationMs: Number(duringReply) });
      const second = await ended;
      let committed = events.find((x) => x.type === 'input_audio_buffer.committed' && (x.event as { item_id: string }).item_id === second.item_id)?.event;
      while (!committed) {
        const e = await c.once('input_audio_buffer.committed');
        if (e.item_id === second.item_id) committed = e;
      }
      return { ok: true, turn, duringReply: { turn: second, committed }, stats: c.stats() };
    }
    response = await c.once('response.done');
    const id = response.response.id;
    // Wait until the reply has played out (or was cut short).
    let playback = events.find((x) => x.type === 'playback.ended' && (x.event as { response_id: string }).response_id === id)?.event;
    while (!playback) {
      const e = await c.once('playback.ended');
      if (e.response_id === id) playback = e;
    }
    return { ok: response.response.status === 'completed', turn, response, playback, stats: c.stats() };
  };
  const timeout = new Promise<Outcome>((resolve) =>
    setTimeout(() => resolve({ ok: false, error: { code: 'timeout', message: `no complete call within ${deadline} ms` }, turn, response, stats: c.stats() }), deadline),
  );
  try {
    const out: Outcome = { ...(await Promise.race([run(), timeout])), connectStartUnixMs };
    setStatus(out.ok ? 'Autostart call complete.' : `Autostart call failed: ${out.error?.message ?? 'the response did not complete'}`, out.ok ? 'ok' : 'error');
    return out;
  } catch (e) {
    const stats = c.stats();
    showError(e);
    // The client is closed: put the controls back as for a fresh page.
    client = null;
    starting = null;
    $('connect').textContent = 'Connect';
    settingsLocked(false);
    return { ok: false, error: { code: (e as VoqError)?.code ?? 'error', message: String((e as Error)?.message ?? e) }, turn, response, stats, connectStartUnixMs };
  }
}

window.voq = {
  client: null,
  stats: () => client?.stats() ?? null,
  events,
  pageStartUnixMs,
  done: new Promise<Outcome>(() => {}),
  // A plain array: it crosses into the test (playwright's evaluate) as JSON.
  captured: (itemId) => {
    const pcm = window.voq.client?.capturedAudio(itemId);
    return pcm ? Array.from(pcm) : null;
  },
};
if (params.get('autostart') === '1') {
  $('connect').textContent = 'Hang up';
  window.voq.done = autostart();
} else if (params.get('autostart') === 'wait') {
  // As autostart=1, once the test calls window.voq.go() (after changing the network, say).
  window.voq.done = new Promise<Outcome>((resolve) => {
    window.voq.go = () => {
      $('connect').textContent = 'Hang up';
      resolve(autostart());
    };
  });
}
