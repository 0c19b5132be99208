"""Scripted provider ports shared by the unit tests (in-memory store) and the integration tests (Postgres).

Each fake answers its calls from a script of words, one per call ("ok" once the script is used up):

- "ok": the provider takes it and answers with an id.
- "refused": nothing sent (connection refused): `errors.TransientError`.
- "throttled": nothing sent: `errors.Throttled` with `retry_after_s`.
- "rejected": a final refusal: `errors.PermanentError`.
- "lost": the connection died while the request was written, nothing arrived: `errors.AmbiguousError`.
- "ambiguous": the provider received it but the answer was lost: `errors.AmbiguousError`.

Lookups answer from `lookups` in turn, then `lookup` (UNKNOWN unless told; FOUND carries `found_id`).
"""

from __future__ import annotations

import collections
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime

from fallback_daemon.core import errors, ports


class _Script:
    found_id = "found"  # the provider id a FOUND lookup carries

    def __init__(
        self,
        *answers: str,
        lookups: Sequence[ports.Lookup] = (),
        lookup: ports.LookupResult = ports.LookupResult.UNKNOWN,
        retry_after_s: float = 0.001,
    ) -> None:
        self.script = collections.deque(answers)
        self.lookups = collections.deque(lookups)
        self.fallback_lookup = ports.Lookup(
            result=lookup, provider_id=self.found_id if lookup is ports.LookupResult.FOUND else None
        )
        self.retry_after_s = retry_after_s
        self.received: list[str] = []  # our ids the provider really received
        self.excluded: list[Collection[str]] = []  # each chat lookup's exclude_ids
        self.calls = 0
        self.lookup_calls = 0

    def _answer(self, our_id: str, rejected: str) -> str:
        """Play the next scripted answer for a request carrying `our_id`; returns the provider's id."""
        self.calls += 1
        answer = self.script.popleft() if self.script else "ok"
        if answer == "refused":
            raise errors.TransientError("connect failed: connection refused")
        if answer == "throttled":
            raise errors.Throttled(
                "Throttling.User", code="Throttling.User", retry_after_s=self.retry_after_s
            )
        if answer == "rejected":
            raise errors.PermanentError(rejected)
        if answer == "lost":
            raise errors.AmbiguousError("connection reset while writing")
        self.received.append(our_id)
        if answer == "ambiguous":
            raise errors.AmbiguousError("no answer after sending")
        return str(len(self.received))

    def _lookup(self) -> ports.Lookup:
        self.lookup_calls += 1
        return self.lookups.popleft() if self.lookups else self.fallback_lookup


class ScriptedSms(_Script):
    """An `SmsGateway` (a plain one: `route` returns itself) whose answers are scripted per call."""

    name = "scripted"
    found_id = "sms-found"

    def route(self, *, to: str, channel: str) -> ScriptedSms:
        return self

    async def send(self, *, fallback_id: str, to: str, text: str, template_params: Mapping[str, str]) -> str:
        return "sms-" + self._answer(fallback_id, "isv.MOBILE_NUMBER_ILLEGAL")

    async def lookup(self, *, fallback_id: str, to: str, since: datetime, until: datetime) -> ports.Lookup:
        return self._lookup()


class ScriptedChat(_Script):
    """A `ChatApi` whose send answers and lookups are scripted; it records each lookup's `exclude_ids`."""

    found_id = "cams-found"

    async def send(self, *, task_id: str, params: Mapping[str, str]) -> str:
        return "cams-" + self._answer(task_id, "InvalidParameter.To")

    async def lookup(
        self,
        *,
        task_id: str,
        params: Mapping[str, str],
        since: datetime,
        until: datetime,
        exclude_ids: Collection[str] = (),
    ) -> ports.Lookup:
        self.excluded.append(exclude_ids)
        return self._lookup()
