"""SMS routing: pick the fallback SMS provider per `To` dialing-code prefix or chat channel, else a default.

Precedence: the longest matching `To` prefix (the destination country decides which provider may deliver
there), then a `channel:<name>` route, then the default (FALLBACK_SMS_PROVIDER).
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Callable, Mapping, Sequence

from aiobotocore.session import AioSession

from fallback_daemon import config
from fallback_daemon.core import errors, ports, validation
from fallback_daemon.providers import acs, alibaba_sms, aws, sns

CHANNEL = "channel:"


class SmsRouter:
    """A `ports.SmsGateway` that delegates each SMS to the provider its route names.

    :param providers: provider key (globe | domestic | sns) → gateway; every routed key must be present.
    :param default: the provider key used when no route matches.
    :param routes: (dialing-code prefix or "channel:<name>", provider key) pairs.
    """

    def __init__(
        self,
        providers: Mapping[str, ports.SmsGateway],
        *,
        default: str,
        routes: Sequence[tuple[str, str]] = (),
    ) -> None:
        missing = sorted({default, *(p for _, p in routes)} - set(providers))
        if missing:
            raise ValueError(f"no gateway for provider(s) {', '.join(missing)}")
        self._providers = dict(providers)
        self._default = default
        self._prefixes = sorted(
            ((k, p) for k, p in routes if not k.startswith(CHANNEL)), key=lambda kp: len(kp[0]), reverse=True
        )
        self._channels = {k.removeprefix(CHANNEL): p for k, p in routes if k.startswith(CHANNEL)}
        # With a single provider the events name it; otherwise `pick` tells which one sent each SMS.
        self.name = self._providers[default].name if len(self._providers) == 1 else "router"

    def provider_for(self, *, to: str, channel: str = "") -> str:
        """The provider key for one SMS: longest `To` prefix, then channel, then the default."""
        digits = to.strip().removeprefix("+")
        for prefix, provider in self._prefixes:
            if digits.startswith(prefix):
                return provider
        return self._channels.get(channel.lower(), self._default)

    def route(self, *, to: str, channel: str = "") -> ports.SmsGateway:
        """The gateway that sends this SMS (its `name` is what the fallback's events record)."""
        return self._providers[self.provider_for(to=to, channel=channel)]

    pick = route  # the older name, kept for callers that still use it

    async def send(self, *, fallback_id: str, to: str, text: str, template_params: Mapping[str, str]) -> str:
        """Send through the provider routed by `To` (no channel here: prefix routes, then the default)."""
        return await self.route(to=to).send(
            fallback_id=fallback_id, to=to, text=text, template_params=template_params
        )

    async def lookup(
        self, *, fallback_id: str, to: str, since: dt.datetime, until: dt.datetime
    ) -> ports.Lookup:
        """Ask the provider routed by `To` alone. A channel route may have sent it elsewhere: callers that
        know the channel ask `route(to=..., channel=...).lookup(...)` instead."""
        return await self.route(to=to).lookup(fallback_id=fallback_id, to=to, since=since, until=until)


def used_providers(settings: config.Settings) -> set[str]:
    """The provider keys the default and the routes need."""
    return {settings.sms_provider, *(p for _, p in settings.sms_routes)}


def check(settings: config.Settings) -> None:
    """Start-up checks across settings.

    Raises:
        errors.ConfigError: an unknown channel in FALLBACK_SMS_ROUTES, or SendSms settings missing while the
            domestic provider is in use.
    """
    for key, _ in settings.sms_routes:
        channel = key.removeprefix(CHANNEL)
        if key.startswith(CHANNEL) and channel not in validation.CHANNELS:
            expected = ", ".join(validation.CHANNELS)
            problem = f"unknown channel {channel!r} (expected one of {expected})"
            raise errors.ConfigError("FALLBACK_SMS_ROUTES", problem)
    if "domestic" in used_providers(settings):
        for var, value in (
            ("FALLBACK_SMS_SIGN_NAME", settings.sms_sign_name),
            ("FALLBACK_SMS_TEMPLATE_CODE", settings.sms_template_code),
        ):
            if not value:
                raise errors.ConfigError(
                    var,
                    "required when the domestic provider (SendSms) is used "
                    "by FALLBACK_SMS_PROVIDER or FALLBACK_SMS_ROUTES",
                )


async def build(
    settings: config.Settings,
    *,
    stack: contextlib.AsyncExitStack,
    alibaba: Callable[[str, str], acs.AcsClient],
    domestic_endpoint: str,
    aws_session: AioSession,
) -> SmsRouter:
    """Open the providers the settings use (an SNS client only if SNS is routed) and return the router.

    Args:
        alibaba: `(endpoint, version) -> AcsClient` sharing the daemon's HTTP session and AccessKey.
        domestic_endpoint: the SendSms endpoint (the sandbox's URL under --sandbox).
    """
    check(settings)
    wanted = used_providers(settings)
    providers: dict[str, ports.SmsGateway] = {}
    if "globe" in wanted:
        providers["globe"] = alibaba_sms.GlobeSms(
            alibaba(settings.sms_endpoint, alibaba_sms.VERSION), sender=settings.sms_from
        )
    if "domestic" in wanted:
        providers["domestic"] = alibaba_sms.DomesticSms(
            alibaba(domestic_endpoint, alibaba_sms.DOMESTIC_VERSION),
            sign_name=settings.sms_sign_name,
            template_code=settings.sms_template_code,
            param_map=None if settings.sms_template_param is None else dict(settings.sms_template_param),
        )
    if "sns" in wanted:
        # One attempt per call: a publish that timed out is ambiguous and is never repeated silently.
        client = await aws.open_client(
            stack,
            aws_session,
            "sns",
            region=settings.aws_region,
            endpoint_url=settings.aws_endpoint_url,
            config=aws.client_config(
                connect_timeout_s=min(3.0, settings.send_timeout_s),
                read_timeout_s=settings.send_timeout_s,
                attempts=1,
                pool=settings.send_concurrency,
            ),
        )
        providers["sns"] = sns.SnsSms(
            client, sender_id=settings.sns_sender_id, sms_type=settings.sns_sms_type
        )
    return SmsRouter(providers, default=settings.sms_provider, routes=settings.sms_routes)
