from __future__ import annotations

import time

from services.core.storage import RosterItem
from services.xmpp import ns

from .conftest import HOST, Harness, assert_error, assert_result, el

LAST = f"<query xmlns='{ns.LAST}'/>"
Q = f"{{{ns.LAST}}}query"


async def test_server_uptime(h: Harness) -> None:
    me = await h.login("juliet")
    h.router.started_at = time.time() - 125
    q = assert_result(await h.iq(me, "get", el(LAST), to=HOST))
    assert q is not None and q.tag == Q
    assert 124 <= int(q.get("seconds") or -1) <= 127
    assert not q.text


async def _offline_romeo(h: Harness, status: str | None = "Heading Home") -> None:
    await h.account("romeo")
    await h.store.set_last_activity(HOST, "romeo", time.time() - 903, status)


async def _subscribe(h: Harness, user: str, contact: str, subscription: str) -> None:
    await h.store.put_roster_item(
        HOST, user, RosterItem(jid=f"{contact}@{HOST}", subscription=subscription)
    )


async def test_account_last_activity_for_subscriber(h: Harness) -> None:
    me = await h.login("juliet")
    await _offline_romeo(h)
    for sub in ("from", "both"):
        await _subscribe(h, "romeo", "juliet", sub)
        q = assert_result(await h.iq(me, "get", el(LAST), to=f"romeo@{HOST}"))
        assert q is not None
        assert 902 <= int(q.get("seconds") or -1) <= 905
        assert q.text == "Heading Home"


async def test_account_last_activity_without_status(h: Harness) -> None:
    me = await h.login("juliet")
    await _offline_romeo(h, None)
    await _subscribe(h, "romeo", "juliet", "both")
    q = assert_result(await h.iq(me, "get", el(LAST), to=f"romeo@{HOST}"))
    assert q is not None and not q.text


async def test_account_last_activity_forbidden(h: Harness) -> None:
    me = await h.login("juliet")
    await _offline_romeo(h)
    reply = await h.iq(me, "get", el(LAST), to=f"romeo@{HOST}")
    assert_error(reply, "forbidden", "auth")
    for sub in ("none", "to"):
        await _subscribe(h, "romeo", "juliet", sub)
        assert_error(await h.iq(me, "get", el(LAST), to=f"romeo@{HOST}"), "forbidden")


async def test_account_online_is_zero(h: Harness) -> None:
    me = await h.login("juliet")
    await _offline_romeo(h)
    await _subscribe(h, "romeo", "juliet", "both")
    await h.login(f"romeo@{HOST}/phone", available=True)
    q = assert_result(await h.iq(me, "get", el(LAST), to=f"romeo@{HOST}"))
    assert q is not None and q.get("seconds") == "0" and not q.text


async def test_account_bound_but_unavailable_is_not_online(h: Harness) -> None:
    me = await h.login("juliet")
    await _offline_romeo(h)
    await _subscribe(h, "romeo", "juliet", "both")
    await h.login(f"romeo@{HOST}/phone", available=False)
    q = assert_result(await h.iq(me, "get", el(LAST), to=f"romeo@{HOST}"))
    assert q is not None and int(q.get("seconds") or 0) >= 902


async def test_account_without_record(h: Harness) -> None:
    me = await h.login("juliet")
    await h.account("romeo")
    await _subscribe(h, "romeo", "juliet", "both")
    assert_error(await h.iq(me, "get", el(LAST), to=f"romeo@{HOST}"), "item-not-found", "cancel")


async def test_own_account(h: Harness) -> None:
    me = await h.login("juliet")
    await h.store.set_last_activity(HOST, "juliet", time.time() - 60, "bye")
    # juliet is bound but has sent no presence
    q = assert_result(await h.iq(me, "get", el(LAST)))
    assert q is not None and q.text == "bye"


async def test_unknown_account(h: Harness) -> None:
    me = await h.login("juliet")
    assert_error(await h.iq(me, "get", el(LAST), to=f"nobody@{HOST}"), "service-unavailable")
