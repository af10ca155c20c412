// What the browser tests share (call.test.mjs with Chromium, firefox.test.mjs with Firefox): the
// voq binary and its servers, waiting for conditions, and reading the server's recording of a turn.
import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { readWav } from './audio.mjs';

export const web = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
export const repo = path.dirname(web);
export const VOQ_BIN = path.resolve(web, process.env.VOQ_BIN ?? '../target/debug/voq');
export const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
export const RESULTS = path.join(web, 'test-results');

/** The value at quantile `q` (0–1) of `xs`, nearest rank. */
export function quantile(xs, q) {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * (s.length - 1) + 0.5))];
}

/** `opt(name, dflt)`: the value after `--name` on a script's command line, or `dflt`. */
export function cliOptions(args = process.argv.slice(2)) {
  return (name, dflt) => {
    const i = args.indexOf(`--${name}`);
    return i >= 0 ? args[i + 1] : dflt;
  };
}

/**
 * Starts `voq serve` and resolves with its page URL (the first http:// URL it prints). `extra`:
 * more arguments; `listen`: the address (an OS-chosen port by default).
 */
export function startServer(recordDir, agent = 'echo', extra = [], listen = '127.0.0.1:0') {
  const proc = spawn(VOQ_BIN, ['serve', '--listen', listen, '--agent', agent, '--record', recordDir, ...extra], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? 'warn' },
  });
  let out = '';
  const url = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`voq serve printed no http:// URL within 30 s:\n${out}`)), 30000);
    const onData = (d) => {
      out += d;
      const m = out.match(/http:\/\/[^\s/]+\//);
      if (m) {
        clearTimeout(timer);
        resolve(m[0]);
      }
    };
    proc.stdout.on('data', onData);
    proc.stderr.on('data', (d) => (out += d));
    proc.on('exit', (code) => reject(new Error(`voq serve exited (${code}):\n${out}`)));
  });
  return { proc, url, log: () => out };
}

/** A TCP port free on loopback just now. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** A counter of a server's Prometheus metrics (0 while they cannot be read). */
export async function metric(port, name) {
  try {
    const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    const line = text.split('\n').find((l) => l.startsWith(`${name} `));
    return line ? Number(line.split(' ').at(-1)) : 0;
  } catch {
    return 0;
  }
}

/** Polls `ready` (async) until it returns something truthy, and returns that; fails after `ms`. */
export async function until(ms, what, ready) {
  for (const deadline = Date.now() + ms; ; ) {
    const v = await ready();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out (${ms} ms) waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Resolves when `proc` has exited (at once if it already has). */
export function exited(proc) {
  return proc.exitCode !== null || proc.signalCode !== null ? Promise.resolve() : new Promise((r) => proc.once('exit', r));
}

/**
 * The JSON sidecar of the server's recording (--record DIR) of `itemId`, once it is there. The
 * server writes the recording on a blocking thread after it commits the turn, the WAV first,
 * then the sidecar: once the sidecar parses, the WAV is complete. Fails after `ms`.
 */
export async function readSidecar(dir, sessionId, itemId, ms = 10000) {
  const file = path.join(dir, sessionId, `${itemId}.json`);
  return until(ms, `the recording of ${itemId} (${file})`, () => {
    try {
      return JSON.parse(readFileSync(file, 'utf8'));
    } catch {
      return null;
    }
  });
}

/**
 * The server's recording (--record DIR) of a user turn, once it is complete: { meta (the JSON
 * sidecar), rec (readWav) }, with what every recording must satisfy checked.
 */
export async function readRecording(dir, sessionId, itemId) {
  const wav = path.join(dir, sessionId, `${itemId}.wav`);
  const meta = await readSidecar(dir, sessionId, itemId);
  const rec = readWav(wav);
  assert.equal(meta.kind, 'user_turn');
  // When the turn's first frame reached the server (setup without polling counters).
  assert.ok(meta.first_frame_unix_ms > 0 && meta.first_frame_after_connected_ms >= 0, JSON.stringify(meta));
  assert.equal(meta.samples, rec.pcm.length);
  assert.equal(rec.rate, 24000);
  return { meta, rec };
}

/**
 * The page's own account of an autostart call to the echo agent (a turn of `turnMs`): it
 * completed, the whole echo played, no errors, and the server committed every frame the page
 * sent. Returns the `input_audio_buffer.committed` event.
 */
export function checkPlayback(name, { outcome, events, console }, turnMs) {
  const detail = () => `${name}: ${JSON.stringify(outcome, null, 1)}\nevents: ${events.map((e) => e.type).join(' ')}\nconsole:\n${console.join('\n')}`;
  assert.ok(outcome.ok, `the call did not complete: ${detail()}`);
  assert.equal(outcome.response.response.status, 'completed', detail());
  assert.equal(outcome.playback.reason, 'finished', detail());
  // The echo agent answers with the turn itself: the page played all of it.
  assert.ok(outcome.playback.played_ms >= turnMs - 100, `played ${outcome.playback.played_ms} ms of a ${turnMs} ms echo: ${detail()}`);
  const errors = events.filter((e) => e.type === 'error' || e.type === 'client.error');
  assert.deepEqual(errors, [], detail());
  assert.ok(outcome.turn.audio_ms >= turnMs && outcome.turn.audio_ms <= turnMs + 20, `turn of ${outcome.turn.audio_ms} ms`);
  const committed = events.find((e) => e.type === 'input_audio_buffer.committed')?.event;
  assert.ok(committed, 'no input_audio_buffer.committed');
  assert.equal(committed.voq.frames, outcome.turn.frames, 'the server holds every frame the page sent');
  assert.equal(committed.voq.bytes, outcome.turn.bytes);
  assert.ok(events.some((e) => e.type === 'playback.started'), 'no playback.started');
  return committed;
}
