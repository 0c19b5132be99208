"""SMS routing (longest To prefix, then channel, then the default), its settings, and the SQS/SNS helpers."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

import pytest
from botocore import exceptions as boto_errors

from fallback_daemon import config
from fallback_daemon.core import errors, ports
from fallback_daemon.providers import aws, sms_routing, sns, sqs


class FakeGateway:
    def __init__(self, name: str) -> None:
        self.name = name
        self.sent: list[tuple[str, str]] = []
        self.looked_up: list[str] = []

    def route(self, *, to: str, channel: str) -> FakeGateway:
        return self

    async def send(self, *, fallback_id: str, to: str, text: str, template_params: Mapping[str, str]) -> str:
        self.sent.append((fallback_id, to))
        return f"{self.name}-{fallback_id}"

    async def lookup(
        self, *, fallback_id: str, to: str, since: dt.datetime, until: dt.datetime
    ) -> ports.Lookup:
        self.looked_up.append(fallback_id)
        return ports.Lookup(result=ports.LookupResult.FOUND, provider_id=f"{self.name}-{fallback_id}")


def router(routes: str, default: str = "globe") -> sms_routing.SmsRouter:
    gateways = {key: FakeGateway(f"gw_{key}") for key in config.SMS_PROVIDERS}
    return sms_routing.SmsRouter(
        gateways,
        default=default,
        routes=config.load({"FALLBACK_SMS_ROUTES": routes}).sms_routes if routes else (),
    )


@pytest.mark.parametrize(
    ("routes", "to", "channel", "expected"),
    [
        ("", "8613900000000", "whatsapp", "globe"),  # no route: the default
        ("86=domestic", "8613900000000", "whatsapp", "domestic"),  # prefix
        ("86=domestic", "+8613900000000", "whatsapp", "domestic"),  # a leading + is ignored
        ("86=domestic", "6591234567", "whatsapp", "globe"),  # prefix does not match
        ("1=sns,1242=globe", "12425550100", "whatsapp", "globe"),  # longest prefix wins (Bahamas)
        ("1242=globe,1=sns", "14155550100", "whatsapp", "sns"),  # order of the routes does not matter
        ("channel:viber=sns", "6591234567", "viber", "sns"),  # channel route
        ("channel:viber=sns", "6591234567", "whatsapp", "globe"),  # other channel: the default
        ("86=domestic,channel:viber=sns", "8613900000000", "viber", "domestic"),  # a prefix beats a channel
        ("65=sns", "6591234567", "", "sns"),  # no channel known (router.send): prefixes still apply
    ],
)
def test_router_picks_the_provider(routes: str, to: str, channel: str, expected: str) -> None:
    """The router's choice follows longest prefix, then channel, then the default."""
    assert router(routes).provider_for(to=to, channel=channel) == expected


@pytest.mark.parametrize(
    ("to", "channel", "expected"),
    [
        ("8613900000000", "whatsapp", "gw_domestic"),
        ("6591234567", "viber", "gw_sns"),
        ("6591234567", "", "gw_globe"),
    ],
)
def test_route_is_the_gateway_of_the_routed_provider(to: str, channel: str, expected: str) -> None:
    """route() returns the routed gateway itself (the same as pick, its older name)."""
    r = router("86=domestic,channel:viber=sns")
    assert r.route(to=to, channel=channel).name == expected
    assert r.pick(to=to, channel=channel) is r.route(to=to, channel=channel)


async def test_router_lookup_asks_the_gateway_routed_by_to() -> None:
    """The router's own lookup goes to the gateway its To prefix names, and only to it."""
    r = router("86=domestic")
    now = dt.datetime.now(dt.UTC)
    got = await r.lookup(fallback_id="fb-1", to="8613900000000", since=now, until=now)
    assert got.provider_id == "gw_domestic-fb-1"
    globe = r.route(to="6591234567", channel="")
    assert isinstance(globe, FakeGateway)
    assert globe.looked_up == []


def test_router_name_is_the_single_provider_or_router() -> None:
    """With one provider the router carries its name (events stay as before); with several it is "router"."""
    assert (
        sms_routing.SmsRouter({"globe": FakeGateway("alibaba_globe")}, default="globe").name
        == "alibaba_globe"
    )
    assert router("86=domestic").name == "router"


async def test_router_send_delegates_to_the_picked_gateway() -> None:
    """send() without a channel goes through the gateway the To prefix selects."""
    r = router("86=domestic")
    assert (
        await r.send(fallback_id="f1", to="8613900000000", text="t", template_params={}) == "gw_domestic-f1"
    )
    assert r.pick(to="8613900000000").name == "gw_domestic"


def test_router_refuses_a_route_to_a_missing_gateway() -> None:
    """Every routed provider needs a gateway."""
    with pytest.raises(ValueError, match="sns"):
        sms_routing.SmsRouter({"globe": FakeGateway("g")}, default="globe", routes=[("1", "sns")])


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"FALLBACK_SMS_PROVIDER": "twilio"}, "FALLBACK_SMS_PROVIDER"),
        ({"FALLBACK_SMS_ROUTES": "86=twilio"}, "FALLBACK_SMS_ROUTES"),
        ({"FALLBACK_SMS_ROUTES": "86"}, "FALLBACK_SMS_ROUTES"),
        ({"FALLBACK_SMS_ROUTES": "8x=sns"}, "FALLBACK_SMS_ROUTES"),
        ({"FALLBACK_SMS_ROUTES": "86=sns,+86=globe"}, "FALLBACK_SMS_ROUTES"),
        ({"FALLBACK_SMS_TEMPLATE_PARAM": "[1]"}, "FALLBACK_SMS_TEMPLATE_PARAM"),
        ({"FALLBACK_SMS_TEMPLATE_PARAM": "{bad json"}, "FALLBACK_SMS_TEMPLATE_PARAM"),
        ({"FALLBACK_SNS_SENDER_ID": "TwelveChars1"}, "FALLBACK_SNS_SENDER_ID"),
        ({"FALLBACK_SNS_SENDER_ID": "12345"}, "FALLBACK_SNS_SENDER_ID"),
        ({"FALLBACK_SNS_SMS_TYPE": "transactional"}, "FALLBACK_SNS_SMS_TYPE"),
        ({"FALLBACK_SQS_CHATAPP_QUEUE_URL": "sqs.eu-west-1.amazonaws.com"}, "FALLBACK_SQS_CHATAPP_QUEUE_URL"),
        (
            {"FALLBACK_SQS_SMS_QUEUE_URL": "https://sqs.eu-west-1.amazonaws.com/"},
            "FALLBACK_SQS_SMS_QUEUE_URL",
        ),
        ({"FALLBACK_SQS_WAIT_S": "21"}, "FALLBACK_SQS_WAIT_S"),
    ],
)
def test_bad_settings_name_the_variable(env: dict[str, str], variable: str) -> None:
    """An unknown provider or a malformed SQS/SMS setting fails start-up naming the variable."""
    with pytest.raises(errors.ConfigError) as info:
        config.load(env)
    assert info.value.variable == variable


def test_settings_are_parsed() -> None:
    """Routes, the SendSms mapping and the SQS settings are parsed into typed values."""
    s = config.load(
        {
            "FALLBACK_SMS_PROVIDER": "domestic",
            "FALLBACK_SMS_ROUTES": " 86=domestic, +1=sns ,channel:Viber=globe",
            "FALLBACK_SMS_TEMPLATE_PARAM": '{"code":"{1}"}',
            "FALLBACK_SNS_SENDER_ID": "My-Shop1",
            "FALLBACK_SQS_CHATAPP_QUEUE_URL": "https://sqs.eu-west-1.amazonaws.com/123456789012/receipts",
            "FALLBACK_AWS_ENDPOINT_URL": "http://localhost:4566",
        }
    )
    assert s.sms_routes == (("86", "domestic"), ("1", "sns"), ("channel:viber", "globe"))
    assert s.sms_template_param == (("code", "{1}"),)
    assert (s.sms_provider, s.sns_sender_id, s.aws_endpoint_url) == (
        "domestic",
        "My-Shop1",
        "http://localhost:4566",
    )
    assert s.sqs_chatapp_queue_url.endswith("/receipts")


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"FALLBACK_SMS_ROUTES": "channel:sms=sns"}, "FALLBACK_SMS_ROUTES"),
        ({"FALLBACK_SMS_PROVIDER": "domestic"}, "FALLBACK_SMS_SIGN_NAME"),
        (
            {"FALLBACK_SMS_ROUTES": "86=domestic", "FALLBACK_SMS_SIGN_NAME": "Demo"},
            "FALLBACK_SMS_TEMPLATE_CODE",
        ),
    ],
)
def test_start_up_checks_across_settings(env: dict[str, str], variable: str) -> None:
    """An unknown channel, or SendSms used without SignName/TemplateCode, is a ConfigError naming it."""
    with pytest.raises(errors.ConfigError) as info:
        sms_routing.check(config.load(env))
    assert info.value.variable == variable


def test_e164() -> None:
    """CAMS-style numbers (country code, no +) become E.164; anything else is refused."""
    assert sns.e164("6591234567") == sns.e164("+6591234567") == "+6591234567"
    for bad in ("12ab", "0091234567", "123", "+"):
        with pytest.raises(errors.PermanentError):
            sns.e164(bad)


def test_sns_envelope_unwrapping() -> None:
    """Only an SNS Notification envelope is unwrapped; raw JSON and base64 bodies pass unchanged."""
    inner = '{"MessageId":"m","Status":"Read"}'
    envelope = '{"Type":"Notification","TopicArn":"arn:aws:sns:x","Message":' + '"{\\"MessageId\\":\\"m\\"}"}'
    assert sqs.unwrap_sns_envelope(envelope) == '{"MessageId":"m"}'
    assert sqs.unwrap_sns_envelope(inner) == inner
    assert sqs.unwrap_sns_envelope("eyJNZXNzYWdlSWQiOiJtIn0=") == "eyJNZXNzYWdlSWQiOiJtIn0="
    assert sqs.queue_name("https://sqs.eu-west-1.amazonaws.com/123456789012/receipts") == "receipts"


def _client_error(code: str, status: int) -> boto_errors.ClientError:
    return boto_errors.ClientError(
        {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}}, "Publish"
    )


@pytest.mark.parametrize(
    ("exc", "ambiguous", "expected"),
    [
        (_client_error("Throttling", 400), True, errors.TransientError),
        (_client_error("AWS.SimpleQueueService.RequestThrottled", 403), False, errors.TransientError),
        (_client_error("InternalError", 500), True, errors.TransientError),
        (_client_error("InvalidParameter", 400), True, errors.PermanentError),
        (_client_error("AuthorizationError", 403), True, errors.PermanentError),
        (boto_errors.EndpointConnectionError(endpoint_url="http://x"), True, errors.TransientError),
        (boto_errors.ReadTimeoutError(endpoint_url="http://x"), True, errors.AmbiguousError),
        (boto_errors.ReadTimeoutError(endpoint_url="http://x"), False, errors.TransientError),
        (boto_errors.NoCredentialsError(), False, errors.PermanentError),
    ],
)
async def test_botocore_errors_are_mapped(exc: Exception, ambiguous: bool, expected: type[Exception]) -> None:
    """Throttling/5xx/connect → Transient; other answers → Permanent; timeout after send → Ambiguous (SNS)."""
    with pytest.raises(expected):
        async with aws.map_errors(sent_is_ambiguous=ambiguous):
            raise exc
