"""One-hop delivery decisions (services/cluster/direct.py), in process.

A real RouterService on a real SQLite Store and the in-process registry
decides; the recipient edges and the router replicas are recording stand-ins
whose acknowledgements the test releases, so order and fallback can be
checked step by step. The same code runs against a real cluster in
tests/cluster/test_direct_cluster.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio
from lxml import etree

from services.cluster.direct import DirectRouter
from services.cluster.edge_rpc import EdgeClient
from services.core.feature import FeatureSet
from services.core.routing import Envelope, LocalEdges, Session
from services.features import blocking
from services.platform.config import Settings
from services.platform.db import open_database
from services.platform.metrics import Metrics
from services.platform.migrate import migrate
from services.router.registry import LocalRegistry
from services.router.service import RouterService
from services.storage.store import Store
from services.xmpp.jid import JID

HOST = "example.com"
ALICE = JID.parse(f"alice@{HOST}/phone")
BOB = JID.parse(f"bob@{HOST}/desk")  # on the other edge
CAROL = JID.parse(f"carol@{HOST}/home")  # on this edge


class ThisEdge:
    """The edge process's own EdgeServer: delivers in process."""

    node_id = "edge-a"

    def __init__(self) -> None:
        self.delivered: list[tuple[JID, bytes]] = []
        self.ok = True

    async def deliver(self, jid: JID, data: bytes) -> bool:
        self.delivered.append((jid, data))
        return self.ok

    async def close_session(self, jid: JID, condition: str, text: str | None = None) -> bool:
        return True


class OtherEdge(ThisEdge, EdgeClient):
    """An EdgeClient stand-in: ``send`` queues, the test acknowledges."""

    node_id = "edge-b"

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple[JID, bytes, asyncio.Future[bool]]] = []

    def send(self, jid: JID, data: bytes, t0_ns: int = 0) -> asyncio.Future[bool]:
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.sent.append((jid, data, fut))
        return fut


class Routers:
    """A RouterClient stand-in: records what it is handed."""

    def __init__(self) -> None:
        self.routed: list[Envelope] = []
        self.busy_senders: set[JID] = set()
        self.block_lists: dict[JID, frozenset[str]] = {}  # what the router's bind returns

    async def route(self, env: Envelope, trusted: bool = False) -> None:
        self.routed.append(env)

    def busy(self, sender: JID) -> bool:
        return sender in self.busy_senders

    async def bind(self, s: Session) -> frozenset[str]:
        return self.block_lists.get(s.jid.bare, frozenset())

    async def unbind(self, jid: JID, sid: str) -> None:
        pass


class World:
    def __init__(self, router: RouterService, store: Store) -> None:
        self.local = router
        self.store = store
        self.this = ThisEdge()
        self.other = OtherEdge()
        self.remote = Routers()
        self.metrics = Metrics()
        router.edges = LocalEdges({"edge-a": self.this, "edge-b": self.other})
        self.direct = DirectRouter(router, self.remote, self.metrics)

    async def route(self, frm: JID, xml: str) -> Envelope:
        el = etree.fromstring(xml)
        to = JID.parse(el.get("to")) if el.get("to") else frm.bare
        env = Envelope.of(el, frm, to)
        await self.direct.route(env)
        return env

    def count(self, outcome: str) -> float:
        c = self.metrics.direct_ok if outcome == "success" else self.metrics.direct_failed
        return float(c._value.get())


@pytest_asyncio.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    db = await open_database(f"sqlite://{tmp_path}/x.db")
    await migrate(db)
    store = Store(db)
    for name in ("alice", "bob", "carol"):
        await store.create_account(HOST, name, [])
    registry = LocalRegistry()
    router = RouterService(Settings(hosts=[HOST]), store, registry, FeatureSet([blocking.FEATURE]))
    w = World(router, store)
    await registry.add(Session(ALICE, node="edge-a", sid="a", available=True))
    await registry.add(Session(BOB, node="edge-b", sid="b", available=True))
    await registry.add(Session(CAROL, node="edge-a", sid="c", available=True))
    yield w
    await db.close()


def msg(to: JID | str, body: str = "hi") -> str:
    return f"<message xmlns='jabber:client' to='{to}' type='chat'><body>{body}</body></message>"


async def test_a_message_to_a_full_jid_goes_straight_to_its_edge(world: World) -> None:
    for i in range(3):
        await world.route(ALICE, msg(BOB, str(i)))
    assert world.remote.routed == []
    assert [
        (j, b"<body>" + str(i).encode() in d) for i, (j, d, _) in enumerate(world.other.sent)
    ] == [(BOB, True)] * 3
    for *_, fut in world.other.sent:
        fut.set_result(True)
    await asyncio.sleep(0)
    assert world.count("success") == 3 and world.count("failure") == 0


async def test_a_session_on_this_edge_is_delivered_in_process(world: World) -> None:
    await world.route(ALICE, msg(CAROL))
    assert [j for j, _ in world.this.delivered] == [CAROL]
    assert world.other.sent == [] and world.remote.routed == []
    assert world.count("success") == 1


async def test_what_needs_the_full_rules_goes_to_a_router(world: World) -> None:
    await world.route(ALICE, msg(BOB.bare))  # bare JID: priorities, offline storage
    await world.route(ALICE, msg(f"bob@{HOST}/gone"))  # no such session
    await world.route(ALICE, msg(f"nobody@{HOST}/x"))
    await world.route(ALICE, msg("someone@elsewhere.test/x"))  # not a local domain
    await world.route(ALICE, f"<presence xmlns='jabber:client' to='{BOB}'/>")
    await world.route(ALICE, f"<iq xmlns='jabber:client' to='{HOST}' type='get' id='1'/>")
    assert len(world.remote.routed) == 6
    assert world.other.sent == [] and world.this.delivered == []


async def test_blocking_either_way_is_left_to_the_router(world: World) -> None:
    await world.store.add_blocks(HOST, "bob", [str(ALICE.bare)])
    await world.route(ALICE, msg(BOB))  # bob blocks alice: the router answers with the error
    assert len(world.remote.routed) == 1 and world.other.sent == []
    await world.route(BOB, msg(ALICE))  # and bob cannot write to alice either
    assert len(world.remote.routed) == 2 and world.this.delivered == []


async def test_a_failed_delivery_is_handed_to_a_router(world: World) -> None:
    env = await world.route(ALICE, msg(BOB, "first"))
    (_, _, fut) = world.other.sent[0]
    fut.set_result(False)  # bob's session had left that edge
    await asyncio.sleep(0)
    # until the router has it, alice's next stanza must not overtake it directly
    await world.route(ALICE, msg(BOB, "second"))
    await asyncio.sleep(0)
    assert [e.data for e in world.remote.routed] == [env.data, world.remote.routed[1].data]
    assert b"second" in world.remote.routed[1].data
    assert len(world.other.sent) == 1
    assert world.count("failure") == 1


async def test_a_broken_stream_counts_as_not_delivered(world: World) -> None:
    await world.route(ALICE, msg(BOB))
    world.other.sent[0][2].cancel()
    await asyncio.sleep(0.01)
    assert len(world.remote.routed) == 1 and world.count("failure") == 1


async def test_a_sender_busy_at_a_router_stays_on_that_way(world: World) -> None:
    world.remote.busy_senders.add(ALICE)
    await world.route(ALICE, msg(BOB))
    assert len(world.remote.routed) == 1 and world.other.sent == []
    world.remote.busy_senders.clear()
    await world.route(ALICE, msg(BOB))
    assert len(world.other.sent) == 1


async def test_the_router_way_waits_for_direct_deliveries_in_flight(world: World) -> None:
    await world.route(ALICE, msg(BOB, "direct"))
    later = asyncio.get_running_loop().create_task(world.route(ALICE, msg(BOB.bare, "bare")))
    await asyncio.sleep(0.05)
    assert world.remote.routed == []  # held behind the direct one
    world.other.sent[0][2].set_result(True)
    await asyncio.wait_for(later, 1)
    assert [b"bare" in e.data for e in world.remote.routed] == [True]
    # other senders are not held
    await world.route(CAROL, msg(BOB, "c"))
    await world.route(BOB, msg(ALICE.bare))
    assert len(world.remote.routed) == 2


async def test_a_block_command_drops_the_senders_cached_list(world: World) -> None:
    await world.route(ALICE, msg(BOB))
    assert len(world.other.sent) == 1  # the empty list is cached now
    world.other.sent[0][2].set_result(True)
    await world.store.add_blocks(HOST, "alice", [str(BOB.bare)])  # the router's doing
    await world.route(
        ALICE,
        "<iq xmlns='jabber:client' type='set' id='b1'>"
        f"<block xmlns='urn:xmpp:blocking'><item jid='{BOB.bare}'/></block></iq>",
    )
    await world.route(ALICE, msg(BOB))  # no event bus here: only the forget can stop it
    assert len(world.other.sent) == 1
    assert [e.kind for e in world.remote.routed] == ["iq", "message"]


async def test_binding_keeps_the_block_list_the_router_loaded(world: World) -> None:
    """No second storage read per login: the router's answer fills the cache."""
    world.remote.block_lists[ALICE.bare] = frozenset({str(BOB.bare)})
    assert await world.direct.bind(Session(ALICE, node="edge-a", sid="a2")) == {str(BOB.bare)}
    await world.route(ALICE, msg(BOB))  # storage has no block list: only the primed one stops it
    assert world.other.sent == [] and len(world.remote.routed) == 1


async def test_without_direct_delivery_everything_goes_to_a_router(world: World) -> None:
    direct = DirectRouter(world.local, world.remote, world.metrics, direct=False)
    await direct.route(Envelope.of(etree.fromstring(msg(BOB)), ALICE, BOB))
    assert world.other.sent == [] and world.this.delivered == []
    assert len(world.remote.routed) == 1
