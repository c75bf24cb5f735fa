"""The c2s state machine under each framing (sans-IO, no socket): the same
negotiation over TCP's one document, WebSocket's one element per message
(RFC 7395) and BOSH's parsed <body/> children (XEP-0206)."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from services.xmpp import c2s, ns
from services.xmpp.bosh import Body
from services.xmpp.errors import StreamError
from services.xmpp.framing import BOSH, TCP, WEBSOCKET, WebSocketDecoder, qualify
from services.xmpp.parser import StanzaReceived, StreamClosed, StreamOpened

FRAMING = "urn:ietf:params:xml:ns:xmpp-framing"
OPEN = f"<open xmlns='{FRAMING}' to='localhost' version='1.0'/>".encode()
CLOSE = f"<close xmlns='{FRAMING}'/>".encode()
PLAIN = base64.b64encode(b"\0alice\0pw").decode()


def _stream(framing: object, secure: bool = True) -> c2s.C2SStream:
    config = c2s.StreamConfig(
        hosts=frozenset({"localhost"}),
        tls_available=framing is TCP,
        direct_tls=secure,
        cb_data=None,
    )
    return c2s.C2SStream(config, framing=framing)  # type: ignore[arg-type]


def _events(s: c2s.C2SStream) -> list[c2s.Event]:
    out = []
    while (ev := s.next_event()) is not None:
        out.append(ev)
    return out


def _parse(frame: bytes) -> etree._Element:
    """Every frame must be a standalone document (3.3.3)."""
    return etree.fromstring(frame)


def test_websocket_negotiation_frame_by_frame() -> None:
    s = _stream(WEBSOCKET)
    s.receive_data(OPEN)
    assert _events(s) == []
    frames = s.frames_to_send()
    assert len(frames) == 2
    opened, features = map(_parse, frames)
    assert opened.tag == f"{{{FRAMING}}}open"
    assert opened.get("from") == "localhost" and opened.get("version") == "1.0"
    assert opened.get("id") == s.stream_id
    assert features.tag == ns.q(ns.STREAM, "features")
    s.receive_data(
        f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{PLAIN}</auth>".encode()
    )
    (need,) = _events(s)
    assert isinstance(need, c2s.NeedCredentials) and need.username == "alice"
    from services.xmpp import sasl

    s.provide_credentials(sasl.derive_credentials("pw", "SHA-256"))
    assert isinstance(_events(s)[0], c2s.Authenticated)
    (success,) = map(_parse, s.frames_to_send())
    assert success.tag == ns.q(ns.SASL, "success")
    # the restart: a new <open/>, a new header and the bind features
    s.receive_data(OPEN)
    opened, features = map(_parse, s.frames_to_send())
    assert opened.tag == f"{{{FRAMING}}}open"
    assert features.find(ns.q(ns.BIND, "bind")) is not None
    s.receive_data(
        b"<iq xmlns='jabber:client' type='set' id='b'>"
        b"<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>"
    )
    (bind,) = _events(s)
    assert isinstance(bind, c2s.BindRequest)
    s.receive_data(CLOSE)
    # closing waits for nothing: the peer's close is answered in order
    from services.xmpp.jid import JID

    s.bind_done(JID.parse("alice@localhost/r"))
    (closed,) = _events(s)
    assert isinstance(closed, c2s.Closed) and closed.by_peer
    frames = s.frames_to_send()
    assert _parse(frames[-1]).tag == f"{{{FRAMING}}}close"


@pytest.mark.parametrize(
    ("frame", "condition"),
    [
        (b"<iq/><iq/>", "not-well-formed"),
        (b"<iq>", "not-well-formed"),
        (b"<iq></message>", "not-well-formed"),
        (b" <iq/>", "not-well-formed"),
        (b"x", "not-well-formed"),
        (b"<?pi x?><iq/>", "restricted-xml"),
        (b"<iq>&ent;</iq>", "restricted-xml"),
        (b"<open xmlns='urn:wrong' to='localhost' version='1.0'/>", "invalid-namespace"),
        (b"<close xmlns='urn:wrong'/>", "invalid-namespace"),
        (b"<message xmlns='jabber:client'/>", "bad-format"),
    ],
)
def test_websocket_bad_first_frame(frame: bytes, condition: str) -> None:
    s = _stream(WEBSOCKET)
    s.receive_data(frame)
    (closed,) = _events(s)
    assert isinstance(closed, c2s.Closed) and closed.error is not None
    assert closed.error.value == condition
    frames = s.frames_to_send()
    # 3.6.1: our <open/> first, then the error, then <close/>
    opened, error, close = map(_parse, frames)
    assert opened.tag == f"{{{FRAMING}}}open"
    assert error.tag == ns.q(ns.STREAM, "error")
    assert error[0].tag == ns.q(ns.STREAMS_ERR, condition)
    assert close.tag == f"{{{FRAMING}}}close"


def test_websocket_xml_declaration_is_tolerated() -> None:
    s = _stream(WEBSOCKET)
    s.receive_data(b"<?xml version='1.0'?>" + OPEN)
    assert _events(s) == []
    assert len(s.frames_to_send()) == 2


def test_websocket_decoder_bounds_each_message() -> None:
    d = WebSocketDecoder(1000)
    with pytest.raises(StreamError) as exc:
        d.feed(b"<iq xmlns='jabber:client' id='" + b"x" * 2000 + b"'/>")
    assert exc.value.condition.value == "policy-violation"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_websocket_decoder_fuzz(data: bytes) -> None:
    """Any message: events or a StreamError, never another exception."""
    d = WebSocketDecoder(4096)
    try:
        events = d.feed(data)
    except StreamError:
        return
    assert len(events) == 1
    assert isinstance(events[0], StanzaReceived | StreamOpened | StreamClosed)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=60), max_size=6))
def test_websocket_stream_fuzz(frames: list[bytes]) -> None:
    """The whole state machine over arbitrary messages: it ends or goes on, and
    every frame it sends is a standalone document."""
    s = _stream(WEBSOCKET)
    for frame in [OPEN, *frames]:
        s.receive_data(frame)
        _events(s)
        for out in s.frames_to_send():
            _parse(out)


def test_bosh_stream_takes_parsed_children() -> None:
    s = _stream(BOSH)
    body = Body({"to": "localhost", "{urn:xmpp:xbosh}version": "1.0", "rid": "1"})
    s.receive_events([body.stream_header()])
    assert _events(s) == []
    frames = s.frames_to_send()
    # BOSH has no stream header of its own: the creation response stands for it
    (features,) = map(_parse, frames)
    assert features.tag == ns.q(ns.STREAM, "features")
    with pytest.raises(StreamError):
        BOSH.decoder(100).feed(b"<iq/>")


def test_bosh_stream_error_is_standalone() -> None:
    s = _stream(BOSH)
    s.receive_events([Body({"to": "elsewhere", "rid": "1"}).stream_header()])
    (closed,) = _events(s)
    assert isinstance(closed, c2s.Closed) and closed.error is not None
    (error,) = map(_parse, s.frames_to_send())
    assert error[0].tag == ns.q(ns.STREAMS_ERR, "host-unknown")


def test_tcp_framing_is_unchanged() -> None:
    s = _stream(TCP, secure=False)
    s.receive_data(
        b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'"
        b" to='localhost' version='1.0'>"
    )
    out = s.data_to_send()
    assert out.startswith(b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' ")
    assert b"<stream:features><starttls" in out  # no declarations repeated inside the stream


def test_insecure_framed_stream_offers_no_mechanism_when_tls_is_required() -> None:
    s = _stream(WEBSOCKET, secure=False)
    s.receive_data(OPEN)
    _open, features = s.frames_to_send()
    assert b"<mechanism>" not in features
    s.receive_data(
        f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{PLAIN}</auth>".encode()
    )
    (failed,) = _events(s)
    assert isinstance(failed, c2s.AuthFailed) and failed.condition == "encryption-required"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"<stream:features><bind/></stream:features>",
         b"<stream:features xmlns:stream='http://etherx.jabber.org/streams'><bind/></stream:features>"),
        (b"<stream:error xmlns:stream='x'/>", b"<stream:error xmlns:stream='x'/>"),
        (b"<message to='a'><body/></message>", b"<message to='a' xmlns='jabber:client'><body/></message>"),
        (b"<iq/>", b"<iq xmlns='jabber:client'/>"),
        (b"<presence xmlns='jabber:client'/>", b"<presence xmlns='jabber:client'/>"),
        (b"<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>", b"<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>"),
    ],
)  # fmt: skip
def test_qualify(data: bytes, expected: bytes) -> None:
    assert qualify(data) == expected
    _parse(qualify(data).replace(b"xmlns:stream='x'", b"xmlns:stream='urn:x'"))
