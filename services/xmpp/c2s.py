"""The client-to-server stream state machine (sans-IO, RFC 6120).

Everything that decides what happens on a client stream lives in this file.
The owner of the socket drives it:

    stream.receive_data(data)        # bytes from the socket
    while (ev := stream.next_event()) is not None: ...   # act on events
    sock.write(stream.data_to_send())

Negotiation goes CONNECTED -> (STARTTLS -> restart) -> SASL -> restart ->
BIND -> ESTABLISHED, as the transition table below says. Where the state
machine needs the outside world (TLS handshake, credentials from storage,
resource conflict resolution) it emits an event and pauses until the owner
answers through :meth:`tls_started`, :meth:`provide_credentials` or
:meth:`bind_done`; further stanzas wait in the queue in order meanwhile.
Once bound, the nonzas of XEP-0352 (client state indication) become
:class:`ClientState` events, in order with the stanzas around them, where
the owner advertises the feature; anywhere else they are unknown elements.

XEP-0198 stream management, likewise only where the owner advertises
``<sm xmlns='urn:xmpp:sm:3'/>`` (else its elements are unknown ones):

- bound (ESTABLISHED): ``<enable/>`` is an :class:`SmEnable` the owner
  answers with :meth:`C2SStream.sm_enabled` (section 3); ``<r/>`` an
  :class:`SmRequest` it answers with ``<a h/>``; ``<a h/>`` an
  :class:`SmAck`. A second ``<enable/>`` and a ``<resume/>`` get
  ``<failed><unexpected-request/></failed>``; ``<r/>`` or ``<a/>`` before
  ``<enable/>`` are unknown elements (unsupported-stanza-type), and an ``h``
  that is not an unsignedInt is ``invalid-xml``.
- authenticated, not bound (BIND): ``<resume/>`` is an :class:`SmResume`;
  the machine waits (RESUME_WAIT) for :meth:`C2SStream.resumed` (it then
  goes ESTABLISHED with the session's JID, without binding) or
  :meth:`C2SStream.resume_failed` (back to BIND: the client may bind, as
  section 5 wants). ``<enable/>`` there gets ``<failed><unexpected-request/>``
  (section 3: not before binding); a ``<resume/>`` without ``previd`` or a
  valid ``h`` gets ``<failed><bad-request/>``.
- once enabled, each stanza received (message, presence, iq, not nonzas nor
  unknown elements) is counted into the :class:`~.sm.StreamManagement`
  the owner handed over, when its :class:`Stanza` event is made: events go
  out one at a time, so an ``<r/>`` is answered after every stanza before it
  was handled.
"""

from __future__ import annotations

import base64
import binascii
import collections
import enum
import secrets
from dataclasses import dataclass, field

from lxml import etree

from . import framing as fr
from . import ns, sasl
from . import sm as sm_
from .errors import (
    SaslCondition,
    SaslFailure,
    StanzaCondition,
    StanzaError,
    StreamCondition,
    StreamError,
    stanza_error_reply,
)
from .jid import JID
from .parser import Event as ParserEvent
from .parser import StanzaReceived, StreamClosed, StreamOpened


class State(enum.Enum):
    WAIT_HEADER = "wait-header"  # before the (re)started stream's header
    PRE_TLS = "pre-tls"  # features sent, STARTTLS still to do
    TLS_HANDSHAKE = "tls-handshake"  # <proceed/> sent, owner is wrapping the socket
    SASL = "sasl"  # TLS done or not required: authentication
    SASL_WAIT_CREDS = "sasl-wait-creds"  # owner is looking up credentials
    SASL_CHALLENGE = "sasl-challenge"  # SCRAM server-first sent, waiting for client-final
    BIND = "bind"  # authenticated, resource not bound yet
    BIND_WAIT = "bind-wait"  # owner is binding the resource
    RESUME_WAIT = "resume-wait"  # owner is looking for the session to resume (XEP-0198)
    ESTABLISHED = "established"
    CLOSED = "closed"


#: XEP-0352 Client State Indication. The machine accepts its nonzas only
#: where the owner advertises the feature (``CSI_FEATURE`` among the
#: ``extra_features``): a client told nothing of CSI gets what any unknown
#: element gets, unsupported-stanza-type.
CSI = "urn:xmpp:csi:0"
CSI_FEATURE = b"<csi xmlns='urn:xmpp:csi:0'/>"
#: XEP-0198 stream management, accepted where ``SM_FEATURE`` is advertised
SM = sm_.NS
SM_FEATURE = sm_.FEATURE

#: Which top-level elements each state accepts; anything else is a stream error.
#: (state, tag) -> handler name. Stanzas in ESTABLISHED bypass the table.
TRANSITIONS: dict[tuple[State, str], str] = {
    (State.PRE_TLS, ns.q(ns.TLS, "starttls")): "_on_starttls",
    (State.PRE_TLS, ns.q(ns.SASL, "auth")): "_on_auth_before_tls",
    (State.SASL, ns.q(ns.SASL, "auth")): "_on_auth",
    (State.SASL, ns.q(ns.SASL, "abort")): "_on_abort",
    (State.SASL_CHALLENGE, ns.q(ns.SASL, "response")): "_on_response",
    (State.SASL_CHALLENGE, ns.q(ns.SASL, "abort")): "_on_abort",
    (State.BIND, ns.q(ns.CLIENT, "iq")): "_on_bind_iq",
    # XEP-0352 nonzas: only once bound (before, they are unknown elements)
    (State.ESTABLISHED, ns.q(CSI, "active")): "_on_client_state",
    (State.ESTABLISHED, ns.q(CSI, "inactive")): "_on_client_state",
    # XEP-0198 (only where advertised, see _dispatch)
    (State.BIND, ns.q(SM, "enable")): "_on_sm_enable_unbound",
    (State.BIND, ns.q(SM, "resume")): "_on_sm_resume",
    (State.ESTABLISHED, ns.q(SM, "enable")): "_on_sm_enable",
    (State.ESTABLISHED, ns.q(SM, "resume")): "_on_sm_resume_bound",
    (State.ESTABLISHED, ns.q(SM, "r")): "_on_sm_request",
    (State.ESTABLISHED, ns.q(SM, "a")): "_on_sm_ack",
}


# ---- events -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StartTLS:
    """Flush output, then wrap the socket in TLS and call ``tls_started``."""


@dataclass(frozen=True, slots=True)
class NeedCredentials:
    username: str
    hash_name: str


@dataclass(frozen=True, slots=True)
class Authenticated:
    username: str
    mechanism: str


@dataclass(frozen=True, slots=True)
class AuthFailed:
    mechanism: str
    condition: str


@dataclass(frozen=True, slots=True)
class BindRequest:
    """The client asked for ``resource`` (None: generate one)."""

    resource: str | None


@dataclass(frozen=True, slots=True)
class PreAuthIQ:
    """An IQ before authentication (in-band registration); answer with send_element."""

    element: etree._Element


@dataclass(frozen=True, slots=True)
class Stanza:
    element: etree._Element
    size: int


@dataclass(frozen=True, slots=True)
class ClientState:
    """XEP-0352: the client said it is ``active`` (or inactive). Nothing is
    answered; what the owner holds back or flushes is its business."""

    active: bool


@dataclass(frozen=True, slots=True)
class SmEnable:
    """XEP-0198 ``<enable/>``: answer with :meth:`C2SStream.sm_enabled`.
    ``max``: the client's preferred resumption time, seconds (None: none)."""

    resume: bool
    max: int | None


@dataclass(frozen=True, slots=True)
class SmRequest:
    """XEP-0198 ``<r/>``: answer with ``<a h/>`` (the inbound count)."""


@dataclass(frozen=True, slots=True)
class SmAck:
    """XEP-0198 ``<a h/>``: the client has handled ``h`` stanzas."""

    h: int


@dataclass(frozen=True, slots=True)
class SmResume:
    """XEP-0198 ``<resume/>``: answer with :meth:`C2SStream.resumed` or
    :meth:`C2SStream.resume_failed`."""

    previd: str
    h: int


@dataclass(frozen=True, slots=True)
class Closed:
    """The stream is over; ``error`` is what we sent, None for a clean close."""

    error: StreamCondition | None
    by_peer: bool


Event = (
    StartTLS
    | NeedCredentials
    | Authenticated
    | AuthFailed
    | BindRequest
    | PreAuthIQ
    | Stanza
    | ClientState
    | SmEnable
    | SmRequest
    | SmAck
    | SmResume
    | Closed
)


@dataclass(slots=True)
class StreamConfig:
    hosts: frozenset[str]
    tls_available: bool = True
    require_tls: bool = True
    direct_tls: bool = False  # the socket is already TLS (XEP-0368)
    allow_plain: bool = True  # PLAIN, and only over TLS
    registration: bool = False
    max_stanza_size: int = 262144
    #: before authentication only negotiation is possible: a far smaller bound
    preauth_stanza_size: int = 16384
    #: failed SASL attempts before the stream is closed (RFC 6120 6.4.5: 2 to 5 retries)
    max_auth_failures: int = 3
    cb_data: bytes | None = None  # tls-server-end-point data for -PLUS
    extra_features: list[bytes] = field(default_factory=list)  # after bind (caps, rosterver)
    version: str = "1.0"


class C2SStream:
    def __init__(
        self,
        config: StreamConfig,
        stream_id: str | None = None,
        framing: fr.Framing = fr.TCP,
    ) -> None:
        self.config = config
        self.framing = framing
        self.state = State.WAIT_HEADER
        self.secure = config.direct_tls
        self.authenticated = False
        self.username: str | None = None
        self.host: str | None = None
        self.jid: JID | None = None
        self.lang = "en"
        self.stream_id = stream_id or secrets.token_hex(8)
        self._parser = framing.decoder(config.preauth_stanza_size)
        self._auth_failures = 0
        self._out: list[bytes] = []
        self._queue: collections.deque[StanzaReceived] = collections.deque()
        self._events: collections.deque[Event] = collections.deque()
        self._header_sent = False
        self._scram: sasl.ScramServer | None = None
        self._mech = ""
        self._scram_user = ""  # the prepared localpart of the SCRAM exchange
        self._plain: tuple[str, str] | None = None  # (username, password) while looking up
        self._bind_iq: etree._Element | None = None
        self._peer_closed = False
        self._early: list[bytes] = []
        self._csi = CSI_FEATURE in config.extra_features
        self._sm = SM_FEATURE in config.extra_features
        #: the XEP-0198 session the owner handed over (enabled or resumed)
        self.sm: sm_.StreamManagement | None = None
        self._sm_asked = False  # <enable/> was taken (at most one per stream)

    # ---- input ---------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        if self.state is State.CLOSED:
            return
        if self.state is State.TLS_HANDSHAKE:
            # decrypted bytes of the new stream can arrive before the owner
            # reports the handshake done: they belong to the restarted parser
            self._early.append(data)
            return
        try:
            self._receive(self._parser.feed(data))
        except StreamError as err:
            self._queue.clear()
            self.close(err)

    def receive_events(self, events: list[ParserEvent]) -> None:
        """Input already parsed by the transport (BOSH's ``<body/>``)."""
        if self.state is State.CLOSED:
            return
        try:
            self._receive(events)
        except StreamError as err:
            self._queue.clear()
            self.close(err)

    def _receive(self, events: list[ParserEvent]) -> None:
        for ev in events:
            if isinstance(ev, StreamOpened):
                self._on_header(ev)
            elif isinstance(ev, StanzaReceived):
                self._queue.append(ev)
            elif isinstance(ev, StreamClosed):
                self._peer_closed = True

    def next_event(self) -> Event | None:
        while not self._events and self.state is not State.CLOSED and self._queue:
            if self.state in _PAUSED:
                return None  # paused until the owner answers
            item = self._queue.popleft()
            try:
                self._dispatch(item)
            except StreamError as err:
                self.close(err)
            finally:
                if self.state is not State.ESTABLISHED:
                    self._parser.release(item.element)
        if (
            not self._events
            and self._peer_closed
            and not self._queue
            and self.state is not State.CLOSED
        ):
            self._out.append(self.framing.footer())
            self.state = State.CLOSED
            self._events.append(Closed(None, by_peer=True))
        return self._events.popleft() if self._events else None

    @property
    def peer_closed(self) -> bool:
        """The client has ended its stream (``</stream:stream>``, ``<close/>``):
        a clean close, whether or not its end was processed yet."""
        return self._peer_closed

    @property
    def backlog(self) -> int:
        """Parsed top-level elements not yet taken by next_event()."""
        return len(self._queue)

    def release(self, element: etree._Element) -> None:
        """The owner is done with a Stanza event's element."""
        self._parser.release(element)

    def data_to_send(self) -> bytes:
        out = b"".join(self._out)
        self._out.clear()
        return out

    def frames_to_send(self) -> list[bytes]:
        """What :meth:`data_to_send` gives, one top-level element (or header)
        a piece, each a standalone document where the framing wants that."""
        out, self._out = self._out, []
        if self.framing.standalone:
            return [fr.qualify(x) for x in out if x]
        return [x for x in out if x]

    # ---- answers from the owner --------------------------------------------

    def tls_started(self) -> None:
        assert self.state is State.TLS_HANDSHAKE
        self.secure = True
        self._restart()
        early, self._early = b"".join(self._early), []
        if early:
            self.receive_data(early)

    def provide_credentials(
        self, creds: sasl.ScramCredentials | None, disabled: bool = False
    ) -> None:
        assert self.state is State.SASL_WAIT_CREDS
        try:
            if disabled:
                raise SaslFailure(SaslCondition.ACCOUNT_DISABLED)
            if self._plain is not None:
                user, password = self._plain
                self._plain = None
                if not sasl.verify_password_or_decoy(password, creds):
                    raise SaslFailure(SaslCondition.NOT_AUTHORIZED)
                self._auth_success(user, None)
                return
            assert self._scram is not None
            server_first = self._scram.challenge(creds)
            self.state = State.SASL_CHALLENGE
            self._out.append(
                b"<challenge xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"
                + base64.b64encode(server_first)
                + b"</challenge>"
            )
        except SaslFailure as f:
            self._auth_fail(f)

    def bind_done(self, jid: JID | None, error: StanzaError | None = None) -> None:
        assert self.state is State.BIND_WAIT and self._bind_iq is not None
        iq = self._bind_iq
        self._bind_iq = None
        if jid is None:
            self.state = State.BIND
            self._send(
                stanza_error_reply(iq, error or StanzaError(StanzaCondition.INTERNAL_SERVER_ERROR))
            )
            return
        self.jid = jid
        reply = etree.Element(ns.q(ns.CLIENT, "iq"), type="result", nsmap={None: ns.CLIENT})
        if iq.get("id") is not None:
            reply.set("id", iq.get("id") or "")
        bind = etree.SubElement(reply, ns.q(ns.BIND, "bind"), nsmap={None: ns.BIND})
        etree.SubElement(bind, ns.q(ns.BIND, "jid")).text = str(jid)
        self._send(reply)
        self.state = State.ESTABLISHED

    def sm_enabled(self, sm: sm_.StreamManagement) -> None:
        """Answer :class:`SmEnable`: stream management is on, counted in ``sm``."""
        assert self.state is State.ESTABLISHED and self.sm is None
        self.sm = sm
        self._out.append(sm.enabled_nonza())

    def resumed(self, jid: JID, sm: sm_.StreamManagement) -> None:
        """Answer :class:`SmResume`: the stream carries on the session of
        ``jid`` whose counters are ``sm``; ``<resumed/>`` is queued, and the
        owner sends the unacknowledged stanzas after it."""
        assert self.state is State.RESUME_WAIT
        self.jid = jid
        self.sm = sm
        self._sm_asked = True
        self._out.append(sm.resumed_nonza())
        self.state = State.ESTABLISHED

    def resume_failed(
        self, condition: StanzaCondition = StanzaCondition.ITEM_NOT_FOUND, h: int | None = None
    ) -> None:
        """Answer :class:`SmResume`: no such session; the client may bind."""
        assert self.state is State.RESUME_WAIT
        self._out.append(sm_.failed(condition, h))
        self.state = State.BIND

    # ---- output ------------------------------------------------------------

    def send_bytes(self, data: bytes) -> None:
        if self.state is not State.CLOSED:
            self._out.append(data)

    def send_element(self, el: etree._Element) -> None:
        self.send_bytes(etree.tostring(el, with_tail=False))

    def close(self, error: StreamError | None = None) -> None:
        """Close the stream, with a stream error if given (RFC 6120 4.4, 4.9)."""
        if self.state is State.CLOSED:
            return
        if not self._header_sent:
            self._send_header(self.host or next(iter(sorted(self.config.hosts)), ""))
        if error is not None:
            self._out.append(error.to_bytes())
        self._out.append(self.framing.footer())
        self.state = State.CLOSED
        self._events.append(Closed(error.condition if error else None, by_peer=False))

    # ---- internals -----------------------------------------------------------

    def _send(self, el: etree._Element) -> None:
        self._out.append(etree.tostring(el, with_tail=False))

    def _restart(self) -> None:
        limit = (
            self.config.max_stanza_size if self.authenticated else self.config.preauth_stanza_size
        )
        self._parser = self.framing.decoder(limit)
        self._queue.clear()
        self._header_sent = False
        self.state = State.WAIT_HEADER

    def _send_header(self, host: str) -> None:
        self._out.append(self.framing.header(self.stream_id, host, self.lang))
        self._header_sent = True

    def _on_header(self, ev: StreamOpened) -> None:
        if self.state is not State.WAIT_HEADER:
            raise StreamError(StreamCondition.BAD_FORMAT, "unexpected stream header")
        lang = ev.attrs.get(ns.q(ns.XML, "lang"))
        if lang and len(lang) < 36:
            self.lang = lang
        to = ev.attrs.get("to")
        host = to.lower() if to else None
        if host in self.config.hosts and not self.authenticated:
            self.host = host
        self._send_header(self.host or next(iter(sorted(self.config.hosts)), ""))
        # RFC 6120 4.9.1.1: header checks, in order of significance
        self.framing.check_open(ev)
        if self.host is None:
            raise StreamError(StreamCondition.HOST_UNKNOWN)
        if self.authenticated and host is not None and host != self.host:
            # RFC 6120 6.4.6: after SASL the stream stays with the domain the
            # credentials were checked for; a restart naming another hosted
            # domain must not lead to binding a JID there
            raise StreamError(StreamCondition.HOST_UNKNOWN, "not the authenticated domain")
        version = ev.attrs.get("version")
        if version is None:
            raise StreamError(StreamCondition.UNSUPPORTED_VERSION, "XMPP 1.0 is required")
        major, _, minor = version.partition(".")
        if not (major.isdigit() and minor.isdigit()):
            raise StreamError(StreamCondition.BAD_FORMAT, "bad version")
        if int(major) != 1:
            raise StreamError(StreamCondition.UNSUPPORTED_VERSION)
        self._send_features()

    def _send_features(self) -> None:
        parts: list[bytes] = [b"<stream:features>"]
        if self.authenticated:
            parts.append(b"<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>")
            parts.append(
                b"<session xmlns='urn:ietf:params:xml:ns:xmpp-session'><optional/></session>"
            )
            parts.extend(self.config.extra_features)
            self.state = State.BIND
        elif not self.secure and self.config.tls_available:
            if self.config.require_tls:
                parts.append(
                    b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls>"
                )
            else:
                parts.append(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
                parts.append(self._mechanisms_xml())
            if self.config.registration and not self.config.require_tls:
                parts.append(b"<register xmlns='http://jabber.org/features/iq-register'/>")
            self.state = State.PRE_TLS
        else:
            parts.append(self._mechanisms_xml())
            if self.config.registration:
                parts.append(b"<register xmlns='http://jabber.org/features/iq-register'/>")
            self.state = State.SASL
        parts.append(b"</stream:features>")
        self._out.append(b"".join(parts))

    def offered_mechanisms(self) -> list[str]:
        if self.config.require_tls and not self.secure and not self.config.tls_available:
            # an insecure transport that cannot upgrade (plain HTTP that is
            # not trusted as secure): nothing to offer, as before STARTTLS
            return []
        mechs = []
        for m in sasl.MECHANISMS:
            if m.endswith("-PLUS") and not (self.secure and self.config.cb_data):
                continue
            if m == "PLAIN" and not (self.secure and self.config.allow_plain):
                continue
            mechs.append(m)
        return mechs

    def _mechanisms_xml(self) -> bytes:
        inner = "".join(f"<mechanism>{m}</mechanism>" for m in self.offered_mechanisms())
        return f"<mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{inner}</mechanisms>".encode()

    def _dispatch(self, item: StanzaReceived) -> None:
        el = item.element
        tag = el.tag
        if not isinstance(tag, str):
            return
        if self.state is State.ESTABLISHED and not (
            (self._csi and tag in _CSI_TAGS) or (self._sm and tag in _SM_TAGS)
        ):
            # an unknown element goes on too: the owner's stanza check
            # answers it with unsupported-stanza-type
            if self.sm is not None and tag in _STANZA_TAGS:
                self.sm.stanza_in()
            self._events.append(Stanza(el, item.size))
            return
        handler = TRANSITIONS.get((self.state, tag))
        if handler is not None and (self._sm or tag not in _SM_TAGS):
            getattr(self, handler)(el)
            return
        if tag == ns.q(ns.CLIENT, "iq") and self.state in (State.PRE_TLS, State.SASL):
            if self.config.registration and (self.secure or not self.config.require_tls):
                self._events.append(PreAuthIQ(el))
                return
        if self.state is State.WAIT_HEADER:
            # only a framed transport (RFC 7395) can send an element before
            # its stream header: the TCP parser's first element is the header
            raise StreamError(StreamCondition.BAD_FORMAT, "the stream is not open")
        if tag in (ns.q(ns.CLIENT, "message"), ns.q(ns.CLIENT, "presence"), ns.q(ns.CLIENT, "iq")):
            # RFC 6120 4.3.5: no stanzas before negotiation is complete
            raise StreamError(StreamCondition.NOT_AUTHORIZED)
        if tag.startswith("{" + ns.SASL + "}") or tag.startswith("{" + ns.TLS + "}"):
            raise StreamError(StreamCondition.POLICY_VIOLATION, "unexpected negotiation element")
        raise StreamError(StreamCondition.UNSUPPORTED_STANZA_TYPE)

    # TLS
    def _on_starttls(self, el: etree._Element) -> None:
        self._out.append(b"<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        self.state = State.TLS_HANDSHAKE
        self._events.append(StartTLS())

    def _on_auth_before_tls(self, el: etree._Element) -> None:
        if self.config.require_tls:
            self._auth_fail(SaslFailure(SaslCondition.ENCRYPTION_REQUIRED))
            self.state = State.PRE_TLS
        else:
            self._on_auth(el)

    # SASL
    def _on_auth(self, el: etree._Element) -> None:
        mech = el.get("mechanism") or ""
        self._mech = mech
        try:
            if mech not in self.offered_mechanisms():
                if self.config.require_tls and not self.secure:
                    raise SaslFailure(SaslCondition.ENCRYPTION_REQUIRED)
                if mech == "PLAIN" and not self.secure:
                    raise SaslFailure(SaslCondition.ENCRYPTION_REQUIRED)
                raise SaslFailure(SaslCondition.INVALID_MECHANISM)
            data = _b64(el.text)
            if mech == "PLAIN":
                authzid, user, password = sasl.parse_plain(data)
                user = self._check_user(user, authzid)
                self._plain = (user, password)
                self.state = State.SASL_WAIT_CREDS
                self._events.append(NeedCredentials(user, "SHA-256"))
                return
            plus_offered = any(m.endswith("-PLUS") for m in self.offered_mechanisms())
            self._scram = sasl.ScramServer(
                mech, self.config.cb_data if self.secure else None, plus_offered
            )
            if not data:
                raise SaslFailure(SaslCondition.MALFORMED_REQUEST, "initial response required")
            user = self._scram.start(data)
            # the prepared localpart, as for PLAIN: storage and the throttle
            # key accounts by it ("Alice" and "alice" are one account)
            user = self._check_user(user, self._scram.authzid)
            self._scram_user = user
            self.state = State.SASL_WAIT_CREDS
            self._events.append(NeedCredentials(user, sasl.HASH_OF[mech]))
        except SaslFailure as f:
            self._auth_fail(f)

    def _check_user(self, user: str, authzid: str | None) -> str:
        try:
            jid = JID.make(user, self.host or "localhost")
        except StanzaError:
            raise SaslFailure(SaslCondition.NOT_AUTHORIZED) from None
        if authzid:
            try:
                az = JID.parse(authzid)
            except StanzaError:
                raise SaslFailure(SaslCondition.INVALID_AUTHZID) from None
            if az.bare != jid:
                raise SaslFailure(SaslCondition.INVALID_AUTHZID)
        assert jid.local is not None
        return jid.local

    def _on_response(self, el: etree._Element) -> None:
        assert self._scram is not None
        try:
            final = self._scram.finish(_b64(el.text))
            self._auth_success(self._scram_user, final)
        except SaslFailure as f:
            self._auth_fail(f)

    def _on_abort(self, el: etree._Element) -> None:
        self._auth_fail(SaslFailure(SaslCondition.ABORTED))

    def _auth_success(self, username: str, final: bytes | None) -> None:
        payload = base64.b64encode(final).decode() if final else ""
        self._out.append(
            f"<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{payload}</success>".encode()
        )
        self.authenticated = True
        self.username = username
        self._scram = None
        self._events.append(Authenticated(username, self._mech))
        self._restart()

    def _auth_fail(self, f: SaslFailure) -> None:
        self._out.append(etree.tostring(f.to_element(), with_tail=False))
        self._scram = None
        self._plain = None
        self.state = State.SASL if (self.secure or not self.config.require_tls) else State.PRE_TLS
        self._events.append(AuthFailed(self._mech, f.condition.value))
        if f.condition is not SaslCondition.ABORTED:
            self._auth_failures += 1
            if self._auth_failures >= self.config.max_auth_failures:
                self.close(
                    StreamError(
                        StreamCondition.POLICY_VIOLATION,
                        "too many failed authentication attempts",
                    )
                )

    # resource binding (RFC 6120 section 7) and the legacy session (RFC 3921)
    def _on_bind_iq(self, el: etree._Element) -> None:
        child = el[0] if len(el) == 1 else None
        if el.get("type") == "set" and child is not None and child.tag == ns.q(ns.BIND, "bind"):
            res_el = child.find(ns.q(ns.BIND, "resource"))
            resource = (res_el.text or "").strip() if res_el is not None else ""
            self._bind_iq = el
            self.state = State.BIND_WAIT
            if resource:
                try:
                    JID.make(self.username, self.host or "", resource)
                except StanzaError:
                    self.state = State.BIND
                    self._bind_iq = None
                    self._send(
                        stanza_error_reply(
                            el, StanzaError(StanzaCondition.BAD_REQUEST, "bad resource")
                        )
                    )
                    return
            self._events.append(BindRequest(resource or None))
            return
        raise StreamError(StreamCondition.NOT_AUTHORIZED, "bind a resource first")

    # client state indication (XEP-0352)
    def _on_client_state(self, el: etree._Element) -> None:
        # no reply (XEP-0352 3.2); the element is ours to release, as no
        # event carries it
        self._events.append(ClientState(el.tag == _CSI_ACTIVE))
        self._parser.release(el)

    # stream management (XEP-0198)
    def _sm_failed(self, el: etree._Element, condition: StanzaCondition) -> None:
        self._out.append(sm_.failed(condition))
        if self.state is State.ESTABLISHED:
            self._parser.release(el)  # no event carries it

    def _on_sm_enable_unbound(self, el: etree._Element) -> None:
        # section 3: not before resource binding (unless resuming)
        self._sm_failed(el, StanzaCondition.UNEXPECTED_REQUEST)

    def _on_sm_enable(self, el: etree._Element) -> None:
        if self._sm_asked:
            # section 3: one attempt per stream
            self._sm_failed(el, StanzaCondition.UNEXPECTED_REQUEST)
            return
        self._sm_asked = True
        resume = (el.get("resume") or "").strip() in ("true", "1")
        try:
            client_max: int | None = sm_.parse_h(el.get("max"))
        except ValueError:
            client_max = None  # absent or not a number: no preference
        self._events.append(SmEnable(resume, client_max))
        self._parser.release(el)

    def _on_sm_resume_bound(self, el: etree._Element) -> None:
        # section 5: resumption replaces binding; a bound stream has its session
        self._sm_failed(el, StanzaCondition.UNEXPECTED_REQUEST)

    def _on_sm_resume(self, el: etree._Element) -> None:
        previd = el.get("previd")
        try:
            h = sm_.parse_h(el.get("h"))
        except ValueError:
            previd = None
        if not previd:
            self._sm_failed(el, StanzaCondition.BAD_REQUEST)
            return
        self.state = State.RESUME_WAIT
        self._events.append(SmResume(previd, h))

    def _on_sm_request(self, el: etree._Element) -> None:
        self._parser.release(el)
        if self.sm is None:
            raise StreamError(
                StreamCondition.UNSUPPORTED_STANZA_TYPE, "stream management is not enabled"
            )
        self._events.append(SmRequest())

    def _on_sm_ack(self, el: etree._Element) -> None:
        value = el.get("h")
        self._parser.release(el)
        if self.sm is None:
            raise StreamError(
                StreamCondition.UNSUPPORTED_STANZA_TYPE, "stream management is not enabled"
            )
        try:
            h = sm_.parse_h(value)
        except ValueError:
            raise StreamError(StreamCondition.INVALID_XML, "h must be an unsignedInt") from None
        self._events.append(SmAck(h))


_PAUSED = frozenset(
    {State.TLS_HANDSHAKE, State.SASL_WAIT_CREDS, State.BIND_WAIT, State.RESUME_WAIT}
)
_CSI_ACTIVE = ns.q(CSI, "active")
_CSI_TAGS = frozenset({_CSI_ACTIVE, ns.q(CSI, "inactive")})
_SM_TAGS = frozenset(ns.q(SM, t) for t in ("enable", "resume", "r", "a"))
_STANZA_TAGS = frozenset(ns.q(ns.CLIENT, t) for t in ("message", "presence", "iq"))


def _b64(text: str | None) -> bytes:
    if not text or text == "=":
        return b""
    try:
        return base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise SaslFailure(SaslCondition.INCORRECT_ENCODING) from None
