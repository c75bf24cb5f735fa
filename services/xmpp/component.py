"""The external component stream state machine (sans-IO, XEP-0114 "accept").

Everything that decides what happens on a component's stream lives in this
file; the owner of the socket drives it as it drives a client stream:

    stream.receive_data(data)        # bytes from the socket
    while (ev := stream.next_event()) is not None: ...   # act on events
    sock.write(stream.data_to_send())

The flow (XEP-0114 section 3), as the transition table below says:

* WAIT_HEADER: the component opens ``<stream:stream xmlns='jabber:component:accept'
  to='DOMAIN'>``; we answer with our header carrying ``from`` and a fresh
  ``id``. A wrong stream namespace is ``invalid-namespace``, a domain that is
  not configured ``host-unknown`` (header, error, close: RFC 6120 4.9.1.1).
* WAIT_HANDSHAKE: the component sends ``<handshake>`` with the lowercase hex
  SHA-1 of (stream id + shared secret), compared in constant time; a wrong
  one is ``not-authorized``, and so is a stanza before it.
* CLAIMING: the handshake is right; the owner records the domain as
  connected (:class:`Authenticated`) and answers :meth:`accept` (we send the
  empty ``<handshake/>``) or closes with ``conflict`` when the domain is
  connected elsewhere. Stanzas that arrive meanwhile wait in order.
* ESTABLISHED: each stanza must carry ``from`` in the component's domain
  (``invalid-from``, RFC 6120 4.9.3.10) and ``to`` (``improper-addressing``);
  it becomes a :class:`Stanza` event.

The component's stanzas are qualified by ``jabber:component:accept``; they
are turned into ``jabber:client`` ones on the way in, and stanzas for the
component back on the way out (:meth:`send_stanza`), so the rest of the
server sees one namespace.
"""

from __future__ import annotations

import collections
import enum
import hashlib
import hmac
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from lxml import etree

from . import ns
from . import stanza as st
from .errors import (
    StanzaCondition,
    StanzaError,
    StreamCondition,
    StreamError,
    stanza_error_reply,
)
from .framing import check_stream_header, quote_attr
from .jid import JID
from .parser import StanzaReceived, StreamClosed, StreamOpened, StreamParser
from .tree import parse_element

__all__ = [
    "TRANSITIONS",
    "Authenticated",
    "Closed",
    "ComponentConfig",
    "ComponentStream",
    "Event",
    "Stanza",
    "State",
    "check_component_stanza",
    "handshake_digest",
]

HANDSHAKE = ns.q(ns.COMPONENT, "handshake")
#: stanza tags a component may send: its own namespace, and jabber:client
#: (what some libraries send inside the component stream)
_STANZA_TAGS = frozenset(
    ns.q(n, kind) for n in (ns.COMPONENT, ns.CLIENT) for kind in ("message", "presence", "iq")
)


class State(enum.Enum):
    WAIT_HEADER = "wait-header"  # before the component's stream header
    WAIT_HANDSHAKE = "wait-handshake"  # our header sent, waiting for <handshake/>
    CLAIMING = "claiming"  # handshake right; the owner is claiming the domain
    ESTABLISHED = "established"
    CLOSED = "closed"


#: (state, tag) -> handler name; stanzas in ESTABLISHED go to _on_stanza,
#: anything else is a stream error (see _dispatch)
TRANSITIONS: dict[tuple[State, str], str] = {
    (State.WAIT_HANDSHAKE, HANDSHAKE): "_on_handshake",
}


# ---- events -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Authenticated:
    """The handshake is right: claim ``domain``, then call ``accept()`` (or
    ``close(StreamError(conflict))`` when it is connected elsewhere)."""

    domain: str


@dataclass(frozen=True, slots=True)
class Stanza:
    """A stanza from the component, in ``jabber:client``, detached from the
    stream, with ``from`` in the component's domain and ``to`` prepared."""

    element: etree._Element
    header: st.Header
    size: int


@dataclass(frozen=True, slots=True)
class Closed:
    """The stream is over; ``error`` is what we sent, None for a clean close."""

    error: StreamCondition | None
    by_peer: bool


Event = Authenticated | Stanza | Closed


@dataclass(frozen=True, slots=True)
class ComponentConfig:
    #: domain -> shared secret of every configured component
    secrets: Mapping[str, str] = field(default_factory=dict)
    max_stanza_size: int = 262144
    #: before the handshake only the handshake is possible: a far smaller bound
    preauth_stanza_size: int = 16384


def handshake_digest(stream_id: str, secret: str) -> str:
    """XEP-0114 section 3: lowercase hex SHA-1 of the stream id and the secret."""
    return hashlib.sha1((stream_id + secret).encode("utf-8")).hexdigest()


class ComponentStream:
    def __init__(self, config: ComponentConfig, stream_id: str | None = None) -> None:
        self.config = config
        self.state = State.WAIT_HEADER
        #: the component's domain, once its header named a configured one
        self.domain: str | None = None
        self.stream_id = stream_id or secrets.token_hex(8)
        self._parser = StreamParser(config.preauth_stanza_size)
        self._out: list[bytes] = []
        self._queue: collections.deque[StanzaReceived] = collections.deque()
        self._events: collections.deque[Event] = collections.deque()
        self._header_sent = False
        self._peer_closed = False

    # ---- input ---------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        if self.state is State.CLOSED:
            return
        try:
            for ev in self._parser.feed(data):
                if isinstance(ev, StreamOpened):
                    self._on_header(ev)
                elif isinstance(ev, StanzaReceived):
                    self._queue.append(ev)
                elif isinstance(ev, StreamClosed):
                    self._peer_closed = True
        except StreamError as err:
            self._queue.clear()
            self.close(err)

    def next_event(self) -> Event | None:
        while not self._events and self.state is not State.CLOSED and self._queue:
            if self.state is State.CLAIMING:
                return None  # paused until the owner answers
            item = self._queue.popleft()
            try:
                self._dispatch(item)
            except StreamError as err:
                self.close(err)
            finally:
                self._parser.release(item.element)
        if (
            not self._events
            and self._peer_closed
            and not self._queue
            and self.state is not State.CLOSED
        ):
            self._out.append(b"</stream:stream>")
            self.state = State.CLOSED
            self._events.append(Closed(None, by_peer=True))
        return self._events.popleft() if self._events else None

    @property
    def backlog(self) -> int:
        """Parsed top-level elements not yet taken by next_event()."""
        return len(self._queue)

    def data_to_send(self) -> bytes:
        out = b"".join(self._out)
        self._out.clear()
        return out

    # ---- answers from the owner --------------------------------------------

    def accept(self) -> None:
        """The domain is claimed: the handshake succeeds."""
        assert self.state is State.CLAIMING
        self._out.append(b"<handshake/>")
        self.state = State.ESTABLISHED
        self._parser.set_limit(self.config.max_stanza_size)

    # ---- output ------------------------------------------------------------

    def send_stanza(self, data: bytes) -> None:
        """A serialized ``jabber:client`` stanza for the component."""
        if self.state is State.ESTABLISHED:
            self.send_element(parse_element(data))

    def send_element(self, el: etree._Element) -> None:
        if self.state is not State.CLOSED:
            out = _renamespace(el, ns.CLIENT, ns.COMPONENT)
            self._out.append(etree.tostring(out, with_tail=False))

    def close(self, error: StreamError | None = None) -> None:
        """Close the stream, with a stream error if given (RFC 6120 4.4, 4.9)."""
        if self.state is State.CLOSED:
            return
        if not self._header_sent:
            self._send_header()
        if error is not None:
            self._out.append(error.to_bytes())
        self._out.append(b"</stream:stream>")
        self.state = State.CLOSED
        self._queue.clear()
        self._events.append(Closed(error.condition if error else None, by_peer=False))

    # ---- internals -----------------------------------------------------------

    def _send_header(self) -> None:
        frm = f" from='{quote_attr(self.domain)}'" if self.domain else ""
        self._out.append(
            (
                "<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' "
                "xmlns:stream='http://etherx.jabber.org/streams' "
                f"id='{self.stream_id}'{frm}>"
            ).encode()
        )
        self._header_sent = True

    def _on_header(self, ev: StreamOpened) -> None:
        if self.state is not State.WAIT_HEADER:
            raise StreamError(StreamCondition.BAD_FORMAT, "unexpected stream header")
        to = ev.attrs.get("to")
        domain: str | None = None
        if to:
            try:
                jid = JID.parse(to)
            except StanzaError:
                jid = None
            if jid is not None and jid.is_domain and jid.domain in self.config.secrets:
                domain = jid.domain
        self.domain = domain
        self._send_header()
        # RFC 6120 4.9.1.1: header checks, in order of significance
        check_stream_header(ev, ns.COMPONENT)
        if domain is None:
            # XEP-0114: a component name the server does not serve
            raise StreamError(StreamCondition.HOST_UNKNOWN)
        self.state = State.WAIT_HANDSHAKE

    def _dispatch(self, item: StanzaReceived) -> None:
        el = item.element
        tag = el.tag
        if not isinstance(tag, str):
            return
        if self.state is State.ESTABLISHED:
            if tag not in _STANZA_TAGS:
                raise StreamError(StreamCondition.UNSUPPORTED_STANZA_TYPE)
            self._on_stanza(el, item.size)
            return
        handler = TRANSITIONS.get((self.state, tag))
        if handler is not None:
            getattr(self, handler)(el)
            return
        if self.state is State.WAIT_HEADER:
            raise StreamError(StreamCondition.BAD_FORMAT)
        # XEP-0114 / RFC 6120 4.3.5: nothing but the handshake before it succeeds
        raise StreamError(StreamCondition.NOT_AUTHORIZED, "handshake first")

    def _on_handshake(self, el: etree._Element) -> None:
        assert self.domain is not None
        expected = handshake_digest(self.stream_id, self.config.secrets[self.domain])
        given = (el.text or "").strip().lower()
        if len(el) or not hmac.compare_digest(given.encode(), expected.encode()):
            raise StreamError(StreamCondition.NOT_AUTHORIZED)
        self.state = State.CLAIMING
        self._events.append(Authenticated(self.domain))

    def _on_stanza(self, parsed: etree._Element, size: int) -> None:
        assert self.domain is not None
        el = _renamespace(parsed, ns.COMPONENT, ns.CLIENT)
        try:
            hdr = check_component_stanza(el, self.domain)
        except StanzaError as err:
            if el.get("type") == "error":
                return  # never answer an error with an error
            reply = stanza_error_reply(el, err)
            if err.condition is StanzaCondition.JID_MALFORMED:
                reply.attrib.pop("from", None)  # the malformed 'to' it would echo
            self.send_element(reply)
            return
        self._events.append(Stanza(el, hdr, size))


def check_component_stanza(el: etree._Element, domain: str) -> st.Header:
    """Validate a ``jabber:client`` stanza from the component serving ``domain``.

    XEP-0114 section 3: every stanza carries ``from`` and ``to``, and the
    domain of ``from`` is the component's (any localpart and resource in it).
    Raises StreamError for stream-level violations, StanzaError for the
    stanza-level ones (answered to the component)."""
    kind = st.KIND_OF_TAG.get(str(el.tag))
    if kind is None:
        raise StreamError(StreamCondition.UNSUPPORTED_STANZA_TYPE, str(el.tag)[:100])
    frm_s, to_s = el.get("from"), el.get("to")
    if frm_s is None or to_s is None:
        raise StreamError(StreamCondition.IMPROPER_ADDRESSING, "stanzas need 'from' and 'to'")
    try:
        frm = JID.parse(frm_s)
    except StanzaError:
        raise StreamError(StreamCondition.INVALID_FROM) from None
    if frm.domain != domain:
        raise StreamError(StreamCondition.INVALID_FROM, f"not in {domain}")
    if frm_s != str(frm):
        el.set("from", str(frm))
    typ = el.get("type")
    sid = el.get("id")
    to = JID.parse(to_s)  # raises jid-malformed
    if to_s != str(to):
        el.set("to", str(to))
    if kind == "iq":
        if sid is None:
            raise StanzaError(StanzaCondition.BAD_REQUEST, "iq without id")
        if typ not in st.IQ_TYPES:
            raise StanzaError(StanzaCondition.BAD_REQUEST, "bad iq type")
        if typ in ("get", "set") and len(el) != 1:
            raise StanzaError(StanzaCondition.BAD_REQUEST, "get/set iq needs exactly one child")
    elif kind == "message":
        if typ is not None and typ not in st.MESSAGE_TYPES:
            raise StanzaError(StanzaCondition.BAD_REQUEST, "bad message type")
    elif typ is not None and typ not in st.PRESENCE_TYPES:
        raise StanzaError(StanzaCondition.BAD_REQUEST, "bad presence type")
    return st.Header(kind, typ, sid, frm, to)


def _renamespace(el: etree._Element, old: str, new: str) -> etree._Element:
    """A detached copy of ``el`` with every element qualified by ``old``
    qualified by ``new`` instead (the stanza namespaces of the two streams);
    payloads in other namespaces are copied unchanged."""

    def tag_of(e: etree._Element) -> tuple[str, str | None]:
        q = etree.QName(e)
        if q.namespace == old:
            return ns.q(new, q.localname), new
        return str(e.tag), q.namespace

    tag, uri = tag_of(el)
    root = etree.Element(tag, nsmap={None: uri} if uri else None)
    _copy_into(root, el, uri, tag_of)
    return root


def _copy_into(
    out: etree._Element,
    src: etree._Element,
    uri: str | None,
    tag_of: Callable[[etree._Element], tuple[str, str | None]],
) -> None:
    for k, v in src.attrib.items():
        out.set(k, v)
    out.text = src.text
    for child in src:
        if not isinstance(child.tag, str):
            continue
        tag, child_uri = tag_of(child)
        nsmap = {None: child_uri} if child_uri and child_uri != uri else None
        sub = etree.SubElement(out, tag, nsmap=nsmap)
        _copy_into(sub, child, child_uri, tag_of)
        sub.tail = child.tail
