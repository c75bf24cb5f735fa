"""One-to-one IM with real slixmpp clients: RFC 6121 section 8 delivery rules,
offline storage, presence and roster, and stanzas the server passes through."""

from __future__ import annotations

import asyncio
import secrets
import xml.etree.ElementTree as ET

import pytest
from slixmpp.exceptions import IqError

from ..conftest import Client, send_initial_presence, wait_until

DELAY = "{urn:xmpp:delay}delay"


async def no_message(c: Client, sender: Client) -> None:
    """``c`` got no message from ``sender`` so far, without sleeping: a marker
    from ``sender`` to ``c``'s full JID must be the next message, since one
    sender's stanzas are routed in order (RFC 6120 10.1): anything sent before
    the marker would arrive before it."""
    marker = f"marker-{secrets.token_hex(4)}"
    sender.send_message(mto=c.boundjid.full, mbody=marker, mtype="chat")
    m = await c.next_message()
    assert m["body"] == marker, f"unexpected message {m}"


async def test_message_to_full_and_bare_jid(connect):
    alice = await connect("alice@localhost/a")
    bob = await connect("bob@localhost/b")
    alice.send_message(mto="bob@localhost/b", mbody="to full", mtype="chat")
    m = await bob.next_message()
    assert m["body"] == "to full" and m["from"] == "alice@localhost/a"
    bob.send_message(mto="alice@localhost", mbody="to bare", mtype="chat")
    m = await alice.next_message()
    assert m["body"] == "to bare" and m["from"] == "bob@localhost/b" and m["type"] == "chat"


async def test_messages_keep_their_order(connect):
    alice = await connect("alice@localhost/a")
    bob = await connect("bob@localhost/b")
    # enough to fill the edge's read backlog, so reading pauses and resumes
    alice.send_raw(
        "".join(
            f"<message to='bob@localhost' type='chat'><body>{i}</body></message>"
            for i in range(2000)
        )
    )
    got = [int((await bob.next_message())["body"]) for _ in range(2000)]
    assert got == list(range(2000))


async def test_bare_jid_goes_to_highest_priority(connect):
    b1 = await connect("bob@localhost/low", presence=False)
    b2 = await connect("bob@localhost/high", presence=False)
    b3 = await connect("bob@localhost/neg", presence=False)
    await send_initial_presence(b1, ppriority=1)
    await send_initial_presence(b2, ppriority=10)
    await send_initial_presence(b3, ppriority=-1)
    alice = await connect("alice@localhost/a")
    alice.send_message(mto="bob@localhost", mbody="who gets it", mtype="chat")
    assert (await b2.next_message())["body"] == "who gets it"
    await no_message(b1, alice)
    await no_message(b3, alice)
    # the negative-priority resource still gets messages to its full JID
    alice.send_message(mto="bob@localhost/neg", mbody="direct", mtype="chat")
    assert (await b3.next_message())["body"] == "direct"


async def test_equal_top_priority_all_receive(connect):
    b1 = await connect("bob@localhost/one")
    b2 = await connect("bob@localhost/two")
    alice = await connect("alice@localhost/a")
    alice.send_message(mto="bob@localhost", mbody="both", mtype="chat")
    assert (await b1.next_message())["body"] == "both"
    assert (await b2.next_message())["body"] == "both"


async def test_only_negative_priority_means_offline_storage(connect):
    neg = await connect("bob@localhost/neg", presence=False)
    await send_initial_presence(neg, ppriority=-5)
    alice = await connect("alice@localhost/a")
    alice.send_message(mto="bob@localhost", mbody="stored", mtype="chat")
    await no_message(neg, alice)
    later = await connect("bob@localhost/later")
    m = await later.next_message()
    assert m["body"] == "stored"


async def test_message_to_absent_resource_is_treated_as_bare(connect):
    bob = await connect("bob@localhost/here")
    alice = await connect("alice@localhost/a")
    alice.send_message(mto="bob@localhost/gone", mbody="rerouted", mtype="chat")
    assert (await bob.next_message())["body"] == "rerouted"


async def test_offline_storage_with_delay_and_xep0160_rules(server, connect):
    alice = await connect("alice@localhost/a")
    alice.send_message(mto="carol@localhost", mbody="one", mtype="chat")
    alice.send_message(mto="carol@localhost", mbody="two")  # normal
    alice.send_message(mto="carol@localhost", mbody="headline", mtype="headline")
    alice.send_raw(
        "<message to='carol@localhost' type='chat'>"
        "<composing xmlns='http://jabber.org/protocol/chatstates'/></message>"
    )
    alice.send_raw(
        "<message to='carol@localhost' type='error'><body>err</body>"
        "<error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>"
    )
    # a last storable one: once three are stored, the five before it were handled
    alice.send_message(mto="carol@localhost", mbody="marker", mtype="chat")
    assert server.store is not None
    await wait_until(lambda: _count_is(server, "carol", 3), what="three stored offline messages")
    carol = await connect("carol@localhost/c")
    got = [await carol.next_message() for _ in range(3)]
    # the marker comes third: nothing else was stored
    assert [m["body"] for m in got] == ["one", "two", "marker"]
    for m in got:
        delay = m.xml.find(DELAY)
        assert delay is not None and delay.get("from") == "localhost"
        assert delay.get("stamp", "").endswith("Z")


async def _count_is(server, user: str, n: int) -> bool:
    return await server.store.count_offline("localhost", user) == n


async def test_offline_quota_keeps_the_first_messages_and_bounces_the_rest(server_factory, connect):
    from ..conftest import add_user

    srv = await server_factory(offline_quota=3)
    for u in ("alice", "bob"):
        await add_user(srv, u)
    alice = await connect("alice@localhost/a", srv=srv)
    for i in range(5):
        alice.send_message(mto="bob@localhost", mbody=f"m{i}", mtype="chat")
    # a sixth, over quota too, bounces by the same path after the others: once
    # its bounce is here, every bounce of m0..m4 is here too (per-sender order)
    alice.send_message(mto="bob@localhost", mbody="marker", mtype="chat")
    bounced = []
    while not bounced or bounced[-1]["body"] != "marker":
        bounced.append(await alice.next_message())
    assert [m["body"] for m in bounced] == ["m3", "m4", "marker"]
    for err in bounced:
        assert err["type"] == "error" and err["error"]["condition"] == "service-unavailable"
        assert err["from"] == "bob@localhost"
    # bob logs in: exactly the first three, in order, with delay stamps
    bob = await connect("bob@localhost/b", srv=srv)
    kept = [await bob.next_message() for _ in range(3)]
    assert [m["body"] for m in kept] == ["m0", "m1", "m2"]
    stamps = []
    for m in kept:
        assert m["type"] == "chat" and m["from"] == "alice@localhost/a"
        delay = m.xml.find(DELAY)
        assert delay is not None and delay.get("from") == "localhost"
        assert delay.get("stamp", "").endswith("Z")
        stamps.append(delay.get("stamp"))
    assert stamps == sorted(stamps)
    # nothing else was stored: a live message after the flush is the next to arrive
    alice.send_message(mto="bob@localhost/b", mbody="live", mtype="chat")
    nxt = await bob.next_message()
    assert nxt["body"] == "live" and nxt.xml.find(DELAY) is None


async def test_non_existing_user(connect):
    alice = await connect("alice@localhost/a")
    alice.send_message(mto="nobody@localhost", mbody="hello?", mtype="chat")
    err = await alice.next_message()
    assert err["type"] == "error" and err["error"]["condition"] == "service-unavailable"
    assert err["from"] == "nobody@localhost"
    iq = alice.make_iq_get(queryxmlns="jabber:iq:version", ito="nobody@localhost")
    with pytest.raises(IqError) as exc:
        await iq.send(timeout=5)
    assert exc.value.iq["error"]["condition"] == "service-unavailable"
    # presence to a non-existing user is silently dropped (RFC 6121 8.5.1)
    alice.send_presence(pto="nobody@localhost", ptype="subscribe")
    # then directed presence to herself, by the same path: it must come first
    alice.send_presence(pto=alice.boundjid.full, pstatus="marker")
    p = await alice.next_presence(
        pred=lambda p: p["from"].bare == "nobody@localhost" or p["status"] == "marker"
    )
    assert p["from"] == alice.boundjid and p["status"] == "marker", p


async def test_iq_to_offline_full_jid_is_service_unavailable(connect):
    alice = await connect("alice@localhost/a")
    iq = alice.make_iq_get(queryxmlns="jabber:iq:version", ito="bob@localhost/nope")
    with pytest.raises(IqError) as exc:
        await iq.send(timeout=5)
    assert exc.value.iq["error"]["condition"] == "service-unavailable"


async def test_iq_between_clients(connect):
    alice = await connect("alice@localhost/a", plugins=("xep_0030", "xep_0092"))
    bob = await connect("bob@localhost/b", plugins=("xep_0030", "xep_0092"))
    info = await alice.plugin["xep_0092"].get_version("bob@localhost/b")
    assert info["software_version"]["name"]
    assert bob.boundjid.full == "bob@localhost/b"


async def test_remote_domain_is_unreachable_without_federation(connect):
    alice = await connect("alice@localhost/a")
    alice.send_message(mto="someone@example.net", mbody="far", mtype="chat")
    err = await alice.next_message()
    assert err["error"]["condition"] == "remote-server-not-found"


# ---- presence and roster -------------------------------------------------------


async def _subscribe_both(alice: Client, bob: Client) -> None:
    for c in (alice, bob):
        c.roster.auto_authorize = True
        c.roster.auto_subscribe = True
    await alice.get_roster()
    await bob.get_roster()
    alice.send_presence_subscription(pto="bob@localhost", ptype="subscribe")
    await wait_until(
        lambda: (
            alice.client_roster["bob@localhost"]["subscription"]
            == bob.client_roster["alice@localhost"]["subscription"]
            == "both"
        ),
        what="mutual subscription",
    )


async def test_subscription_and_presence_broadcast(connect):
    alice = await connect("alice@localhost/a")
    bob = await connect("bob@localhost/b")
    await _subscribe_both(alice, bob)
    # a presence update reaches the contact
    bob.send_presence(pstatus="at lunch", pshow="away")
    p = await alice.next_presence(pred=lambda p: p["status"] == "at lunch")
    assert p["from"] == "bob@localhost/b" and p["show"] == "away"
    # a new resource of alice gets bob's presence (probe on initial presence)
    a2 = await connect("alice@localhost/second")
    p = await a2.next_presence(pred=lambda p: p["from"] == "bob@localhost/b")
    assert p["status"] == "at lunch"
    # bob leaving: both alice resources see unavailable
    bob.disconnect()
    for c in (alice, a2):
        p = await c.next_presence(
            pred=lambda p: p["from"] == "bob@localhost/b" and p["type"] == "unavailable"
        )
        assert p is not None


async def test_unsubscribed_contact_gets_no_presence(connect):
    alice = await connect("alice@localhost/a")
    bob = await connect("bob@localhost/b")
    bob.send_presence(pstatus="secret")
    # then directed presence to alice (RFC 6121 4.6), which she does get: bob's
    # presence stanzas are handled in order, so the broadcast would come first
    bob.send_presence(pto=alice.boundjid.full, pstatus="marker")
    p = await alice.next_presence(pred=lambda p: p["from"].bare == "bob@localhost")
    assert p["status"] == "marker", p


async def test_roster_push_to_all_interested_resources(connect):
    a1 = await connect("alice@localhost/one")
    a2 = await connect("alice@localhost/two")
    await a1.get_roster()
    await a2.get_roster()
    pushed = asyncio.get_running_loop().create_future()
    a2.add_event_handler("roster_update", lambda iq: pushed.done() or pushed.set_result(iq))
    await a1.update_roster("dave@localhost", name="Dave", groups=["Friends"])
    iq = await asyncio.wait_for(pushed, 5)
    item = iq["roster"]["items"]["dave@localhost"]
    assert item["name"] == "Dave" and item["groups"] == ["Friends"]
    assert iq["roster"]["ver"]


async def test_directed_presence_and_unavailable_on_close(connect):
    alice = await connect("alice@localhost/a")
    bob = await connect("bob@localhost/b")
    alice.send_presence(pto="bob@localhost/b", pstatus="just for you")
    p = await bob.next_presence(pred=lambda p: p["from"] == "alice@localhost/a")
    assert p["status"] == "just for you"
    alice.disconnect()
    p = await bob.next_presence(
        pred=lambda p: p["from"] == "alice@localhost/a" and p["type"] == "unavailable"
    )
    assert p is not None


async def test_last_activity_of_contact_and_xep0256(connect):
    alice = await connect("alice@localhost/a", plugins=("xep_0012",))
    bob = await connect("bob@localhost/b")
    await _subscribe_both(alice, bob)
    bob.disconnect()
    await alice.next_presence(
        pred=lambda p: p["from"] == "bob@localhost/b" and p["type"] == "unavailable"
    )
    await asyncio.sleep(1.1)
    last = await alice.plugin["xep_0012"].get_last_activity("bob@localhost")
    assert last["last_activity"]["seconds"] >= 1
    # a new session of alice probes bob and gets XEP-0256 last activity on the unavailable
    a2 = await connect("alice@localhost/again")
    p = await a2.next_presence(pred=lambda p: p["from"].bare == "bob@localhost")
    q = p.xml.find("{jabber:iq:last}query")
    assert p["type"] == "unavailable" and q is not None and int(q.get("seconds")) >= 1


# ---- stanzas the server does not interpret are passed through untouched ------

PASS_THROUGH = {
    "chat state (XEP-0085)": "<message type='chat'><active xmlns='http://jabber.org/protocol/chatstates'/></message>",
    "receipt request (XEP-0184)": "<message type='chat' id='r1'><body>x</body><request xmlns='urn:xmpp:receipts'/></message>",
    "receipt (XEP-0184)": "<message id='r2'><received xmlns='urn:xmpp:receipts' id='r1'/></message>",
    "attention (XEP-0224)": "<message type='headline'><attention xmlns='urn:xmpp:attention:0'/></message>",
    "direct MUC invitation (XEP-0249)": "<message><x xmlns='jabber:x:conference' jid='room@muc.example' password='p' reason='join us'/></message>",
    "/me (XEP-0245)": "<message type='chat'><body>/me waves</body></message>",
    "roster item exchange (XEP-0144)": "<message><x xmlns='http://jabber.org/protocol/rosterx'><item action='add' jid='dave@localhost' name='Dave'><group>Friends</group></item></x></message>",
    "nested unknown payload": "<message><data xmlns='urn:example:x' a='1'><deep b='2'>text &amp; more<z/></deep></data></message>",
}


SID = "{urn:xmpp:sid:0}stanza-id"


def c14n(el: ET.Element) -> str:
    return ET.canonicalize(ET.tostring(el, encoding="unicode"), strip_text=False)


@pytest.mark.parametrize("name", list(PASS_THROUGH))
async def test_unknown_payloads_arrive_unchanged(connect, name):
    alice = await connect("alice@localhost/a")
    bob = await connect("bob@localhost/b")
    raw = PASS_THROUGH[name].replace("<message", "<message to='bob@localhost/b'", 1)
    alice.send_raw(raw)
    got = await bob.next_message()
    sent = ET.fromstring(raw.replace("<message", "<message xmlns='jabber:client'", 1))
    # the one thing the server adds: the id bob's archive gave a message it
    # keeps (XEP-0313, XEP-0359)
    mine = [c for c in got.xml if c.tag == SID and c.get("by") == "bob@localhost"]
    assert len(mine) <= 1
    assert [c14n(c) for c in got.xml if c not in mine] == [c14n(c) for c in sent]
    assert got["from"] == "alice@localhost/a"
    for attr in ("type", "id"):
        assert got.xml.get(attr) == sent.get(attr)


async def test_jingle_iq_passes_through(connect):
    alice = await connect("alice@localhost/a")
    bob = await connect("bob@localhost/b")
    got = asyncio.get_running_loop().create_future()
    bob.add_event_handler("jingle_probe", lambda iq: None)

    def on_iq(iq):
        if iq.xml.find("{urn:xmpp:jingle:1}jingle") is not None and not got.done():
            got.set_result(iq)

    bob.register_handler(
        __import__("slixmpp").xmlstream.handler.Callback(
            "jingle",
            __import__("slixmpp").xmlstream.matcher.MatchXPath(
                "{jabber:client}iq/{urn:xmpp:jingle:1}jingle"
            ),
            on_iq,
        )
    )
    payload = (
        "<jingle xmlns='urn:xmpp:jingle:1' action='session-initiate' sid='s1' initiator='alice@localhost/a'>"
        "<content creator='initiator' name='file'><description xmlns='urn:xmpp:jingle:apps:file-transfer:5'>"
        "<file><name>a.txt</name><size>3</size></file></description>"
        "<transport xmlns='urn:xmpp:jingle:transports:ibb:1' block-size='4096' sid='t1'/></content></jingle>"
    )
    alice.send_raw(f"<iq type='set' id='j1' to='bob@localhost/b'>{payload}</iq>")
    iq = await asyncio.wait_for(got, 5)
    assert c14n(iq.xml[0]) == c14n(ET.fromstring(payload))
    assert iq["from"] == "alice@localhost/a"
