#!/usr/bin/env python3
"""A voq exec agent in plain Python (no dependencies): answers each turn with the user's own
audio, played back at half volume — enough to show the whole protocol.

Run it with:  voq serve --agent "exec:python3 examples/agents/echo_agent.py"

voq writes one JSON event per line on stdin (OpenAI Realtime shapes, base64 pcm16 24 kHz mono):
  input_audio_buffer.append {audio}, input_audio_buffer.commit {item_id},
  response.create {response: {id}}, response.cancel {response_id}
and reads from stdout:
  response.output_audio.delta {response_id, delta}, response.done {response: {id, status}}
"""
import base64
import json
import struct
import sys

CHUNK = 24000 * 2 // 10  # 100 ms of pcm16 per delta


def send(event):
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def main():
    audio = bytearray()
    for line in sys.stdin:
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            print(f"echo_agent: skipping a line that is not JSON: {line[:60]!r}", file=sys.stderr)
            continue
        kind = event.get("type")
        if kind == "input_audio_buffer.append":
            audio += base64.b64decode(event["audio"])
        elif kind == "input_audio_buffer.commit":
            pass
        elif kind == "response.create":
            response_id = event["response"]["id"]
            samples = struct.unpack(f"<{len(audio) // 2}h", bytes(audio[: len(audio) // 2 * 2]))
            quieter = struct.pack(f"<{len(samples)}h", *(s // 2 for s in samples))
            for i in range(0, len(quieter), CHUNK):
                delta = base64.b64encode(quieter[i : i + CHUNK]).decode()
                send({"type": "response.output_audio.delta", "response_id": response_id, "delta": delta})
            send({"type": "response.done", "response": {"id": response_id, "status": "completed"}})
            audio = bytearray()
        elif kind == "response.cancel":
            pass  # this agent answers in one go; a streaming model would stop generating here


if __name__ == "__main__":
    main()
