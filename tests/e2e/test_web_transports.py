"""Sessions over the web listener (RFC 7395 WebSocket, XEP-0206 BOSH) talk to
sessions over TCP, in both modes: a web session is a session like any other,
and the end of its transport (a dropped socket, a BOSH client that stops
coming back) ends it for its contacts too."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import httpx

from tests.conftest import session_count, wait_until
from tests.webclient import BoshClient, WsClient


def _message(to: str, body: str, id_: str = "m1") -> str:
    return (
        f"<message xmlns='jabber:client' to='{to}' type='chat' id='{id_}'>"
        f"<body>{body}</body></message>"
    )


async def test_websocket_client_chats_with_a_tcp_client(server: Any, connect: Any) -> None:
    bob = await connect("bob@localhost/b")
    ws = await WsClient.open(server.http_port)
    try:
        jid = await ws.login("alice", resource="web")
        assert jid == "alice@localhost/web"
        await ws.send(_message("bob@localhost/b", "hello over websocket"))
        msg = await bob.next_message()
        assert msg["body"] == "hello over websocket"
        assert str(msg["from"]) == "alice@localhost/web"
        bob.send_message(mto=jid, mbody="hello back over tcp", mtype="chat")
        frame = await ws.expect("hello back over tcp")
        # a standalone document: the stanza declares its namespace (3.3.3)
        assert re.match(r"<message [^>]*xmlns=.jabber:client.", frame), frame
    finally:
        await ws.close()


async def test_bosh_client_chats_with_a_tcp_client(server: Any, connect: Any) -> None:
    bob = await connect("bob@localhost/b")
    b = BoshClient(server.http_port)
    try:
        jid = await b.login("alice")
        text = await b.post(_message("bob@localhost/b", "hello over bosh"))
        msg = await bob.next_message()
        assert msg["body"] == "hello over bosh"
        assert str(msg["from"]) == jid
        # long polling: an empty request is held until the reply arrives
        poll = asyncio.create_task(b.post())
        await asyncio.sleep(0.3)
        assert not poll.done(), "an empty request must be held while nothing is queued"
        bob.send_message(mto=jid, mbody="hello back to bosh", mtype="chat")
        text = await asyncio.wait_for(poll, 10)
        assert "hello back to bosh" in text, text
        assert 'xmlns="jabber:client"' in text or "xmlns='jabber:client'" in text
    finally:
        await b.close()


async def test_closed_websocket_ends_the_session_for_contacts(server: Any, connect: Any) -> None:
    bob = await connect("bob@localhost/b")
    ws = await WsClient.open(server.http_port)
    jid = await ws.login("alice", resource="web")
    # directed presence: bob is told when the session ends (RFC 6121 4.6.3)
    await ws.send("<presence xmlns='jabber:client' to='bob@localhost/b'/>")
    await bob.next_presence(pred=lambda p: str(p["from"]) == jid and p["type"] != "unavailable")
    n = await session_count(server)
    await ws.close()
    p = await bob.next_presence(
        timeout=10, pred=lambda p: str(p["from"]) == jid and p["type"] == "unavailable"
    )
    assert p["type"] == "unavailable"

    async def fewer() -> bool:
        return await session_count(server) == n - 1

    await wait_until(fewer, what="the websocket session unbound")


async def test_bosh_client_that_goes_away_is_cleaned_up(server_factory: Any, connect: Any) -> None:
    """XEP-0124 section 10: no request for 'inactivity' seconds ends the
    session, and contacts see it unavailable."""
    from tests.conftest import add_user

    srv = await server_factory(bosh_inactivity=1, bosh_max_wait=1)
    for name in ("alice", "bob"):
        await add_user(srv, name)
    bob = await connect("bob@localhost/b", srv=srv)
    b = BoshClient(srv.http_port)
    try:
        jid = await b.login("alice")
        await b.post("<presence xmlns='jabber:client' to='bob@localhost/b'/>")
        await bob.next_presence(pred=lambda p: str(p["from"]) == jid and p["type"] != "unavailable")
        # the client goes away: no further request
        p = await bob.next_presence(
            timeout=15, pred=lambda p: str(p["from"]) == jid and p["type"] == "unavailable"
        )
        assert p["type"] == "unavailable"
        # its sid is gone (after the end was kept for one more request)
        text = await b.post()
        assert "type='terminate'" in text, text
    finally:
        await b.close()


async def test_host_meta_advertises_both_endpoints(server: Any) -> None:
    port = server.http_port
    async with httpx.AsyncClient() as http:
        xrd = await http.get(f"http://127.0.0.1:{port}/.well-known/host-meta")
        jrd = await http.get(f"http://127.0.0.1:{port}/.well-known/host-meta.json")
    assert xrd.status_code == 200 and jrd.status_code == 200
    assert xrd.headers["content-type"].startswith("application/xrd+xml")
    assert xrd.headers["access-control-allow-origin"] == "*"
    ws_url = f"ws://127.0.0.1:{port}/xmpp-websocket"
    bosh_url = f"http://127.0.0.1:{port}/http-bind"
    assert f"rel='urn:xmpp:alt-connections:websocket' href='{ws_url}'" in xrd.text
    assert f"rel='urn:xmpp:alt-connections:xbosh' href='{bosh_url}'" in xrd.text
    links = {link["rel"]: link["href"] for link in jrd.json()["links"]}
    assert links == {
        "urn:xmpp:alt-connections:websocket": ws_url,
        "urn:xmpp:alt-connections:xbosh": bosh_url,
    }
    # the advertised endpoint works: the URL a browser would take from here
    ws = await WsClient.open(port)
    try:
        assert await ws.login("carol")
    finally:
        await ws.close()


async def test_bosh_output_waits_between_requests(server: Any, connect: Any) -> None:
    """No request is held while a message arrives: the session is kept, its
    output waits, and the client's next request carries it."""
    bob = await connect("bob@localhost/b")
    b = BoshClient(server.http_port)
    try:
        jid = await b.login("alice")
        bob.send_message(mto=jid, mbody="sent between requests", mtype="chat")
        await asyncio.sleep(0.5)  # no request of alice's is open meanwhile
        text = await b.post()
        if "sent between requests" not in text:
            text = await b.post()  # a cluster may take longer than the first request
        assert "sent between requests" in text, text
    finally:
        await b.close()
