"""The Edge.Deliver stream over real gRPC on loopback: an EdgeClient writing
to an EdgeServicer whose edge is a recording stand-in."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest_asyncio

from services.cluster.edge_rpc import EdgeClient, EdgeServicer
from services.cluster.rpc import Channels, pb2_grpc
from services.xmpp.jid import JID


class SlowEdge:
    """Delivers to the sessions it has; each delivery takes a little while, so
    batches pile up behind a busy receiver as they do on a loaded edge."""

    node_id = "edge-b"

    def __init__(self) -> None:
        self.sessions = {JID.parse("bob@example.com/desk")}
        self.got: list[bytes] = []

    async def deliver(self, jid: JID, data: bytes) -> bool:
        await asyncio.sleep(0.001)
        if jid not in self.sessions:
            return False
        self.got.append(data)
        return True

    async def close_session(self, jid: JID, condition: str, text: str | None = None) -> bool:
        return False


@pytest_asyncio.fixture
async def link() -> AsyncIterator[tuple[EdgeClient, SlowEdge]]:
    edge = SlowEdge()
    server = grpc.aio.server()
    pb2_grpc.add_EdgeServicer_to_server(EdgeServicer(edge), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channels = Channels()
    client = EdgeClient("edge-b", f"127.0.0.1:{port}", channels)
    try:
        yield client, edge
    finally:
        client._reset()
        await channels.close()
        await server.stop(0)


async def test_deliveries_arrive_in_order_and_every_batch_is_acknowledged(link) -> None:
    client, edge = link
    bob = JID.parse("bob@example.com/desk")
    most = 0
    futs = []
    for i in range(300):
        futs.append(client.send(bob, f"<m>{i}</m>".encode()))
        await asyncio.sleep(0.0002)  # the writer runs: many small batches
        most = max(most, client._batches)
    assert all(await asyncio.wait_for(asyncio.gather(*futs), 10))
    assert edge.got == [f"<m>{i}</m>".encode() for i in range(300)]
    # acknowledgements covering several batches settle all of them: nothing
    # stays counted in flight, so the writer is never stuck waiting
    assert client._batches == 0
    assert most <= EdgeClient.BATCHES_IN_FLIGHT
    assert await client.deliver(bob, b"<m>after</m>")


async def test_a_session_not_there_is_reported(link) -> None:
    client, _ = link
    ok = await client.deliver(JID.parse("bob@example.com/desk"), b"<m/>")
    gone = await client.deliver(JID.parse("carol@example.com/x"), b"<m/>")
    assert (ok, gone) == (True, False)


async def test_a_dead_edge_fails_the_deliveries_in_flight() -> None:
    channels = Channels()
    client = EdgeClient("edge-x", "127.0.0.1:9", channels)  # nothing listens there
    try:
        assert await asyncio.wait_for(client.deliver(JID.parse("a@b/c"), b"<m/>"), 15) is False
        assert client._batches == 0
    finally:
        await channels.close()
