"""XEP-0198 stream management, sans-IO: the counters and queue of
services/xmpp/sm.py alone, then the client stream machine's transitions
(bytes fed to a C2SStream, as in test_c2s.py)."""

from __future__ import annotations

import random

import pytest
from lxml import etree

from services.xmpp import c2s
from services.xmpp.errors import StanzaCondition, StreamCondition
from services.xmpp.jid import JID
from services.xmpp.sasl import derive_credentials
from services.xmpp.sm import MOD, HandledCountTooHigh, StreamManagement, failed, parse_h

from .test_c2s import HEADER, drain, plain

SM = "urn:xmpp:sm:3"
ENABLE = f"<enable xmlns='{SM}' resume='true' max='60'/>".encode()
R = f"<r xmlns='{SM}'/>".encode()
UNEXPECTED = failed(StanzaCondition.UNEXPECTED_REQUEST)


# ---- the counters and the queue -----------------------------------------------------


def test_out_ack_and_queue() -> None:
    sm = StreamManagement(max_unacked=10)
    for i in range(5):
        assert sm.stanza_out(f"<m{i}/>".encode())
    assert sm.outbound == 5 and sm.pending == 5
    assert sm.unacked_seqs() == [1, 2, 3, 4, 5]
    assert sm.ack(3) == 3
    assert sm.unacked() == [b"<m3/>", b"<m4/>"]
    assert sm.ack(3) == 0  # the same h again: nothing new
    assert sm.ack(1) == 0  # an h behind the last one: stale, ignored
    assert sm.unacked() == [b"<m3/>", b"<m4/>"] and sm.acked == 3
    assert sm.ack(5) == 2 and sm.pending == 0


def test_h_too_high_is_the_xep_stream_error_and_changes_nothing() -> None:
    sm = StreamManagement()
    for _ in range(8):
        sm.stanza_out(b"<m/>")
    sm.ack(2)
    with pytest.raises(HandledCountTooHigh) as info:
        sm.ack(10)
    err = info.value
    assert err.condition is StreamCondition.UNDEFINED_CONDITION
    assert (err.h, err.send_count) == (10, 8)
    assert sm.pending == 6 and sm.acked == 2
    out = err.to_bytes()
    assert out.startswith(b"<stream:error><undefined-condition xmlns=")
    assert b"<handled-count-too-high xmlns='urn:xmpp:sm:3' h='10' send-count='8'/>" in out
    assert b"only sent you 8" in out
    el = err.to_element()
    assert el.find(f"{{{SM}}}handled-count-too-high").get("send-count") == "8"
    # an ack of nothing sent at all
    with pytest.raises(HandledCountTooHigh):
        StreamManagement().ack(1)


def test_inbound_count() -> None:
    sm = StreamManagement()
    for _ in range(3):
        sm.stanza_in()
    assert sm.ack_nonza() == b"<a xmlns='urn:xmpp:sm:3' h='3'/>"


def test_wrap_around_at_2_32() -> None:
    sm = StreamManagement()
    sm.inbound = MOD - 1
    sm.stanza_in()
    assert sm.inbound == 0
    sm.outbound = sm.acked = MOD - 2
    for i in range(4):
        sm.stanza_out(bytes([65 + i]))
    assert sm.unacked_seqs() == [MOD - 1, 0, 1, 2]
    assert sm.ack(0) == 2  # across the wrap
    assert sm.unacked() == [b"C", b"D"]
    assert sm.ack(MOD - 1) == 0  # behind: stale
    with pytest.raises(HandledCountTooHigh):
        sm.ack(3)
    assert sm.resume_from(2) == []


def test_resume_from_acks_then_returns_the_rest_in_order() -> None:
    sm = StreamManagement(resumable=True, max_seconds=60)
    for i in range(6):
        sm.stanza_out(str(i).encode())
    assert sm.resume_from(4) == [b"4", b"5"]
    assert sm.unacked() == [b"4", b"5"]  # kept until acknowledged
    with pytest.raises(HandledCountTooHigh):
        sm.resume_from(7)
    assert sm.take_unacked() == [b"4", b"5"] and sm.pending == 0


def test_bound_and_requests() -> None:
    sm = StreamManagement(max_unacked=3, request_every=2)
    assert sm.stanza_out(b"1") and not sm.want_request()
    assert sm.stanza_out(b"2") and sm.want_request()
    assert sm.request() == b"<r xmlns='urn:xmpp:sm:3'/>" and not sm.want_request()
    assert sm.stanza_out(b"3")
    assert not sm.stanza_out(b"4")  # past the bound, kept all the same
    assert sm.pending == 4
    assert not StreamManagement(request_every=0).want_request()


def test_ids_are_random_and_only_for_resumable_sessions() -> None:
    a, b = StreamManagement(resumable=True), StreamManagement(resumable=True)
    assert a.id and b.id and a.id != b.id and len(a.id) >= 32
    assert StreamManagement().id is None
    assert a.enabled_nonza() == (
        f"<enabled xmlns='{SM}' id='{a.id}' resume='true' max='0'/>".encode()
    )
    assert StreamManagement().enabled_nonza() == f"<enabled xmlns='{SM}'/>".encode()
    assert a.resumed_nonza() == f"<resumed xmlns='{SM}' previd='{a.id}' h='0'/>".encode()


@pytest.mark.parametrize("value", [None, "", "-1", "+1", "1.0", "x", "4294967296", "1 2"])
def test_parse_h_refuses_what_is_not_an_unsigned_int(value: str | None) -> None:
    with pytest.raises(ValueError):
        parse_h(value)


def test_parse_h() -> None:
    assert parse_h("0") == 0 and parse_h(" 4294967295 ") == MOD - 1


@pytest.mark.parametrize("seed", range(20))
def test_random_sequences_against_a_model(seed: int) -> None:
    """Random sends and acks, starting anywhere (wrap included), against a
    plain list: every valid ack leaves exactly the unacknowledged tail, an
    invalid one raises and changes nothing."""
    rnd = random.Random(seed)
    start = rnd.choice([0, MOD - 50, MOD - 1, rnd.randrange(MOD)])
    sm = StreamManagement(max_unacked=10_000)
    sm.outbound = sm.acked = start
    sent: list[tuple[int, bytes]] = []  # (absolute number, data), the model's view
    acked_abs = 0
    for step in range(400):
        if rnd.random() < 0.6:
            data = f"<s{step}/>".encode()
            sm.stanza_out(data)
            sent.append((acked_abs + len(sent) + 1, data))
        else:
            k = rnd.randint(0, len(sent) + 3)
            h = (start + acked_abs + k) % MOD
            if k <= len(sent):
                assert sm.ack(h) == k
                acked_abs += k
                sent = sent[k:]
            else:
                with pytest.raises(HandledCountTooHigh):
                    sm.ack(h)
        assert sm.unacked() == [d for _, d in sent]
        assert sm.pending == len(sent)
        assert sm.acked == (start + acked_abs) % MOD
        assert sm.outbound == (start + acked_abs + len(sent)) % MOD


# ---- the stream machine ------------------------------------------------------------------


def sm_stream(advertise: bool = True) -> c2s.C2SStream:
    extra = [c2s.SM_FEATURE] if advertise else []
    return c2s.C2SStream(
        c2s.StreamConfig(hosts=frozenset({"localhost"}), direct_tls=True, extra_features=extra)
    )


def authenticated(advertise: bool = True) -> c2s.C2SStream:
    """A stream past SASL, its features sent, not bound."""
    s = sm_stream(advertise)
    s.receive_data(HEADER)
    drain(s)
    s.receive_data(plain("alice", "pw"))
    drain(s)
    s.provide_credentials(derive_credentials("pw", "SHA-256"))
    drain(s)
    s.receive_data(HEADER)
    drain(s)
    features = s.data_to_send()
    assert (c2s.SM_FEATURE in features) is advertise
    assert s.state is c2s.State.BIND
    return s


def bound(advertise: bool = True) -> c2s.C2SStream:
    s = authenticated(advertise)
    s.receive_data(b"<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
    assert drain(s) == [c2s.BindRequest(None)]
    s.bind_done(JID.parse("alice@localhost/r"))
    s.data_to_send()
    return s


def test_enable_then_requests_and_acks() -> None:
    s = bound()
    # a stanza before <enable/> is not counted
    s.receive_data(b"<message to='bob@localhost'><body>0</body></message>" + ENABLE)
    (before, ev) = drain(s)
    assert isinstance(before, c2s.Stanza)
    assert ev == c2s.SmEnable(resume=True, max=60)
    sm = StreamManagement(resumable=True, max_seconds=60)
    s.sm_enabled(sm)
    assert s.data_to_send() == sm.enabled_nonza()
    s.receive_data(
        b"<message to='bob@localhost'><body>1</body></message>"
        b"<presence/>"
        b"<iq type='get' id='1'><ping xmlns='urn:xmpp:ping'/></iq>"
        b"<foo/>" + R + b"<a xmlns='urn:xmpp:sm:3' h='0'/>"
        b"<message to='bob@localhost'><body>2</body></message>"
    )
    events = drain(s)
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["Stanza"] * 4 + ["SmRequest", "SmAck", "Stanza"]
    assert events[5] == c2s.SmAck(0)
    # three stanzas and the last message; not the unknown element, nor nonzas
    assert sm.inbound == 4


def test_enable_not_advertised_is_an_unknown_element() -> None:
    s = bound(advertise=False)
    s.receive_data(ENABLE)
    (ev,) = drain(s)
    # the owner's stanza check answers it (unsupported-stanza-type), as before
    assert isinstance(ev, c2s.Stanza)
    s2 = authenticated(advertise=False)
    s2.receive_data(b"<resume xmlns='urn:xmpp:sm:3' previd='x' h='0'/>")
    (closed,) = drain(s2)
    assert closed == c2s.Closed(StreamCondition.UNSUPPORTED_STANZA_TYPE, by_peer=False)


def test_enable_before_bind_and_twice_fail_with_unexpected_request() -> None:
    s = authenticated()
    s.receive_data(ENABLE)
    assert drain(s) == []
    assert s.data_to_send() == UNEXPECTED
    assert s.state is c2s.State.BIND  # the client may still bind
    s.receive_data(b"<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
    assert drain(s) == [c2s.BindRequest(None)]
    s.bind_done(JID.parse("alice@localhost/r"))
    s.data_to_send()
    s.receive_data(ENABLE)
    assert drain(s) == [c2s.SmEnable(True, 60)]
    s.sm_enabled(StreamManagement())
    s.data_to_send()
    s.receive_data(ENABLE)
    assert drain(s) == []
    assert s.data_to_send() == UNEXPECTED
    assert s.state is c2s.State.ESTABLISHED


def test_enable_attributes() -> None:
    s = bound()
    s.receive_data(f"<enable xmlns='{SM}'/>".encode())
    assert drain(s) == [c2s.SmEnable(resume=False, max=None)]
    s = bound()
    s.receive_data(f"<enable xmlns='{SM}' resume='1' max='soon'/>".encode())
    assert drain(s) == [c2s.SmEnable(resume=True, max=None)]


def test_requests_and_acks_before_enable_are_refused() -> None:
    for data in (R, f"<a xmlns='{SM}' h='0'/>".encode()):
        s = bound()
        s.receive_data(data)
        (ev,) = drain(s)
        assert ev == c2s.Closed(StreamCondition.UNSUPPORTED_STANZA_TYPE, by_peer=False)


def test_an_ack_without_a_valid_h_is_invalid_xml() -> None:
    s = bound()
    s.receive_data(ENABLE)
    drain(s)
    s.sm_enabled(StreamManagement())
    s.receive_data(f"<a xmlns='{SM}' h='-3'/>".encode())
    (ev,) = drain(s)
    assert ev == c2s.Closed(StreamCondition.INVALID_XML, by_peer=False)


def test_resume_waits_for_the_owner_then_goes_established_without_bind() -> None:
    s = authenticated()
    s.receive_data(
        f"<resume xmlns='{SM}' previd='abc' h='7'/>".encode()
        + b"<message to='bob@localhost'><body>after</body></message>"
    )
    assert drain(s) == [c2s.SmResume("abc", 7)]
    assert s.state is c2s.State.RESUME_WAIT
    assert drain(s) == []  # paused: the message waits
    sm = StreamManagement(resumable=True, id="abc")
    sm.inbound = 41
    s.resumed(JID.parse("alice@localhost/r"), sm)
    assert s.state is c2s.State.ESTABLISHED and s.jid == JID.parse("alice@localhost/r")
    assert s.data_to_send() == f"<resumed xmlns='{SM}' previd='abc' h='41'/>".encode()
    (ev,) = drain(s)
    assert isinstance(ev, c2s.Stanza)
    assert sm.inbound == 42  # counted on from the old session's count
    # resumed: a second enable or resume is unexpected
    s.receive_data(ENABLE + f"<resume xmlns='{SM}' previd='abc' h='0'/>".encode())
    assert drain(s) == []
    assert s.data_to_send() == UNEXPECTED + UNEXPECTED


def test_resume_failed_lets_the_client_bind() -> None:
    s = authenticated()
    s.receive_data(f"<resume xmlns='{SM}' previd='gone' h='0'/>".encode())
    drain(s)
    s.resume_failed(h=3)
    out = s.data_to_send()
    assert (
        out
        == (
            f"<failed xmlns='{SM}' h='3'><item-not-found "
            "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></failed>"
        ).encode()
    )
    assert etree.fromstring(out).tag == f"{{{SM}}}failed"
    assert s.state is c2s.State.BIND
    s.receive_data(b"<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
    assert drain(s) == [c2s.BindRequest(None)]


@pytest.mark.parametrize(
    "attrs", ["h='1'", "previd='x'", "previd='x' h='x'", "previd='' h='1'", "previd='x' h='-1'"]
)
def test_resume_without_previd_or_h_is_a_bad_request(attrs: str) -> None:
    s = authenticated()
    s.receive_data(f"<resume xmlns='{SM}' {attrs}/>".encode())
    assert drain(s) == []
    assert s.data_to_send() == failed(StanzaCondition.BAD_REQUEST)
    assert s.state is c2s.State.BIND


def test_resume_after_bind_is_unexpected() -> None:
    s = bound()
    s.receive_data(f"<resume xmlns='{SM}' previd='abc' h='0'/>".encode())
    assert drain(s) == []
    assert s.data_to_send() == UNEXPECTED
