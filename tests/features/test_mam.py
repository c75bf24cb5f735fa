"""Message archives (XEP-0313) and stanza ids (XEP-0359) on the hook
chain, against a RouterService over SQLite: what is stamped and archived
(incoming delivered, incoming kept offline, outgoing), preferences, the
query form, paging, and each refusal's condition."""

from __future__ import annotations

from typing import Any

import pytest
from lxml import etree

from services.core.routing import Envelope
from services.core.storage import ArchiveQuery, RosterItem
from services.features import disco, mam, offline, roster
from services.features.mam import protocol as p
from services.xmpp import ns
from services.xmpp import stanza as st
from services.xmpp.jid import JID

from .conftest import HOST, Harness, MakeHarness, assert_error, assert_result, el

M = f"{{{p.MAM}}}"
RSM = f"{{{p.RSM}}}"
SID = f"{{{p.SID}}}stanza-id"


@pytest.fixture
async def h(make_harness: MakeHarness) -> Harness:
    return await make_harness(
        features=[disco.FEATURE, roster.FEATURE, mam.FEATURE, offline.FEATURE]
    )


async def send(h: Harness, frm: JID, to: str, body: str | None = "hi", **kw: Any) -> None:
    m = st.make("message", frm=frm, to=to, type_=kw.pop("type_", "chat"), id_="m1")
    if body is not None:
        etree.SubElement(m, ns.q(ns.CLIENT, "body")).text = body
    for extra in kw.pop("extra", ()):
        m.append(el(extra))
    await h.router.route(Envelope.of(m, frm, JID.parse(to)))


async def query(h: Harness, who: JID, xml: str = "", to: JID | None = None) -> etree._Element:
    return await h.iq(who, "set", el(f"<query xmlns='{p.MAM}' queryid='q'>{xml}</query>"), to)


def results(h: Harness, to: JID) -> list[etree._Element]:
    return [m for m in h.delivered(to) if m.find(f"{M}result") is not None]


def bodies(msgs: list[etree._Element]) -> list[str]:
    return [m.findtext(f".//{{{ns.CLIENT}}}body") or "" for m in msgs]


async def test_incoming_is_stamped_and_archived_once(h: Harness) -> None:
    alice = await h.login(f"alice@{HOST}/a", available=True)
    bob = await h.login(f"bob@{HOST}/b", available=True)
    # a forged id "by" alice's archive is removed; another entity's is kept
    forged = f"<stanza-id xmlns='{p.SID}' by='alice@{HOST}' id='forged'/>"
    theirs = f"<stanza-id xmlns='{p.SID}' by='room@muc.example' id='r1'/>"
    await send(h, bob, f"alice@{HOST}", "one", extra=(forged, theirs))
    got = h.delivered(alice)[-1]
    sids = {(s.get("by"), s.get("id")) for s in got.iter(SID)}
    assert ("room@muc.example", "r1") in sids and len(sids) == 2
    (mine,) = [i for b, i in sids if b == f"alice@{HOST}"]
    assert mine != "forged"
    reply = await query(h, alice)
    fin = assert_result(reply)
    assert fin is not None and fin.tag == f"{M}fin" and fin.get("complete") == "true"
    (res,) = results(h, alice)
    r = res.find(f"{M}result")
    assert r is not None and r.get("id") == mine and r.get("queryid") == "q"
    assert res.get("from") == f"alice@{HOST}" and res.get("to") == str(alice)
    fwd = r.find("{urn:xmpp:forward:0}forwarded")
    assert fwd is not None and fwd.find(f"{{{ns.DELAY}}}delay") is not None
    inner = fwd.find(f"{{{ns.CLIENT}}}message")
    assert inner is not None and inner.findtext(f"{{{ns.CLIENT}}}body") == "one"
    assert inner.get("from") == str(bob)
    assert fin.findtext(f"{RSM}set/{RSM}count") == "1"
    assert fin.findtext(f"{RSM}set/{RSM}first") == mine == fin.findtext(f"{RSM}set/{RSM}last")
    # bob's sent copy is in his archive, under its own id
    await query(h, bob)
    (sent,) = results(h, bob)
    assert sent.find(f"{M}result").get("id") != mine  # type: ignore[union-attr]
    assert bodies([sent]) == ["one"]


async def test_offline_message_is_archived_with_the_id_it_is_stored_with(h: Harness) -> None:
    await h.account("alice")
    bob = await h.login(f"bob@{HOST}/b", available=True)
    await send(h, bob, f"alice@{HOST}", "while away")
    (stored,) = await h.store.fetch_offline(HOST, "alice")
    kept = etree.fromstring(stored.stanza)
    sid = kept.find(SID)
    assert sid is not None and sid.get("by") == f"alice@{HOST}"
    alice = await h.login(f"alice@{HOST}/a")
    await query(h, alice)
    (res,) = results(h, alice)
    assert res.find(f"{M}result").get("id") == sid.get("id")  # type: ignore[union-attr]


async def test_what_is_not_archived(h: Harness) -> None:
    alice = await h.login(f"alice@{HOST}/a", available=True)
    bob = await h.login(f"bob@{HOST}/b", available=True)
    await send(
        h, bob, str(alice), None, extra=("<active xmlns='http://jabber.org/protocol/chatstates'/>",)
    )
    await send(h, bob, str(alice), "no", extra=("<no-store xmlns='urn:xmpp:hints'/>",))
    await send(h, bob, str(alice), "np", extra=("<no-permanent-store xmlns='urn:xmpp:hints'/>",))
    await send(h, bob, str(alice), "news", type_="headline")
    await send(h, bob, str(alice), None, extra=("<store xmlns='urn:xmpp:hints'/>",))
    enc = "<encrypted xmlns='eu.siacs.conversations.axolotl'><header sid='1'/></encrypted>"
    await send(h, bob, str(alice), None, extra=(enc,))
    fin = assert_result(await query(h, alice))
    assert fin is not None and fin.findtext(f"{RSM}set/{RSM}count") == "2"
    # nothing not archived carries an id
    unstamped = [
        m
        for m in h.delivered(alice)
        if m.tag == f"{{{ns.CLIENT}}}message"
        and m.find(SID) is None
        and m.find(f"{M}result") is None
    ]
    assert len(unstamped) == 4


async def test_paging_both_ways_and_flip(h: Harness) -> None:
    alice = await h.login(f"alice@{HOST}/a", available=True)
    bob = await h.login(f"bob@{HOST}/b", available=True)
    for i in range(7):
        await send(h, bob, str(alice), f"m{i}")
    page = "<set xmlns='http://jabber.org/protocol/rsm'><max>3</max><before/></set>"
    fin = assert_result(await query(h, alice, page))
    assert bodies(results(h, alice)) == ["m4", "m5", "m6"]
    assert fin is not None and fin.get("complete") is None
    # no index walking backwards (protocol.fin says why)
    assert fin.find(f"{RSM}set/{RSM}first").get("index") is None  # type: ignore[union-attr]
    first = fin.findtext(f"{RSM}set/{RSM}first")
    h.edge.sent.clear()
    page = f"<set xmlns='http://jabber.org/protocol/rsm'><max>3</max><before>{first}</before></set>"
    fin = assert_result(await query(h, alice, page))
    assert bodies(results(h, alice)) == ["m1", "m2", "m3"]
    h.edge.sent.clear()
    page = "<flip-page/><set xmlns='http://jabber.org/protocol/rsm'><max>3</max></set>"
    fin = assert_result(await query(h, alice, page))
    assert bodies(results(h, alice)) == ["m2", "m1", "m0"]
    assert fin is not None
    assert fin.find(f"{RSM}set/{RSM}first").get("index") == "2"  # type: ignore[union-attr]
    # max is cut to mam_max_page, and max 0 gives the count alone
    h.edge.sent.clear()
    fin = assert_result(
        await query(h, alice, "<set xmlns='http://jabber.org/protocol/rsm'><max>0</max></set>")
    )
    assert results(h, alice) == [] and fin is not None
    assert fin.findtext(f"{RSM}set/{RSM}count") == "7"


async def test_max_page_setting(make_harness: MakeHarness) -> None:
    h = await make_harness(features=[roster.FEATURE, mam.FEATURE, offline.FEATURE], mam_max_page=2)
    alice = await h.login(f"alice@{HOST}/a", available=True)
    bob = await h.login(f"bob@{HOST}/b", available=True)
    for i in range(3):
        await send(h, bob, str(alice), f"m{i}")
    fin = assert_result(await query(h, alice))
    assert bodies(results(h, alice)) == ["m0", "m1"]
    assert fin is not None and fin.get("complete") is None


async def test_form_filters(h: Harness) -> None:
    alice = await h.login(f"alice@{HOST}/a", available=True)
    bob = await h.login(f"bob@{HOST}/b", available=True)
    carol = await h.login(f"carol@{HOST}/c", available=True)
    await send(h, bob, str(alice), "from bob")
    await send(h, carol, str(alice), "from carol")
    await send(h, alice, str(carol), "to carol")
    form = (
        "<x xmlns='jabber:x:data' type='submit'>"
        f"<field var='FORM_TYPE' type='hidden'><value>{p.MAM}</value></field>"
        f"<field var='with'><value>carol@{HOST}</value></field></x>"
    )
    fin = assert_result(await query(h, alice, form))
    assert bodies(results(h, alice)) == ["from carol", "to carol"]
    assert fin is not None and fin.findtext(f"{RSM}set/{RSM}count") == "2"
    h.edge.sent.clear()
    form = (
        "<x xmlns='jabber:x:data' type='submit'>"
        f"<field var='FORM_TYPE' type='hidden'><value>{p.MAM}</value></field>"
        "<field var='start'><value>2000-01-01T00:00:00Z</value></field>"
        "<field var='end'><value>2001-01-01T00:00:00Z</value></field></x>"
    )
    fin = assert_result(await query(h, alice, form))
    assert results(h, alice) == []


@pytest.mark.parametrize(
    ("xml", "condition"),
    [
        (  # an unknown form field
            "<x xmlns='jabber:x:data' type='submit'>"
            f"<field var='FORM_TYPE'><value>{p.MAM}</value></field>"
            "<field var='fulltext'><value>x</value></field></x>",
            "feature-not-implemented",
        ),
        (
            "<x xmlns='jabber:x:data' type='submit'>"
            f"<field var='FORM_TYPE'><value>{p.MAM}</value></field>"
            "<field var='start'><value>yesterday</value></field></x>",
            "bad-request",
        ),
        (
            "<x xmlns='jabber:x:data' type='submit'>"
            f"<field var='FORM_TYPE'><value>{p.MAM}</value></field>"
            "<field var='after-id'><value>nope</value></field></x>",
            "item-not-found",
        ),
        ("<set xmlns='http://jabber.org/protocol/rsm'><after>nope</after></set>", "item-not-found"),
        ("<set xmlns='http://jabber.org/protocol/rsm'><max>lots</max></set>", "bad-request"),
        ("<set xmlns='http://jabber.org/protocol/rsm'><max>-1</max></set>", "bad-request"),
        (
            "<set xmlns='http://jabber.org/protocol/rsm'><after>a</after><before>b</before></set>",
            "bad-request",
        ),
        (
            "<x xmlns='jabber:x:data' type='submit'>"
            "<field var='FORM_TYPE'><value>urn:xmpp:other</value></field></x>",
            "bad-request",
        ),
    ],
)
async def test_refused_queries(h: Harness, xml: str, condition: str) -> None:
    alice = await h.login(f"alice@{HOST}/a", available=True)
    assert_error(await query(h, alice, xml), condition)


async def test_only_the_owner(h: Harness) -> None:
    alice = await h.login(f"alice@{HOST}/a", available=True)
    await h.account("bob")
    assert_error(await query(h, alice, to=JID.parse(f"bob@{HOST}")), "forbidden")
    reply = await h.iq(alice, "get", el(f"<prefs xmlns='{p.MAM}'/>"), f"bob@{HOST}")
    assert_error(reply, "forbidden")


async def test_query_form(h: Harness) -> None:
    alice = await h.login(f"alice@{HOST}/a", available=True)
    q = assert_result(await h.iq(alice, "get", el(f"<query xmlns='{p.MAM}'/>")))
    assert q is not None
    vars_ = {f.get("var") for f in q.iter("{jabber:x:data}field")}
    assert vars_ == {"FORM_TYPE", "with", "start", "end", "after-id", "before-id"}


async def test_prefs(h: Harness) -> None:
    alice = await h.login(f"alice@{HOST}/a", available=True)
    bob = await h.login(f"bob@{HOST}/b", available=True)
    carol = await h.login(f"carol@{HOST}/c", available=True)
    got = assert_result(await h.iq(alice, "get", el(f"<prefs xmlns='{p.MAM}'/>")))
    assert got is not None and got.get("default") == "always"
    prefs = (
        f"<prefs xmlns='{p.MAM}' default='never'><always><jid>carol@{HOST}/x</jid></always>"
        "<never/></prefs>"
    )
    got = assert_result(await h.iq(alice, "set", el(prefs)))
    assert got is not None and got.get("default") == "never"
    assert [j.text for j in got.iter(f"{M}jid")] == [f"carol@{HOST}"]
    await send(h, bob, str(alice), "not kept")
    await send(h, carol, str(alice), "kept")
    await send(h, alice, str(bob), "not kept either")
    assert_result(await query(h, alice))
    assert bodies(results(h, alice)) == ["kept"]
    # roster: only contacts
    h.edge.sent.clear()
    assert_result(await h.iq(alice, "set", el(f"<prefs xmlns='{p.MAM}' default='roster'/>")))
    await h.store.put_roster_item(HOST, "alice", RosterItem(f"bob@{HOST}"))
    await send(h, bob, str(alice), "contact")
    await send(h, carol, str(alice), "stranger")
    assert_result(await query(h, alice))
    assert bodies(results(h, alice)) == ["kept", "contact"]
    bad = f"<prefs xmlns='{p.MAM}' default='sometimes'/>"
    assert_error(await h.iq(alice, "set", el(bad)), "bad-request")


async def test_default_setting(make_harness: MakeHarness) -> None:
    h = await make_harness(features=[roster.FEATURE, mam.FEATURE], mam_default="never")
    alice = await h.login(f"alice@{HOST}/a", available=True)
    bob = await h.login(f"bob@{HOST}/b", available=True)
    await send(h, bob, str(alice), "x")
    assert h.delivered(alice)[-1].find(SID) is None
    fin = assert_result(await query(h, alice))
    assert fin is not None and fin.findtext(f"{RSM}set/{RSM}count") == "0"


async def test_account_removal_drops_the_archive(h: Harness) -> None:
    alice = await h.login(f"alice@{HOST}/a", available=True)
    bob = await h.login(f"bob@{HOST}/b", available=True)
    await send(h, bob, str(alice), "x")
    await h.store.delete_account(HOST, "alice")
    page = await h.store.query_archive(f"alice@{HOST}", ArchiveQuery())
    assert page is not None and page.count == 0


async def test_disco(h: Harness) -> None:
    alice = await h.login(f"alice@{HOST}/a", available=True)
    q = assert_result(
        await h.iq(
            alice, "get", el("<query xmlns='http://jabber.org/protocol/disco#info'/>"), alice.bare
        )
    )
    assert q is not None
    feats = {f.get("var") for f in q.iter("{http://jabber.org/protocol/disco#info}feature")}
    assert {p.MAM, p.SID} <= feats


async def test_a_message_routed_again_is_archived_once(h: Harness) -> None:
    """Stream management routes an unacknowledged message again when it
    gives a session up: it carries the id the archive gave it, which is
    kept, and nothing is written twice. A made-up id is still removed."""
    alice = await h.login(f"alice@{HOST}/a", available=True)
    bob = await h.login(f"bob@{HOST}/b", available=True)
    await send(h, bob, str(alice), "once")
    first = h.delivered(alice)[-1]
    await h.router.route(Envelope.of(first, bob, alice), trusted=True)
    again = h.delivered(alice)[-1]
    assert [s.get("id") for s in again.iter(SID)] == [s.get("id") for s in first.iter(SID)]
    fin = assert_result(await query(h, alice))
    assert fin is not None and fin.findtext(f"{RSM}set/{RSM}count") == "1"
