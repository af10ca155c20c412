// Echo cancellation, measured with sound (issue #16): the agent's reply really comes out of a
// (virtual) speaker and goes into the (virtual) microphone while the user speaks, and the test
// measures how much of that echo is left in the server's recording of the user's turn.
//
// The room is a PulseAudio daemon of the test's own (temp dir, its own socket; killed at the end):
//
//   Chromium ──▶ sink "speaker" ──monitor──▶ loopback (−6 dB, 40 ms) ──▶ sink "mic"
//   paplay prompt ──▶ sink "user" ──monitor──▶ loopback (0 dB, 40 ms)  ──▶ sink "mic"
//   sink "mic" ──monitor──▶ remap-source "micin" (Chromium's microphone; Chromium lists no
//                                                monitor sources) ──▶ parec (the test's copy)
//
// Chromium runs headless on that daemon (no fake device, no --mute-audio). One call per
// playback path, each against `voq serve --agent file:reply-carwash-24k.wav` (a 16 s reply):
//
//   voq       the demo page, default: the playout worklet through the echo-cancellation
//             loopback (a local RTCPeerConnection pair and an <audio> element);
//   aec=0     the demo page, the playout worklet straight to the AudioContext's destination;
//   webrtc    a page of the test's own: the reply decoded and sent by one RTCPeerConnection to
//             another, played with an <audio> element — as a WebRTC call plays a remote voice.
//             It captures and sends its turn with @voq/client as the demo does.
//
// In every call the microphone is opened with the defaults (echoCancellation, noiseSuppression,
// autoGainControl on). The demo page's `talk_during_reply_ms` makes its second push-to-talk turn
// start when the reply starts playing (the first, 500 ms of silence, only asks for the reply).
// During that turn the user is silent for 3 s (single talk: the microphone hears only the echo),
// then says the Carwash prompt (double talk).
//
// Figures (printed as `# echo: {...}` per call, `# echo-summary:` min/median/max at the end):
//   erleDb        10·log10(E[mic] / E[recording]) over the single-talk stretch: the echo energy
//                 that reached the microphone (parec's copy of "micin", the same samples Chromium
//                 read) against what is left of it in the server's recording of the turn.
//   erleMedianDb  the same per 100 ms window (where the echo is above −50 dBFS), median: the
//                 canceller's usual state; leakPct: the share of windows with less than 10 dB.
//                 A burst of leaked echo (re-convergence, mostly under CPU load) pulls erleDb down
//                 on its own; these two tell a burst from a canceller that does not cancel.
//   echoAtMicDbfs the echo's level at the microphone over that stretch (proves it was played);
//                 residualDbfs what the recording holds there.
//   speech*       the prompt in the double-talk stretch: its normalized correlation with the
//                 recording (and with the mic signal, which holds the echo too), the level the
//                 capture gave it relative to the mic (the AGC's share of any change), and where
//                 the recording has it (speechAtMs: SPEAK_AFTER_MS plus paplay's start-up).
//   loopbackLatencyMs, outputLatencyMs  the page's stats().loopbackLatencyMs and its
//                 AudioContext.outputLatency (neither is in the echo figures; for the record).
// The two signals are aligned on the prompt, found in both by correlation.
//
// Environment: as call.test.mjs (VOQ_BIN, CHROMIUM, VOQ_E2E_FRESH_DIST=1 serves web/dist —
// needed while the page compiled into voq predates `talk_during_reply_ms`), ECHO_RUNS=N repeats
// the three calls N times (default 1), VOQ_E2E_KEEP=1 keeps the temp dir (recordings, mic copy,
// the daemon's log), ECHO_DISABLE_FEATURES=ChromeWideEchoCancellation measures Chromium without
// its Chrome-wide echo cancellation (then nothing about ERLE is asserted: web/README.md).
import { execFile, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { promisify } from 'node:util';
import { readWav, speechBounds, writeWav } from './audio.mjs';
import { CHROMIUM, RESULTS, VOQ_BIN, exited, readRecording, repo, startServer, until, web } from './harness.mjs';

const PROMPT = path.join(repo, 'testdata/audio/prompt-carwash-24k.wav');
const REPLY = path.join(repo, 'testdata/audio/reply-carwash-24k.wav');
const RATE = 24000;
/** The turn captured while the reply plays, and how much of it passes before the user speaks. */
const TURN_MS = 8000;
const SPEAK_AFTER_MS = 3000;
/** The echo path: attenuation and delay of the speaker → microphone loopback. */
const ECHO_DB = -6;
const ROOM_MS = 40;
const RUNS = Number(process.env.ECHO_RUNS ?? 1);
/**
 * voq's playback must remove at least this much echo (erleMedianDb). Measured: 42.5–63.5 dB for
 * voq, 28–65 dB for all three paths (loaded machine included); a path the canceller has no
 * reference for: −5.5…−4.8 dB (aec=0 without Chrome-wide echo cancellation).
 */
const ERLE_MIN_DB = 15;

const run = promisify(execFile);
const which = (cmd) => ['/usr/bin', '/bin', '/usr/local/bin'].map((d) => path.join(d, cmd)).find((p) => existsSync(p));
const PULSE = { daemon: which('pulseaudio'), pactl: which('pactl'), paplay: which('paplay'), parec: which('parec') };

const missing = !existsSync(CHROMIUM)
  ? `${CHROMIUM} is missing (apt-get install chromium); the echo test needs it`
  : !existsSync(VOQ_BIN)
    ? `${VOQ_BIN} is missing (cargo build -p voq, or set VOQ_BIN)`
    : !PULSE.daemon
      ? 'pulseaudio is missing (apt-get install pulseaudio, or scripts/setup): the echo test plays the reply through a virtual speaker into a virtual microphone'
      : !PULSE.pactl || !PULSE.paplay || !PULSE.parec
        ? 'pactl/paplay/parec are missing (apt-get install pulseaudio-utils, or scripts/setup)'
        : null;

/**
 * A PulseAudio daemon of the test's own: runtime dir, state, cookie and socket in `dir`, no
 * default.pa (-n), never exiting on idle; clients reach it through `env`.
 */
async function startPulse(dir) {
  const runtime = path.join(dir, 'pulse');
  mkdirSync(runtime, { recursive: true });
  mkdirSync(path.join(dir, 'state'), { recursive: true });
  const socket = path.join(runtime, 'native');
  // Clients must never start a daemon of their own (autospawn) if ours is gone.
  const clientConf = path.join(dir, 'client.conf');
  writeFileSync(clientConf, 'autospawn = no\n');
  const env = {
    ...process.env,
    HOME: dir,
    XDG_RUNTIME_DIR: dir,
    PULSE_RUNTIME_PATH: runtime,
    PULSE_STATE_PATH: path.join(dir, 'state'),
    PULSE_SERVER: `unix:${socket}`,
    PULSE_CLIENTCONFIG: clientConf,
  };
  // As root, pulseaudio warns that it is meant for --system, and runs: --system=false keeps it
  // a per-user daemon in our directory. --disallow-exit: no client can stop it.
  const proc = spawn(
    PULSE.daemon,
    ['-n', '--daemonize=no', '--system=false', '--exit-idle-time=-1', '--disallow-exit', '--use-pid-file=no', '--log-target=stderr', '--log-level=info', '--log-time=1', `--load=module-native-protocol-unix auth-anonymous=1 socket=${socket}`],
    { env, stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let log = '';
  // Should the test runner itself be stopped, the daemon goes with it.
  const reap = () => proc.kill('SIGKILL');
  process.once('exit', reap);
  proc.stderr.on('data', (d) => (log += d));
  const pactl = async (...args) => (await run(PULSE.pactl, args, { env })).stdout.trim();
  // What a client needs to find the daemon (Chromium keeps its own HOME and runtime dir).
  const clientEnv = { ...process.env, PULSE_SERVER: env.PULSE_SERVER, PULSE_RUNTIME_PATH: runtime, PULSE_CLIENTCONFIG: clientConf };
  const pulse = {
    proc,
    env,
    clientEnv,
    pactl,
    log: () => log,
    modules: [],
    async load(name, args) {
      const id = await pactl('load-module', name, ...args);
      pulse.modules.push(id);
      return id;
    },
    async stop() {
      for (const id of pulse.modules.reverse()) await pactl('unload-module', id).catch(() => {});
      pulse.modules = [];
      proc.kill('SIGTERM');
      const gone = exited(proc);
      const t = setTimeout(() => proc.kill('SIGKILL'), 3000);
      await gone;
      clearTimeout(t);
      process.removeListener('exit', reap);
    },
  };
  try {
    await until(10000, `pulseaudio to answer on ${socket}`, async () => {
      if (proc.exitCode !== null) throw new Error(`pulseaudio exited (${proc.exitCode}):\n${log}`);
      return pactl('info').then(
        () => true,
        () => false,
      );
    });
  } catch (e) {
    await pulse.stop();
    throw e;
  }
  return pulse;
}

/** The room: speaker → (attenuated, delayed) → mic, user → mic, mic → "micin". */
async function buildRoom(pulse) {
  const sink = (name) => pulse.load('module-null-sink', [`sink_name=${name}`, 'rate=48000', 'channels=1', `sink_properties=device.description=${name}`]);
  await sink('speaker');
  await sink('user');
  await sink('mic');
  const loop = (from) => pulse.load('module-loopback', [`source=${from}.monitor`, 'sink=mic', `latency_msec=${ROOM_MS}`, 'source_dont_move=true', 'sink_dont_move=true']);
  const echo = await loop('speaker');
  await loop('user');
  await pulse.load('module-remap-source', ['master=mic.monitor', 'source_name=micin', 'channels=1', 'source_properties=device.description=micin']);
  await pulse.pactl('set-default-sink', 'speaker');
  await pulse.pactl('set-default-source', 'micin');
  const inputs = JSON.parse(await pulse.pactl('-f', 'json', 'list', 'sink-inputs'));
  const echoInput = inputs.find((i) => String(i.owner_module) === echo);
  assert.ok(echoInput, `no sink input of the echo loopback (module ${echo}): ${JSON.stringify(inputs)}`);
  await pulse.pactl('set-sink-input-volume', String(echoInput.index), `${ECHO_DB}dB`);
}

/** parec of a source as raw 24 kHz mono s16le; `stop()` returns { samples, t0 } (t0: Unix ms of the first sample, ±20 ms). */
function record(pulse, source) {
  const proc = spawn(PULSE.parec, ['-d', source, '--raw', `--rate=${RATE}`, '--channels=1', '--format=s16le', '--latency-msec=20'], { env: pulse.env, stdio: ['ignore', 'pipe', 'pipe'] });
  const chunks = [];
  let bytes = 0;
  let t0 = null;
  let err = '';
  proc.stdout.on('data', (d) => {
    if (t0 === null) t0 = Date.now() - (d.length / 2 / RATE) * 1000;
    chunks.push(d);
    bytes += d.length;
  });
  proc.stderr.on('data', (d) => (err += d));
  return {
    started: () => bytes > 0,
    async stop() {
      const gone = exited(proc);
      proc.kill('SIGTERM');
      await gone;
      const b = Buffer.concat(chunks);
      const samples = new Float32Array(b.length >> 1);
      for (let i = 0; i < samples.length; i++) samples[i] = b.readInt16LE(2 * i) / 32768;
      if (!samples.length) throw new Error(`parec recorded nothing from ${source}: ${err}`);
      return { samples, t0 };
    },
    kill: () => proc.kill('SIGKILL'),
  };
}

// ---- signal measures ----

function decimate(x, k) {
  const out = new Float32Array(Math.floor(x.length / k));
  for (let i = 0; i < out.length; i++) {
    let s = 0;
    for (let j = 0; j < k; j++) s += x[i * k + j];
    out[i] = s / k;
  }
  return out;
}

/** Sum of squares of x[from, to). */
function energy(x, from, to) {
  let s = 0;
  for (let i = Math.max(0, from); i < Math.min(to, x.length); i++) s += x[i] * x[i];
  return s;
}

/**
 * Where `needle` is in `hay`: the lag in [from, to] (needle[i] ≈ hay[lag + i], all of the
 * needle inside hay) with the highest normalized correlation, searched at 1/4 of the rate and
 * refined at full rate. Returns { lag, corr, gain } (gain: least-squares scale of the needle in hay).
 */
function locate(hay, needle, from, to) {
  const k = 4;
  const h = decimate(hay, k);
  const n = decimate(needle, k);
  const lo = Math.max(0, Math.ceil(from / k));
  const hi = Math.min(h.length - n.length, Math.floor(to / k));
  if (hi < lo) throw new Error(`locate: no room for a ${needle.length}-sample needle in [${from}, ${to}] of ${hay.length}`);
  const nn = energy(n, 0, n.length);
  let hh = energy(h, lo, lo + n.length);
  let best = { lag: lo, corr: -2 };
  for (let l = lo; l <= hi; l++) {
    if (l > lo) hh += h[l + n.length - 1] ** 2 - h[l - 1] ** 2;
    let s = 0;
    for (let i = 0; i < n.length; i++) s += h[l + i] * n[i];
    const c = hh > 0 ? s / Math.sqrt(hh * nn) : 0;
    if (c > best.corr) best = { lag: l, corr: c };
  }
  const nN = energy(needle, 0, needle.length);
  let fine = { lag: best.lag * k, corr: -2, gain: 0 };
  for (let l = Math.max(0, best.lag * k - 2 * k); l <= Math.min(hay.length - needle.length, best.lag * k + 2 * k); l++) {
    let s = 0;
    for (let i = 0; i < needle.length; i++) s += hay[l + i] * needle[i];
    const e = energy(hay, l, l + needle.length);
    const c = e > 0 ? s / Math.sqrt(e * nN) : 0;
    if (c > fine.corr) fine = { lag: l, corr: c, gain: s / nN };
  }
  return fine;
}

const db = (x) => Number((10 * Math.log10(x)).toFixed(1));

/**
 * The figures of one call: `mic` (parec's copy of the microphone, t0 its first sample's time),
 * `rec` (the server's recording of the double-talk turn), `speakAt` (Unix ms the test started
 * paplay), `prompt` (its speech only).
 */
function measure({ mic, rec, speakAt, prompt }) {
  // The prompt in the mic copy: paplay started at speakAt, and reaches the mic within ~0.1 s
  // (its start-up, the 40 ms loopback); ±1.5 s of search is plenty.
  const expect = Math.round(((speakAt - mic.t0) * RATE) / 1000);
  const inMic = locate(mic.samples, prompt, expect - 1.5 * RATE, expect + 1.5 * RATE);
  // …and in the recording (anywhere).
  const inRec = locate(rec, prompt, 0, rec.length - prompt.length);
  // rec[i] is what the microphone gave at mic[i + offset].
  const offset = inMic.lag - inRec.lag;
  // Single talk: the turn's start up to 100 ms before the user's first word.
  const single = [0, inRec.lag - Math.round(0.1 * RATE)];
  const eMic = energy(mic.samples, single[0] + offset, single[1] + offset);
  const eRec = energy(rec, single[0], single[1]);
  const n = single[1] - single[0];
  // ERLE in 100 ms windows, where the echo at the mic is within 50 dB of full scale (not in the
  // reply's pauses): the median is the canceller's usual state, `leakPct` the share of windows
  // where less than 10 dB of the echo was removed (re-convergence after a glitch, mostly).
  const windows = [];
  const w = Math.round(0.1 * RATE);
  for (let i = single[0]; i + w <= single[1]; i += w) {
    const m = energy(mic.samples, i + offset, i + offset + w);
    if (m / w > 1e-5) windows.push(10 * Math.log10(m / Math.max(energy(rec, i, i + w), 1e-12)));
  }
  windows.sort((x, y) => x - y);
  return {
    erleDb: db(eMic / eRec),
    erleMedianDb: windows.length ? Number(windows[windows.length >> 1].toFixed(1)) : null,
    leakPct: windows.length ? Math.round((100 * windows.filter((x) => x < 10).length) / windows.length) : null,
    echoAtMicDbfs: db(eMic / n),
    residualDbfs: db(eRec / n),
    singleTalkMs: Math.round((n * 1000) / RATE),
    speechCorrRec: Number(inRec.corr.toFixed(3)),
    speechCorrMic: Number(inMic.corr.toFixed(3)),
    speechGainDb: db((inRec.gain / inMic.gain) ** 2),
    speechAtMs: Math.round((inRec.lag * 1000) / RATE),
  };
}

describe('echo cancellation (PulseAudio room)', { skip: missing ?? false }, () => {
  let chromium;
  let pulse;
  let server;
  let base;
  let tmp;
  let prompt;
  let webrtcPage;
  const results = [];

  before(async () => {
    ({ chromium } = await import('playwright-core'));
    tmp = mkdtempSync(path.join(tmpdir(), 'voq-echo-'));
    mkdirSync(RESULTS, { recursive: true });
    const p = readWav(PROMPT);
    assert.equal(p.rate, RATE);
    const b = speechBounds(p.samples, RATE);
    prompt = p.samples.subarray(b.start, b.end);
    pulse = await startPulse(path.join(tmp, 'pa'));
    await buildRoom(pulse);
    // voq serve with the file agent: every turn is answered with the 16 s reply.
    server = startServer(path.join(tmp, 'record'), `file:${REPLY}`);
    base = await server.url;
    // The WebRTC page's script: @voq/client for the turn, a plain peer-connection pair for the reply.
    const { build } = await import('esbuild');
    const bundle = await build({
      stdin: { contents: WEBRTC_PAGE_SCRIPT, resolveDir: web, loader: 'ts', sourcefile: 'echo-webrtc.ts' },
      bundle: true,
      write: false,
      format: 'esm',
      target: 'es2022',
      platform: 'browser',
      tsconfig: path.join(web, 'tsconfig.json'),
      logLevel: 'warning',
    });
    webrtcPage = bundle.outputFiles[0].text;
  });

  after(async () => {
    if (server) {
      server.proc.kill('SIGTERM');
      await exited(server.proc);
    }
    await pulse?.stop();
    if (pulse && process.env.VOQ_E2E_KEEP) writeFileSync(path.join(tmp, 'pulseaudio.log'), pulse.log());
    if (results.length) process.stdout.write(`# echo-summary: ${JSON.stringify(summarize(results))}\n`);
    if (tmp && !process.env.VOQ_E2E_KEEP) rmSync(tmp, { recursive: true, force: true });
  });

  async function launch() {
    return chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      // Playwright mutes Chromium by default: here the reply must reach the speaker.
      ignoreDefaultArgs: ['--mute-audio'],
      args: [
        '--no-sandbox',
        '--autoplay-policy=no-user-gesture-required',
        // Grants getUserMedia; the microphone is the real (PulseAudio) default source, not the fake device.
        '--use-fake-ui-for-media-stream',
        // Pages the test fulfils itself (the WebRTC page, VOQ_E2E_FRESH_DIST) reach 127.0.0.1.
        // ECHO_DISABLE_FEATURES=ChromeWideEchoCancellation: the canceller's reference is then
        // only WebRTC's own playout, as before Chrome-wide echo cancellation (web/README.md).
        `--disable-features=${['LocalNetworkAccessChecks', ...(process.env.ECHO_DISABLE_FEATURES ?? '').split(',').filter(Boolean)].join(',')}`,
      ],
      env: pulse.clientEnv,
    });
  }

  /** One call; `playback`: 'voq' | 'aec0' | 'webrtc'. Returns its figures. */
  async function call(playback, runIndex) {
    const name = `echo-${playback}-${runIndex}`;
    const mic = record(pulse, 'micin');
    const browser = await launch();
    let speaker = null;
    try {
      await until(5000, 'parec to deliver audio', () => mic.started());
      const page = await browser.newPage();
      const console = [];
      page.on('console', (m) => console.push(`${m.type()}: ${m.text()}`));
      page.on('pageerror', (e) => console.push(`pageerror: ${e.message}`));
      if (playback === 'webrtc') {
        await page.route(/\/(echo-webrtc\.(html|js)|reply\.wav)$/, (route) => {
          const file = new URL(route.request().url()).pathname;
          if (file.endsWith('.js')) return route.fulfill({ body: webrtcPage, contentType: 'text/javascript' });
          if (file.endsWith('.wav')) return route.fulfill({ body: readFileSync(REPLY), contentType: 'audio/wav' });
          return route.fulfill({ body: '<!doctype html><title>WebRTC playback</title><script type="module" src="echo-webrtc.js"></script>', contentType: 'text/html' });
        });
        await page.goto(`${base}echo-webrtc.html`);
        await page.waitForFunction(() => window.echo, null, { timeout: 10000 });
        await page.evaluate((ms) => void (window.echo.done = window.echo.run('reply.wav', ms)), TURN_MS);
      } else {
        if (process.env.VOQ_E2E_FRESH_DIST === '1') {
          await page.route(/\/(app\.js)?(\?.*)?$/, (route) => {
            const file = new URL(route.request().url()).pathname === '/app.js' ? 'app.js' : 'index.html';
            route.fulfill({ body: readFileSync(path.join(web, 'dist', file)), contentType: file === 'app.js' ? 'text/javascript' : 'text/html' });
          });
        }
        const aec = playback === 'aec0' ? '&aec=0' : '';
        await page.goto(`${base}?transport=webtransport&codec=opus&autostart=1&turn_ms=500&talk_during_reply_ms=${TURN_MS}&timeout_ms=40000${aec}`);
        // (Not `window.voq?.done` itself: waitForFunction would wait for the promise.)
        await page.waitForFunction(() => window.voq?.done !== undefined, null, { timeout: 10000 });
      }
      // The user speaks once SPEAK_AFTER_MS of the double-talk turn are captured.
      const turnIndex = playback === 'webrtc' ? 0 : 1;
      await until(30000, `${SPEAK_AFTER_MS} ms of the turn during the reply (${name})`, () =>
        page.evaluate(
          ([i, frames]) => {
            const c = window.echo?.client ?? window.voq?.client;
            return (c?.session.turns[i]?.framesSent ?? 0) >= frames;
          },
          [turnIndex, SPEAK_AFTER_MS / 20],
        ),
      );
      const speakAt = Date.now();
      speaker = spawn(PULSE.paplay, ['-d', 'user', PROMPT], { env: pulse.env, stdio: 'ignore' });
      const outcome = await page.evaluate(() => (window.echo ?? window.voq).done);
      const detail = () => `${name}: ${JSON.stringify(outcome, null, 1)}\nconsole:\n${console.join('\n')}`;
      await page.screenshot({ path: path.join(RESULTS, `${name}.png`), fullPage: true });
      assert.ok(outcome.ok, `the call did not complete: ${detail()}`);
      assert.ok(outcome.duringReply, `no turn during the reply: is the page compiled into ${VOQ_BIN} current? (VOQ_E2E_FRESH_DIST=1 serves web/dist) ${detail()}`);
      const stats = outcome.stats;
      assert.equal(stats.echoLoopback, playback === 'voq' ? 'active' : 'off', detail());
      const itemId = outcome.duringReply.committed.item_id;
      // The output device's latency as the page's AudioContext reports it (the barge-in position
      // subtracts it too: web/README.md). A private field, read for the figure only.
      const latency = await page.evaluate(async () => {
        const ctx = await window.voq?.client?.audioIO?.ctx;
        return ctx ? { outputMs: Math.round(ctx.outputLatency * 1000), baseMs: Math.round(ctx.baseLatency * 1000) } : null;
      });
      await exited(speaker);
      const micRec = await mic.stop();
      const wav = path.join(tmp, 'record', stats.sessionId, `${itemId}.wav`);
      const rec = (await readRecording(path.join(tmp, 'record'), stats.sessionId, itemId)).rec.samples;
      if (process.env.VOQ_E2E_KEEP) writeWav(path.join(tmp, `${name}-mic.wav`), micRec.samples, RATE);
      const m = measure({ mic: micRec, rec, speakAt, prompt });
      const r = { playback, run: runIndex, ...m, loopbackLatencyMs: stats.loopbackLatencyMs ?? null, outputLatencyMs: latency?.outputMs ?? null, recording: process.env.VOQ_E2E_KEEP ? wav : undefined };
      process.stdout.write(`# echo: ${JSON.stringify(r)}\n`);
      results.push(r);
      return r;
    } finally {
      speaker?.kill('SIGKILL');
      mic.kill();
      await browser.close();
    }
  }

  // What holds whatever the load (2-core machine, other builds and browser tests running): the
  // room worked (the echo reached the microphone, the prompt is where the test played it, in the
  // mic and in the recording), the user's voice survives double talk, and voq's path cancels.
  // Not asserted: that voq's path beats aec=0 — it does not in this Chromium, whose Chrome-wide
  // echo cancellation also takes Web Audio's output as its reference (web/README.md) — and the
  // energy ERLE, which a single re-convergence burst under load can pull down to ~0 dB on any path.
  for (let i = 0; i < RUNS; i++) {
    test(`echo, run ${i + 1}: voq loopback, plain Web Audio (aec=0), WebRTC call`, { timeout: 150000 }, async () => {
      const runs = [await call('voq', i), await call('aec0', i), await call('webrtc', i)];
      for (const r of runs) {
        const detail = JSON.stringify(r);
        // The reply is at −21 dBFS, the echo path −6 dB: −29…−27.6 dBFS measured.
        assert.ok(r.echoAtMicDbfs > -40, `${r.playback}: the echo at the microphone is only ${r.echoAtMicDbfs} dBFS: ${detail}`);
        // The prompt in the mic copy (with the echo over it: 0.66–0.98 measured) and in the
        // recording where the test played it (SPEAK_AFTER_MS, plus paplay's start: +86…+300 ms).
        assert.ok(r.speechCorrMic >= 0.5, `${r.playback}: the prompt is not found in the microphone's signal: ${detail}`);
        assert.ok(r.speechAtMs >= SPEAK_AFTER_MS && r.speechAtMs <= SPEAK_AFTER_MS + 1500, `${r.playback}: the prompt is at ${r.speechAtMs} ms of the turn, not after ${SPEAK_AFTER_MS} ms: ${detail}`);
        // Double talk: the canceller must not take the user's voice for echo. Correlation with
        // the prompt 0.28–0.71 and its level −6.7…+1.9 dB from the mic's, measured (AGC, NS and
        // the residual echo in between); gated away it would be ~0 and −40 dB or less.
        assert.ok(r.speechCorrRec >= 0.15, `${r.playback}: the user's speech is hardly in the recording: ${detail}`);
        assert.ok(r.speechGainDb >= -15, `${r.playback}: the user's speech lost ${-r.speechGainDb} dB: ${detail}`);
      }
      if (!process.env.ECHO_DISABLE_FEATURES) {
        // voq's path cancels: in the canceller's usual state (median 100 ms window) more than
        // ERLE_MIN_DB of the echo is gone.
        const [voq] = runs;
        assert.ok(voq.erleMedianDb >= ERLE_MIN_DB, `voq's playback: median ERLE ${voq.erleMedianDb} dB < ${ERLE_MIN_DB} dB: ${JSON.stringify(voq)}`);
      }
    });
  }
});

/** Per playback: min, median and max of each figure over the runs. */
function summarize(results) {
  const out = {};
  for (const r of results) {
    out[r.playback] ??= {};
    for (const [k, v] of Object.entries(r)) if (typeof v === 'number' && k !== 'run') (out[r.playback][k] ??= []).push(v);
  }
  for (const p of Object.values(out)) {
    for (const [k, v] of Object.entries(p)) {
      v.sort((a, b) => a - b);
      p[k] = v.length === 1 ? v[0] : [v[0], v[v.length >> 1], v[v.length - 1]];
    }
  }
  return out;
}

// The WebRTC-call page (bundled by esbuild in before()): the reply as a remote track.
const WEBRTC_PAGE_SCRIPT = `
import { VoqClient } from '@voq/client';

async function playAsRemoteTrack(url: string): Promise<{ stop(): void }> {
  const ctx = new AudioContext({ sampleRate: 48000 });
  const buffer = await ctx.decodeAudioData(await (await fetch(url)).arrayBuffer());
  const source = ctx.createBufferSource();
  source.buffer = buffer;
  const dest = ctx.createMediaStreamDestination();
  source.connect(dest);
  const pc1 = new RTCPeerConnection();
  const pc2 = new RTCPeerConnection();
  pc1.onicecandidate = (e) => { if (e.candidate) void pc2.addIceCandidate(e.candidate); };
  pc2.onicecandidate = (e) => { if (e.candidate) void pc1.addIceCandidate(e.candidate); };
  const track = new Promise<MediaStreamTrack>((resolve) => { pc2.ontrack = (e) => resolve(e.track); });
  pc1.addTrack(dest.stream.getAudioTracks()[0]!, dest.stream);
  await pc1.setLocalDescription(await pc1.createOffer());
  await pc2.setRemoteDescription(pc1.localDescription!);
  await pc2.setLocalDescription(await pc2.createAnswer());
  await pc1.setRemoteDescription(pc2.localDescription!);
  const element = new Audio();
  element.srcObject = new MediaStream([await track]);
  await element.play();
  await new Promise<void>((resolve) => {
    const check = () => { if (pc2.connectionState === 'connected') resolve(); };
    pc2.onconnectionstatechange = check;
    check();
  });
  source.start();
  return { stop() { source.stop(); element.pause(); pc1.close(); pc2.close(); void ctx.close(); } };
}

async function run(replyUrl: string, turnMs: number) {
  const client = new VoqClient({ transport: 'webtransport', codec: 'opus', echoCancellationLoopback: false });
  echo.client = client;
  await client.start();
  const playing = await playAsRemoteTrack(replyUrl);
  const ended = client.once('input.turn_ended');
  client.startTurn({ durationMs: turnMs });
  const turn = await ended;
  let committed: { item_id: string } | null = null;
  while (!committed) {
    const e = await client.once('input_audio_buffer.committed');
    if (e.item_id === turn.item_id) committed = e;
  }
  const stats = client.stats();
  playing.stop();
  await client.close();
  return { ok: true, duringReply: { turn, committed }, stats };
}

const echo: { client: VoqClient | null; run: typeof run; done?: unknown } = { client: null, run };
(window as unknown as { echo: typeof echo }).echo = echo;
`;
