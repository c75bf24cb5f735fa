"""One client connection: a thin asyncio shell around the sans-IO C2SStream.

This module only moves bytes between the socket and the stream object and
acts on the stream's events (TLS, credentials, binding, stanzas); every
protocol decision is made in :mod:`services.xmpp.c2s`.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import ssl
import time
from typing import TYPE_CHECKING, cast

from lxml import etree

from ..router.interface import Envelope, Session
from ..xmpp import c2s, ns
from ..xmpp import stanza as st
from ..xmpp.errors import StanzaError, StreamCondition, StreamError, stanza_error_reply
from ..xmpp.jid import JID
from ..xmpp.parser import serialize

if TYPE_CHECKING:
    from .server import EdgeServer

log = logging.getLogger("xmppd.edge")

_SESSION_IQ = ns.q(ns.SESSION, "session")
#: stop reading from a client with this many parsed stanzas waiting
READ_BACKLOG = 256
#: a client that lets this much output pile up is cut off (resource-constraint)
WRITE_BUFFER_LIMIT = 16 * 1024 * 1024
_PING = ns.q(ns.PING, "ping")


class C2SConnection(asyncio.Protocol):
    def __init__(self, edge: EdgeServer, direct_tls: bool) -> None:
        self.edge = edge
        self.direct_tls = direct_tls
        self.transport: asyncio.Transport | None = None
        self.stream = c2s.C2SStream(edge.stream_config(direct_tls))
        self.ip = ""
        self.jid: JID | None = None
        self.opened = time.monotonic()
        self.last_rx = self.opened
        self.ping_id: str | None = None
        self.ping_sent = 0.0
        self.replaced = False
        self._pumping = False
        self._closing = False
        self._paused = False
        self._flush_pending = False
        # looked up once: get_running_loop() makes a getpid() system call on
        # Python 3.11, and the profile found it on every received chunk
        self._loop: asyncio.AbstractEventLoop | None = None
        self._metrics = edge.metrics
        self._conn_gauge = edge.metrics.conn_tls if direct_tls else edge.metrics.conn_tcp

    # ---- asyncio callbacks ------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses: duck-typed
        self.transport = cast(asyncio.Transport, transport)
        self._loop = asyncio.get_running_loop()
        peer = transport.get_extra_info("peername")
        self.ip = str(peer[0]) if peer else ""
        self.edge.connections.add(self)
        self._conn_gauge.inc()

    def data_received(self, data: bytes) -> None:
        self.last_rx = time.monotonic()
        self.stream.receive_data(data)
        if self.stream.backlog > READ_BACKLOG and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        if not self._pumping:
            self._pumping = True
            (self._loop or asyncio.get_running_loop()).create_task(self._pump())

    def eof_received(self) -> bool | None:
        return None  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.edge.connections.discard(self)
        self._conn_gauge.dec()
        if not self._closing:
            self._closing = True
            asyncio.get_running_loop().create_task(self._teardown())

    # ---- driving the stream --------------------------------------------------

    def flush(self) -> None:
        out = self.stream.data_to_send()
        if out and self.transport is not None and not self.transport.is_closing():
            self.transport.write(out)

    async def _pump(self) -> None:
        try:
            while True:
                ev = self.stream.next_event()
                if ev is None:
                    break
                await self._handle(ev)
                self.flush()
        except Exception:  # a bug must not leave the socket hanging
            log.exception("edge: error handling client stream")
            self.stream.close(StreamError(StreamCondition.INTERNAL_SERVER_ERROR))
            self.flush()
            self._close_transport()
        finally:
            self._pumping = False
            if self._paused and self.transport is not None and not self.transport.is_closing():
                self._paused = False
                self.transport.resume_reading()
        self.flush()

    async def _handle(self, ev: c2s.Event) -> None:
        if isinstance(ev, c2s.Stanza):
            await self._on_stanza(ev.element)
        elif isinstance(ev, c2s.NeedCredentials):
            await self._on_need_credentials(ev)
        elif isinstance(ev, c2s.StartTLS):
            await self._on_starttls()
        elif isinstance(ev, c2s.BindRequest):
            await self._on_bind(ev)
        elif isinstance(ev, c2s.PreAuthIQ):
            await self._on_preauth_iq(ev.element)
        elif isinstance(ev, c2s.Closed):
            self.flush()
            self._close_transport()
        elif isinstance(ev, c2s.AuthFailed):
            self._metrics.auth_result(ev.mechanism, False)
            log.info("auth failed from %s: %s %s", self.ip, ev.mechanism, ev.condition)
        elif isinstance(ev, c2s.Authenticated):
            self._metrics.auth_result(ev.mechanism, True)

    async def _on_starttls(self) -> None:
        self.flush()
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        try:
            new = await loop.start_tls(
                self.transport,
                self,
                self.edge.ssl_context,
                server_side=True,
                ssl_handshake_timeout=30,
            )
        except (ssl.SSLError, OSError, ConnectionError, TimeoutError) as exc:
            log.info("TLS handshake with %s failed: %s", self.ip, exc)
            self._close_transport()
            return
        if new is None:
            self._close_transport()
            return
        self.transport = new
        self.stream.tls_started()

    async def _on_need_credentials(self, ev: c2s.NeedCredentials) -> None:
        host = self.stream.host or self.edge.settings.default_host
        storage = self.edge.storage
        creds, disabled = await storage.get_login(host, ev.username, ev.hash_name)
        self.stream.provide_credentials(creds, disabled=disabled)

    async def _on_bind(self, ev: c2s.BindRequest) -> None:
        host = self.stream.host or self.edge.settings.default_host
        resource = ev.resource or secrets.token_hex(6)
        try:
            jid = JID.make(self.stream.username, host, resource)
        except StanzaError as err:
            self.stream.bind_done(None, err)
            return
        session = Session(
            jid=jid,
            node=self.edge.node_id,
            started=time.time(),
            ip=self.ip,
            sid=self.stream.stream_id,
        )
        await self.edge.router.bind(session)
        self.jid = jid
        self.edge.local[jid] = self
        self.stream.bind_done(jid)

    async def _on_preauth_iq(self, el: etree._Element) -> None:
        from ..features import register

        host = self.stream.host or self.edge.settings.default_host
        reply = await register.preauth(self.edge.router, host, el)
        self.stream.send_element(reply)
        self.stream.release(el)

    async def _on_stanza(self, el: etree._Element) -> None:
        jid = self.jid
        assert jid is not None
        m = self._metrics
        t0 = m.stamp()
        m.stanza_in(el.tag, el.get("type"))
        try:
            try:
                hdr = st.check_client_stanza(el, jid)
            except StanzaError as err:
                el.set("from", str(jid))
                el.attrib.pop("to", None)
                reply = stanza_error_reply(el, err)
                reply.attrib.pop("from", None)
                self.stream.send_element(reply)
                m.out_error.inc()
                return
            if hdr.kind == "iq":
                if self._local_iq(el, hdr):
                    return
            to = hdr.to if hdr.to is not None else jid.bare
            env = Envelope(hdr.kind, hdr.type, hdr.id, jid, to, serialize(el), el, t0)
            await self.edge.router.route(env)
        except StreamError as err:
            self.stream.close(err)
        finally:
            self.stream.release(el)

    def _local_iq(self, el: etree._Element, hdr: st.Header) -> bool:
        """IQs the edge answers itself: its own pings' replies and the legacy session."""
        if hdr.type in ("result", "error") and self.ping_id is not None and hdr.id == self.ping_id:
            if hdr.to is None or hdr.to.is_domain:
                self.ping_id = None
                return True
        if hdr.type == "set" and len(el) == 1 and el[0].tag == _SESSION_IQ:
            if hdr.to is None or hdr.to.is_domain:
                self.stream.send_element(st.make("iq", type_="result", id_=hdr.id))
                self._metrics.out_iq.inc()
                return True
        return False

    # ---- called by the edge server ------------------------------------------

    def deliver(self, data: bytes) -> None:
        """Queue a stanza for this client. Stanzas delivered in one turn of the
        event loop leave in one write (one syscall, one TLS record) at its end:
        the profile showed a write per stanza dominating the hot path."""
        self._metrics.stanza_out(data)
        self.stream.send_bytes(data)
        if not self._flush_pending:
            self._flush_pending = True
            (self._loop or asyncio.get_running_loop()).call_soon(self._deferred_flush)

    def _deferred_flush(self) -> None:
        self._flush_pending = False
        self.flush()
        t = self.transport
        if t is not None and t.get_write_buffer_size() > WRITE_BUFFER_LIMIT:
            log.warning("closing %s: %d bytes unread", self.jid, t.get_write_buffer_size())
            self.close(StreamError(StreamCondition.RESOURCE_CONSTRAINT, "too much unread output"))

    def close(self, error: StreamError | None) -> None:
        self.stream.close(error)
        self.flush()
        self._close_transport()

    def send_ping(self) -> None:
        assert self.jid is not None
        self.ping_id = "ping-" + secrets.token_hex(4)
        self.ping_sent = time.monotonic()
        iq = st.make("iq", to=self.jid, frm=self.jid.domain, type_="get", id_=self.ping_id)
        iq.append(etree.Element(_PING, nsmap={None: ns.PING}))
        self.deliver(etree.tostring(iq, with_tail=False))

    def _close_transport(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()
        if not self._closing:
            self._closing = True
            asyncio.get_running_loop().create_task(self._teardown())

    async def _teardown(self) -> None:
        jid = self.jid
        if jid is None:
            return
        if self.edge.local.get(jid) is self:
            del self.edge.local[jid]
        if not self.replaced:
            try:
                await self.edge.router.unbind(jid, self.stream.stream_id)
            except Exception:
                log.exception("edge: unbind failed for %s", jid)
