"""External components (XEP-0114) with a real component, slixmpp's
ComponentXMPP, against the embedded server and a cluster. In the cluster the
component connects to the second edge and the clients to the first, so every
stanza between them crosses edges and the component is found through Redis.

Each test uses a component domain of its own, so tests sharing one cluster
never see each other's connections."""

from __future__ import annotations

import asyncio
import hashlib
import re
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import slixmpp
from slixmpp.exceptions import IqError, IqTimeout
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from ..cluster_target import ClusterServer, ClusterThread
from ..conftest import PASSWORD, Client, Raw, add_user, send_initial_presence

pytestmark = pytest.mark.slow

NAMES = ("msg", "pres", "iq", "away", "secret", "conflict", "from", "disco", "gone", "reap")
COMPONENTS = {f"{n}.localhost": f"secret-{n}" for n in NAMES}
SETTINGS: dict[str, Any] = {
    "components": [f"{d}:{s}" for d, s in COMPONENTS.items()],
    "component_port": 0,
}
CA = "jabber:component:accept"


class Bot(slixmpp.ComponentXMPP):  # type: ignore[misc]
    """A component with queues of what arrives, for tests to await on."""

    def __init__(self, domain: str) -> None:
        super().__init__(domain, COMPONENTS[domain])
        self.messages: asyncio.Queue[Any] = asyncio.Queue()
        self.presences: asyncio.Queue[Any] = asyncio.Queue()
        self.iqs: asyncio.Queue[Any] = asyncio.Queue()
        for kind, queue in (
            ("message", self.messages),
            ("presence", self.presences),
            ("iq", self.iqs),
        ):
            self.register_handler(
                Callback(f"bot {kind}", MatchXPath(f"{{{CA}}}{kind}"), queue.put_nowait)
            )

    async def next(self, queue: asyncio.Queue[Any], timeout: float = 5.0) -> Any:
        return await asyncio.wait_for(queue.get(), timeout)


@pytest.fixture(scope="module")
def component_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterThread]:
    ct = ClusterThread(tmp_path_factory.mktemp("component-cluster"), SETTINGS)
    ct.start()
    yield ct
    ct.stop()


@pytest.fixture
async def srv(request: pytest.FixtureRequest, mode: str, server_factory: Any) -> AsyncIterator[Any]:
    if mode == "cluster":
        s: Any = ClusterServer(request.getfixturevalue("component_cluster"))
        await s.open()
        await s.reset()
    else:
        s = await server_factory(**SETTINGS)
    assert s.component_port > 0
    for name in ("alice", "bob"):
        await add_user(s, name)
    yield s
    if mode == "cluster":
        await s.close()


@pytest.fixture
async def env(srv: Any) -> AsyncIterator[Any]:
    """Connect clients and components to ``srv``; everything is closed after."""
    opened: list[Any] = []

    class Env:
        server = srv

        async def client(self, jid: str) -> Client:
            c = Client(jid, PASSWORD)
            for p in ("xep_0030", "xep_0199"):
                c.register_plugin(p)
            c.plugin["feature_mechanisms"].unencrypted_plain = False
            c.enable_direct_tls = False
            started: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
            c.add_event_handler(
                "session_start", lambda _e: started.done() or started.set_result(True)
            )
            c.connect("127.0.0.1", srv.c2s_port)
            opened.append(c)
            await asyncio.wait_for(started, 10)
            await send_initial_presence(c)
            return c

        async def bot(self, domain: str) -> Bot:
            b = Bot(domain)
            started: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
            b.add_event_handler(
                "session_start", lambda _e: started.done() or started.set_result(True)
            )
            b.connect("127.0.0.1", srv.component_port)
            opened.append(b)
            await asyncio.wait_for(started, 10)
            return b

        async def raw(self, domain: str) -> tuple[Raw, str]:
            """A raw component stream to ``domain``: its stream id."""
            r = await Raw.open(srv.component_port)
            opened.append(r)
            r.send(
                f"<stream:stream xmlns='{CA}' "
                f"xmlns:stream='http://etherx.jabber.org/streams' to='{domain}'>"
            )
            head = await r.expect(rb"<stream:stream[^>]*>")
            m = re.search(rb"id='([^']+)'", head)
            assert m, head
            return r, m.group(1).decode()

    yield Env()
    for x in opened:
        if isinstance(x, Raw):
            x.close()
        else:
            x.auto_reconnect = False
            await asyncio.wait_for(x.disconnect(wait=False), 10)


def handshake(sid: str, secret: str) -> str:
    return f"<handshake>{hashlib.sha1((sid + secret).encode()).hexdigest()}</handshake>"


async def test_messages_both_ways(env):
    alice = await env.client("alice@localhost/a")
    bot = await env.bot("msg.localhost")
    alice.send_message(mto="msg.localhost", mbody="to the domain", mtype="chat")
    m = await bot.next(bot.messages)
    assert m["body"] == "to the domain" and m["from"] == "alice@localhost/a"
    assert m["to"] == "msg.localhost"
    m.reply("reply from the domain").send()
    r = await alice.next_message()
    assert r["body"] == "reply from the domain" and r["from"] == "msg.localhost"
    # any JID in the component's domain reaches it, and it may send from any
    alice.send_message(mto="x@msg.localhost/r", mbody="to a user of it", mtype="chat")
    m = await bot.next(bot.messages)
    assert m["body"] == "to a user of it" and m["to"] == "x@msg.localhost/r"
    m.reply("from a user of it").send()
    r = await alice.next_message()
    assert r["body"] == "from a user of it" and r["from"] == "x@msg.localhost/r"
    # to the user's bare JID: RFC 6121 delivery as for any sender
    bot.send_message(mto="alice@localhost", mfrom="news@msg.localhost", mbody="bare", mtype="chat")
    r = await alice.next_message()
    assert r["body"] == "bare" and r["from"] == "news@msg.localhost"


async def test_presence_both_ways(env):
    alice = await env.client("alice@localhost/a")
    bot = await env.bot("pres.localhost")
    alice.send_presence(pto="pres.localhost", pstatus="hello component")
    p = await bot.next(bot.presences)
    assert p["from"] == "alice@localhost/a" and p["status"] == "hello component"
    bot.send_presence(pto="alice@localhost/a", pfrom="pres.localhost", pstatus="hello user")
    p = await alice.next_presence(pred=lambda p: p["from"] == "pres.localhost")
    assert p["status"] == "hello user"


async def test_iq_round_trips(env):
    alice = await env.client("alice@localhost/a")
    bot = await env.bot("iq.localhost")
    pending = asyncio.ensure_future(alice.plugin["xep_0199"].send_ping("iq.localhost", timeout=5))
    iq = await bot.next(bot.iqs)
    assert iq["type"] == "get" and iq["from"] == "alice@localhost/a"
    assert iq.xml.find("{urn:xmpp:ping}ping") is not None
    iq.reply(clear=True).send()
    result = await pending
    assert result["type"] == "result" and result["from"] == "iq.localhost"
    # the component asks the client (its ping plugin answers)
    q = bot.Iq()
    q["type"], q["to"], q["from"] = "get", "alice@localhost/a", "iq.localhost"
    q.xml.append(ET.Element("{urn:xmpp:ping}ping"))
    answer = await q.send(timeout=5)
    assert answer["type"] == "result" and answer["from"] == "alice@localhost/a"


async def test_away_component_is_service_unavailable(env):
    alice = await env.client("alice@localhost/a")
    alice.send_message(mto="away.localhost", mbody="anyone?", mtype="chat")
    m = await alice.next_message()
    assert m["type"] == "error" and m["from"] == "away.localhost"
    assert m["error"]["condition"] == "service-unavailable"
    with pytest.raises(IqError) as exc:
        await alice.plugin["xep_0199"].send_ping("u@away.localhost/r", timeout=5)
    assert exc.value.iq["error"]["condition"] == "service-unavailable"


async def test_away_again_after_disconnect(env):
    alice = await env.client("alice@localhost/a")
    bot = await env.bot("gone.localhost")
    alice.send_message(mto="gone.localhost", mbody="there?", mtype="chat")
    assert (await bot.next(bot.messages))["body"] == "there?"
    bot.auto_reconnect = False
    await asyncio.wait_for(bot.disconnect(wait=False), 10)
    for _ in range(100):
        try:
            await alice.plugin["xep_0199"].send_ping("gone.localhost", timeout=5)
        except IqError as exc:
            assert exc.iq["error"]["condition"] == "service-unavailable"
            break
        except IqTimeout:
            pass  # the component took it before it went
        await asyncio.sleep(0.05)
    else:
        pytest.fail("the component still counts as connected")


async def test_wrong_secret_is_not_authorized(env):
    r, sid = await env.raw("secret.localhost")
    r.send(handshake(sid, "not the secret"))
    out = await r.expect(b"</stream:stream>")
    assert b"<not-authorized xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>" in out
    assert b"<handshake/>" not in out
    await r.closed()


async def test_unknown_domain_is_host_unknown(env):
    r = await Raw.open(env.server.component_port)
    try:
        r.send(
            f"<stream:stream xmlns='{CA}' "
            "xmlns:stream='http://etherx.jabber.org/streams' to='nobody.localhost'>"
        )
        out = await r.expect(b"</stream:stream>")
        assert b"<stream:stream" in out
        assert b"<host-unknown xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>" in out
        await r.closed()
    finally:
        r.close()


async def test_second_connection_is_a_conflict(env):
    bot = await env.bot("conflict.localhost")
    r, sid = await env.raw("conflict.localhost")
    r.send(handshake(sid, COMPONENTS["conflict.localhost"]))
    out = await r.expect(b"</stream:stream>")
    assert b"<conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>" in out
    assert b"<handshake/>" not in out
    # the first connection still holds the domain
    alice = await env.client("alice@localhost/a")
    alice.send_message(mto="conflict.localhost", mbody="still there?", mtype="chat")
    m = await bot.next(bot.messages)
    assert m["body"] == "still there?"


async def test_from_outside_the_domain_is_invalid_from(env):
    r, sid = await env.raw("from.localhost")
    r.send(handshake(sid, COMPONENTS["from.localhost"]))
    await r.expect(b"<handshake/>")
    r.send("<message from='alice@localhost' to='bob@localhost'><body>spoofed</body></message>")
    out = await r.expect(b"</stream:stream>")
    assert b"<invalid-from xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>" in out
    await r.closed()


async def test_disco_items_list_the_components(env):
    alice = await env.client("alice@localhost/a")
    items = await alice.plugin["xep_0030"].get_items(jid="localhost", timeout=5)
    jids = {i[0] for i in items["disco_items"]["items"]}
    assert set(COMPONENTS) <= jids


@pytest.mark.slow
@pytest.mark.cluster_only
async def test_dead_edge_releases_its_components(mode, server_factory):
    """kill -9 of the edge holding a component: the router reaping the edge
    releases the domain, and the component can connect to another edge."""
    srv = await server_factory(**SETTINGS)
    await add_user(srv, "alice")
    bot = Bot("reap.localhost")
    started: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
    bot.add_event_handler("session_start", lambda _e: started.done() or started.set_result(True))
    bot.connect("127.0.0.1", srv.ct.component_port(1))
    await asyncio.wait_for(started, 10)
    bot.auto_reconnect = False
    srv.ct.cluster.edges[1].kill()
    # on edge 1 now: refused (conflict) until the reaper has released the domain
    secret = COMPONENTS["reap.localhost"]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while True:
        r = await Raw.open(srv.ct.component_port(0))
        r.send(
            f"<stream:stream xmlns='{CA}' "
            "xmlns:stream='http://etherx.jabber.org/streams' to='reap.localhost'>"
        )
        head = await r.expect(rb"<stream:stream[^>]*>")
        m = re.search(rb"id='([^']+)'", head)
        assert m
        r.send(handshake(m.group(1).decode(), secret))
        out = await r.expect(rb"<handshake/>|</stream:stream>")
        if out.endswith(b"<handshake/>"):
            break
        assert b"<conflict " in out
        r.close()
        assert loop.time() < deadline, "the dead edge's component was not released"
        await asyncio.sleep(0.3)
    try:
        c = Client("alice@localhost/a", PASSWORD)
        c.enable_direct_tls = False
        c.plugin["feature_mechanisms"].unencrypted_plain = False
        ok: asyncio.Future[bool] = loop.create_future()
        c.add_event_handler("session_start", lambda _e: ok.done() or ok.set_result(True))
        c.connect("127.0.0.1", srv.c2s_port)
        await asyncio.wait_for(ok, 10)
        c.send_message(mto="reap.localhost", mbody="after the crash", mtype="chat")
        got = await r.expect(b"</message>")
        assert b"after the crash" in got and CA.encode() in got
        await asyncio.wait_for(c.disconnect(wait=False), 10)
    finally:
        r.close()


@pytest.mark.embedded_only
async def test_listener_binds_loopback_and_closes_without_components(tmp_path: Path):
    from services.app.embedded import EmbeddedServer

    from ..conftest import make_settings

    srv = EmbeddedServer(make_settings(tmp_path / "a", **SETTINGS))
    await srv.start()
    try:
        assert srv.edge is not None and srv.edge.component_address is not None
        assert srv.edge.component_address[0] == "127.0.0.1"
    finally:
        await srv.stop()
    srv = EmbeddedServer(make_settings(tmp_path / "b", component_port=0))
    await srv.start()
    try:
        assert srv.component_port == -1  # no component configured: no listener
    finally:
        await srv.stop()
