"""The MNS adapter's pure parts: XML parsing (reference §3.2), request signing (reference §3.3 and the
official SDK capture in appendix B), error classification, and the Dybaseapi token handling."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest

from fallback_daemon import config
from fallback_daemon.core import errors, model
from fallback_daemon.providers import dybaseapi, mns, signing

REFERENCE_MESSAGES = """<?xml version="1.0" encoding="UTF-8"?>
<Messages xmlns="http://mns.aliyuncs.com/doc/v1/">
  <Message>
    <MessageId>0909AC939C3A61357F898A13F0DBEB97</MessageId>
    <ReceiptHandle>8-0zxjHAX72zPzaztyz0z6GXzcSROgZnrPNl</ReceiptHandle>
    <MessageBodyMD5>A9B134C465C384F49EB89A6E3870D996</MessageBodyMD5>
    <MessageBody>SSBhbSDmtYvor5XlrZfnrKbkuLIu</MessageBody>
    <EnqueueTime>1716809362651</EnqueueTime>
    <FirstDequeueTime>1716809369536</FirstDequeueTime>
    <NextVisibleTime>1716809419536</NextVisibleTime>
    <DequeueCount>1</DequeueCount>
    <Priority>10</Priority>
  </Message>
</Messages>"""

REFERENCE_ERROR = """<?xml version="1.0" encoding="UTF-8"?>
<Error xmlns="http://mns.aliyuncs.com/doc/v1/">
  <Code>MessageNotExist</Code>
  <Message>Message not exist.</Message>
  <RequestId>04bb60e3-28aa-4706-99b0-9345d834f266</RequestId>
  <HostId>mns.cn-hangzhou.aliyuncs.com</HostId>
</Error>"""

EXPECTED = mns.Message(
    message_id="0909AC939C3A61357F898A13F0DBEB97",
    receipt_handle="8-0zxjHAX72zPzaztyz0z6GXzcSROgZnrPNl",
    body="SSBhbSDmtYvor5XlrZfnrKbkuLIu",
    body_md5="A9B134C465C384F49EB89A6E3870D996",
    enqueue_time=1716809362651,
    first_dequeue_time=1716809369536,
    next_visible_time=1716809419536,
    dequeue_count=1,
    priority=10,
)
TEST_CREDS = mns.Credentials(
    access_key_id="TestAccessID", access_key_secret=config.Secret("TestAccessSecret")
)
MNS_DATE = "Thu, 09 Jul 2015 03:01:34 GMT"
QUEUE = "/queues/Alicom-Queue-1234567890-ChatAppStatus/messages"


# ---- XML ---------------------------------------------------------------------------------------------------


def test_parses_the_reference_batch_receive_example_exactly() -> None:
    """The §3.2 BatchReceiveMessage example parses to every field, and its MessageBodyMD5 verifies."""
    [message] = mns.parse_messages(REFERENCE_MESSAGES)
    assert message == EXPECTED
    assert message.md5_ok()


@pytest.mark.parametrize("xmlns", ["http://mns.aliyuncs.com/doc/v1/", "http://mns.aliyuncs.com/doc/v1", None])
def test_parsing_ignores_the_namespace_spelling(xmlns: str | None) -> None:
    """With the trailing slash, without it (the SDK test fixture), or with no namespace: the same messages."""
    text = REFERENCE_MESSAGES.replace(
        ' xmlns="http://mns.aliyuncs.com/doc/v1/"', f' xmlns="{xmlns}"' if xmlns else ""
    )
    assert mns.parse_messages(text) == [EXPECTED]


def test_a_single_message_root_is_one_message() -> None:
    """ReceiveMessage answers a bare <Message xmlns=…> root; it parses as a one-element batch."""
    inner = REFERENCE_MESSAGES.split("<Message>", 1)[1].rsplit("</Message>", 1)[0]
    text = f'<?xml version="1.0"?><Message xmlns="http://mns.aliyuncs.com/doc/v1">{inner}</Message>'
    assert mns.parse_messages(text) == [EXPECTED]


def test_parses_the_reference_error_body() -> None:
    """The §3.2 <Error> body yields its Code, Message and RequestId; other bodies are not errors."""
    err = mns.parse_error(REFERENCE_ERROR)
    assert err == mns.MnsError(
        code="MessageNotExist",
        message="Message not exist.",
        request_id="04bb60e3-28aa-4706-99b0-9345d834f266",
    )
    assert mns.parse_error(REFERENCE_MESSAGES) is None
    assert mns.parse_error(b"<html>bad gateway</html") is None


def test_parses_batch_delete_errors_and_visibility_answers() -> None:
    """<Errors> lists each failed handle; ChangeMessageVisibility answers under either root element."""
    body = (
        '<Errors xmlns="http://mns.aliyuncs.com/doc/v1/"><Error><ErrorCode>ReceiptHandleError</ErrorCode>'
        "<ErrorMessage>bad</ErrorMessage><ReceiptHandle>h-1</ReceiptHandle></Error></Errors>"
    )
    assert mns.parse_delete_errors(body) == [
        mns.MnsError(code="ReceiptHandleError", message="bad", receipt_handle="h-1")
    ]
    for root in ("ChangeVisibility", "Message"):
        text = (
            f"<{root} xmlns='http://mns.aliyuncs.com/doc/v1'><ReceiptHandle>new-1</ReceiptHandle>"
            f"<NextVisibleTime>1716809419536</NextVisibleTime></{root}>"
        )
        assert mns.parse_visibility(text) == ("new-1", 1716809419536)


def test_md5_mismatch_and_dtds_are_caught() -> None:
    """A body that does not match its MessageBodyMD5 is flagged; documents with a DTD are refused outright."""
    [message] = mns.parse_messages(REFERENCE_MESSAGES.replace("SSBhbSDm", "SSBhbSDn"))
    assert not message.md5_ok()
    with pytest.raises(ValueError, match="DTD"):
        mns.parse_messages('<!DOCTYPE x [<!ENTITY a "aaaa">]><Messages>&a;</Messages>')


def test_reference_alicom_body_md5() -> None:
    """The §2.4 simulator example: MessageBodyMD5 is the uppercase MD5 of the base64 text as transmitted."""
    body = (
        "eyJNZXNzYWdlSWQiOiIyMDIzMDc4NDY5NDYzNzAzMDAwMDAxIiwiRnJvbSI6Ijg2MTMxMDAwMDAwMDgiLCJUbyI6Ijg2MTM4MDAwMDAw"
        "MDgiLCJUaW1lc3RhbXAiOjE2OTEwNDM2MzgwMDAsIlN0YXR1cyI6IkRlbGl2ZXJlZCIsIlN0YXR1c0Rlc2NyaXB0aW9uIjoiRGVsaXZl"
        "cmVkIiwiTXNnRnJhbWVUeXBlIjoidGVtcGxhdGUiLCJUeXBlIjoiVEVNUExBVEUiLCJUYXNrSWQiOiJ0YXNrLTAwMDEiLCJPcmlnaW5Q"
        "aG9uZU51bWJlciI6Ijg2MTMxMDAwMDAwMDgiLCJUZW1wbGF0ZUNvZGUiOiI4MjA1NjE1NDcxMzI4MTMxODQiLCJDb252ZXJzYXRpb25U"
        "eXBlIjoidXRpbGl0eSIsIkNvbnZlcnNhdGlvbklkIjoiNzIyMjIyMDExMTEwMDAwIn0="
    )
    message = mns.Message(
        message_id="m",
        receipt_handle="h",
        body=body,
        body_md5="5F603108D9011B6CFBE2CEA5D5BF4931",
        enqueue_time=0,
        first_dequeue_time=0,
        next_visible_time=0,
        dequeue_count=1,
        priority=8,
    )
    assert message.md5_ok()


# ---- signing -----------------------------------------------------------------------------------------------


def test_client_signs_the_reference_vectors() -> None:
    """The client's BatchReceive and BatchDelete headers reproduce the §3.3 worked signatures exactly."""
    receive = mns.signed_headers(
        TEST_CREDS, method="GET", resource=QUEUE + "?numOfMessages=16&waitseconds=10", date=MNS_DATE
    )
    assert receive == {
        "Date": MNS_DATE,
        "x-mns-version": "2015-06-06",
        "Authorization": "MNS TestAccessID:oGArIyQbxUdFssPQgyDV1A2041Q=",
    }
    body = mns.receipt_handles_xml(["8-0zxjHBaWtzPz8zphz0z6OGz5yWWidU1fJM"])
    assert body == (
        b'<?xml version="1.0" encoding="UTF-8"?><ReceiptHandles xmlns="http://mns.aliyuncs.com/doc/v1/">'
        b"<ReceiptHandle>8-0zxjHBaWtzPz8zphz0z6OGz5yWWidU1fJM</ReceiptHandle></ReceiptHandles>"
    )
    delete = mns.signed_headers(TEST_CREDS, method="DELETE", resource=QUEUE, date=MNS_DATE, body=body)
    assert delete["Content-MD5"] == "MzcwZWU3OTFhM2RjZmQ5MTBkYzliNzUwOWE0MjNkNDg="
    assert delete["Content-Type"] == "text/xml;charset=UTF-8"
    assert delete["Authorization"] == "MNS TestAccessID:hS9LGdR0aYuhvjZhRkri/097e2w="


def test_client_matches_the_official_sdk_send_message_capture() -> None:
    """Appendix B: the same body, date and keys give the official SDK's Content-MD5 and Authorization."""
    body = (
        b'<?xml version="1.0" encoding="utf-8"?><Message xmlns="http://mns.aliyuncs.com/doc/v1/"><MessageBody>'
        b"eyJNZXNzYWdlSWQiOiJtMSIsIlN0YXR1cyI6IkRlbGl2ZXJlZCJ9</MessageBody></Message>"
    )
    creds = mns.Credentials(
        access_key_id="LTAI5tDUMMYDUMMYDUMMY01",
        access_key_secret=config.Secret("DummySecretDummySecretDummy01"),
    )
    headers = mns.signed_headers(
        creds,
        method="POST",
        resource="/queues/receipts/messages",
        date="Sun, 29 Nov 2026 17:38:18 GMT",
        body=body,
    )
    assert headers["Content-MD5"] == "Yzc3OTU4NWI2NTgyMjM2ZDI5M2VmYzhjODZlNGZjYWU="
    assert headers["Authorization"] == "MNS LTAI5tDUMMYDUMMYDUMMY01:SHneb8p9xQ2WFA1L0e3HYf5noOs="


def test_security_token_is_sent_but_not_signed() -> None:
    """With STS credentials the security-token header is added and the signature is unchanged."""
    sts = mns.Credentials(
        access_key_id="TestAccessID",
        access_key_secret=config.Secret("TestAccessSecret"),
        security_token=config.Secret("tok-123"),
    )
    resource = QUEUE + "?numOfMessages=16&waitseconds=10"
    with_token = mns.signed_headers(sts, method="GET", resource=resource, date=MNS_DATE)
    assert with_token["security-token"] == "tok-123"
    assert (
        with_token["Authorization"]
        == mns.signed_headers(TEST_CREDS, method="GET", resource=resource, date=MNS_DATE)["Authorization"]
    )
    assert mns.http_date(1436410894) == MNS_DATE


# ---- errors and configuration ------------------------------------------------------------------------------


def _error_body(code: str) -> bytes:
    return REFERENCE_ERROR.replace("MessageNotExist", code).encode()


@pytest.mark.parametrize(
    ("status", "code", "temporary", "expected"),
    [
        (500, "InternalError", False, errors.TransientError),
        (503, "ServiceUnavailable", False, errors.TransientError),
        (400, "QpsLimitExceeded", False, errors.TransientError),
        (408, "TimeExpired", False, errors.TransientError),
        (403, "AccessDenied", False, errors.PermanentError),
        (403, "SecurityTokenExpired", True, errors.TransientError),
        (404, "QueueNotExist", False, errors.PermanentError),
        (400, "InvalidArgument", True, errors.PermanentError),
    ],
)
def test_error_classification(status: int, code: str, temporary: bool, expected: type[Exception]) -> None:
    """5xx, throttling and a refused temporary token are retryable; AccessDenied with static keys and
    QueueNotExist are not."""
    err = mns.classify(status, _error_body(code), temporary=temporary)
    assert type(err) is expected
    assert (err.code, err.status) == (code, status)


def test_endpoint_defaults_only_in_alicom_mode() -> None:
    """Alicom mode defaults to Alibaba's China MNS endpoint; own-queue mode must name its endpoint."""
    assert mns.endpoint_for("alicom", "") == mns.ALICOM_ENDPOINT
    assert mns.endpoint_for("own", "http://127.0.0.1:1") == "http://127.0.0.1:1"
    with pytest.raises(errors.ConfigError) as info:
        mns.endpoint_for("own", "")
    assert info.value.variable == "FALLBACK_MNS_ENDPOINT"


def test_queue_names_are_checked() -> None:
    """MnsQueue refuses a name MNS would not accept (it is put into the request path)."""
    with pytest.raises(ValueError, match="queue name"):
        mns.MnsQueue(
            None,
            endpoint="http://x",
            queue_name="../x",
            kind=model.ReceiptKind.CHATAPP,  # type: ignore[arg-type]
            credentials=mns.StaticCredentials("a", config.Secret("b")),
        )


# ---- dybaseapi ---------------------------------------------------------------------------------------------

TOKEN_ANSWER = {
    "RequestId": "R",
    "Code": "OK",
    "Message": "OK",
    "MessageTokenDTO": {
        "AccessKeyId": "STS.ak",
        "AccessKeySecret": "sk-hidden-1",
        "SecurityToken": "tok-hidden-2",
        "CreateTime": "2024-01-01 20:00:00",
        "ExpireTime": "2024-01-01 21:00:00",
    },
}


def test_token_times_are_beijing_time() -> None:
    """CreateTime/ExpireTime are yyyy-MM-dd HH:mm:ss in UTC+8; the secrets stay hidden in repr."""
    token = dybaseapi.parse_token(TOKEN_ANSWER)
    assert token.created == dt.datetime(2024, 1, 1, 12, 0, tzinfo=dt.UTC)
    assert token.expires == dt.datetime(2024, 1, 1, 13, 0, tzinfo=dt.UTC)
    assert token.credentials.access_key_id == "STS.ak"
    assert token.credentials.security_token == config.Secret("tok-hidden-2")
    assert "hidden" not in repr(token)


@pytest.mark.parametrize(
    "dto", [None, {"AccessKeyId": "a"}, {**TOKEN_ANSWER["MessageTokenDTO"], "ExpireTime": "soon"}]
)
def test_unreadable_token_answers_are_transient(dto: Any) -> None:
    """A missing DTO, a missing field or an unreadable time is a retryable error, never a crash."""
    with pytest.raises(errors.TransientError):
        dybaseapi.parse_token({"Code": "OK", "MessageTokenDTO": dto})


@pytest.mark.parametrize(
    ("lifetime_s", "age_s", "expected"),
    [
        (3600, 0, 3600 - 120),  # long-lived: 2 minutes early
        (3600, 3000, 600 - 120),
        (300, 0, 240),  # 5 minutes: 80 % of the lifetime comes before "2 minutes early"
        (5, 0, 4),
        (5, 4.5, 1.0),  # never sooner than MIN_REUSE_S
    ],
)
def test_refresh_delay(lifetime_s: float, age_s: float, expected: float) -> None:
    """Tokens are replaced 2 minutes before expiry, or at 80 % of their lifetime when that is earlier."""
    created = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    token = dybaseapi.MnsToken(
        credentials=TEST_CREDS, created=created, expires=created + dt.timedelta(seconds=lifetime_s)
    )
    assert dybaseapi.refresh_delay(token, created + dt.timedelta(seconds=age_s)) == pytest.approx(expected)


def test_token_request_is_signed_v1() -> None:
    """QueryTokenForMnsQueue carries the V1 common parameters plus MessageType/QueueName, signed over all."""
    client = dybaseapi.DybaseapiClient(
        None,
        access_key_id="testid",  # type: ignore[arg-type]
        access_key_secret=config.Secret("testsecret"),
    )
    params = client.signed_params(
        message_type="ChatAppStatus",
        queue_name="Alicom-Queue-1-ChatAppStatus",
        nonce="n-1",
        timestamp=dt.datetime(2024, 1, 1, 12, tzinfo=dt.UTC),
    )
    assert params["Action"] == "QueryTokenForMnsQueue"
    assert params["Timestamp"] == "2024-01-01T12:00:00Z"
    assert {
        "Format",
        "Version",
        "AccessKeyId",
        "SignatureMethod",
        "SignatureVersion",
        "SignatureNonce",
        "MessageType",
        "QueueName",
        "Signature",
    } <= params.keys()
    assert params["Signature"] == signing.rpc_v1_signature(secret="testsecret", method="POST", params=params)


def test_message_type_comes_from_alicom_queue_names() -> None:
    """Alicom-Queue-<uid>-<MessageType> names give their MessageType; other names default by kind."""
    assert (
        dybaseapi.message_type_for("Alicom-Queue-123-ChatAppStatus", model.ReceiptKind.SMS) == "ChatAppStatus"
    )
    assert dybaseapi.message_type_for("my-receipts", model.ReceiptKind.SMS) == "SmsReport"


class FakeTokenClient:
    """Counts calls; each answer is a token with the given lifetime, created at the fake clock's now."""

    def __init__(self, clock: list[float], lifetime_s: int = 10) -> None:
        self.clock, self.lifetime_s, self.calls, self.fail = clock, lifetime_s, 0, False
        self.gate: asyncio.Event | None = None

    async def query_token(self, *, message_type: str, queue_name: str) -> dybaseapi.MnsToken:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise errors.TransientError("down")
        now = dt.datetime.fromtimestamp(self.clock[0], dt.UTC)
        creds = mns.Credentials(
            access_key_id=f"STS.{self.calls}",
            access_key_secret=config.Secret("s"),
            security_token=config.Secret(f"t{self.calls}"),
        )
        return dybaseapi.MnsToken(
            credentials=creds, created=now, expires=now + dt.timedelta(seconds=self.lifetime_s)
        )


def _token_credentials(client: FakeTokenClient) -> dybaseapi.TokenCredentials:
    return dybaseapi.TokenCredentials(
        client,
        queue_name="Alicom-Queue-1-ChatAppStatus",  # type: ignore[arg-type]
        message_type="ChatAppStatus",
        clock=lambda: client.clock[0],
    )


async def test_token_is_shared_and_refreshed_at_80_percent() -> None:
    """Concurrent pollers share one fetch; the token is reused until 80 % of its life, then replaced."""
    clock = [1_700_000_000.0]
    client = FakeTokenClient(clock)
    client.gate = asyncio.Event()
    creds = _token_credentials(client)
    waiting = [asyncio.ensure_future(creds.get()) for _ in range(5)]
    await asyncio.sleep(0)
    client.gate.set()
    got = await asyncio.gather(*waiting)
    assert client.calls == 1 and {c.access_key_id for c in got} == {"STS.1"}
    client.gate = None
    clock[0] += 7.9
    assert (await creds.get()).access_key_id == "STS.1"
    clock[0] += 0.2
    assert (await creds.get()).access_key_id == "STS.2"


async def test_refused_token_is_replaced_once() -> None:
    """After a 403 the first poller fetches a new token; others presenting the same stale one reuse it."""
    clock = [1_700_000_000.0]
    client = FakeTokenClient(clock)
    creds = _token_credentials(client)
    stale = await creds.get()
    fresh = await creds.refresh(stale)
    assert fresh.access_key_id == "STS.2"
    assert await creds.refresh(stale) == fresh
    assert client.calls == 2


async def test_refresh_failure_keeps_a_still_valid_token() -> None:
    """When Dybaseapi is down at refresh time the current token is used until it really expires."""
    clock = [1_700_000_000.0]
    client = FakeTokenClient(clock)
    creds = _token_credentials(client)
    await creds.get()
    client.fail = True
    clock[0] += 8.5
    assert (await creds.get()).access_key_id == "STS.1"
    clock[0] += 2
    with pytest.raises(errors.TransientError):
        await creds.get()
