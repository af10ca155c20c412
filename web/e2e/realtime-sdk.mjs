#!/usr/bin/env node
// A Realtime application written against the official `openai` npm package (and `ws`, pinned in
// web/package.json), pointed at `voq serve`'s `/v1/realtime` over wss:// (the Node SDK accepts
// nothing else for a custom endpoint). Run by crates/voq-server/tests/realtime_endpoint.rs.
//
// usage: node e2e/realtime-sdk.mjs BASE_URL PROMPT.wav OUT_DIR
//   BASE_URL like https://127.0.0.1:4443/v1 (the SDK makes it wss://…/v1/realtime); the server's
//   development certificate is accepted without verification.
//
// Two turns: push-to-talk (turn_detection null, append in 100 ms chunks, commit, response.create;
// the reply's deltas go to OUT_DIR/reply.pcm), then a barge-in at 400 ms once 500 ms arrived.
// Every event, both ways, goes to OUT_DIR/events.jsonl; a JSON summary to stdout.

import { readFileSync, writeFileSync } from 'node:fs';
import OpenAI from 'openai';
import { OpenAIRealtimeWS } from 'openai/realtime/ws';

const [baseURL, wavPath, outDir] = process.argv.slice(2);
if (!outDir) {
  console.error('usage: node e2e/realtime-sdk.mjs BASE_URL PROMPT.wav OUT_DIR');
  process.exit(2);
}
const DEADLINE_MS = 30_000;
const CHUNK = 4800; // 100 ms of 24 kHz pcm16

/** The samples of a canonical 24 kHz mono pcm16 WAV (44-byte header). */
function readPrompt(path) {
  const wav = readFileSync(path);
  if (wav.readUInt16LE(22) !== 1 || wav.readUInt32LE(24) !== 24000 || wav.readUInt16LE(34) !== 16) {
    throw new Error(`${path}: not 24 kHz mono pcm16`);
  }
  return wav.subarray(44);
}

const client = new OpenAI({ apiKey: 'voq-sdk-test', baseURL });
const rt = new OpenAIRealtimeWS({ model: 'voq', options: { rejectUnauthorized: false } }, client);
const log = [];
const started = performance.now();
const waiters = [];
rt.on('event', (event) => {
  log.push({ at_ms: performance.now() - started, direction: 'received', event });
  for (const w of [...waiters]) w(event);
});
rt.on('error', (e) => console.error('sdk error:', e.message ?? e));

function send(event) {
  log.push({ at_ms: performance.now() - started, direction: 'sent', event });
  rt.send(event);
}

/** Resolves with the first event of each of `kinds` (any order); `each` sees every event. */
function until(kinds, each = () => {}) {
  return new Promise((resolve, reject) => {
    const seen = {};
    const timer = setTimeout(() => reject(new Error(`not all of ${kinds} within ${DEADLINE_MS} ms`)), DEADLINE_MS);
    const w = (event) => {
      each(event);
      if (kinds.includes(event.type) && !seen[event.type]) seen[event.type] = event;
      if (Object.keys(seen).length === kinds.length) {
        clearTimeout(timer);
        waiters.splice(waiters.indexOf(w), 1);
        resolve(seen);
      }
    };
    waiters.push(w);
  });
}

function append(pcm) {
  for (let i = 0; i < pcm.length; i += CHUNK) {
    send({ type: 'input_audio_buffer.append', audio: pcm.subarray(i, i + CHUNK).toString('base64') });
  }
}

const prompt = readPrompt(wavPath);
const summary = {};
const created = await until(['session.created']);
summary.session_id = created['session.created'].session.id;
const updated = until(['session.updated']);
send({ type: 'session.update', session: { type: 'realtime', audio: { input: { turn_detection: null } } } });
await updated;

// 1. push-to-talk
const reply = [];
const turn = until(['input_audio_buffer.committed', 'response.done'], (e) => {
  if (e.type === 'response.output_audio.delta') reply.push(Buffer.from(e.delta, 'base64'));
});
append(prompt);
send({ type: 'input_audio_buffer.commit' });
send({ type: 'response.create' });
const t = await turn;
const replyPcm = Buffer.concat(reply);
writeFileSync(`${outDir}/reply.pcm`, replyPcm);
summary.turn = { status: t['response.done'].response.status, reply_bytes: replyPcm.length, prompt_bytes: prompt.length };

// 2. barge-in at 400 ms once 500 ms have arrived
let heard = 0;
let itemId = null;
const barge = until(['conversation.item.truncated', 'response.done'], (e) => {
  if (e.type !== 'response.output_audio.delta') return;
  heard += Buffer.from(e.delta, 'base64').length;
  if (itemId === null && heard >= 24000) {
    itemId = e.item_id;
    send({ type: 'conversation.item.truncate', item_id: itemId, content_index: 0, audio_end_ms: 400 });
  }
});
append(prompt);
send({ type: 'input_audio_buffer.commit' });
send({ type: 'response.create' });
const b = await barge;
summary.barge_in = {
  item_id: itemId,
  truncated_item: b['conversation.item.truncated'].item_id,
  audio_end_ms: b['conversation.item.truncated'].audio_end_ms,
  status: b['response.done'].response.status,
};

rt.close();
writeFileSync(`${outDir}/events.jsonl`, log.map((r) => JSON.stringify(r)).join('\n') + '\n');
summary.events = log.length;
console.log(JSON.stringify(summary, null, 1));
process.exit(summary.turn.status === 'completed' && summary.barge_in.status === 'cancelled' ? 0 : 1);
