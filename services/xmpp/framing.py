"""How one client stream is framed on its transport (sans-IO).

The c2s state machine (:mod:`.c2s`) is the same whatever carries it; what
differs between transports is only

* how input turns into stream events (:class:`Decoder`): TCP is one long XML
  document, parsed incrementally; a WebSocket message is one standalone
  element (RFC 7395 3.3.3); BOSH hands over the children of a ``<body/>``
  itself, so its stream never parses bytes;
* which opening header is valid, and what the server sends as its own header
  and at the end of the stream (``<stream:stream>``, ``<open/>``, nothing);
* whether every element leaves as a standalone document, namespaces declared
  on it (WebSocket, BOSH), or inside the stream where ``stream:`` and
  ``jabber:client`` are already in scope (TCP).
"""

from __future__ import annotations

import re
from typing import Protocol

from lxml import etree

from . import ns
from .errors import StreamCondition, StreamError
from .parser import Event, StanzaReceived, StreamClosed, StreamOpened, StreamParser

FRAMING_NS = "urn:ietf:params:xml:ns:xmpp-framing"
STREAM_TAG = ns.q(ns.STREAM, "stream")
OPEN_TAG = ns.q(FRAMING_NS, "open")
CLOSE_TAG = ns.q(FRAMING_NS, "close")


class Decoder(Protocol):
    """Input of one stream (a new one after every restart) to parser events."""

    def feed(self, data: bytes) -> list[Event]: ...
    def release(self, element: etree._Element) -> None: ...


class Framing(Protocol):
    #: elements leave as standalone documents (see :func:`qualify`)
    standalone: bool

    def decoder(self, max_stanza_size: int) -> Decoder: ...
    def check_open(self, ev: StreamOpened) -> None:
        """Raise the stream error an invalid opening header deserves."""

    def header(self, stream_id: str, host: str, lang: str) -> bytes: ...
    def footer(self) -> bytes: ...


def quote_attr(s: str) -> str:
    """``s`` inside a single-quoted attribute value."""
    return s.replace("&", "&amp;").replace("'", "&apos;").replace("<", "&lt;").replace(">", "&gt;")


def check_stream_header(ev: StreamOpened, default_ns: str = ns.CLIENT) -> None:
    """RFC 6120 4.9.1.1's checks of a ``<stream:stream>`` header, in order
    (``default_ns``: jabber:client, or jabber:component:accept for XEP-0114)."""
    if ev.tag != STREAM_TAG:
        if etree.QName(ev.tag).localname == "stream" and "{" not in ev.tag:
            raise StreamError(StreamCondition.BAD_NAMESPACE_PREFIX)
        raise StreamError(StreamCondition.INVALID_NAMESPACE)
    if ev.prefix != "stream":
        raise StreamError(StreamCondition.BAD_NAMESPACE_PREFIX)
    if ev.default_ns != default_ns:
        raise StreamError(StreamCondition.INVALID_NAMESPACE)


class TcpFraming:
    """RFC 6120: one XML document per direction, ``<stream:stream>`` its root."""

    standalone = False

    def decoder(self, max_stanza_size: int) -> Decoder:
        return StreamParser(max_stanza_size)

    def check_open(self, ev: StreamOpened) -> None:
        check_stream_header(ev)

    def header(self, stream_id: str, host: str, lang: str) -> bytes:
        return (
            "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
            "xmlns:stream='http://etherx.jabber.org/streams' "
            f"id='{stream_id}' from='{quote_attr(host)}' version='1.0' "
            f"xml:lang='{quote_attr(lang)}'>"
        ).encode()

    def footer(self) -> bytes:
        return b"</stream:stream>"


#: the document a WebSocket stream's messages are parsed inside: stanzas
#: without a namespace of their own are read as jabber:client
_WS_ROOT = b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"


class WebSocketDecoder:
    """One message is one element (RFC 7395 3.3.3).

    The messages of one stream are fed, in order, to one stream parser behind
    a root of our own: the same limits (sizes, restricted XML, names,
    attributes) hold as on TCP, and whether a message held exactly one
    complete element is whether exactly one element ended in it."""

    def __init__(self, max_stanza_size: int) -> None:
        self._parser = StreamParser(max_stanza_size)
        self._parser.feed(_WS_ROOT)

    def feed(self, data: bytes) -> list[Event]:
        if data.startswith(b"<?xml"):
            # NOT RECOMMENDED (3.3.3), yet valid: a document may begin so
            end = data.find(b"?>")
            data = data[end + 2 :] if end != -1 else data
        if not data.startswith(b"<"):
            # 3.3.3: the first character of each frame MUST be '<' (so no
            # whitespace keepalives, no text between elements)
            raise StreamError(StreamCondition.NOT_WELL_FORMED, "a message must start with '<'")
        events = self._parser.feed(data)
        if len(events) != 1 or not isinstance(events[0], StanzaReceived):
            raise StreamError(
                StreamCondition.NOT_WELL_FORMED, "a message must hold exactly one element"
            )
        el = events[0].element
        tag = el.tag
        if not isinstance(tag, str):
            raise StreamError(StreamCondition.NOT_WELL_FORMED)
        local = etree.QName(tag).localname
        if local == "open":
            self._parser.release(el)
            attrs = {str(k): str(v) for k, v in el.attrib.items()}
            return [StreamOpened(tag=tag, prefix=el.prefix, attrs=attrs, default_ns=None)]
        if local == "close":
            self._parser.release(el)
            if tag != CLOSE_TAG:
                raise StreamError(StreamCondition.INVALID_NAMESPACE)
            return [StreamClosed()]
        return events

    def release(self, element: etree._Element) -> None:
        self._parser.release(element)


class WebSocketFraming:
    """RFC 7395: ``<open/>`` and ``<close/>`` in the framing namespace."""

    standalone = True

    def decoder(self, max_stanza_size: int) -> Decoder:
        return WebSocketDecoder(max_stanza_size)

    def check_open(self, ev: StreamOpened) -> None:
        if ev.tag != OPEN_TAG:
            # 3.3.1: the stream headers MUST be in the framing namespace
            raise StreamError(StreamCondition.INVALID_NAMESPACE)

    def header(self, stream_id: str, host: str, lang: str) -> bytes:
        return (
            f"<open xmlns='{FRAMING_NS}' id='{stream_id}' from='{quote_attr(host)}' "
            f"version='1.0' xml:lang='{quote_attr(lang)}'/>"
        ).encode()

    def footer(self) -> bytes:
        return f"<close xmlns='{FRAMING_NS}'/>".encode()


class _NoBytes:
    """BOSH's stream is given parsed elements, never bytes."""

    def feed(self, data: bytes) -> list[Event]:
        raise StreamError(StreamCondition.INTERNAL_SERVER_ERROR, "no byte input on BOSH")

    def release(self, element: etree._Element) -> None:
        pass  # the request's <body/> tree goes away with the request


class BoshFraming:
    """XEP-0206: the ``<body/>`` wrapper is the framing; the session creation
    response and ``type='terminate'`` stand for the headers, which the BOSH
    layer writes, so the stream itself sends none."""

    standalone = True

    def decoder(self, max_stanza_size: int) -> Decoder:
        return _NoBytes()

    def check_open(self, ev: StreamOpened) -> None:
        check_stream_header(ev)

    def header(self, stream_id: str, host: str, lang: str) -> bytes:
        return b""

    def footer(self) -> bytes:
        return b""


TCP = TcpFraming()
WEBSOCKET = WebSocketFraming()
BOSH = BoshFraming()

_FIRST_TAG = re.compile(rb"<([A-Za-z:]+)([^>]*?)(/?>)")
_STREAM_DECL = b" xmlns:stream='http://etherx.jabber.org/streams'"
_CLIENT_DECL = b" xmlns='jabber:client'"


def qualify(data: bytes) -> bytes:
    """One top-level element as a standalone document: ``stream:`` declared
    where it is used, stanzas in ``jabber:client`` (RFC 7395 3.3.3, XEP-0206
    section 7). Elements serialized from a parsed stream already declare their
    namespace, so this is usually the cost of one regex match."""
    m = _FIRST_TAG.match(data)
    if m is None:
        return data
    name, attrs = m.group(1), m.group(2)
    if name.startswith(b"stream:"):
        if b"xmlns:stream" in attrs:
            return data
        return data[: m.end(2)] + _STREAM_DECL + data[m.end(2) :]
    if b":" not in name and b"xmlns=" not in attrs and name in (b"message", b"presence", b"iq"):
        return data[: m.end(2)] + _CLIENT_DECL + data[m.end(2) :]
    return data
