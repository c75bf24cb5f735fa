"""Scripted conversations with the sans-IO client stream state machine."""

from __future__ import annotations

import base64

import pytest

from services.xmpp import c2s
from services.xmpp.jid import JID
from services.xmpp.sasl import derive_credentials

HEADER = (
    b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "
    b"to='localhost' version='1.0'>"
)


def stream(**kw) -> c2s.C2SStream:
    return c2s.C2SStream(c2s.StreamConfig(hosts=frozenset({"localhost"}), cb_data=b"x" * 32, **kw))


def drain(s: c2s.C2SStream) -> list[c2s.Event]:
    out = []
    while (ev := s.next_event()) is not None:
        out.append(ev)
    return out


def plain(user: str, pw: str) -> bytes:
    tok = base64.b64encode(f"\0{user}\0{pw}".encode()).decode()
    return f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{tok}</auth>".encode()


def test_full_negotiation_with_starttls():
    s = stream()
    s.receive_data(HEADER)
    assert drain(s) == []
    out = s.data_to_send()
    assert b"<starttls" in out and b"<required/>" in out and s.state is c2s.State.PRE_TLS
    s.receive_data(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
    assert drain(s) == [c2s.StartTLS()]
    assert s.data_to_send().endswith(b"<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
    # bytes of the new stream can arrive before the handshake is reported
    s.receive_data(HEADER)
    s.tls_started()
    assert drain(s) == []
    out = s.data_to_send()
    assert b"<mechanism>SCRAM-SHA-256-PLUS</mechanism>" in out and b"PLAIN" in out
    s.receive_data(plain("alice", "pw"))
    assert drain(s) == [c2s.NeedCredentials("alice", "SHA-256")]
    s.provide_credentials(derive_credentials("pw", "SHA-256"))
    assert drain(s) == [c2s.Authenticated("alice", "PLAIN")]
    assert b"<success" in s.data_to_send()
    s.receive_data(HEADER)
    drain(s)
    assert b"urn:ietf:params:xml:ns:xmpp-bind" in s.data_to_send()
    s.receive_data(
        b"<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>r</resource></bind></iq>"
        b"<message to='bob@localhost'><body>queued while binding</body></message>"
    )
    assert drain(s) == [c2s.BindRequest("r")]
    s.bind_done(JID.parse("alice@localhost/r"))
    assert b"<jid>alice@localhost/r</jid>" in s.data_to_send()
    (ev,) = drain(s)
    assert (
        isinstance(ev, c2s.Stanza)
        and ev.element.findtext("{jabber:client}body") == "queued while binding"
    )
    s.receive_data(b"</stream:stream>")
    assert drain(s) == [c2s.Closed(None, by_peer=True)]
    assert s.data_to_send() == b"</stream:stream>"


def test_failed_auth_then_retry():
    s = stream(direct_tls=True)
    s.receive_data(HEADER)
    drain(s)
    s.data_to_send()
    s.receive_data(plain("alice", "bad"))
    drain(s)
    s.provide_credentials(derive_credentials("pw", "SHA-256"))
    assert drain(s) == [c2s.AuthFailed("PLAIN", "not-authorized")]
    assert b"<not-authorized/>" in s.data_to_send()
    s.receive_data(plain("alice", "pw"))
    drain(s)
    s.provide_credentials(derive_credentials("pw", "SHA-256"))
    assert drain(s) == [c2s.Authenticated("alice", "PLAIN")]


def test_disabled_account():
    s = stream(direct_tls=True)
    s.receive_data(HEADER)
    drain(s)
    s.receive_data(plain("alice", "pw"))
    drain(s)
    s.provide_credentials(derive_credentials("pw", "SHA-256"), disabled=True)
    assert drain(s) == [c2s.AuthFailed("PLAIN", "account-disabled")]


def test_close_before_header_sends_header_first():
    s = stream()
    s.receive_data(b"garbage<<")
    (ev,) = drain(s)
    assert isinstance(ev, c2s.Closed) and ev.error is not None
    out = s.data_to_send()
    assert out.startswith(b"<?xml version='1.0'?><stream:stream") and out.endswith(
        b"</stream:stream>"
    )


@pytest.mark.parametrize("plain_allowed", [True, False])
def test_plain_offered_only_over_tls_and_when_allowed(plain_allowed):
    s = stream(require_tls=False, allow_plain=plain_allowed)
    s.receive_data(HEADER)
    drain(s)
    assert b"<mechanism>PLAIN</mechanism>" not in s.data_to_send()  # not over plain TCP
    s2 = stream(direct_tls=True, allow_plain=plain_allowed)
    s2.receive_data(HEADER)
    drain(s2)
    assert (b"<mechanism>PLAIN</mechanism>" in s2.data_to_send()) is plain_allowed
