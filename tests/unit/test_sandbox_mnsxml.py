"""The sandbox's own MNS request parsing (sandbox/mnsxml.py) and signature check (sandbox/mnsauth.py), checked
against the documented shapes and vectors, and against what the daemon's MNS client writes (the two share no
code, so agreement here is evidence, not an echo)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fallback_daemon.providers import mns as daemon_mns
from fallback_daemon.sandbox import mnsauth, mnsxml

DATE = "Thu, 09 Jul 2015 03:01:34 GMT"
QUEUE = "/queues/Alicom-Queue-1234567890-ChatAppStatus/messages"
BATCH_DELETE = (
    b'<?xml version="1.0" encoding="UTF-8"?><ReceiptHandles xmlns="http://mns.aliyuncs.com/doc/v1/">'
    b"<ReceiptHandle>8-0zxjHBaWtzPz8zphz0z6OGz5yWWidU1fJM</ReceiptHandle></ReceiptHandles>"
)


# ---- signature ---------------------------------------------------------------------------------------------
def test_the_official_signing_example() -> None:
    """The MNS signing document's example, GET /MyQueue (it publishes the signature's first 24 characters)."""
    headers = {"Date": DATE, "x-mns-version": "2015-06-06"}
    text = mnsauth.build_string_to_sign("GET", "/MyQueue", headers)
    assert text == "GET\n\n\nThu, 09 Jul 2015 03:01:34 GMT\nx-mns-version:2015-06-06\n/MyQueue"
    assert mnsauth.signature("TestAccessSecret", text).startswith("uwx3yeWoILzgmvesW0BQSgfM")
    assert mnsauth.signature("TestAccessSecret", text) == "uwx3yeWoILzgmvesW0BQSgfM7b8="


@pytest.mark.parametrize(
    ("method", "resource", "extra", "expected"),
    [
        ("GET", f"{QUEUE}?numOfMessages=16&waitseconds=10", {}, "oGArIyQbxUdFssPQgyDV1A2041Q="),
        (
            "DELETE",
            f"{QUEUE}?ReceiptHandle=8-0zxjHBaWtzPz8zphz0z6OGz5yWWidU1fJM",
            {},
            "wLEaUDFO0ElsTJn8J7RwTY2YilU=",
        ),
        (
            "DELETE",
            QUEUE,
            {
                "Content-MD5": "MzcwZWU3OTFhM2RjZmQ5MTBkYzliNzUwOWE0MjNkNDg=",
                "Content-Type": "text/xml;charset=UTF-8",
            },
            "hS9LGdR0aYuhvjZhRkri/097e2w=",
        ),
    ],
)
def test_queue_request_vectors(method: str, resource: str, extra: dict[str, str], expected: str) -> None:
    """BatchReceive, Delete and BatchDelete (reference vectors, AccessKey TestAccessID/TestAccessSecret)."""
    headers = {"date": DATE, "X-MNS-Version": "2015-06-06", **extra}  # header names in any case
    assert (
        mnsauth.signature("TestAccessSecret", mnsauth.build_string_to_sign(method, resource, headers))
        == expected
    )


def test_content_md5_is_base64_of_the_hex_digest() -> None:
    """The SDK quirk, on the BatchDelete vector: hex MD5 370ee791…, then base64 of that hex text."""
    assert mnsauth.content_md5(BATCH_DELETE) == "MzcwZWU3OTFhM2RjZmQ5MTBkYzliNzUwOWE0MjNkNDg="


def test_only_x_mns_headers_are_signed_and_sorted() -> None:
    """security-token and other headers stay out; x-mns-* headers are lowercased and sorted."""
    headers = {
        "Date": DATE,
        "X-Mns-Version": "2015-06-06",
        "x-mns-a": "1",
        "security-token": "t",
        "Host": "h",
    }
    text = mnsauth.build_string_to_sign("get", "/q", headers)
    assert text == f"GET\n\n\n{DATE}\nx-mns-a:1\nx-mns-version:2015-06-06\n/q"


# ---- request bodies ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "ns", ['xmlns="http://mns.aliyuncs.com/doc/v1/"', 'xmlns="http://mns.aliyuncs.com/doc/v1"', ""]
)
def test_send_message_in_the_documented_namespace_or_none(ns: str) -> None:
    """SendMessage: MessageBody as sent (whitespace kept), DelaySeconds and Priority read as integers."""
    body = f"<Message {ns}><MessageBody> a&amp;b </MessageBody><DelaySeconds>5</DelaySeconds>"
    body += "<Priority>3</Priority></Message>"
    assert mnsxml.send_request(body.encode()) == (
        False,
        [mnsxml.Outgoing(body=" a&b ", delay_s=5, priority=3)],
    )


def test_batch_send_message() -> None:
    """BatchSendMessage: every <Message> of <Messages>; absent DelaySeconds/Priority are left to the queue."""
    body = (
        b'<Messages xmlns="http://mns.aliyuncs.com/doc/v1/">'
        + b"<Message><MessageBody>YQ==</MessageBody></Message>" * 3
    )
    batch, messages = mnsxml.send_request(body + b"</Messages>")
    assert batch is True
    assert messages == [mnsxml.Outgoing(body="YQ==", delay_s=0, priority=None)] * 3


def test_batch_delete_body() -> None:
    """BatchDeleteMessage: the handles in order; a different root is not a handle list."""
    assert mnsxml.receipt_handles(BATCH_DELETE) == ["8-0zxjHBaWtzPz8zphz0z6OGz5yWWidU1fJM"]
    assert mnsxml.receipt_handles(b"<Message><MessageBody>x</MessageBody></Message>") is None


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"not xml", "not well-formed"),
        (b"<Message><MessageBody>x</MessageBody>", "not well-formed"),
        (b"<Message><MessageBody>x</MessageBody></Message><Message/>", "not well-formed"),
        (b'<!DOCTYPE m [<!ENTITY a "aaaa">]><Message><MessageBody>&a;</MessageBody></Message>', "DTD"),
        (
            b'<!DOCTYPE Message SYSTEM "file:///etc/passwd"><Message><MessageBody>x</MessageBody></Message>',
            "DTD",
        ),
        (b'<Message xmlns="urn:other"><MessageBody>x</MessageBody></Message>', "namespace"),
        (b"<Message><Body>x</Body></Message>", "no <MessageBody>"),
        (b"<Message><MessageBody>x</MessageBody><MessageBody>y</MessageBody></Message>", "twice"),
        (b"<Message><MessageBody><b>x</b></MessageBody></Message>", "must hold text"),
        (b"<Message><MessageBody>x</MessageBody><Priority>high</Priority></Message>", "integer"),
        (b"<Messages><Note/></Messages>", "expected <Message>"),
        (b"<Queue><MessageBody>x</MessageBody></Queue>", "root must be"),
    ],
)
def test_malformed_send_bodies_are_refused(body: bytes, why: str) -> None:
    """Anything but a documented SendMessage/BatchSendMessage body raises MalformedXml, saying why."""
    with pytest.raises(mnsxml.MalformedXml, match=why):
        mnsxml.send_request(body)


def test_a_handle_list_with_other_elements_is_refused() -> None:
    """<ReceiptHandles> holds only <ReceiptHandle> text elements."""
    with pytest.raises(mnsxml.MalformedXml, match="only <ReceiptHandle>"):
        mnsxml.receipt_handles(b"<ReceiptHandles><ReceiptHandle>a</ReceiptHandle><X/></ReceiptHandles>")


# ---- the daemon's writer against the sandbox's reader ------------------------------------------------------
HANDLE = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=40)


@given(st.lists(HANDLE, min_size=1, max_size=16))
def test_the_daemons_batch_delete_body_reads_back_exactly(handles: list[str]) -> None:
    """Whatever handles the daemon's client puts in a BatchDeleteMessage body, the sandbox reads the same ones
    (markup characters, non-ASCII and surrounding spaces included)."""
    assert mnsxml.receipt_handles(daemon_mns.receipt_handles_xml(handles)) == handles
