"""Message Carbons (XEP-0280) and the no-copy hint (XEP-0334) against a
RouterService: the feature as the catalog ships it, next to the harness's
usual ones (blocking and offline among them)."""

from __future__ import annotations

import pytest_asyncio
from lxml import etree

from services.core.routing import Envelope
from services.features.catalog import load_features
from services.xmpp import ns
from services.xmpp import stanza as st
from services.xmpp.errors import StanzaCondition, StanzaError
from services.xmpp.jid import JID

from .conftest import HOST, MY_FEATURES, Harness, MakeHarness, assert_error, assert_result, el

CARBONS = "urn:xmpp:carbons:2"
FORWARD = "urn:xmpp:forward:0"
C = f"{{{CARBONS}}}"
CLIENT = f"{{{ns.CLIENT}}}"
ENABLE = f"<enable xmlns='{CARBONS}'/>"
DISABLE = f"<disable xmlns='{CARBONS}'/>"
BOB = JID.parse(f"bob@{HOST}/phone")
ROOM = "room@muc.example.org"


@pytest_asyncio.fixture
async def h(make_harness: MakeHarness) -> Harness:
    # by its short name: a catalog without the module fails every test here
    return await make_harness([*MY_FEATURES, *load_features(["carbons"])])


async def online(h: Harness, resource: str, priority: int = 0, user: str = "alice") -> JID:
    jid = await h.login(f"{user}@{HOST}/{resource}", available=True)
    s = await h.router.sessions.get(jid)
    assert s is not None
    s.priority = priority
    return jid


async def enable(h: Harness, *jids: JID) -> None:
    for jid in jids:
        assert assert_result(await h.iq(jid, "set", el(ENABLE))) is None


def message(
    frm: JID, to: JID | str, type_: str | None = "chat", body: str | None = "hi", *extra: str
) -> etree._Element:
    m = st.make("message", frm=frm, to=to, type_=type_, id_="m1")
    if body is not None:
        etree.SubElement(m, CLIENT + "body").text = body
    for x in extra:
        m.append(el(x))
    return m


async def send(h: Harness, m: etree._Element) -> None:
    frm, to = JID.parse(m.get("from") or ""), JID.parse(m.get("to") or "")
    await h.router.route(Envelope.of(m, frm, to))


def carbons(h: Harness, jid: JID) -> list[etree._Element]:
    return [
        e
        for e in h.delivered(jid)
        if e.find(C + "sent") is not None or e.find(C + "received") is not None
    ]


def plain(h: Harness, jid: JID) -> list[etree._Element]:
    """Deliveries that are messages and no carbon."""
    return [e for e in h.delivered(jid) if e.tag == st.MESSAGE and e not in carbons(h, jid)]


def messages(h: Harness, jid: JID) -> list[etree._Element]:
    return [e for e in h.delivered(jid) if e.tag == st.MESSAGE]


def unwrap(carbon: etree._Element, kind: str, to: JID) -> etree._Element:
    """The forwarded message of a carbon, after checking the wrapper's exact shape."""
    assert carbon.tag == st.MESSAGE
    assert carbon.get("from") == f"alice@{HOST}"  # the user's bare JID (sections 7, 8)
    assert carbon.get("to") == str(to)
    assert len(carbon) == 1, etree.tostring(carbon)
    wrapper = carbon[0]
    assert wrapper.tag == C + kind and len(wrapper) == 1
    fwd = wrapper[0]
    assert fwd.tag == f"{{{FORWARD}}}forwarded" and len(fwd) == 1
    inner = fwd[0]
    assert inner.tag == st.MESSAGE
    return inner


# ---- enabling ---------------------------------------------------------------


async def test_enable_and_disable(h: Harness) -> None:
    a = await online(h, "a")
    reply = await h.iq(a, "set", el(ENABLE))  # no 'to': the account answers
    assert assert_result(reply) is None
    assert reply.get("from") == f"alice@{HOST}" and reply.get("to") == str(a)
    session = await h.router.sessions.get(a)
    assert session is not None and session.flags == {"carbons"}
    assert assert_result(await h.iq(a, "set", el(ENABLE))) is None  # twice: no error (9.1)
    assert assert_result(await h.iq(a, "set", el(DISABLE), to=HOST)) is None  # to the server
    assert session.flags == set()
    assert assert_result(await h.iq(a, "set", el(DISABLE))) is None
    assert assert_result(await h.iq(a, "set", el(ENABLE), to=HOST)) is None
    assert session.flags == {"carbons"}


async def test_enable_is_for_ones_own_session(h: Harness) -> None:
    a = await online(h, "a")
    bob = await h.login(str(BOB))
    assert_error(await h.iq(a, "set", el(ENABLE), to=BOB.bare), "not-allowed", "cancel")
    assert_error(await h.iq(a, "get", el(ENABLE)), "service-unavailable")  # a set only
    s = await h.router.sessions.get(bob)
    assert s is not None and s.flags == set()
    # from no session of this server (as a remote server's IQ would be)
    handler = h.router.features.server_iq[(C + "enable", "set")]
    stranger = Envelope.of(
        el(f"<iq type='set' id='x'>{ENABLE}</iq>"), JID.parse("eve@evil.example/x"), JID.parse(HOST)
    )
    try:
        await handler(h.router, stranger, el(ENABLE))
    except StanzaError as err:
        assert err.condition == StanzaCondition.NOT_ALLOWED
    else:
        raise AssertionError("a stranger enabled carbons")


async def test_disco_advertises_carbons(h: Harness) -> None:
    a = await online(h, "a")
    info = assert_result(await h.iq(a, "get", el(f"<query xmlns='{ns.DISCO_INFO}'/>"), to=HOST))
    assert info is not None
    features = {f.get("var") for f in info.iter(f"{{{ns.DISCO_INFO}}}feature")}
    assert CARBONS in features
    # errors are never copied (see the module), so the full rule set is not claimed
    assert "urn:xmpp:carbons:rules:0" not in features


# ---- received and sent copies ----------------------------------------------


async def test_received_copy_of_a_message_to_a_full_jid(h: Harness) -> None:
    a, b, c = await online(h, "a"), await online(h, "b"), await online(h, "c")
    await enable(h, a, b)  # c never asked
    bob = await h.login(str(BOB))
    original = message(bob, a, "chat", "what man art thou", "<thread>t1</thread>")
    await send(h, original)
    (got,) = messages(h, a)
    assert got.findtext(CLIENT + "body") == "what man art thou" and not carbons(h, a)
    (carbon,) = messages(h, b)
    assert carbon.get("type") == "chat"
    inner = unwrap(carbon, "received", b)
    assert inner.get("from") == str(bob) and inner.get("to") == str(a)
    assert inner.get("type") == "chat" and inner.get("id") == "m1"
    assert inner.findtext(CLIENT + "body") == "what man art thou"
    assert inner.findtext(CLIENT + "thread") == "t1"
    assert messages(h, c) == []
    assert messages(h, bob) == []


async def test_sent_copy_to_the_senders_other_resources(h: Harness) -> None:
    a, b, c = await online(h, "a"), await online(h, "b"), await online(h, "c")
    await enable(h, a, b)
    bob = await h.login(str(BOB))
    await send(h, message(a, bob, "chat", "neither, fair saint"))
    assert [m.findtext(CLIENT + "body") for m in messages(h, bob)] == ["neither, fair saint"]
    assert messages(h, a) == []  # not to the sender itself (section 8)
    assert messages(h, c) == []  # carbons off
    (carbon,) = messages(h, b)
    inner = unwrap(carbon, "sent", b)
    assert inner.get("from") == str(a) and inner.get("to") == str(bob)
    assert inner.findtext(CLIENT + "body") == "neither, fair saint"
    h.edge.sent.clear()
    # the sender needs no carbons of its own for the others to get theirs
    await send(h, message(c, bob.bare, "normal", "from c"))
    for jid in (a, b):
        (carbon,) = messages(h, jid)
        assert carbon.get("type") == "normal"
        inner = unwrap(carbon, "sent", jid)
        assert inner.get("from") == str(c) and inner.get("to") == str(bob.bare)


async def test_a_message_to_the_bare_jid_is_copied_to_who_did_not_get_it(h: Harness) -> None:
    top1, top2 = await online(h, "top1", 5), await online(h, "top2", 5)
    low = await online(h, "low", 1)
    negative = await online(h, "negative", -1)
    away = await h.login(f"alice@{HOST}/away")  # bound, no initial presence
    plain_low = await online(h, "plain", 1)  # no carbons
    await enable(h, top1, top2, low, negative, away)
    bob = await h.login(str(BOB))
    await send(h, message(bob, f"alice@{HOST}", "chat", "to whom it may concern"))
    for jid in (top1, top2):  # RFC 6121: the top priority gets the message itself
        (got,) = messages(h, jid)
        assert got.findtext(CLIENT + "body") == "to whom it may concern" and not carbons(h, jid)
    for jid in (low, negative):
        (carbon,) = messages(h, jid)
        inner = unwrap(carbon, "received", jid)
        assert inner.get("to") == f"alice@{HOST}" and inner.get("from") == str(bob)
    assert messages(h, away) == []  # not available
    assert messages(h, plain_low) == []


async def test_a_message_to_an_absent_resource_is_copied_as_one_to_the_bare_jid(
    h: Harness,
) -> None:
    top, low = await online(h, "top", 2), await online(h, "low", 0)
    await enable(h, top, low)
    bob = await h.login(str(BOB))
    await send(h, message(bob, f"alice@{HOST}/gone", "chat", "where art thou"))
    (got,) = messages(h, top)  # RFC 6121 8.5.3.2.1: as if to the bare JID
    assert not carbons(h, top) and got.get("to") == f"alice@{HOST}/gone"
    (carbon,) = messages(h, low)
    assert unwrap(carbon, "received", low).get("to") == f"alice@{HOST}/gone"


async def test_messages_between_ones_own_resources(h: Harness) -> None:
    a, b, c = await online(h, "a", 1), await online(h, "b", 1), await online(h, "c", 0)
    await enable(h, a, b, c)
    await send(h, message(a, b, "chat", "note"))
    assert carbons(h, b) == [] and len(messages(h, b)) == 1  # the original only
    (carbon,) = messages(h, c)  # one copy, not a sent and a received one
    unwrap(carbon, "sent", c)
    assert messages(h, a) == []
    h.edge.sent.clear()
    # to the account: the top resources get it, the rest a sent copy
    await send(h, message(a, f"alice@{HOST}", "chat", "note to self"))
    assert len(plain(h, a)) == 1 and carbons(h, a) == []
    assert len(plain(h, b)) == 1 and carbons(h, b) == []
    (carbon,) = messages(h, c)
    assert unwrap(carbon, "sent", c).get("to") == f"alice@{HOST}"


async def test_a_message_without_to_is_forwarded_with_its_address(h: Harness) -> None:
    a, b = await online(h, "a", 1), await online(h, "b", 0)
    await enable(h, b)
    m = message(a, f"alice@{HOST}", "chat", "no to")
    del m.attrib["to"]  # as a client may send it: to its own account
    await h.router.route(Envelope.of(m, a, a.bare))
    (carbon,) = messages(h, b)
    inner = unwrap(carbon, "sent", b)
    assert inner.get("to") == f"alice@{HOST}" and inner.get("from") == str(a)


# ---- which messages --------------------------------------------------------


async def test_private_and_no_copy_hints(h: Harness) -> None:
    a, b = await online(h, "a"), await online(h, "b")
    await enable(h, a, b)
    bob = await h.login(str(BOB))
    for hint in (f"<private xmlns='{CARBONS}'/>", "<no-copy xmlns='urn:xmpp:hints'/>"):
        await send(h, message(a, bob, "chat", "sent privately", hint))
        await send(h, message(bob, a, "chat", "received privately", hint))
        assert messages(h, b) == []
        (got,) = messages(h, bob)
        (received,) = messages(h, a)
        for original in (got, received):  # delivered with the hint in place (section 10)
            assert len(original) == 2 and etree.tostring(original[1]) == etree.tostring(el(hint))
        h.edge.sent.clear()


async def test_types_and_payloads(h: Harness) -> None:
    a, b = await online(h, "a"), await online(h, "b")
    await enable(h, a, b)
    bob = await h.login(str(BOB))
    copied = [
        message(bob, a, "chat", None, f"<active xmlns='{ns.CHATSTATES}'/>"),
        message(bob, a, None, "untyped is normal"),
        message(bob, a, "normal", None, "<received xmlns='urn:xmpp:receipts' id='x'/>"),
        message(bob, a, "normal", None, "<displayed xmlns='urn:xmpp:chat-markers:0' id='x'/>"),
        message(bob, a, "normal", None, f"<composing xmlns='{ns.CHATSTATES}'/>"),
        message(bob, a, "normal", None, f"<x xmlns='jabber:x:conference' jid='{ROOM}'/>"),
    ]
    not_copied = [
        message(bob, a, "normal", None, "<subject>no body</subject>"),
        message(bob, a, "normal", None),
        message(bob, a, "headline", "news"),
        message(bob, a, "groupchat", "to a room's occupant"),
        message(
            bob,
            a,
            "error",
            "bounced",
            "<error type='cancel'><gone xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>",
        ),
    ]
    for m in copied:
        await send(h, m)
        (carbon,) = messages(h, b)
        inner = unwrap(carbon, "received", b)
        assert etree.tostring(inner) == etree.tostring(m), etree.tostring(m)
        assert carbon.get("type") == m.get("type")
        h.edge.sent.clear()
    for m in not_copied:
        await send(h, m)
        assert len(messages(h, a)) == 1, etree.tostring(m)  # delivered
        assert messages(h, b) == [], etree.tostring(m)
        h.edge.sent.clear()
    # and the same on the way out
    for m in not_copied:
        m.set("from", str(a))
        m.set("to", str(bob))
        await h.router.route(Envelope.of(m, a, bob))
        assert messages(h, b) == [], etree.tostring(m)
        h.edge.sent.clear()


async def test_muc_private_messages_and_invitations(h: Harness) -> None:
    a, b = await online(h, "a"), await online(h, "b")
    await enable(h, a, b)
    muc_x = "<x xmlns='http://jabber.org/protocol/muc#user'/>"
    occupant = JID.parse(f"{ROOM}/nurse")
    # a private message to an occupant is copied (section 6.1)
    await send(h, message(a, occupant, "chat", "psst", muc_x))
    (carbon,) = messages(h, b)
    assert unwrap(carbon, "sent", b).get("to") == str(occupant)
    h.edge.sent.clear()
    # one from an occupant is not: the room sends it to each joined client
    await send(h, message(occupant, a, "chat", "psst back", muc_x))
    assert len(messages(h, a)) == 1 and messages(h, b) == []
    # a mediated invitation is, body or not
    invite = (
        "<x xmlns='http://jabber.org/protocol/muc#user'>"
        f"<invite from='{BOB}'><reason>join us</reason></invite></x>"
    )
    await send(h, message(JID.parse(ROOM), a, "normal", None, invite))
    (carbon,) = messages(h, b)
    assert unwrap(carbon, "received", b).get("from") == ROOM


async def test_forged_carbons_are_not_copied(h: Harness) -> None:
    """Section 12: a carbon wrapper from someone else reaches the addressed
    client as it is, from its real sender, and is copied nowhere (where it
    would arrive from the user's own bare JID)."""
    a, b = await online(h, "a"), await online(h, "b")
    await enable(h, a, b)
    eve = await h.login(f"eve@{HOST}/home")
    forged = (
        f"<received xmlns='{CARBONS}'><forwarded xmlns='{FORWARD}'>"
        f"<message xmlns='jabber:client' from='{BOB}' to='{a}' type='chat'>"
        "<body>meet me tonight</body></message></forwarded></received>"
    )
    await send(h, message(eve, a, "chat", None, forged))
    (got,) = messages(h, a)
    assert got.get("from") == str(eve)  # not rewritten into one of ours
    assert got.find(C + "received") is not None
    assert messages(h, b) == []
    h.edge.sent.clear()
    # to the bare JID: the top resource gets it, the other no copy
    await send(h, message(eve, a.bare, "chat", None, forged.replace("received", "sent")))
    assert sum(len(messages(h, j)) for j in (a, b)) == 2  # one each: same priority
    assert all(m.get("from") == str(eve) for j in (a, b) for m in messages(h, j))
    h.edge.sent.clear()
    # nor does a client get a carbon made of a wrapper it sends
    await send(h, message(a, eve, "chat", None, forged))
    assert messages(h, b) == [] and len(messages(h, eve)) == 1


async def test_a_blocked_message_is_not_copied(h: Harness) -> None:
    a, b = await online(h, "a"), await online(h, "b")
    await enable(h, a, b)
    eve = await h.login(f"eve@{HOST}/home")
    block = f"<block xmlns='{ns.BLOCKING}'><item jid='eve@{HOST}'/></block>"
    assert assert_result(await h.iq(a, "set", el(block))) is None
    h.edge.sent.clear()
    await send(h, message(eve, a, "chat", "let me in"))
    assert messages(h, a) == [] and messages(h, b) == []
    (err,) = messages(h, eve)
    assert err.get("type") == "error"
    await send(h, message(a, eve, "chat", "go away"))  # refused with <blocked/>
    assert messages(h, b) == []


async def test_disabled_resources_get_nothing(h: Harness) -> None:
    a, b = await online(h, "a"), await online(h, "b")
    await enable(h, a, b)
    assert assert_result(await h.iq(b, "set", el(DISABLE))) is None
    h.edge.sent.clear()
    bob = await h.login(str(BOB))
    await send(h, message(bob, a, "chat", "in"))
    await send(h, message(a, bob, "chat", "out"))
    assert messages(h, b) == []
    assert len(messages(h, a)) == 1
