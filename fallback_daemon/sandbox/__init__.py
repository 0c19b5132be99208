"""A protocol-faithful local stand-in for Alibaba Cloud: CAMS SendChatappMessage, Dysmsapi SendMessageToGlobe
and SendSms with ACS3 and RPC V1 signature checks (its own code, nothing imported from the daemon) and the
QPS cap, STS AssumeRoleWithOIDC, MNS queues with Dybaseapi QueryTokenForMnsQueue, plus the "world" that
pushes receipts back (HTTP callbacks, MNS messages, or both).

Public surface: `SandboxConfig`, `create_app`, `serve` -> `Sandbox`, `run_forever`.
"""

from __future__ import annotations

from fallback_daemon.sandbox.app import Sandbox, create_app, run_forever, serve
from fallback_daemon.sandbox.config import DEFAULT_WEIGHTS, OUTCOMES, SandboxConfig

__all__ = ["DEFAULT_WEIGHTS", "OUTCOMES", "Sandbox", "SandboxConfig", "create_app", "run_forever", "serve"]
