#!/usr/bin/env python3
"""An independent QUIC client (aioquic, pure Python) that speaks voq/1 from docs/PROTOCOL.md and
resumes with 0-RTT: each call reuses the newest session ticket, opens the control stream and
sends `session.update` before the handshake completes (0-RTT when a ticket is usable), waits for
`session.created`, and records whether the server accepted the early data and which server it
was (`session.created` carries `voq.server_id`).

Prints one JSON object: {"calls", "zero_rtt", "resumed", "by_server": {id: [calls, zero_rtt]}}.
Used by crates/voq-server/tests/lb.rs and for docs/BENCHMARKS.md; installed by scripts/setup
into .venv (aioquic pinned there)."""
import argparse
import asyncio
import json
import ssl
import struct

from aioquic.asyncio import connect
from aioquic.quic.configuration import QuicConfiguration


def event(obj):
    body = json.dumps(obj).encode()
    return struct.pack(">I", len(body)) + body


async def read_event(reader, timeout):
    head = await asyncio.wait_for(reader.readexactly(4), timeout)
    (length,) = struct.unpack(">I", head)
    return json.loads(await asyncio.wait_for(reader.readexactly(length), timeout))


async def one_call(host, port, ticket, timeout):
    config = QuicConfiguration(
        is_client=True,
        alpn_protocols=["voq/1"],
        verify_mode=ssl.CERT_NONE,
        server_name="localhost",
    )
    config.session_ticket = ticket
    new_tickets = []
    async with connect(
        host,
        port,
        configuration=config,
        session_ticket_handler=new_tickets.append,
        wait_connected=False,
    ) as client:
        # Before the handshake: with a ticket, this leaves in 0-RTT.
        reader, writer = await client.create_stream()
        writer.write(event({"type": "session.update", "session": {}}))
        await asyncio.wait_for(client.wait_connected(), timeout)
        server_id = None
        while True:
            ev = await read_event(reader, timeout)
            if ev.get("type") == "session.created":
                server_id = ev["session"].get("voq", {}).get("server_id")
                break
        tls = client._quic.tls
        accepted = bool(tls.early_data_accepted)
        resumed = bool(tls.session_resumed)
        writer.write_eof()
        client.close()
    return accepted, resumed, server_id, (new_tickets[-1] if new_tickets else None)


async def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--calls", type=int, default=20, help="resumed calls, after a first full one")
    p.add_argument("--timeout", type=float, default=10.0)
    args = p.parse_args()
    _, _, _, ticket = await one_call(args.host, args.port, None, args.timeout)
    if ticket is None:
        raise SystemExit("the server sent no session ticket")
    zero_rtt = resumed = 0
    by_server = {}
    for _ in range(args.calls):
        accepted, was_resumed, server_id, new = await one_call(args.host, args.port, ticket, args.timeout)
        ticket = new or ticket
        zero_rtt += accepted
        resumed += was_resumed
        row = by_server.setdefault(str(server_id), [0, 0])
        row[0] += 1
        row[1] += accepted
    print(json.dumps({"calls": args.calls, "zero_rtt": zero_rtt, "resumed": resumed, "by_server": by_server}))


if __name__ == "__main__":
    asyncio.run(main())
