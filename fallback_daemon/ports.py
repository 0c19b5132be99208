"""The small Protocols the service layer sees; adapters in providers/ implement them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol


class ChatApi(Protocol):
    """CAMS SendChatappMessage."""

    async def send(self, *, task_id: str, params: Mapping[str, str]) -> str:
        """Send one message with our id as TaskId; return the provider MessageId.

        Raises:
            errors.TransientError, errors.PermanentError, errors.AmbiguousError
        """
        ...


class SmsGateway(Protocol):
    """An SMS provider for the fallback leg."""

    name: str

    async def send(self, *, fallback_id: str, to: str, text: str) -> str:
        """Send one SMS carrying our fallback id as its reference; return the provider's id."""
        ...
