"""The sandbox's own reading of MNS request bodies, written from the MNS REST API's documented shapes
(x-mns-version 2015-06-06) and sharing no code with the daemon's MNS client (`providers/mns.py`): a parser
bug on one side then shows up as a failing exchange instead of being mirrored on both.

Documented request bodies (namespace `http://mns.aliyuncs.com/doc/v1/`):

    SendMessage         <Message><MessageBody>…</MessageBody>[<DelaySeconds>n</DelaySeconds>]
                        [<Priority>n</Priority>]</Message>
    BatchSendMessage    <Messages><Message>…</Message>…</Messages>      (1..16 messages)
    BatchDeleteMessage  <ReceiptHandles><ReceiptHandle>…</ReceiptHandle>…</ReceiptHandles>   (1..16)

The parser is expat driven directly: documents with a DTD (and so with entity declarations) are refused,
elements must be in the MNS namespace (with or without its trailing slash, as SDK fixtures write it) or in
none, and a value element must hold text only. Anything else is `MalformedXml`, which the server answers as
400 `MalformedXML`.
"""

from __future__ import annotations

import dataclasses
from xml.parsers import expat

API_VERSION = "2015-06-06"
XMLNS = "http://mns.aliyuncs.com/doc/v1/"
_NAMESPACES = frozenset({XMLNS, XMLNS.rstrip("/"), ""})
_SEP = "\x1f"  # expat joins namespace and local name with this; it cannot occur in either


class MalformedXml(ValueError):
    """The body is not a well-formed MNS request document of the expected shape."""


@dataclasses.dataclass
class Element:
    """One element: its local name, its text (concatenated) and its child elements, in order."""

    name: str
    text: str = ""
    children: list[Element] = dataclasses.field(default_factory=list)

    def values(self) -> dict[str, str]:
        """Child name -> text for an element whose children are all text-only and unique."""
        out: dict[str, str] = {}
        for child in self.children:
            if child.children:
                raise MalformedXml(f"<{child.name}> must hold text, not elements")
            if child.name in out:
                raise MalformedXml(f"<{child.name}> appears twice in <{self.name}>")
            out[child.name] = child.text
        return out


def parse(body: bytes) -> Element:
    """The document's root element. Raises MalformedXml."""
    parser = expat.ParserCreate(namespace_separator=_SEP)
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    stack: list[Element] = []
    roots: list[Element] = []

    def refuse_dtd(*_: object) -> None:
        raise MalformedXml("a DTD is not allowed in an MNS request")

    def start(qname: str, _attrs: dict[str, str]) -> None:
        namespace, _, local = qname.rpartition(_SEP)
        if namespace not in _NAMESPACES:
            raise MalformedXml(f"<{local}> is not in the MNS namespace {XMLNS}")
        element = Element(local)
        (stack[-1].children if stack else roots).append(element)
        stack.append(element)

    def end(_qname: str) -> None:
        stack.pop()

    def text(data: str) -> None:
        if stack:
            stack[-1].text += data

    parser.StartDoctypeDeclHandler = refuse_dtd
    parser.EntityDeclHandler = refuse_dtd
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = text
    try:
        parser.Parse(body, True)
    except expat.ExpatError as exc:
        raise MalformedXml(f"not well-formed XML: {exc}") from None
    [root] = roots  # expat refuses a second root element
    return root


@dataclasses.dataclass(frozen=True)
class Outgoing:
    """One message of a SendMessage / BatchSendMessage request."""

    body: str
    delay_s: int  # 0 when absent
    priority: int | None  # None when absent (the queue's default applies)


def _integer(values: dict[str, str], name: str) -> int | None:
    raw = values.get(name, "").strip()
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise MalformedXml(f"<{name}> must be an integer") from None


def _message(element: Element) -> Outgoing:
    if element.name != "Message":
        raise MalformedXml(f"expected <Message>, got <{element.name}>")
    values = element.values()
    if "MessageBody" not in values:
        raise MalformedXml("<Message> has no <MessageBody>")
    return Outgoing(
        body=values["MessageBody"],
        delay_s=_integer(values, "DelaySeconds") or 0,
        priority=_integer(values, "Priority"),
    )


def send_request(body: bytes) -> tuple[bool, list[Outgoing]]:
    """(is it a batch, its messages) for SendMessage (`<Message>`) or BatchSendMessage (`<Messages>`)."""
    root = parse(body)
    if root.name == "Message":
        return False, [_message(root)]
    if root.name == "Messages":
        return True, [_message(child) for child in root.children]
    raise MalformedXml(f"the root must be <Message> or <Messages>, not <{root.name}>")


def receipt_handles(body: bytes) -> list[str] | None:
    """The handles of a BatchDeleteMessage body, or None when its root is not `<ReceiptHandles>` (the caller
    answers InvalidArgument, as for a wrong count). Raises MalformedXml for a body that is not XML."""
    root = parse(body)
    if root.name != "ReceiptHandles":
        return None
    handles = []
    for child in root.children:
        if child.name != "ReceiptHandle" or child.children:
            raise MalformedXml("<ReceiptHandles> holds only <ReceiptHandle> text elements")
        handles.append(child.text)
    return handles
