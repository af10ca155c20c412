#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets into fuzz/seeds/<target>/: small, valid inputs that
reach each decoder's and state machine's interesting paths at once (libFuzzer mutates from
there). Deterministic; run it again after changing the targets' input formats, and commit the
result."""
import json, os, shutil, struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seeds")


def event(obj):
    body = json.dumps(obj, separators=(",", ":")).encode()
    return struct.pack(">I", len(body)) + body


def header(kind, item_id, response_id=None, codec="pcm16"):
    h = {"item_id": item_id, "codec": codec, "sample_rate": 24000, "frame_ms": 20}
    if response_id:
        h["response_id"] = response_id
    body = json.dumps(h, separators=(",", ":")).encode()
    return bytes([kind]) + struct.pack(">H", len(body)) + body


def frame(pts, payload):
    return struct.pack(">HI", len(payload), pts) + payload


def chunks(data, op, stream=None):
    """Splits `data` into ops `op [stream] len bytes` of at most 255 bytes."""
    out = b""
    for i in range(0, len(data), 255):
        part = data[i : i + 255]
        out += bytes([op]) + (bytes([stream]) if stream is not None else b"") + bytes([len(part)]) + part
    return out


def write(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def main():
    shutil.rmtree(ROOT, ignore_errors=True)
    pcm = {"type": "audio/pcm", "rate": 24000}
    update = event({"type": "session.update", "session": {"type": "realtime", "audio": {"input": {"format": pcm, "turn_detection": None}}}})
    vad = event({"type": "session.update", "session": {"turn_detection": {"type": "server_vad"}}})
    turn = header(1, "item_c1") + b"".join(frame(i * 480, bytes([i]) * 960) for i in range(3))

    # wire: first byte is the split point.
    write("wire", "event", bytes([3]) + update)
    write("wire", "audio", bytes([7]) + turn)

    # server_session: opcodes 0 control, 1 stream data, 2 fin, 8 time, 11 timeout.
    ptt = chunks(update, 0) + chunks(turn, 1, 0) + bytes([2, 0]) + bytes([8, 50]) * 4 + bytes([11, 11])
    write("server_session", "push_to_talk", ptt)
    write("server_session", "server_vad", chunks(vad, 0) + chunks(turn, 1, 1) + bytes([5, 1, 1, 5, 0, 9]))
    write("server_session", "barge_in", ptt + chunks(event({"type": "conversation.item.truncate", "item_id": "item_2", "content_index": 0, "audio_end_ms": 100}), 0))
    write("server_session", "agent", ptt + bytes([6, 0, 20]) + bytes(20) + bytes([7, 0]))

    # client_session: opcodes 0 control, 1 agent stream data, 2 fin, 5 start turn, 6 audio, 7 end, 9 render.
    pcm = {"type": "audio/pcm", "rate": 24000}
    created = event({"type": "session.created", "event_id": "event_1", "session": {"type": "realtime", "id": "sess_1", "audio": {"input": {"format": pcm, "turn_detection": None}, "output": {"format": pcm}}, "voq": {"version": "voq/1", "send_ahead_ms": 2000, "played_report_interval_ms": 100, "transport": "quic"}}})
    resp = event({"type": "response.created", "event_id": "event_2", "response": {"object": "realtime.response", "id": "resp_1", "status": "in_progress", "output": [{"id": "item_2", "type": "message", "role": "assistant", "content": [{"type": "output_audio"}]}]}})
    reply = header(2, "item_2", "resp_1") + b"".join(frame(i * 480, bytes([i]) * 960) for i in range(3))
    write("client_session", "reply", chunks(created, 0) + bytes([5, 6, 4, 1, 2, 3, 4, 7]) + chunks(resp, 0) + chunks(reply, 1, 0) + bytes([2, 0, 9, 40, 120, 9, 40, 120]))
    write("client_session", "barge_in", chunks(created + resp, 0) + chunks(reply, 1, 0) + bytes([9, 20, 120, 8, 9, 20, 120]))

    # proxy_v2: a UDP-over-IPv4 header, then a datagram.
    sig = b"\r\n\r\n\x00\r\nQUIT\n"
    v4 = sig + bytes([0x21, 0x12]) + struct.pack(">H", 12) + bytes([198, 18, 0, 1, 198, 18, 0, 2]) + struct.pack(">HH", 5000, 4443)
    write("proxy_v2", "ipv4", v4 + b"\xc0quic")
    v6 = sig + bytes([0x21, 0x22]) + struct.pack(">H", 36) + bytes(15) + b"\x01" + bytes(15) + b"\x02" + struct.pack(">HH", 5000, 4443)
    write("proxy_v2", "ipv6", v6 + b"\x40quic")

    # token: mode 0 a token, 1 mutations of a real one, 2 a key set.
    write("token", "jwt", b"\x00eyJhbGciOiJFUzI1NiIsImtpZCI6ImVzIn0.eyJzdWIiOiJhIiwiZXhwIjoxLCJhdWQiOiJ2b3EifQ.c2ln")
    write("token", "mutate", b"\x01\x05\x09\x20")
    jwks = {"keys": [{"kty": "oct", "kid": "k", "alg": "HS256", "k": "A" * 43}, {"kty": "EC", "crv": "P-256", "kid": "e", "x": "A" * 43, "y": "A" * 43}]}
    write("token", "jwks", b"\x02" + json.dumps(jwks).encode())

    # config: voq serve and voq lb TOML.
    write("config", "serve", 'listen = "127.0.0.1:4443"\nagent = "echo"\nserver-id = "0a01"\nlb-key = "8f8f8f8f8f8f8f8f8f8f8f8f8f8f8f8f"\nmax-sessions = 10\nallow-origin = ["https://app.example"]\n')
    write("config", "lb", 'listen = "127.0.0.1:443"\nlb-config-id = 0\nlb-server-id-len = 2\nlb-nonce-len = 8\n[[backend]]\nserver-id = "0001"\naddress = "127.0.0.1:4443"\n')

    # route: a long-header Initial and a short-header packet to a config-0 CID (3-octet server id).
    cid = bytes([0x07, 1, 2, 3, 9, 9, 9, 9])
    write("route", "long", bytes([0xc0]) + b"\x00\x00\x00\x01" + bytes([len(cid)]) + cid + b"\x00" + bytes(20))
    write("route", "short", bytes([0x40]) + cid + bytes(20))

    # mux: a STREAM frame; mux_connection: side byte, then ops.
    write("mux", "stream", bytes([0x00, 0x04]) + update)
    write("mux_connection", "open_and_data", bytes([0x01]) + bytes([(5 << 3) | 0]) + bytes([0x00, 0x02, 1, 2, 3]))


if __name__ == "__main__":
    main()
