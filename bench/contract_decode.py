"""Decode + validate one send body: msgspec (the contract's struct) against pydantic v2 and the daemon's own
path, best of 5 x 200,000 (docs/architecture.md, "One declaration of the contract").

    .venv/bin/python -m bench.contract_decode

pydantic is not a dependency of the daemon (schemathesis brings it into the test environment); the model
below mirrors `schemas.SendMessage` for the fields the body uses, in strict mode with unknown fields
forbidden, as the struct is.
"""

from __future__ import annotations

import json
import timeit
from typing import Annotated, Any, Literal

import msgspec
import pydantic

from fallback_daemon.core import validation
from fallback_daemon.web import schemas

BODY = json.dumps(
    {
        "ChannelType": "whatsapp",
        "Type": "message",
        "MessageType": "text",
        "From": "6580000000",
        "To": "6591234567",
        "Content": {"text": "hello"},
        "TaskId": "order-77",
        "FallBackRule": "undelivered",
        "FallBackDuration": 120,
        "FallBackContent": "hello by SMS",
    }
).encode()


class SendMessage(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", strict=True)

    ChannelType: Literal["whatsapp", "messenger", "instagram", "telegram", "viber"]
    Type: Literal["template", "message"]
    From: Annotated[str, pydantic.Field(min_length=1, max_length=128)]
    To: Annotated[str, pydantic.Field(min_length=1, max_length=128)]
    MessageType: Annotated[str, pydantic.Field(max_length=64)] | None = None
    Content: dict[str, Any] | str | None = None
    TaskId: Annotated[str, pydantic.Field(min_length=1, max_length=255)] | None = None
    FallBackRule: Literal["undelivered", "sentFailed", "sentfailed", "unread"] | None = None
    FallBackDuration: Annotated[int, pydantic.Field(ge=60, le=43200)] | None = None
    FallBackContent: Annotated[str, pydantic.Field(min_length=1, max_length=1600)] | None = None


def main(number: int = 200_000) -> None:
    decoder = msgspec.json.Decoder(schemas.SendMessage)
    assert decoder.decode(BODY).To == SendMessage.model_validate_json(BODY).To
    candidates = {
        "msgspec (schemas.SendMessage)": lambda: decoder.decode(BODY),
        "pydantic v2 (strict model)": lambda: SendMessage.model_validate_json(BODY),
        "json.loads alone": lambda: json.loads(BODY),
        "validation.loads + validate_send": lambda: validation.validate_send(validation.loads("body", BODY)),
    }
    for name, call in candidates.items():
        best = min(timeit.repeat(call, number=number, repeat=5)) / number
        print(f"{name:36s} {best * 1e6:6.2f} µs per body")
    print(f"msgspec {msgspec.__version__}, pydantic {pydantic.VERSION}")


if __name__ == "__main__":
    main()
