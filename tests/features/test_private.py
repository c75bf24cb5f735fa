from __future__ import annotations

from services.xmpp import ns

from .conftest import HOST, Harness, assert_error, assert_result, el

P = ns.PRIVATE
BOOKMARKS = "storage:bookmarks"


def query(inner: str = "") -> str:
    return f"<query xmlns='{P}'>{inner}</query>"


async def test_get_unknown_returns_empty_child(h: Harness) -> None:
    me = await h.login("juliet")
    q = assert_result(await h.iq(me, "get", el(query("<exodus xmlns='exodus:prefs'/>"))))
    assert q is not None and q.tag == f"{{{P}}}query"
    assert len(q) == 1
    assert q[0].tag == "{exodus:prefs}exodus" and len(q[0]) == 0


async def test_set_then_get(h: Harness) -> None:
    me = await h.login("juliet")
    data = "<exodus xmlns='exodus:prefs'><defaultnick>Hamlet</defaultnick></exodus>"
    assert assert_result(await h.iq(me, "set", el(query(data)))) is None
    q = assert_result(await h.iq(me, "get", el(query("<exodus xmlns='exodus:prefs'/>"))))
    assert q is not None
    assert q[0].findtext("{exodus:prefs}defaultnick") == "Hamlet"
    stored = await h.store.get_private(HOST, "juliet", "{exodus:prefs}exodus")
    assert stored is not None and b"jabber:client" not in stored and P.encode() not in stored


async def test_bookmarks_and_multiple_children(h: Harness) -> None:
    me = await h.login("juliet")
    data = (
        f"<storage xmlns='{BOOKMARKS}'><conference jid='room@muc.example.com' autojoin='true'"
        " name='Room'><nick>J</nick></conference></storage>"
        "<storage xmlns='storage:rosternotes'><note jid='romeo@example.com'>hi</note></storage>"
    )
    assert assert_result(await h.iq(me, "set", el(query(data)))) is None
    q = assert_result(
        await h.iq(
            me,
            "get",
            el(query(f"<storage xmlns='{BOOKMARKS}'/><storage xmlns='storage:rosternotes'/>")),
        )
    )
    assert q is not None and len(q) == 2
    conf = q[0].find(f"{{{BOOKMARKS}}}conference")
    assert conf is not None and conf.get("jid") == "room@muc.example.com"
    assert q[1].findtext("{storage:rosternotes}note") == "hi"


async def test_keys_are_per_element_name(h: Harness) -> None:
    me = await h.login("juliet")
    await h.iq(me, "set", el(query("<a xmlns='urn:x'>1</a>")))
    await h.iq(me, "set", el(query("<b xmlns='urn:x'>2</b>")))
    q = assert_result(await h.iq(me, "get", el(query("<a xmlns='urn:x'/>"))))
    assert q is not None and q[0].text == "1"


async def test_other_user_forbidden(h: Harness) -> None:
    me = await h.login("juliet")
    await h.account("romeo")
    data = query("<exodus xmlns='exodus:prefs'/>")
    for typ in ("get", "set"):
        assert_error(await h.iq(me, typ, el(data), to=f"romeo@{HOST}"), "forbidden", "auth")


async def test_empty_query_not_acceptable(h: Harness) -> None:
    me = await h.login("juliet")
    for typ in ("get", "set"):
        assert_error(await h.iq(me, typ, el(query())), "not-acceptable", "modify")


async def test_reserved_namespaces_not_acceptable(h: Harness) -> None:
    me = await h.login("juliet")
    for child in (
        "<foo/>",  # inherits jabber:iq:private
        f"<foo xmlns='{ns.CLIENT}'/>",
        f"<foo xmlns='{ns.SERVER}'/>",
        "<foo xmlns=''/>",
    ):
        for typ in ("get", "set"):
            assert_error(await h.iq(me, typ, el(query(child))), "not-acceptable")
    # nothing was stored by the mixed request
    mixed = query(f"<ok xmlns='urn:ok'/><foo xmlns='{ns.CLIENT}'/>")
    assert_error(await h.iq(me, "set", el(mixed)), "not-acceptable")
    assert await h.store.get_private(HOST, "juliet", "{urn:ok}ok") is None
