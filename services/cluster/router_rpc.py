"""The router service over gRPC.

Edges stream stanzas to a router replica chosen by the sender's bare JID, so
one sender's stanzas cross one replica in order (RFC 6120 10.1). The router
handles stanzas of different senders concurrently and those of one sender
one after another, and acknowledges each once it is routed: delivered,
stored or bounced. The edge keeps what is not acknowledged and resends it to
another replica when one dies; when none answers for ``route_timeout`` it
bounces the stanza to its sender. Nothing accepted is dropped silently.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

import grpc
from lxml import etree

from ..core.routing import Edges, Envelope, Router, Session
from ..xmpp.errors import StanzaCondition, StanzaError, stanza_error_reply
from ..xmpp.jid import JID
from ..xmpp.tree import parse_element
from .rpc import CallServicer, CallTimes, Channels, ContractClient, affinity, pb2, pb2_grpc

if TYPE_CHECKING:
    from ..platform.config import Settings

log = logging.getLogger("xmppd.cluster.router")


def to_pb(env: Envelope, seq: int, trusted: bool = False) -> Any:
    m = pb2.Envelope(
        kind=env.kind, to=str(env.to), data=env.data, trusted=trusted, seq=seq, t0_ns=int(env.t0)
    )
    setattr(m, "from", str(env.frm))
    if env.type is not None:
        m.type = env.type
    if env.id is not None:
        m.id = env.id
    return m


def from_pb(m: Any) -> Envelope:
    return Envelope(
        kind=m.kind,
        type=m.type if m.HasField("type") else None,
        id=m.id if m.HasField("id") else None,
        frm=JID.parse(getattr(m, "from")),
        to=JID.parse(m.to),
        data=m.data,
        t0=float(m.t0_ns),  # wall-clock ns (Metrics(wall_clock=True) in cluster processes)
    )


class RouterControl(Protocol):
    """``Router.Call``: the session calls of the :class:`~services.core.routing.Router`
    contract (``route`` has its own stream, ``Router.Route``)."""

    async def bind(self, s: Session) -> frozenset[str]: ...
    async def unbind(self, jid: JID, sid: str) -> None: ...


def _router_has_control(router: Router) -> RouterControl:
    return router  # mypy: the Router contract includes RouterControl


#: Router.Call methods a client may send twice (see storage_rpc.STORAGE_IDEMPOTENT)
ROUTER_IDEMPOTENT: dict[str, bool] = {
    # a second bind of the same session finds the first and replaces it with
    # <conflict/>, closing the very session it binds
    "bind": False,
    "unbind": True,  # by session id: the second finds nothing to remove
}


class RouterControlClient(ContractClient):
    """The RouterControl contract on the router replicas (an edge binds and
    unbinds its sessions through it)."""

    SERVICE = "Router"
    CONTRACT = RouterControl
    IDEMPOTENT = ROUTER_IDEMPOTENT

    async def bind(self, s: Session) -> frozenset[str]:
        return frozenset(await self._call(RouterControl.bind, s))  # a set on the wire

    async def unbind(self, jid: JID, sid: str) -> None:
        return await self._call(RouterControl.unbind, jid, sid)


class RouterServicer(CallServicer):
    """Serves ``Router.Route`` and ``Router.Call`` (RouterControl) for a router."""

    def __init__(self, router: Router, directory: Edges) -> None:
        self.router = router
        self.directory = directory
        super().__init__(RouterControl, self)

    # ---- RouterControl ---------------------------------------------------

    async def bind(self, s: Session) -> frozenset[str]:
        await self.directory.ensure(s.node)  # an edge that joined a moment ago
        return frozenset(await self.router.bind(s))

    async def unbind(self, jid: JID, sid: str) -> None:
        await self.router.unbind(jid, sid)

    async def Route(self, request_iterator: Any, context: Any) -> AsyncIterator[Any]:
        acks: asyncio.Queue[int | None] = asyncio.Queue()
        # sender's bare JID -> its stanzas not yet routed, in order. One worker
        # task per sender with work drains its queue, so one sender's stanzas
        # are routed one after another and different senders' concurrently,
        # with a task per burst rather than per stanza.
        queues: dict[str, collections.deque[Any]] = {}
        workers: set[asyncio.Task[None]] = set()
        route = self.router.route

        async def drain(key: str, q: collections.deque[Any]) -> None:
            try:
                while q:
                    m = q[0]
                    try:
                        await route(from_pb(m), trusted=m.trusted)
                    except Exception:
                        log.exception("routing failed")
                    q.popleft()
                    acks.put_nowait(m.seq)
            finally:
                if queues.get(key) is q:
                    del queues[key]

        async def reader() -> None:
            loop = asyncio.get_running_loop()
            try:
                async for batch in request_iterator:
                    for m in batch.items:
                        key = getattr(m, "from").split("/", 1)[0]
                        q = queues.get(key)
                        if q is not None:
                            q.append(m)
                            continue
                        q = queues[key] = collections.deque((m,))
                        task = loop.create_task(drain(key, q))
                        workers.add(task)
                        task.add_done_callback(workers.discard)
            finally:
                if workers:
                    await asyncio.wait(list(workers))
                acks.put_nowait(None)

        rt = asyncio.get_running_loop().create_task(reader())
        try:
            ended = False
            while not ended:
                first = await acks.get()
                if first is None:
                    break
                seqs = [first]
                while not acks.empty():  # acknowledge everything routed meanwhile at once
                    more = acks.get_nowait()
                    if more is None:
                        ended = True
                        break
                    seqs.append(more)
                yield pb2.RouteAck(seqs=seqs)
        finally:
            rt.cancel()


class _Stream:
    """One Route stream to one router replica, with what it has not acked."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.call: Any = None
        self.healthy = False
        self.seq = 0
        self.unacked: collections.OrderedDict[int, tuple[Envelope, bool, float]] = (
            collections.OrderedDict()
        )
        self.reader: asyncio.Task[None] | None = None
        self.outbox: list[Any] = []
        self.writer: asyncio.Task[None] | None = None


class RouterClient:
    """The edge's view of the router service, the :class:`~services.core.routing.Router`
    contract: ``route`` over the Route streams, ``bind``/``unbind`` over
    ``Router.Call``. ``bounce`` writes to a session of this edge: a stanza no
    router took for ``route_timeout`` goes back to its sender through it."""

    def __init__(
        self,
        settings: Settings,
        channels: Channels,
        bounce: Callable[[JID, bytes], Awaitable[bool]],
        times: CallTimes = CallTimes(),
    ) -> None:
        self.settings = settings
        self._channels = channels
        self._streams = [_Stream(a) for a in settings.router_addrs]
        self._control = RouterControlClient(settings.router_addrs, channels, times)
        self._lock = asyncio.Lock()
        self._pending: collections.deque[tuple[Envelope, bool, float]] = collections.deque()
        self._bounce_to = bounce
        # sender -> stanzas handed to a router and not acknowledged (or bounced) yet
        self._by_sender: dict[JID, int] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.started_at = time.time()

    async def start(self) -> None:
        for st in self._streams:
            await self._open(st, wait=0.5)
        self._tasks.append(asyncio.get_running_loop().create_task(self._maintain()))

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for st in self._streams:
            if st.call is not None:
                st.call.cancel()

    @property
    def healthy_routers(self) -> int:
        return sum(1 for s in self._streams if s.healthy)

    @property
    def unacked(self) -> int:
        return sum(len(s.unacked) for s in self._streams) + len(self._pending)

    # ---- the Router interface --------------------------------------------

    async def route(self, env: Envelope, trusted: bool = False) -> None:
        frm = env.frm
        self._by_sender[frm] = self._by_sender.get(frm, 0) + 1
        async with self._lock:
            await self._send(env, trusted, time.monotonic())

    def busy(self, sender: JID) -> bool:
        """Has ``sender`` stanzas at a router that are not routed yet? Then
        its next stanza must not overtake them on another way."""
        return sender in self._by_sender

    def _settled(self, env: Envelope) -> None:
        frm = env.frm
        n = self._by_sender.get(frm, 0) - 1
        if n > 0:
            self._by_sender[frm] = n
        else:
            self._by_sender.pop(frm, None)

    async def bind(self, s: Session) -> frozenset[str]:
        return await self._control.bind(s)

    async def unbind(self, jid: JID, sid: str) -> None:
        await self._control.unbind(jid, sid)

    # ---- streams -------------------------------------------------------------

    def _pick(self, env: Envelope) -> _Stream | None:
        n = len(self._streams)
        # the same replica the control plane prefers for this user (bind, unbind)
        start = affinity((env,), n)
        for i in range(n):
            st = self._streams[(start + i) % n]
            if st.healthy:
                return st
        return None

    async def _send(self, env: Envelope, trusted: bool, since: float) -> None:
        """Send on a healthy stream; called with the lock held."""
        while True:
            st = self._pick(env)
            if st is None:
                self._pending.append((env, trusted, since))
                return
            st.seq += 1
            st.unacked[st.seq] = (env, trusted, since)
            st.outbox.append(to_pb(env, st.seq, trusted))
            if st.writer is None or st.writer.done():
                st.writer = asyncio.get_running_loop().create_task(self._write(st, st.call))
            return

    async def _write(self, st: _Stream, call: Any) -> None:
        """Write what is queued for one stream, a batch per write."""
        try:
            while st.outbox and st.call is call:
                batch, st.outbox = st.outbox, []
                await call.write(pb2.EnvelopeBatch(items=batch))
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError, ConnectionError) as exc:
            log.warning("router %s failed on write: %s", st.address, exc)
            async with self._lock:
                if st.call is call:
                    await self._fail_over(st)  # resends everything not acknowledged

    async def _fail_over(self, st: _Stream) -> None:
        """Move a dead stream's unacknowledged stanzas, in order, to the others."""
        if not st.healthy and not st.unacked:
            return
        st.healthy = False
        st.outbox = []  # all of it is in st.unacked too
        st.writer = None
        if st.call is not None:
            st.call.cancel()
            st.call = None
        moved = list(st.unacked.values())
        st.unacked.clear()
        log.warning(
            "router %s unreachable: failing over, resending %d stanzas", st.address, len(moved)
        )
        for env, trusted, since in moved:
            await self._send(env, trusted, since)

    async def _open(self, st: _Stream, wait: float) -> bool:
        ch = self._channels.get(st.address)
        try:
            await asyncio.wait_for(ch.channel_ready(), wait)
        except (TimeoutError, grpc.aio.AioRpcError):
            return False
        st.call = pb2_grpc.RouterStub(ch).Route()
        st.writer = None
        st.reader = asyncio.get_running_loop().create_task(self._read(st, st.call))
        st.healthy = True
        return True

    async def _read(self, st: _Stream, call: Any) -> None:
        try:
            async for ack in call:
                for seq in ack.seqs:
                    item = st.unacked.pop(seq, None)
                    if item is not None:
                        self._settled(item[0])
        except (grpc.aio.AioRpcError, asyncio.CancelledError):
            pass
        if st.call is call:
            async with self._lock:
                if st.call is call:
                    await self._fail_over(st)

    async def _maintain(self) -> None:
        """Reconnect dead streams, flush held stanzas, bounce the too old."""
        while True:
            await asyncio.sleep(0.25)
            for st in self._streams:
                if not st.healthy and st.call is None:
                    await self._open(st, wait=0.2)
            if not self._pending:
                continue
            async with self._lock:
                held, self._pending = self._pending, collections.deque()
                now = time.monotonic()
                for env, trusted, since in held:
                    if now - since > self.settings.route_timeout:
                        self._settled(env)
                        await self._bounce(env)
                    else:
                        await self._send(env, trusted, since)

    async def _bounce(self, env: Envelope) -> None:
        if env.type == "error" or (env.kind == "iq" and env.type == "result"):
            return
        try:
            el = env.element if env.element is not None else parse_element(env.data)
        except etree.XMLSyntaxError:
            return
        err = StanzaError(StanzaCondition.INTERNAL_SERVER_ERROR, "no router available")
        reply = stanza_error_reply(el, err)
        reply.set("to", str(env.frm))
        reply.set("from", str(env.to))
        await self._bounce_to(env.frm, etree.tostring(reply, with_tail=False))


#: mypy proves the clients and the servicer implement their contracts
_control_client: type[RouterControl] = RouterControlClient
_control_servicer: type[RouterControl] = RouterServicer
_client: type[Router] = RouterClient
