"""`python -m bench.micro`: micro-benchmarks of two per-message costs, to judge levers before changing code.

1. JSON codecs on the payloads the daemon handles per message: an accept body (one message, and a batch of
   500), a receipt push (100 ChatApp reports), and the jsonb parameter of one stored message; encode and
   decode with the stdlib `json` (what the daemon uses), `orjson` and `msgspec.json`, where installed.
2. The decision log line: structlog's processor chain as `fallback_daemon.logs` configures it (contextvars,
   level, ISO timestamp, exc_info, `mask_phones`, `scrub_secrets`, msgspec JSON renderer) on a typical
   `decision` event, against the same chain with the stdlib json (or orjson) renderer and without the two
   scrubbing processors; then each processor and renderer alone, the scrubbers also on an event that makes
   them take their slow path.
3. A batch accept's body (500 messages) through the web layer's checks: decoding, the NUL / lone-surrogate
   walk (`validation.check_tree`, which `loads_body` skips for bytes that cannot hold such text), and
   `validate_batch`.

Figures are microseconds per operation (best of 5 repeats), single-threaded, on whatever else the machine is
running; the ratios are what to compare.
"""

from __future__ import annotations

import argparse
import importlib
import io
import json
import sys
import timeit
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import structlog

from bench import replicas
from fallback_daemon import config, logs
from fallback_daemon.core import validation


def best_us(fn: Callable[[], Any], number: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=5)) / number * 1e6


def receipt(i: int) -> dict[str, Any]:
    """A ChatApp status report as the provider pushes it (an array of these per push)."""
    return {
        "MessageId": f"0a1b2c3d4e5f{i:08d}",
        "Status": "Delivered",
        "Timestamp": 1764650000000 + i,
        "From": "6580000000",
        "To": f"65{i:08d}",
        "ChannelType": "whatsapp",
        "ErrorCode": "",
        "ErrorDescription": "",
        "ConversationId": f"conv-{i}",
    }


def payloads() -> dict[str, Any]:
    one = replicas.body(7)
    return {
        "accept, 1 message": one,
        "accept batch, 500": {"messages": [replicas.body(i) for i in range(500)]},
        "receipt push, 100 reports": [receipt(i) for i in range(100)],
        "jsonb params, 1 message": {"ChannelType": "whatsapp", "TemplateParams": {"order": "7"}},
    }


Codec = tuple[Callable[[Any], Any], Callable[[Any], Any]]


def codecs() -> dict[str, Codec]:
    out: dict[str, Codec] = {"json (stdlib)": (json.dumps, json.loads)}
    try:
        orjson = importlib.import_module("orjson")
        out["orjson"] = (orjson.dumps, orjson.loads)
    except ImportError:
        pass
    try:
        msgspec_json = importlib.import_module("msgspec.json")
        out["msgspec.json"] = (msgspec_json.encode, msgspec_json.decode)
    except ImportError:
        pass
    return out


def json_table() -> list[str]:
    lines = ["payload | bytes | " + " | ".join(f"{n} enc / dec µs" for n in codecs())]
    for name, value in payloads().items():
        text = json.dumps(value)
        number = 20 if len(text) > 50_000 else 2000
        cells = []
        for enc, dec in codecs().values():
            encoded = enc(value)
            enc_us = best_us(lambda e=enc, v=value: e(v), number)
            dec_us = best_us(lambda d=dec, b=encoded: d(b), number)
            cells.append(f"{enc_us:.1f} / {dec_us:.1f}")
        lines.append(f"{name} | {len(text):,} | " + " | ".join(cells))
    return lines


def decision_event() -> dict[str, Any]:
    """The keywords of a typical `decision` line (outcomes.py: a Delivered receipt cancels a timer)."""
    return {
        "message_id": str(uuid.uuid4()),
        "kind": "receipt_delivered",
        "status": "Delivered",
        "provider_message_id": "0a1b2c3d4e5f00000007",
        "receipt_at": "2026-12-02T04:30:00.123000+00:00",
        "outcome": "cancelled",
        "chat": "delivered",
        "fallback": "cancelled",
        "to": "6500000007",
    }


def logger_for(processors: list[Any]) -> tuple[Any, io.StringIO]:
    out = io.StringIO()
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(20),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    return structlog.get_logger(), out


def log_table() -> list[str]:
    logs.register_secrets(
        config.Settings(
            api_token=config.Secret("bench-api-token-0123456789"),
            receipt_token=config.Secret("bench-receipt-token-0123456789"),
        )
    )
    event = decision_event()
    full = logs.processors()
    unscrubbed = [p for p in full if p not in (logs.mask_phones, logs.scrub_secrets)]
    stdlib_json = structlog.processors.JSONRenderer()
    chains: dict[str, list[Any]] = {
        "as configured (msgspec renderer)": [*full, logs.render_json],
        "as configured, stdlib json renderer": [*full, stdlib_json],
        "without mask_phones + scrub_secrets (msgspec)": [*unscrubbed, logs.render_json],
        "without mask_phones + scrub_secrets (stdlib json)": [*unscrubbed, stdlib_json],
    }
    try:
        orjson = importlib.import_module("orjson")
        chains["as configured, orjson renderer"] = [
            *full,
            structlog.processors.JSONRenderer(serializer=lambda o, **_: orjson.dumps(o).decode()),
        ]
    except ImportError:
        pass
    lines = ["chain | µs per line"]
    for name, chain in chains.items():
        log, out = logger_for(chain)

        def line(log: Any = log, out: io.StringIO = out) -> None:
            log.info("decision", **event)
            out.seek(0)
            out.truncate()

        lines.append(f"{name} | {best_us(line, 5000):.1f}")
    ev = {"event": "decision", **event}
    # The slow path: a free-text field that quotes a number and a credential (every string is then scanned).
    hit = {**ev, "error": "refused for +6591234567: see https://x.example/receipts/abcdef0123456789/"}
    for name, proc, e in (
        ("mask_phones alone", logs.mask_phones, ev),
        ("scrub_secrets alone", logs.scrub_secrets, ev),
        ("mask_phones alone, a number in `error`", logs.mask_phones, hit),
        ("scrub_secrets alone, a receipt URL in `error`", logs.scrub_secrets, hit),
    ):
        lines.append(f"{name} | {best_us(lambda p=proc, e=e: p(None, 'info', dict(e)), 20000):.1f}")
    lines.append(f"msgspec renderer alone | {best_us(lambda: logs.render_json(None, 'info', ev), 20000):.1f}")
    lines.append(f"stdlib json renderer alone | {best_us(lambda: stdlib_json(None, 'info', ev), 20000):.1f}")
    return lines


def body_table() -> list[str]:
    raw = json.dumps({"messages": [replicas.body(k) for k in range(500)]}).encode()
    value = validation.loads("body", raw)

    def walked() -> None:  # what read_json did before loads_body
        decoded = validation.loads("body", raw)
        validation.check_tree("body", decoded)
        validation.validate_batch(decoded)

    lines = ["batch body of 500 | µs per body", "---|---"]
    for name, fn in (
        ("decode (json.loads)", lambda: validation.loads("body", raw)),
        ("check_tree walk", lambda: validation.check_tree("body", value)),
        ("validate_batch", lambda: validation.validate_batch(value)),
        ("decode + walk + validate (before loads_body)", walked),
        (
            "loads_body + validate (the daemon's path)",
            lambda: validation.validate_batch(validation.loads_body(raw)),
        ),
    ):
        lines.append(f"{name} | {best_us(fn, 20):.0f}")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    argparse.ArgumentParser(prog="python -m bench.micro", description=__doc__).parse_args(argv)
    print("\n".join(json_table()))
    print()
    print("\n".join(log_table()))
    print()
    print("\n".join(body_table()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
