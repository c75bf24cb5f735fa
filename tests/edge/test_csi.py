"""XEP-0352 client state indication on the edge.

First the sans-IO queue (services/edge/csi.py) without sockets: what is
held, how it collapses, what flushes it, its bounds and its order. Then the
stream over raw sockets against the embedded server: the feature, the
nonzas before and after binding, what an inactive client is sent, and the
bytes a phone is spared.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

import pytest

from services.edge.csi import CsiQueue, hold_key
from services.edge.session import ClientSession
from tests.conftest import Raw, add_user, wait_until
from tests.webclient import WsClient

CHATSTATES = "http://jabber.org/protocol/chatstates"
CSI_FEATURE = b"<csi xmlns='urn:xmpp:csi:0'/>"
INACTIVE = "<inactive xmlns='urn:xmpp:csi:0'/>"
ACTIVE = "<active xmlns='urn:xmpp:csi:0'/>"


# ---- stanzas as the router delivers them (lxml's serialization) --------------


def presence(frm: str, status: str = "", typ: str | None = None, **attrs: str) -> bytes:
    a = "".join(f' {k}="{v}"' for k, v in attrs.items())
    t = f' type="{typ}"' if typ else ""
    inner = f"<status>{status}</status>" if status else ""
    return (
        f'<presence xmlns="jabber:client" from="{frm}" to="bob@localhost/phone"{t}{a}>'
        f"{inner}</presence>"
    ).encode()


def message(frm: str, inner: str, typ: str = "chat", **attrs: str) -> bytes:
    a = "".join(f' {k}="{v}"' for k, v in attrs.items())
    return (
        f'<message xmlns="jabber:client" from="{frm}" to="bob@localhost/phone"'
        f' type="{typ}"{a}>{inner}</message>'
    ).encode()


def state(name: str) -> str:
    return f'<{name} xmlns="{CHATSTATES}"/>'


def iq(frm: str) -> bytes:
    return (
        f'<iq xmlns="jabber:client" from="{frm}" to="bob@localhost/phone" type="get" id="v1">'
        '<query xmlns="jabber:iq:version"/></iq>'
    ).encode()


def carbon(direction: str, frm: str, to: str, inner: str) -> bytes:
    """A XEP-0280 copy, from bob's bare JID to the phone, of a message between
    ``frm`` and ``to``."""
    return message(
        "bob@localhost",
        f'<{direction} xmlns="urn:xmpp:carbons:2"><forwarded xmlns="urn:xmpp:forward:0">'
        f'<message xmlns="jabber:client" from="{frm}" to="{to}" type="chat">{inner}</message>'
        f"</forwarded></{direction}>",
    )


A, B, C = "alice@localhost/a", "carol@localhost/c", "dave@localhost/d"
DESK = "bob@localhost/desk"


# ---- the sans-IO queue ----------------------------------------------------------


def test_what_is_held_and_what_is_important() -> None:
    held = [
        presence(A),
        presence(A, "away"),
        presence(A, typ="unavailable"),
        message(A, state("composing")),
        message(A, state("paused"), typ="groupchat"),
        message(A, "<thread>t1</thread>" + state("active")),
        message(A, state("composing") + '<no-store xmlns="urn:xmpp:hints"/>'),
        message(A, state("composing") + '<origin-id xmlns="urn:xmpp:sid:0" id="x"/>'),
        # a prefixed serialization is the same stanza
        b'<cl:presence xmlns:cl="jabber:client" from="alice@localhost/a"/>',
        # single quotes, as a hand-written stanza would have them
        b"<presence xmlns='jabber:client' from='alice@localhost/a'/>",
        # what alice types to bob's desktop, copied to the phone
        carbon("received", A, DESK, state("composing")),
        carbon("received", A, DESK, state("paused")),
    ]
    for data in held:
        assert hold_key(data) is not None, data
    important = [
        presence(A, typ="subscribe"),
        presence(A, typ="subscribed"),
        presence(A, typ="unsubscribed"),
        presence(A, typ="error"),
        presence(A, typ="probe"),
        b'<presence xmlns="jabber:client"/>',  # no sender to collapse by
        message(A, "<body>hi</body>"),
        message(A, "<body>hi</body>" + state("active")),
        message(A, state("composing") + '<request xmlns="urn:xmpp:receipts"/>'),
        message(A, '<encrypted xmlns="eu.siacs.conversations.axolotl"/>' + state("active")),
        message(A, '<encryption xmlns="urn:xmpp:eme:0" namespace="x"/>' + state("active")),
        message(A, "<subject>room</subject>"),
        message(A, ""),  # nothing in it: not a chat state either
        message(A, state("composing"), typ="error"),
        message(A, '<x xmlns="jabber:x:conference" jid="room@conference.localhost"/>'),
        message(A, '<event xmlns="http://jabber.org/protocol/pubsub#event"/>', typ="headline"),
        # bob typing on his desktop: he is busy elsewhere, the phone may
        # clear its notifications
        carbon("sent", DESK, A, state("composing")),
        carbon("received", A, DESK, "<body>hi</body>"),
        carbon("received", A, DESK, state("active") + '<request xmlns="urn:xmpp:receipts"/>'),
        iq(A),
        b"<foo/>",
        b" ",
        b"not xml at all",
        b'<message xmlns="jabber:client" from="alice@localhost/a"><composing',  # broken
    ]
    for data in important:
        assert hold_key(data) is None, data


def test_collapsing_key_is_the_sender_and_kind() -> None:
    assert hold_key(presence(A)) == hold_key(presence(A, typ="unavailable"))
    assert hold_key(presence(A)) != hold_key(presence(B))
    assert hold_key(presence(A)) != hold_key(message(A, state("composing")))
    assert hold_key(message(A, state("composing"))) == hold_key(message(A, state("paused")))
    # carbons collapse by the conversation they copy
    c1 = hold_key(carbon("received", A, DESK, state("composing")))
    assert c1 == hold_key(carbon("received", A, DESK, state("paused")))
    assert c1 != hold_key(carbon("received", B, DESK, state("paused")))
    assert c1 != hold_key(carbon("received", A, "bob@localhost/laptop", state("paused")))
    assert c1 != hold_key(message(A, state("paused")))
    # another attribute's value cannot pose as the sender: a value never
    # contains its own quote, so the scan takes attributes one by one
    forged = presence(A, id="x&quot; from=&quot;carol@localhost/c", name="a' from='evil")
    assert hold_key(forged) == hold_key(presence(A))


def test_active_queue_passes_everything_through() -> None:
    q = CsiQueue()
    assert q.active
    for data in (presence(A), message(A, state("composing")), iq(A)):
        assert q.push(data) == [data]
    assert q.held == 0


def test_inactive_holds_presence_and_keeps_the_latest_per_sender() -> None:
    q = CsiQueue()
    q.set_inactive()
    assert not q.active
    p1, p2, p3 = presence(A, "1"), presence(A, "2"), presence(A, typ="unavailable")
    pb = presence(B, "b")
    for data in (p1, pb, p2, p3):
        assert q.push(data) == []
    assert q.held == 2
    assert q.held_bytes == len(pb) + len(p3)
    body = message(C, "<body>hi</body>")
    # the important one comes after what was held, which keeps arrival order:
    # B's presence came before A's unavailable, the last of A's
    assert q.push(body) == [pb, p3, body]
    assert q.held == 0 and q.held_bytes == 0
    assert not q.active  # still inactive: holding goes on
    assert q.push(presence(A, "again")) == []


def test_chat_states_are_held_one_per_sender_beside_presence() -> None:
    q = CsiQueue()
    q.set_inactive()
    c1 = message(A, state("composing"))
    pa = presence(A, "here")
    c2 = message(A, state("paused"))
    cb = message(B, state("composing"))
    for data in (c1, pa, c2, cb):
        assert q.push(data) == []
    # A's presence and chat state are kept apart; the later chat state
    # replaced the earlier and took its own place, after the presence, so
    # A's stanzas still arrive in the order A sent them
    assert q.set_active() == [pa, c2, cb]
    assert q.active


def test_replacement_takes_its_own_place_in_arrival_order() -> None:
    q = CsiQueue()
    q.set_inactive()
    a1, b1, a2 = presence(A, "1"), presence(B, "1"), presence(A, "2")
    for data in (a1, b1, a2):
        q.push(data)
    assert q.flush() == [b1, a2]


def test_important_stanzas_flush_in_order() -> None:
    for important in (iq(A), message(B, "<body>x</body>"), presence(C, typ="subscribe")):
        q = CsiQueue()
        q.set_inactive()
        held = [presence(A, "1"), message(B, state("composing")), presence(C, "c")]
        for data in held:
            q.push(data)
        assert q.push(important) == [*held, important]


def test_active_flushes_and_stops_holding() -> None:
    q = CsiQueue()
    q.set_inactive()
    p, c = presence(A, "1"), message(A, state("composing"))
    q.push(p)
    q.push(c)
    assert q.set_active() == [p, c]
    assert q.set_active() == []
    assert q.push(presence(A, "2")) == [presence(A, "2")]


def test_client_activity_flushes_but_stays_inactive() -> None:
    q = CsiQueue()
    q.set_inactive()
    p = presence(A, "1")
    q.push(p)
    assert q.flush() == [p]
    assert q.flush() == []
    assert not q.active
    assert q.push(presence(A, "2")) == []


def test_bound_on_held_stanzas() -> None:
    q = CsiQueue(max_held=3)
    q.set_inactive()
    ps = [presence(f"u{i}@localhost/r", "x") for i in range(3)]
    for p in ps:
        assert q.push(p) == []
    # replacing one does not grow the queue
    newer = presence("u0@localhost/r", "y")
    assert q.push(newer) == []
    assert q.held == 3
    # a fourth sender is past the bound: everything goes, in order
    fourth = presence("u3@localhost/r", "x")
    assert q.push(fourth) == [ps[1], ps[2], newer, fourth]
    assert q.held == 0 and not q.active


def test_bound_on_held_bytes() -> None:
    p1, p2 = presence(A, "a" * 100), presence(B, "b" * 100)
    q = CsiQueue(max_held=256, max_bytes=len(p1) + len(p2) - 1)
    q.set_inactive()
    assert q.push(p1) == []
    assert q.push(p2) == [p1, p2]
    assert q.held_bytes == 0


def test_zero_holds_nothing() -> None:
    q = CsiQueue(max_held=0)
    q.set_inactive()
    p = presence(A)
    assert q.push(p) == [p]


def test_drop_forgets_what_is_held() -> None:
    q = CsiQueue()
    q.set_inactive()
    q.push(presence(A))
    q.push(message(B, state("composing")))
    assert q.drop() == 2
    assert q.held == 0 and q.held_bytes == 0
    assert q.set_active() == []


# ---- the stream, over raw sockets ----------------------------------------------------

STREAM_ERR = r"<stream:error><{cond} xmlns=['\"]urn:ietf:params:xml:ns:xmpp-streams['\"]"


def _session(srv: Any, jid: str) -> ClientSession:
    (s,) = [s for s in srv.edge.local.values() if str(s.jid) == jid]
    return s


def _held(srv: Any, jid: str) -> int:
    csi = _session(srv, jid).csi
    return csi.held if csi is not None else -1


async def _ping(r: Raw, n: int) -> bytes:
    """A ping to the server and its answer (what was read until then):
    everything the client sent before it has been handled."""
    r.send(f"<iq type='get' id='ping{n}' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
    return await r.expect(rf"<iq[^>]*id=\"ping{n}\"[^>]*/>")


async def _nothing_more(r: Raw, wait: float = 0.3) -> None:
    with pytest.raises(TimeoutError):
        await r.expect(b"<(presence|message)", timeout=wait)


def _stanzas(data: bytes) -> list[ET.Element]:
    root = ET.fromstring(b"<r xmlns='jabber:client'>" + data + b"</r>")
    return list(root)


async def _authenticate(r: Raw, user: str = "bob") -> tuple[bytes, bytes]:
    return await r.authenticate(user)


async def test_feature_after_auth_only(raw: Any) -> None:
    before, after = await _authenticate(await raw())
    assert b"urn:xmpp:csi:0" not in before
    assert CSI_FEATURE in after
    assert after.index(b"xmpp-bind") < after.index(CSI_FEATURE)


@pytest.mark.parametrize("where", ["before-auth", "before-bind"])
async def test_nonzas_before_binding_are_refused_and_accepted_after(
    raw: Any, server: Any, where: str
) -> None:
    r = await raw()
    if where == "before-bind":
        await _authenticate(r)
    else:
        await r.starttls()
        r.header()
        await r.expect(b"</stream:features>")
    r.send(INACTIVE)
    # what any unknown first-level element gets there today (RFC 6120
    # 4.9.3.25): CSI is a feature of bound streams only
    await r.expect(STREAM_ERR.format(cond="unsupported-stanza-type"))
    rest = await r.closed()
    assert rest.endswith(b"</stream:error></stream:stream>"), rest
    # once bound, both nonzas are taken without a reply
    ok = await raw()
    jid = await ok.login("bob", resource="phone")
    ok.buf = b""
    ok.send(INACTIVE)
    got = await _ping(ok, 1)
    csi = _session(server, jid).csi
    assert csi is not None and not csi.active
    ok.send(ACTIVE)
    got += await _ping(ok, 2)
    assert csi.active
    # nothing but the two pings' answers
    assert got.count(b"<") == 2 and got.count(b"<iq") == 2, got


async def _inactive_phone(raw: Any) -> tuple[Raw, str, Raw]:
    """bob/phone, bound and inactive (the ping's answer says the server
    took <inactive/>), and alice/a, bound, to send to it."""
    bob = await raw()
    phone = await bob.login("bob", resource="phone")
    alice = await raw()
    await alice.login("alice", resource="a")
    bob.send(INACTIVE)
    await _ping(bob, 1)
    return bob, phone, alice


async def test_inactive_holds_presence_until_a_message_with_a_body(raw: Any, server: Any) -> None:
    bob, phone, alice = await _inactive_phone(raw)
    for status in ("one", "two", "three"):
        alice.send(f"<presence to='{phone}'><status>{status}</status></presence>")
    alice.send(
        f"<message to='{phone}' type='chat'><composing xmlns='{CHATSTATES}'/></message>"
        f"<message to='{phone}' type='chat'><paused xmlns='{CHATSTATES}'/></message>"
    )
    await _ping(alice, 1)
    assert _held(server, phone) == 2
    await _nothing_more(bob)
    alice.send(f"<message to='{phone}' type='chat' id='m1'><body>wake up</body></message>")
    got = await bob.expect(rb"wake up</body>.*?</message>")
    stanzas = _stanzas(got[got.index(b"<presence") :])
    assert [s.tag.split("}")[1] for s in stanzas] == ["presence", "message", "message"]
    assert stanzas[0].findtext("{jabber:client}status") == "three"
    assert stanzas[1].find(f"{{{CHATSTATES}}}paused") is not None
    assert stanzas[2].get("id") == "m1"
    assert _held(server, phone) == 0


async def test_active_flushes_what_was_held(raw: Any, server: Any) -> None:
    bob, phone, alice = await _inactive_phone(raw)
    alice.send(f"<presence to='{phone}'><status>away now</status></presence>")
    alice.send(f"<presence to='{phone}' type='unavailable'/>")
    await _ping(alice, 1)
    assert _held(server, phone) == 1
    await _nothing_more(bob)
    bob.send(ACTIVE)
    got = await bob.expect(b"<presence[^>]*/>")
    assert b'type="unavailable"' in got and b"away now" not in got
    # active again: the next one comes at once
    alice.send(f"<presence to='{phone}'><status>back</status></presence>")
    await bob.expect(b"back</status>")


async def test_a_stanza_from_the_client_flushes_what_was_held(raw: Any, server: Any) -> None:
    bob, phone, alice = await _inactive_phone(raw)
    alice.send(f"<presence to='{phone}'><status>held</status></presence>")
    await _ping(alice, 1)
    assert _held(server, phone) == 1
    # the ping's answer comes after what was held; holding goes on after it
    bob.send("<iq type='get' id='ping2' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
    got = await bob.expect(rb"<iq[^>]*id=\"ping2\"[^>]*/>")
    assert got.index(b"held</status>") < got.index(b'id="ping2"')
    alice.send(f"<presence to='{phone}'><status>later</status></presence>")
    await _ping(alice, 2)
    assert _held(server, phone) == 1
    await _nothing_more(bob)


async def test_bound_from_the_setting(server_factory: Any) -> None:
    srv = await server_factory(csi_max_held=2)
    for name in ("alice", "bob", "carol", "dave"):
        await add_user(srv, name)
    bob = await Raw.open(srv.c2s_port)
    phone = await bob.login("bob", resource="phone")
    bob.send(INACTIVE)
    await _ping(bob, 1)
    senders = []
    for name in ("alice", "carol"):
        r = await Raw.open(srv.c2s_port)
        await r.login(name, resource="x")
        r.send(f"<presence to='{phone}'><status>{name}</status></presence>")
        await _ping(r, 1)
        senders.append(r)
    assert _held(srv, phone) == 2
    await _nothing_more(bob)
    dave = await Raw.open(srv.c2s_port)
    await dave.login("dave", resource="x")
    dave.send(f"<presence to='{phone}'><status>dave</status></presence>")
    got = await bob.expect(rb"dave</status>.*?</presence>")
    assert [s.findtext("{jabber:client}status") for s in _stanzas(got)] == [
        "alice",
        "carol",
        "dave",
    ]
    for r in (bob, dave, *senders):
        r.close()


async def test_held_stanzas_are_dropped_with_the_session(raw: Any, server: Any) -> None:
    bob, phone, alice = await _inactive_phone(raw)
    alice.send(f"<presence to='{phone}'><status>never sent</status></presence>")
    await _ping(alice, 1)
    session = _session(server, phone)
    assert session.csi is not None and session.csi.held == 1
    bob.send("</stream:stream>")
    rest = await bob.closed()
    assert b"never sent" not in rest
    await wait_until(lambda: session not in server.edge.sessions, what="the session ended")
    assert session.csi.held == 0


async def test_websocket_client_is_held_back_too(server: Any) -> None:
    ws = await WsClient.open(server.http_port)
    phone = await ws.login("bob", resource="phone")
    alice = await Raw.open(server.c2s_port)
    try:
        await alice.login("alice", resource="a")
        await ws.send(INACTIVE)
        await ws.send("<iq type='get' id='p1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        await ws.expect('id="p1"')
        alice.send(f"<presence to='{phone}'><status>held</status></presence>")
        await _ping(alice, 1)
        assert _held(server, phone) == 1
        alice.send(f"<message to='{phone}' type='chat'><body>now</body></message>")
        first = await ws.expect("<presence")
        assert "held</status>" in first
        assert "now</body>" in await ws.expect("<message")
    finally:
        alice.close()
        await ws.close()


# ---- the bytes a phone is spared ---------------------------------------------------------

CONTACTS = ("alice", "carol", "dave", "erin", "frank")
#: of each contact's 16 stanzas, these are chat states (the other 10 presence)
CHAT_STATE_AT = (2, 5, 8, 11, 13, 15)
STATES = ("composing", "paused", "composing", "paused", "composing", "active")
LAST_PRESENCE = 14


async def test_bytes_a_phone_is_spared(raw: Any, server: Any) -> None:
    """Bob has a phone (inactive) and a desktop (active). Five contacts each
    send both 10 presence updates and 6 chat-state-only messages (50 and 30
    in all), then one message with a body: before that message the phone
    gets only each contact's latest presence and chat state, in the order
    they arrived, and far fewer bytes than the desktop."""
    for name in ("erin", "frank"):
        await add_user(server, name)
    phone_r, desk_r = await raw(), await raw()
    phone = await phone_r.login("bob", resource="phone")
    desk = await desk_r.login("bob", resource="desk")
    phone_r.send(INACTIVE)
    await _ping(phone_r, 1)
    await _ping(desk_r, 1)
    contacts = []
    for name in CONTACTS:
        r = await raw()
        await r.login(name, resource="r")
        contacts.append(r)
    for name, r in zip(CONTACTS, contacts, strict=True):
        for n in range(16):
            for to in (phone, desk):  # the same traffic to both
                if n in CHAT_STATE_AT:
                    r.send(
                        f"<message to='{to}' type='chat' id='{name}-cs-{n}'>"
                        f"<{STATES[CHAT_STATE_AT.index(n)]} xmlns='{CHATSTATES}'/></message>"
                    )
                elif name == CONTACTS[-1] and n == LAST_PRESENCE:
                    r.send(f"<presence to='{to}' type='unavailable' id='{name}-p-{n}'/>")
                else:
                    r.send(
                        f"<presence to='{to}' id='{name}-p-{n}'><show>away</show>"
                        f"<status>{name} is away ({n})</status></presence>"
                    )
        # handled in order: all of this contact's traffic is delivered
        await _ping(r, 1)
    desk_seen = await desk_r.expect(rb'id="frank-cs-15".*?</message>')
    kinds = [s.tag.split("}")[1] for s in _stanzas(desk_seen)]
    assert kinds.count("presence") == 50 and kinds.count("message") == 30, kinds
    assert _held(server, phone) == 10
    await _nothing_more(phone_r)
    for to in (phone, desk):
        contacts[0].send(
            f"<message to='{to}' type='chat' id='hello'><body>are you there?</body></message>"
        )
    desk_seen += await desk_r.expect(rb"are you there\?</body>.*?</message>")
    phone_seen = await phone_r.expect(rb"are you there\?</body>.*?</message>")
    got = _stanzas(phone_seen)
    expected = [i for name in CONTACTS for i in (f"{name}-p-{LAST_PRESENCE}", f"{name}-cs-15")]
    assert [s.get("id") for s in got] == [*expected, "hello"]
    # the unavailable replaced frank's available presence
    assert [s.get("type") for s in got if s.tag.endswith("presence")] == [None] * 4 + [
        "unavailable"
    ]
    assert all(s.get("to") == phone for s in got)
    saving = 1 - len(phone_seen) / len(desk_seen)
    print(
        f"\nCSI: inactive phone got {len(phone_seen)} bytes, active desktop "
        f"{len(desk_seen)} bytes for the same traffic: {saving:.0%} spared"
    )
    assert saving > 0.5
