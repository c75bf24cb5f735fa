from __future__ import annotations

from services.xmpp import ns

from .conftest import HOST, Harness, assert_error, assert_result, el

SESSION = f"<session xmlns='{ns.SESSION}'/>"


async def test_session_to_server(h: Harness) -> None:
    me = await h.login("juliet")
    reply = await h.iq(me, "set", el(SESSION), to=HOST)
    assert assert_result(reply) is None
    assert reply.get("to") == str(me)
    assert reply.get("from") == HOST


async def test_session_without_to(h: Harness) -> None:
    me = await h.login("juliet")
    assert assert_result(await h.iq(me, "set", el(SESSION))) is None


async def test_session_to_someone_else(h: Harness) -> None:
    me = await h.login("juliet")
    await h.account("romeo")
    assert_error(await h.iq(me, "set", el(SESSION), to=f"romeo@{HOST}"), "service-unavailable")


async def test_session_get_is_not_handled(h: Harness) -> None:
    me = await h.login("juliet")
    assert_error(await h.iq(me, "get", el(SESSION), to=HOST), "service-unavailable")
