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


# ---- issue 9: what the stream must refuse -------------------------------------


def _authenticated(s: c2s.C2SStream, host: str = "localhost") -> None:
    s.receive_data(HEADER.replace(b"localhost", host.encode()))
    drain(s)
    s.receive_data(plain("alice", "pw"))
    drain(s)
    s.provide_credentials(derive_credentials("pw", "SHA-256"))
    assert drain(s) == [c2s.Authenticated("alice", "PLAIN")]
    s.data_to_send()


def two_hosts() -> c2s.C2SStream:
    return c2s.C2SStream(
        c2s.StreamConfig(hosts=frozenset({"localhost", "other.localhost"}), direct_tls=True)
    )


def test_restart_to_another_hosted_domain_after_auth_is_refused():
    s = two_hosts()
    _authenticated(s, "localhost")
    s.receive_data(HEADER.replace(b"localhost", b"other.localhost"))
    (ev,) = drain(s)
    assert ev == c2s.Closed(c2s.StreamCondition.HOST_UNKNOWN, by_peer=False)
    out = s.data_to_send()
    assert b"<host-unknown" in out and b"<bind" not in out
    assert s.host == "localhost"


def test_restart_to_the_same_domain_after_auth_binds_there():
    s = two_hosts()
    _authenticated(s, "other.localhost")
    s.receive_data(HEADER.replace(b"localhost", b"other.localhost"))
    assert drain(s) == []
    assert b"<bind" in s.data_to_send() and s.host == "other.localhost"


def test_the_connection_is_closed_after_too_many_failed_attempts():
    s = stream(direct_tls=True, max_auth_failures=3)
    s.receive_data(HEADER)
    drain(s)
    for attempt in range(3):
        s.receive_data(plain("alice", f"wrong{attempt}"))
        drain(s)
        s.provide_credentials(derive_credentials("pw", "SHA-256"))
        events = drain(s)
        assert events[0] == c2s.AuthFailed("PLAIN", "not-authorized")
        if attempt < 2:
            assert events == [events[0]]
    assert events[1] == c2s.Closed(c2s.StreamCondition.POLICY_VIOLATION, by_peer=False)
    assert b"<policy-violation" in s.data_to_send()


def test_aborted_exchanges_are_not_failed_guesses():
    s = stream(direct_tls=True, max_auth_failures=2)
    s.receive_data(HEADER)
    drain(s)
    for _ in range(5):
        s.receive_data(
            b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-256'>"
            + base64.b64encode(b"n,,n=alice,r=abcdefgh")
            + b"</auth>"
        )
        drain(s)
        s.provide_credentials(derive_credentials("pw", "SHA-256"))
        s.receive_data(b"<abort xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>")
        assert drain(s) == [c2s.AuthFailed("SCRAM-SHA-256", "aborted")]
    assert s.state is c2s.State.SASL


def test_preauth_elements_have_a_tighter_bound_than_stanzas():
    s = stream(direct_tls=True, preauth_stanza_size=2048, max_stanza_size=65536)
    s.receive_data(HEADER)
    drain(s)
    s.receive_data(
        b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>"
        + b"A" * 8000
        + b"</auth>"
    )
    (ev,) = drain(s)
    assert ev == c2s.Closed(c2s.StreamCondition.POLICY_VIOLATION, by_peer=False)
    # after authentication the stanza bound applies
    s = stream(direct_tls=True, preauth_stanza_size=2048, max_stanza_size=65536)
    _authenticated(s)
    s.receive_data(HEADER)
    drain(s)
    s.receive_data(
        b"<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
        b"<resource>r</resource></bind></iq>"
    )
    drain(s)
    s.bind_done(JID.parse("alice@localhost/r"))
    s.receive_data(b"<message><body>" + b"x" * 8000 + b"</body></message>")
    (ev,) = drain(s)
    assert isinstance(ev, c2s.Stanza)


def test_plain_for_an_unknown_user_costs_a_password_derivation(monkeypatch):
    from services.xmpp import sasl

    calls: list[int] = []
    real = sasl._salted_password

    def counting(*args):
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(sasl, "_salted_password", counting)
    s = stream(direct_tls=True)
    s.receive_data(HEADER)
    drain(s)
    s.receive_data(plain("nobody", "pw"))
    drain(s)
    sasl.verify_password_or_decoy("x", None)  # the decoy is made once per process
    calls.clear()
    s.provide_credentials(None)
    assert drain(s) == [c2s.AuthFailed("PLAIN", "not-authorized")]
    assert len(calls) == 1  # as many as for a known user with a wrong password


def test_scram_asks_for_and_authenticates_the_prepared_username():
    import re

    from .test_sasl import ScramClient

    s = stream(direct_tls=True)
    s.receive_data(HEADER)
    drain(s)
    s.data_to_send()
    client = ScramClient("SCRAM-SHA-256", "Alice", "pw")
    s.receive_data(
        b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-256'>"
        + base64.b64encode(client.first())
        + b"</auth>"
    )
    assert drain(s) == [c2s.NeedCredentials("alice", "SHA-256")]
    s.provide_credentials(derive_credentials("pw", "SHA-256"))
    challenge = re.search(rb"<challenge[^>]*>([^<]*)<", s.data_to_send())
    assert challenge is not None
    final = client.final(base64.b64decode(challenge.group(1)))
    s.receive_data(
        b"<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"
        + base64.b64encode(final)
        + b"</response>"
    )
    assert drain(s) == [c2s.Authenticated("alice", "SCRAM-SHA-256")]
