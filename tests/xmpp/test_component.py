"""Scripted conversations with the sans-IO XEP-0114 component stream."""

from __future__ import annotations

import hashlib

from lxml import etree

from services.xmpp import component as comp
from services.xmpp.errors import StreamCondition, StreamError

SID = "3BF96D32"
SECRET = "s3cret"
HEADER = (
    b"<stream:stream xmlns='jabber:component:accept' "
    b"xmlns:stream='http://etherx.jabber.org/streams' to='bot.localhost'>"
)


def stream(**kw) -> comp.ComponentStream:
    config = comp.ComponentConfig({"bot.localhost": SECRET}, **kw)
    return comp.ComponentStream(config, stream_id=SID)


def drain(s: comp.ComponentStream) -> list[comp.Event]:
    out = []
    while (ev := s.next_event()) is not None:
        out.append(ev)
    return out


def handshake(secret: str = SECRET) -> bytes:
    digest = hashlib.sha1((SID + secret).encode()).hexdigest()
    return f"<handshake>{digest}</handshake>".encode()


def established() -> comp.ComponentStream:
    s = stream()
    s.receive_data(HEADER + handshake())
    assert drain(s) == [comp.Authenticated("bot.localhost")]
    s.accept()
    s.data_to_send()
    return s


def closed_with(s: comp.ComponentStream, condition: StreamCondition) -> bytes:
    events = drain(s)
    assert events[-1] == comp.Closed(condition, by_peer=False), events
    out = s.data_to_send()
    assert f"<{condition.value} xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>".encode() in out
    assert out.endswith(b"</stream:stream>")
    assert s.state is comp.State.CLOSED
    return out


def test_handshake_digest_is_the_xep_example_algorithm():
    assert (
        comp.handshake_digest("3BF96D32", "s3cret") == hashlib.sha1(b"3BF96D32s3cret").hexdigest()
    )


def test_good_handshake():
    s = stream()
    s.receive_data(HEADER)
    assert drain(s) == []
    out = s.data_to_send()
    assert out.startswith(b"<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept'")
    assert f"id='{SID}'".encode() in out and b"from='bot.localhost'" in out
    assert s.state is comp.State.WAIT_HANDSHAKE
    s.receive_data(handshake())
    assert drain(s) == [comp.Authenticated("bot.localhost")]
    assert s.data_to_send() == b""  # nothing until the owner claimed the domain
    s.accept()
    assert s.data_to_send() == b"<handshake/>"
    assert s.state is comp.State.ESTABLISHED


def test_uppercase_hex_is_accepted():
    s = stream()
    s.receive_data(HEADER + handshake().upper().replace(b"HANDSHAKE", b"handshake"))
    assert drain(s) == [comp.Authenticated("bot.localhost")]


def test_wrong_secret_is_not_authorized():
    s = stream()
    s.receive_data(HEADER + handshake("wrong"))
    closed_with(s, StreamCondition.NOT_AUTHORIZED)


def test_unknown_domain_is_host_unknown():
    s = stream()
    s.receive_data(HEADER.replace(b"bot.localhost", b"nobody.localhost"))
    out = closed_with(s, StreamCondition.HOST_UNKNOWN)
    assert out.startswith(b"<?xml version='1.0'?><stream:stream ")  # header, error, close
    assert b"from=" not in out


def test_missing_to_is_host_unknown():
    s = stream()
    s.receive_data(HEADER.replace(b" to='bot.localhost'", b""))
    closed_with(s, StreamCondition.HOST_UNKNOWN)


def test_client_namespace_is_invalid_namespace():
    s = stream()
    s.receive_data(HEADER.replace(b"jabber:component:accept", b"jabber:client"))
    closed_with(s, StreamCondition.INVALID_NAMESPACE)


def test_stanza_before_handshake_is_not_authorized():
    s = stream()
    s.receive_data(
        HEADER + b"<message from='a@bot.localhost' to='alice@localhost'><body>x</body></message>"
    )
    closed_with(s, StreamCondition.NOT_AUTHORIZED)


def test_oversized_handshake_is_a_policy_violation():
    s = stream(preauth_stanza_size=1024)
    s.receive_data(HEADER + b"<handshake>" + b"a" * 4096 + b"</handshake>")
    closed_with(s, StreamCondition.POLICY_VIOLATION)


def test_conflict_from_the_owner():
    s = stream()
    s.receive_data(HEADER + handshake())
    assert drain(s) == [comp.Authenticated("bot.localhost")]
    s.data_to_send()
    s.close(StreamError(StreamCondition.CONFLICT))
    out = closed_with(s, StreamCondition.CONFLICT)
    assert b"<handshake/>" not in out


def test_stanzas_wait_while_claiming():
    s = stream()
    s.receive_data(
        HEADER
        + handshake()
        + b"<message from='bot.localhost' to='alice@localhost'><body>early</body></message>"
    )
    assert drain(s) == [comp.Authenticated("bot.localhost")]
    assert s.backlog == 1
    s.accept()
    (ev,) = drain(s)
    assert isinstance(ev, comp.Stanza) and ev.element.findtext("{jabber:client}body") == "early"


def test_stanza_is_turned_into_jabber_client():
    s = established()
    s.receive_data(
        b"<message from='x@bot.localhost/r' to='Alice@localhost' type='chat' id='m1'>"
        b"<body>hi</body><x xmlns='urn:example'><y/></x></message>"
    )
    (ev,) = drain(s)
    assert isinstance(ev, comp.Stanza)
    h = ev.header
    assert (h.kind, h.type, h.id) == ("message", "chat", "m1")
    assert str(h.frm) == "x@bot.localhost/r" and str(h.to) == "alice@localhost"
    el = ev.element
    assert el.tag == "{jabber:client}message" and el.getparent() is None
    assert el.get("to") == "alice@localhost"
    assert el.findtext("{jabber:client}body") == "hi"
    assert el.find("{urn:example}x/{urn:example}y") is not None
    data = etree.tostring(el)
    assert b"jabber:component:accept" not in data


def test_from_outside_the_domain_is_invalid_from():
    s = established()
    s.receive_data(b"<message from='alice@localhost' to='bob@localhost'><body>x</body></message>")
    closed_with(s, StreamCondition.INVALID_FROM)


def test_subdomain_is_not_the_component_domain():
    s = established()
    s.receive_data(b"<message from='a.bot.localhost' to='bob@localhost'/>")
    closed_with(s, StreamCondition.INVALID_FROM)


def test_missing_from_or_to_is_improper_addressing():
    s = established()
    s.receive_data(b"<message to='bob@localhost'><body>x</body></message>")
    closed_with(s, StreamCondition.IMPROPER_ADDRESSING)
    s = established()
    s.receive_data(b"<presence from='bot.localhost'/>")
    closed_with(s, StreamCondition.IMPROPER_ADDRESSING)


def test_malformed_to_is_answered_not_fatal():
    s = established()
    s.receive_data(
        b"<iq from='bot.localhost' to='a@b@c' type='get' id='q1'><ping xmlns='urn:xmpp:ping'/></iq>"
    )
    assert drain(s) == []
    out = s.data_to_send()
    assert b'<iq xmlns="jabber:component:accept"' in out and b"jid-malformed" in out
    assert b'to="bot.localhost"' in out and b"a@b@c" not in out
    assert s.state is comp.State.ESTABLISHED


def test_unknown_element_after_handshake():
    s = established()
    s.receive_data(b"<handshake/>")
    closed_with(s, StreamCondition.UNSUPPORTED_STANZA_TYPE)


def test_delivered_stanza_gets_the_component_namespace():
    s = established()
    s.send_stanza(
        b"<message xmlns='jabber:client' from='alice@localhost/a' to='bot.localhost'>"
        b"<body>hello</body><error type='cancel'>"
        b"<service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>"
    )
    out = s.data_to_send()
    el = etree.fromstring(out)
    assert el.tag == "{jabber:component:accept}message"
    assert el.findtext("{jabber:component:accept}body") == "hello"
    cond = el.find(
        "{jabber:component:accept}error/{urn:ietf:params:xml:ns:xmpp-stanzas}service-unavailable"
    )
    assert cond is not None
    assert b"jabber:client" not in out


def test_peer_close():
    s = established()
    s.receive_data(b"</stream:stream>")
    assert drain(s) == [comp.Closed(None, by_peer=True)]
    assert s.data_to_send() == b"</stream:stream>"


def test_bad_xml_is_not_well_formed():
    s = established()
    s.receive_data(b"<message><<")
    closed_with(s, StreamCondition.NOT_WELL_FORMED)
