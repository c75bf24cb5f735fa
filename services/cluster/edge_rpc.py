"""The edge service over gRPC: the servicer an edge process runs, and the
:class:`EdgeClient` (an ``EdgeLink``) routers and presence use to reach it."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Protocol

import grpc

from ..core.routing import EdgeLink
from ..xmpp.jid import JID
from .rpc import CallServicer, CallTimes, Channels, ContractClient, pb2, pb2_grpc

if TYPE_CHECKING:
    from .redis_registry import RedisRegistry

log = logging.getLogger("xmppd.cluster.edge")


class EdgeControl(Protocol):
    """``Edge.Call``: the control call of the :class:`~services.core.routing.EdgeLink`
    contract (``deliver`` has its own stream, ``Edge.Deliver``)."""

    async def close_session(self, jid: JID, condition: str, text: str | None = None) -> bool: ...


def _link_has_control(link: EdgeLink) -> EdgeControl:
    return link  # mypy: the EdgeLink contract includes EdgeControl


#: Edge.Call methods a client may send twice (see storage_rpc.STORAGE_IDEMPOTENT)
EDGE_IDEMPOTENT: dict[str, bool] = {
    "close_session": False,  # the second answers "no such session"
}


class EdgeControlClient(ContractClient):
    """The EdgeControl contract on one edge."""

    SERVICE = "Edge"
    CONTRACT = EdgeControl
    IDEMPOTENT = EDGE_IDEMPOTENT

    async def close_session(self, jid: JID, condition: str, text: str | None = None) -> bool:
        return await self._call(EdgeControl.close_session, jid, condition, text)


class EdgeServicer(CallServicer):
    """Serves ``Edge.Deliver`` and ``Edge.Call`` (EdgeControl) for a local edge."""

    def __init__(self, edge: EdgeLink) -> None:
        super().__init__(EdgeControl, edge)
        self.edge = edge

    #: acknowledgements wait this long for more batches to acknowledge with
    #: them: at a low rate every stanza is a batch of its own, and an ack per
    #: stanza was one of the four gRPC messages each stanza cost. Delivery
    #: itself never waits for this.
    ACK_DELAY = 0.002

    async def Deliver(self, request_iterator: Any, context: Any) -> AsyncIterator[Any]:
        done: asyncio.Queue[tuple[list[int], list[bool]] | None] = asyncio.Queue()

        async def deliver_all() -> None:
            try:
                async for batch in request_iterator:
                    seqs: list[int] = []
                    oks: list[bool] = []
                    for d in batch.items:
                        seqs.append(d.seq)
                        oks.append(await self.edge.deliver(JID.parse(d.jid), d.data))
                    done.put_nowait((seqs, oks))
            finally:
                done.put_nowait(None)

        task = asyncio.get_running_loop().create_task(deliver_all())
        try:
            while True:
                first = await done.get()
                if first is None:
                    return
                await asyncio.sleep(self.ACK_DELAY)
                seqs, oks = first
                batches, ended = 1, False
                while not done.empty():
                    more = done.get_nowait()
                    if more is None:
                        ended = True
                        break
                    seqs += more[0]
                    oks += more[1]
                    batches += 1
                yield pb2.DeliveryAck(seqs=seqs, ok=oks, batches=batches)
                if ended:
                    return
        finally:
            task.cancel()


class EdgeClient:
    """An ``EdgeLink`` to a remote edge: one ordered, acknowledged Deliver stream.

    Deliveries queued while a write is under way leave together in the next
    batch, so a busy router makes one gRPC write per batch, not per stanza.
    """

    #: a delivery not acknowledged for this long counts as failed, and the
    #: stream is reset (the edge is hung or gone)
    ACK_TIMEOUT = 10.0
    #: batches written to the stream and not acknowledged yet, at most
    BATCHES_IN_FLIGHT = 4

    def __init__(self, node_id: str, address: str, channels: Channels) -> None:
        self.node_id = node_id
        self.address = address
        self._channels = channels
        self._call: Any = None
        self._seq = 0
        # seq -> (future, monotonic send time), in send order
        self._waiting: dict[int, tuple[asyncio.Future[bool], float]] = {}
        self._outbox: list[Any] = []
        self._writer: asyncio.Task[None] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self._batches = 0
        self._acked = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._control = EdgeControlClient([address], channels, CallTimes(failover_for=2.0))

    async def deliver(self, jid: JID, data: bytes, t0_ns: int = 0) -> bool:
        return await self.send(jid, data, t0_ns)

    def send(self, jid: JID, data: bytes, t0_ns: int = 0) -> asyncio.Future[bool]:
        """Queue a delivery; the future says whether the edge took it (False:
        no such session there, or the stream broke). Deliveries leave in the
        order of the calls."""
        # No timeout context per delivery: one watchdog per client checks the
        # oldest unacknowledged delivery (the profile showed asyncio.timeout
        # and get_running_loop among the router's top costs).
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        if self._call is None:
            self._call = pb2_grpc.EdgeStub(self._channels.get(self.address)).Deliver()
            self._reader = loop.create_task(self._read(self._call))
        self._seq += 1
        fut: asyncio.Future[bool] = loop.create_future()
        self._waiting[self._seq] = (fut, time.monotonic())
        self._outbox.append(pb2.Delivery(seq=self._seq, jid=str(jid), data=data, t0_ns=t0_ns))
        if self._writer is None or self._writer.done():
            self._writer = loop.create_task(self._write(self._call))
        if self._watchdog is None:
            self._watchdog = loop.call_later(1.0, self._check_acks)
        return fut

    def _check_acks(self) -> None:
        self._watchdog = None
        if not self._waiting:
            return
        _fut, sent = next(iter(self._waiting.values()))
        if time.monotonic() - sent > self.ACK_TIMEOUT:
            log.info("delivery to edge %s timed out", self.node_id)
            self._reset()
            return
        assert self._loop is not None
        self._watchdog = self._loop.call_later(1.0, self._check_acks)

    async def _write(self, call: Any) -> None:
        # Ack-clocked: at most BATCHES_IN_FLIGHT batches written and not yet
        # acknowledged. A busy receiver takes one gRPC message per turn of its
        # event loop; writing every small batch at once queued them in front
        # of it and starved that direction (one edge of a pair saturated, the
        # other idle, p99 latency in seconds). Waiting for acks instead lets
        # the next batch grow while the receiver is busy.
        try:
            while self._outbox and self._call is call:
                while self._batches >= self.BATCHES_IN_FLIGHT:
                    self._acked.clear()
                    await self._acked.wait()
                    if self._call is not call:
                        return
                batch, self._outbox = self._outbox, []
                self._batches += 1
                await call.write(pb2.DeliveryBatch(items=batch))
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError, ConnectionError) as exc:
            log.info("delivery stream to edge %s failed: %s", self.node_id, exc)
            if self._call is call:
                self._reset()

    async def _read(self, call: Any) -> None:
        try:
            async for ack in call:
                self._batches -= ack.batches or 1
                self._acked.set()
                waiting = self._waiting
                for seq, ok in zip(ack.seqs, ack.ok, strict=True):
                    item = waiting.pop(seq, None)
                    if item is not None and not item[0].done():
                        item[0].set_result(ok)
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
        self._batches = 0
        self._acked.set()
        for fut, _sent in self._waiting.values():
            if not fut.done():
                fut.set_result(False)
        self._waiting.clear()

    async def close_session(self, jid: JID, condition: str, text: str | None = None) -> bool:
        try:
            return await self._control.close_session(jid, condition, text)
        except Exception as exc:  # the edge is gone: its sessions are gone too
            log.info("close_session on %s failed: %s", self.node_id, exc)
            return False


class EdgeDirectory(dict[str, EdgeLink]):
    """node id -> EdgeLink for every live edge, kept fresh from Redis.

    A dict so the router's synchronous lookups stay cheap; :meth:`refresh`
    runs every second and on demand (an unknown node binding a session).
    """

    def __init__(self, registry: RedisRegistry, channels: Channels) -> None:
        super().__init__()
        self._registry = registry
        self._channels = channels
        self.alive: dict[str, bool] = {}
        self.refreshed = 0.0
        self._pinned: dict[str, EdgeLink] = {}

    def pin(self, node: str, link: EdgeLink) -> None:
        """Reach ``node`` through ``link`` whatever Redis says: an edge process
        delivers to its own sessions in-process, not over gRPC to itself."""
        self._pinned[node] = link
        self[node] = link

    async def refresh(self) -> dict[str, tuple[str, bool]]:
        edges = await self._registry.edges()
        for node, (addr, alive) in edges.items():
            if node in self._pinned:
                self.alive[node] = alive
                continue
            cur = self.get(node)
            if not isinstance(cur, EdgeClient) or cur.address != addr:
                self[node] = EdgeClient(node, addr, self._channels)
            self.alive[node] = alive
        for node in list(self):
            if node not in edges and node not in self._pinned:
                del self[node]
                self.alive.pop(node, None)
        self.refreshed = time.monotonic()
        return edges

    async def ensure(self, node: str) -> None:
        if node not in self:
            await self.refresh()


#: mypy proves the clients implement their contracts
_control_client: type[EdgeControl] = EdgeControlClient
_client: type[EdgeLink] = EdgeClient
