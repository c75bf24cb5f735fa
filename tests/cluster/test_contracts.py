"""Each service's Protocol is the single source of its gRPC endpoints (issue 10).

mypy proves that the typed clients and the served implementations conform
(``_client: type[Storage] = StorageClient`` and the servicers' typed
constructors); these tests hold the names together at runtime (client
methods == Protocol methods == methods the servicer exposes, with the same
signatures) and make one real gRPC round trip through each client.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio

from services.cluster.edge_rpc import EdgeClient, EdgeControl, EdgeControlClient, EdgeServicer
from services.cluster.muc_rpc import MucClient, MucServicer
from services.cluster.presence_rpc import PresenceClient, PresenceServicer
from services.cluster.router_rpc import RouterControl, RouterControlClient, RouterServicer
from services.cluster.rpc import Channels, ContractClient, contract_methods, pb2_grpc
from services.cluster.storage_rpc import StorageClient, StorageServicer
from services.core.muc import Muc
from services.core.presence import Presence
from services.core.routing import EdgeLink, Envelope, Router, Session
from services.core.storage import PubsubItem, RosterItem, Storage
from services.platform.db import open_database
from services.platform.migrate import migrate
from services.storage.store import Store
from services.xmpp.errors import StanzaCondition, StanzaError
from services.xmpp.jid import JID

HOST = "example.com"
ALICE = JID.parse(f"alice@{HOST}/phone")
BOB = JID.parse(f"bob@{HOST}")


class Recorder:
    """Stands in for any implementation: records each call, answers from ``answers``."""

    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith("_"):
            raise AttributeError(name)

        async def call(*args: Any) -> Any:
            self.calls.append((name, args))
            answer = self.answers.get(name)
            if isinstance(answer, Exception):
                raise answer
            return answer

        return call


# ---- the names -------------------------------------------------------------------

SERVICES: list[tuple[type, type[ContractClient], Callable[[], Any]]] = [
    (Storage, StorageClient, lambda: StorageServicer(Recorder({}))),
    (Presence, PresenceClient, lambda: PresenceServicer(Recorder({}))),
    (Muc, MucClient, lambda: MucServicer(Recorder({}))),
    (RouterControl, RouterControlClient, lambda: RouterServicer(Recorder({}), Recorder({}))),
    (EdgeControl, EdgeControlClient, lambda: EdgeServicer(Recorder({}))),
]


def signatures(cls: type) -> dict[str, inspect.Signature]:
    return {name: inspect.signature(getattr(cls, name)) for name in contract_methods(cls)}


@pytest.mark.parametrize(("contract", "client", "servicer"), SERVICES)
def test_client_protocol_and_servicer_name_the_same_methods(
    contract: type, client: type[ContractClient], servicer: Callable[[], Any]
) -> None:
    names = set(contract_methods(contract))
    assert names, contract
    assert client.CONTRACT is contract
    assert set(contract_methods(client)) == names
    assert servicer().methods == names
    assert set(client.IDEMPOTENT) == names  # every method has a retry rule
    # the same parameters, defaults and annotations as the Protocol's
    assert signatures(client) == signatures(contract)


def test_the_control_contracts_are_the_routing_contracts_minus_their_streams() -> None:
    assert signatures(RouterControl) == {
        n: s for n, s in signatures(Router).items() if n != "route"
    }
    assert signatures(EdgeControl) == {
        n: s for n, s in signatures(EdgeLink).items() if n != "deliver"
    }


def test_a_client_without_a_retry_rule_for_every_method_refuses_to_start() -> None:
    class Careless(PresenceClient):
        IDEMPOTENT = {"outbound": False}

    with pytest.raises(TypeError, match="inbound"):
        Careless(["127.0.0.1:1"], Channels())


# ---- one real round trip per client -------------------------------------------------


Serve = Callable[[Callable[[grpc.aio.Server], None]], Any]


@pytest_asyncio.fixture
async def serve() -> AsyncIterator[Serve]:
    """Start a real gRPC server on loopback; returns its address."""
    servers: list[grpc.aio.Server] = []

    async def start(add: Callable[[grpc.aio.Server], None]) -> str:
        server = grpc.aio.server()
        add(server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        servers.append(server)
        return f"127.0.0.1:{port}"

    try:
        yield start
    finally:
        for server in servers:
            await server.stop(0)


@pytest_asyncio.fixture
async def channels() -> AsyncIterator[Channels]:
    ch = Channels()
    try:
        yield ch
    finally:
        await ch.close()


async def test_storage_round_trip(serve: Serve, channels: Channels, tmp_path: Path) -> None:
    db = await open_database(f"sqlite://{tmp_path}/x.db")
    await migrate(db)
    try:
        addr = await serve(
            lambda s: pb2_grpc.add_StorageServicer_to_server(StorageServicer(Store(db)), s)
        )
        storage = StorageClient([addr], channels)
        assert await storage.create_account(HOST, "alice", []) is True
        assert await storage.create_account(HOST, "alice", []) is False
        account = await storage.get_account(HOST, "alice")
        assert account is not None and account.username == "alice"
        assert await storage.list_accounts(HOST, search="ali") == [account]
        item = RosterItem(jid=str(BOB), name="Bob", subscription="both", groups=("Friends",))
        version = await storage.update_roster_item(HOST, "alice", str(BOB), None, item)
        assert version is not None
        ver, items = await storage.get_roster(HOST, "alice")
        assert (ver, items) == (version, [item])
        await storage.set_vcard(HOST, "alice", b"<vCard/>")
        assert await storage.get_vcard(HOST, "alice") == b"<vCard/>"
        assert await storage.get_login(HOST, "nobody", "SHA-1") == [None, False]
    finally:
        await db.close()


async def test_storage_pubsub_round_trip(serve: Serve, channels: Channels, tmp_path: Path) -> None:
    db = await open_database(f"sqlite://{tmp_path}/x.db")
    await migrate(db)
    try:
        addr = await serve(
            lambda s: pb2_grpc.add_StorageServicer_to_server(StorageServicer(Store(db)), s)
        )
        storage = StorageClient([addr], channels)
        pep, node = f"alice@{HOST}", "urn:xmpp:avatar:data"
        await storage.put_pubsub_node(pep, node, '{"v":1}')
        assert await storage.pubsub_nodes(pep) == [(node, '{"v":1}')]
        old = PubsubItem(id="a", publisher=str(ALICE), stamp=1.5, payload=b"<d>\x00\xff</d>")
        new = PubsubItem(id="b", publisher=str(ALICE), stamp=2.5, payload=b"")
        await storage.put_pubsub_item(pep, node, old, 0)
        await storage.put_pubsub_item(pep, node, new, 0)
        # the records cross as themselves (bytes and all), newest first
        items = await storage.get_pubsub_items(pep, node)
        assert items == [new, old]
        assert all(type(i) is PubsubItem for i in items)
        assert await storage.get_pubsub_items(pep, node, ids=["a"], limit=5) == [old]
        assert await storage.delete_pubsub_items(pep, node, ["a", "x"]) == ["a"]
        assert await storage.expire_pubsub_items(pep, node, 3.0) == 1
        assert await storage.delete_pubsub_node(pep, node) is True
        assert await storage.get_pubsub_node(pep, node) is None
    finally:
        await db.close()


async def test_presence_round_trip(serve: Serve, channels: Channels) -> None:
    impl = Recorder({"roster_remove": True})
    addr = await serve(
        lambda s: pb2_grpc.add_PresenceServicer_to_server(
            PresenceServicer(impl),
            s,
        )
    )
    presence = PresenceClient([addr], channels)
    env = Envelope("presence", None, None, ALICE, BOB, b"<presence/>")
    await presence.outbound(env)
    await presence.roster_set(ALICE.bare, BOB, "Bob", ("Friends",))
    assert await presence.roster_remove(ALICE.bare, BOB) is True
    [(name, (sent,)), roster_set, roster_remove] = impl.calls
    assert name == "outbound" and (sent.frm, sent.to, sent.data) == (ALICE, BOB, b"<presence/>")
    assert roster_set == ("roster_set", (ALICE.bare, BOB, "Bob", ["Friends"]))
    assert roster_remove == ("roster_remove", (ALICE.bare, BOB))


async def test_muc_round_trip(serve: Serve, channels: Channels) -> None:
    impl = Recorder({})
    addr = await serve(lambda s: pb2_grpc.add_MucServicer_to_server(MucServicer(impl), s))
    muc = MucClient([addr], channels)
    room = JID.parse("room@conference.localhost")
    env = Envelope("message", "groupchat", "m1", ALICE, room, b"<message/>")
    await muc.route(room, env)
    [(name, (to, sent))] = impl.calls
    assert name == "route" and to == room
    assert (sent.kind, sent.type, sent.frm, sent.to, sent.data) == (
        "message", "groupchat", ALICE, room, b"<message/>",
    )  # fmt: skip
    # a refusal crosses as the stanza error it is, to be bounced by the router
    impl.answers["route"] = StanzaError(StanzaCondition.ITEM_NOT_FOUND)
    with pytest.raises(StanzaError) as exc:
        await muc.route(room, env)
    assert exc.value.condition is StanzaCondition.ITEM_NOT_FOUND


async def test_router_control_round_trip(serve: Serve, channels: Channels) -> None:
    router = Recorder({"bind": frozenset({str(BOB)})})
    directory = Recorder({})
    addr = await serve(
        lambda s: pb2_grpc.add_RouterServicer_to_server(
            RouterServicer(router, directory),
            s,
        )
    )
    control = RouterControlClient([addr], channels)
    session = Session(ALICE, node="edge-a", sid="s1")
    assert await control.bind(session) == frozenset({str(BOB)})
    await control.unbind(ALICE, "s1")
    assert directory.calls == [("ensure", ("edge-a",))]  # an edge that joined a moment ago
    assert router.calls == [("bind", (session,)), ("unbind", (ALICE, "s1"))]
    router.answers["unbind"] = StanzaError(StanzaCondition.ITEM_NOT_FOUND)
    with pytest.raises(StanzaError) as err:  # errors cross as values
        await control.unbind(ALICE, "s1")
    assert err.value.condition is StanzaCondition.ITEM_NOT_FOUND


async def test_edge_control_round_trip(serve: Serve, channels: Channels) -> None:
    edge = Recorder({"close_session": True})
    addr = await serve(
        lambda s: pb2_grpc.add_EdgeServicer_to_server(
            EdgeServicer(edge),
            s,
        )
    )
    assert await EdgeControlClient([addr], channels).close_session(ALICE, "conflict") is True
    link = EdgeClient("edge-b", addr, channels)
    assert await link.close_session(ALICE, "not-authorized", "gone") is True
    assert edge.calls == [
        ("close_session", (ALICE, "conflict", None)),
        ("close_session", (ALICE, "not-authorized", "gone")),
    ]
