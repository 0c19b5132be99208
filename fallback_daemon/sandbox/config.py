"""The sandbox's settings: one frozen `SandboxConfig`, validated at construction.

Callback URLs are the only thing that changes after start (the daemon starts after the sandbox); they live
in `Callbacks`, a small mutable holder seeded from the config.
"""

from __future__ import annotations

import dataclasses
import time
import types
from collections.abc import Callable, Mapping

# The outcomes a chat message can have; `early` is `read` with the Delivered receipt pushed before the send
# response is returned.
OUTCOMES = ("read", "delivered", "failed", "silent", "late", "rejected", "early")

DELIVERY_MODES = ("http", "mns", "both")

DEFAULT_WEIGHTS: Mapping[str, int] = types.MappingProxyType(
    {"read": 45, "delivered": 20, "failed": 10, "silent": 10, "late": 5, "rejected": 5, "early": 5}
)


@dataclasses.dataclass(frozen=True, kw_only=True)
class SandboxConfig:
    """How the sandbox behaves.

    Attributes:
        access_key_id / access_key_secret: the one known AccessKey pair.
        qps: CAMS calls per second per AccessKey (sliding 1-second window); above it `Throttling.User`.
        chatapp_callback_url: where ChatAppStatus reports are pushed (None: not pushed, recorded as failed).
        sms_callback_url: where international SMS reports (SendMessageToGlobe) are pushed.
        sms_domestic_callback_url: where domestic SmsReport records (SendSms) go; default sms_callback_url.
        mode: `suffix` (outcome from the last digit of To) or `mix` (seeded weighted random).
        seed: seed of the one random generator (mix outcomes and chaos knobs).
        weights: outcome weights for `mix` mode (keys from OUTCOMES).
        duplicate_rate: share of reports pushed a second time.
        reorder: shuffle the reports of a message before pushing them.
        omit_task_id_rate: share of chat reports pushed without a TaskId field.
        receipt_delay_ms: (min, max) delay before each report is queued for pushing.
        late_delay_s: release withheld `late` receipts after this long (None: only on /sandbox/release-late).
        sms_fail_rate: in `mix` mode, share of SMS that get a failed report (a To ending in 55 always fails).
        flush_ms: how long the pusher gathers reports into one push (at most `batch_size` per push).
        batch_size: most reports in one push (Alibaba pushes up to 100).
        push_retries: extra tries for a push that did not get HTTP 200.
        push_backoff_s: first retry delay, doubled on each retry.
        push_timeout_s: timeout of one push.
        max_skew_s: allowed difference between x-acs-date and the sandbox clock.
        journal_limit: most entries kept per journal section (oldest dropped first).
        journal_path: a file the journal's send records are appended to and replayed from on start, so
            they survive restarts (None: in memory only).
        receipt_delivery: `http` (push to the callback URLs), `mns` (one base64-JSON message per report in
            the MNS queues below) or `both` (each report over both: duplicates on purpose).
        mns_uid: the account id in the Alicom queue names `Alicom-Queue-<uid>-ChatAppStatus` / `-SmsReport`.
        mns_chatapp_queue / mns_sms_queue: where reports go in MNS (default: the Alicom names). A name that
            does not start with `Alicom-Queue-` is an "own" queue: the static AccessKey may use it.
        mns_extra_queues: more (own) queues to create.
        mns_visibility_timeout_s: how long a received message stays invisible (redelivered afterwards).
        mns_token_ttl_s: lifetime of the temporary credentials QueryTokenForMnsQueue issues.
        sts_max_duration_s: the longest DurationSeconds AssumeRoleWithOIDC grants (the role's maximum
            session duration; Alibaba allows up to 43200).
        clock: monotonic clock used by the QPS limiter (tests may freeze it).
        wall_clock: epoch-seconds clock for request dates, nonces and STS expiry (tests may move it).
    """

    access_key_id: str = "sandbox-ak"
    access_key_secret: str = dataclasses.field(default="sandbox-secret", repr=False)
    qps: int = 250
    chatapp_callback_url: str | None = None
    sms_callback_url: str | None = None
    sms_domestic_callback_url: str | None = None
    mode: str = "suffix"
    seed: int = 0
    weights: Mapping[str, int] = dataclasses.field(default_factory=lambda: DEFAULT_WEIGHTS)
    duplicate_rate: float = 0.0
    reorder: bool = False
    omit_task_id_rate: float = 0.0
    receipt_delay_ms: tuple[int, int] = (0, 50)
    late_delay_s: float | None = None
    sms_fail_rate: float = 0.0
    flush_ms: int = 5
    batch_size: int = 100
    push_retries: int = 3
    push_backoff_s: float = 0.05
    push_timeout_s: float = 3.0
    max_skew_s: int = 900
    journal_limit: int = 100_000
    journal_path: str | None = None
    receipt_delivery: str = "http"
    mns_uid: str = "1234567890"
    mns_chatapp_queue: str | None = None
    mns_sms_queue: str | None = None
    mns_extra_queues: tuple[str, ...] = ()
    mns_visibility_timeout_s: int = 30
    mns_token_ttl_s: int = 600
    sts_max_duration_s: int = 43200
    clock: Callable[[], float] = dataclasses.field(default=time.monotonic, repr=False, compare=False)
    wall_clock: Callable[[], float] = dataclasses.field(default=time.time, repr=False, compare=False)

    def __post_init__(self) -> None:
        problems = list(self._problems())
        if problems:
            raise ValueError("invalid SandboxConfig: " + "; ".join(problems))
        object.__setattr__(self, "weights", types.MappingProxyType(dict(self.weights)))
        object.__setattr__(self, "receipt_delay_ms", tuple(self.receipt_delay_ms))
        object.__setattr__(self, "mns_extra_queues", tuple(self.mns_extra_queues))

    def _problems(self) -> list[str]:
        out: list[str] = []
        if self.mode not in ("suffix", "mix"):
            out.append(f"mode must be 'suffix' or 'mix', not {self.mode!r}")
        if self.qps < 1:
            out.append("qps must be >= 1")
        unknown = set(self.weights) - set(OUTCOMES)
        if unknown:
            out.append(f"weights has unknown outcomes {sorted(unknown)}")
        if any(w < 0 for w in self.weights.values()) or sum(self.weights.values()) <= 0:
            out.append("weights must be >= 0 with a positive sum")
        for name in ("duplicate_rate", "omit_task_id_rate", "sms_fail_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                out.append(f"{name} must be within 0..1")
        low, high = self.receipt_delay_ms
        if not 0 <= low <= high:
            out.append("receipt_delay_ms must be (min, max) with 0 <= min <= max")
        if self.late_delay_s is not None and self.late_delay_s < 0:
            out.append("late_delay_s must be >= 0")
        if not 1 <= self.batch_size <= 1000:
            out.append("batch_size must be within 1..1000")
        if self.push_retries < 0 or self.flush_ms < 0 or self.push_backoff_s < 0:
            out.append("push_retries, flush_ms and push_backoff_s must be >= 0")
        return out + self._mns_problems()

    def _mns_problems(self) -> list[str]:
        out: list[str] = []
        if self.receipt_delivery not in DELIVERY_MODES:
            out.append(f"receipt_delivery must be one of {', '.join(DELIVERY_MODES)}")
        if not 1 <= self.mns_visibility_timeout_s <= 43200:
            out.append("mns_visibility_timeout_s must be within 1..43200")
        if self.mns_token_ttl_s < 1:
            out.append("mns_token_ttl_s must be >= 1")
        if not 900 <= self.sts_max_duration_s <= 43200:
            out.append("sts_max_duration_s must be within 900..43200")
        return out

    @property
    def chatapp_queue(self) -> str:
        return self.mns_chatapp_queue or f"Alicom-Queue-{self.mns_uid}-ChatAppStatus"

    @property
    def sms_queue(self) -> str:
        return self.mns_sms_queue or f"Alicom-Queue-{self.mns_uid}-SmsReport"


@dataclasses.dataclass(kw_only=True)
class Callbacks:
    """Where receipts go now; changed at run time by `Sandbox.set_callbacks` or `POST /sandbox/callbacks`."""

    chatapp: str | None = None
    sms: str | None = None
    sms_domestic: str | None = None

    @classmethod
    def from_config(cls, config: SandboxConfig) -> Callbacks:
        return cls(
            chatapp=config.chatapp_callback_url,
            sms=config.sms_callback_url,
            sms_domestic=config.sms_domestic_callback_url,
        )

    def domestic_url(self) -> str | None:
        return self.sms_domestic or self.sms
