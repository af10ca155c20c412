// Setup in round trips, through an emulated 100 ms path (issue #16, item 1): Chromium in one
// network namespace, `voq serve` in another, `voq netem --netns` between them (e2e/setup-rtt.mjs
// has the method; run it as a benchmark for the figures with loss, docs/BENCHMARKS.md).
//
// One loss-free call per carrier. Asserted: the call completes on the carrier asked for, and
// the server held the first frame no sooner than the path allows (2.5 RTT: a handshake and a
// request/response before the page may send, then half a round trip) — so the emulated path
// and the measurement are real. The figure itself is printed, not asserted (it depends on the
// machine's load); docs/BENCHMARKS.md records it.
//
// Bad input on the same path: a path that goes dark for 5 s just as the page connects (the call
// still completes, and the server holds exactly what the page captured meanwhile), and a page
// on a non-secure origin (a plain-words error, at once).
//
// Needs root (network namespaces). VOQ_NETNS_REQUIRED=1 (CI) turns a skip into a failure.
import { existsSync } from 'node:fs';
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { compareExact } from './audio.mjs';
import { readRecording } from './harness.mjs';
import { CHROMIUM, VOQ_BIN, measureCall, netnsUnavailable, startPath } from './setup-rtt.mjs';

const RTT_MS = 100;
const unavailable = !existsSync(CHROMIUM) ? `${CHROMIUM} is missing (apt-get install chromium)` : !existsSync(VOQ_BIN) ? `${VOQ_BIN} is missing (cargo build -p voq)` : netnsUnavailable();
if (unavailable && process.env.VOQ_NETNS_REQUIRED === '1') {
  test('setup through an emulated path', () => assert.fail(`VOQ_NETNS_REQUIRED=1 but: ${unavailable}`));
}

describe('setup through an emulated 100 ms path', { skip: unavailable ?? false }, () => {
  for (const carrier of ['webtransport', 'websocket']) {
    test(carrier, { timeout: 90000 }, async () => {
      const p = await startPath({ rttMs: RTT_MS, loss: 0 });
      try {
        const r = await measureCall(p, { carrier, rttMs: RTT_MS });
        process.stdout.write(`# setup ${carrier}: ${JSON.stringify(r)}\n`);
        assert.equal(r.transport, carrier);
        assert.ok(r.setupRtts >= 2.45, `the first frame reached the server ${r.setupRtts} RTT after connect(): sooner than the emulated path allows (2.5), so the path or the clocks are wrong: ${JSON.stringify(r)}`);
        assert.ok(r.connectRtts >= 1.95, `connected after ${r.connectRtts} RTT, sooner than the path allows (2): ${JSON.stringify(r)}`);
      } finally {
        await p.close();
      }
    });
  }

  test('a 5 s blackout as the page connects (auto, pcm16): the call completes, nothing captured is lost', { timeout: 90000 }, async () => {
    const p = await startPath({ rttMs: RTT_MS, loss: 0 });
    try {
      const r = await measureCall(p, { carrier: 'auto', codec: 'pcm16', rttMs: RTT_MS, turnMs: 3200, blackoutMs: 5000, keepCapture: true });
      const { captured, ...shown } = r;
      process.stdout.write(`# setup through a 5 s blackout: ${JSON.stringify(shown)}\n`);
      assert.ok(r.setupMs >= 5000, `the first frame arrived ${r.setupMs} ms after connect(), inside the blackout: ${JSON.stringify(shown)}`);
      assert.ok(captured?.length > 0, 'the page kept no capture (keep_capture=1)');
      const { rec } = await readRecording(p.record, r.sessionId, r.itemId);
      const vs = compareExact(rec.pcm, Int16Array.from(captured));
      assert.ok(vs.equal, `the server's recording differs from what the page captured while the path was dark: ${JSON.stringify(vs)}`);
    } finally {
      await p.close();
    }
  });

  test('a page on a non-secure origin: a plain-words error, at once', { timeout: 60000 }, async () => {
    const p = await startPath({ rttMs: RTT_MS, loss: 0 });
    try {
      const e = await measureCall(p, { carrier: 'auto', rttMs: RTT_MS, secure: false }).then(
        () => null,
        (err) => err,
      );
      assert.ok(e?.outcome, `the call did not fail as it should: ${e}`);
      assert.equal(e.outcome.error.code, 'mic_unavailable', JSON.stringify(e.outcome.error));
      assert.match(e.outcome.error.message, /https or from localhost/);
    } finally {
      await p.close();
    }
  });
});
