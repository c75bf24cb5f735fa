"""The domain registry: which domains this server answers for, and where
stanzas to every other domain go.

* Local hosts (``settings.hosts``): RFC 6121 delivery, in the router itself.
* Services of this server (MUC, publish-subscribe, ... as they come):
  in-process objects registered under their domain with :meth:`register`.
* External components (XEP-0114): a component connects to an edge, which
  claims the domain in a :class:`ComponentDirectory` (in-process for the
  embedded default, Redis in a cluster); stanzas to the domain go to that
  edge, which writes them to the component's stream. A configured component
  that is not connected answers ``service-unavailable``.
* Everything else: the federation seam, :class:`RemoteDomains`. Until
  server-to-server exists it answers ``remote-server-not-found``.

The server's disco#items lists the services and the configured components.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from ..core.routing import Envelope
from ..xmpp.errors import StanzaCondition, StanzaError
from ..xmpp.jid import JID

if TYPE_CHECKING:
    from ..core.feature import Context

__all__ = [
    "ComponentDirectory",
    "DomainRegistry",
    "DomainService",
    "LocalComponents",
    "NoFederation",
    "RemoteDomains",
]


class DomainService(Protocol):
    """A service of this server reached by its own domain (MUC, pubsub, ...)."""

    async def route(self, ctx: Context, env: Envelope) -> None:
        """Take a stanza addressed to the service's domain (or a JID in it);
        a StanzaError raised here is bounced to the sender."""
        ...


class RemoteDomains(Protocol):
    """The federation seam: stanzas for domains this server does not serve."""

    async def route(self, ctx: Context, env: Envelope) -> None: ...


class NoFederation:
    async def route(self, ctx: Context, env: Envelope) -> None:
        raise StanzaError(StanzaCondition.REMOTE_SERVER_NOT_FOUND)


class ComponentDirectory(Protocol):
    """Which edge holds the stream of each connected external component."""

    async def claim(self, domain: str, node: str) -> bool:
        """Record ``domain`` as connected at ``node``; False if it already is."""
        ...

    async def release(self, domain: str, node: str) -> None:
        """Forget ``domain`` if ``node`` holds it (a reconnect elsewhere stays)."""
        ...

    async def where(self, domain: str) -> str | None: ...


class LocalComponents:
    """The component directory of one process (the embedded default)."""

    def __init__(self) -> None:
        self._at: dict[str, str] = {}

    async def claim(self, domain: str, node: str) -> bool:
        if domain in self._at:
            return False
        self._at[domain] = node
        return True

    async def release(self, domain: str, node: str) -> None:
        if self._at.get(domain) == node:
            del self._at[domain]

    async def where(self, domain: str) -> str | None:
        return self._at.get(domain)


@dataclass(frozen=True, slots=True)
class _Entry:
    name: str
    service: DomainService


class DomainRegistry:
    def __init__(
        self,
        components: ComponentDirectory,
        component_domains: dict[str, str],
        remote: RemoteDomains | None = None,
    ) -> None:
        #: configured external components: domain -> name for disco#items
        self.component_domains = dict(component_domains)
        self.components = components
        self.remote: RemoteDomains = remote if remote is not None else NoFederation()
        self._services: dict[str, _Entry] = {}

    def register(self, domain: str, name: str, service: DomainService) -> None:
        """Serve ``domain`` with an in-process service (at start, by the wiring)."""
        if domain in self._services or domain in self.component_domains:
            raise ValueError(f"domain {domain!r} is served twice")
        self._services[domain] = _Entry(name, service)

    def listed(self) -> list[tuple[str, str]]:
        """(domain, name) of what disco#items of the server shows."""
        items = [(d, e.name) for d, e in self._services.items()]
        items += list(self.component_domains.items())
        return sorted(items)

    async def route(self, ctx: Context, env: Envelope) -> None:
        """A stanza for a domain that is not a local host."""
        domain = env.to.domain
        entry = self._services.get(domain)
        if entry is not None:
            await entry.service.route(ctx, env)
            return
        if domain in self.component_domains:
            node = await self.components.where(domain)
            edge = await ctx.edge(node) if node is not None else None
            if edge is None or not await edge.deliver(JID.make(None, domain), env.data):
                # XEP-0114: the component is away
                raise StanzaError(StanzaCondition.SERVICE_UNAVAILABLE)
            return
        await self.remote.route(ctx, env)
