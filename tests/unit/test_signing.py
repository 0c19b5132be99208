"""Signatures reproduce Alibaba's own requests and the reference vectors byte for byte."""

from __future__ import annotations

import hashlib

from fallback_daemon.providers import signing

SAMPLE_QUERY = {
    "ChannelType": "whatsapp",
    "CustSpaceId": "cams-8c8*********",
    "FallBackDuration": "120",
    "FallBackId": "SMS_99****",
    "From": "8613800000000",
    "Language": "en",
    "MessageType": "template",
    "Tag": "fallback-demo",
    "TemplateCode": "744c4b5c79c9432497a075bdfca3****",
    "TemplateParams": '{"1":"Alice","code":"1234"}',
    "To": "8613900000000",
    "TrackingData": "order-42",
    "Type": "template",
}
SAMPLE_HEADERS = {
    "host": "127.0.0.1:43407",
    "x-acs-version": "2020-06-06",
    "x-acs-action": "SendChatappMessage",
    "user-agent": "AlibabaCloud (Linux; x86_64) Python/3.11.7 Core/0.4.3 TeaDSL/2",
    "x-acs-date": "2026-11-29T17:34:32Z",
    "x-acs-signature-nonce": "e4b727b453c462bd3085403a1d1d8a9f",
    "accept": "application/json",
    "x-acs-content-sha256": signing.EMPTY_SHA256,
    "x-acs-credentials-provider": "static_ak",
}


def test_acs3_reproduces_the_captured_sdk_request() -> None:
    """The Authorization header of reference/cams_request_sample.txt is reproduced byte for byte."""
    auth = signing.acs3_authorization(
        access_key_id="LTAI5tDUMMYDUMMYDUMMY01",
        secret="DummySecretDummySecretDummy01",
        method="POST",
        path="/",
        query=SAMPLE_QUERY,
        headers=SAMPLE_HEADERS,
        payload_hash=signing.EMPTY_SHA256,
    )
    assert auth == (
        "ACS3-HMAC-SHA256 Credential=LTAI5tDUMMYDUMMYDUMMY01,SignedHeaders=accept;host;user-agent;"
        "x-acs-action;x-acs-content-sha256;x-acs-credentials-provider;x-acs-date;x-acs-signature-nonce;"
        "x-acs-version,Signature=b78e5c548862cba1146c70bc2b160519c01e1ec4815caee6c04119f3c9af752b"
    )


def test_acs3_string_to_sign_matches_the_sample_derivation() -> None:
    """The canonical request hash equals the one printed in the sample's derivation."""
    sts, _ = signing.acs3_string_to_sign(
        method="POST", path="/", query=SAMPLE_QUERY, headers=SAMPLE_HEADERS, payload_hash=signing.EMPTY_SHA256
    )
    assert sts == "ACS3-HMAC-SHA256\n9982fe9ebcff123626d60d3cad6c5938c437947030c95791a999f6249adce774"


def test_acs3_reproduces_the_sendsms_appendix() -> None:
    """Appendix A (Dysmsapi SendSms) signs to the captured signature."""
    headers = dict(
        SAMPLE_HEADERS,
        **{
            "host": "127.0.0.1:44097",
            "x-acs-version": "2017-05-25",
            "x-acs-action": "SendSms",
            "x-acs-date": "2026-11-29T17:34:41Z",
            "x-acs-signature-nonce": "d0d6affd2b444c3b9b769ae1214217f3",
        },
    )
    query = {
        "OutId": "order-42",
        "PhoneNumbers": "8613900000000",
        "SignName": "Demo",
        "TemplateCode": "SMS_123456789",
        "TemplateParam": '{"code":"1234"}',
    }
    auth = signing.acs3_authorization(
        access_key_id="LTAI5tDUMMYDUMMYDUMMY01",
        secret="DummySecretDummySecretDummy01",
        method="POST",
        path="/",
        query=query,
        headers=headers,
        payload_hash=signing.EMPTY_SHA256,
    )
    assert auth.endswith("Signature=51835ca0cac0ff0756345c5dd2dd09993247680e33047527da1611d3de2b6e76")


def test_acs3_form_body_vector_from_reference() -> None:
    """The reference §1.8 V3 vector (form body, no query) gives its payload hash, StringToSign and header."""
    body = (
        b"ChannelType=whatsapp&Content=%7B%22text%22%3A%22hello%22%7D&From=8613800000000"
        b"&MessageType=text&To=8613900000000&Type=message"
    )
    payload_hash = hashlib.sha256(body).hexdigest()
    assert payload_hash == "3ceb8f6eb6c10a8bdf16b66d581b2444edbc800c670867aa34c29f2237c853b7"
    headers = {
        "host": "cams.ap-southeast-1.aliyuncs.com",
        "x-acs-action": "SendChatappMessage",
        "x-acs-version": "2020-06-06",
        "x-acs-date": "2024-01-01T12:00:00Z",
        "x-acs-signature-nonce": "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf",
        "x-acs-content-sha256": payload_hash,
    }
    sts, _ = signing.acs3_string_to_sign(
        method="POST", path="/", query={}, headers=headers, payload_hash=payload_hash
    )
    assert sts == "ACS3-HMAC-SHA256\n4537f59c30c60501de07a9e004e966f698137f81db1e044eaa4cd3556b05cee6"
    auth = signing.acs3_authorization(
        access_key_id="testid",
        secret="testsecret",
        method="POST",
        path="/",
        query={},
        headers=headers,
        payload_hash=payload_hash,
    )
    assert auth == (
        "ACS3-HMAC-SHA256 Credential=testid,SignedHeaders=host;x-acs-action;x-acs-content-sha256;x-acs-date;"
        "x-acs-signature-nonce;x-acs-version,"
        "Signature=db05d32834b0bab1bfcf91120584feda3b188f009e859530c77aead784497f4b"
    )


def test_parse_authorization_round_trip_and_garbage() -> None:
    """A well-formed header splits into its three parts; anything else gives {}."""
    parts = signing.parse_acs3_authorization("ACS3-HMAC-SHA256 Credential=a,SignedHeaders=host,Signature=ff")
    assert parts == {"Credential": "a", "SignedHeaders": "host", "Signature": "ff"}
    assert signing.parse_acs3_authorization("Bearer x") == {}
    assert signing.parse_acs3_authorization("ACS3-HMAC-SHA256 Credential=a") == {}


def test_rpc_v1_vector_from_reference() -> None:
    """The reference §1.8 V1 (HMAC-SHA1) vector signs to 7aQxmTW+nG0OgT4AXlh46DjiHBo=."""
    params = {
        "AccessKeyId": "testid",
        "Action": "SendChatappMessage",
        "ChannelType": "whatsapp",
        "Content": '{"text":"hello"}',
        "CustSpaceId": "cams-123",
        "FallBackContent": "hello by sms",
        "FallBackDuration": "120",
        "FallBackId": "S00001",
        "FallBackRule": "undelivered",
        "Format": "JSON",
        "From": "8613800000000",
        "MessageType": "text",
        "SignatureMethod": "HMAC-SHA1",
        "SignatureNonce": "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf",
        "SignatureVersion": "1.0",
        "Timestamp": "2024-01-01T12:00:00Z",
        "To": "8613900000000",
        "Type": "message",
        "Version": "2020-06-06",
    }
    assert signing.rpc_v1_signature(secret="testsecret", method="POST", params=params) == (
        "7aQxmTW+nG0OgT4AXlh46DjiHBo="
    )


MNS_DATE = "Thu, 09 Jul 2015 03:01:34 GMT"
MNS_HEADERS = {"Date": MNS_DATE, "x-mns-version": "2015-06-06"}


def _mns(method: str, resource: str, **kw: str) -> str:
    sts = signing.mns_string_to_sign(method=method, resource=resource, headers=MNS_HEADERS, **kw)
    return signing.mns_authorization(
        access_key_id="TestAccessID", secret="TestAccessSecret", string_to_sign=sts
    )


def test_mns_official_doc_vector() -> None:
    """GET /MyQueue signs to the documented uwx3yeWoILzgmvesW0BQSgfM… value."""
    sts = signing.mns_string_to_sign(method="GET", resource="/MyQueue", headers=MNS_HEADERS)
    assert sts == "GET\n\n\nThu, 09 Jul 2015 03:01:34 GMT\nx-mns-version:2015-06-06\n/MyQueue"
    assert _mns("GET", "/MyQueue") == "MNS TestAccessID:uwx3yeWoILzgmvesW0BQSgfM7b8="


def test_mns_batch_receive_and_delete_vectors() -> None:
    """BatchReceive, Delete and BatchDelete reproduce the reference §3.3 worked examples."""
    q = "/queues/Alicom-Queue-1234567890-ChatAppStatus/messages"
    assert _mns("GET", q + "?numOfMessages=16&waitseconds=10").endswith(":oGArIyQbxUdFssPQgyDV1A2041Q=")
    assert _mns("DELETE", q + "?ReceiptHandle=8-0zxjHBaWtzPz8zphz0z6OGz5yWWidU1fJM").endswith(
        ":wLEaUDFO0ElsTJn8J7RwTY2YilU="
    )
    body = (
        b'<?xml version="1.0" encoding="UTF-8"?><ReceiptHandles xmlns="http://mns.aliyuncs.com/doc/v1/">'
        b"<ReceiptHandle>8-0zxjHBaWtzPz8zphz0z6OGz5yWWidU1fJM</ReceiptHandle></ReceiptHandles>"
    )
    md5 = signing.mns_content_md5(body)
    assert md5 == "MzcwZWU3OTFhM2RjZmQ5MTBkYzliNzUwOWE0MjNkNDg="
    assert _mns("DELETE", q, content_md5=md5, content_type="text/xml;charset=UTF-8").endswith(
        ":hS9LGdR0aYuhvjZhRkri/097e2w="
    )
