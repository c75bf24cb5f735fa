"""The edge service over gRPC: the servicer an edge process runs, and the
:class:`EdgeClient` (an ``EdgeLink``) routers and presence use to reach it."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc

from ..router.interface import EdgeLink
from ..xmpp.jid import JID
from .rpc import CallServicer, Channels, RemoteProxy, pb2, pb2_grpc

log = logging.getLogger("xmppd.cluster.edge")


class EdgeServicer(CallServicer):
    """Serves ``Edge.Deliver`` and ``Edge.Call(close_session)`` for a local EdgeServer."""

    def __init__(self, edge: Any) -> None:
        super().__init__(edge, ("close_session",))
        self.edge = edge

    async def Deliver(self, request_iterator: Any, context: Any) -> AsyncIterator[Any]:
        async for batch in request_iterator:
            seqs: list[int] = []
            oks: list[bool] = []
            for d in batch.items:
                seqs.append(d.seq)
                oks.append(await self.edge.deliver(JID.parse(d.jid), d.data))
            yield pb2.DeliveryAck(seqs=seqs, ok=oks)


class EdgeClient:
    """An ``EdgeLink`` to a remote edge: one ordered, acknowledged Deliver stream.

    Deliveries queued while a write is under way leave together in the next
    batch, so a busy router makes one gRPC write per batch, not per stanza.
    """

    def __init__(self, node_id: str, address: str, channels: Channels) -> None:
        self.node_id = node_id
        self.address = address
        self._channels = channels
        self._call: Any = None
        self._seq = 0
        self._waiting: dict[int, asyncio.Future[bool]] = {}
        self._outbox: list[Any] = []
        self._writer: asyncio.Task[None] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._control = RemoteProxy("Edge", [address], channels, failover_for=2.0)

    async def deliver(self, jid: JID, data: bytes, t0_ns: int = 0) -> bool:
        loop = asyncio.get_running_loop()
        if self._call is None:
            self._call = pb2_grpc.EdgeStub(self._channels.get(self.address)).Deliver()
            self._reader = loop.create_task(self._read(self._call))
        self._seq += 1
        fut: asyncio.Future[bool] = loop.create_future()
        self._waiting[self._seq] = fut
        self._outbox.append(pb2.Delivery(seq=self._seq, jid=str(jid), data=data, t0_ns=t0_ns))
        if self._writer is None or self._writer.done():
            self._writer = loop.create_task(self._write(self._call))
        try:
            async with asyncio.timeout(10.0):
                return await fut
        except TimeoutError:
            log.info("delivery to edge %s timed out", self.node_id)
            self._reset()
            return False

    async def _write(self, call: Any) -> None:
        try:
            while self._outbox and self._call is call:
                batch, self._outbox = self._outbox, []
                await call.write(pb2.DeliveryBatch(items=batch))
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError, ConnectionError) as exc:
            log.info("delivery stream to edge %s failed: %s", self.node_id, exc)
            if self._call is call:
                self._reset()

    async def _read(self, call: Any) -> None:
        try:
            async for ack in call:
                for seq, ok in zip(ack.seqs, ack.ok, strict=True):
                    fut = self._waiting.pop(seq, None)
                    if fut is not None and not fut.done():
                        fut.set_result(ok)
        except (grpc.aio.AioRpcError, asyncio.CancelledError):
            pass
        if self._call is call:
            self._reset()

    def _reset(self) -> None:
        """The stream broke: everything in flight counts as not delivered."""
        call, self._call = self._call, None
        if call is not None:
            call.cancel()
        self._outbox = []
        self._writer = None
        for fut in self._waiting.values():
            if not fut.done():
                fut.set_result(False)
        self._waiting.clear()

    async def close_session(self, jid: JID, condition: str, text: str | None = None) -> bool:
        try:
            return bool(await self._control.close_session(jid, condition, text))
        except Exception as exc:  # the edge is gone: its sessions are gone too
            log.info("close_session on %s failed: %s", self.node_id, exc)
            return False


class EdgeDirectory(dict[str, EdgeLink]):
    """node id -> EdgeLink for every live edge, kept fresh from Redis.

    A dict so the router's synchronous lookups stay cheap; :meth:`refresh`
    runs every second and on demand (an unknown node binding a session).
    """

    def __init__(self, registry: Any, channels: Channels) -> None:
        super().__init__()
        self._registry = registry
        self._channels = channels
        self.alive: dict[str, bool] = {}
        self.refreshed = 0.0

    async def refresh(self) -> dict[str, tuple[str, bool]]:
        edges: dict[str, tuple[str, bool]] = await self._registry.edges()
        for node, (addr, alive) in edges.items():
            cur = self.get(node)
            if not isinstance(cur, EdgeClient) or cur.address != addr:
                self[node] = EdgeClient(node, addr, self._channels)
            self.alive[node] = alive
        for node in list(self):
            if node not in edges:
                del self[node]
                self.alive.pop(node, None)
        self.refreshed = time.monotonic()
        return edges

    async def ensure(self, node: str) -> None:
        if node not in self:
            await self.refresh()
