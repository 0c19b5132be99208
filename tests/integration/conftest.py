"""Fixtures for the AWS tests: one moto server per session (real HTTP on loopback), dummy AWS credentials."""

from __future__ import annotations

from collections.abc import Iterator

import aiohttp
import pytest


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    """A moto server in a thread of this process (SQS, SNS, /moto-api/), bound to loopback on a free port."""
    from moto.server import ThreadedMotoServer  # imported here: only the AWS tests pay for moto

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """The standard AWS credential chain sees dummy credentials only (no profile, role or metadata)."""
    for var in (
        "AWS_PROFILE",
        "AWS_SESSION_TOKEN",
        "AWS_SECURITY_TOKEN",
        "AWS_ROLE_ARN",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_ENDPOINT_URL",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
async def aws(moto_url: str, aws_credentials: None) -> str:
    """moto's URL, with every moto backend reset, and dummy AWS credentials."""
    async with aiohttp.ClientSession() as http, http.post(f"{moto_url}/moto-api/reset") as resp:
        assert resp.status == 200
    return moto_url
