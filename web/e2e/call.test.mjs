// The browser test: real Chromium (Debian's /usr/bin/chromium, driven by playwright-core) loads
// the demo page from `voq serve`, speaks testdata/audio/prompt-carwash-24k.wav into its fake
// microphone, makes a push-to-talk call to the echo agent, and plays the reply.
//
// For each call it checks
//   (a) the user turn the server recorded (--record) is what the page captured (the page keeps
//       a copy, keep_capture=1): sample for sample with pcm16; with Opus one look-ahead frame
//       longer, 156 samples behind, normalized correlation ≥ 0.9. And, more loosely (the fake
//       microphone's way into the page varies with load: a start missing, 10 ms glitches),
//       that it is the prompt: windowed correlation ≥ 0.7, the speech ending where the
//       prompt's does (±60 ms);
//   (b) the page played the reply: response.done completed, played_ms about the turn's length,
//       no errors.
// Timing bounds are only where the machine's load cannot reach them; each says why.
// Calls: WebTransport (Opus); WebSocket (pcm16, Web Audio capture); auto with WebTransport
// hidden from the page (the fallback); a barge-in against the file agent; a call whose server is
// killed (kill -9) mid-turn and taken back by another on the same port. Errors: a stale
// certificate hash, the microphone denied, the server stopped, the server not answering — each
// must fail with its VoqError code and a plain-words status line. Screenshots go to
// web/test-results/.
//
// Environment: VOQ_BIN (default ../target/debug/voq from web/), CHROMIUM (default
// /usr/bin/chromium), VOQ_E2E_FRESH_DIST=1 serves web/dist/ instead of the page compiled into
// the binary (for working on the page without rebuilding voq).
import { createServer } from 'node:net';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { bestAlignment, compareExact, readWav, speechBounds, windowedCorrelation, writeWav } from './audio.mjs';
import { CHROMIUM, RESULTS, VOQ_BIN, checkPlayback, freePort, metric, readRecording, repo, startServer, until, web } from './harness.mjs';

const PROMPT = path.join(repo, 'testdata/audio/prompt-carwash-24k.wav');
const REPLY = path.join(repo, 'testdata/audio/reply-carwash-24k.wav');
const TURN_MS = 3200;

const missing = !existsSync(CHROMIUM)
  ? `${CHROMIUM} is missing (apt-get install chromium); the browser test needs it`
  : !existsSync(VOQ_BIN)
    ? `${VOQ_BIN} is missing (cargo build -p voq, or set VOQ_BIN)`
    : null;

describe('browser call', { skip: missing ?? false }, () => {
  let chromium;
  let server;
  let base;
  let fileServer;
  let fileBase;
  let tmp;
  let micFile;
  let reference;

  before(async () => {
    ({ chromium } = await import('playwright-core'));
    tmp = mkdtempSync(path.join(tmpdir(), 'voq-e2e-'));
    mkdirSync(RESULTS, { recursive: true });
    // Chromium's fake microphone loops its file: the prompt followed by 3 s of silence makes
    // one 3.2 s turn hold the whole prompt and nothing of its repetition.
    const prompt = readWav(PROMPT);
    assert.equal(prompt.rate, 24000);
    reference = new Float32Array(prompt.samples.length + 3 * 24000);
    reference.set(prompt.samples);
    micFile = path.join(tmp, 'mic.wav');
    writeWav(micFile, reference, 24000);
    server = startServer(path.join(tmp, 'record'));
    fileServer = startServer(path.join(tmp, 'record-file'), `file:${REPLY}`);
    [base, fileBase] = await Promise.all([server.url, fileServer.url]);
  });

  after(() => {
    server?.proc.kill('SIGTERM');
    fileServer?.proc.kill('SIGTERM');
    if (tmp && !process.env.VOQ_E2E_KEEP) rmSync(tmp, { recursive: true, force: true });
  });

  async function call(name, query, at = base) {
    const browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: [
        '--no-sandbox',
        '--autoplay-policy=no-user-gesture-required',
        '--use-fake-ui-for-media-stream',
        '--use-fake-device-for-media-stream',
        `--use-file-for-fake-audio-capture=${micFile}`,
        // A page fulfilled by the test (VOQ_E2E_FRESH_DIST) has no IP address space, so Local
        // Network Access would block its connections to 127.0.0.1.
        ...(process.env.VOQ_E2E_FRESH_DIST === '1' ? ['--disable-features=LocalNetworkAccessChecks'] : []),
      ],
    });
    try {
      const page = await browser.newPage({ viewport: { width: 960, height: 900 } });
      const console = [];
      page.on('console', (m) => console.push(`${m.type()}: ${m.text()}`));
      page.on('pageerror', (e) => console.push(`pageerror: ${e.message}`));
      if (process.env.VOQ_E2E_FRESH_DIST === '1') {
        await page.route(/\/(app\.js)?(\?.*)?$/, (route) => {
          const u = new URL(route.request().url());
          const file = u.pathname === '/app.js' ? 'app.js' : 'index.html';
          route.fulfill({
            body: readFileSync(path.join(web, 'dist', file)),
            contentType: file === 'app.js' ? 'text/javascript' : 'text/html',
          });
        });
      }
      await page.goto(`${at}?${query}&autostart=1&turn_ms=${TURN_MS}&keep_capture=1`);
      await page.waitForFunction(() => window.voq?.done, null, { timeout: 10000 }).catch(() => {
        throw new Error(`the page did not start (no window.voq): is the page compiled into ${VOQ_BIN} current? (VOQ_E2E_FRESH_DIST=1 serves web/dist)\n${console.join('\n')}`);
      });
      const outcome = await page.evaluate(() => window.voq.done);
      const events = await page.evaluate(() => window.voq.events.map((e) => ({ t: e.t, type: e.type, event: e.event })));
      // The page's own copy of what it captured (keep_capture=1): the push-to-talk turn, which
      // the server must hold exactly, or server VAD's one continuous stream.
      const itemId = outcome.turn?.item_id ?? events.find((e) => e.type === 'input.turn_started')?.event.item_id;
      const captured = itemId ? await page.evaluate((id) => window.voq.captured?.(id) ?? null, itemId) : null;
      await page.waitForTimeout(200); // let the meters settle for the picture
      await page.screenshot({ path: path.join(RESULTS, `${name}.png`), fullPage: true });
      return { outcome, events, console, captured: captured && Int16Array.from(captured) };
    } finally {
      await browser.close();
    }
  }

  /**
   * (a): the recorded user turn against what the page captured (exact for pcm16, Opus-close for
   * opus), and against the prompt (looser: the fake microphone's path into the page glitches
   * under load, which is Chromium's, not voq's).
   */
  async function checkRecording(sessionId, itemId, captured, codec, dir = path.join(tmp, 'record')) {
    const { rec } = await readRecording(dir, sessionId, itemId);
    const recMs = (rec.samples.length * 1000) / 24000;
    const vsCapture = { capturedSamples: captured.length, recordedSamples: rec.pcm.length };
    if (codec === 'pcm16') {
      Object.assign(vsCapture, compareExact(rec.pcm, captured));
    } else {
      const cap = Float32Array.from(captured, (x) => x / 32768);
      const { lag, corr } = bestAlignment(cap, rec.samples, 960);
      Object.assign(vsCapture, { lag, corr: Number(corr.toFixed(4)) });
    }
    const p = speechBounds(reference, 24000);
    const r = speechBounds(rec.samples, 24000);
    const promptSpeechMs = ((p.end - p.start) * 1000) / 24000;
    const recSpeechMs = ((r.end - r.start) * 1000) / 24000;
    const { lag, corr } = bestAlignment(reference, rec.samples, 12000);
    const w = windowedCorrelation(reference, rec.samples, lag, 24000);
    return {
      recMs,
      vsCapture,
      promptSpeechMs,
      recSpeechMs,
      // recorded[i] ≈ prompt[i + lag]: a positive lag is prompt audio missing at the start.
      lagMs: Number(((lag * 1000) / 24000).toFixed(1)),
      firstWindowLagMs: Number((((w.lags[0] ?? lag) * 1000) / 24000).toFixed(1)),
      // Where the speech ends against the prompt, at the alignment of the last window that
      // agrees with the one before it (a weak stretch can lock a window onto a wrong lag).
      speechEndErrMs: Number((((r.end + (w.lags.findLast((l, k) => k > 0 && Math.abs(l - w.lags[k - 1]) <= 24) ?? lag) - p.end) * 1000) / 24000).toFixed(1)),
      recSpeechStartMs: (r.start * 1000) / 24000,
      lags: w.lags,
      globalCorr: Number(corr.toFixed(3)),
      corr: Number(w.corr.toFixed(3)),
      captureGlitches: w.glitches,
    };
  }

  const calls = [
    { name: 'webtransport-opus', query: 'transport=webtransport&codec=opus', transport: 'webtransport', codec: 'opus', capture: 'track-processor' },
    // The Web Audio capture path (the fallback where MediaStreamTrackProcessor is missing).
    { name: 'websocket-pcm16', query: 'transport=websocket&codec=pcm16&capture=worklet', transport: 'websocket', codec: 'pcm16', capture: 'worklet' },
    { name: 'auto-fallback-websocket', query: 'transport=auto&codec=opus&disable_webtransport=1', transport: 'websocket', codec: 'opus', capture: 'track-processor' },
  ];

  for (const c of calls) {
    test(c.name, { timeout: 90000 }, async () => {
      const r = await call(c.name, c.query);
      const committed = checkPlayback(c.name, r, TURN_MS);
      assert.equal(r.outcome.stats.inputCodec, c.codec);
      assert.equal(r.outcome.stats.captureMethod, c.capture);
      assert.equal(r.outcome.stats.transport, c.transport, `won by ${r.outcome.stats.transport}`);
      // Echo cancellation: the reply went through the local peer-connection loopback (what
      // Chrome's canceller uses as its reference), and its delay was measured. Whether the
      // canceller then removes the echo needs a real speaker and microphone (web/README.md).
      assert.equal(r.outcome.stats.echoLoopback, 'active', `echo loopback: ${r.outcome.stats.echoLoopback}`);
      assert.ok(typeof r.outcome.stats.loopbackLatencyMs === 'number', 'the loopback delay was measured');
      // An RTT on every carrier: WebSocket from the mux PINGs, WebTransport from voq.ping. The
      // bound only says it is a loopback figure, not a timeout or garbage: 4–65 ms measured,
      // up to 93 ms under load (a ping queues behind the page's and the server's work); 1 s is
      // far beyond either.
      const rtt = r.outcome.stats.rttMs;
      assert.ok(typeof rtt === 'number' && rtt >= 0 && rtt < 1000, `rttMs ${rtt} over ${c.transport}`);
      if (c.name.startsWith('auto')) {
        const connected = r.events.find((e) => e.type === 'transport.connected').event;
        assert.deepEqual(
          connected.attempts.map((a) => [a.transport, a.result]),
          [
            ['webtransport', 'unavailable'],
            ['websocket', 'won'],
          ],
        );
      }
      assert.ok(r.captured, `the page kept no copy of ${committed.item_id} (keep_capture=1): is the page compiled into ${VOQ_BIN} current? (VOQ_E2E_FRESH_DIST=1 serves web/dist)`);
      const rec = await checkRecording(r.outcome.stats.sessionId, committed.item_id, r.captured, c.codec);
      process.stdout.write(`# ${c.name}: ${JSON.stringify({ ...rec, playedMs: r.outcome.playback.played_ms, connectMs: r.outcome.stats.connectMs, rttMs: rtt, echoLoopback: r.outcome.stats.echoLoopback })}\n`);
      // What voq guarantees: the server holds exactly what the page captured and sent. This is
      // exact whatever the machine's load, so it is checked exactly.
      const vs = rec.vsCapture;
      if (c.codec === 'pcm16') {
        assert.ok(vs.equal, `the server's recording differs from what the page captured: ${JSON.stringify(vs)}`);
      } else {
        // Opus: the server decodes what the page encoded. The encoder's flush turns its 6.5 ms
        // look-ahead into one more 20 ms packet (160 captured frames → 161 sent), and the
        // decoded audio runs 156 samples (6.5 ms) behind the captured audio. Correlation at
        // that alignment, measured on this 2-core machine: 0.949–0.974 over 18 calls in 9 suite
        // runs, 3 of them loaded (two `yes` loops and/or a cargo build competing); lag −155
        // every time. A lost, repeated or misplaced frame drops it far lower (and changes the
        // length or the lag).
        assert.equal(vs.recordedSamples, vs.capturedSamples + 480, `recorded ${vs.recordedSamples} samples, captured ${vs.capturedSamples} (+ one look-ahead frame): ${JSON.stringify(vs)}`);
        assert.ok(Math.abs(vs.lag + 156) <= 4, `the recording is ${-vs.lag} samples behind the capture, not the encoder's 156: ${JSON.stringify(vs)}`);
        assert.ok(vs.corr >= 0.9, `recorded turn vs the page's capture: normalized correlation ${vs.corr} < 0.9 (${JSON.stringify(vs)})`);
      }
      // Looser: the capture is the prompt. Chromium's path from the fake microphone into the
      // page is outside voq and varies with load: its file starts playing before the page reads
      // the track (−37…+168 ms of the prompt missing at the start over 27 calls; a 60 ms bound
      // would have failed 9 of them), it drops or inserts 10 ms buffers (captureGlitches, which
      // also counts a window that locked onto a wrong lag: 0–5 per turn), and its noise
      // suppression and AGC shape the audio. So neither the missing start nor the glitches are
      // asserted (both are printed above). Windowed correlation (each 200 ms window aligned on
      // its own, glitches left out): 0.795–0.881 over 27 calls, loaded or not.
      assert.ok(rec.corr >= 0.7, `recorded turn vs prompt: normalized correlation ${rec.corr} < 0.7 (${JSON.stringify(rec)})`);
      // The speech ends where the prompt's does, at the alignment in force at the end (which
      // absorbs a missing start and any glitches): nothing of the prompt was lost or added
      // between the first captured sample and the end of speech. Measured −1.7…+14.4 ms over
      // 27 calls, with or without glitches (the speech length itself varied by 180 ms).
      assert.ok(Math.abs(rec.speechEndErrMs) <= 60, `the speech in the recorded turn ends ${rec.speechEndErrMs} ms off the prompt's (${JSON.stringify(rec)})`);
    });
  }

  // Server VAD: one continuous stream from the start; the server finds the prompt's end,
  // commits and answers (auto transport: WebTransport wins on loopback).
  test('server VAD (auto)', { timeout: 90000 }, async () => {
    const r = await call('server-vad-auto', 'mode=server_vad&transport=auto&codec=opus');
    const detail = () => `${JSON.stringify(r.outcome, null, 1)}\n${r.console.join('\n')}`;
    assert.ok(r.outcome.ok, detail());
    const types = r.events.map((e) => e.type);
    for (const t of ['input_audio_buffer.speech_started', 'input_audio_buffer.speech_stopped', 'input_audio_buffer.committed', 'playback.started']) {
      assert.ok(types.includes(t), `no ${t}: ${detail()}`);
    }
    // The server may cut the prompt at a pause into more than one turn; it answers the last one
    // committed before its response. Together they hold the speech the page captured: the
    // prompt's 2.37 s less what Chromium's fake microphone played before the page read it
    // (load-dependent, up to 168 ms in our runs), so the bound comes from the page's copy of
    // its stream, not from the file. The first 3 s of the stream hold the prompt once (it
    // repeats after 5.8 s). Measured: one turn of 2760–2900 ms (the VAD's padding included)
    // for 2260–2370 ms of captured speech.
    assert.ok(r.captured, `the page kept no copy of its stream (keep_capture=1): ${detail()}`);
    const sp = speechBounds(Float32Array.from(r.captured.subarray(0, 3 * 24000), (x) => x / 32768), 24000);
    const capturedSpeechMs = ((sp.end - sp.start) * 1000) / 24000;
    const created = r.events.findIndex((e) => e.type === 'response.created');
    const commits = r.events.slice(0, created).filter((e) => e.type === 'input_audio_buffer.committed').map((e) => e.event);
    const committed = commits.at(-1);
    const total = commits.reduce((n, c) => n + c.voq.audio_ms, 0);
    process.stdout.write(`# server-vad: ${JSON.stringify({ turns: commits.length, committedMs: total, capturedSpeechMs, playedMs: r.outcome.playback?.played_ms, transport: r.outcome.stats.transport })}\n`);
    assert.ok(total >= capturedSpeechMs - 70, `committed ${total} ms in ${commits.length} turns of ${capturedSpeechMs} ms of captured speech: ${detail()}`);
    // The echo plays all of the turn it answers.
    assert.ok(r.outcome.playback.played_ms >= committed.voq.audio_ms - 100, detail());
    assert.equal(r.events.filter((e) => e.type === 'error' || e.type === 'client.error').length, 0, detail());
  });

  // Barge-in against the file agent (a 16 s reply sent ahead of playback): the page silences
  // the reply, the server cuts it where the user stopped hearing it.
  test('barge-in (webtransport, file agent)', { timeout: 90000 }, async () => {
    const INTERRUPT_AFTER = 1500;
    const replyMs = (readWav(REPLY).samples.length * 1000) / 24000;
    const r = await call('barge-in-webtransport', `transport=webtransport&codec=opus&interrupt_after_ms=${INTERRUPT_AFTER}`, fileBase);
    const detail = () => JSON.stringify(r.outcome, null, 1);
    assert.ok(r.outcome.ok, `barge-in failed: ${detail()}\n${r.console.join('\n')}`);
    const { heard, truncated, stats } = r.outcome.interrupt;
    const { stallMs, loopbackLatencyMs } = r.outcome.stats;
    process.stdout.write(`# barge-in: ${JSON.stringify({ heard, truncated: truncated.audio_end_ms, unplayedBytes: stats.unplayedBytes, transport: r.outcome.stats.transport, stallMs, loopbackLatencyMs })}\n`);
    // The page cut the reply in the middle (the server agrees to the ms, below). The page's
    // timer waited INTERRUPT_AFTER ms after it saw playback start, and playback started before
    // the page saw it, so the played cursor is at least that, less what the client subtracts on
    // purpose (the echo loopback's delay, what the ear is behind) and any stall; 300 ms of
    // slack for the audio clock of a starved headless Chromium running behind the wall clock.
    // Nothing bounds it from above but the reply's end: how late the timer fires and how late
    // the page learns that playback started both grow with load. Measured: 1446–1495 ms, with
    // a 48–78 ms loopback delay and no stall, loaded or not.
    assert.ok(heard >= INTERRUPT_AFTER - (loopbackLatencyMs ?? 0) - stallMs - 300, `heard ${heard} ms: ${detail()}`);
    assert.ok(heard < replyMs, `heard ${heard} ms of a ${replyMs} ms reply: ${detail()}`);
    assert.equal(truncated.audio_end_ms, heard);
    assert.equal(r.outcome.response.response.status, 'cancelled');
    // Audio was sent ahead and thrown away unplayed: what send-ahead costs a barge-in.
    assert.ok(stats.unplayedBytes > 0, detail());
    const ended = r.events.find((e) => e.type === 'playback.ended')?.event;
    assert.equal(ended?.reason, 'interrupted');
    assert.equal(ended?.played_ms, heard);
  });

  // A call outlives its server (issue #15): `kill -9` of `voq serve` a second into the page's
  // turn; another `voq serve` on the same port with the same session store (file:) takes the
  // session back. The page's client resumes it: the turn goes on from what the store held, under
  // the same item id, and the new server's recording is what the page captured, exactly.
  // WebSocket, so that the new server's own development certificate needs no new hash.
  test('a call outlives its server (kill -9, websocket)', { timeout: 90000 }, async () => {
    const port = await freePort();
    const metricsPort = await freePort();
    const store = path.join(tmp, 'sessions.redb');
    const [recA, recB] = [path.join(tmp, 'record-resume-a'), path.join(tmp, 'record-resume-b')];
    const extra = ['--session-store', `file:${store}`, '--metrics', `127.0.0.1:${metricsPort}`];
    const a = startServer(recA, 'echo', extra, `127.0.0.1:${port}`);
    let b = null;
    try {
      const at = await a.url;
      const calling = call('resume-kill9-websocket', 'transport=websocket&codec=pcm16&capture=worklet', at);
      // A second of the turn reached the server, and a snapshot of it the store.
      await until(20000, 'a second of the turn at the server', async () => (await metric(metricsPort, 'voq_prompt_frames_total')) >= 50);
      const saved = await metric(metricsPort, 'voq_store_requests_total');
      await until(5000, 'a snapshot in the store', async () => (await metric(metricsPort, 'voq_store_requests_total')) >= saved + 2);
      const exited = new Promise((resolve) => a.proc.once('exit', resolve));
      a.proc.kill('SIGKILL');
      await exited;
      b = startServer(recB, 'echo', extra, `127.0.0.1:${port}`);
      await b.url;
      const r = await calling;
      const committed = checkPlayback('resume-kill9-websocket', r, TURN_MS);
      const types = r.events.map((e) => e.type);
      assert.ok(types.includes('transport.reconnecting'), `no reconnect: ${types.join(' ')}`);
      const resumed = r.events.find((e) => e.type === 'voq.session.resumed')?.event;
      assert.ok(resumed, `the session was not resumed: ${types.join(' ')}\n${b.log()}`);
      const held = resumed.voq.turns.find((t) => t.item_id === committed.item_id);
      assert.ok(held && held.held_pts >= 50 * 480, `the store held ${JSON.stringify(resumed.voq.turns)}`);
      assert.equal(resumed.session.id, r.outcome.stats.sessionId);
      const rec = await checkRecording(r.outcome.stats.sessionId, committed.item_id, r.captured, 'pcm16', recB);
      process.stdout.write(`# resume-kill9-websocket: ${JSON.stringify({ heldMs: held.held_pts / 24, recMs: rec.recMs, playedMs: r.outcome.playback.played_ms })}\n`);
      assert.ok(rec.vsCapture.equal, `the new server's recording differs from what the page captured: ${JSON.stringify(rec.vsCapture)}`);
    } finally {
      a.proc.kill('SIGKILL');
      b?.proc.kill('SIGTERM');
    }
  });

  // The page works with every built-in agent: they differ only in what comes back. echo and
  // file are above; speak (espeak-ng says how long the user spoke) and exec (a Python program
  // speaking JSON lines) here, over auto.
  for (const [name, agent] of [
    ['speak-agent', 'speak'],
    ['exec-agent', `exec:python3 ${path.join(repo, 'examples/agents/echo_agent.py')}`],
  ]) {
    test(`${name} (auto)`, { timeout: 90000 }, async () => {
      const agentServer = startServer(path.join(tmp, `record-${name}`), agent);
      try {
        const r = await call(name, 'transport=auto&codec=opus', await agentServer.url);
        const detail = () => JSON.stringify(r.outcome, null, 1);
        assert.ok(r.outcome.ok, `${name}: ${detail()}\n${agentServer.log()}`);
        assert.equal(r.outcome.response.response.status, 'completed', detail());
        assert.equal(r.outcome.playback.reason, 'finished', detail());
        assert.ok(r.outcome.playback.played_ms >= 1000, `only ${r.outcome.playback.played_ms} ms of the reply played`);
        assert.equal(r.events.filter((e) => e.type === 'error' || e.type === 'client.error').length, 0, detail());
      } finally {
        agentServer.proc.kill('SIGTERM');
      }
    });
  }
});

describe('browser errors', { skip: missing ?? false }, () => {
  let chromium;
  let server;
  let base;
  let tmp;
  const stopped = []; // servers the tests stop themselves (killed here too if a test failed first)
  before(async () => {
    ({ chromium } = await import('playwright-core'));
    tmp = mkdtempSync(path.join(tmpdir(), 'voq-e2e-'));
    mkdirSync(RESULTS, { recursive: true });
    server = startServer(path.join(tmp, 'record'));
    base = await server.url;
  });
  after(() => {
    server?.proc.kill('SIGTERM');
    for (const s of stopped) s.proc.kill('SIGTERM');
    rmSync(tmp, { recursive: true, force: true });
  });

  /**
   * A headless Chromium with the fake microphone device. `micPrompt: 'accept'` adds
   * --use-fake-ui-for-media-stream (every getUserMedia is granted); without it the permission
   * decides.
   */
  function launch({ micPrompt = 'accept' } = {}) {
    return chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: [
        '--no-sandbox',
        '--autoplay-policy=no-user-gesture-required',
        ...(micPrompt === 'accept' ? ['--use-fake-ui-for-media-stream'] : []),
        '--use-fake-device-for-media-stream',
        // As in call(): a page the test fulfils itself would otherwise be kept from 127.0.0.1.
        ...(process.env.VOQ_E2E_FRESH_DIST === '1' ? ['--disable-features=LocalNetworkAccessChecks'] : []),
      ],
    });
  }

  /** A page (in a context made with `contextOptions`) that serves web/dist under VOQ_E2E_FRESH_DIST=1. */
  async function newPage(browser, contextOptions = {}) {
    const context = await browser.newContext(contextOptions);
    const page = await context.newPage();
    if (process.env.VOQ_E2E_FRESH_DIST === '1') {
      await page.route(/\/(app\.js)?(\?.*)?$/, (route) => {
        const file = new URL(route.request().url()).pathname === '/app.js' ? 'app.js' : 'index.html';
        route.fulfill({ body: readFileSync(path.join(web, 'dist', file)), contentType: file === 'app.js' ? 'text/javascript' : 'text/html' });
      });
    }
    return page;
  }

  /** The `client.error`s the page logged: the VoqErrors `start()` rejected with, as the page saw them. */
  function clientErrors(page) {
    return page.evaluate(() =>
      window.voq.events
        .filter((e) => e.type === 'client.error')
        .map((e) => {
          const err = e.event.error;
          const classes = [];
          for (let c = err?.constructor; c && c !== Error; c = Object.getPrototypeOf(c)) classes.push(c.name);
          return { t: e.t, code: err.code, name: err.name, message: err.message, classes };
        }),
    );
  }

  // A page holding a stale certificate hash (the server restarted): the user is told in plain
  // words, with the `certificate` code.
  test('wrong certificate hash', { timeout: 60000 }, async () => {
    const browser = await launch();
    try {
      const page = await newPage(browser);
      await page.route('**/voq/config.json', async (route) => {
        const res = await route.fetch();
        const config = await res.json();
        config.webtransport.certificate_hashes = [{ algorithm: 'sha-256', value: '00'.repeat(32) }];
        await route.fulfill({ response: res, json: config });
      });
      // The page fetches its config (not the one voq serve embeds) so that the route can alter it.
      await page.goto(`${base}?transport=webtransport&config=fetch&autostart=1&turn_ms=500&timeout_ms=20000`);
      await page.waitForFunction(() => window.voq?.done, null, { timeout: 10000 });
      const outcome = await page.evaluate(() => window.voq.done);
      const status = await page.textContent('#status');
      await page.screenshot({ path: path.join(RESULTS, 'wrong-certificate.png') });
      assert.equal(outcome.ok, false);
      assert.equal(outcome.error.code, 'certificate', JSON.stringify(outcome));
      assert.match(status, /certificate did not match/);
    } finally {
      await browser.close();
    }
  });

  // The user blocked the microphone for the site. Two things are needed for a real denial in
  // headless Chromium 156: no --use-fake-ui-for-media-stream (that switch grants getUserMedia
  // even when the permission says `denied`), and a context whose permissions list is given but
  // omits `microphone` (playwright then sets it to `denied`, as the site settings would). The
  // fake device stays, so what fails is the permission, not a missing microphone. (Without the
  // context option the permission is `prompt` and headless Chromium dismisses the prompt, which
  // also rejects with NotAllowedError — nothing hangs either way.)
  test('microphone denied', { timeout: 60000 }, async () => {
    const browser = await launch({ micPrompt: 'none' });
    try {
      const page = await newPage(browser, { permissions: [] });
      await page.goto(`${base}?transport=auto&autostart=1&turn_ms=500&timeout_ms=20000`);
      await page.waitForFunction(() => window.voq?.done, null, { timeout: 10000 });
      assert.equal(await page.evaluate(() => navigator.permissions.query({ name: 'microphone' }).then((p) => p.state)), 'denied');
      const outcome = await page.evaluate(() => window.voq.done);
      const errors = await clientErrors(page);
      const status = await page.textContent('#status');
      await page.screenshot({ path: path.join(RESULTS, 'microphone-denied.png') });
      const detail = JSON.stringify({ outcome, errors, status }, null, 1);
      assert.equal(outcome.ok, false, detail);
      assert.equal(outcome.error.code, 'mic_denied', detail);
      assert.match(outcome.error.message, /microphone access was denied .*allow the microphone/, detail);
      // start() rejected with a VoqError (a MicrophoneError), and only that went wrong.
      assert.equal(errors.length, 1, detail);
      assert.equal(errors[0].code, 'mic_denied', detail);
      assert.deepEqual(errors[0].classes, ['MicrophoneError', 'VoqError'], detail);
      assert.match(status, /The microphone is blocked\. Allow it for this page/, detail);
      assert.equal(await page.getAttribute('#status', 'class'), 'status error');
      // Only that the page does not hang on a denied microphone: 0.2–0.5 s after load measured
      // (loaded or not); 15 s is 30 times that and still tells a hang from an answer.
      assert.ok(errors[0].t < 15000, `mic_denied after ${errors[0].t} ms: ${detail}`);
      process.stdout.write(`# microphone-denied: ${JSON.stringify({ errorAtMs: errors[0].t, message: errors[0].message })}\n`);
    } finally {
      await browser.close();
    }
  });

  /**
   * Loads the page from a server of its own, stops that server (waits for it to exit) and
   * returns the page; `then(port)` may take the port over before Connect is pressed.
   */
  async function pageOfStoppedServer(browser, name, then = async () => {}) {
    const gone = startServer(path.join(tmp, `record-${name}`));
    stopped.push(gone);
    const at = await gone.url;
    const page = await newPage(browser);
    // As a page that fetches its config: the first thing to fail is that fetch.
    await page.goto(`${at}?transport=auto&config=fetch`);
    await page.waitForFunction(() => window.voq, null, { timeout: 10000 });
    const exited = new Promise((resolve) => gone.proc.once('exit', resolve));
    gone.proc.kill('SIGTERM');
    await exited;
    await then(Number(new URL(at).port));
    return { page, origin: new URL(at).origin };
  }

  /** Presses Connect and waits (≤ 15 s) for the page's error: what start() rejected with. */
  async function connectFails(page, name) {
    const t0 = Date.now();
    await page.click('#connect');
    await page.waitForFunction(() => window.voq.events.some((e) => e.type === 'client.error'), null, { timeout: 15000, polling: 50 }).catch(async () => {
      throw new Error(`${name}: no error within 15 s of Connect; status: ${await page.textContent('#status')}`);
    });
    const elapsedMs = Date.now() - t0;
    await page.waitForTimeout(100); // the page hangs up after the error: let it settle for the picture
    const errors = await clientErrors(page);
    const status = await page.textContent('#status');
    const state = await page.evaluate(() => window.voq.client?.state);
    await page.screenshot({ path: path.join(RESULTS, `${name}.png`) });
    return { elapsedMs, errors, status, state };
  }

  function checkUnreachable(r, origin, page) {
    const detail = JSON.stringify(r, null, 1);
    assert.equal(r.errors.length, 1, detail);
    assert.equal(r.errors[0].code, 'unreachable', detail);
    assert.deepEqual(r.errors[0].classes, ['UnreachableError', 'VoqError'], detail);
    assert.ok(r.errors[0].message.startsWith(`cannot reach the voq server at ${origin}: GET /voq/config.json failed`), detail);
    assert.match(r.status, /Cannot reach the voq server\. Is `voq serve` running\?/, detail);
    assert.equal(r.state, 'closed', detail);
    return page.textContent('#connect').then((t) => assert.equal(t, 'Connect', 'the page hung up'));
  }

  // The page was loaded, then its server stopped: the connection is refused at once, and
  // Connect fails with `unreachable` in plain words.
  test('server stopped', { timeout: 60000 }, async () => {
    const browser = await launch();
    try {
      const { page, origin } = await pageOfStoppedServer(browser, 'stopped');
      const r = await connectFails(page, 'server-unreachable');
      await checkUnreachable(r, origin, page);
      process.stdout.write(`# server-stopped: ${JSON.stringify({ elapsedMs: r.elapsedMs, message: r.errors[0].message })}\n`);
    } finally {
      await browser.close();
    }
  });

  // The same, but something now holds the port and never answers (a hung server, a black
  // hole): nothing is refused, so only the client's own time limit (10 s for the config fetch)
  // ends the attempt — still `unreachable`, within 15 s.
  test('server not answering', { timeout: 60000 }, async () => {
    const browser = await launch();
    const sockets = new Set();
    let accepted = 0;
    const silent = createServer((s) => {
      accepted += 1;
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
    });
    try {
      const { page, origin } = await pageOfStoppedServer(browser, 'silent', (port) => new Promise((resolve, reject) => {
        silent.once('error', reject);
        silent.listen(port, '127.0.0.1', resolve);
      }));
      const r = await connectFails(page, 'server-not-answering');
      await checkUnreachable(r, origin, page);
      assert.ok(accepted > 0, `the page never dialed the silent port: ${JSON.stringify(r)}`);
      // A lower bound on a timer is safe under any load (timers fire late, never early); the
      // upper one is connectFails' 15 s wait: 10.2–10.4 s measured (loaded or not).
      assert.ok(r.elapsedMs >= 9000, `failed after ${r.elapsedMs} ms, before the 10 s time limit: ${JSON.stringify(r)}`);
      process.stdout.write(`# server-not-answering: ${JSON.stringify({ elapsedMs: r.elapsedMs, accepted, message: r.errors[0].message })}\n`);
    } finally {
      await browser.close();
      for (const s of sockets) s.destroy();
      silent.close();
    }
  });
});

if (missing) test('browser call', { skip: missing }, () => {});
