"""BOSH's wrapper (XEP-0124) and its XMPP binding (XEP-0206), sans-IO.

:func:`parse_body` turns one request's bytes into a :class:`Body` (its
attributes and its children, parsed by the same bounded stream parser as a
TCP stream, so the same limits hold); :class:`RidWindow` keeps the request
id rules; the ``*_body`` functions write responses. The asyncio part (held
requests, timers, the session table) is :mod:`services.edge.bosh`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from . import ns
from .errors import StreamError
from .framing import quote_attr
from .parser import StanzaReceived, StreamClosed, StreamOpened, StreamParser

HTTPBIND = "http://jabber.org/protocol/httpbind"
XBOSH = "urn:xmpp:xbosh"
BODY_TAG = ns.q(HTTPBIND, "body")
#: the protocol version we speak (XEP-0124 1.11)
VERSION = (1, 11)
_XBOSH_VERSION = ns.q(XBOSH, "version")
_XBOSH_RESTART = ns.q(XBOSH, "restart")
_XML_LANG = ns.q(ns.XML, "lang")


class Condition(enum.Enum):
    """XEP-0124 section 17.2's terminal binding conditions that we send."""

    BAD_REQUEST = "bad-request"
    HOST_UNKNOWN = "host-unknown"
    IMPROPER_ADDRESSING = "improper-addressing"
    INTERNAL_SERVER_ERROR = "internal-server-error"
    ITEM_NOT_FOUND = "item-not-found"
    OTHER_REQUEST = "other-request"
    POLICY_VIOLATION = "policy-violation"
    REMOTE_STREAM_ERROR = "remote-stream-error"
    SYSTEM_SHUTDOWN = "system-shutdown"


#: the HTTP status a client that did not name a 'ver' expects instead (17.1)
LEGACY_STATUS = {
    Condition.BAD_REQUEST: 400,
    Condition.POLICY_VIOLATION: 403,
    Condition.ITEM_NOT_FOUND: 404,
}


class BoshError(Exception):
    def __init__(self, condition: Condition, text: str = "") -> None:
        super().__init__(text or condition.value)
        self.condition = condition


@dataclass(slots=True)
class Body:
    """One request's ``<body/>``."""

    attrs: dict[str, str]
    children: list[StanzaReceived] = field(default_factory=list)

    @property
    def sid(self) -> str | None:
        return self.attrs.get("sid")

    @property
    def rid(self) -> int:
        return _int(self.attrs, "rid", required=True)

    @property
    def terminate(self) -> bool:
        return self.attrs.get("type") == "terminate"

    @property
    def restart(self) -> bool:
        return self.attrs.get(_XBOSH_RESTART) in ("true", "1")

    def number(self, name: str, default: int) -> int:
        return _int(self.attrs, name, required=False, default=default)

    def version(self) -> tuple[int, int] | None:
        """The client's 'ver', None if it named none (a pre-1.6 client)."""
        ver = self.attrs.get("ver")
        if ver is None:
            return None
        major, _, minor = ver.partition(".")
        if not (major.isdigit() and minor.isdigit()):
            raise BoshError(Condition.BAD_REQUEST, "bad ver")
        return int(major), int(minor)

    def stream_header(self) -> StreamOpened:
        """The stream header the session creation request (or a restart)
        stands for (XEP-0206 section 5: 'to', 'xml:lang', 'xmpp:version')."""
        attrs: dict[str, str] = {}
        if "to" in self.attrs:
            attrs["to"] = self.attrs["to"]
        if _XML_LANG in self.attrs:
            attrs[_XML_LANG] = self.attrs[_XML_LANG]
        if _XBOSH_VERSION in self.attrs:
            attrs["version"] = self.attrs[_XBOSH_VERSION]
        return StreamOpened(
            tag=ns.q(ns.STREAM, "stream"), prefix="stream", attrs=attrs, default_ns=ns.CLIENT
        )


def _int(attrs: dict[str, str], name: str, required: bool, default: int = 0) -> int:
    raw = attrs.get(name)
    if raw is None:
        if required:
            raise BoshError(Condition.BAD_REQUEST, f"'{name}' is required")
        return default
    raw = raw.strip()
    # rid is at most 2^53 - 1 (XEP-0124 section 14); a bounded digit string
    if not raw.isdigit() or len(raw) > 16:
        raise BoshError(Condition.BAD_REQUEST, f"bad '{name}'")
    return int(raw)


def parse_body(data: bytes, max_element: int) -> Body:
    """The ``<body/>`` of a request. Every child element is bounded by
    ``max_element``; DTDs, comments, PIs and entity references are refused
    as on a TCP stream."""
    parser = StreamParser(max_element)
    body: Body | None = None
    complete = False
    try:
        for ev in parser.feed(data):
            if isinstance(ev, StreamOpened):
                if ev.tag != BODY_TAG:
                    raise BoshError(Condition.BAD_REQUEST, "not a BOSH <body/>")
                body = Body(ev.attrs)
            elif isinstance(ev, StanzaReceived):
                assert body is not None
                body.children.append(ev)
            elif isinstance(ev, StreamClosed):
                complete = True
    except StreamError as err:
        if err.condition.value == "policy-violation":
            raise BoshError(Condition.POLICY_VIOLATION, err.text or "too large") from None
        raise BoshError(Condition.BAD_REQUEST, err.text or err.condition.value) from None
    if body is None or not complete:
        raise BoshError(Condition.BAD_REQUEST, "incomplete <body/>")
    return body


class RidWindow:
    """Request ids (XEP-0124 sections 14 and 18): each request's rid is one
    more than the last; up to ``requests`` ahead may arrive early (over
    parallel connections) and wait their turn; a repeated rid gets its
    earlier answer again while it is remembered."""

    def __init__(self, first_rid: int, requests: int) -> None:
        self.next = first_rid + 1  # the creation request's rid is answered
        self.requests = requests
        self._answers: dict[int, bytes] = {}

    def classify(self, rid: int) -> str:
        """'next', 'early', 'repeat' (an answer is remembered) or 'bad'."""
        if rid == self.next:
            return "next"
        if self.next < rid < self.next + self.requests:
            return "early"
        if rid in self._answers:
            return "repeat"
        return "bad"

    def advance(self) -> int:
        rid = self.next
        self.next += 1
        return rid

    def answered(self, rid: int, body: bytes) -> None:
        self._answers[rid] = body
        for old in [r for r in self._answers if r <= rid - self.requests]:
            del self._answers[old]

    def answer(self, rid: int) -> bytes:
        return self._answers[rid]


def body(payload: list[bytes], attrs: dict[str, str] | None = None) -> bytes:
    """A response ``<body/>`` around ``payload`` (standalone elements)."""
    extra = "".join(f" {k}='{quote_attr(v)}'" for k, v in (attrs or {}).items())
    head = f"<body xmlns='{HTTPBIND}'{extra}"
    if not payload:
        return (head + "/>").encode()
    return (head + ">").encode() + b"".join(payload) + b"</body>"


def session_body(
    *,
    sid: str,
    wait: int,
    hold: int,
    requests: int,
    inactivity: int,
    polling: int,
    ver: tuple[int, int],
    host: str,
    stream_id: str,
    secure: bool,
    payload: list[bytes],
) -> bytes:
    """The session creation response (XEP-0124 section 7.2, XEP-0206 section 5)."""
    attrs = {
        "sid": sid,
        "wait": str(wait),
        "hold": str(hold),
        "requests": str(requests),
        "inactivity": str(inactivity),
        "polling": str(polling),
        "ver": f"{ver[0]}.{ver[1]}",
        "from": host,
        "authid": stream_id,
        "secure": "true" if secure else "false",
        "xmlns:xmpp": XBOSH,
        "xmpp:version": "1.0",
        "xmpp:restartlogic": "true",
        "xmlns:stream": ns.STREAM,
    }
    return body(payload, attrs)


def terminate_body(condition: Condition | None, payload: list[bytes] | None = None) -> bytes:
    """``type='terminate'``, with a condition unless the end is a clean one."""
    attrs = {"type": "terminate"}
    if condition is not None:
        attrs["condition"] = condition.value
    if payload:
        attrs["xmlns:stream"] = ns.STREAM
    return body(payload or [], attrs)
