from __future__ import annotations

from services.xmpp import ns

from .conftest import HOST, Harness, assert_error, assert_result, el

PING = f"<ping xmlns='{ns.PING}'/>"


async def test_ping_server(h: Harness) -> None:
    me = await h.login("juliet")
    reply = await h.iq(me, "get", el(PING), to=HOST)
    assert assert_result(reply) is None
    assert reply.get("from") == HOST and reply.get("to") == str(me)


async def test_ping_own_account(h: Harness) -> None:
    me = await h.login("juliet")
    assert assert_result(await h.iq(me, "get", el(PING))) is None
    assert assert_result(await h.iq(me, "get", el(PING), to=me.bare)) is None


async def test_ping_someone_elses_account(h: Harness) -> None:
    me = await h.login("juliet")
    romeo = await h.account("romeo")
    assert_error(await h.iq(me, "get", el(PING), to=romeo), "service-unavailable", "cancel")


async def test_ping_unknown_account(h: Harness) -> None:
    me = await h.login("juliet")
    assert_error(await h.iq(me, "get", el(PING), to=f"nobody@{HOST}"), "service-unavailable")


async def test_ping_server_resource(h: Harness) -> None:
    me = await h.login("juliet")
    assert_error(await h.iq(me, "get", el(PING), to=f"{HOST}/x"), "service-unavailable")
