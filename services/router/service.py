"""The router: where every stanza from a client goes after the edge.

Delivery follows RFC 6121 section 8 (bare vs full JID, available resources,
priority, offline storage, errors for missing users); IQs addressed to the
server or to an account go to the feature handlers; presence goes to the
presence service. Plain message routing touches no database: the session
registry and the block-list cache answer from memory.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from lxml import etree

from ..core.feature import NO_REPLY, FeatureSet, IQHandler, UserCache
from ..core.presence import Presence
from ..core.routing import EdgeLink, Edges, Envelope, LocalEdges, Session, SessionRegistry
from ..core.storage import Storage
from ..xmpp import stanza as st
from ..xmpp.errors import StanzaCondition, StanzaError, stanza_error_reply
from ..xmpp.jid import JID
from .blocking import BlockCache
from .caches import UserCaches
from .domains import ComponentDirectory, DomainRegistry, LocalComponents, RemoteDomains

if TYPE_CHECKING:
    from ..core.feature import Context
    from ..platform.config import Settings
    from ..platform.metrics import Metrics


log = logging.getLogger("xmppd.router")


class RouterService:
    """RFC 6121 delivery, the feature hook chain, and the domain registry.

    What a deployment plugs in comes through the constructor: the session
    registry, the edges it can reach, the presence service (built from this
    router as its context), where external components are connected, and
    the federation seam."""

    def __init__(
        self,
        settings: Settings,
        storage: Storage,
        sessions: SessionRegistry,
        features: FeatureSet,
        metrics: Metrics | None = None,
        *,
        edges: Edges | None = None,
        presence: Callable[[Context], Presence] | None = None,
        components: ComponentDirectory | None = None,
        remote: RemoteDomains | None = None,
    ) -> None:
        if metrics is None:
            from ..platform.metrics import Metrics

            metrics = Metrics()  # a private registry nobody scrapes: no-op
        self.metrics = metrics
        self.settings = settings
        self.storage = storage
        self.sessions = sessions
        self.features = features
        self.started_at = time.time()
        self.edges: Edges = edges if edges is not None else LocalEdges()
        self.blocks = BlockCache(storage)
        self.caches = UserCaches()
        self.domains = DomainRegistry(
            components if components is not None else LocalComponents(),
            settings.component_domains(),
            remote,
        )
        self._presence: Presence | None = presence(self) if presence is not None else None
        #: the service contracts features reach through :meth:`contract`, by name
        self.contracts: dict[str, object] = {}
        self._hosts = frozenset(settings.hosts)

    @property
    def presence(self) -> Presence:
        if self._presence is None:
            raise StanzaError(StanzaCondition.INTERNAL_SERVER_ERROR, "no presence service")
        return self._presence

    # ---- context for features ---------------------------------------------

    def is_local(self, domain: str) -> bool:
        return domain in self._hosts

    async def user_exists(self, jid: JID) -> bool:
        if jid.local is None or not self.is_local(jid.domain):
            return False
        if await self.sessions.resources(jid.bare):
            return True
        acct = await self.storage.get_account(jid.domain, jid.local)
        return acct is not None

    async def deliver(self, jid: JID, data: bytes) -> bool:
        s = await self.sessions.get(jid)
        if s is None:
            return False
        edge = await self.edge(s.node)
        if edge is None:
            return False
        return await edge.deliver(jid, data)

    async def send(self, el: etree._Element) -> None:
        frm = JID.parse(el.get("from") or self.settings.default_host)
        to = JID.parse(el.get("to") or str(frm.bare))
        await self.route(Envelope.of(el, frm, to), trusted=True)

    async def edge(self, node: str) -> EdgeLink | None:
        """The link to an edge node. In a cluster the directory may not know an
        edge that joined a moment ago: it is asked to look again before the
        stanza is taken for undeliverable (and stored offline)."""
        link = self.edges.get(node)
        if link is None:
            await self.edges.ensure(node)
            link = self.edges.get(node)
        return link

    async def close_session(self, s: Session, condition: str, text: str | None = None) -> bool:
        edge = await self.edge(s.node)
        return edge is not None and await edge.close_session(s.jid, condition, text)

    async def service_domains(self) -> list[tuple[str, str]]:
        return self.domains.listed()

    def cache(self, name: str) -> UserCache:
        return self.caches.get(name)

    def contract(self, name: str) -> object:
        impl = self.contracts.get(name)
        if impl is None:
            raise StanzaError(StanzaCondition.SERVICE_UNAVAILABLE, f"no {name} service")
        return impl

    # ---- sessions --------------------------------------------------------

    async def bind(self, s: Session) -> frozenset[str]:
        """Register a bound session, replacing an older one of the same full JID.
        Returns the user's block list: loaded now, so the first stanza waits on
        no query, and handed back so an edge routing on its own (one-hop
        delivery) need not ask storage for it again."""
        blocked = await self.blocks.get(s.jid)
        old = await self.sessions.add(s)
        old_edge = await self.edge(old.node) if old is not None else None
        if old is not None and old_edge is not None:
            # RFC 6120 7.7.2.2: the older session is replaced with <conflict/>
            await old_edge.close_session(old.jid, "conflict", "replaced by new connection")
            await self._session_gone(old, replaced=True)
        return blocked

    async def unbind(self, jid: JID, sid: str) -> None:
        s = await self.sessions.remove(jid, sid)
        if s is not None:
            await self._session_gone(s, replaced=False)

    async def _session_gone(self, s: Session, replaced: bool) -> None:
        if self._presence is not None:
            await self._presence.session_gone(s, replaced=replaced)
        features = self.features
        if features.session_gone:
            await features.session_event(features.session_gone, self, s)

    # ---- routing ------------------------------------------------------------

    #: pauses before retrying a stanza whose routing failed on a backend error
    RETRY_DELAYS = (0.05, 0.25, 1.0)

    async def route(self, env: Envelope, trusted: bool = False) -> None:
        """Route one stanza: delivered, stored, or answered with an error.

        A backend failure (storage, Redis, an RPC) is retried a few times and
        then answered with internal-server-error: an accepted stanza is never
        dropped silently. A retry may deliver a stanza twice, never zero times.
        """
        for delay in (*self.RETRY_DELAYS, None):
            try:
                await self._route(env, trusted)
                return
            except StanzaError as err:
                await self.bounce(env, err)
                return
            except Exception:
                if delay is None:
                    log.exception("routing %s from %s failed; bouncing it", env.kind, env.frm)
                    break
                log.warning("routing %s from %s failed; retrying", env.kind, env.frm, exc_info=True)
                await asyncio.sleep(delay)
        try:
            await self.bounce(env, StanzaError(StanzaCondition.INTERNAL_SERVER_ERROR))
        except Exception:
            log.exception("could not bounce a stanza from %s either", env.frm)

    async def bounce(self, env: Envelope, err: StanzaError) -> None:
        """Answer a stanza with an error, unless it is an error itself (no loops)."""
        if env.type == "error" or (env.kind == "iq" and env.type == "result"):
            return
        el = env.tree()
        reply = stanza_error_reply(el, err)
        reply.set("to", str(env.frm))
        reply.set("from", str(env.to))
        await self._route(Envelope.of(reply, env.to, env.frm), trusted=True)

    async def _route(self, env: Envelope, trusted: bool) -> None:
        to = env.to
        features = self.features
        local_to = self.is_local(to.domain)
        if env.kind == "presence":
            if not trusted and env.frm.local is not None and self.is_local(env.frm.domain):
                if await features.handle(features.presence_out, self, env):
                    return
            elif local_to and await features.handle(features.presence_in, self, env):
                return
        if local_to and to.local is None:
            await self._to_server(env)
            return
        if not trusted and features.filters and not await features.filter(self, env):
            return
        if (
            features.message_out
            and env.kind == "message"
            and not trusted
            and self.is_local(env.frm.domain)
        ):
            await features.observe(features.message_out, self, env)
        if not local_to:
            await self.domains.route(self, env)
            return
        if env.kind == "message" and features.message_arrive:
            await features.observe(features.message_arrive, self, env)
        if to.resource is not None:
            if await self.deliver(to, env.data):
                self.metrics.routed(env.t0)
                if env.kind == "message" and features.message_in:
                    await features.observe(features.message_in, self, env)
                return
            if env.kind == "iq":
                if env.type in ("get", "set"):
                    raise StanzaError(StanzaCondition.SERVICE_UNAVAILABLE)
                return
            if env.type in ("groupchat", "error"):
                return
            # RFC 6121 8.5.3.2.1: message to an absent resource is treated as bare
        if env.kind == "iq":
            await self._iq_to_account(env)
            return
        await self._message_to_bare(env)

    async def direct_link(self, env: Envelope) -> EdgeLink | None:
        """The edge holding the session a client's stanza is addressed to, when
        delivering it there is all the rules of :meth:`_route` would do: a
        message or IQ to a full JID of a local user with a bound session, and
        no block list in the way. None means the stanza needs the full rules
        (presence, bare JIDs, the server, absent sessions, blocking)."""
        to = env.to
        features = self.features
        if (
            env.kind == "presence"
            or to.resource is None
            or to.local is None
            or not self.is_local(to.domain)
        ):
            return None
        # the same filters as _route: a stanza any of them would stop takes
        # the router's way, which stops it with the right error
        try:
            if features.filters and not await features.filter(self, env):
                return None
        except StanzaError:
            return None
        s = await self.sessions.get(to)
        if s is None:
            return None
        return await self.edge(s.node)

    async def direct_prepare(self, env: Envelope) -> None:
        """What :meth:`_route` does to a client's message before delivering
        it to a full JID, for the one-hop path to do before it delivers:
        the ``message_out`` observers (a sender's archive, sent carbons),
        then the ``message_arrive`` hooks (the recipient's archive and its
        stanza-id). A delivery that then fails goes to a router as trusted,
        so these do not run twice (``message_arrive`` does, and an archive
        knows its own stanza-id)."""
        features = self.features
        if env.kind != "message":
            return
        if features.message_out and self.is_local(env.frm.domain):
            await features.observe(features.message_out, self, env)
        if features.message_arrive:
            await features.observe(features.message_arrive, self, env)

    async def direct_delivered(self, env: Envelope) -> None:
        """The ``message_in`` observers (received carbons) of a message the
        one-hop path delivered."""
        if env.kind == "message" and self.features.message_in:
            await self.features.observe(self.features.message_in, self, env)

    async def _message_to_bare(self, env: Envelope) -> None:
        to = env.to.bare
        typ = env.type or "normal"
        targets = [s for s in await self.sessions.resources(to) if s.available and s.priority >= 0]
        if typ == "error":
            return
        if typ == "groupchat":
            raise StanzaError(StanzaCondition.SERVICE_UNAVAILABLE)
        if targets:
            if typ != "headline":
                top = max(s.priority for s in targets)
                targets = [s for s in targets if s.priority == top]
            delivered = False
            for s in targets:
                edge = await self.edge(s.node)
                if edge is not None and await edge.deliver(s.jid, env.data):
                    delivered = True
                    self.metrics.routed(env.t0)
            if delivered:
                if self.features.message_in:
                    await self.features.observe(self.features.message_in, self, env)
                return
            # every target vanished meanwhile (a dead edge not yet reaped): store it
        if typ == "headline":
            return
        if not await self.user_exists(to):
            raise StanzaError(StanzaCondition.SERVICE_UNAVAILABLE)
        # RFC 6121 8.5.2.2.1: stored (offline storage, an archive) or refused
        if not await self.features.handle(self.features.undelivered, self, env):
            raise StanzaError(StanzaCondition.SERVICE_UNAVAILABLE)

    async def _iq_to_account(self, env: Envelope) -> None:
        if env.type not in ("get", "set"):
            return
        if env.frm.bare != env.to.bare and not await self.user_exists(env.to):
            raise StanzaError(StanzaCondition.SERVICE_UNAVAILABLE)
        await self._run_iq(env, self.features.account_iq)

    async def _to_server(self, env: Envelope) -> None:
        if env.to.resource is not None:
            if env.kind == "iq" and env.type in ("get", "set"):
                raise StanzaError(StanzaCondition.SERVICE_UNAVAILABLE)
            return
        if env.kind == "iq":
            if env.type in ("get", "set"):
                await self._run_iq(env, self.features.server_iq)
            return
        # messages to the server itself have no handler (yet): RFC 6120 10.3.1 lets us ignore them

    async def _run_iq(self, env: Envelope, table: Mapping[tuple[str, str], IQHandler]) -> None:
        el = env.tree()
        child = el[0] if len(el) else None
        if child is None or not isinstance(child.tag, str):
            raise StanzaError(StanzaCondition.BAD_REQUEST)
        handler = table.get((child.tag, env.type or ""))
        if handler is None:
            raise StanzaError(StanzaCondition.SERVICE_UNAVAILABLE)
        result = await handler(self, env, child)
        if result is NO_REPLY:
            return
        reply = st.make("iq", to=env.frm, frm=env.to, type_="result", id_=env.id)
        if result is not None:
            reply.append(result)
        await self.deliver_or_drop(env.frm, reply)

    async def deliver_or_drop(self, to: JID, el: etree._Element) -> None:
        if to.resource is not None and self.is_local(to.domain):
            await self.deliver(to, etree.tostring(el, with_tail=False))
        else:
            await self.send(el)
