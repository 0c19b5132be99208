"""STS (Security Token Service, API 2015-04-01) `AssumeRoleWithOIDC`, as ACK RRSA pods call it.

The call is RPC style and anonymous (Alibaba's API reference: no AccessKey, no signature; the OIDC token
is the proof). It answers `Credentials{AccessKeyId, AccessKeySecret, SecurityToken, Expiration}` with
Expiration in UTC `yyyy-MM-ddTHH:mm:ssZ`. The sandbox keeps every issued credential in `StsCredentials`;
the ACS3 and RPC verifiers (auth.py) accept them on CAMS and SMS calls while they are valid and only with
the matching security token (`x-acs-security-token` header, `SecurityToken` parameter).

The OIDC token is checked for shape only (a JWT: three base64url parts, a JSON payload whose `exp`, when
present, is in the future) - the sandbox has no identity provider to verify its signature against.
"""

from __future__ import annotations

import base64
import binascii
import collections
import dataclasses
import datetime as dt
import json
import re
import secrets
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from aiohttp import web

from fallback_daemon.sandbox import replies

if TYPE_CHECKING:
    from fallback_daemon.sandbox.state import SandboxState

ACTION = "AssumeRoleWithOIDC"
VERSION = "2015-04-01"
PRODUCT = "sts"
EXPIRATION_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
DEFAULT_DURATION_S = 3600
MIN_DURATION_S = 900
ROLE_ARN = re.compile(r"acs:ram::(\d+):role/([\w.@+=,-]{1,64})\Z", re.IGNORECASE)
PROVIDER_ARN = re.compile(r"acs:ram::(\d+):oidc-provider/([\w.-]{1,128})\Z", re.IGNORECASE)
SESSION_NAME = re.compile(r"[\w.@-]{2,64}\Z")


@dataclasses.dataclass(kw_only=True)
class StsCredential:
    """One issued temporary credential; `expires_at` in whole epoch seconds (what Expiration printed)."""

    access_key_id: str
    access_key_secret: str = dataclasses.field(repr=False)
    security_token: str = dataclasses.field(repr=False)
    role_arn: str
    session_name: str
    expires_at: int


class StsCredentials:
    """Issued STS credentials by AccessKeyId; long-expired ones are forgotten."""

    def __init__(self, *, clock: Callable[[], float], max_duration_s: int) -> None:
        self._clock = clock
        self.max_duration_s = max_duration_s
        self._by_key: collections.OrderedDict[str, StsCredential] = collections.OrderedDict()
        self.issued = 0

    def issue(self, *, role_arn: str, session_name: str, duration_s: int) -> StsCredential:
        now = int(self._clock())
        cred = StsCredential(
            access_key_id=f"STS.{secrets.token_hex(12)}",
            access_key_secret=secrets.token_urlsafe(30),
            security_token=f"CAIS{secrets.token_urlsafe(90)}",
            role_arn=role_arn,
            session_name=session_name,
            expires_at=now + duration_s,
        )
        self._by_key[cred.access_key_id] = cred
        self.issued += 1
        while len(self._by_key) > 10_000 or next(iter(self._by_key.values())).expires_at + 3600 < now:
            self._by_key.popitem(last=False)
        return cred

    def lookup(self, access_key_id: str) -> StsCredential | None:
        return self._by_key.get(access_key_id)

    def expired(self, cred: StsCredential, now: float) -> bool:
        return now >= cred.expires_at

    def expire_all(self) -> int:
        """Make every issued credential expire now (a test knob); returns how many were still valid."""
        now = int(self._clock())
        live = [c for c in self._by_key.values() if c.expires_at > now]
        for cred in live:
            cred.expires_at = now
        return len(live)


def _jwt_claims(token: str) -> dict[str, object] | None:
    """The payload of a JWT-shaped token; None when it is not one."""
    parts = token.split(".")
    if len(parts) != 3 or not all(parts[:2]):
        return None
    try:
        payload = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4))
        claims = json.loads(payload)
    except (binascii.Error, ValueError):
        return None
    return claims if isinstance(claims, dict) else None


def _problem(params: Mapping[str, str]) -> tuple[str, str] | None:
    """(name, what is wrong) for the first invalid parameter; "Missing" when absent."""
    for name in ("RoleArn", "OIDCProviderArn", "OIDCToken", "RoleSessionName"):
        if not params.get(name):
            return name, "Missing"
    if not ROLE_ARN.match(params["RoleArn"]):
        return "RoleArn", "must be acs:ram::<account>:role/<name>"
    if not PROVIDER_ARN.match(params["OIDCProviderArn"]):
        return "OIDCProviderArn", "must be acs:ram::<account>:oidc-provider/<name>"
    if not SESSION_NAME.match(params["RoleSessionName"]):
        return "RoleSessionName", "2 to 64 characters of letters, digits, '.', '@', '-' and '_'"
    return None


async def assume_role_with_oidc(
    state: SandboxState, *, access_key: str, params: Mapping[str, str], request: web.Request
) -> web.Response:
    """AssumeRoleWithOIDC: temporary credentials for the role, valid DurationSeconds (900..the maximum)."""
    del access_key  # anonymous
    now = state.config.wall_clock()
    problem = _problem(params)
    if problem is not None:
        name, what = problem
        if what == "Missing":
            return replies.missing(request, name, product=PRODUCT)
        return replies.invalid(request, name, what, product=PRODUCT)
    claims = _jwt_claims(params["OIDCToken"])
    if claims is None:
        return replies.pop_error(
            request, 400, "InvalidParameter.OIDCToken", "The OIDC token is not a JWT.", product=PRODUCT
        )
    exp = claims.get("exp")
    if isinstance(exp, int | float) and exp <= now:
        return replies.pop_error(
            request,
            400,
            "AuthenticationFail.OIDCToken.Expired",
            "The OIDC token has expired.",
            product=PRODUCT,
        )
    store = state.sts
    try:
        duration = int(params.get("DurationSeconds") or DEFAULT_DURATION_S)
    except ValueError:
        duration = -1
    if not MIN_DURATION_S <= duration <= store.max_duration_s:
        return replies.invalid(
            request,
            "DurationSeconds",
            f"must be within {MIN_DURATION_S}..{store.max_duration_s}",
            product=PRODUCT,
        )
    cred = store.issue(
        role_arn=params["RoleArn"], session_name=params["RoleSessionName"], duration_s=duration
    )
    account, role = ROLE_ARN.match(params["RoleArn"]).groups()  # type: ignore[union-attr]
    expiration = dt.datetime.fromtimestamp(cred.expires_at, dt.UTC).strftime(EXPIRATION_FORMAT)
    return replies.reply(
        {
            "RequestId": replies.request_id(),
            "AssumedRoleUser": {
                "AssumedRoleId": f"{secrets.randbelow(10**18):018d}:{cred.session_name}",
                "Arn": f"acs:ram::{account}:role/{role.lower()}/{cred.session_name}",
            },
            "OIDCTokenInfo": {
                "Subject": str(claims.get("sub", "")),
                "Issuer": str(claims.get("iss", "")),
                "ClientIds": str(claims.get("aud", "")),
            },
            "Credentials": {
                "AccessKeyId": cred.access_key_id,
                "AccessKeySecret": cred.access_key_secret,
                "SecurityToken": cred.security_token,
                "Expiration": expiration,
            },
        }
    )
