// The prompt's delay under loss from a browser (issue #13, item 3): how long after the page ends
// the user's turn the server holds all of it, through an emulated lossy path, beside the same
// loss-free. Chromium's outgoing QUIC stack is its own; the server's side is voq's (real-time
// recovery: it acknowledges every packet at once, docs/PROTOCOL.md "Loss recovery").
//
//   node e2e/prompt-delay.mjs [--runs 8] [--rtt-ms 60] [--loss 0,0.2] [--turn-ms 2800]
//                             [--carriers webtransport,websocket] [--codec pcm16]
//                             [--json ../out/bench/browser-prompt.json]
//
// Root (network namespaces). Each run: a fresh path (seed = run number, loss from the page's
// connect()), a fresh Chromium, one push-to-talk turn of the fake microphone; the hold time is
// the server's commit (recording sidecar, recorded_at_unix_ms) minus the page's
// input.turn_ended (its wall clock; one machine, one clock). The extra delay subtracts the
// carrier's loss-free median, as `voq bench` does for the native client.
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { VOQ_BIN, cliOptions, quantile, web } from './harness.mjs';
import { measureCall, netnsUnavailable, startPath } from './setup-rtt.mjs';

async function main() {
  const opt = cliOptions();
  const why = netnsUnavailable();
  if (why) {
    console.error(`prompt-delay: ${why}`);
    process.exit(2);
  }
  const runs = Number(opt('runs', 8));
  const rttMs = Number(opt('rtt-ms', 60));
  const losses = opt('loss', '0,0.2').split(',').map(Number);
  const carriers = opt('carriers', 'webtransport,websocket').split(',');
  const codec = opt('codec', 'pcm16');
  const turnMs = Number(opt('turn-ms', 2800));
  const json = opt('json', path.join(web, '..', 'out', 'bench', 'browser-prompt.json'));
  const started = new Date().toISOString();
  const rows = [];
  const baseline = {};
  for (const loss of losses) {
    for (const carrier of carriers) {
      const results = [];
      for (let run = 0; run < runs; run++) {
        const p = await startPath({ rttMs, loss, seed: 1 + run, lossFrom: 'connect' });
        try {
          const r = await measureCall(p, { carrier, codec, rttMs, turnMs, timeoutMs: 90000, untilFirstFrame: true });
          results.push(r);
          process.stderr.write(`# loss ${loss} ${carrier} run ${run}: hold ${r.holdMs} ms, setup ${r.setupRtts} RTT (${r.transport})\n`);
        } catch (e) {
          results.push({ carrier, error: String(e.message).split('\n')[0] });
          process.stderr.write(`# loss ${loss} ${carrier} run ${run}: FAILED ${e.message}\n`);
        } finally {
          await p.close();
        }
      }
      const holds = results.filter((r) => typeof r.holdMs === 'number' && r.transport === carrier).map((r) => r.holdMs);
      const setups = results.filter((r) => r.setupRtts !== undefined && r.transport === carrier).map((r) => r.setupRtts);
      const p50 = holds.length ? quantile(holds, 0.5) : null;
      if (loss === 0) baseline[carrier] = p50;
      const base = baseline[carrier] ?? null;
      rows.push({
        loss,
        carrier,
        runs,
        completed: holds.length,
        hold_ms_p50: p50,
        hold_ms_max: holds.length ? Math.max(...holds) : null,
        extra_delay_ms_p50: p50 !== null && base !== null ? p50 - base : null,
        extra_delay_ms_max: holds.length && base !== null ? Math.max(...holds) - base : null,
        setup_rtts_p50: setups.length ? quantile(setups, 0.5) : null,
        setup_rtts_max: setups.length ? Math.max(...setups) : null,
        results,
      });
    }
  }
  console.log(`Browser prompt delay through voq netem --netns, ${rttMs} ms RTT, ${turnMs} ms turn (${codec}), loss from connect, Chromium, ${runs} runs per row (${started}, ${VOQ_BIN})`);
  console.log('| loss | carrier | completed | hold p50 / max (ms) | extra delay p50 / max (ms) | setup RTTs p50 / max |');
  console.log('| --- | --- | --- | --- | --- | --- |');
  for (const r of rows) {
    console.log(`| ${r.loss * 100} % | ${r.carrier} | ${r.completed}/${r.runs} | ${r.hold_ms_p50} / ${r.hold_ms_max} | ${r.extra_delay_ms_p50} / ${r.extra_delay_ms_max} | ${r.setup_rtts_p50} / ${r.setup_rtts_max} |`);
  }
  mkdirSync(path.dirname(json), { recursive: true });
  writeFileSync(json, JSON.stringify({ started, rttMs, turnMs, codec, runs, voq: VOQ_BIN, rows }, null, 2));
  console.log(`wrote ${json}`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
