"""POST /v1/messages bodies are validated field by field, with errors naming the exact wire field."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fallback_daemon.core import errors, model, validation


def wa_text(**extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "ChannelType": "whatsapp",
        "Type": "message",
        "MessageType": "text",
        "From": "8613800000000",
        "To": "+8613900000000",
        "Content": {"text": "hello"},
    }
    body.update(extra)
    return {k: v for k, v in body.items() if v is not _DROP}


def wa_template(**extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "ChannelType": "whatsapp",
        "Type": "template",
        "TemplateCode": "744c4b5c79c9432497a075bdfca3",
        "Language": "en",
        "From": "8613800000000",
        "To": "8613900000000",
    }
    body.update(extra)
    return {k: v for k, v in body.items() if v is not _DROP}


_DROP = object()


def reject(body: object, field: str) -> errors.ValidationError:
    with pytest.raises(errors.ValidationError) as info:
        validation.validate_send(body)
    assert info.value.field == field, info.value
    return info.value


@pytest.mark.parametrize(
    ("body", "params"),
    [
        (
            wa_text(),
            {"ChannelType": "whatsapp", "Type": "message", "MessageType": "text", "From": "8613800000000",
             "To": "8613900000000", "Content": '{"text":"hello"}'},
        ),
        (
            wa_template(
                TemplateParams={"1": "Alice", "code": 1234}, Payload=["a", "b"], CustSpaceId="cams-8c8"
            ),
            {"ChannelType": "whatsapp", "Type": "template", "TemplateCode": "744c4b5c79c9432497a075bdfca3",
             "Language": "en", "From": "8613800000000", "To": "8613900000000", "CustSpaceId": "cams-8c8",
             "TemplateParams": '{"1":"Alice","code":"1234"}', "Payload": '["a","b"]'},
        ),
        (
            {"ChannelType": "viber", "Type": "message", "MessageType": "image", "From": "svc-1",
             "To": "380501234567", "Content": '{"link": "https://x/y.png"}', "Label": "transaction",
             "Ttl": 60, "Tag": "t", "TrackingData": "order-42"},
            {"ChannelType": "viber", "Type": "message", "MessageType": "image", "From": "svc-1",
             "To": "380501234567", "Content": '{"link":"https://x/y.png"}', "Label": "transaction",
             "Ttl": "60", "Tag": "t", "TrackingData": "order-42"},
        ),
        (
            {"ChannelType": "messenger", "Type": "message", "MessageType": "text", "From": "1045",
             "To": "psid_123-ABC", "Content": {"text": "hi"}},
            {"ChannelType": "messenger", "Type": "message", "MessageType": "text", "From": "1045",
             "To": "psid_123-ABC", "Content": '{"text":"hi"}'},
        ),
        (
            {"ChannelType": "instagram", "Type": "template", "TemplateName": "promo", "Language": "en",
             "From": "17841", "To": "igsid987"},
            {"ChannelType": "instagram", "Type": "template", "TemplateName": "promo", "Language": "en",
             "From": "17841", "To": "igsid987"},
        ),
        (
            {"ChannelType": "telegram", "Type": "message", "MessageType": "gif", "From": "bot",
             "To": "-100123", "Content": {"link": "https://x/a.gif"}},
            {"ChannelType": "telegram", "Type": "message", "MessageType": "gif", "From": "bot",
             "To": "-100123", "Content": '{"link":"https://x/a.gif"}'},
        ),
    ],
    ids=["whatsapp-text", "whatsapp-template", "viber-image", "messenger", "instagram-template", "telegram"],
)  # fmt: skip
def test_valid_bodies_give_forwardable_params(body: dict[str, Any], params: dict[str, str]) -> None:
    """A valid body of each channel and type yields exactly the SendChatappMessage params to forward."""
    request = validation.validate_send(body)
    assert dict(request.params) == params
    assert request.channel == body["ChannelType"]
    assert request.to == params["To"]
    assert request.sender == body["From"]


def test_defaults_and_non_forwarded_fields() -> None:
    """FallBack* and TaskId are kept on the request but never forwarded; the rule defaults to undelivered."""
    request = validation.validate_send(
        wa_template(TemplateParams='{"name":"Bob"}', TaskId="client-1", FallBackContent="  sms text ",
                    FallBackDuration=120)
    )  # fmt: skip
    assert request.rule is model.Rule.UNDELIVERED
    assert request.duration_s == 120
    assert request.fallback_content == "sms text"
    assert request.client_task_id == "client-1"
    assert request.template_params == {"name": "Bob"}
    assert not any(key.startswith("FallBack") or key == "TaskId" for key in request.params)
    bare = validation.validate_send(wa_text())
    assert (bare.duration_s, bare.fallback_content, bare.client_task_id) == (None, None, None)
    assert bare.template_params == {}


@pytest.mark.parametrize(
    ("spelling", "rule"),
    [
        ("undelivered", model.Rule.UNDELIVERED),
        ("sentFailed", model.Rule.SENT_FAILED),
        ("sentfailed", model.Rule.SENT_FAILED),
        ("unread", model.Rule.UNREAD),
        (None, model.Rule.UNDELIVERED),
    ],
)
def test_fallback_rule_spellings(spelling: str | None, rule: model.Rule) -> None:
    """Every documented FallBackRule spelling maps to its Rule, and null means the default."""
    assert validation.validate_send(wa_text(FallBackRule=spelling)).rule is rule


@pytest.mark.parametrize("spelling", ["Undelivered", "SENTFAILED", "read", "", 1])
def test_fallback_rule_rejects_other_values(spelling: object) -> None:
    """Any other FallBackRule value is a 400 naming FallBackRule."""
    reject(wa_text(FallBackRule=spelling), "FallBackRule")


@pytest.mark.parametrize(
    ("value", "expected"),
    [(60, 60), (43200, 43200), ("120", 120), (None, None), (59, "error"), (43201, "error"), (True, "error"),
     (1.5, "error"), (60.0, "error"), ("1e3", "error"), (" 120", "error"), ("-60", "error"), ([], "error")],
)  # fmt: skip
def test_fallback_duration_bounds(value: object, expected: object) -> None:
    """FallBackDuration is an integer (or digit string) in 60..43200; bools, floats and others are 400."""
    if expected == "error":
        error = reject(wa_text(FallBackDuration=value), "FallBackDuration")
        assert error.problem == "must be an integer between 60 and 43200 seconds"
    else:
        assert validation.validate_send(wa_text(FallBackDuration=value)).duration_s == expected


@pytest.mark.parametrize(
    ("ttl", "ok"), [(30, True), (1209600, True), ("600", True), (29, False), (1209601, False), (False, False)]
)
def test_viber_ttl_bounds(ttl: object, ok: bool) -> None:
    """Viber Ttl must be an integer in 30..1209600 and is forwarded as a decimal string."""
    body = {"ChannelType": "viber", "Type": "template", "TemplateCode": "t", "Language": "en", "From": "s",
            "To": "380501234567", "Ttl": ttl}  # fmt: skip
    if ok:
        assert validation.validate_send(body).params["Ttl"] == str(int(ttl))  # type: ignore[call-overload]
    else:
        reject(body, "Ttl")


@pytest.mark.parametrize(("field", "value"), [("Label", "promotion"), ("Ttl", 60)])
def test_viber_only_fields_rejected_elsewhere(field: str, value: object) -> None:
    """Label and Ttl on a non-viber channel are a 400 naming the field."""
    reject(wa_text(**{field: value}), field)


def test_viber_label_values() -> None:
    """Label must be promotion or transaction."""
    body = {"ChannelType": "viber", "Type": "template", "TemplateCode": "t", "Language": "en", "From": "s",
            "To": "380501234567", "Label": "marketing"}  # fmt: skip
    reject(body, "Label")


@pytest.mark.parametrize(
    ("channel", "to", "stored"),
    [
        ("whatsapp", "8613900000000", "8613900000000"),
        ("whatsapp", "+8613900000000", "8613900000000"),
        ("whatsapp", "12345678", "12345678"),
        ("whatsapp", "123456789012345", "123456789012345"),
        ("viber", "+380501234567", "380501234567"),
        ("telegram", "+447700900123", "447700900123"),
        ("telegram", "some_user", "some_user"),
        ("whatsapp", "1234567", None),
        ("whatsapp", "1234567890123456", None),
        ("whatsapp", "+86 139 0000 0000", None),
        ("whatsapp", "86-13900000000", None),
        ("whatsapp", "++8613900000000", None),
        ("whatsapp", "８６１３９００００００００", None),
        ("viber", "abc", None),
        ("messenger", "a" * 65, None),
        ("messenger", "has space", None),
        ("instagram", "", None),
    ],
)
def test_recipient_shapes(channel: str, to: str, stored: str | None) -> None:
    """Phone channels need 8..15 ASCII digits (optional '+', stored without it); others need a plain id."""
    body = wa_template(ChannelType=channel, To=to)
    if stored is None:
        reject(body, "To")
    else:
        assert validation.validate_send(body).to == stored


@pytest.mark.parametrize("key", ["Fallbackduration", "fallBackRule", "Foo", "CustWabaId", "RecipientType"])
def test_unknown_field_is_named(key: str) -> None:
    """An unknown key, including a mis-cased wire name, is a 400 naming that key."""
    error = reject(wa_text(**{key: "x"}), key)
    if key.lower() == "fallbackduration":
        assert "FallBackDuration" in error.problem


def test_fallback_id_rejected_with_reason() -> None:
    """FallBackId is refused, explaining that Alibaba would send a second SMS."""
    error = reject(wa_text(FallBackId="S00001"), "FallBackId")
    assert "second SMS" in error.problem


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (["not", "an", "object"], "body"),
        (wa_text(ChannelType=_DROP), "ChannelType"),
        (wa_text(ChannelType="WhatsApp"), "ChannelType"),
        (wa_text(ChannelType="sms"), "ChannelType"),
        (wa_text(Type="Message"), "Type"),
        (wa_text(From=_DROP), "From"),
        (wa_text(From=8613800000000), "From"),
        (wa_text(To=_DROP), "To"),
        (wa_text(To=8613900000000), "To"),
        (wa_text(MessageType=_DROP), "MessageType"),
        (wa_text(MessageType="gif"), "MessageType"),
        (wa_text(Content=_DROP), "Content"),
        (wa_text(Content="not json"), "Content"),
        (wa_text(Content='["a"]'), "Content"),
        (wa_text(Content=42), "Content"),
        (wa_text(Content={"text": ""}), "Content"),
        (wa_text(Content={"text": "a\x00b"}), "Content"),
        (wa_text(Content='{"text": NaN}'), "Content"),
        (wa_text(Content='{"text": "\\ud800"}'), "Content"),
        (wa_text(MessageType="document", Content={"link": "https://x"}), "Content"),
        (wa_template(TemplateCode=_DROP), "TemplateCode"),
        (wa_template(Language=_DROP), "Language"),
        (wa_template(TemplateParams={"a": None}), "TemplateParams.a"),
        (wa_template(TemplateParams={"a": True}), "TemplateParams.a"),
        (wa_template(TemplateParams=["a"]), "TemplateParams"),
        (wa_template(TemplateParams="{bad"), "TemplateParams"),
        (wa_template(Payload="x"), "Payload"),
        (wa_template(Payload=[1]), "Payload"),
        (wa_text(FallBackContent=""), "FallBackContent"),
        (wa_text(FallBackContent="   "), "FallBackContent"),
        (wa_text(FallBackContent="x" * 1601), "FallBackContent"),
        (wa_text(FallBackContent=5), "FallBackContent"),
        (wa_text(TaskId="t" * 256), "TaskId"),
        (wa_text(TaskId=7), "TaskId"),
        (wa_text(CustSpaceId="c" * 513), "CustSpaceId"),
        (wa_text(CustSpaceId="a\x00"), "CustSpaceId"),
        (wa_text(Tag=["x"]), "Tag"),
    ],
)
def test_invalid_fields_are_named(body: object, field: str) -> None:
    """Each kind of bad value is a ValidationError naming the exact wire field."""
    reject(body, field)


@pytest.mark.parametrize(
    "content",
    [{"text": "héllo ✓", "link": ""}, '{"text": "héllo ✓", "link": ""}', '  {"link":"","text":"héllo ✓"}'],
)
def test_content_object_or_string(content: object) -> None:
    """Content given as an object or as a JSON string is re-encoded compactly without ASCII escapes."""
    encoded = validation.validate_send(wa_text(Content=content)).params["Content"]
    assert json.loads(encoded) == {"text": "héllo ✓", "link": ""}
    assert " " not in encoded.replace("héllo ✓", "")
    assert "✓" in encoded


def test_content_media_link_either_case() -> None:
    """WhatsApp media content accepts 'link' or 'Link' (and document needs a file name)."""
    for key in ("link", "Link"):
        validation.validate_send(wa_text(MessageType="image", Content={key: "https://x/a.png"}))
    document = {"Link": "https://x", "FileName": "a.pdf"}
    validation.validate_send(wa_text(MessageType="document", Content=document))


def test_content_size_cap() -> None:
    """Content larger than max_content_bytes (UTF-8) is rejected."""
    body = wa_text(Content={"text": "é" * 40})
    validation.validate_send(body, max_content_bytes=200)
    with pytest.raises(errors.ValidationError) as info:
        validation.validate_send(body, max_content_bytes=80)
    assert info.value.field == "Content"


def test_deeply_nested_content_is_a_validation_error() -> None:
    """Pathologically nested Content is a ValidationError, never a RecursionError."""
    reject(wa_text(Content='{"text":"x","a":' + "[" * 5000 + "]" * 5000 + "}"), "Content")
    nested: Any = []
    for _ in range(100):
        nested = [nested]
    reject(wa_text(Content={"text": "x", "a": nested}), "Content")


def test_batch_returns_each_request() -> None:
    """A valid batch yields one SendRequest per item, in order."""
    requests = validation.validate_batch({"messages": [wa_text(), wa_template(To="12345678")]})
    assert [r.to for r in requests] == ["8613900000000", "12345678"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"messages": [wa_text(), wa_text(), wa_text(), wa_text(To="x")]}, "messages[3].To"),
        ({"messages": [wa_text(), "nope"]}, "messages[1]"),
        ({"messages": [wa_text(FallBackDuration=5)]}, "messages[0].FallBackDuration"),
        ({"messages": []}, "messages"),
        ({"messages": {}}, "messages"),
        ({}, "messages"),
        ({"messages": [wa_text()], "extra": 1}, "extra"),
        ([wa_text()], "body"),
    ],
)
def test_batch_errors_name_the_item(body: object, field: str) -> None:
    """A batch error names the offending item and field, e.g. messages[3].To."""
    with pytest.raises(errors.ValidationError) as info:
        validation.validate_batch(body)
    assert info.value.field == field


def test_batch_size_cap() -> None:
    """More than max_items messages in a batch is rejected."""
    with pytest.raises(errors.ValidationError) as info:
        validation.validate_batch({"messages": [wa_text()] * 3}, max_items=2)
    assert info.value.field == "messages"


class TestLoadsBody:
    """loads_body: the text Postgres cannot store is refused with the path that holds it, whichever way the
    body spells it; a body that cannot hold such text is decoded as it is."""

    @pytest.mark.parametrize(
        ("raw", "field"),
        [
            (b'{"To": "65\\u0000"}', "To"),  # a NUL, by escape
            (b'{"Content": {"text": "\\ud800"}}', "Content.text"),  # a lone surrogate, by escape
            (b'{"a\\u0000": 1}', "body"),  # in a key
            ('{"To": "\\u0000"}'.encode("utf-16"), "To"),  # UTF-16 (with BOM), which json.loads reads too
            ('{"To": "\\u0000"}'.encode("utf-32-le"), "To"),
            (b'{"To": "\xed\xa0\x80"}', "To"),  # a surrogate's UTF-8 bytes (json.loads passes them through)
        ],
    )
    def test_nul_and_lone_surrogates_are_refused_naming_the_path(self, raw: bytes, field: str) -> None:
        with pytest.raises(errors.ValidationError) as exc:
            validation.loads_body(raw)
        assert exc.value.field == field

    def test_text_without_escapes_is_decoded_as_it_is(self) -> None:
        raw = '{"Content": {"text": "héllo 你好 \\\\u0000 literally"}}'.encode()
        assert validation.loads_body(raw) == {"Content": {"text": "héllo 你好 \\u0000 literally"}}

    @pytest.mark.parametrize("raw", [b'{"To": "a\x00"}', b"\x00", b'{"To": "\xff"}'])
    def test_bytes_that_are_not_json_text_are_invalid_json(self, raw: bytes) -> None:
        """A raw NUL, bytes that are not UTF-8: not JSON at all (the walk is never needed)."""
        with pytest.raises(errors.ValidationError) as exc:
            validation.loads_body(raw)
        assert (exc.value.field, exc.value.problem) == ("body", "not valid JSON")


# JSON values as json.dumps writes them, with the spellings the fast decoder must agree on: any text
# (surrogates included, which json.dumps escapes), big and negative integers, floats incl. -0.0 and extremes.
_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


def _reference(raw: str | bytes) -> tuple[str, Any]:
    """What validation.loads answered before msgspec was tried: json.loads, NaN/Infinity refused."""
    try:
        return "value", json.loads(raw, parse_constant=validation._reject_constant)
    except (ValueError, RecursionError):
        return "error", None


def _answer(raw: str | bytes) -> tuple[str, Any]:
    try:
        return "value", validation.loads("body", raw)
    except errors.ValidationError:
        return "error", None


def _same(raw: str | bytes) -> bool:
    """loads answers as the reference does; repr compares types too (1 vs 1.0 vs True, -0.0 vs 0.0)."""
    (kind, got), (ref_kind, ref) = _answer(raw), _reference(raw)
    return (kind, repr(got)) == (ref_kind, repr(ref))


class TestFastDecode:
    """validation.loads decodes with msgspec first: for every input it must answer exactly as json.loads did
    (the same value, with the same types, or the same refusal)."""

    @given(_json_values, st.booleans(), st.sampled_from(["utf-8", "utf-16", "utf-32-le"]))
    @settings(max_examples=400, deadline=None)
    def test_a_json_text_decodes_to_what_json_loads_gives(self, value: Any, ascii: bool, codec: str) -> None:
        text = json.dumps(value, ensure_ascii=ascii)
        for raw in (text, text.encode(codec, "surrogatepass")):
            assert _same(raw)

    @given(st.binary(max_size=40) | st.text(max_size=40).map(lambda t: t.encode("utf-8", "surrogatepass")))
    @settings(max_examples=400, deadline=None)
    def test_arbitrary_bytes_are_refused_or_decoded_as_json_loads_does(self, raw: bytes) -> None:
        assert _same(raw)

    @pytest.mark.parametrize(
        "raw",
        [
            b"NaN",
            b"[1e400]",
            b'"\\udE00"',
            b'\xef\xbb\xbf{"a": 1}',
            b'{"a": "\xed\xa0\x80"}',
            b'{"a":1,"a":2}',
        ],
    )
    def test_what_msgspec_refuses_gets_json_loads_verdict(self, raw: bytes) -> None:
        """NaN (refused), 1e400 (inf), a lone surrogate (escaped or as bytes), a BOM: json.loads decides."""
        assert _same(raw)


def test_dumps_strings_writes_the_bytes_json_dumps_wrote_for_every_character() -> None:
    """TemplateParams and Payload are stored (and signed into the CAMS call) as this text."""
    for code in range(0x110000):
        if 0xD800 <= code < 0xE000:
            continue
        ch = chr(code)
        value = {f"k{ch}": f"a{ch}b"}
        assert validation.dumps_strings(value) == json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    items = ["plain", 'quote " and \\ backslash', "\x00\x1f\x7f\n\t", "😀 你好"]
    assert validation.dumps_strings(items) == json.dumps(items, separators=(",", ":"), ensure_ascii=False)
