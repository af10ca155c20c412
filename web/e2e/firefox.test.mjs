// The browser test in Firefox: Debian's Firefox ESR (/usr/bin/firefox-esr), driven by
// puppeteer-core over WebDriver BiDi, loads the demo page from `voq serve` and makes the calls of
// call.test.mjs that Firefox can make, each in a fresh headless Firefox with a fresh profile.
//
// Firefox's fake microphone (media.navigator.streams.fake) plays a steady 1 kHz sine at −20 dBFS
// peak, not a file: there is no speech to compare with the prompt. So for each call it checks
//   (a) the user turn the server recorded (--record) is what the page captured (keep_capture=1):
//       sample for sample with pcm16; with Opus one look-ahead frame longer, at the encoder's
//       156 samples' delay, normalized correlation ≥ 0.9 (as in call.test.mjs); and that it is
//       the fake microphone's tone: starting within the turn's first 300 ms, 1000 ± 10 Hz, every
//       20 ms at its level (−23.0 dBFS RMS ± 0.5 dB, Opus ± 1.5 dB), with pcm16 no phase jump
//       (a dropped or inserted piece of audio) anywhere after its start;
//   (b) the page played the reply: response.done completed, played_ms the turn's length, no
//       errors, the echo loopback active.
// Calls: WebTransport (Opus; pcm16); WebSocket (pcm16); auto (whichever connects first: on
// loopback WebTransport, well inside its 300 ms head start); auto against a stale certificate
// hash (Firefox rejects the WebTransport handshake, WebSocket carries the call); auto with
// WebTransport switched off (network.webtransport.enabled=false). Errors: a stale hash with
// WebTransport only, the microphone blocked in Firefox's settings, the server stopped, and the
// capture Firefox lacks (MediaStreamTrackProcessor) — each with its VoqError code and message.
// Screenshots go to web/test-results/firefox-*.png.
//
// Environment: VOQ_BIN (default ../target/debug/voq from web/), FIREFOX (default
// /usr/bin/firefox-esr), VOQ_E2E_FRESH_DIST=1 serves web/dist/ instead of the page compiled into
// the binary.
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { bestAlignment, compareExact, ncc, toneAnalysis } from './audio.mjs';
import { RESULTS, VOQ_BIN, checkPlayback, readRecording, startServer, web } from './harness.mjs';

const FIREFOX = process.env.FIREFOX ?? '/usr/bin/firefox-esr';
const TURN_MS = 3200;
/** Firefox's fake microphone: a sine of this frequency (media.navigator.audio.fake_frequency). */
const TONE_HZ = 1000;
/** Its RMS level: amplitude 0.1 (3277 in pcm16), so 20·log10(0.1/√2). */
const TONE_DB = 20 * Math.log10(0.1 / Math.SQRT2);

const missing = !existsSync(FIREFOX)
  ? `${FIREFOX} is missing (apt-get install firefox-esr); the Firefox test needs it`
  : !existsSync(VOQ_BIN)
    ? `${VOQ_BIN} is missing (cargo build -p voq, or set VOQ_BIN)`
    : null;

/** The preferences of every Firefox here; `extra` adds or overrides. */
function prefs(extra = {}) {
  return {
    // A fake microphone (the tone), granted without a prompt.
    'media.navigator.streams.fake': true,
    'media.navigator.permission.disabled': true,
    'media.navigator.audio.fake_frequency': TONE_HZ,
    // Sound may start without a user gesture (the AudioContext; the loopback's <audio>).
    'media.autoplay.default': 0,
    'media.autoplay.blocking_policy': 0,
    'media.autoplay.block-webaudio': false,
    // This machine has no sound card and no sound server. Without an output device Firefox
    // never starts an AudioContext: it stays `suspended` and resume() never settles, so the
    // capture worklet never runs and a turn never ends. Firefox's mock audio backend stands in
    // for the device (as Chromium's headless fake output does); it runs at real time.
    'media.cubeb.force_mock_context': true,
    ...extra,
  };
}

let puppeteer;

/** A headless Firefox with a fresh profile in `dir` (the test's temporary directory). */
async function launch(dir, extraPrefs = {}) {
  puppeteer ??= (await import('puppeteer-core')).default;
  const profile = mkdtempSync(path.join(dir, 'profile-'));
  let browser;
  try {
    browser = await puppeteer.launch({
      browser: 'firefox',
      executablePath: FIREFOX,
      headless: true,
      userDataDir: profile,
      extraPrefsFirefox: prefs(extraPrefs),
      env: { ...process.env, MOZ_CRASHREPORTER_DISABLE: '1' },
      timeout: 30000,
      protocolTimeout: 60000,
    });
  } catch (e) {
    rmSync(profile, { recursive: true, force: true });
    throw e;
  }
  return {
    browser,
    /** Closes Firefox (killed if it does not close within 10 s) and removes its profile. */
    async close() {
      const proc = browser.process();
      const exited = proc && proc.exitCode === null ? new Promise((r) => proc.once('exit', r)) : Promise.resolve();
      let timer;
      const closed = await Promise.race([
        browser.close().then(() => true, () => false),
        new Promise((r) => (timer = setTimeout(() => r(false), 10000))),
      ]);
      clearTimeout(timer);
      if (!closed || proc?.exitCode === null) {
        proc?.kill('SIGKILL');
        await exited;
      }
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

/**
 * A page that logs its console and, under VOQ_E2E_FRESH_DIST=1, is served web/dist/;
 * `configJson(original)` rewrites what the page gets for /voq/config.json.
 */
async function newPage(browser, { configJson = null } = {}) {
  const page = await browser.newPage();
  await page.setViewport({ width: 960, height: 900 });
  const console = [];
  page.on('console', (m) => console.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => console.push(`pageerror: ${e.message}`));
  const fresh = process.env.VOQ_E2E_FRESH_DIST === '1';
  if (fresh || configJson) {
    await page.setRequestInterception(true);
    page.on('request', async (req) => {
      try {
        const u = new URL(req.url());
        if (configJson && u.pathname === '/voq/config.json') {
          const original = await (await fetch(u.href, { cache: 'no-store' })).json();
          await req.respond({ status: 200, contentType: 'application/json', body: JSON.stringify(configJson(original)) });
        } else if (fresh && req.method() === 'GET' && u.protocol === 'http:' && (u.pathname === '/' || u.pathname === '/app.js')) {
          const file = u.pathname === '/app.js' ? 'app.js' : 'index.html';
          await req.respond({ status: 200, contentType: file === 'app.js' ? 'text/javascript' : 'text/html', body: readFileSync(path.join(web, 'dist', file)) });
        } else {
          await req.continue();
        }
      } catch (e) {
        console.push(`interception of ${req.url()} failed: ${e.message}`);
        await req.abort().catch(() => {});
      }
    });
  }
  return { page, console };
}

/** Waits for the page's window.voq (the page's script ran). */
async function pageStarted(page, console) {
  await page.waitForFunction(() => !!window.voq?.done, { timeout: 10000 }).catch(() => {
    throw new Error(`the page did not start (no window.voq): is the page compiled into ${VOQ_BIN} current? (VOQ_E2E_FRESH_DIST=1 serves web/dist)\n${console.join('\n')}`);
  });
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

/** The page's status line: its text and class. */
function status(page) {
  return page.evaluate(() => ({ text: document.getElementById('status').textContent, className: document.getElementById('status').className }));
}

describe('firefox call', { skip: missing ?? false }, () => {
  let server;
  let base;
  let tmp;

  before(async () => {
    tmp = mkdtempSync(path.join(tmpdir(), 'voq-e2e-firefox-'));
    mkdirSync(RESULTS, { recursive: true });
    server = startServer(path.join(tmp, 'record'));
    base = await server.url;
  });

  after(() => {
    server?.proc.kill('SIGTERM');
    if (tmp && !process.env.VOQ_E2E_KEEP) rmSync(tmp, { recursive: true, force: true });
  });

  /** One autostarted call in a fresh Firefox: the page's outcome, its events and its capture. */
  async function call(name, query, { firefoxPrefs = {}, configJson = null } = {}) {
    const ff = await launch(tmp, firefoxPrefs);
    try {
      const { page, console } = await newPage(ff.browser, { configJson });
      // timeout_ms: the page gives up by itself well before the test's own time limit.
      await page.goto(`${base}?${query}&autostart=1&turn_ms=${TURN_MS}&keep_capture=1&timeout_ms=40000`);
      await pageStarted(page, console);
      const outcome = await page.evaluate(() => window.voq.done);
      const events = await page.evaluate(() => window.voq.events.map((e) => ({ t: e.t, type: e.type, event: e.type === 'client.error' ? { code: e.event.error?.code, message: e.event.error?.message } : e.event })));
      const itemId = outcome.turn?.item_id;
      // The page's copy of the turn (keep_capture=1), as base64 pcm16: a 3.2 s turn is 76800
      // numbers, which WebDriver BiDi would carry one JSON object each.
      const b64 = itemId
        ? await page.evaluate((id) => {
            const a = window.voq.captured?.(id);
            if (!a) return null;
            const bytes = new Uint8Array(Int16Array.from(a).buffer);
            let s = '';
            for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
            return btoa(s);
          }, itemId)
        : null;
      const captured = b64 === null ? null : new Int16Array(Uint8Array.from(Buffer.from(b64, 'base64')).buffer);
      await page.screenshot({ path: path.join(RESULTS, `firefox-${name}.png`), fullPage: true });
      return { outcome, events, console, captured };
    } finally {
      await ff.close();
    }
  }

  /** (a): the recorded turn against the page's capture, and against the fake microphone's tone. */
  async function checkRecording(sessionId, itemId, captured, codec) {
    const { rec } = await readRecording(path.join(tmp, 'record'), sessionId, itemId);
    const vsCapture = { capturedSamples: captured.length, recordedSamples: rec.pcm.length };
    if (codec === 'pcm16') {
      Object.assign(vsCapture, compareExact(rec.pcm, captured));
    } else {
      const cap = Float32Array.from(captured, (x) => x / 32768);
      const { lag, corr } = bestAlignment(cap, rec.samples, 960);
      // A tone correlates as well one period (24 samples) off: the correlation that counts is
      // the one at the encoder's delay.
      Object.assign(vsCapture, { lag, corr: Number(corr.toFixed(4)), corrAtDelay: Number(ncc(cap, rec.samples, -156).toFixed(4)) });
    }
    // Over what the page captured (the Opus recording's extra packet is the encoder's flush:
    // the tone's last 156 samples, then its decay), from 20 ms after the tone starts (40 ms
    // with Opus, whose onset spreads over a packet).
    const t = toneAnalysis(rec.samples.subarray(0, captured.length), 24000, TONE_HZ, { settleMs: codec === 'pcm16' ? 20 : 40 });
    const tone = {
      onsetMs: Number(((t.onset * 1000) / 24000).toFixed(1)),
      hz: Number(t.hz.toFixed(2)),
      minDb: Number(t.minDb.toFixed(2)),
      maxDb: Number(t.maxDb.toFixed(2)),
      discontinuities: t.discontinuities.length,
    };
    return { recMs: (rec.samples.length * 1000) / 24000, vsCapture, tone };
  }

  /** A config whose certificate hash is stale (as after a server restart). */
  const staleHash = (config) => ({ ...config, webtransport: { ...config.webtransport, certificate_hashes: [{ algorithm: 'sha-256', value: '00'.repeat(32) }] } });

  const calls = [
    { name: 'webtransport-opus', query: 'transport=webtransport&codec=opus', codec: 'opus', transport: 'webtransport' },
    { name: 'webtransport-pcm16', query: 'transport=webtransport&codec=pcm16', codec: 'pcm16', transport: 'webtransport' },
    { name: 'websocket-pcm16', query: 'transport=websocket&codec=pcm16', codec: 'pcm16', transport: 'websocket' },
    // Whichever connects first. On loopback WebTransport connects well inside its 300 ms head
    // start, so WebSocket is never dialed; on a machine slow enough to let the head start pass,
    // WebSocket is dialed too and either may win, the other cancelled or closed — never failed.
    {
      name: 'auto-opus',
      query: 'transport=auto&codec=opus',
      codec: 'opus',
      attempts: (a, winner) => {
        assert.ok(a.every((x) => x.result !== 'failed' && x.result !== 'unavailable'), JSON.stringify(a));
        if (winner === 'webtransport' && a[1].result === 'not_started') assert.equal(a[0].result, 'won');
        else assert.ok(a[1].startedMs >= 300 - 50, `WebSocket was dialed ${a[1].startedMs} ms in, before the head start ran out: ${JSON.stringify(a)}`);
      },
    },
    // The page holds a stale certificate hash: Firefox rejects the WebTransport handshake at once
    // and the call goes over WebSocket. (The page fetches its config so that it can be altered.)
    {
      name: 'auto-stale-hash-fallback',
      query: 'transport=auto&codec=pcm16&config=fetch',
      codec: 'pcm16',
      transport: 'websocket',
      configJson: staleHash,
      attempts: (a) => {
        assert.deepEqual(a.map((x) => [x.transport, x.result, x.error ?? null]), [
          ['webtransport', 'failed', 'WebTransport connection rejected'],
          ['websocket', 'won', null],
        ]);
        // Rejected (a timeout would say "no answer within"), and WebSocket dialed at the latest
        // then: at the rejection (60–125 ms measured), or when the head start ran out first.
        assert.ok(a[1].startedMs <= a[0].endedMs, JSON.stringify(a));
      },
    },
    // WebTransport switched off in Firefox (network.webtransport.enabled=false, as about:config
    // or an enterprise policy can): no WebTransport constructor, so auto goes straight to
    // WebSocket.
    {
      name: 'auto-webtransport-disabled',
      query: 'transport=auto&codec=opus',
      codec: 'opus',
      transport: 'websocket',
      firefoxPrefs: { 'network.webtransport.enabled': false },
      attempts: (a) =>
        assert.deepEqual(a.map((x) => [x.transport, x.result, x.error ?? null]), [
          ['webtransport', 'unavailable', 'no WebTransport in this browser'],
          ['websocket', 'won', null],
        ]),
    },
  ];

  for (const c of calls) {
    test(c.name, { timeout: 90000 }, async () => {
      const r = await call(c.name, c.query, { firefoxPrefs: c.firefoxPrefs, configJson: c.configJson });
      const committed = checkPlayback(c.name, r, TURN_MS);
      const s = r.outcome.stats;
      assert.equal(s.inputCodec, c.codec);
      // Firefox 153 has no MediaStreamTrackProcessor: the AudioWorklet captures.
      assert.equal(s.captureMethod, 'worklet');
      if (c.transport) assert.equal(s.transport, c.transport, `won by ${s.transport}`);
      const connected = r.events.find((e) => e.type === 'transport.connected').event;
      assert.equal(connected.transport, s.transport);
      if (c.attempts) c.attempts(connected.attempts, s.transport);
      // The reply went through the echo-cancellation loopback (two local RTCPeerConnections),
      // whose delay was measured.
      assert.equal(s.echoLoopback, 'active', `echo loopback: ${s.echoLoopback}`);
      assert.ok(typeof s.loopbackLatencyMs === 'number', 'the loopback delay was measured');
      // As in call.test.mjs: a loopback figure, not a timeout or garbage. (Firefox 153's
      // WebTransport.getStats() rejects with NS_ERROR_NOT_IMPLEMENTED, so on WebTransport too it
      // is the voq.ping round trip.)
      assert.ok(typeof s.rttMs === 'number' && s.rttMs >= 0 && s.rttMs < 1000, `rttMs ${s.rttMs} over ${s.transport}`);
      assert.ok(r.captured, `the page kept no copy of ${committed.item_id} (keep_capture=1): is the page compiled into ${VOQ_BIN} current? (VOQ_E2E_FRESH_DIST=1 serves web/dist)`);
      const rec = await checkRecording(s.sessionId, committed.item_id, r.captured, c.codec);
      process.stdout.write(
        `# firefox ${c.name}: ${JSON.stringify({ ...rec, transport: s.transport, connectMs: s.connectMs, attempts: connected.attempts, playedMs: r.outcome.playback.played_ms, rttMs: Number(s.rttMs.toFixed(1)), loopbackLatencyMs: s.loopbackLatencyMs })}\n`,
      );
      const vs = rec.vsCapture;
      if (c.codec === 'pcm16') {
        // What voq guarantees, whatever the load: the server holds exactly what the page captured.
        assert.ok(vs.equal, `the server's recording differs from what the page captured: ${JSON.stringify(vs)}`);
      } else {
        // Opus, as in call.test.mjs: one more packet from the encoder's flush, decoded 156
        // samples behind the capture. The best alignment of a tone is only defined up to its
        // period (24 samples), so the best lag must be the encoder's delay modulo the period,
        // and the correlation at the delay itself must hold.
        assert.equal(vs.recordedSamples, vs.capturedSamples + 480, `recorded ${vs.recordedSamples} samples, captured ${vs.capturedSamples} (+ one look-ahead frame): ${JSON.stringify(vs)}`);
        const period = 24000 / TONE_HZ;
        const offPhase = (((vs.lag + 156) % period) + period) % period;
        assert.ok(Math.min(offPhase, period - offPhase) <= 2, `best alignment ${vs.lag} is not the encoder's delay (−156) modulo the tone's period: ${JSON.stringify(vs)}`);
        assert.ok(vs.corrAtDelay >= 0.9, `recorded turn vs the page's capture at the encoder's delay: normalized correlation ${vs.corrAtDelay} < 0.9 (${JSON.stringify(vs)})`);
      }
      // The turn is the fake microphone's tone: it starts at once (the microphone is open
      // before the turn starts), at its frequency and level in every 20 ms.
      const { tone } = rec;
      assert.ok(tone.onsetMs >= 0 && tone.onsetMs < 300, `the tone starts ${tone.onsetMs} ms into the turn: ${JSON.stringify(tone)}`);
      // 998.9–1002.0 Hz measured: Firefox's capture resamples with drift correction between the
      // microphone's clock and the AudioContext's. A wrong rate anywhere (24 vs 48 kHz, 44.1 vs
      // 48 kHz) would be off by 8 % or more.
      assert.ok(Math.abs(tone.hz - TONE_HZ) <= 10, `a tone of ${tone.hz} Hz: ${JSON.stringify(tone)}`);
      const slack = c.codec === 'pcm16' ? 0.5 : 1.5;
      assert.ok(tone.minDb >= TONE_DB - slack && tone.maxDb <= TONE_DB + slack, `tone level ${tone.minDb}…${tone.maxDb} dBFS, not ${TONE_DB.toFixed(1)} ± ${slack}: ${JSON.stringify(tone)}`);
      if (c.codec === 'pcm16') assert.equal(tone.discontinuities, 0, `the captured tone jumps in phase (audio dropped or inserted): ${JSON.stringify(tone)}`);
    });
  }
});

describe('firefox errors', { skip: missing ?? false }, () => {
  let server;
  let base;
  let tmp;
  const stopped = []; // servers the tests stop themselves (killed here too if a test failed first)

  before(async () => {
    tmp = mkdtempSync(path.join(tmpdir(), 'voq-e2e-firefox-'));
    mkdirSync(RESULTS, { recursive: true });
    server = startServer(path.join(tmp, 'record'));
    base = await server.url;
  });

  after(() => {
    server?.proc.kill('SIGTERM');
    for (const s of stopped) s.proc.kill('SIGTERM');
    rmSync(tmp, { recursive: true, force: true });
  });

  /** Loads `query` with autostart, waits for the call's (failed) outcome and the page's account of it. */
  async function failedCall(name, query, { firefoxPrefs = {}, configJson = null, at = base } = {}) {
    const ff = await launch(tmp, firefoxPrefs);
    try {
      const { page, console } = await newPage(ff.browser, { configJson });
      await page.goto(`${at}?${query}&autostart=1&turn_ms=500&timeout_ms=20000`);
      await pageStarted(page, console);
      const outcome = await page.evaluate(() => window.voq.done);
      const errors = await clientErrors(page);
      const st = await status(page);
      const permission = await page.evaluate(() => navigator.permissions.query({ name: 'microphone' }).then((p) => p.state, (e) => `query failed: ${e.message}`));
      await page.screenshot({ path: path.join(RESULTS, `firefox-${name}.png`) });
      const r = { outcome, errors, status: st, permission, console };
      assert.equal(outcome.ok, false, JSON.stringify(r, null, 1));
      return r;
    } finally {
      await ff.close();
    }
  }

  // WebTransport only, with a stale certificate hash: Firefox rejects the handshake
  // (WebTransportError "WebTransport connection rejected", in 7–70 ms), the server answers on
  // TCP, so the client says `certificate`.
  test('wrong certificate hash', { timeout: 60000 }, async () => {
    const r = await failedCall('wrong-certificate', 'transport=webtransport&config=fetch', {
      configJson: (config) => ({ ...config, webtransport: { ...config.webtransport, certificate_hashes: [{ algorithm: 'sha-256', value: '00'.repeat(32) }] } }),
    });
    const detail = JSON.stringify(r, null, 1);
    assert.equal(r.outcome.error.code, 'certificate', detail);
    assert.match(r.outcome.error.message, /the WebTransport handshake with https:\/\/127\.0\.0\.1:\d+\/voq failed \(webtransport: WebTransport connection rejected\)/, detail);
    assert.deepEqual(r.errors.map((e) => [e.code, e.classes]), [['certificate', ['CertificateError', 'VoqError']]], detail);
    assert.match(r.status.text, /certificate did not match/, detail);
    process.stdout.write(`# firefox wrong-certificate: ${JSON.stringify({ errorAtMs: r.errors[0].t, message: r.errors[0].message })}\n`);
  });

  // The user blocked the microphone: Settings → Privacy & Security → Permissions → Microphone →
  // "Block new requests asking to access your microphone" is permissions.default.microphone = 2,
  // with the permission prompt on (media.navigator.permission.disabled false). The permission
  // then reads `denied` and getUserMedia rejects with NotAllowedError. (WebDriver BiDi's
  // permissions.setPermission cannot do it: Firefox 153 answers `unsupported operation
  // "descriptor.name" "microphone" is currently unsupported`.)
  test('microphone denied', { timeout: 60000 }, async () => {
    const r = await failedCall('microphone-denied', 'transport=auto', {
      firefoxPrefs: { 'permissions.default.microphone': 2, 'media.navigator.permission.disabled': false },
    });
    const detail = JSON.stringify(r, null, 1);
    assert.equal(r.permission, 'denied', detail);
    assert.equal(r.outcome.error.code, 'mic_denied', detail);
    assert.equal(
      r.outcome.error.message,
      'microphone access was denied (The request is not allowed by the user agent or the platform in the current context.): allow the microphone for this page and try again',
      detail,
    );
    assert.deepEqual(r.errors.map((e) => [e.code, e.classes]), [['mic_denied', ['MicrophoneError', 'VoqError']]], detail);
    assert.match(r.status.text, /The microphone is blocked\. Allow it for this page/, detail);
    assert.equal(r.status.className, 'status error');
    // Only that the page does not hang on a blocked microphone (as in call.test.mjs).
    assert.ok(r.errors[0].t < 15000, `mic_denied after ${r.errors[0].t} ms: ${detail}`);
    process.stdout.write(`# firefox microphone-denied: ${JSON.stringify({ errorAtMs: r.errors[0].t, message: r.errors[0].message })}\n`);
  });

  // What Firefox cannot do: read the microphone with MediaStreamTrackProcessor. A page that
  // insists on it (capture=track-processor) is told so; the default (auto) uses the worklet.
  test('no MediaStreamTrackProcessor', { timeout: 60000 }, async () => {
    const r = await failedCall('no-track-processor', 'transport=auto&capture=track-processor');
    const detail = JSON.stringify(r, null, 1);
    assert.equal(r.outcome.error.code, 'unsupported', detail);
    assert.equal(r.outcome.error.message, 'this browser has no MediaStreamTrackProcessor', detail);
    assert.deepEqual(r.errors.map((e) => [e.code, e.classes]), [['unsupported', ['UnsupportedError', 'VoqError']]], detail);
    assert.match(r.status.text, /This browser lacks something voq needs: this browser has no MediaStreamTrackProcessor/, detail);
  });

  // The page was loaded, then its server stopped: Connect fails with `unreachable` in plain
  // words (Firefox's fetch says only "NetworkError when attempting to fetch resource.").
  test('server stopped', { timeout: 60000 }, async () => {
    const gone = startServer(path.join(tmp, 'record-stopped'));
    stopped.push(gone);
    const at = await gone.url;
    const origin = new URL(at).origin;
    const ff = await launch(tmp);
    try {
      const { page, console } = await newPage(ff.browser);
      // As a page that fetches its config: the first thing to fail is that fetch.
      await page.goto(`${at}?transport=auto&config=fetch`);
      await page.waitForFunction(() => !!window.voq, { timeout: 10000 }).catch(() => {
        throw new Error(`the page did not start:\n${console.join('\n')}`);
      });
      const exited = new Promise((resolve) => gone.proc.once('exit', resolve));
      gone.proc.kill('SIGTERM');
      await exited;
      const t0 = Date.now();
      await page.click('#connect');
      await page.waitForFunction(() => window.voq.events.some((e) => e.type === 'client.error'), { timeout: 15000, polling: 50 }).catch(async () => {
        throw new Error(`no error within 15 s of Connect; status: ${JSON.stringify(await status(page))}`);
      });
      const elapsedMs = Date.now() - t0;
      // The page hangs up after the error: wait for that before looking.
      await page.waitForFunction(() => document.getElementById('connect').textContent === 'Connect' && window.voq.client?.state === 'closed', { timeout: 5000, polling: 50 });
      const errors = await clientErrors(page);
      const st = await status(page);
      await page.screenshot({ path: path.join(RESULTS, 'firefox-server-unreachable.png') });
      const detail = JSON.stringify({ elapsedMs, errors, st }, null, 1);
      assert.equal(errors.length, 1, detail);
      assert.equal(errors[0].code, 'unreachable', detail);
      assert.deepEqual(errors[0].classes, ['UnreachableError', 'VoqError'], detail);
      assert.equal(errors[0].message, `cannot reach the voq server at ${origin}: GET /voq/config.json failed (NetworkError when attempting to fetch resource.)`, detail);
      assert.match(st.text, /Cannot reach the voq server\. Is `voq serve` running\?/, detail);
      process.stdout.write(`# firefox server-stopped: ${JSON.stringify({ elapsedMs, message: errors[0].message })}\n`);
    } finally {
      await ff.close();
    }
  });
});

if (missing) test('firefox call', { skip: missing }, () => {});
