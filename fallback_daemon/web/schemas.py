"""The HTTP contract: every request and response body of the API as a msgspec Struct, declared once.

`web/openapi.py` generates the OpenAPI 3.1 document from these (`msgspec.json.schema_components`); a class
docstring becomes the schema's description and an `Annotated[..., Meta(...)]` its constraints. The limits
come from the modules that enforce them (`validation`, `opinput`, `opstats`, `receipts`), so a limit is
written once.

Responses are built from the structs where the view is defined (`views.message_view`,
`views.message_summary`, `web/api.py`), so the answer cannot carry a field the document does not name.
Requests are still *decoded* by `validation.py` and `opinput.py`, not by `msgspec.json.decode(..., type=…)`:
their 400s name the field in the API's own words ("is required", "unknown field (did you mean To?)", the
Alibaba rules that depend on the channel), which a struct decoder's messages ("Expected `str`, got `int` -
at `$.To`") would replace on every endpoint. The request structs describe those bodies for the document and
for the tests (tests/integration/test_openapi.py checks the handlers against them). docs/architecture.md
("One declaration of the contract") has the why and the measured msgspec/pydantic figure.

Response structs forbid unknown fields (`additionalProperties: false`), so a key added to an answer without
adding it here fails the response-validation tests.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

from fallback_daemon.core import model, receipts, validation
from fallback_daemon.engine import views, webhooks
from fallback_daemon.ops import advice, opinput, opstats

# ---- shared pieces -----------------------------------------------------------------------------------------
# Strings whose values are declared where they are enforced (kept as `str`, described as an enum).
Channel = Annotated[
    str, Meta(description="The channel.", extra_json_schema={"enum": list(validation.CHANNELS)})
]
SendType = Annotated[
    str,
    Meta(
        description="A template or a free-form message.", extra_json_schema={"enum": ["template", "message"]}
    ),
]
MessageKind = Annotated[
    str,
    Meta(
        description="Required for Type message; the values allowed depend on ChannelType.",
        extra_json_schema={"enum": sorted({t for ts in validation.MESSAGE_TYPES.values() for t in ts})},
    ),
]
ViberLabel = Annotated[
    str, Meta(description="viber only.", extra_json_schema={"enum": list(validation.LABELS)})
]
FallbackRule = Annotated[
    str,
    Meta(
        description="When the SMS fallback fires (default undelivered).",
        extra_json_schema={"enum": list(validation.RULES)},
    ),
]
Time = views.Time
DigitString = Annotated[str, Meta(pattern=r"^[0-9]{1,10}$", description="An integer written as digits.")]
_PLAIN = validation.PLAIN_STRINGS


class Out(msgspec.Struct, forbid_unknown_fields=True):
    """Base of every response body: no field beyond the declared ones."""


class In(msgspec.Struct, forbid_unknown_fields=True):
    """Base of every request body: an unknown field is a 400 naming it."""


# ---- errors ------------------------------------------------------------------------------------------------
class ErrorDetail(Out):
    """What went wrong; `field` names the field, header or parameter (a path such as `messages[3].To`)."""

    message: str
    field: str | UnsetType = UNSET
    tokens: (
        Annotated[list[str], Meta(description="401/403: the variables whose token this route takes.")]
        | UnsetType
    ) = UNSET


class Error(Out):
    """Every error answer (4xx, 5xx). Texts are masked like log lines (no phone number, no secret)."""

    error: ErrorDetail


# ---- sending -----------------------------------------------------------------------------------------------
_FALLBACK_RANGE = validation.DURATION_RANGE
_TTL_RANGE = validation.TTL_RANGE


class SendMessage(In):
    """One message, SendChatappMessage field names (reference/SendChatappMessage.txt); `null` counts as
    absent. Checked beyond these types: `To` by channel (phone digits for whatsapp/viber, a user id
    otherwise), `MessageType` by channel, the keys `Content` needs per (channel, MessageType), `Type:
    template` needs `TemplateCode`/`TemplateName` and `Language`, `Type: message` needs `MessageType` and
    `Content`; `Label` and `Ttl` only for viber; `FallBackId` is refused (the daemon sends the fallback)."""

    ChannelType: Channel
    Type: SendType
    From: Annotated[
        str, Meta(min_length=1, max_length=128, description="The sender (business number or id).")
    ]
    To: Annotated[
        str,
        Meta(
            min_length=1,
            max_length=128,
            description="Phone number with country code, or the channel's user id.",
        ),
    ]
    MessageType: MessageKind | None = None
    Content: (
        Annotated[
            dict[str, Any],
            Meta(
                description='The channel\'s message content (a JSON object), e.g. {"text": "hi"}.',
                extra_json_schema={"additionalProperties": True},
            ),
        ]
        | Annotated[str, Meta(description="The same object as JSON text.")]
        | None
    ) = None
    TemplateParams: (
        Annotated[
            dict[str, str | int | float],
            Meta(max_length=validation.TEMPLATE_PARAMS_MAX, description="Template variables by name."),
        ]
        | Annotated[str, Meta(description="The same object as JSON text.")]
        | None
    ) = None
    Payload: (
        Annotated[
            list[Annotated[str, Meta(max_length=validation.ITEM_MAX)]],
            Meta(max_length=validation.PAYLOAD_MAX, description="Button payloads."),
        ]
        | Annotated[str, Meta(description="The same array as JSON text.")]
        | None
    ) = None
    Label: ViberLabel | None = None
    Ttl: (
        Annotated[int, Meta(ge=_TTL_RANGE[0], le=_TTL_RANGE[1], description="viber only: seconds.")]
        | DigitString
        | None
    ) = None
    TaskId: (
        Annotated[
            str, Meta(min_length=1, max_length=validation.TASK_ID_MAX, description="The client's own id.")
        ]
        | None
    ) = None
    FallBackRule: FallbackRule | None = None
    FallBackDuration: (
        Annotated[
            int,
            Meta(
                ge=_FALLBACK_RANGE[0],
                le=_FALLBACK_RANGE[1],
                description="Seconds to wait for the rule's success before the SMS fires.",
            ),
        ]
        | DigitString
        | None
    ) = None
    FallBackContent: (
        Annotated[
            str,
            Meta(
                min_length=1,
                max_length=validation.FALLBACK_CONTENT_MAX,
                description="The SMS text; without it, no fallback.",
            ),
        ]
        | None
    ) = None
    FallBackUrgent: (
        Annotated[bool, Meta(description="The fallback SMS may go out inside quiet hours (default false).")]
        | None
    ) = None
    CustSpaceId: Annotated[str, Meta(min_length=1, max_length=_PLAIN["CustSpaceId"])] | None = None
    Language: (
        Annotated[
            str, Meta(min_length=1, max_length=_PLAIN["Language"], description="Required for Type template.")
        ]
        | None
    ) = None
    TemplateCode: Annotated[str, Meta(min_length=1, max_length=_PLAIN["TemplateCode"])] | None = None
    TemplateName: Annotated[str, Meta(min_length=1, max_length=_PLAIN["TemplateName"])] | None = None
    Tag: Annotated[str, Meta(min_length=1, max_length=_PLAIN["Tag"])] | None = None
    TrackingData: Annotated[str, Meta(min_length=1, max_length=_PLAIN["TrackingData"])] | None = None
    ContextMessageId: Annotated[str, Meta(min_length=1, max_length=_PLAIN["ContextMessageId"])] | None = None
    Category: Annotated[str, Meta(min_length=1, max_length=_PLAIN["Category"])] | None = None


BATCH_MAX = 1000  # validation.validate_batch's default, the one the handler uses


class SendBatch(In):
    """Many messages in one request; errors name the item (`messages[3].To`)."""

    messages: Annotated[list[SendMessage], Meta(min_length=1, max_length=BATCH_MAX)]


class Accepted(Out):
    """A new message (`state: accepted`, 202), or on a replayed Idempotency-Key the one it named, as it is
    now (200)."""

    id: uuid.UUID
    state: model.ChatState
    fallback_state: model.FallbackState
    created: bool


class BatchAccepted(Out):
    """One entry per item, in the request's order."""

    messages: list[Accepted]


# ---- the message view: defined in views.py (the read model the service builds), part of the contract here --
Message = views.Message
MessageLinks = views.MessageLinks
MessageSummary = views.MessageSummary
TimelineEvent = views.TimelineEvent


class PageLinks(Out):
    next: str


class SearchPage(Out):
    """One page, newest first; `next_cursor` (and `links.next`) only when there is another page."""

    messages: list[MessageSummary]
    next_cursor: str | None
    links: PageLinks | UnsetType = UNSET


# ---- operator actions --------------------------------------------------------------------------------------
_ACTOR = Annotated[
    str,
    Meta(
        pattern=f"^{opinput._ACTOR.pattern}$",
        description="Who asks (recorded in the timeline).",
    ),
]
_REASON = Annotated[str, Meta(max_length=opinput.REASON_MAX, description="Why (recorded).")]


class ActionBody(In):
    """Who and why (both optional; the body may be empty)."""

    actor: _ACTOR = "operator"
    reason: _REASON | None = None


class FireBody(ActionBody):
    """Who and why; `force` fires even a fallback held as sms_unknown."""

    force: Annotated[
        bool, Meta(description="Fire even a fallback whose SMS may have gone out (a second SMS).")
    ] = False


class RedriveBody(ActionBody):
    """Who and why; `force` re-drives even a provider call still inside its lease."""

    force: Annotated[
        bool, Meta(description="Re-drive even while a call is in flight (risks a duplicate).")
    ] = False


class HeldBody(ActionBody):
    """The held fallbacks to act on (channel / hold_reason / ids, or all=true), plus who and why."""

    channel: Annotated[str, Meta(min_length=1, max_length=opinput.TEXT_MAX)] | None = None
    hold_reason: (
        Annotated[
            str,
            Meta(
                min_length=1,
                max_length=opinput.TEXT_MAX,
                description="Only this hold reason (feed_down, sms_unknown, sms_retries_exhausted).",
            ),
        ]
        | None
    ) = None
    force: Annotated[
        bool,
        Meta(
            description="Release also fallbacks held as sms_unknown (their SMS may have gone out: releasing"
            " sends another). Without it they are listed under needs_force."
        ),
    ] = False
    ids: Annotated[list[uuid.UUID], Meta(min_length=1, max_length=opinput.HELD_LIMIT_MAX)] | None = None
    all: Annotated[bool, Meta(description="Required when no other filter is given.")] = False
    limit: Annotated[int, Meta(ge=1, le=opinput.HELD_LIMIT_MAX)] = opinput.HELD_LIMIT_DEFAULT


class ActionResult(Out):
    """What the action did; `next` says what happens now, where that is not obvious."""

    id: uuid.UUID
    action: Literal["cancel", "fire", "redrive"]
    outcome: str
    chat_state: model.ChatState
    fallback_state: model.FallbackState
    links: MessageLinks
    next: str | UnsetType = UNSET


class HeldResult(Out):
    """What a held release/drop did: the ids done; `more` when the limit was reached; `needs_force` (release
    without force) the sms_unknown ones left out; `not_held` (with ids) the given ids that were not held."""

    action: Literal["release", "drop"]
    matched: int
    done: int
    refused: int
    ids: list[uuid.UUID]
    more: bool
    needs_force: list[uuid.UUID] | UnsetType = UNSET
    not_held: list[uuid.UUID] | UnsetType = UNSET


# ---- dead letters ------------------------------------------------------------------------------------------
class DeadLetter(Out):
    """A queue message that could not be parsed, kept exactly as received."""

    id: int
    source: str
    queue: str
    kind: model.ReceiptKind
    queue_message_id: str | None
    body: str
    error: str
    received_at: Time
    replayed_at: Time | None
    replayed_by: str | None
    replay_reason: str | None


class DeadLetterPage(Out):
    """One page, newest first; `next_cursor` is the `cursor` of the next page."""

    dead_letters: list[DeadLetter]
    next_cursor: str | None


class ReplayResult(Out):
    """The dead letter, re-parsed and ingested: how many receipts it held and what became of them."""

    id: int
    replayed_at: Time
    received: int
    duplicates: int
    applied: int
    parked: int


# ---- stats -------------------------------------------------------------------------------------------------
Counts = dict[str, int]
Seconds = float | None


class StateCount(Out):
    chat_state: model.ChatState
    fallback_state: model.FallbackState
    count: int


class MessageStats(Out):
    total: int
    by_chat_state: Counts
    by_fallback_state: Counts
    by_state: list[StateCount]


class ByReason(Out):
    total: int
    by_reason: Counts


class FallbackStats(Out):
    fired: ByReason
    double_delivered: ByReason
    suppressed: ByReason
    sms_delivered: int
    sms_failed: int


class TimerBuckets(Out):
    """Armed fallbacks by how soon they fire."""

    overdue: int
    lt_1m: int = msgspec.field(name="<1m")
    lt_5m: int = msgspec.field(name="<5m")
    lt_15m: int = msgspec.field(name="<15m")
    lt_1h: int = msgspec.field(name="<1h")
    later: int


class PendingTimers(Out):
    total: int
    buckets: TimerBuckets
    oldest_overdue_s: Seconds


class HeldGroup(Out):
    reason: str
    channel: str
    count: int
    oldest_s: Seconds


class HeldStats(Out):
    total: int
    by_reason: Counts
    by_reason_channel: list[HeldGroup]


class Pipeline(Out):
    """Where work is right now; `*_stale`: the lease ran out (the recovery sweep takes it within seconds)."""

    queued_due: int
    queued_retry: int
    oldest_queued_s: Seconds
    sending: int
    sending_stale: int
    unknown: int
    firing: int
    firing_stale: int


class ChannelSending(Out):
    channel: str
    sent: int
    send_failed: int
    last_sent_at: Time | None
    since_last_sent_s: Seconds


class ErrorCount(Out):
    error: str | None
    count: int


class ReceiptFeed(Out):
    source: str
    kind: model.ReceiptKind
    channel: str | None
    count: int
    last_at: Time | None
    since_last_s: Seconds
    lag_p50_s: Seconds
    lag_p99_s: Seconds
    lag_max_s: Seconds


class ReceiptStats(Out):
    sample_limit: int
    sampled: int
    feeds: list[ReceiptFeed]


class FeedHealth(Out):
    channel: str
    last_receipt_at: Time | None
    since_last_s: Seconds
    gate_closed: bool
    changed_at: Time


class DeadLetterGroup(Out):
    source: str
    kind: model.ReceiptKind
    count: int
    oldest_at: Time | None


class DeadLetterStats(Out):
    pending: int
    by_source: list[DeadLetterGroup]


class Stats(Out):
    """Counts, fallbacks by reason, timers, holds, pipeline, receipt feeds, dead letters
    (docs/operations.md says what each figure means). Windowed figures cover the last `window_s` seconds."""

    window_s: Annotated[int, Meta(ge=1, le=opstats.WINDOW_MAX)]
    generated_at: Time
    messages: MessageStats
    fallbacks: FallbackStats
    pending_timers: PendingTimers
    held: HeldStats
    pipeline: Pipeline
    sending: list[ChannelSending]
    errors: list[ErrorCount]
    receipts: ReceiptStats
    feed_health: list[FeedHealth]
    dead_letters: DeadLetterStats


# /v1/stats, /v1/stats/series and /v1/stats/latency are answered as the dicts opstats.py and advice.py build
# (the CLI prints the same ones); these structs describe them, and tests/integration/test_openapi.py validates
# real answers against them (additionalProperties false: a key added there and not here fails).
class SeriesCounts(Out):
    """Per-minute counts of each series, oldest minute first (`minutes` entries; the last one is the
    current, unfinished minute). The field names are `opstats.SERIES`."""

    sent: list[int]
    delivered: list[int]
    read: list[int]
    failed: list[int]
    fired: list[int]
    sms_sent: list[int]
    sms_delivered: list[int]
    sms_failed: list[int]


class StatsSeries(Out):
    """Per-minute event counts by channel for the charts of the operator page (`opstats.series`), from the
    per-minute rollups; a minute is rolled up once it is `SERIES_SETTLE_S` old (`rolled_through`), newer
    ones are counted from the events."""

    window_s: Annotated[int, Meta(ge=60, le=opstats.SERIES_WINDOW_MAX)]
    minute_s: Literal[60]
    from_: Annotated[Time, Meta(description="The start of the first minute.")] = msgspec.field(name="from")
    minutes: Annotated[int, Meta(ge=1, description="Entries in each list.")]
    generated_at: Time
    rolled_through: Annotated[
        Time | None, Meta(description="The end of the last minute rolled up (null: none yet).")
    ]
    series: Annotated[
        list[str], Meta(description="The series names, in order (the keys of each SeriesCounts).")
    ]
    channels: Annotated[
        dict[str, SeriesCounts], Meta(description="By channel; only channels with events in the window.")
    ]
    total: Annotated[SeriesCounts, Meta(description="Over every channel (or the one asked for).")]


Rate = Annotated[float, Meta(ge=0, le=1)]


class HistogramBucket(Out):
    le_s: Annotated[float | None, Meta(description="Upper edge in seconds; null: the open last bucket.")]
    count: int


class Distribution(Out):
    """Times in seconds from `sent_at` to the receipt's arrival: nearest-rank percentiles and a histogram
    (null: no sample)."""

    count: int
    p50_s: float | None
    p90_s: float | None
    p99_s: float | None
    max_s: float | None
    histogram: list[HistogramBucket]


class DurationOutcome(Out):
    """Messages sent with a FallBackDuration in [from_s, to_s) and how many were delivered twice."""

    from_s: int
    to_s: int
    messages: int
    double_delivered: int
    rate: Rate


class PredictedRate(Out):
    """The double-delivery rate a FallBackDuration of `duration_s` would have given, per rule."""

    duration_s: int
    undelivered: Rate | None
    unread: Rate | None


class RuleAdvice(Out):
    needed_s: Annotated[float, Meta(ge=0, description="The smallest duration meeting the target.")]
    suggested_duration_s: Annotated[
        int, Meta(ge=_FALLBACK_RANGE[0], le=_FALLBACK_RANGE[1], description="needed_s rounded up, in range.")
    ]
    reachable: Annotated[
        bool, Meta(description="false: even the longest FallBackDuration misses the target.")
    ]
    predicted_rate: Rate | None


class Advice(Out):
    target: float
    undelivered: RuleAdvice
    unread: RuleAdvice


class LatencyGroup(Out):
    """One channel and country calling code (or the `prefix` asked for)."""

    channel: str
    prefix: str
    messages: int
    sent_to_delivered: Distribution
    sent_to_read: Distribution
    double_delivery_by_duration: list[DurationOutcome]
    predicted_rate_by_duration: list[PredictedRate]
    advice: Advice


class StatsLatency(Out):
    """Delivery and read times of the chat messages sent in the window and the FallBackDuration that keeps
    double deliveries under `target` (advice.py; docs/operations.md "How long should FallBackDuration
    be?")."""

    window_s: Annotated[int, Meta(ge=60, le=advice.WINDOW_MAX)]
    target: Annotated[float, Meta(gt=0, le=0.5)]
    channel: str | None
    prefix: str | None
    sampled: int
    sample_limit: int
    groups: list[LatencyGroup]
    timer_scale: (
        Annotated[float, Meta(description="Sandbox only: FALLBACK_SANDBOX_TIMER_SCALE, when not 1.")]
        | UnsetType
    ) = UNSET


# ---- webhooks: declared in webhooks.py (the store builds them), part of the contract here ------------------
NewEndpoint = webhooks.NewEndpoint
Endpoint = webhooks.Endpoint
CreatedEndpoint = webhooks.CreatedEndpoint
EndpointList = webhooks.EndpointList
WebhookDeleted = webhooks.Deleted
DeliveryPage = webhooks.DeliveryPage
Replay = webhooks.Replay
Replayed = webhooks.Replayed
# The guards' bodies are declared in web/guards.py; openapi.py imports that module when it builds the
# document (web/guards.py → web/operator.py → web/openapi.py: importing it here would be a cycle).


# ---- provider receipts -------------------------------------------------------------------------------------
_ID = Annotated[str, Meta(min_length=1, max_length=receipts.ID_MAX)]
_STATUS = Annotated[str, Meta(min_length=1, max_length=receipts.STATUS_MAX)]
_OPTIONAL_ID = _ID | int | None


class ChatAppReport(msgspec.Struct):
    """A CAMS ChatAppStatus report (other keys are kept as received)."""

    MessageId: _ID
    Status: _STATUS
    TaskId: _OPTIONAL_ID = None
    Timestamp: Annotated[int, Meta(ge=0, description="Unix milliseconds.")] | DigitString | None = None
    ErrorCode: _OPTIONAL_ID = None


class SmsReport(msgspec.Struct):
    """An SMS delivery report: international (`MessageId`, `Status`, `TaskId`, `ErrorCode`) or mainland
    China (`biz_id`, `success`, `out_id`, `err_code`); other keys are kept as received."""

    MessageId: _ID | UnsetType = UNSET
    Status: _STATUS | UnsetType = UNSET
    TaskId: _OPTIONAL_ID | UnsetType = UNSET
    ErrorCode: _OPTIONAL_ID | UnsetType = UNSET
    biz_id: _ID | UnsetType = UNSET
    success: bool | UnsetType = UNSET
    out_id: _OPTIONAL_ID | UnsetType = UNSET
    err_code: _OPTIONAL_ID | UnsetType = UNSET


_MAX_REPORTS = Meta(max_length=receipts.MAX_REPORTS)
ChatAppReceipts = Annotated[list[ChatAppReport], _MAX_REPORTS] | ChatAppReport
SmsReceipts = Annotated[list[SmsReport], _MAX_REPORTS] | SmsReport


class Ack(Out):
    """Stored and applied (the provider stops retrying)."""

    code: Literal[0]
    msg: Literal["success"]


# ---- health and the document itself -----------------------------------------------------------------------
class Health(Out):
    status: Literal["ok"]


class Ready(Out):
    """`degraded` lists what is down while the daemon still works (LISTEN: wake-ups come by polling)."""

    status: Literal["ready", "degraded"]
    degraded: list[Literal["listen"]] | UnsetType = UNSET


_OPEN_OBJECT = Annotated[dict[str, Any], Meta(extra_json_schema={"additionalProperties": True})]


class Info(Out):
    title: str
    version: str
    description: str


class OpenAPIDocument(msgspec.Struct):
    """An OpenAPI 3.1 document (https://spec.openapis.org/oas/v3.1.0)."""

    openapi: Literal["3.1.0"]
    info: Info
    paths: dict[str, _OPEN_OBJECT]
    components: _OPEN_OBJECT
    security: list[dict[str, list[str]]]
