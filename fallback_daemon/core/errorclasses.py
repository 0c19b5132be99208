"""Error classes: what a provider's error code means for the fallback. The one table, with its sources; pure.

Chat failures (a permanent SendChatappMessage refusal, or a `Failed` ChatAppStatus receipt) already make the
fallback due at once (`policy`: `send_failed` / `failed_receipt`); nothing here waits on a local clock. This
table names *why*, so the firing event says whether the chat could ever have been delivered
(`never_deliverable`), and `fallback_error_class_total{class}` counts them.

Sources (cited per row as [tag]):
  [meta]   WhatsApp Cloud API error codes, developers.facebook.com/documentation/business-messaging/whatsapp/
           support/error-codes (CAMS passes Meta's codes through in receipts: reference/alibaba.md §1.7, §2.2,
           e.g. `131026` in the ChatAppStatus example).
  [cams]   CAMS API error codes, alibabacloud.com/help/en/chatapp/developer-reference/api-error-codes
           (reference/alibaba.md §1.7) and the error table of reference/SendChatappMessage.txt.
  [sms-cn] Alibaba SMS (Dysmsapi 2017-05-25) receipt codes: help.aliyun.com/zh/document_detail/2679007.html
           ("W-BLACK 等" = blacklist codes: the owner complained or unsubscribed).
  [sms-v2] AWS End User Messaging SMS (pinpoint-sms-voice-v2) ValidationException reasons.
  [sns]    AWS SNS Publish: a number that replied STOP is "opted out" (InvalidParameter text; inferred, [I]).

Not an opt-out, on purpose: `isv.BLACK_KEY_CONTROL_LIMIT` / `BLACK_KEY_CONTROL_LIMIT` is "the template
variables contain a blacklisted *keyword*" (help.aliyun.com/zh/sms/error-code-intl, code 64): the content
is refused, not the number; it stays a plain permanent rejection.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping


@dataclasses.dataclass(frozen=True)
class ErrorClass:
    name: str
    never_deliverable: bool  # the chat can never be delivered as sent (retrying it cannot help)
    source: str


OUTSIDE_WINDOW = ErrorClass("outside_window", True, "meta")
NOT_ON_CHANNEL = ErrorClass("not_on_channel", True, "meta")
TEMPLATE_UNUSABLE = ErrorClass("template_unusable", True, "meta")
RECIPIENT_BLOCKED = ErrorClass("recipient_blocked", True, "meta")
MARKETING_OPT_OUT = ErrorClass("marketing_opt_out", True, "meta")
INVALID_NUMBER = ErrorClass("invalid_number", True, "cams")
ACCOUNT_UNUSABLE = ErrorClass("account_unusable", True, "cams")
ECOSYSTEM_LIMIT = ErrorClass("ecosystem_limit", False, "meta")  # this message refused; a later one may pass
UNCLASSIFIED = ErrorClass("unclassified", False, "")

# Chat error code (CAMS send `Code`, or a receipt's `ErrorCode`) → class.
CHAT: Mapping[str, ErrorClass] = {
    # [meta] 131047 Re-engagement message: more than 24 hours since the user last replied (the
    # customer-service window is closed; only a template can reach them).
    "131047": OUTSIDE_WINDOW,
    # [meta] 131026 Message undeliverable: not a WhatsApp user, an outdated client, or terms not accepted.
    "131026": NOT_ON_CHANNEL,
    # [meta] 132015 template paused (low quality), 132016 template disabled, 132001 template does not exist
    # (in this language), 132007 template format violates policy.
    "132015": TEMPLATE_UNUSABLE,
    "132016": TEMPLATE_UNUSABLE,
    "132001": TEMPLATE_UNUSABLE,
    "132007": TEMPLATE_UNUSABLE,
    # [cams] template errors of SendChatappMessage.
    "DetailError.TemplateNotExist": TEMPLATE_UNUSABLE,
    "DelError.TemplateNotExist": TEMPLATE_UNUSABLE,
    "InvalidParameter.TemplateTypeNotSupport": TEMPLATE_UNUSABLE,
    # [meta] 131021 recipient cannot be the sender, 131030 recipient not in the allowed list (test numbers).
    "131021": RECIPIENT_BLOCKED,
    "131030": RECIPIENT_BLOCKED,
    # [meta] 131050 the user stopped marketing messages from this business.
    "131050": MARKETING_OPT_OUT,
    # [cams] the number is malformed for the channel.
    "InvalidParameter.PhoneNumberError": INVALID_NUMBER,
    # [meta] 131031 business account locked, 131042 business eligibility (payment) issue, 131045 sender number
    # not registered / certificate; [cams] no permission, product not subscribed, no WABA bound to the space.
    "131031": ACCOUNT_UNUSABLE,
    "131042": ACCOUNT_UNUSABLE,
    "131045": ACCOUNT_UNUSABLE,
    "Authentication.NoAuth": ACCOUNT_UNUSABLE,
    "Ram.PermissionDeny": ACCOUNT_UNUSABLE,
    "Product.Unsubscript": ACCOUNT_UNUSABLE,
    "ERR-OPERATION-MAAP-0060": ACCOUNT_UNUSABLE,
    # [meta] 131049 Meta chose not to deliver (per-user marketing limit, "healthy ecosystem"): this message is
    # lost, a later one may get through.
    "131049": ECOSYSTEM_LIMIT,
}

OPTED_OUT = "opted_out"
# SMS answer / receipt codes that mean "this number does not want our SMS": the number joins the opt-out list.
SMS_OPT_OUT_CODES = frozenset(
    {
        "W-BLACK",  # [sms-cn] blacklisted after a complaint or an unsubscribe
        "DESTINATION_PHONE_NUMBER_OPTED_OUT",  # [sms-v2]
    }
)
SMS_OPT_OUT_TEXT = ("opted out", "opted-out")  # [sns] InvalidParameter "... is opted out" [I]


def chat_code(error: str | None) -> str | None:
    """The provider code at the head of a stored error ("InvalidParameter.PhoneNumberError: …" → the code);
    None when the text does not start with one (e.g. "retries exhausted: …")."""
    if not error:
        return None
    head = error.split(":", 1)[0].strip()
    return head if head and " " not in head and len(head) <= 64 else None


def classify_chat(code: str | None) -> ErrorClass:
    """The class of a chat error code; unknown codes (and no code) are `unclassified`."""
    if not code:
        return UNCLASSIFIED
    return CHAT.get(code.strip(), UNCLASSIFIED)


def sms_opted_out(code: str | None, message: str | None = None) -> bool:
    """Whether an SMS provider's answer (or receipt) says the number opted out of SMS."""
    if code and code.strip() in SMS_OPT_OUT_CODES:
        return True
    text = (message or "").lower()
    return any(marker in text for marker in SMS_OPT_OUT_TEXT)


CLASS_NAMES = tuple(
    sorted({c.name for c in CHAT.values()} | {UNCLASSIFIED.name})
)  # the closed label set of fallback_error_class_total
