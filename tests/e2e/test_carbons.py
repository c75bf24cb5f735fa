"""Message Carbons (XEP-0280) with real slixmpp clients (its xep_0280
plugin), on the embedded server and on a cluster, where the user's two
resources sit on different edges so each copy crosses processes."""

from __future__ import annotations

import asyncio
import secrets
import xml.etree.ElementTree as ET
from types import SimpleNamespace
from typing import Any

from services.cluster.redis_registry import RedisRegistry
from services.core.routing import Envelope, Session
from services.features.catalog import load_features
from services.router.caches import UserCaches
from services.xmpp.jid import JID
from services.xmpp.tree import parse_element

from ..conftest import Client, send_initial_presence

PLUGINS = ("xep_0030", "xep_0199", "xep_0280")


def second_edge(server: Any, mode: str) -> Any:
    """Where a second client connects: the cluster's other edge."""
    return SimpleNamespace(c2s_port=server.ct.edge_port(1)) if mode == "cluster" else server


def carbon_queues(c: Client) -> tuple[asyncio.Queue[Any], asyncio.Queue[Any]]:
    received: asyncio.Queue[Any] = asyncio.Queue()
    sent: asyncio.Queue[Any] = asyncio.Queue()
    c.add_event_handler("carbon_received", received.put_nowait)
    c.add_event_handler("carbon_sent", sent.put_nowait)
    return received, sent


async def next_plain(c: Client) -> Any:
    """The next message that is no carbon (those go to the carbon queues)."""
    while True:
        m = await c.next_message(10)
        if not m.xml.findall("{urn:xmpp:carbons:2}*"):
            return m


async def test_received_and_sent_carbons(server: Any, connect: Any, mode: str) -> None:
    other = second_edge(server, mode)
    a = await connect("alice@localhost/a", plugins=PLUGINS)
    b = await connect("alice@localhost/b", plugins=PLUGINS, srv=other)
    bob = await connect("bob@localhost/r")
    await a.plugin["xep_0280"].enable()
    await b.plugin["xep_0280"].enable()
    a_received, a_sent = carbon_queues(a)
    b_received, b_sent = carbon_queues(b)

    bob.send_message(mto="alice@localhost/a", mbody="what man art thou", mtype="chat")
    got = await next_plain(a)
    assert got["body"] == "what man art thou" and got["from"] == "bob@localhost/r"
    carbon = await asyncio.wait_for(b_received.get(), 10)
    assert carbon["from"] == "alice@localhost" and carbon["to"] == "alice@localhost/b"
    assert carbon["type"] == "chat"
    inner = carbon["carbon_received"]
    assert inner["from"] == "bob@localhost/r" and inner["to"] == "alice@localhost/a"
    assert inner["body"] == "what man art thou"

    a.send_message(mto="bob@localhost/r", mbody="neither, fair saint", mtype="chat")
    assert (await bob.next_message(10))["body"] == "neither, fair saint"
    carbon = await asyncio.wait_for(b_sent.get(), 10)
    assert carbon["from"] == "alice@localhost" and carbon["to"] == "alice@localhost/b"
    inner = carbon["carbon_sent"]
    assert inner["from"] == "alice@localhost/a" and inner["to"] == "bob@localhost/r"
    assert inner["body"] == "neither, fair saint"

    # the other way round, from the other edge
    b.send_message(mto="bob@localhost/r", mbody="from b", mtype="chat")
    assert (await bob.next_message(10))["body"] == "from b"
    carbon = await asyncio.wait_for(a_sent.get(), 10)
    assert carbon["carbon_sent"]["body"] == "from b"
    # a bob's marker to a's full JID comes next: a got no copy of anything
    # it sent or was sent, and b no copy of the message it sent
    marker = secrets.token_hex(4)
    bob.send_message(mto="alice@localhost/a", mbody=marker, mtype="chat")
    assert (await next_plain(a))["body"] == marker
    assert (await asyncio.wait_for(b_received.get(), 10))["carbon_received"]["body"] == marker
    assert a_received.empty() and b_sent.empty()


async def test_a_bare_jid_message_and_the_private_hint(
    server: Any, connect: Any, mode: str
) -> None:
    a = await connect("alice@localhost/a", plugins=PLUGINS, presence=False)
    b = await connect("alice@localhost/b", plugins=PLUGINS, srv=second_edge(server, mode))
    await send_initial_presence(a, ppriority=5)  # a gets what goes to the bare JID
    await a.plugin["xep_0280"].enable()
    await b.plugin["xep_0280"].enable()
    b_received, b_sent = carbon_queues(b)
    bob = await connect("bob@localhost/r")

    bob.send_message(mto="alice@localhost", mbody="to the account", mtype="chat")
    assert (await next_plain(a))["body"] == "to the account"
    carbon = await asyncio.wait_for(b_received.get(), 10)
    assert carbon["carbon_received"]["to"] == "alice@localhost"

    # <private/> and <no-copy/>: bob gets it, b no copy (XEP-0280 section 10)
    secret = a.make_message(mto="bob@localhost/r", mbody="just between us", mtype="chat")
    secret.enable("carbon_private")
    secret.append(ET.Element("{urn:xmpp:hints}no-copy"))
    secret.send()
    got = await bob.next_message(10)
    assert got["body"] == "just between us"
    assert got.xml.find("{urn:xmpp:carbons:2}private") is not None
    a.send_message(mto="bob@localhost/r", mbody="for everyone", mtype="chat")
    assert (await bob.next_message(10))["body"] == "for everyone"
    # the first sent copy b sees is of the second message
    assert (await asyncio.wait_for(b_sent.get(), 10))["carbon_sent"]["body"] == "for everyone"


async def test_the_server_advertises_carbons(connect: Any) -> None:
    c = await connect("alice@localhost/a", plugins=PLUGINS)
    info = await c.plugin["xep_0030"].get_info(jid="localhost")
    assert "urn:xmpp:carbons:2" in info["disco_info"]["features"]


class _SilentBus:
    """An event bus whose events never arrive: a router's registry whose
    cached copy of a session stays as old as it is."""

    def on(self, kind: str, handler: Any) -> None:
        return None

    async def publish(self, kind: str, **fields: Any) -> None:
        return None


async def test_the_switch_and_presence_do_not_undo_each_other(redis: tuple[Any, str]) -> None:
    """In a cluster the presence service and a router write the same session
    in Redis, the router from a cached copy: enabling carbons must not undo
    the initial presence written a moment before, nor a presence update the
    carbons switch (each writes only the fields it changed)."""
    r, prefix = redis
    enable_and_disable = {p[0].rsplit("}", 1)[1]: h for p, h in _carbons().account_iq.items()}
    router = RedisRegistry(r, prefix)
    router.attach_bus(_SilentBus())  # caches, never told of changes
    presence = RedisRegistry(r, prefix)  # reads Redis each time, as the presence service
    jid = JID.parse("alice@localhost/a")
    await presence.add(Session(jid=jid, node="edge1", sid="s1"))
    assert [s.available for s in await router.resources(jid.bare)] == [False]  # cached

    s = await presence.get(jid)
    assert s is not None
    s.available, s.priority = True, 5
    await presence.update(s, broadcast=True)
    await _iq(router, jid, enable_and_disable["enable"])  # from the stale cached copy
    stored = await RedisRegistry(r, prefix).get(jid)
    assert stored is not None
    assert (stored.available, stored.priority, stored.flags) == (True, 5, {"carbons"})

    s = await presence.get(jid)  # read before the switch goes off again
    assert s is not None
    fresh = RedisRegistry(r, prefix)
    await _iq(fresh, jid, enable_and_disable["disable"])
    s.priority = 1
    await presence.update(s)
    stored = await RedisRegistry(r, prefix).get(jid)
    assert stored is not None
    assert (stored.available, stored.priority, stored.flags) == (True, 1, set())


def _carbons() -> Any:
    (feature,) = load_features(["carbons"])
    return feature


async def _iq(sessions: RedisRegistry, jid: JID, handler: Any) -> None:
    """Run a carbons IQ handler with ``sessions`` as the router's registry."""
    iq = parse_element(b"<iq xmlns='jabber:client' type='set' id='c1'><x/></iq>")
    ctx = SimpleNamespace(
        sessions=sessions,
        is_local=lambda domain: domain == "localhost",
        cache=UserCaches().get,
    )
    env = Envelope.of(iq, jid, jid.bare)
    assert await handler(ctx, env, iq[0]) is None
