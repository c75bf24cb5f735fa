"""One-hop delivery: an edge sends plain stanzas straight to the recipient's edge.

Through a router, a message crosses two gRPC hops (edge -> router -> edge),
each with its batch, its acknowledgement and a task in the router. For the
commonest stanza, a message or IQ to a full JID, the router's whole work is
"the session is on edge X, nobody blocks anybody": the edge process can
answer that itself, from the same :class:`~services.router.service.RouterService`
code with the same caches (sessions and block lists from Redis and storage,
dropped over the event bus when they change). The benchmark's profile put
the router at 60 % of the cluster's CPU per message before this.

What the direct way cannot settle goes to a router replica, as before:
presence, bare JIDs, the server, absent sessions, blocking, and any stanza
whose direct delivery failed (the session left that edge, or its stream
broke). Nothing is lost: a failed delivery is handed to a router, which
delivers to another resource, stores it offline or bounces it.

Order (RFC 6120 10.1): direct deliveries to one edge travel on one ordered
stream. Before a sender's stanza goes to a router, the sender's direct
deliveries still in flight are waited for, so a router never overtakes them;
and while a sender has stanzas at a router, its next ones follow them there,
so a direct delivery never overtakes what the router has not processed yet
(a block command, say, and then a message to the contact it blocks).
"""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import TYPE_CHECKING, Any

from ..core.routing import Envelope, Session
from ..xmpp.jid import JID
from .edge_rpc import EdgeClient

if TYPE_CHECKING:
    from ..platform.metrics import Metrics
    from ..router.service import RouterService
    from .router_rpc import RouterClient

log = logging.getLogger("xmppd.cluster.direct")


def _payload_key(env: Envelope) -> tuple[str, str]:
    """(payload tag, iq type) of an IQ, from the element the edge parsed."""
    el = env.tree()
    child = el[0] if len(el) else None
    tag = child.tag if child is not None and isinstance(child.tag, str) else ""
    return tag, env.type or ""


class DirectRouter:
    """The router an edge process uses: ``local`` decides (a RouterService
    on the cluster's registry and caches), ``remote`` (a RouterClient) routes
    everything else; ``direct=False`` (``XMPPD_DIRECT_DELIVERY=false``)
    sends every stanza to ``remote``."""

    def __init__(
        self,
        local: RouterService,
        remote: RouterClient,
        metrics: Metrics,
        *,
        direct: bool = True,
    ) -> None:
        self.local = local
        self.remote = remote
        self.metrics = metrics
        self._direct = direct
        self._edge_iq = local.features.edge_iq
        # sender -> its direct deliveries not acknowledged yet
        self._inflight: dict[JID, set[asyncio.Future[bool]]] = {}
        # sender -> failed direct deliveries on their way to a router
        self._falling: dict[JID, set[asyncio.Task[None]]] = {}
        # messages delivered directly whose message_in observers are to run,
        # in delivery order, and the task running them
        self._after: collections.deque[Envelope] = collections.deque()
        self._draining: asyncio.Task[None] | None = None

    # ---- the Router contract ---------------------------------------------------

    @property
    def inflight(self) -> int:
        return sum(len(s) for s in self._inflight.values()) + sum(
            len(s) for s in self._falling.values()
        )

    async def bind(self, s: Session) -> frozenset[str]:
        # the router loaded the user's block list: keep it, so the first
        # stanza waits on no storage call and storage is asked once per login
        blocked: frozenset[str] = await self.remote.bind(s)
        self.local.blocks.prime(s.jid, blocked)
        return blocked

    async def unbind(self, jid: JID, sid: str) -> None:
        await self.remote.unbind(jid, sid)

    async def route(self, env: Envelope, trusted: bool = False) -> None:
        if not self._direct:
            await self.remote.route(env, trusted)
            return
        if env.kind == "iq" and not trusted:
            # the features' edge hooks, by the IQ's payload as the edge parsed it
            # (XEP-0191's block and unblock drop this process's cached list)
            hook = self._edge_iq.get(_payload_key(env)) if self._edge_iq else None
            if hook is not None:
                hook(self.local, env)
        if not trusted and not self.remote.busy(env.frm) and env.frm not in self._falling:
            link = await self.local.direct_link(env)
            if link is not None and env.kind == "message":
                # the features' message hooks, here as a router would run them
                await self.local.direct_prepare(env)
                trusted = True  # run: a fallback to a router must not run them again
            if isinstance(link, EdgeClient):  # acknowledged later, on its stream
                self._track(env, link.send(env.to, env.data, int(env.t0)))
                return
            if link is not None:  # this edge's own session: in-process
                if await link.deliver(env.to, env.data):
                    self.metrics.direct_ok.inc()
                    self.metrics.routed(env.t0)
                    await self.local.direct_delivered(env)
                    return
                self.metrics.direct_failed.inc()
        # in order behind the sender's direct deliveries in flight, and behind
        # the failed ones on their way to a router
        pending = self._inflight.get(env.frm)
        if pending:
            await asyncio.wait(list(pending))
        falling = self._falling.get(env.frm)
        if falling:
            await asyncio.wait(list(falling))
        await self.remote.route(env, trusted)

    def _track(self, env: Envelope, fut: asyncio.Future[bool]) -> None:
        frm = env.frm

        hooked = env.kind == "message"

        def done(f: asyncio.Future[bool]) -> None:
            if not f.cancelled() and f.result():
                self.metrics.direct_ok.inc()
                self.metrics.routed(env.t0)
                if hooked and self.local.features.message_in:
                    # one task drains them all: a task per message cost the
                    # edge more than the observers themselves
                    self._after.append(env)
                    if self._draining is None or self._draining.done():
                        self._draining = asyncio.get_running_loop().create_task(self._drain())
                return
            self.metrics.direct_failed.inc()
            task = asyncio.get_running_loop().create_task(self._fall_back(env, hooked))
            _hold(self._falling, frm, task)  # the sender counts as busy from now on

        # first the fallback, then the release: the sender never looks idle between
        fut.add_done_callback(done)
        _hold(self._inflight, frm, fut)

    async def _fall_back(self, env: Envelope, hooked: bool) -> None:
        """The session was not where the registry said: the router's full
        rules (as trusted when the message hooks ran here already)."""
        try:
            await self.remote.route(env, hooked)
        except Exception:  # RouterClient holds and bounces; this is a bug guard
            log.exception("handing a stanza from %s to a router failed", env.frm)

    async def _drain(self) -> None:
        while self._after:
            env = self._after.popleft()
            try:
                await self.local.direct_delivered(env)
            except Exception:
                log.exception("message observers failed after a direct delivery from %s", env.frm)


def _hold(table: dict[JID, set[Any]], sender: JID, fut: asyncio.Future[Any]) -> None:
    """Keep ``fut`` under ``sender`` in ``table`` until it is done."""
    held = table.get(sender)
    if held is None:
        held = table[sender] = set()
    held.add(fut)

    def release(f: asyncio.Future[Any]) -> None:
        h = table.get(sender)
        if h is not None:
            h.discard(f)
            if not h:
                del table[sender]

    fut.add_done_callback(release)
