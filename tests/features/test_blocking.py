from __future__ import annotations

from lxml import etree

from services.core.routing import Envelope
from services.xmpp import ns
from services.xmpp import stanza as st
from services.xmpp.jid import JID

from .conftest import HOST, Harness, assert_error, assert_result, el

B = f"{{{ns.BLOCKING}}}"


def block(*jids: str, tag: str = "block") -> etree._Element:
    e = etree.Element(B + tag, nsmap={None: ns.BLOCKING})
    for j in jids:
        etree.SubElement(e, B + "item", jid=j)
    return e


def items_of(e: etree._Element) -> list[str]:
    return [i.get("jid") or "" for i in e.findall(B + "item")]


async def blocklist(h: Harness, me: JID) -> list[str]:
    q = assert_result(await h.iq(me, "get", el(f"<blocklist xmlns='{ns.BLOCKING}'/>")))
    assert q is not None and q.tag == B + "blocklist"
    return items_of(q)


def pushes(h: Harness, to: JID) -> list[etree._Element]:
    return [e for e in h.delivered(to) if e.get("type") == "set"]


async def test_empty_blocklist(h: Harness) -> None:
    me = await h.login("juliet")
    assert await blocklist(h, me) == []


async def test_block_and_unblock(h: Harness) -> None:
    me = await h.login(f"juliet@{HOST}/balcony")
    other = await h.login(f"juliet@{HOST}/chamber")
    iq_id = await h.send_iq(me, "set", block("romeo@montague.net", "Iago@Example.COM/Res"))
    assert assert_result(h.reply(me, iq_id)) is None
    assert await blocklist(h, me) == ["iago@example.com/Res", "romeo@montague.net"]
    # the result comes before the push, and every resource gets the push
    sent = [etree.fromstring(d) for j, d in h.edge.sent if j == me]
    types = [(e.get("id"), e.get("type")) for e in sent]
    assert types.index((iq_id, "result")) < [t for _, t in types].index("set")
    for jid in (me, other):
        (push,) = pushes(h, jid)
        assert push.get("to") == str(jid)
        assert push.get("from") == str(me.bare)
        assert push[0].tag == B + "block"
        assert items_of(push[0]) == ["romeo@montague.net", "iago@example.com/Res"]
    h.edge.sent.clear()

    assert assert_result(await h.iq(me, "set", block("romeo@montague.net", tag="unblock"))) is None
    assert await blocklist(h, me) == ["iago@example.com/Res"]
    for jid in (me, other):
        (push,) = pushes(h, jid)
        assert push[0].tag == B + "unblock"
        assert items_of(push[0]) == ["romeo@montague.net"]
    h.edge.sent.clear()

    await h.iq(me, "set", block("a@example.org", "example.net"))
    h.edge.sent.clear()
    assert assert_result(await h.iq(me, "set", block(tag="unblock"))) is None
    assert await blocklist(h, me) == []
    for jid in (me, other):
        (push,) = pushes(h, jid)
        assert push[0].tag == B + "unblock" and len(push[0]) == 0


async def test_block_takes_effect_in_router(h: Harness) -> None:
    me = await h.login("juliet", available=True)
    romeo = await h.login(f"romeo@{HOST}/r")
    msg = st.make("message", frm=romeo, to=me.bare, type_="chat")
    etree.SubElement(msg, ns.q(ns.CLIENT, "body")).text = "hi"
    # warm the cache: not blocked yet
    await h.router.route(Envelope.of(msg, romeo, me.bare))
    assert any(e.tag == st.MESSAGE for e in h.delivered(me))
    assert assert_result(await h.iq(me, "set", block(str(romeo.bare)))) is None
    h.edge.sent.clear()
    await h.router.route(Envelope.of(msg, romeo, me.bare))
    assert not any(e.tag == st.MESSAGE for e in h.delivered(me))
    # unblocking invalidates the cache again
    assert assert_result(await h.iq(me, "set", block(tag="unblock"))) is None
    h.edge.sent.clear()
    await h.router.route(Envelope.of(msg, romeo, me.bare))
    assert any(e.tag == st.MESSAGE for e in h.delivered(me))


async def test_empty_block_is_bad_request(h: Harness) -> None:
    me = await h.login("juliet")
    assert_error(await h.iq(me, "set", block()), "bad-request", "modify")
    assert pushes(h, me) == []


async def test_malformed_jid(h: Harness) -> None:
    me = await h.login("juliet")
    for bad in ("", "@example.com", "a@b@c", "user@"):
        assert_error(await h.iq(me, "set", block("ok@example.com", bad)), "jid-malformed")
        assert_error(await h.iq(me, "set", block(bad, tag="unblock")), "jid-malformed")
    no_attr = el(f"<block xmlns='{ns.BLOCKING}'><item/></block>")
    assert_error(await h.iq(me, "set", no_attr), "jid-malformed")
    assert await blocklist(h, me) == []


async def test_other_users_list_forbidden(h: Harness) -> None:
    me = await h.login("juliet")
    await h.account("romeo")
    romeo = f"romeo@{HOST}"
    reply = await h.iq(me, "get", el(f"<blocklist xmlns='{ns.BLOCKING}'/>"), to=romeo)
    assert_error(reply, "forbidden")
    assert_error(await h.iq(me, "set", block("x@example.com"), to=romeo), "forbidden")
    assert_error(await h.iq(me, "set", block(tag="unblock"), to=romeo), "forbidden")
    assert await h.store.get_blocklist(HOST, "romeo") == []


async def test_wrong_iq_types(h: Harness) -> None:
    me = await h.login("juliet")
    assert_error(
        await h.iq(me, "set", el(f"<blocklist xmlns='{ns.BLOCKING}'/>")), "service-unavailable"
    )
    assert_error(await h.iq(me, "get", block("x@example.com")), "service-unavailable")
