"""Stanza helpers: building replies and validating what clients send.

:func:`check_client_stanza` is the one gate every client stanza passes at the
edge after resource binding; it returns the small routing header the rest of
the server works with and raises the error RFC 6120 names for bad input.
"""

from __future__ import annotations

from dataclasses import dataclass

from lxml import etree

from . import ns
from .errors import StanzaCondition, StanzaError, StreamCondition, StreamError
from .jid import JID

MESSAGE = ns.q(ns.CLIENT, "message")
PRESENCE = ns.q(ns.CLIENT, "presence")
IQ = ns.q(ns.CLIENT, "iq")
KIND_OF_TAG = {MESSAGE: "message", PRESENCE: "presence", IQ: "iq"}

MESSAGE_TYPES = frozenset({"chat", "error", "groupchat", "headline", "normal"})
PRESENCE_TYPES = frozenset(
    {"error", "probe", "subscribe", "subscribed", "unavailable", "unsubscribe", "unsubscribed"}
)
IQ_TYPES = frozenset({"get", "set", "result", "error"})


@dataclass(slots=True)
class Header:
    """The routing header of a stanza: what the router needs without the payload."""

    kind: str  # message | presence | iq
    type: str | None
    id: str | None
    frm: JID
    to: JID | None


def check_client_stanza(el: etree._Element, bound: JID) -> Header:
    """Validate a stanza from a bound client and stamp ``from``.

    Raises StreamError for stream-level violations (unknown top-level element,
    spoofed ``from``) and StanzaError for stanza-level ones; a StanzaError's
    reply must go back to the sender.
    """
    kind = KIND_OF_TAG.get(el.tag)  # type: ignore[arg-type]
    if kind is None:
        raise StreamError(StreamCondition.UNSUPPORTED_STANZA_TYPE, str(el.tag)[:100])
    frm = el.get("from")
    if frm is not None and frm != str(bound):
        try:
            claimed = JID.parse(frm)
        except StanzaError:
            raise StreamError(StreamCondition.INVALID_FROM) from None
        if claimed != bound and claimed != bound.bare:
            raise StreamError(StreamCondition.INVALID_FROM)
    el.set("from", str(bound))
    typ = el.get("type")
    sid = el.get("id")
    to_s = el.get("to")
    to: JID | None = None
    if to_s is not None:
        to = JID.parse(to_s)  # raises jid-malformed
        if to_s != str(to):
            el.set("to", str(to))
    if kind == "iq":
        if sid is None:
            raise StanzaError(StanzaCondition.BAD_REQUEST, "iq without id")
        if typ not in IQ_TYPES:
            raise StanzaError(StanzaCondition.BAD_REQUEST, "bad iq type")
        if typ in ("get", "set") and len(el) != 1:
            raise StanzaError(StanzaCondition.BAD_REQUEST, "get/set iq needs exactly one child")
    elif kind == "message":
        if typ is not None and typ not in MESSAGE_TYPES:
            raise StanzaError(StanzaCondition.BAD_REQUEST, "bad message type")
    elif typ is not None and typ not in PRESENCE_TYPES:
        raise StanzaError(StanzaCondition.BAD_REQUEST, "bad presence type")
    return Header(kind, typ, sid, bound, to)


def make(
    kind: str,
    *,
    to: str | JID | None = None,
    frm: str | JID | None = None,
    type_: str | None = None,
    id_: str | None = None,
) -> etree._Element:
    el = etree.Element(ns.q(ns.CLIENT, kind), nsmap={None: ns.CLIENT})
    if id_ is not None:
        el.set("id", id_)
    if type_ is not None:
        el.set("type", type_)
    if to is not None:
        el.set("to", str(to))
    if frm is not None:
        el.set("from", str(frm))
    return el


def iq_result(iq: etree._Element, payload: etree._Element | None = None) -> etree._Element:
    """The result to an IQ get/set (RFC 6120 section 8.2.3)."""
    frm = iq.get("from")
    reply = make("iq", to=frm, frm=iq.get("to"), type_="result", id_=iq.get("id"))
    if payload is not None:
        reply.append(payload)
    return reply


def payload(iq: etree._Element) -> etree._Element | None:
    return iq[0] if len(iq) else None


def sub(parent: etree._Element, tag: str, text: str | None = None, **attrs: str) -> etree._Element:
    el = etree.SubElement(parent, tag, attrs)
    if text is not None:
        el.text = text
    return el


def element(tag_ns: str, local: str, **attrs: str) -> etree._Element:
    return etree.Element(ns.q(tag_ns, local), attrs, nsmap={None: tag_ns})


def to_bytes(el: etree._Element) -> bytes:
    return etree.tostring(el, with_tail=False)
