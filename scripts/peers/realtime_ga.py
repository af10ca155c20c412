#!/usr/bin/env python3
"""Checks control events against the OpenAI Realtime API's GA types, as the official `openai`
Python package defines them (pinned in .venv by scripts/setup).

Input: JSON-lines files of `voq call --events` ({"direction": "sent"|"received", "event": {...}}).
Every event whose `type` is a Realtime name must validate against the SDK's pydantic model for
that type (RealtimeClientEvent for what the client sent, RealtimeServerEvent for what the server
sent), and may carry no field the model does not define except voq's own (`voq`, at any level;
and `id` on the session object, which the Realtime API's own server sends though its GA type
omits it). voq-only event types (voq.ping, voq.pong, output_audio_buffer.played) are counted,
not checked.

Prints a JSON summary on stdout: {"checked": N, "voq_only": N, "types": {"sent": [...],
"received": [...]}, "failures": [...]}; exits 1 when anything failed, 2 on unusable input.
"""

import json
import sys
import typing

import openai
import pydantic
from openai.types.realtime import (
    RealtimeClientEvent,
    RealtimeServerEvent,
    RealtimeSessionCreateRequest,
)

VOQ_ONLY = {
    "sent": {"voq.ping", "output_audio_buffer.played"},
    "received": {"voq.pong", "voq.session.resumed"},
}


def models_by_type(union):
    """The SDK's event models of a union, by their `type` literal (the union's discriminator)."""
    while typing.get_origin(union) is typing.Annotated:
        union = typing.get_args(union)[0]
    models = {}
    for model in typing.get_args(union):
        (literal,) = typing.get_args(model.model_fields["type"].annotation)
        models[literal] = model
    return models


MODELS = {
    "sent": models_by_type(RealtimeClientEvent),
    "received": models_by_type(RealtimeServerEvent),
}


def unknown_fields(value, path):
    """Fields the SDK's models do not define, other than voq's own, anywhere in `value`."""
    found = []
    if isinstance(value, pydantic.BaseModel):
        allowed = {"voq"}
        if isinstance(value, RealtimeSessionCreateRequest):
            allowed.add("id")
        for key in (value.model_extra or {}):
            if key not in allowed:
                found.append(f"{path}.{key}")
        for name in type(value).model_fields:
            found += unknown_fields(getattr(value, name), f"{path}.{name}")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            found += unknown_fields(item, f"{path}[{i}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            found += unknown_fields(item, f"{path}.{key}")
    return found


def main(paths):
    checked = 0
    voq_only = 0
    types = {"sent": set(), "received": set()}
    failures = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                    direction = record["direction"]
                    event = record["event"]
                    kind = event["type"]
                except (ValueError, KeyError, TypeError) as e:
                    print(f"{path}:{number}: not an event record: {e}", file=sys.stderr)
                    return 2
                if direction not in MODELS:
                    print(f"{path}:{number}: unknown direction {direction!r}", file=sys.stderr)
                    return 2
                if kind in VOQ_ONLY[direction]:
                    voq_only += 1
                    continue
                checked += 1
                types[direction].add(kind)
                where = f"{path}:{number} ({direction} {kind})"
                model_class = MODELS[direction].get(kind)
                if model_class is None:
                    failures.append(f"{where}: not an event type of the Realtime GA API")
                    continue
                try:
                    # Strict: "640" is not an integer, as a typed client would find out.
                    model = model_class.model_validate(event, strict=True)
                except pydantic.ValidationError as e:
                    errors = [(err["loc"], err["msg"]) for err in e.errors()[:5]]
                    failures.append(f"{where}: {model_class.__name__}: {errors}")
                    continue
                extra = unknown_fields(model, kind)
                if extra:
                    failures.append(f"{where}: fields the GA types do not define: {extra}")
    summary = {
        "openai": openai.__version__,
        "checked": checked,
        "voq_only": voq_only,
        "types": {d: sorted(t) for d, t in types.items()},
        "failures": failures,
    }
    print(json.dumps(summary, indent=1))
    return 1 if failures else 0


if __name__ == "__main__":
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1:]))
