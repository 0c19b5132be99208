"""The credential chain: which source the settings select, and the refresh-ahead cache (fake clock)."""

from __future__ import annotations

import asyncio
import pathlib

import aiohttp
import pytest
from structlog.testing import capture_logs

from fallback_daemon import config
from fallback_daemon.core import errors
from fallback_daemon.providers import credentials as creds

SECRET = "very-secret-value-0001"
TOKEN = "security-token-value-0001"


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def sts_creds(clock: Clock, n: int, lifetime: float = 3600.0) -> creds.Credentials:
    return creds.Credentials(
        access_key_id=f"STS.{n}",
        access_key_secret=config.Secret(f"{SECRET}-{n}"),
        security_token=config.Secret(f"{TOKEN}-{n}"),
        expiration=clock.now + lifetime,
        provider="test",
    )


class Source:
    """A fetch whose answers the test controls; counts calls; can be held on an event."""

    def __init__(self, clock: Clock, lifetime: float = 3600.0) -> None:
        self.clock = clock
        self.lifetime = lifetime
        self.calls = 0
        self.fail: Exception | None = None
        self.gate: asyncio.Event | None = None
        self.entered = asyncio.Event()

    async def fetch(self) -> creds.Credentials:
        self.calls += 1
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        return sts_creds(self.clock, self.calls, self.lifetime)


def test_refresh_point_is_15_minutes_early_or_a_quarter_of_a_short_lifetime() -> None:
    clock = Clock()
    assert creds.refresh_at(sts_creds(clock, 1, 3600), clock.now) == clock.now + 2700
    assert creds.refresh_at(sts_creds(clock, 1, 900), clock.now) == clock.now + 675
    static = creds.Credentials(access_key_id="a", access_key_secret=config.Secret("s"))
    assert creds.refresh_at(static, clock.now) == float("inf")


async def test_cached_until_the_refresh_point_then_refreshed_before_expiry() -> None:
    clock = Clock()
    source = Source(clock)
    cache = creds.Refreshing(source.fetch, name="test", clock=clock)
    first = await cache.get()
    clock.now += 2699  # just before the refresh point
    assert await cache.get() is first
    assert source.calls == 1
    clock.now += 2  # past it, 899 s before Expiration
    second = await cache.get()
    assert second.access_key_id == "STS.2"
    assert first.expiration is not None and clock.now < first.expiration  # refreshed *before* expiry
    assert cache.refreshes == 2


async def test_concurrent_callers_share_one_refresh() -> None:
    clock = Clock()
    source = Source(clock)
    source.gate = asyncio.Event()
    cache = creds.Refreshing(source.fetch, name="test", clock=clock)
    callers = [asyncio.ensure_future(cache.get()) for _ in range(20)]
    await source.entered.wait()  # the refresh runs (the callers, scheduled first, all wait on it)
    assert source.calls == 1
    source.gate.set()
    got = await asyncio.gather(*callers)
    assert {c.access_key_id for c in got} == {"STS.1"}
    assert source.calls == 1


async def test_a_cancelled_caller_does_not_cancel_the_refresh_of_the_others() -> None:
    clock = Clock()
    source = Source(clock)
    source.gate = asyncio.Event()
    cache = creds.Refreshing(source.fetch, name="test", clock=clock)
    first, second = asyncio.ensure_future(cache.get()), asyncio.ensure_future(cache.get())
    await source.entered.wait()
    first.cancel()
    source.gate.set()
    assert (await second).access_key_id == "STS.1"
    assert first.cancelled()


async def test_a_failed_refresh_keeps_valid_credentials_and_retries_soon() -> None:
    clock = Clock()
    source = Source(clock)
    cache = creds.Refreshing(source.fetch, name="test", clock=clock)
    first = await cache.get()
    clock.now += 2800  # in the refresh window, 800 s left
    source.fail = errors.TransientError("sts down", code="NetworkError")
    with capture_logs() as logs:
        assert await cache.get() is first
    assert cache.next_refresh_at == clock.now + creds.RETRY_S
    assert [e["event"] for e in logs] == ["credentials_refresh_failed"]
    assert await cache.get() is first  # no new attempt before the retry time
    assert source.calls == 2
    clock.now += creds.RETRY_S
    source.fail = None
    assert (await cache.get()).access_key_id == "STS.3"


async def test_no_valid_credentials_and_a_failed_fetch_is_a_transient_error() -> None:
    clock = Clock()
    source = Source(clock)
    source.fail = errors.PermanentError("AuthenticationFail.OIDCToken.Invalid", code="x")
    cache = creds.Refreshing(source.fetch, name="oidc_role_arn", clock=clock)
    with pytest.raises(errors.TransientError) as info:
        await cache.get()
    assert info.value.code == "CredentialsUnavailable"
    source.fail = None
    first = await cache.get()
    clock.now += 3600 - 5  # expires in 5 s: too close to hand out, and the refresh fails
    source.fail = OSError("token file gone")
    with pytest.raises(errors.TransientError):
        await cache.get()
    del first


async def test_invalidate_forces_the_next_get_to_refresh() -> None:
    clock = Clock()
    source = Source(clock)
    cache = creds.Refreshing(source.fetch, name="test", clock=clock)
    first = await cache.get()
    cache.invalidate(sts_creds(clock, 99))  # not the current credentials: ignored
    assert await cache.get() is first
    cache.invalidate(first)
    assert (await cache.get()).access_key_id == "STS.2"


async def test_secrets_never_reach_the_logs() -> None:
    clock = Clock()
    source = Source(clock)
    cache = creds.Refreshing(source.fetch, name="test", clock=clock)
    with capture_logs() as logs:
        got = await cache.get()
        clock.now += 3000
        source.fail = errors.TransientError("down")
        await cache.get()
    text = repr(logs) + repr(got)
    assert logs  # refreshed, then refresh failed: both logged
    assert SECRET not in text
    assert TOKEN not in text


# ---- which source the settings select -----------------------------------------------------------------


def settings(**kw: object) -> config.Settings:
    base: dict[str, object] = {"credentials_file": ""}
    base.update(kw)
    return config.Settings(**base)  # type: ignore[arg-type]


async def _get(provider: creds.CredentialsProvider | None) -> creds.Credentials:
    assert provider is not None
    return await provider.get()


async def test_environment_access_key_with_optional_security_token() -> None:
    async with aiohttp.ClientSession() as session:
        env = settings(access_key_id="LTAIx", access_key_secret=config.Secret("s"), credentials_file="")
        got = await _get(creds.from_settings(env, session=session))
        assert (got.access_key_id, got.security_token, got.provider) == ("LTAIx", None, "env")
        sts_env = settings(
            access_key_id="STS.x", access_key_secret=config.Secret("s"), security_token=config.Secret("tok")
        )
        got = await _get(creds.from_settings(sts_env, session=session))
        assert got.security_token == config.Secret("tok")


def test_environment_wins_over_oidc_and_half_set_sources_name_the_missing_variable(
    tmp_path: pathlib.Path,
) -> None:
    oidc = {"role_arn": "acs:ram::1:role/r", "oidc_provider_arn": "acs:ram::1:oidc-provider/p"}
    assert creds.source(settings(access_key_id="a", access_key_secret=config.Secret("s"), **oidc)) == "env"
    with pytest.raises(errors.ConfigError) as info:
        creds.source(settings(**oidc))
    assert info.value.variable == "ALIBABA_CLOUD_OIDC_TOKEN_FILE"
    assert creds.source(settings(oidc_token_file=str(tmp_path / "t"), **oidc)) == "oidc_role_arn"
    with pytest.raises(errors.ConfigError) as info:
        creds.source(settings(access_key_id="a"))
    assert info.value.variable == "ALIBABA_CLOUD_ACCESS_KEY_SECRET"
    with pytest.raises(errors.ConfigError) as info:
        creds.source(settings(credentials_file=str(tmp_path / "nope.ini")))
    assert info.value.variable == "ALIBABA_CLOUD_CREDENTIALS_FILE"


INI = """
[default]
type = access_key                  # the SDK drops comments after values
access_key_id = LTAIfile
access_key_secret = file-secret

[temp]
type = sts
access_key_id = STS.file
access_key_secret = sts-secret
security_token = sts-token

[rrsa]
type = oidc_role_arn
role_arn = acs:ram::1:role/r
oidc_provider_arn = acs:ram::1:oidc-provider/p
oidc_token_file_path = /var/run/token

[odd]
type = rsa_key_pair

[half]
type = sts
access_key_id = STS.file
"""


async def test_credentials_file_profiles(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "credentials.ini"
    path.write_text(INI)
    async with aiohttp.ClientSession() as session:
        got = await _get(creds.from_settings(settings(credentials_file=str(path)), session=session))
        assert (got.access_key_id, got.access_key_secret.reveal(), got.provider) == (
            "LTAIfile",
            "file-secret",
            "profile/access_key",
        )
        temp = settings(credentials_file=str(path), credentials_profile="temp")
        got = await _get(creds.from_settings(temp, session=session))
        assert got.security_token == config.Secret("sts-token")
        rrsa = creds.from_settings(
            settings(credentials_file=str(path), credentials_profile="rrsa"), session=session
        )
        assert isinstance(rrsa, creds.Refreshing) and rrsa.name == "oidc_role_arn"
        for profile, fragment in (
            ("odd", "not supported"),
            ("half", "security_token"),
            ("none", "no [none]"),
        ):
            with pytest.raises(errors.ConfigError) as info:
                creds.from_settings(
                    settings(credentials_file=str(path), credentials_profile=profile), session=session
                )
            assert info.value.variable == "ALIBABA_CLOUD_PROFILE"
            assert fragment in str(info.value)


def test_sts_endpoint_from_the_standard_variables() -> None:
    assert creds.sts_endpoint_for() == "https://sts.aliyuncs.com"
    assert creds.sts_endpoint_for(region="cn-hangzhou") == "https://sts.cn-hangzhou.aliyuncs.com"
    assert (
        creds.sts_endpoint_for(region="cn-hangzhou", vpc=True) == "https://sts-vpc.cn-hangzhou.aliyuncs.com"
    )
    assert creds.sts_endpoint_for(endpoint="sts-vpc.ap-southeast-1.aliyuncs.com", region="x") == (
        "https://sts-vpc.ap-southeast-1.aliyuncs.com"
    )


def test_the_settings_read_alibabas_variable_names() -> None:
    loaded = config.load(
        {
            "ALIBABA_CLOUD_ROLE_ARN": "acs:ram::1:role/r",
            "ALIBABA_CLOUD_OIDC_PROVIDER_ARN": "acs:ram::1:oidc-provider/p",
            "ALIBABA_CLOUD_OIDC_TOKEN_FILE": "/var/run/token",
            "ALIBABA_CLOUD_STS_REGION": "ap-southeast-1",
            "ALIBABA_CLOUD_VPC_ENDPOINT_ENABLED": "true",
            "ALIBABA_CLOUD_SECURITY_TOKEN": TOKEN,
            "ALIBABA_CLOUD_PROFILE": "rrsa",
        }
    )
    assert creds.source(loaded) == "oidc_role_arn"
    assert (loaded.sts_region, loaded.sts_vpc_endpoint, loaded.credentials_profile) == (
        "ap-southeast-1",
        True,
        "rrsa",
    )
    assert TOKEN not in repr(loaded)


def test_a_run_needs_no_access_key_with_an_oidc_role_or_a_credentials_file(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """check_can_run: the OIDC role (or a credentials file) replaces the AccessKey requirement; with no
    source at all the AccessKey is still the first thing named."""
    from fallback_daemon import app

    ready = {
        "receipt_token": config.Secret("r" * 20),
        "api_token": config.Secret("a" * 20),
        "sms_from": "Fallback",
        "credentials_file": str(tmp_path / "absent.ini"),
    }
    oidc = settings(
        role_arn="acs:ram::1:role/r",
        oidc_provider_arn="acs:ram::1:oidc-provider/p",
        oidc_token_file="/var/run/token",
        **ready,
    )
    app.check_can_run(oidc, use_sandbox=False)
    ini = tmp_path / "credentials.ini"
    ini.write_text("[default]\ntype = access_key\naccess_key_id = a\naccess_key_secret = b\n")
    app.check_can_run(settings(**{**ready, "credentials_file": str(ini)}), use_sandbox=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.alibabacloud/credentials.ini there
    with pytest.raises(errors.ConfigError) as info:
        app.check_can_run(settings(**{**ready, "credentials_file": ""}), use_sandbox=False)
    assert info.value.variable == "ALIBABA_CLOUD_ACCESS_KEY_ID"
