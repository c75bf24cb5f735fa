"""PresenceService and the roster IQ: RFC 6121 sections 2-4, Appendix A, XEP-0237/0256."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import replace

import pytest
from lxml import etree

from services.core.storage import RosterItem
from services.xmpp import ns
from services.xmpp.jid import JID
from tests.presence.conftest import HOST, REMOTE, World, pres, roster_query

# ---- subscription states of RFC 6121 Appendix A ----------------------------

STATES: dict[str, dict[str, object]] = {
    "None": {"subscription": "none"},
    "None+Out": {"subscription": "none", "ask": True},
    "None+In": {"subscription": "none", "pending_in": True},
    "None+Out+In": {"subscription": "none", "ask": True, "pending_in": True},
    "To": {"subscription": "to"},
    "To+In": {"subscription": "to", "pending_in": True},
    "From": {"subscription": "from"},
    "From+Out": {"subscription": "from", "ask": True},
    "Both": {"subscription": "both"},
}


def make_item(jid: str, state: str) -> RosterItem:
    fields = STATES[state]
    stanza = None
    if fields.get("pending_in"):
        stanza = f"<presence xmlns='jabber:client' from='{jid}' type='subscribe'/>".encode()
    # a name keeps "None + Pending In" items visible (a user-made roster entry)
    return RosterItem(jid=jid, name="Contact", pending_in_stanza=stanza, **fields)  # type: ignore[arg-type]


def state_of(item: RosterItem | None) -> str:
    assert item is not None
    for name, fields in STATES.items():
        if (
            item.subscription == fields["subscription"]
            and item.ask == bool(fields.get("ask"))
            and item.pending_in == bool(fields.get("pending_in"))
        ):
            return name
    raise AssertionError(item)


#: a contact on this server without an account: what is routed to it is dropped
#: silently (RFC 6121 8.5.1), so the user's side of each table can be seen alone
CONTACT = f"contact@{HOST}"
#: a contact on another server (unreachable until federation exists)
REMOTE_CONTACT = f"contact@{REMOTE}"


def _with(el: etree._Element, attrs: dict[str, str]) -> etree._Element:
    for k, v in attrs.items():
        el.set(k, v)
    return el


# ---- A.2: outbound subscription stanzas, the user's side ------------------

OUTBOUND = [
    # A.2.1 subscribe (RFC 6121 routes it in every state)
    ("subscribe", "None", True, "None+Out"),
    ("subscribe", "None+Out", True, "None+Out"),
    ("subscribe", "None+In", True, "None+Out+In"),
    ("subscribe", "None+Out+In", True, "None+Out+In"),
    ("subscribe", "To", True, "To"),
    ("subscribe", "To+In", True, "To+In"),
    ("subscribe", "From", True, "From+Out"),
    ("subscribe", "From+Out", True, "From+Out"),
    ("subscribe", "Both", True, "Both"),
    # A.2.2 subscribed (None, None+Out and To become pre-approvals, section 3.4)
    ("subscribed", "None", False, "None"),
    ("subscribed", "None+Out", False, "None+Out"),
    ("subscribed", "None+In", True, "From"),
    ("subscribed", "None+Out+In", True, "From+Out"),
    ("subscribed", "To", False, "To"),
    ("subscribed", "To+In", True, "Both"),
    ("subscribed", "From", False, "From"),
    ("subscribed", "From+Out", False, "From+Out"),
    ("subscribed", "Both", False, "Both"),
    # A.2.3 unsubscribe
    ("unsubscribe", "None", True, "None"),
    ("unsubscribe", "None+Out", True, "None"),
    ("unsubscribe", "None+In", True, "None+In"),
    ("unsubscribe", "None+Out+In", True, "None+In"),
    ("unsubscribe", "To", True, "None"),
    ("unsubscribe", "To+In", True, "None+In"),
    ("unsubscribe", "From", True, "From"),
    ("unsubscribe", "From+Out", True, "From"),
    ("unsubscribe", "Both", True, "From"),
    # A.2.4 unsubscribed
    ("unsubscribed", "None", False, "None"),
    ("unsubscribed", "None+Out", False, "None+Out"),
    ("unsubscribed", "None+In", True, "None"),
    ("unsubscribed", "None+Out+In", True, "None+Out"),
    ("unsubscribed", "To", False, "To"),
    ("unsubscribed", "To+In", True, "To"),
    ("unsubscribed", "From", True, "None"),
    ("unsubscribed", "From+Out", True, "None+Out"),
    ("unsubscribed", "Both", True, "To"),
]


@pytest.mark.parametrize(("typ", "before", "routed", "after"), OUTBOUND)
async def test_outbound_state_table(
    world: World, typ: str, before: str, routed: bool, after: str
) -> None:
    user = await world.account("user")
    await world.put(user, make_item(CONTACT, before))
    me = await world.online(f"{user}/pc")
    world.clear()

    await world.send(me, pres(to=CONTACT, type_=typ))

    item = await world.item(user, CONTACT)
    assert state_of(item) == after
    sent = world.routed_of(typ)
    if routed:
        assert len(sent) == 1
        # stamped with both bare JIDs (RFC 6121 3.1.2)
        assert sent[0].get("from") == str(user)
        assert sent[0].get("to") == CONTACT
    else:
        assert sent == []
    pushes = world.pushes(me)
    if after != before:
        assert len(pushes) == 1
        assert pushes[0].get("jid") == CONTACT
        assert pushes[0].get("subscription") == STATES[after]["subscription"]
        assert (pushes[0].get("ask") == "subscribe") == bool(STATES[after].get("ask"))
    preapproved = typ == "subscribed" and before in ("None", "None+Out", "To")
    assert item is not None and item.approved == preapproved
    if preapproved:
        assert [p.get("approved") for p in pushes] == ["true"]
    elif after == before:
        assert pushes == []


# ---- A.3: inbound subscription stanzas, the contact's side -----------------

INBOUND = [
    # A.3.1 subscribe ("auto" = auto-reply subscribed, not delivered)
    ("subscribe", "None", "yes", "None+In"),
    ("subscribe", "None+Out", "yes", "None+Out+In"),
    ("subscribe", "None+In", "no", "None+In"),
    ("subscribe", "None+Out+In", "no", "None+Out+In"),
    ("subscribe", "To", "yes", "To+In"),
    ("subscribe", "To+In", "no", "To+In"),
    ("subscribe", "From", "auto", "From"),
    ("subscribe", "From+Out", "auto", "From+Out"),
    ("subscribe", "Both", "auto", "Both"),
    # A.3.2 subscribed
    ("subscribed", "None", "no", "None"),
    ("subscribed", "None+Out", "yes", "To"),
    ("subscribed", "None+In", "no", "None+In"),
    ("subscribed", "None+Out+In", "yes", "To+In"),
    ("subscribed", "To", "no", "To"),
    ("subscribed", "To+In", "no", "To+In"),
    ("subscribed", "From", "no", "From"),
    ("subscribed", "From+Out", "yes", "Both"),
    ("subscribed", "Both", "no", "Both"),
    # A.3.3 unsubscribe
    ("unsubscribe", "None", "no", "None"),
    ("unsubscribe", "None+Out", "no", "None+Out"),
    ("unsubscribe", "None+In", "yes", "None"),
    ("unsubscribe", "None+Out+In", "yes", "None+Out"),
    ("unsubscribe", "To", "no", "To"),
    ("unsubscribe", "To+In", "yes", "To"),
    ("unsubscribe", "From", "yes", "None"),
    ("unsubscribe", "From+Out", "yes", "None+Out"),
    ("unsubscribe", "Both", "yes", "To"),
    # A.3.4 unsubscribed
    ("unsubscribed", "None", "no", "None"),
    ("unsubscribed", "None+Out", "yes", "None"),
    ("unsubscribed", "None+In", "no", "None+In"),
    ("unsubscribed", "None+Out+In", "yes", "None+In"),
    ("unsubscribed", "To", "yes", "None"),
    ("unsubscribed", "To+In", "yes", "None+In"),
    ("unsubscribed", "From", "no", "From"),
    ("unsubscribed", "From+Out", "yes", "From"),
    ("unsubscribed", "Both", "yes", "From"),
]


@pytest.mark.parametrize(("typ", "before", "deliver", "after"), INBOUND)
async def test_inbound_state_table(
    world: World, typ: str, before: str, deliver: str, after: str
) -> None:
    user = await world.account("user")
    await world.put(user, make_item(CONTACT, before))
    me = await world.online(f"{user}/pc")
    world.clear()

    await world.inject(_with(pres(to=user, type_=typ, status="hi"), {"from": f"{CONTACT}/res"}))

    item = await world.item(user, CONTACT)
    assert state_of(item) == after
    delivered = world.presences(me, typ)
    if deliver == "yes":
        assert len(delivered) == 1
        # the from is the contact's bare JID, the payload is kept
        assert delivered[0].get("from") == CONTACT
        assert delivered[0].findtext(ns.q(ns.CLIENT, "status")) == "hi"
    else:
        assert delivered == []
    replies = [r for r in world.routed_of("subscribed") if r.get("from") == str(user)]
    if deliver == "auto":
        assert [(r.get("from"), r.get("to")) for r in replies] == [(str(user), CONTACT)]
    else:
        assert replies == []
    if after != before:
        pushes = world.pushes(me)
        assert [p.get("subscription") for p in pushes] == [STATES[after]["subscription"]]
    if typ == "subscribe" and deliver == "yes":
        assert item is not None and item.pending_in_stanza is not None
        stored = etree.fromstring(item.pending_in_stanza)
        assert stored.get("from") == CONTACT and stored.get("to") == str(user)


# ---- whole subscription flows between two local users ----------------------


async def test_subscribe_approve_flow(world: World) -> None:
    alice = await world.account("alice")
    bob = await world.account("bob")
    a = await world.online(f"{alice}/pc", priority=5)
    b = await world.online(f"{bob}/phone")
    world.clear()

    await world.send(a, pres(to=bob, type_="subscribe"))
    assert [(p.get("jid"), p.get("subscription"), p.get("ask")) for p in world.pushes(a)] == [
        (str(bob), "none", "subscribe")
    ]
    req = world.presences(b, "subscribe")
    assert len(req) == 1 and req[0].get("from") == str(alice) and req[0].get("to") == str(bob)
    # the request is not a roster entry of bob's yet (RFC 6121 3.1.3)
    assert world.pushes(b) == []
    got = await world.iq(b, "get", roster_query())
    assert len(got[0]) == 0
    world.clear()

    await world.send(b, pres(to=alice, type_="subscribed"))
    assert [(p.get("jid"), p.get("subscription")) for p in world.pushes(b)] == [
        (str(alice), "from")
    ]
    assert [p.get("subscription") for p in world.pushes(a)] == ["to"]
    assert world.pushes(a)[0].get("ask") is None
    assert len(world.presences(a, "subscribed")) == 1
    # ... followed by bob's current presence
    avail = world.presences(a, None)
    assert [p.get("from") for p in avail] == [str(b)]
    assert state_of(await world.item(alice, bob)) == "To"
    assert state_of(await world.item(bob, alice)) == "From"
    world.clear()

    # and the other way round: both
    await world.send(b, pres(to=alice, type_="subscribe"))
    assert len(world.presences(a, "subscribe")) == 1
    await world.send(a, pres(to=bob, type_="subscribed"))
    assert state_of(await world.item(alice, bob)) == "Both"
    assert state_of(await world.item(bob, alice)) == "Both"
    assert [p.get("from") for p in world.presences(b, None)] == [str(a)]
    prio = world.presences(b, None)[0].findtext(ns.q(ns.CLIENT, "priority"))
    assert prio == "5"

    # now presence flows both ways
    world.clear()
    await world.send(a, pres(status="away"))
    assert [p.findtext(ns.q(ns.CLIENT, "status")) for p in world.presences(b, None)] == ["away"]


async def test_already_subscribed_resync(world: World) -> None:
    """Inbound subscribe when already 'from': auto-reply, which fixes the asker's state."""
    alice = await world.account("alice")
    bob = await world.account("bob")
    await world.put(alice, RosterItem(jid=str(bob), subscription="none"))
    await world.put(bob, RosterItem(jid=str(alice), subscription="from"))
    a = await world.online(f"{alice}/pc")
    b = await world.online(f"{bob}/pc")
    world.clear()
    await world.send(a, pres(to=bob, type_="subscribe"))
    assert world.presences(b, "subscribe") == []
    assert state_of(await world.item(alice, bob)) == "To"
    assert len(world.presences(a, "subscribed")) == 1


async def test_pre_approval(world: World) -> None:
    alice = await world.account("alice")
    bob = await world.account("bob")
    a = await world.online(f"{alice}/pc")
    b = await world.online(f"{bob}/pc")
    world.clear()

    # bob pre-approves alice (RFC 6121 3.4): item created, pushed, not routed
    await world.send(b, pres(to=alice, type_="subscribed"))
    pushes = world.pushes(b)
    assert [(p.get("jid"), p.get("subscription"), p.get("approved")) for p in pushes] == [
        (str(alice), "none", "true")
    ]
    assert world.got(a) == []
    item = await world.item(bob, alice)
    assert item is not None and item.approved
    world.clear()

    # alice subscribes: approved at once, bob never sees the request
    await world.send(a, pres(to=bob, type_="subscribe"))
    assert world.presences(b, "subscribe") == []
    item = await world.item(bob, alice)
    assert item is not None and item.subscription == "from" and not item.approved
    assert [(p.get("subscription"), p.get("approved")) for p in world.pushes(b)] == [("from", None)]
    assert len(world.presences(a, "subscribed")) == 1
    assert [p.get("from") for p in world.presences(a, None)] == [str(b)]
    assert state_of(await world.item(alice, bob)) == "To"


async def test_pre_approval_cancelled(world: World) -> None:
    bob = await world.account("bob")
    b = await world.online(f"{bob}/pc")
    await world.send(b, pres(to=CONTACT, type_="subscribed"))
    world.clear()
    await world.send(b, pres(to=CONTACT, type_="unsubscribed"))
    item = await world.item(bob, CONTACT)
    assert item is not None and not item.approved
    assert world.routed_of("unsubscribed") == []
    assert [p.get("approved") for p in world.pushes(b)] == [None]


async def test_pending_subscription_redelivered(world: World) -> None:
    alice = await world.account("alice")
    await world.inject(
        _with(pres(to=alice, type_="subscribe", status="it's me"), {"from": CONTACT})
    )
    item = await world.item(alice, CONTACT)
    assert item is not None and item.pending_in

    a = await world.bind(f"{alice}/pc")
    got = await world.iq(a, "get", roster_query())
    assert len(got[0]) == 0  # hidden until answered
    world.clear()
    await world.send(a, pres())
    req = world.presences(a, "subscribe")
    assert len(req) == 1
    assert req[0].get("from") == CONTACT
    assert req[0].findtext(ns.q(ns.CLIENT, "status")) == "it's me"

    # an update is not a new login: no second copy
    world.clear()
    await world.send(a, pres(status="x"))
    assert world.presences(a, "subscribe") == []

    # every new available resource gets it again, until answered
    a2 = await world.online(f"{alice}/tablet")
    assert len(world.presences(a2, "subscribe")) == 1

    # denied: the record goes away entirely
    world.clear()
    await world.send(a, pres(to=CONTACT, type_="unsubscribed"))
    assert await world.item(alice, CONTACT) is None
    assert len(world.routed_of("unsubscribed")) == 1
    assert world.pushes(a) == []


async def test_pending_request_withdrawn(world: World) -> None:
    alice = await world.account("alice")
    await world.inject(_with(pres(to=alice, type_="subscribe"), {"from": CONTACT}))
    await world.inject(_with(pres(to=alice, type_="unsubscribe"), {"from": CONTACT}))
    assert await world.item(alice, CONTACT) is None
    a = await world.online(f"{alice}/pc")
    assert world.presences(a, "subscribe") == []


async def test_nonexistent_local_user_ignored(world: World) -> None:
    alice = await world.account("alice")
    a = await world.online(f"{alice}/pc")
    world.clear()
    for typ in (None, "subscribe", "probe", "unavailable"):
        await world.send(a, pres(to=f"nobody@{HOST}", type_=typ))
    # the subscribe did put nobody in alice's roster (pending out), nothing else happened
    assert world.presences(a) == []
    assert [p.get("ask") for p in world.pushes(a)] == ["subscribe"]
    assert await world.store.get_roster_item(HOST, "nobody", str(alice)) is None


# ---- presence broadcast and probes -----------------------------------------


async def _mutual(world: World, user: JID, contact: JID, user_side: str, contact_side: str) -> None:
    await world.put(user, RosterItem(jid=str(contact), subscription=user_side))
    await world.put(contact, RosterItem(jid=str(user), subscription=contact_side))


async def test_broadcast_to_from_and_both_only(world: World) -> None:
    alice = await world.account("alice")
    bob, carol, dave, erin = [await world.account(n) for n in ("bob", "carol", "dave", "erin")]
    await _mutual(world, alice, bob, "from", "to")
    await _mutual(world, alice, carol, "to", "from")
    await _mutual(world, alice, dave, "both", "both")
    await _mutual(world, alice, erin, "none", "none")
    others = {j: await world.online(f"{j}/r") for j in (bob, carol, dave, erin)}
    a2 = await world.online(f"{alice}/second")
    world.clear()

    a = await world.online(f"{alice}/first", priority=3)
    for contact, should in ((bob, True), (carol, False), (dave, True), (erin, False)):
        got = [p.get("from") for p in world.presences(others[contact], None)]
        assert got == ([str(a)] if should else []), contact
    # the user's own resources, including the sender (RFC 6121 4.2.2)
    assert [p.get("from") for p in world.presences(a2, None)] == [str(a)]
    mine = [p for p in world.presences(a, None) if p.get("from") == str(a)]
    assert len(mine) == 1 and mine[0].get("to") == str(a)
    # the probe: presence of carol and dave (subscribed to), not bob's nor erin's
    froms = {p.get("from") for p in world.presences(a, None)} - {str(a), str(a2)}
    assert froms == {str(others[carol]), str(others[dave])}
    session = await world.router.sessions.get(a)
    assert session is not None and session.available and session.priority == 3


async def test_probe_answers_with_last_activity(world: World) -> None:
    alice = await world.account("alice")
    bob = await world.account("bob")
    carol = await world.account("carol")
    await _mutual(world, alice, bob, "to", "from")
    await _mutual(world, alice, carol, "to", "from")
    await world.store.set_last_activity(HOST, "bob", time.time() - 100, "gone fishing")

    a = await world.online(f"{alice}/pc")
    unavailable = world.presences(a, "unavailable")
    # bob: XEP-0256 form; carol: no last activity known, nothing
    assert len(unavailable) == 1
    p = unavailable[0]
    assert p.get("from") == str(bob)
    q = p.find(ns.q(ns.LAST, "query"))
    assert q is not None and 99 <= int(q.get("seconds", "0")) <= 110
    assert p.findtext(ns.q(ns.CLIENT, "status")) == "gone fishing"


async def test_login_probes_take_one_storage_query(world: World) -> None:
    """Fifty contacts online and offline: their rosters and last activity come
    in one query, not a roster lookup (and a last-activity lookup) each."""
    alice = await world.account("alice")
    online: list[JID] = []
    for i in range(50):
        c = await world.account(f"c{i}")
        await _mutual(world, alice, c, "both", "both")
        if i % 2:
            online.append(await world.online(f"{c}/r"))
        else:
            await world.store.set_last_activity(HOST, f"c{i}", time.time() - 60, None)
    calls: list[str] = []
    store = world.router.storage

    class Counting:
        def __getattr__(self, name: str) -> object:
            calls.append(name)
            return getattr(store, name)

    world.router.storage = Counting()  # type: ignore[assignment]
    world.clear()
    a = await world.online(f"{alice}/pc")
    world.router.storage = store
    assert calls.count("roster_entries_for") == 1
    assert "get_roster_item" not in calls and "get_last_activity" not in calls
    assert "get_account" not in calls  # the broadcast skips contacts with no session
    got = world.presences(a, "*")
    available = {p.get("from") for p in got if p.get("type") is None} - {str(a)}
    assert available == {str(j) for j in online}
    assert len([p for p in got if p.get("type") == "unavailable"]) == 25


async def test_concurrent_logins_see_every_contact(world: World) -> None:
    """Twelve users, all contacts of each other, log in at the same moment:
    each gets every contact's presence, at most twice (when a contact's
    broadcast started before the user was available and reached it anyway)."""
    users = [await world.account(f"u{i}") for i in range(12)]
    for u in users:
        for v in users:
            if u != v:
                await world.put(u, RosterItem(jid=str(v), subscription="both"))
    fulls = await asyncio.gather(*(world.online(f"{u}/r") for u in users))
    for me in fulls:
        seen = Counter(p.get("from") for p in world.presences(me, None) if p.get("from") != str(me))
        assert set(seen) == {str(f) for f in fulls if f != me}, me
        assert max(seen.values()) <= 2


async def test_probe_not_answered_for_a_broadcast_that_reaches_the_prober(
    world: World,
) -> None:
    """A contact that broadcast after the prober became available (a higher
    broadcast_seq) reached it with that broadcast: no second copy. One that
    broadcast before is answered as usual."""
    alice = await world.account("alice")
    bob = await world.account("bob")
    await _mutual(world, alice, bob, "both", "both")
    await world.online(f"{await world.account('carol')}/x")  # broadcast_seq 1
    b = await world.online(f"{bob}/desk")
    session = await world.router.sessions.get(b)
    assert session is not None and session.broadcast_seq == 2
    a = await world.bind(f"{alice}/pc")
    item = await world.item(bob, alice)
    world.clear()
    await world.presence._answer_probe(bob, alice, a, (item, None), session.broadcast_seq - 1)
    assert world.presences(a) == []
    await world.presence._answer_probe(bob, alice, a, (item, None), session.broadcast_seq + 1)
    assert [p.get("from") for p in world.presences(a)] == [str(b)]


async def test_probe_to_remote_contact(world: World) -> None:
    alice = await world.account("alice")
    await world.put(alice, RosterItem(jid=REMOTE_CONTACT, subscription="both"))
    await world.online(f"{alice}/pc")
    probes = world.routed_of("probe")
    assert [(p.get("from"), p.get("to")) for p in probes] == [(str(alice), REMOTE_CONTACT)]


async def test_inbound_probe(world: World) -> None:
    alice = await world.account("alice")
    await world.put(alice, RosterItem(jid=CONTACT, subscription="from"))
    await world.put(alice, RosterItem(jid=f"stranger@{REMOTE}", subscription="to"))
    a = await world.online(f"{alice}/pc", priority=1)
    world.clear()

    await world.inject(_with(pres(to=alice, type_="probe"), {"from": CONTACT}))
    replies = world.routed_of(None)
    assert [(r.get("from"), r.get("to")) for r in replies] == [(str(a), CONTACT)]
    assert replies[0].findtext(ns.q(ns.CLIENT, "priority")) == "1"

    world.clear()
    await world.inject(_with(pres(to=alice, type_="probe"), {"from": f"stranger@{REMOTE}"}))
    assert world.routed_of(None) == []

    # offline and known last activity: XEP-0256
    await world.unbind(a)
    world.clear()
    await world.inject(_with(pres(to=alice, type_="probe"), {"from": CONTACT}))
    out = world.routed_of("unavailable")
    assert len(out) == 1 and out[0].get("from") == str(alice)
    assert out[0].find(ns.q(ns.LAST, "query")) is not None


async def test_client_probe_ignored(world: World) -> None:
    alice = await world.account("alice")
    bob = await world.account("bob")
    await _mutual(world, alice, bob, "both", "both")
    a = await world.online(f"{alice}/pc")
    b = await world.online(f"{bob}/pc")
    world.clear()
    await world.send(a, pres(to=bob, type_="probe"))
    assert world.got(a) == [] and world.got(b) == []


async def test_negative_priority_and_offline_flush(world: World) -> None:
    alice = await world.account("alice")
    await world.store.store_offline(
        HOST,
        "alice",
        b"<message xmlns='jabber:client' to='alice@example.com'><body>hi</body></message>",
        time.time(),
        "m1",
    )
    a = await world.online(f"{alice}/pc", priority=-1)
    assert world.got(a, "message") == []
    session = await world.router.sessions.get(a)
    assert session is not None and session.available and session.priority == -1
    assert await world.store.count_offline(HOST, "alice") == 1

    await world.send(a, pres(priority=0))
    msgs = world.got(a, "message")
    assert len(msgs) == 1
    assert msgs[0].find(ns.q(ns.DELAY, "delay")) is not None
    assert await world.store.count_offline(HOST, "alice") == 0


async def test_offline_flush_on_initial_presence_only(world: World) -> None:
    alice = await world.account("alice")
    msg = b"<message xmlns='jabber:client' to='alice@example.com'><body>hi</body></message>"
    await world.store.store_offline(HOST, "alice", msg, time.time(), "m1")
    a = await world.bind(f"{alice}/pc")
    assert world.got(a, "message") == []  # bound, no presence yet
    await world.send(a, pres())
    assert len(world.got(a, "message")) == 1
    await world.store.store_offline(HOST, "alice", msg, time.time(), "m2")
    await world.send(a, pres(status="update"))
    assert len(world.got(a, "message")) == 1


async def test_presence_update_not_to_directed(world: World) -> None:
    alice = await world.account("alice")
    frank = await world.account("frank")
    a = await world.online(f"{alice}/pc")
    f = await world.online(f"{frank}/pc")
    world.clear()

    await world.send(a, pres(to=f, status="hello frank"))
    assert [p.findtext(ns.q(ns.CLIENT, "status")) for p in world.presences(f, None)] == [
        "hello frank"
    ]
    session = await world.router.sessions.get(a)
    assert session is not None and session.directed == {f}
    world.clear()
    await world.send(a, pres(status="general"))
    assert world.presences(f) == []


async def test_directed_presence_unavailable_on_logout(world: World) -> None:
    alice = await world.account("alice")
    frank = await world.account("frank")
    grace = await world.account("grace")
    a = await world.online(f"{alice}/pc")
    f = await world.online(f"{frank}/pc")
    g = await world.online(f"{grace}/pc")
    await world.send(a, pres(to=frank))
    await world.send(a, pres(to=grace))
    await world.send(a, pres(to=grace, type_="unavailable"))
    session = await world.router.sessions.get(a)
    assert session is not None and session.directed == {frank}
    assert len(world.presences(g, "unavailable")) == 1  # the directed one itself
    world.clear()

    await world.unbind(a)
    unav = world.presences(f, "unavailable")
    assert [p.get("from") for p in unav] == [str(a)]
    assert world.presences(g) == []


async def test_directed_to_subscriber_not_doubled(world: World) -> None:
    alice = await world.account("alice")
    bob = await world.account("bob")
    await _mutual(world, alice, bob, "from", "to")
    b = await world.online(f"{bob}/pc")
    a = await world.online(f"{alice}/pc")
    await world.send(a, pres(to=bob, status="just for you"))
    world.clear()
    await world.send(a, pres(type_="unavailable"))
    assert len(world.presences(b, "unavailable")) == 1
    session = await world.router.sessions.get(a)
    assert session is not None and session.directed == set() and not session.available


async def test_unavailable_on_session_gone_and_last_activity(world: World) -> None:
    alice = await world.account("alice")
    bob = await world.account("bob")
    carol = await world.account("carol")
    await _mutual(world, alice, bob, "from", "to")
    await _mutual(world, alice, carol, "to", "from")
    b = await world.online(f"{bob}/pc")
    c = await world.online(f"{carol}/pc")
    a = await world.online(f"{alice}/pc")
    a2 = await world.online(f"{alice}/phone")
    world.clear()

    await world.unbind(a)
    assert [p.get("from") for p in world.presences(b, "unavailable")] == [str(a)]
    assert world.presences(c) == []
    assert [p.get("from") for p in world.presences(a2, "unavailable")] == [str(a)]
    # not the last resource: no last activity yet
    assert await world.store.get_last_activity(HOST, "alice") is None

    # an explicit unavailable with a status, then the stream closes
    world.clear()
    await world.send(a2, pres(type_="unavailable", status="bye"))
    assert [p.findtext(ns.q(ns.CLIENT, "status")) for p in world.presences(b, "unavailable")] == [
        "bye"
    ]
    before = time.time()
    await world.unbind(a2)
    assert len(world.presences(b, "unavailable")) == 1  # no second unavailable
    last = await world.store.get_last_activity(HOST, "alice")
    assert last is not None and last.status == "bye" and last.stamp >= before - 1


async def test_last_activity_without_status(world: World) -> None:
    alice = await world.account("alice")
    a = await world.online(f"{alice}/pc")
    await world.unbind(a)
    last = await world.store.get_last_activity(HOST, "alice")
    assert last is not None and last.status is None


async def test_replaced_session(world: World) -> None:
    alice = await world.account("alice")
    bob = await world.account("bob")
    await _mutual(world, alice, bob, "from", "to")
    b = await world.online(f"{bob}/pc")
    a = await world.online(f"{alice}/pc")
    world.clear()
    a_again = await world.bind(f"{alice}/pc")  # same resource: the old one is replaced
    assert a_again == a
    assert [p.get("from") for p in world.presences(b, "unavailable")] == [str(a)]
    assert await world.store.get_last_activity(HOST, "alice") is None


async def test_inbound_presence_bare_and_full(world: World) -> None:
    alice = await world.account("alice")
    a1 = await world.online(f"{alice}/one")
    a2 = await world.online(f"{alice}/two", priority=-5)
    a3 = await world.bind(f"{alice}/three")  # bound, never available
    world.clear()

    await world.inject(_with(pres(to=alice), {"from": f"{CONTACT}/x"}))
    assert len(world.presences(a1)) == 1
    assert len(world.presences(a2)) == 1  # negative priority still gets presence
    assert world.presences(a3) == []

    world.clear()
    await world.inject(_with(pres(to=a3), {"from": f"{CONTACT}/x"}))
    assert len(world.presences(a3)) == 1
    assert world.presences(a1) == []
    world.clear()
    await world.inject(_with(pres(to=f"{alice}/gone", type_="unavailable"), {"from": CONTACT}))
    assert world.edge.sent == []

    # errors are delivered like other presence
    await world.inject(_with(pres(to=a1, type_="error"), {"from": CONTACT}))
    assert len(world.presences(a1, "error")) == 1


async def test_blocked_contact_presence_dropped(world: World) -> None:
    alice = await world.account("alice")
    bob = await world.account("bob")
    await _mutual(world, alice, bob, "both", "both")
    await world.store.add_blocks(HOST, "alice", [str(bob)])
    world.router.blocks.invalidate(alice)
    b = await world.online(f"{bob}/pc")
    world.clear()
    a = await world.online(f"{alice}/pc")
    assert world.presences(b) == []
    assert [p.get("from") for p in world.presences(a, None)] == [str(a)]
    world.clear()
    await world.send(b, pres(status="hey"))
    assert world.presences(a) == []


async def test_directed_presence_to_a_full_jid_honours_blocking(world: World) -> None:
    """Plain presence to a full JID (a group chat's occupant presence, say)
    is delivered straight to the resource, unless its user blocks the sender."""
    alice = await world.account("alice")
    a = await world.online(f"{alice}/pc")
    room = "lobby@conference.localhost/bob"
    world.clear()
    await world.inject(_with(pres(to=a, status="here"), {"from": room}))
    await world.inject(_with(pres(to=a, type_="unavailable"), {"from": room}))
    assert len(world.presences(a, None)) == 1 and len(world.presences(a, "unavailable")) == 1
    await world.store.add_blocks(HOST, "alice", ["lobby@conference.localhost"])
    world.router.blocks.invalidate(alice)
    world.clear()
    await world.inject(_with(pres(to=a, status="here"), {"from": room}))
    await world.inject(_with(pres(to=a, type_="unavailable"), {"from": room}))
    assert world.presences(a) == []


async def test_remote_broadcast_bounces(world: World) -> None:
    """Remote domains are unreachable for now: the router answers with an error."""
    alice = await world.account("alice")
    await world.put(alice, RosterItem(jid=REMOTE_CONTACT, subscription="from"))
    a = await world.online(f"{alice}/pc")
    errors = world.presences(a, "error")
    assert errors and errors[0].get("from") == REMOTE_CONTACT


# ---- the roster IQ ------------------------------------------------------------


def item_el(
    jid: str, name: str | None = None, groups: tuple[str, ...] = (), **attrs: str
) -> etree._Element:
    el = etree.Element(ns.q(ns.ROSTER, "item"), jid=jid, **attrs)
    if name is not None:
        el.set("name", name)
    for g in groups:
        etree.SubElement(el, ns.q(ns.ROSTER, "group")).text = g
    return el


def set_query(*items: etree._Element) -> etree._Element:
    q = roster_query()
    for i in items:
        q.append(i)
    return q


def error_of(reply: etree._Element) -> str:
    assert reply.get("type") == "error", etree.tostring(reply)
    err = reply.find(ns.q(ns.CLIENT, "error"))
    assert err is not None
    return next(
        etree.QName(c).localname
        for c in err
        if etree.QName(c).namespace == ns.STANZAS_ERR and etree.QName(c).localname != "text"
    )


async def test_roster_get_set_remove_with_versions(world: World) -> None:
    alice = await world.account("alice")
    a1 = await world.bind(f"{alice}/one")
    a2 = await world.bind(f"{alice}/two")  # never asks for the roster: no pushes

    reply = await world.iq(a1, "get", roster_query(ver=""))
    assert reply.get("type") == "result"
    q = reply[0]
    assert len(q) == 0
    ver0 = int(q.get("ver", "-1"))

    reply = await world.iq(a1, "set", set_query(item_el(f"bob@{HOST}", "Bob", ("Friends", "Work"))))
    assert reply.get("type") == "result" and len(reply) == 0
    pushes = world.pushes(a1)
    assert len(pushes) == 1
    assert pushes[0].get("jid") == f"bob@{HOST}"
    assert pushes[0].get("name") == "Bob"
    assert pushes[0].get("subscription") == "none"
    assert [g.text for g in pushes[0]] == ["Friends", "Work"]
    assert world.pushes(a2) == []
    push_iq = next(e for e in world.got(a1, "iq") if e.get("type") == "set")
    assert push_iq.get("from") == str(alice) and push_iq.get("to") == str(a1)
    ver1 = int(push_iq[0].get("ver", "-1"))
    assert ver1 > ver0

    # XEP-0237: same version -> empty result; older -> the full roster
    reply = await world.iq(a1, "get", roster_query(ver=str(ver1)))
    assert reply.get("type") == "result" and len(reply) == 0
    reply = await world.iq(a1, "get", roster_query(ver=str(ver0)))
    items = reply[0]
    assert items.get("ver") == str(ver1)
    assert [(i.get("jid"), i.get("name")) for i in items] == [(f"bob@{HOST}", "Bob")]

    # an update keeps the subscription state; a 'subscription' other than remove is ignored
    item = await world.item(alice, f"bob@{HOST}")
    assert item is not None
    await world.put(alice, replace(item, subscription="to", ask=False))
    world.clear()
    reply = await world.iq(
        a1, "set", set_query(item_el(f"bob@{HOST}", "Robert", subscription="both"))
    )
    assert reply.get("type") == "result"
    item = await world.item(alice, f"bob@{HOST}")
    assert item is not None and item.subscription == "to" and item.name == "Robert"
    assert item.groups == ()
    assert [(p.get("name"), p.get("subscription")) for p in world.pushes(a1)] == [("Robert", "to")]

    # remove
    world.clear()
    reply = await world.iq(a1, "set", set_query(item_el(f"bob@{HOST}", subscription="remove")))
    assert reply.get("type") == "result"
    assert [(p.get("jid"), p.get("subscription")) for p in world.pushes(a1)] == [
        (f"bob@{HOST}", "remove")
    ]
    assert await world.item(alice, f"bob@{HOST}") is None
    # the item was 'to': the contact is told (bob has no account, silently ignored)
    assert [r.get("type") for r in world.routed] == ["unsubscribe"]
    reply = await world.iq(a1, "get", roster_query())
    assert len(reply[0]) == 0


async def test_roster_remove_cancels_both_ways(world: World) -> None:
    alice = await world.account("alice")
    bob = await world.account("bob")
    await _mutual(world, alice, bob, "both", "both")
    a = await world.online(f"{alice}/pc")
    b = await world.online(f"{bob}/pc")
    world.clear()

    reply = await world.iq(a, "set", set_query(item_el(str(bob), subscription="remove")))
    assert reply.get("type") == "result"
    assert await world.item(alice, bob) is None
    assert [p.get("subscription") for p in world.pushes(a)] == ["remove"]
    assert [p.get("type") for p in world.presences(b) if p.get("from") == str(alice)] == [
        "unsubscribe",
        "unsubscribed",
    ]
    assert state_of(await world.item(bob, alice)) == "None"
    assert [p.get("subscription") for p in world.pushes(b)] == ["to", "none"]
    # each side stops seeing the other
    assert [p.get("from") for p in world.presences(b, "unavailable")] == [str(a)]
    assert [p.get("from") for p in world.presences(a, "unavailable")] == [str(b)]


async def test_roster_remove_pending_in_denies(world: World) -> None:
    alice = await world.account("alice")
    await world.put(alice, make_item(CONTACT, "None+In"))
    a = await world.online(f"{alice}/pc")
    world.clear()
    reply = await world.iq(a, "set", set_query(item_el(CONTACT, subscription="remove")))
    assert reply.get("type") == "result"
    assert [r.get("type") for r in world.routed if r.get("from") == str(alice)] == ["unsubscribed"]


LONG = "x" * 1100


@pytest.mark.parametrize(
    ("query", "condition"),
    [
        (set_query(item_el("a@example.com"), item_el("b@example.com")), "bad-request"),
        (set_query(), "bad-request"),
        (set_query(etree.Element(ns.q(ns.ROSTER, "foo"))), "bad-request"),
        (set_query(item_el("@@bad")), "jid-malformed"),
        (set_query(item_el("a@example.com/res")), "jid-malformed"),
        (set_query(item_el("alice@example.com")), "not-allowed"),
        (set_query(item_el("a@example.com", LONG)), "not-acceptable"),
        (set_query(item_el("a@example.com", groups=("g", "g"))), "bad-request"),
        (set_query(item_el("a@example.com", groups=("",))), "not-acceptable"),
        (set_query(item_el("a@example.com", groups=(LONG,))), "not-acceptable"),
        (set_query(item_el("a@example.com", subscription="bogus")), "bad-request"),
        (set_query(item_el("a@example.com", subscription="remove")), "item-not-found"),
    ],
)
async def test_roster_set_errors(world: World, query: etree._Element, condition: str) -> None:
    alice = await world.account("alice")
    a = await world.bind(f"{alice}/pc")
    reply = await world.iq(a, "set", query)
    assert error_of(reply) == condition
    _, items = await world.store.get_roster(HOST, "alice")
    assert items == []


async def test_roster_of_someone_else_forbidden(world: World) -> None:
    alice = await world.account("alice")
    bob = await world.account("bob")
    a = await world.bind(f"{alice}/pc")
    for typ, q in (("get", roster_query()), ("set", set_query(item_el(f"c@{HOST}")))):
        el = etree.Element(ns.q(ns.CLIENT, "iq"), type=typ, id=f"x-{typ}", to=str(bob))
        el.append(q)
        await world.send(a, el)
        reply = next(e for e in world.got(a, "iq") if e.get("id") == f"x-{typ}")
        assert error_of(reply) == "forbidden"


def test_feature_declaration() -> None:
    from services.features import roster

    f = roster.FEATURE
    assert f.name == "roster"
    assert (ns.q(ns.ROSTER, "query"), "get") in f.account_iq
    assert (ns.q(ns.ROSTER, "query"), "set") in f.account_iq
    assert b"<ver xmlns='urn:xmpp:features:rosterver'/>" in f.stream_features
    assert b"<sub xmlns='urn:xmpp:features:pre-approval'/>" in f.stream_features
