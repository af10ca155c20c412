#!/usr/bin/env python3
"""A Realtime application written against the official `openai` Python SDK (pinned in .venv by
scripts/setup), pointed at `voq serve`'s `/v1/realtime`: the SDK as its users call it,
`AsyncOpenAI(websocket_base_url=...)` and `client.realtime.connect(...)`.

usage: realtime_sdk.py WS_BASE_URL PROMPT.wav OUT_DIR [--insecure]
  WS_BASE_URL  like ws://127.0.0.1:4443/v1 (the SDK appends /realtime); wss:// with --insecure
               skips certificate checks (voq's development certificate)

Three turns:
  1. push-to-talk as a Realtime app does it: turn_detection null, append the prompt in 100 ms
     chunks, commit, response.create; the reply's audio deltas are kept (OUT_DIR/reply.pcm).
  2. barge-in: the same, then conversation.item.truncate at 400 ms once 500 ms have arrived.
  3. server VAD: append the prompt and 1.5 s of silence; the server cuts and answers.
Writes every event, both directions, to OUT_DIR/events.jsonl (as `voq call --events` does) and
prints a JSON summary. Exits 1 when the server's answers are not what the Realtime API promises.
"""

import asyncio
import base64
import json
import ssl
import sys
import time
import wave

from openai import AsyncOpenAI

CHUNK = 4800  # bytes: 100 ms of 24 kHz pcm16
DEADLINE = 30.0


class _AllSeen(Exception):
    pass


class Session:
    def __init__(self, conn):
        self.conn = conn
        self.log = []
        self.start = time.monotonic()

    def _at(self):
        return (time.monotonic() - self.start) * 1000

    async def send(self, event):
        self.log.append({"at_ms": self._at(), "direction": "sent", "event": event})
        await self.conn.send(event)

    async def until(self, kind, keep=None):
        """Reads events until one of type `kind`; passes each to `keep` first."""
        deadline = time.monotonic() + DEADLINE
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {kind} within {DEADLINE} s")
            raw = await asyncio.wait_for(self.conn.recv_bytes(), left)
            event = json.loads(raw)
            self.log.append({"at_ms": self._at(), "direction": "received", "event": event})
            parsed = self.conn.parse_event(raw)  # the SDK's own parsing must take it
            if event["type"] == "error":
                print(f"server error: {event['error']}", file=sys.stderr)
            if keep:
                await keep(event, parsed)
            if event["type"] == kind:
                return event

    async def until_all(self, kinds, keep=None):
        """Reads until one event of each type in `kinds` has come, in any order."""
        seen = {}

        async def note(event, parsed):
            if keep:
                await keep(event, parsed)
            if event["type"] in kinds:
                seen.setdefault(event["type"], event)
                if len(seen) == len(kinds):
                    raise _AllSeen()

        try:
            await self.until("(none)", note)
        except _AllSeen:
            pass
        return seen

    async def append(self, pcm):
        for i in range(0, len(pcm), CHUNK):
            chunk = base64.b64encode(pcm[i : i + CHUNK]).decode()
            await self.send({"type": "input_audio_buffer.append", "audio": chunk})


async def run(url, prompt, insecure):
    client = AsyncOpenAI(api_key="voq-sdk-test", websocket_base_url=url)
    options = {}
    if insecure:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        options["ssl"] = context
    summary = {}
    async with client.realtime.connect(model="voq", websocket_connection_options=options) as conn:
        s = Session(conn)
        created = await s.until("session.created")
        summary["session_id"] = created["session"].get("id")
        summary["initial_turn_detection"] = created["session"]["audio"]["input"]["turn_detection"]
        await s.send({"type": "session.update", "session": {"type": "realtime", "instructions": "Echo me.",
                      "audio": {"input": {"turn_detection": None}}}})
        await s.until("session.updated")

        # 1. push-to-talk
        reply = bytearray()

        async def collect(event, _parsed):
            if event["type"] == "response.output_audio.delta":
                reply.extend(base64.b64decode(event["delta"]))

        await s.append(prompt)
        await s.send({"type": "input_audio_buffer.commit"})
        await s.send({"type": "response.create"})
        committed = await s.until("input_audio_buffer.committed", collect)
        done = await s.until("response.done", collect)
        summary["turn"] = {"item_id": committed["item_id"], "status": done["response"]["status"],
                           "reply_bytes": len(reply), "prompt_bytes": len(prompt)}
        with open(f"{OUT}/reply.pcm", "wb") as f:
            f.write(reply)

        # 2. barge-in at 400 ms, once 500 ms have arrived
        heard = {"bytes": 0, "item": None, "sent": False}

        async def barge(event, _parsed):
            if event["type"] == "response.output_audio.delta":
                heard["bytes"] += len(base64.b64decode(event["delta"]))
                heard["item"] = event["item_id"]
                if heard["bytes"] >= 24000 and not heard["sent"]:
                    heard["sent"] = True
                    await s.send({"type": "conversation.item.truncate", "item_id": heard["item"],
                                  "content_index": 0, "audio_end_ms": 400})

        await s.append(prompt)
        await s.send({"type": "input_audio_buffer.commit"})
        await s.send({"type": "response.create"})
        # voq stops the response (response.done, cancelled), then confirms the truncation.
        seen = await s.until_all(["conversation.item.truncated", "response.done"], barge)
        truncated, done = seen["conversation.item.truncated"], seen["response.done"]
        summary["barge_in"] = {"item_id": heard["item"], "truncated_item": truncated["item_id"],
                               "audio_end_ms": truncated["audio_end_ms"],
                               "status": done["response"]["status"]}

        # 3. server VAD
        await s.send({"type": "session.update", "session": {"type": "realtime",
                      "audio": {"input": {"turn_detection": {"type": "server_vad"}}}}})
        await s.until("session.updated")
        await s.append(prompt + bytes(2 * 24000 * 3 // 2))
        seen = await s.until_all(["input_audio_buffer.speech_started",
                                  "input_audio_buffer.speech_stopped", "response.done"])
        started = seen["input_audio_buffer.speech_started"]
        stopped = seen["input_audio_buffer.speech_stopped"]
        done = seen["response.done"]
        summary["vad"] = {"speech_started_ms": started["audio_start_ms"],
                          "speech_stopped_ms": stopped["audio_end_ms"],
                          "status": done["response"]["status"]}
    with open(f"{OUT}/events.jsonl", "w") as f:
        for record in s.log:
            f.write(json.dumps(record) + "\n")
    summary["events"] = len(s.log)
    return summary


def read_prompt(path):
    with wave.open(path, "rb") as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 24000), path
        return w.readframes(w.getnframes())


if __name__ == "__main__":
    if len(sys.argv) < 4:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    OUT = sys.argv[3]
    result = asyncio.run(run(sys.argv[1], read_prompt(sys.argv[2]), "--insecure" in sys.argv[4:]))
    print(json.dumps(result, indent=1))
    ok = (result["turn"]["status"] == "completed" and result["barge_in"]["status"] == "cancelled"
          and result["vad"]["status"] == "completed")
    sys.exit(0 if ok else 1)
