"""XMPP over WebSocket (RFC 7395) on the edge's web listener, frame by frame,
with a raw client: what each malformed or misplaced frame gets, and the
limits before login."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
import websockets

from tests.conftest import add_user
from tests.webclient import CLOSE, FRAMING, OPEN, WsClient, auth


@pytest.fixture
async def srv(server_factory: Any) -> Any:
    s = await server_factory()
    await add_user(s, "alice")
    return s


async def _error_then_close(ws: WsClient, condition: str) -> list[str]:
    """The stream error, then <close/>, then the WebSocket closes (3.6, 3.6.1)."""
    frames = await ws.frames_until_closed()
    assert len(frames) >= 2, frames
    err, close = frames[-2], frames[-1]
    assert re.match(r"<stream:error xmlns:stream=.http://etherx.jabber.org/streams.>", err), err
    assert f"<{condition} " in err, err
    assert close == CLOSE.replace('"', "'"), close
    assert ws.ws.close_code == 1000
    return frames


async def test_open_and_close(srv: Any) -> None:
    ws = await WsClient.open(srv.http_port)
    assert ws.ws.subprotocol == "xmpp"
    await ws.send(OPEN)
    opened = await ws.recv()
    assert re.fullmatch(
        rf"<open xmlns='{FRAMING}' id='\w+' from='localhost' version='1.0' xml:lang='en'/>", opened
    ), opened
    features = await ws.recv()
    # the stream prefix is declared in the frame itself (3.3.3)
    assert features.startswith(
        "<stream:features xmlns:stream='http://etherx.jabber.org/streams'>"
    ), features
    assert "<mechanism>PLAIN</mechanism>" in features
    # channel binding names our TLS certificate: never offered over HTTP
    assert "-PLUS" not in features
    await ws.send(CLOSE)
    assert await ws.frames_until_closed() == [f"<close xmlns='{FRAMING}'/>"]


async def test_restart_after_sasl_needs_a_new_open(srv: Any) -> None:
    ws = await WsClient.open(srv.http_port)
    await ws.send(OPEN)
    await ws.expect("<stream:features")
    await ws.send(auth("alice"))
    await ws.expect("<success")
    # 3.3.5: the client opens a new stream; anything else first is refused
    await ws.send("<iq xmlns='jabber:client' type='get' id='x'><ping xmlns='urn:xmpp:ping'/></iq>")
    frames = await _error_then_close(ws, "bad-format")
    assert frames[0].startswith("<open "), frames


async def test_login_bind_and_ping(srv: Any) -> None:
    ws = await WsClient.open(srv.http_port)
    jid = await ws.login("alice")
    assert jid.startswith("alice@localhost/")
    await ws.send("<iq xmlns='jabber:client' type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>")
    reply = await ws.expect("id=.p1.")
    assert 'type="result"' in reply or "type='result'" in reply
    await ws.close()


@pytest.mark.parametrize(
    ("frame", "condition"),
    [
        ("<message xmlns='jabber:client'><body>unclosed</message>", "not-well-formed"),
        ("<iq xmlns='jabber:client'/><iq xmlns='jabber:client'/>", "not-well-formed"),
        ("<iq xmlns='jabber:client' type='get' id='a'>", "not-well-formed"),
        (" <open/>", "not-well-formed"),  # whitespace before '<' (3.3.3; 3.6.1: no keepalives)
        ("<!-- hi --><iq/>", "restricted-xml"),
        ("<iq xmlns='jabber:client' type='get' id='a'>&amp;</iq>", "bad-format"),
    ],
)
async def test_bad_frames_before_open(srv: Any, frame: str, condition: str) -> None:
    ws = await WsClient.open(srv.http_port)
    await ws.send(frame)
    frames = await _error_then_close(ws, condition)
    # 3.6.1: the open element response goes first, even for an error at the start
    assert frames[0].startswith(f"<open xmlns='{FRAMING}'"), frames


async def test_not_well_formed_frame_after_login(srv: Any) -> None:
    ws = await WsClient.open(srv.http_port)
    await ws.login("alice")
    await ws.send("<message xmlns='jabber:client' to='alice@localhost'><body>x</message>")
    await _error_then_close(ws, "not-well-formed")


async def test_two_elements_in_one_frame_after_login(srv: Any) -> None:
    ws = await WsClient.open(srv.http_port)
    await ws.login("alice")
    two = "<presence xmlns='jabber:client'/><presence xmlns='jabber:client'/>"
    await ws.send(two)
    await _error_then_close(ws, "not-well-formed")


async def test_open_in_the_wrong_namespace(srv: Any) -> None:
    ws = await WsClient.open(srv.http_port)
    await ws.send("<open xmlns='http://etherx.jabber.org/streams' to='localhost' version='1.0'/>")
    await _error_then_close(ws, "invalid-namespace")


async def test_tcp_stream_header_is_not_a_websocket_open(srv: Any) -> None:
    ws = await WsClient.open(srv.http_port)
    await ws.send(
        "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "
        "to='localhost' version='1.0'>"
    )
    await _error_then_close(ws, "not-well-formed")


async def test_unknown_host(srv: Any) -> None:
    ws = await WsClient.open(srv.http_port)
    await ws.send(f"<open xmlns='{FRAMING}' to='elsewhere.example' version='1.0'/>")
    await _error_then_close(ws, "host-unknown")


async def test_binary_frame(srv: Any) -> None:
    ws = await WsClient.open(srv.http_port)
    await ws.ws.send(OPEN.encode())  # bytes: a binary frame
    await _error_then_close(ws, "bad-format")


async def test_no_xmpp_subprotocol_is_refused(srv: Any) -> None:
    for protocols in ([], ["chat"]):
        with pytest.raises(websockets.InvalidStatus) as exc:
            await WsClient.open(srv.http_port, subprotocols=protocols)
        assert exc.value.response.status_code == 403
        # no 'xmpp' in the answer, so no client takes it for an XMPP connection
        assert "sec-websocket-protocol" not in exc.value.response.headers


async def test_stanza_before_authentication(srv: Any) -> None:
    ws = await WsClient.open(srv.http_port)
    await ws.send(OPEN)
    await ws.expect("<stream:features")
    await ws.send("<message xmlns='jabber:client' to='alice@localhost'><body>x</body></message>")
    await _error_then_close(ws, "not-authorized")


async def test_message_larger_than_the_preauth_limit(server_factory: Any) -> None:
    """Before login a message is bounded by preauth_stanza_size: just past it,
    policy-violation; far past it, uvicorn refuses the message before
    buffering it (1009, message too big)."""
    srv = await server_factory(preauth_stanza_size=4096)
    ws = await WsClient.open(srv.http_port)
    await ws.send(OPEN)
    await ws.expect("<stream:features")
    pad = "x" * 4500
    await ws.send(f"<iq xmlns='jabber:client' type='get' id='{pad}'/>")
    await _error_then_close(ws, "policy-violation")

    ws = await WsClient.open(srv.http_port)
    await ws.send(OPEN)
    await ws.expect("<stream:features")
    await ws.send("<iq xmlns='jabber:client' id='" + "x" * 200_000 + "'/>")
    with pytest.raises(websockets.ConnectionClosed):
        for _ in range(5):
            await ws.recv()
    assert ws.ws.close_code == 1009


async def test_authenticated_limit_is_max_stanza_size(server_factory: Any) -> None:
    srv = await server_factory(preauth_stanza_size=4096)
    await add_user(srv, "alice")
    ws = await WsClient.open(srv.http_port)
    jid = await ws.login("alice")
    body = "y" * 50_000  # far past the preauth limit, well within max_stanza_size
    await ws.send(
        f"<message xmlns='jabber:client' to='{jid}' id='big'><body>{body}</body></message>"
    )
    echoed = await ws.expect("id=.big.")
    assert body in echoed
    await ws.close()


async def test_insecure_listener_refuses_authentication(server_factory: Any) -> None:
    srv = await server_factory(http_secure="never")
    await add_user(srv, "alice")
    ws = await WsClient.open(srv.http_port)
    await ws.send(OPEN)
    features = await ws.expect("<stream:features")
    assert "<mechanism>" not in features, features
    await ws.send(auth("alice"))
    failure = await ws.expect("<failure")
    assert "<encryption-required/>" in failure, failure


async def test_failed_logins_close_the_stream(srv: Any) -> None:
    ws = await WsClient.open(srv.http_port)
    await ws.send(OPEN)
    await ws.expect("<stream:features")
    for _ in range(2):
        await ws.send(auth("alice", "wrong"))
        assert "<not-authorized/>" in await ws.expect("<failure")
    await ws.send(auth("alice", "wrong"))
    frames = await _error_then_close(ws, "policy-violation")
    assert any("<not-authorized/>" in f for f in frames)


async def test_unauthenticated_connections_per_ip(server_factory: Any) -> None:
    srv = await server_factory(max_unauthenticated_per_ip=1)
    first = await WsClient.open(srv.http_port)
    await first.send(OPEN)
    await first.expect("<stream:features")
    second = await WsClient.open(srv.http_port)
    # refused at once: the server does not wait for the client's <open/>
    frames = await _error_then_close(second, "policy-violation")
    assert "too many unauthenticated connections" in frames[-2]
    await first.close()


async def test_negotiation_timeout(server_factory: Any) -> None:
    srv = await server_factory(negotiation_timeout=0.5)
    ws = await WsClient.open(srv.http_port)
    await ws.send(OPEN)
    await ws.expect("<stream:features")
    frames = await asyncio.wait_for(_error_then_close(ws, "connection-timeout"), 10)
    assert frames


async def test_wrong_path_and_plain_get(srv: Any) -> None:
    import httpx

    async with httpx.AsyncClient() as http:
        r = await http.get(f"http://127.0.0.1:{srv.http_port}/xmpp-websocket")
        assert r.status_code == 426
        r = await http.get(f"http://127.0.0.1:{srv.http_port}/nothing-here")
        assert r.status_code == 404


async def test_trusted_proxy_headers(server_factory: Any) -> None:
    """Behind a TLS-terminating proxy: its X-Forwarded-Proto makes the stream
    secure and X-Forwarded-For is the client's address; from anyone else the
    same headers change nothing."""
    headers = {"X-Forwarded-For": "203.0.113.5", "X-Forwarded-Proto": "https"}
    for trusted, secure, ip in ((["127.0.0.1"], True, "203.0.113.5"), ([], False, "127.0.0.1")):
        srv = await server_factory(http_secure="never", http_trusted_proxies=trusted)
        ws = WsClient(
            await websockets.connect(
                f"ws://127.0.0.1:{srv.http_port}/xmpp-websocket",
                subprotocols=["xmpp"],  # type: ignore[list-item]
                additional_headers=headers,
            )
        )
        await ws.send(OPEN)
        features = await ws.expect("<stream:features")
        assert ("<mechanism>PLAIN</mechanism>" in features) is secure, features
        (session,) = srv.edge.sessions
        assert session.ip == ip
        await ws.close()
