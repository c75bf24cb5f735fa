"""One external component connection (XEP-0114): a thin asyncio shell around
the sans-IO :class:`~services.xmpp.component.ComponentStream`.

This module only moves bytes between the socket and the stream object and
acts on its events: on a good handshake it claims the component's domain
through the edge (which records it in the component directory), it routes
the component's stanzas through the edge's router (untrusted: blocking
filters and presence hooks apply as for any sender), and it releases the
domain when the stream ends. Every protocol decision is made in
:mod:`services.xmpp.component`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from lxml import etree

from ..core.routing import Envelope
from ..xmpp import component
from ..xmpp.errors import StreamCondition, StreamError
from .shell import StreamShell

if TYPE_CHECKING:
    from .server import EdgeServer

log = logging.getLogger("xmppd.edge.component")

#: transport write buffer high-water mark: past it we stop reading the component
OUTPUT_HIGH_WATER = 256 * 1024


class ComponentConnection(StreamShell[component.Event]):
    PEER = "component"
    stream: component.ComponentStream

    def __init__(self, edge: EdgeServer) -> None:
        super().__init__(
            edge,
            component.ComponentStream(edge.component_config()),
            edge.settings.max_output_buffer,
            OUTPUT_HIGH_WATER,
        )
        #: the domain this connection holds in the directory (after the handshake)
        self.domain: str | None = None
        self.opened = time.monotonic()
        self._timer: asyncio.TimerHandle | None = None

    # ---- asyncio callbacks ------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.edge.component_connections.add(self)
        if self._accept(transport):
            assert self._loop is not None
            self._timer = self._loop.call_later(
                self.edge.settings.negotiation_timeout, self._negotiation_timeout
            )

    def data_received(self, data: bytes) -> None:
        if self._half_closed:
            self._discard(data)
            return
        self._feed(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.edge.component_connections.discard(self)
        if self._timer is not None:
            self._timer.cancel()
        self._connection_gone()

    def _name(self) -> str:
        return self.domain or self.ip

    # ---- driving the stream --------------------------------------------------

    async def _handle(self, ev: component.Event) -> None:
        if isinstance(ev, component.Stanza):
            await self._on_stanza(ev)
        elif isinstance(ev, component.Authenticated):
            await self._on_authenticated(ev.domain)
        elif isinstance(ev, component.Closed):
            if ev.error is not None:
                log.info("component stream from %s closed: %s", self.ip, ev.error.value)
            self.flush()
            self._close_transport()

    async def _on_authenticated(self, domain: str) -> None:
        if not await self.edge.claim_component(domain, self):
            log.info("component %s from %s refused: already connected", domain, self.ip)
            self.stream.close(StreamError(StreamCondition.CONFLICT, "already connected"))
            return
        if self.stream.state is not component.State.CLAIMING:
            # closed while claiming (shutdown, timeout): give the domain back
            await self.edge.release_component(domain, self)
            return
        self.domain = domain
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._release_unauth()
        self.stream.accept()
        log.info("component %s connected from %s", domain, self.ip)

    async def _on_stanza(self, ev: component.Stanza) -> None:
        m = self._metrics
        t0 = m.stamp()
        el, h = ev.element, ev.header
        assert h.to is not None  # the stream requires 'to' of a component
        m.stanza_in(el.tag, h.type)
        data = etree.tostring(el, with_tail=False)
        await self.edge.router.route(Envelope(h.kind, h.type, h.id, h.frm, h.to, data, el, t0))

    # ---- writing ---------------------------------------------------------------

    def deliver(self, data: bytes) -> bool:
        """Queue a ``jabber:client`` stanza for the component; False when its
        stream is not open any more."""
        if self.stream.state is not component.State.ESTABLISHED or self._half_closed:
            return False
        self._metrics.stanza_out(data)
        self.stream.send_stanza(data)
        self._schedule_flush()
        return True

    def _negotiation_timeout(self) -> None:
        self._timer = None
        if self.stream.state is not component.State.ESTABLISHED:
            self.close(StreamError(StreamCondition.CONNECTION_TIMEOUT))

    async def _teardown(self) -> None:
        domain, self.domain = self.domain, None
        if domain is None:
            return
        log.info("component %s disconnected", domain)
        try:
            await self.edge.release_component(domain, self)
        except Exception:
            log.exception("edge: releasing component %s failed", domain)
