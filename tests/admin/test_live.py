"""The admin API's effects on real XMPP sessions: slixmpp clients over real
sockets to the same server the HTTP calls go to."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from services.app.embedded import EmbeddedServer

from ..conftest import PASSWORD, Client

Connect = Callable[..., Awaitable[Client]]


def watch(c: Client, event: str) -> asyncio.Queue[Any]:
    q: asyncio.Queue[Any] = asyncio.Queue()
    c.add_event_handler(event, q.put_nowait)
    return q


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        assert loop.time() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


async def sessions(api: httpx.AsyncClient, **params: Any) -> list[dict[str, Any]]:
    r = await api.get("/sessions", params=params)
    assert r.status_code == 200, r.text
    rows: list[dict[str, Any]] = r.json()["sessions"]
    return rows


async def test_sessions_list(
    api: httpx.AsyncClient, connect: Connect, server: EmbeddedServer
) -> None:
    a = await connect("alice@localhost/phone", presence=False)
    a.send_raw(
        "<presence><priority>5</priority><show>away</show><status>in a meeting</status>"
        "<c xmlns='http://jabber.org/protocol/caps' hash='sha-1'"
        " node='https://client.example/app' ver='QgayPKawpkPSDYmwT/WM94uAlu0='/></presence>"
    )
    await connect("bob@localhost/desk", presence=False)
    assert server.edge is not None
    node = server.edge.node_id

    async def shown() -> bool:
        rows = await sessions(api)
        return bool(rows) and rows[0]["show"] == "away"

    await eventually(shown)
    alice, bob = await sessions(api)
    assert alice["jid"] == "alice@localhost/phone" and alice["user"] == "alice@localhost"
    assert alice["resource"] == "phone" and alice["node"] == node and alice["ip"] == "127.0.0.1"
    assert alice["priority"] == 5 and alice["available"] is True
    assert alice["show"] == "away" and alice["status"] == "in a meeting"
    assert alice["client"] == "https://client.example/app"
    assert alice["started"] > 0
    assert (
        bob["jid"] == "bob@localhost/desk" and bob["available"] is False and bob["client"] is None
    )
    # paging, one user's, one host's
    page = (await api.get("/sessions", params={"limit": 1, "offset": 1})).json()
    assert page["total"] == 2 and [s["jid"] for s in page["sessions"]] == ["bob@localhost/desk"]
    mine = (await api.get("/users/alice@localhost/sessions")).json()
    assert [s["jid"] for s in mine["sessions"]] == ["alice@localhost/phone"]
    assert (await sessions(api, host="elsewhere.example")) == []
    user = (await api.get("/users/alice@localhost")).json()
    assert user["online"] is True and user["sessions"] == 1
    # statistics
    stats = (await api.get("/stats")).json()
    assert stats["online_users"] == 2 and stats["online_sessions"] == 2
    assert stats["online_users_per_host"] == {"localhost": 2}
    assert stats["sessions_per_node"] == {node: 2}
    hosts = (await api.get("/hosts")).json()["hosts"]
    assert hosts[0]["online_users"] == 2 and hosts[0]["online_sessions"] == 2


async def test_stanzas_per_second(api: httpx.AsyncClient, connect: Connect) -> None:
    first = (await api.get("/stats")).json()
    a = await connect("alice@localhost/a")
    b = await connect("bob@localhost/b")
    for i in range(20):
        a.send_message(mto="bob@localhost/b", mbody=str(i), mtype="chat")
    for _ in range(20):
        await b.next_message()
    stats = (await api.get("/stats")).json()
    assert stats["stanzas_total"] >= first["stanzas_total"] + 20
    assert stats["stanzas_per_second"] > 0
    assert stats["rate_window_seconds"] > 0


async def test_kick_one_session_then_all(api: httpx.AsyncClient, connect: Connect) -> None:
    a1 = await connect("alice@localhost/one")
    a2 = await connect("alice@localhost/two")
    a3 = await connect("alice@localhost/three")
    gone1 = watch(a1, "disconnected")
    r = await api.delete("/sessions/alice@localhost/one")
    assert r.status_code == 200 and r.json() == {"kicked": 1}
    await asyncio.wait_for(gone1.get(), 5)

    async def two_left() -> bool:
        return [s["resource"] for s in await sessions(api)] == ["three", "two"]

    await eventually(two_left)
    # a resource with a slash in it, percent-encoded or not
    r = await api.delete("/sessions/alice@localhost/nope/x")
    assert r.json() == {"kicked": 0}
    gone = [watch(a2, "disconnected"), watch(a3, "disconnected")]
    r = await api.delete("/sessions/alice@localhost")
    assert r.json() == {"kicked": 2}
    for q in gone:
        await asyncio.wait_for(q.get(), 5)
    await eventually(lambda: _no_sessions(api))
    r = await api.delete("/sessions/not a jid")
    assert r.status_code == 404


async def _no_sessions(api: httpx.AsyncClient) -> bool:
    return await sessions(api) == []


async def test_disable_kicks_and_refuses_login(api: httpx.AsyncClient, connect: Connect) -> None:
    b = await connect("bob@localhost/b")
    gone = watch(b, "disconnected")
    r = await api.post("/users/bob@localhost/disable")
    assert r.json() == {"jid": "bob@localhost", "disabled": True, "disconnected": 1}
    await asyncio.wait_for(gone.get(), 5)
    with pytest.raises(PermissionError):
        await connect("bob@localhost/again")
    r = await api.post("/users/bob@localhost/enable")
    assert r.json()["disabled"] is False
    await connect("bob@localhost/back")


async def test_password_change(api: httpx.AsyncClient, connect: Connect) -> None:
    r = await api.put("/users/carol@localhost/password", json={"password": "n3w-secret"})
    assert r.status_code == 200
    with pytest.raises(PermissionError):
        await connect("carol@localhost/old", PASSWORD)
    await connect("carol@localhost/new", "n3w-secret")


async def test_delete_user_disconnects(api: httpx.AsyncClient, connect: Connect) -> None:
    c = await connect("carol@localhost/c")
    gone = watch(c, "disconnected")
    r = await api.delete("/users/carol@localhost")
    assert r.json() == {"jid": "carol@localhost", "disconnected": 1}
    await asyncio.wait_for(gone.get(), 5)
    with pytest.raises(PermissionError):
        await connect("carol@localhost/c")


async def test_send_message_as_any_jid(api: httpx.AsyncClient, connect: Connect) -> None:
    a = await connect("alice@localhost/a")
    r = await api.post(
        "/messages",
        json={
            "from": "bob@localhost/desk",
            "to": "alice@localhost",
            "type": "chat",
            "body": "hi Alice",
        },
    )
    assert r.status_code == 202, r.text
    sent = r.json()
    m = await a.next_message()
    assert m["body"] == "hi Alice" and m["type"] == "chat"
    assert m["from"] == "bob@localhost/desk" and m["id"] == sent["id"]
    # a headline from the server, with a subject
    r = await api.post(
        "/messages",
        json={"to": "alice@localhost/a", "type": "headline", "subject": "Notice", "body": "News"},
    )
    assert r.status_code == 202
    m = await a.next_message()
    assert m["type"] == "headline" and m["subject"] == "Notice" and m["body"] == "News"
    assert m["from"] == "localhost"


async def test_message_to_offline_user_is_stored(api: httpx.AsyncClient, connect: Connect) -> None:
    r = await api.post("/messages", json={"to": "bob@localhost", "body": "while you were out"})
    assert r.status_code == 202
    b = await connect("bob@localhost/b")
    m = await b.next_message()
    assert m["body"] == "while you were out" and m["from"] == "localhost"


async def test_broadcast_reaches_every_session(api: httpx.AsyncClient, connect: Connect) -> None:
    clients = [
        await connect("alice@localhost/a1"),
        await connect("alice@localhost/a2"),
        await connect("bob@localhost/b", presence=False),
        await connect("carol@localhost/c"),
    ]
    r = await api.post("/broadcasts", json={"subject": "Maintenance", "body": "Restart at 22:00"})
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["kind"] == "broadcast" and job["total"] == 4
    for c in clients:
        m = await c.next_message()
        assert m["type"] == "headline" and m["body"] == "Restart at 22:00"
        assert m["subject"] == "Maintenance" and m["from"] == "localhost"

    async def done() -> bool:
        return (await api.get(f"/jobs/{job['id']}")).json()["status"] == "done"

    await eventually(done)
    final = (await api.get(f"/jobs/{job['id']}")).json()
    assert final["done"] == 4 and final["failed"] == 0 and final["pending"] == 0
    assert final["finished"] >= final["created"]
    listed = (await api.get("/jobs")).json()
    assert listed["total"] == 1 and listed["jobs"][0]["id"] == job["id"]


async def test_roster_changes_are_pushed(api: httpx.AsyncClient, connect: Connect) -> None:
    a = await connect("alice@localhost/a")
    await a.get_roster()  # from now on this session gets roster pushes
    pushes = watch(a, "roster_update")
    item = {"jid": "bob@localhost", "name": "Bob", "groups": ["Friends"], "subscription": "both"}
    r = await api.post("/users/alice@localhost/roster", json=item)
    assert r.status_code == 201, r.text
    iq = await asyncio.wait_for(pushes.get(), 5)
    assert iq["type"] == "set"
    pushed = iq["roster"]["items"]
    assert set(pushed) == {"bob@localhost"}
    assert pushed["bob@localhost"]["subscription"] == "both"
    assert pushed["bob@localhost"]["name"] == "Bob" and pushed["bob@localhost"]["groups"] == [
        "Friends"
    ]
    assert iq["roster"]["ver"] == str(r.json()["version"])
    assert a.client_roster["bob@localhost"]["to"] is True
    r = await api.delete("/users/alice@localhost/roster/bob@localhost")
    assert r.status_code == 200
    iq = await asyncio.wait_for(pushes.get(), 5)
    assert iq["roster"]["items"]["bob@localhost"]["subscription"] == "remove"
    # the client asks again: the item is gone
    roster = await a.get_roster()
    assert "bob@localhost" not in roster["roster"]["items"]


async def test_vcard_set_by_api_is_served_over_xmpp(
    api: httpx.AsyncClient, connect: Connect
) -> None:
    vcard = "<vCard xmlns='vcard-temp'><FN>Alice Ærø</FN><NICKNAME>al</NICKNAME></vCard>"
    assert (await api.put("/users/alice@localhost/vcard", json={"vcard": vcard})).status_code == 200
    b = await connect("bob@localhost/b", plugins=("xep_0030", "xep_0054"))
    iq = await b.plugin["xep_0054"].get_vcard("alice@localhost", local=False, cached=False)
    assert iq["vcard_temp"]["FN"] == "Alice Ærø"


async def test_vcard_photo_set_by_api_is_in_the_next_presence(
    api: httpx.AsyncClient, connect: Connect
) -> None:
    """The presence hash (XEP-0153) follows a photo the operator sets: the
    API drops the hash the router cached at the user's first presence."""
    import base64
    import hashlib

    a = await connect("alice@localhost/a")  # its initial presence cached "no vCard"
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(40))
    vcard = (
        "<vCard xmlns='vcard-temp'><PHOTO><TYPE>image/png</TYPE>"
        f"<BINVAL>{base64.b64encode(png).decode()}</BINVAL></PHOTO></vCard>"
    )
    assert (await api.put("/users/alice@localhost/vcard", json={"vcard": vcard})).status_code == 200
    a.send_presence(pstatus="after")
    echo = await a.next_presence(pred=lambda p: p["status"] == "after")
    assert echo.xml.findtext("{vcard-temp:x:update}x/{vcard-temp:x:update}photo") == (
        hashlib.sha1(png).hexdigest()
    )
