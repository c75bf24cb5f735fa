"""BOSH (XEP-0124, XEP-0206) on the edge's web listener with a raw HTTP
client: session creation, restarts, long polling, request ids, and the
terminal binding conditions for what a client gets wrong."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest

from tests.conftest import add_user, session_count, wait_until
from tests.webclient import HTTPBIND, BoshClient, auth


@pytest.fixture
async def srv(server_factory: Any) -> Any:
    s = await server_factory()
    await add_user(s, "alice")
    return s


@pytest.fixture
async def client(srv: Any) -> Any:
    b = BoshClient(srv.http_port)
    yield b
    await b.close()


def _attrs(text: str) -> dict[str, str]:
    m = re.match(r"<body ([^>]*?)/?>", text)
    assert m, text
    return dict(re.findall(r"([\w:]+)='([^']*)'", m.group(1)))


def _terminated(text: str, condition: str) -> None:
    a = _attrs(text)
    assert a.get("type") == "terminate", text
    assert a.get("condition") == condition, text


async def test_session_creation_attributes(client: Any) -> None:
    text = await client.create(wait="30", hold="1", ver="1.11")
    a = _attrs(text)
    assert len(a["sid"]) >= 16
    assert a["wait"] == "30" and a["hold"] == "1" and a["requests"] == "2"
    assert a["ver"] == "1.11"
    assert a["from"] == "localhost" and a["authid"]
    assert a["xmpp:version"] == "1.0" and a["xmpp:restartlogic"] == "true"
    assert a["xmlns:xmpp"] == "urn:xmpp:xbosh"
    assert int(a["inactivity"]) > 0 and int(a["polling"]) >= 0
    assert a["secure"] == "true"  # loopback counts as secure by default
    # XEP-0206 section 6: the features come in the creation response
    assert "<stream:features" in text and "<mechanism>PLAIN</mechanism>" in text
    assert "-PLUS" not in text


async def test_overlong_wait_and_hold_are_lowered(client: Any) -> None:
    a = _attrs(await client.create(wait="3600", hold="5"))
    assert a["wait"] == "60"  # bosh_max_wait
    assert a["hold"] == "1" and a["requests"] == "2"  # bosh_max_hold


async def test_version_is_the_lower_of_both(client: Any) -> None:
    a = _attrs(await client.create(ver="1.6"))
    assert a["ver"] == "1.6"


async def test_sasl_then_restart_then_bind(client: Any) -> None:
    await client.create()
    text = await client.post(auth("alice"))
    assert "<success" in text
    text = await client.post(xmpp__restart="true", to="localhost")
    assert "<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>" in text, text
    text = await client.post(
        "<iq xmlns='jabber:client' type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
        "<resource>web</resource></bind></iq>"
    )
    assert "<jid>alice@localhost/web</jid>" in text


async def test_empty_request_is_held_for_wait(srv: Any, client: Any) -> None:
    await client.create(wait="1")
    text = await client.post(auth("alice"))
    assert "<success" in text
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    text = await client.post()
    waited = loop.time() - t0
    assert re.fullmatch(rf"<body xmlns='{HTTPBIND}'/>", text), text
    assert 0.8 < waited < 5, waited


async def test_too_many_held_requests_answers_the_oldest(srv: Any, client: Any) -> None:
    """hold=1: a second empty request sends the first one back, empty."""
    await client.login("alice")
    first = asyncio.create_task(client.post())
    await asyncio.sleep(0.2)
    assert not first.done()
    second = asyncio.create_task(client.post())
    text = await asyncio.wait_for(first, 5)
    assert re.fullmatch(rf"<body xmlns='{HTTPBIND}'/>", text), text
    assert not second.done()
    await client.post("<presence xmlns='jabber:client' type='unavailable'/>")
    await asyncio.wait_for(second, 5)


async def test_unknown_sid(client: Any) -> None:
    client.sid = "no-such-session"
    _terminated(await client.post(), "item-not-found")


async def test_rid_out_of_window_ends_the_session(srv: Any, client: Any) -> None:
    await client.login("alice")
    assert await session_count(srv) == 1
    _terminated(await client.post(rid=client.rid + 100), "item-not-found")
    await wait_until(lambda: len(srv.edge.local) == 0, what="the session ended")
    # the session is over for its next request too
    assert _attrs(await client.post())["type"] == "terminate"


async def test_replayed_rid_gets_the_same_answer(srv: Any, client: Any) -> None:
    await client.create()
    first = await client.post(auth("alice"))
    assert "<success" in first
    again = await client.post(rid=client.rid)
    assert again == first
    # an old rid whose answer is no longer kept: item-not-found
    await client.post(xmpp__restart="true", to="localhost")
    await client.post()  # wait elapses
    await client.post()
    _terminated(await client.post(rid=client.rid - 3), "item-not-found")


async def test_requests_are_taken_in_rid_order(srv: Any, client: Any) -> None:
    """A request that arrives ahead of its turn waits for the one before it."""
    await client.login("alice")
    jid = client.jid
    later = asyncio.create_task(
        client.post(
            f"<message xmlns='jabber:client' to='{jid}' id='two'><body>2</body></message>",
            rid=client.rid + 2,
        )
    )
    await asyncio.sleep(0.2)
    text = await client.post(
        f"<message xmlns='jabber:client' to='{jid}' id='one'><body>1</body></message>",
        rid=client.rid + 1,
    )
    client.rid += 2
    rest = text + await asyncio.wait_for(later, 10)
    assert rest.index('id="one"') < rest.index('id="two"'), rest


async def test_more_requests_ahead_than_allowed(srv: Any, client: Any) -> None:
    """requests='2': one request may come ahead of its turn; one further
    ahead is outside the window (XEP-0124 section 14): item-not-found, and
    the session ends, the early request with it."""
    await client.login("alice")
    early = asyncio.create_task(client.post(rid=client.rid + 2))
    await asyncio.sleep(0.2)
    assert not early.done()
    _terminated(await client.post(rid=client.rid + 3), "item-not-found")
    assert _attrs(await asyncio.wait_for(early, 5))["type"] == "terminate"
    await wait_until(lambda: len(srv.edge.local) == 0, what="the session ended")


@pytest.mark.parametrize(
    ("body", "condition"),
    [
        ("<body xmlns='http://jabber.org/protocol/httpbind' rid='1' to='localhost'", "bad-request"),
        (
            "<bod xmlns='http://jabber.org/protocol/httpbind' rid='1' to='localhost'/>",
            "bad-request",
        ),
        ("<body xmlns='urn:wrong' rid='1' to='localhost'/>", "bad-request"),
        ("<body xmlns='http://jabber.org/protocol/httpbind' to='localhost'/>", "bad-request"),
        (
            "<body xmlns='http://jabber.org/protocol/httpbind' rid='x' to='localhost'/>",
            "bad-request",
        ),
        ("<body xmlns='http://jabber.org/protocol/httpbind' rid='1'/>", "improper-addressing"),
        (
            "<body xmlns='http://jabber.org/protocol/httpbind' rid='1' to='elsewhere.example'/>",
            "host-unknown",
        ),
        ("<!DOCTYPE x><body xmlns='http://jabber.org/protocol/httpbind' rid='1'/>", "bad-request"),
        (
            "<body xmlns='http://jabber.org/protocol/httpbind' rid='1' to='localhost' wait='-1'/>",
            "bad-request",
        ),
    ],
)
async def test_bad_session_requests(client: Any, body: str, condition: str) -> None:
    r = await client.post_raw(body)
    assert r.status_code == 200
    _terminated(r.text, condition)


async def test_missing_xmpp_version_is_a_stream_error(client: Any) -> None:
    text = await client.create(xmpp__version="0.9")
    _terminated(text, "remote-stream-error")
    assert "<unsupported-version " in text


async def test_body_above_the_preauth_limit(srv: Any, client: Any) -> None:
    await client.create()
    big = "<iq xmlns='jabber:client' type='get' id='" + "x" * 30_000 + "'/>"
    r = await client.post_raw(
        f"<body xmlns='{HTTPBIND}' rid='{client.rid + 1}' sid='{client.sid}'>{big}</body>"
    )
    assert r.status_code == 413
    _terminated(r.text, "policy-violation")
    # a creation request is held to the same bound
    r = await client.post_raw(f"<body xmlns='{HTTPBIND}' rid='5' to='localhost'>{big}</body>")
    assert r.status_code == 413


async def test_body_within_the_authenticated_limit(srv: Any, client: Any) -> None:
    await client.login("alice")
    body = "z" * 60_000
    text = await client.post(
        f"<message xmlns='jabber:client' to='{client.jid}' id='big'><body>{body}</body></message>"
    )
    if body not in text:  # the echo may come with the next request
        text = await client.post()
    assert body in text


async def test_stanza_before_authentication(client: Any) -> None:
    await client.create()
    text = await client.post("<message xmlns='jabber:client' to='alice@localhost'/>")
    _terminated(text, "remote-stream-error")
    assert "<not-authorized " in text


async def test_failed_logins_end_the_session(srv: Any, client: Any) -> None:
    await client.create()
    for _ in range(2):
        assert "<not-authorized/>" in await client.post(auth("alice", "wrong"))
    text = await client.post(auth("alice", "wrong"))
    _terminated(text, "remote-stream-error")
    assert "<policy-violation " in text and "<not-authorized/>" in text


async def test_terminate_ends_the_session(srv: Any, client: Any) -> None:
    await client.login("alice")
    assert len(srv.edge.local) == 1
    text = await client.post(
        "<presence xmlns='jabber:client' type='unavailable'/>", type="terminate"
    )
    assert _attrs(text)["type"] == "terminate" and "condition" not in _attrs(text)
    await wait_until(lambda: len(srv.edge.local) == 0, what="the session ended")


async def test_insecure_listener_refuses_authentication(server_factory: Any) -> None:
    srv = await server_factory(http_secure="never")
    await add_user(srv, "alice")
    b = BoshClient(srv.http_port)
    try:
        text = await b.create()
        assert _attrs(text)["secure"] == "false"
        assert "<mechanism>" not in text
        assert "<encryption-required/>" in await b.post(auth("alice"))
    finally:
        await b.close()


async def test_unauthenticated_sessions_per_ip(server_factory: Any) -> None:
    srv = await server_factory(max_unauthenticated_per_ip=1)
    a, b = BoshClient(srv.http_port), BoshClient(srv.http_port)
    try:
        assert "sid=" in await a.create()
        _terminated(await b.create(), "policy-violation")
    finally:
        await a.close()
        await b.close()


async def test_cors_preflight(srv: Any, client: Any) -> None:
    r = await client.http.options(
        client.url,
        headers={"Origin": "http://example.org", "Access-Control-Request-Method": "POST"},
    )
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == "*"
    assert "POST" in r.headers["access-control-allow-methods"]


async def test_cors_origins_setting(server_factory: Any) -> None:
    srv = await server_factory(http_cors_origins=["https://chat.example.org"])
    b = BoshClient(srv.http_port)
    try:
        ok = await b.http.options(b.url, headers={"Origin": "https://chat.example.org"})
        assert ok.headers["access-control-allow-origin"] == "https://chat.example.org"
        other = await b.http.options(b.url, headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers
    finally:
        await b.close()
