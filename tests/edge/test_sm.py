"""XEP-0198 stream management on the edge, over raw sockets against the
embedded server: the feature, acknowledgements both ways, the unacknowledged
queue's bound, resumption after a cut socket (and its refusals), and what
becomes of stanzas nobody acknowledged when a session ends."""

from __future__ import annotations

import re
from typing import Any

import pytest

from services.edge.session import ClientSession
from services.xmpp.jid import JID
from tests.conftest import Raw, add_user, wait_until

SM = "urn:xmpp:sm:3"
SM_FEATURE = b"<sm xmlns='urn:xmpp:sm:3'/>"
STREAM_ERR = r"<stream:error><{cond} xmlns=['\"]urn:ietf:params:xml:ns:xmpp-streams['\"]"
ITEM_NOT_FOUND = rb"<failed xmlns='urn:xmpp:sm:3'[^>]*><item-not-found[^>]*/></failed>"
UNEXPECTED = rb"<failed xmlns='urn:xmpp:sm:3'><unexpected-request[^>]*/></failed>"


def _session(srv: Any, jid: str) -> ClientSession:
    (s,) = [s for s in srv.edge.local.values() if str(s.jid) == jid]
    return s


async def _ping(r: Raw, n: int | str) -> bytes:
    """A ping to the server and what was read until its answer."""
    r.send(f"<iq type='get' id='ping{n}' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
    return await r.expect(rf"<iq[^>]*id=\"ping{n}\"[^>]*/>")


async def _enable(r: Raw, resume: bool = True, extra: str = "") -> tuple[bytes, str | None]:
    attrs = " resume='true'" if resume else ""
    r.send(f"<enable xmlns='{SM}'{attrs}{extra}/>")
    out = await r.expect(rb"<enabled [^>]*/>")
    m = re.search(rb"id='([^']+)'", out)
    return out, m.group(1).decode() if m else None


async def _authenticate(r: Raw, user: str = "bob") -> tuple[bytes, bytes]:
    return await r.authenticate(user)


def _message(to: str, body: str) -> str:
    return f"<message to='{to}' type='chat' id='{body}'><body>{body}</body></message>"


async def _send_messages(sender: Raw, to: str, bodies: list[str]) -> None:
    for b in bodies:
        sender.send(_message(to, b))
    await _ping(sender, "sent-" + bodies[-1])


def _bodies(data: bytes) -> list[str]:
    return [b.decode() for b in re.findall(rb"<body>([^<]*)</body>", data)]


def _cut(r: Raw) -> None:
    """The network goes away under the client: no </stream:stream>, no FIN."""
    transport = r.writer.transport
    assert transport is not None
    transport.abort()


async def _nothing_more(r: Raw, wait: float = 0.3) -> None:
    with pytest.raises(TimeoutError):
        await r.expect(b"<(message|presence|iq)", timeout=wait)


async def _users(srv: Any) -> None:
    for name in ("alice", "bob", "carol"):
        await add_user(srv, name)


async def test_feature_after_auth_only(raw: Any) -> None:
    before, after = await _authenticate(await raw())
    assert SM_FEATURE not in before
    assert SM_FEATURE in after
    assert after.index(b"xmpp-bind") < after.index(SM_FEATURE)


async def test_enable_with_and_without_resumption(raw: Any, server: Any) -> None:
    r = await raw()
    jid = await r.login("bob", resource="phone")
    out, smid = await _enable(r, extra=" max='30'")
    # the client asked for less than the server's 300 s: granted
    assert b"resume='true'" in out and b"max='30'" in out and smid
    sess = _session(server, jid)
    assert sess.sm is not None and sess.sm.max == 30
    assert server.edge.resumable[smid] is sess
    r2 = await raw()
    await r2.login("bob", resource="desk")
    out, smid2 = await _enable(r2, resume=False)
    assert out == b"<enabled xmlns='urn:xmpp:sm:3'/>" and smid2 is None
    r3 = await raw()
    await r3.login("bob", resource="laptop")
    out, _ = await _enable(r3, extra=" max='100000'")
    assert b"max='300'" in out  # never more than sm_resume_timeout


async def test_enable_before_bind_and_twice(raw: Any) -> None:
    r = await raw()
    await _authenticate(r)
    r.send(f"<enable xmlns='{SM}' resume='true'/>")
    await r.expect(UNEXPECTED)
    # the stream goes on: the client binds, then enables once
    await r.bind("x", "b1")
    await _enable(r)
    r.send(f"<enable xmlns='{SM}'/>")
    await r.expect(UNEXPECTED)
    await _ping(r, 1)


async def test_client_request_answered_with_the_inbound_count(raw: Any) -> None:
    r = await raw()
    await r.login("bob", resource="phone")
    # stanzas before <enable/> are not counted
    await _ping(r, 0)
    await _enable(r)
    r.send(f"<r xmlns='{SM}'/>")
    await r.expect(rb"<a xmlns='urn:xmpp:sm:3' h='0'/>")
    await _ping(r, 1)
    r.send("<presence type='unavailable'/>")  # a stanza too, with no answer
    await _ping(r, 2)
    r.send(f"<r xmlns='{SM}'/>")
    await r.expect(rb"<a xmlns='urn:xmpp:sm:3' h='3'/>")


async def test_server_requests_acks_and_counts_what_it_wrote(raw: Any, server: Any) -> None:
    bob = await raw()
    jid = await bob.login("bob", resource="phone")
    await _enable(bob)
    alice = await raw()
    await alice.login("alice", resource="a")
    await _send_messages(alice, jid, ["m1", "m2", "m3", "m4", "m5"])
    # after sm_request_every (5) stanzas, <r/> follows the fifth
    got = await bob.expect(rb"<r xmlns='urn:xmpp:sm:3'/>")
    assert _bodies(got) == ["m1", "m2", "m3", "m4", "m5"]
    sm = _session(server, jid).sm
    assert sm is not None and sm.pending == 5 and sm.outbound == 5
    bob.send(f"<a xmlns='{SM}' h='3'/>")
    await _ping(bob, 1)  # its answer is the sixth stanza written
    assert sm.acked == 3 and sm.pending == 3
    assert b">m4</body>" in sm.unacked()[0]
    bob.send(f"<a xmlns='{SM}' h='6'/>")
    await _ping(bob, 2)
    assert sm.pending == 1  # the second ping's answer


async def test_fewer_stanzas_are_asked_for_at_the_keepalive_tick(server_factory: Any) -> None:
    # negotiation_timeout 3 s: a keepalive tick every second
    srv = await server_factory(negotiation_timeout=3.0)
    await _users(srv)
    bob = await Raw.open(srv.c2s_port)
    jid = await bob.login("bob", resource="phone")
    await _enable(bob)
    alice = await Raw.open(srv.c2s_port)
    await alice.login("alice", resource="a")
    await _send_messages(alice, jid, ["only"])
    got = await bob.expect(rb"<r xmlns='urn:xmpp:sm:3'/>", timeout=5)
    assert _bodies(got) == ["only"]
    bob.send(f"<a xmlns='{SM}' h='1'/>")
    await _ping(bob, 1)
    sm = _session(srv, jid).sm
    assert sm is not None and sm.pending == 1  # the ping's answer only
    for r in (alice, bob):
        r.close()


async def test_ack_too_high_is_a_stream_error(raw: Any) -> None:
    r = await raw()
    await r.login("bob", resource="phone")
    await _enable(r)
    await _ping(r, 1)
    r.send(f"<a xmlns='{SM}' h='5'/>")
    got = await r.expect(rb"</stream:error>")
    assert re.search(STREAM_ERR.format(cond="undefined-condition").encode(), got)
    assert b"<handled-count-too-high xmlns='urn:xmpp:sm:3' h='5' send-count='1'/>" in got
    await r.closed()


async def test_resume_after_the_socket_is_cut(raw: Any, server: Any) -> None:
    bob = await raw()
    jid = await bob.login("bob", resource="phone")
    _, smid = await _enable(bob)
    await _ping(bob, "a")  # the client's count: 1
    alice = await raw()
    await alice.login("alice", resource="a")
    await _send_messages(alice, jid, ["m1", "m2", "m3"])
    got = await bob.expect(rb"m3</body>.*?</message>")
    assert _bodies(got) == ["m1", "m2", "m3"]
    old = _session(server, jid)
    sm = old.sm
    assert sm is not None
    _cut(bob)
    await wait_until(lambda: old.detached, what="the session detached")
    # still bound: deliveries go on into its queue
    assert server.edge.local[old.jid] is old and old not in server.edge.sessions
    await _send_messages(alice, jid, ["m4", "m5"])
    assert sm.pending == 6  # the ping's answer, m1 .. m5
    bob2 = await raw()
    await _authenticate(bob2)
    # the client handled the ping's answer and m1
    bob2.send(f"<resume xmlns='{SM}' previd='{smid}' h='2'/>")
    got = await bob2.expect(rb"m5</body>.*?</message>")
    assert got.startswith(f"<resumed xmlns='{SM}' previd='{smid}' h='1'/>".encode())
    # m2 .. m5 exactly once, in order
    assert _bodies(got) == ["m2", "m3", "m4", "m5"]
    await bob2.expect(rb"<r xmlns='urn:xmpp:sm:3'/>")
    await _nothing_more(bob2)
    new = _session(server, jid)
    assert new is not old and new.sm is sm and server.edge.resumable[smid] is new
    assert sm.acked == 2 and sm.pending == 4
    # the resumed stream works both ways, counting on
    bob2.send(_message("alice@localhost/a", "back"))
    await alice.expect(b"back</body>")
    bob2.send(f"<r xmlns='{SM}'/>")
    await bob2.expect(rb"<a xmlns='urn:xmpp:sm:3' h='2'/>")
    await _send_messages(alice, jid, ["m6"])
    await bob2.expect(b"m6</body>")
    assert sm.outbound == 7


async def test_resume_with_h_too_high_is_a_stream_error(raw: Any, server: Any) -> None:
    bob = await raw()
    jid = await bob.login("bob", resource="phone")
    _, smid = await _enable(bob)
    await _ping(bob, 1)
    old = _session(server, jid)
    _cut(bob)
    await wait_until(lambda: old.detached, what="the session detached")
    bob2 = await raw()
    await _authenticate(bob2)
    bob2.send(f"<resume xmlns='{SM}' previd='{smid}' h='9'/>")
    got = await bob2.expect(rb"</stream:error>")
    assert b"<handled-count-too-high xmlns='urn:xmpp:sm:3' h='9' send-count='1'/>" in got
    await bob2.closed()
    # the session waits on, unchanged, for a resume that makes sense
    assert old.detached and server.edge.local[old.jid] is old
    bob3 = await raw()
    await _authenticate(bob3)
    bob3.send(f"<resume xmlns='{SM}' previd='{smid}' h='1'/>")
    await bob3.expect(rb"<resumed [^>]*/>")


async def test_resume_after_the_time_ran_out(server_factory: Any) -> None:
    srv = await server_factory(sm_resume_timeout=1.0)
    await _users(srv)
    bob = await Raw.open(srv.c2s_port)
    jid = await bob.login("bob", resource="phone")
    out, smid = await _enable(bob)
    assert b"max='1'" in out
    alice = await Raw.open(srv.c2s_port)
    await alice.login("alice", resource="a")
    await _send_messages(alice, jid, ["unacked"])
    await bob.expect(b"unacked</body>")
    old = _session(srv, jid)
    _cut(bob)
    await wait_until(lambda: old.detached, what="the session detached")
    await wait_until(lambda: old.jid not in srv.edge.local, what="the session ended")
    await wait_until(lambda: srv.edge.unbinding == 0, what="the teardown")
    assert smid not in srv.edge.resumable
    # the message nobody acknowledged is in offline storage
    stored = await srv.store.fetch_offline("localhost", "bob")
    assert [_bodies(m.stanza) for m in stored] == [["unacked"]]
    bob2 = await Raw.open(srv.c2s_port)
    await _authenticate(bob2)
    bob2.send(f"<resume xmlns='{SM}' previd='{smid}' h='1'/>")
    await bob2.expect(ITEM_NOT_FOUND)
    # the client may bind instead, and gets the message with its presence
    await bob2.bind("phone", "b2")
    bob2.send("<presence/>")
    got = await bob2.expect(rb"unacked</body>.*?</message>")
    assert b"urn:xmpp:delay" in got
    for r in (alice, bob, bob2):
        r.close()


async def test_a_second_resume_of_the_same_stream(raw: Any, server: Any) -> None:
    bob = await raw()
    jid = await bob.login("bob", resource="phone")
    _, smid = await _enable(bob)
    old = _session(server, jid)
    _cut(bob)
    await wait_until(lambda: old.detached, what="the session detached")
    bob2 = await raw()
    await _authenticate(bob2)
    bob2.send(f"<resume xmlns='{SM}' previd='{smid}' h='0'/>")
    await bob2.expect(rb"<resumed [^>]*/>")
    # the resumed stream ends cleanly: the session is over, and so is its id
    bob2.send("</stream:stream>")
    await bob2.closed()
    await wait_until(lambda: smid not in server.edge.resumable, what="the session ended")
    bob3 = await raw()
    await _authenticate(bob3)
    bob3.send(f"<resume xmlns='{SM}' previd='{smid}' h='0'/>")
    await bob3.expect(ITEM_NOT_FOUND)
    assert not [s for s in server.edge.local.values() if str(s.jid) == jid]


async def test_resume_while_the_old_stream_is_still_open(raw: Any, server: Any) -> None:
    bob = await raw()
    jid = await bob.login("bob", resource="phone")
    _, smid = await _enable(bob)
    alice = await raw()
    await alice.login("alice", resource="a")
    await _send_messages(alice, jid, ["m1"])
    await bob.expect(b"m1</body>")
    old = _session(server, jid)
    # the client came back before the server noticed its first stream died
    bob2 = await raw()
    await _authenticate(bob2)
    bob2.send(f"<resume xmlns='{SM}' previd='{smid}' h='0'/>")
    got = await bob2.expect(b"m1</body>")
    assert got.startswith(f"<resumed xmlns='{SM}' previd='{smid}' h='0'/>".encode())
    # section 5: the old stream is closed with conflict
    await bob.expect(STREAM_ERR.format(cond="conflict"))
    await bob.closed()
    new = _session(server, jid)
    assert new is not old and old.moved
    await _send_messages(alice, jid, ["m2"])
    await bob2.expect(b"m2</body>")
    # the stream that took it over is resumable in turn, under the same id
    new_sm = new.sm
    assert new_sm is not None
    _cut(bob2)
    await wait_until(lambda: new.detached, what="the session detached")
    bob3 = await raw()
    await _authenticate(bob3)
    bob3.send(f"<resume xmlns='{SM}' previd='{smid}' h='2'/>")
    await bob3.expect(rb"<resumed [^>]*/>")
    await _nothing_more(bob3)
    assert new_sm.pending == 0


async def test_resume_of_another_users_session(raw: Any, server: Any) -> None:
    bob = await raw()
    jid = await bob.login("bob", resource="phone")
    _, smid = await _enable(bob)
    old = _session(server, jid)
    _cut(bob)
    await wait_until(lambda: old.detached, what="the session detached")
    carol = await raw()
    await _authenticate(carol, "carol")
    carol.send(f"<resume xmlns='{SM}' previd='{smid}' h='0'/>")
    await carol.expect(ITEM_NOT_FOUND)
    # bob's session is untouched, carol binds her own
    assert old.detached and server.edge.resumable[smid] is old
    got = await carol.bind("c", "b")
    assert b"carol@localhost/c" in got
    unknown = await raw()
    await _authenticate(unknown)
    unknown.send(f"<resume xmlns='{SM}' previd='no-such-id' h='0'/>")
    await unknown.expect(ITEM_NOT_FOUND)


async def test_unacked_queue_over_the_limit(server_factory: Any) -> None:
    srv = await server_factory(sm_max_unacked=3, sm_request_every=0)
    await _users(srv)
    alice = await Raw.open(srv.c2s_port)
    await alice.login("alice", resource="a")
    # without resumption: the stream is closed, the session ends, and the
    # messages it never acknowledged go to offline storage
    bob = await Raw.open(srv.c2s_port)
    jid = await bob.login("bob", resource="phone")
    await _enable(bob, resume=False)
    await _send_messages(alice, jid, ["m1", "m2", "m3", "m4"])
    got = await bob.expect(rb"</stream:error>")
    assert re.search(STREAM_ERR.format(cond="policy-violation").encode(), got)
    assert b"more than 3 stanzas sent without acknowledgement" in got
    await bob.closed()
    await wait_until(lambda: not srv.edge.local.get(JID.parse(jid)), what="the session ended")
    await wait_until(lambda: srv.edge.unbinding == 0, what="the teardown")
    stored = await srv.store.fetch_offline("localhost", "bob")
    assert [_bodies(m.stanza)[0] for m in stored] == ["m1", "m2", "m3", "m4"]
    # with resumption: the session is kept, its queue with it
    carol = await Raw.open(srv.c2s_port)
    cjid = await carol.login("carol", resource="c")
    await _enable(carol)
    await _send_messages(alice, cjid, ["c1", "c2", "c3", "c4"])
    await carol.expect(rb"policy-violation")
    session = _session(srv, cjid)
    await wait_until(lambda: session.detached, what="the session detached")
    assert session.sm is not None and session.sm.pending == 4
    for r in (alice, bob, carol):
        r.close()


async def test_a_clean_close_routes_unacknowledged_messages_again(raw: Any, server: Any) -> None:
    bob = await raw()
    jid = await bob.login("bob", resource="phone")
    _, smid = await _enable(bob)
    alice = await raw()
    await alice.login("alice", resource="a")
    await _send_messages(alice, jid, ["m1", "m2"])
    await bob.expect(b"m2</body>")
    bob.send(f"<a xmlns='{SM}' h='1'/></stream:stream>")
    await bob.closed()
    await wait_until(lambda: smid not in server.edge.resumable, what="the session ended")
    await wait_until(lambda: server.edge.unbinding == 0, what="the teardown")
    # a clean close is no resumption: the session is gone at once, and the
    # message it never acknowledged is kept offline (m1 was acknowledged)
    assert not [s for s in server.edge.local.values() if str(s.jid) == jid]
    stored = await server.store.fetch_offline("localhost", "bob")
    assert [_bodies(m.stanza) for m in stored] == [["m2"]]


async def test_a_detached_session_is_ended_by_shutdown(raw: Any, server: Any) -> None:
    bob = await raw()
    jid = await bob.login("bob", resource="phone")
    await _enable(bob)
    alice = await raw()
    await alice.login("alice", resource="a")
    await _send_messages(alice, jid, ["before-stop"])
    await bob.expect(b"before-stop</body>")
    old = _session(server, jid)
    _cut(bob)
    await wait_until(lambda: old.detached, what="the session detached")
    await server.edge.stop()
    assert not server.edge.resumable and not server.edge.local
    stored = await server.store.fetch_offline("localhost", "bob")
    assert [_bodies(m.stanza) for m in stored] == [["before-stop"]]
