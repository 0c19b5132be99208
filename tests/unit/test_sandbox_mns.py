"""The sandbox's MNS parts without HTTP: queue semantics under a fake clock, and request authentication
(the official SDK's SendMessage capture must pass, tampered, stale or unscoped requests must not)."""

from __future__ import annotations

import email.utils

import pytest
from multidict import CIMultiDict

from fallback_daemon.providers import mns, signing
from fallback_daemon.sandbox import journal, mnsauth, mnsqueue

NOW = 1_800_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def stats() -> journal.Stats:
    return journal.Stats()


@pytest.fixture
def queue(clock: Clock, stats: journal.Stats) -> mnsqueue.Queue:
    return mnsqueue.Queue("q", visibility_timeout_s=30, stats=lambda: stats, clock=clock)


async def test_receive_hides_then_redelivers_with_growing_dequeue_count(
    queue: mnsqueue.Queue, clock: Clock, stats: journal.Stats
) -> None:
    """A received message is invisible for the visibility timeout, then comes back with DequeueCount 2."""
    sent = queue.send("aGVsbG8=")
    [first] = await queue.receive(16, 0)
    assert (first.message_id, first.dequeue_count, first.body_md5) == (
        sent.message_id,
        1,
        mnsqueue.body_md5("aGVsbG8="),
    )
    assert first.next_visible_ms == int(NOW * 1000) + 30_000
    assert await queue.receive(16, 0) == []
    clock.now += 30
    [again] = await queue.receive(16, 0)
    assert (again.message_id, again.dequeue_count, again.first_dequeue_ms) == (
        sent.message_id,
        2,
        first.first_dequeue_ms,
    )
    assert again.handle != first.handle
    assert (stats.mns_enqueued, stats.mns_received, stats.mns_redelivered) == (1, 2, 1)


async def test_handle_dies_at_next_visible_time(
    queue: mnsqueue.Queue, clock: Clock, stats: journal.Stats
) -> None:
    """A handle used after its NextVisibleTime fails (MessageNotExist); the live handle works once."""
    queue.send("x")
    [d] = await queue.receive(1, 0)
    clock.now += 30
    assert queue.delete(d.handle) == "MessageNotExist"
    [d2] = await queue.receive(1, 0)
    assert queue.delete(d2.handle) is None
    assert queue.delete(d2.handle) == "MessageNotExist"
    assert queue.delete("garbage") == "ReceiptHandleError"
    assert (stats.mns_deleted, stats.mns_delete_errors) == (1, 3)
    assert queue.counts() == {"messages": 0, "inflight": 0, "visible": 0, "waiting": 0}


async def test_change_visibility_issues_a_new_handle(queue: mnsqueue.Queue, clock: Clock) -> None:
    """ChangeMessageVisibility returns a new handle (the old one stops working) and moves NextVisibleTime."""
    queue.send("x")
    [d] = await queue.receive(1, 0)
    changed = queue.change_visibility(d.handle, 1)
    assert not isinstance(changed, str)
    assert changed.handle != d.handle and changed.next_visible_ms == int(NOW * 1000) + 1000
    assert queue.delete(d.handle) == "MessageNotExist"
    clock.now += 1
    [again] = await queue.receive(1, 0)
    assert again.dequeue_count == 2


async def test_long_poll_wakes_on_send(queue: mnsqueue.Queue) -> None:
    """A waiting receive returns as soon as a message is sent, long before its wait ends."""
    import asyncio

    poll = asyncio.ensure_future(queue.receive(16, 30))
    await asyncio.sleep(0)
    assert not poll.done()
    queue.send("late")
    [d] = await asyncio.wait_for(poll, 1)
    assert d.body == "late"


# ---- authentication ----------------------------------------------------------------------------------------

SDK_BODY = (
    b'<?xml version="1.0" encoding="utf-8"?><Message xmlns="http://mns.aliyuncs.com/doc/v1/"><MessageBody>'
    b"eyJNZXNzYWdlSWQiOiJtMSIsIlN0YXR1cyI6IkRlbGl2ZXJlZCJ9</MessageBody></Message>"
)
SDK_HEADERS = {
    "Accept-Encoding": "identity",
    "Content-Length": "176",
    "Connection": "Keep-Alive",
    "content-md5": "Yzc3OTU4NWI2NTgyMjM2ZDI5M2VmYzhjODZlNGZjYWU=",
    "content-type": "text/xml;charset=UTF-8",
    "x-mns-version": "2015-06-06",
    "host": "127.0.0.1:32795",
    "date": "Sun, 29 Nov 2026 17:38:18 GMT",
    "user-agent": "aliyun-sdk-python/1.3.0(Linux/6.18.44-fc-v657/x86_64;3.11.7)",
    "Authorization": "MNS LTAI5tDUMMYDUMMYDUMMY01:SHneb8p9xQ2WFA1L0e3HYf5noOs=",
}
SDK_TIME = email.utils.parsedate_to_datetime("Sun, 29 Nov 2026 17:38:18 GMT").timestamp()


def _verifier(clock: Clock, tokens: mnsauth.Tokens | None = None) -> mnsauth.Verifier:
    return mnsauth.Verifier(
        access_key_id="LTAI5tDUMMYDUMMYDUMMY01",
        access_key_secret="DummySecretDummySecretDummy01",
        tokens=tokens or mnsauth.Tokens(ttl_s=5, clock=clock),
        max_skew_s=900,
        clock=clock,
    )


def _verify(
    verifier: mnsauth.Verifier, headers: dict[str, str], body: bytes = SDK_BODY, queue: str = "receipts"
) -> mnsauth.Denial | None:
    return verifier.verify(
        method="POST",
        resource=f"/queues/{queue}/messages",
        headers=CIMultiDict(headers),
        body=body,
        queue=queue,
    )


def test_official_sdk_request_is_accepted(clock: Clock) -> None:
    """The appendix B SendMessage request, verbatim, passes the sandbox's MNS verification."""
    clock.now = SDK_TIME + 60
    assert _verify(_verifier(clock), SDK_HEADERS) is None


@pytest.mark.parametrize(
    ("change", "status", "code"),
    [
        ({"Authorization": None}, 400, "MissingAuthorizationHeader"),
        ({"Authorization": "MNS nocolon"}, 400, "InvalidAuthorizationHeader"),
        ({"x-mns-version": None}, 400, "MissingVersionHeader"),
        ({"date": "yesterday"}, 400, "InvalidDateHeader"),
        ({"date": "Sun, 29 Nov 2026 17:00:00 GMT"}, 408, "TimeExpired"),
        ({"content-md5": "AAAA"}, 400, "InvalidDigest"),
        ({"Authorization": "MNS other:SHneb8p9xQ2WFA1L0e3HYf5noOs="}, 403, "InvalidAccessKeyId"),
        (
            {"Authorization": "MNS LTAI5tDUMMYDUMMYDUMMY01:AAAAb8p9xQ2WFA1L0e3HYf5noOs="},
            403,
            "SignatureDoesNotMatch",
        ),
    ],
)
def test_bad_requests_are_refused(
    clock: Clock, change: dict[str, str | None], status: int, code: str
) -> None:
    """Each tampered header is refused with MNS's status and error code."""
    clock.now = SDK_TIME
    headers = {k: v for k, v in SDK_HEADERS.items() if k not in change}
    headers.update({k: v for k, v in change.items() if v is not None})
    denial = _verify(_verifier(clock), headers)
    assert denial is not None
    assert (denial.status, denial.code) == (status, code)


def _signed(creds: mns.Credentials, queue: str, clock: Clock) -> dict[str, str]:
    return mns.signed_headers(
        creds,
        method="POST",
        resource=f"/queues/{queue}/messages",
        date=mns.http_date(clock.now),
        body=SDK_BODY,
    )


def test_temporary_credentials_are_scoped_and_expire(clock: Clock) -> None:
    """A token works only on its own Alicom queue, only with its security-token, and only until it expires;
    the static key cannot read Alicom queues."""
    from fallback_daemon import config

    tokens = mnsauth.Tokens(ttl_s=5, clock=clock)
    verifier = _verifier(clock, tokens)
    alicom = "Alicom-Queue-1-ChatAppStatus"
    token = tokens.issue(alicom)
    creds = mns.Credentials(
        access_key_id=token.access_key_id,
        access_key_secret=config.Secret(token.access_key_secret),
        security_token=config.Secret(token.security_token),
    )
    assert _verify(verifier, _signed(creds, alicom, clock), queue=alicom) is None
    other = _verify(
        verifier, _signed(creds, "Alicom-Queue-1-SmsReport", clock), queue="Alicom-Queue-1-SmsReport"
    )
    assert other is not None and other.code == "AccessDenied"
    no_token = _signed(creds, alicom, clock)
    del no_token["security-token"]
    denial = _verify(verifier, no_token, queue=alicom)
    assert denial is not None and (denial.code, denial.token) == ("AccessDenied", True)
    static = mns.Credentials(
        access_key_id="LTAI5tDUMMYDUMMYDUMMY01",
        access_key_secret=config.Secret("DummySecretDummySecretDummy01"),
    )
    denial = _verify(verifier, _signed(static, alicom, clock), queue=alicom)
    assert denial is not None and denial.code == "AccessDenied"
    clock.now += 5
    denial = _verify(verifier, _signed(creds, alicom, clock), queue=alicom)
    assert denial is not None and (denial.status, denial.code, denial.token) == (
        403,
        "SecurityTokenExpired",
        True,
    )
    assert signing.mns_content_md5(SDK_BODY) == SDK_HEADERS["content-md5"]
