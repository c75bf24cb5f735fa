"""One client connection: a thin asyncio shell around the sans-IO C2SStream.

This module only moves bytes between the socket and the stream object and
acts on the stream's events (TLS, credentials, binding, stanzas); every
protocol decision is made in :mod:`services.xmpp.c2s`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import ssl
import time
from typing import TYPE_CHECKING

from lxml import etree

from ..core.routing import Envelope, Session
from ..security.throttle import Verdict
from ..xmpp import c2s, ns
from ..xmpp import stanza as st
from ..xmpp.errors import StanzaError, StreamCondition, StreamError, stanza_error_reply
from ..xmpp.jid import JID
from ..xmpp.parser import serialize
from .shell import StreamShell

if TYPE_CHECKING:
    from .server import EdgeServer

log = logging.getLogger("xmppd.edge")

_SESSION_IQ = ns.q(ns.SESSION, "session")
#: transport write buffer high-water mark: past it we stop reading the client
#: (and stop answering what it already sent) until it reads our output, so a
#: client that never reads cannot make us queue replies to its requests
OUTPUT_HIGH_WATER = 64 * 1024
#: seconds between releases of shaped input: held bytes go to the stream in
#: portions as the bucket earns them, so what the client sent first (a bind,
#: a ping reply) is not kept waiting for the whole debt
SHAPER_TICK = 0.1
_PING = ns.q(ns.PING, "ping")


def _blocked(verdict: Verdict) -> StreamError:
    """The stream error for an address blocked after failed authentications (the
    condition and text of ejabberd's mod_fail2ban)."""
    return StreamError(
        StreamCondition.POLICY_VIOLATION,
        f"Too many ({verdict.failures}) failed authentications from this IP address;"
        f" it is blocked for {math.ceil(verdict.retry_after)} more seconds",
    )


class C2SConnection(StreamShell[c2s.Event]):
    stream: c2s.C2SStream

    def __init__(self, edge: EdgeServer, direct_tls: bool) -> None:
        settings = edge.settings
        # the output cap is raised when the client binds (see _on_bind)
        super().__init__(
            edge,
            c2s.C2SStream(edge.stream_config(direct_tls)),
            settings.max_output_buffer_unauthenticated,
            OUTPUT_HIGH_WATER,
        )
        self.direct_tls = direct_tls
        self.jid: JID | None = None
        self.opened = time.monotonic()
        self.last_rx = self.opened
        self.ping_id: str | None = None
        self.ping_sent = 0.0
        self.replaced = False
        #: the account (user@host) whose credentials the current SASL attempt checks
        self._auth_account: str | None = None
        self._held = bytearray()  # input read past the shaper rate, not processed yet
        self._unshape_timer: asyncio.TimerHandle | None = None
        self._conn_gauge = edge.metrics.conn_tls if direct_tls else edge.metrics.conn_tcp
        # the input shaper, a token bucket of bytes refilled lazily (_refill);
        # the unauthenticated phase runs at the normal rate
        self._set_rate(settings.shaper_rate)

    # ---- asyncio callbacks ------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.edge.connections.add(self)
        self._conn_gauge.inc()
        self._tok_time = asyncio.get_running_loop().time()
        self._accept(transport)

    def data_received(self, data: bytes) -> None:
        if self._half_closed:
            self._discard(data)
            return
        self.last_rx = time.monotonic()
        # the shaper's hot path: one subtraction and one comparison
        self._tokens -= len(data)
        if self._tokens < 0:
            self._shape(data)
            return
        self._feed(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.edge.connections.discard(self)
        self._conn_gauge.dec()
        self._connection_gone()

    # ---- writing -------------------------------------------------------------

    def _name(self) -> str:
        return str(self.jid) if self.jid is not None else self.ip

    def _set_rate(self, rate: int) -> None:
        """(Re)start the input shaper at ``rate`` bytes/s, its bucket full."""
        s = self.edge.settings
        if rate <= 0:
            self._rate = 0.0
            self._burst = float("inf")  # tokens never fall below 0
        else:
            self._rate = float(rate)
            self._burst = max(rate * s.shaper_burst, 1.0)
        if self._shaped and rate > 0:
            # held input is still owed, at the new rate from now on
            self._schedule_unshape(0.0)
            return
        self._tokens = self._level = self._burst
        self._tok_time = self._loop.time() if self._loop is not None else 0.0
        if self._shaped:
            self._schedule_unshape(0.0)  # no shaper any more: release what is held

    def _schedule_unshape(self, delay: float) -> None:
        if self._unshape_timer is not None:
            self._unshape_timer.cancel()
        assert self._loop is not None
        self._unshape_timer = self._loop.call_later(delay, self._unshape)

    def _refill(self) -> None:
        """Add the tokens earned since the last refill. ``_level`` is what the
        bucket held then and ``_level - _tokens`` what was taken since; count
        it as taken just now, so a long silence never buys more than one
        burst (conservative: a true bucket would sometimes hold more)."""
        if self._rate == 0.0:
            return  # no shaper (turned off at bind): the bucket is infinite
        assert self._loop is not None
        now = self._loop.time()
        self._tokens += min(self._burst - self._level, (now - self._tok_time) * self._rate)
        self._level = self._tokens
        self._tok_time = now

    def _shape(self, data: bytes) -> None:
        """``data`` (already counted) overdraws the bucket: process what the
        refilled bucket covers, hold the rest and pause reading until the
        bucket has earned it. Nothing is dropped and order is kept: while
        shaped, whatever still arrives joins the held bytes."""
        if self._shaped:
            self._held += data  # a timer is pending
            return
        self._refill()
        if self._tokens >= 0:
            self._feed(data)
            return
        # one read can be up to 256 KiB (more after TLS): pausing after
        # processing it would let a whole read through unshaped
        now = max(len(data) + math.floor(self._tokens), 0)
        self._held += data[now:]
        self._shaped = True
        self._metrics.limited["shaper"].inc()
        self._update_reading()
        self._schedule_unshape(min(-self._tokens / self._rate, SHAPER_TICK))
        if now:
            self._feed(data[:now])

    def _unshape(self) -> None:
        self._unshape_timer = None
        if self._lost:
            self._held.clear()
            return
        self._refill()
        # the held bytes were counted already: the bucket covers this many
        if self._tokens >= 0:
            now = len(self._held)
        else:
            now = max(len(self._held) + math.floor(self._tokens), 0)
        chunk = b""
        if now > 0:
            chunk = bytes(self._held[:now])
            del self._held[:now]
        if self._held:
            self._schedule_unshape(min(max(-self._tokens, 1.0) / self._rate, SHAPER_TICK))
        else:
            self._shaped = False
            self._update_reading()
        if chunk:
            self._feed(chunk)

    # ---- driving the stream --------------------------------------------------

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
            await self._on_auth_failed(ev)
        elif isinstance(ev, c2s.Authenticated):
            self._metrics.auth_result(ev.mechanism, True)
            account, self._auth_account = self._auth_account, None
            if account is not None:
                await self.edge.throttle.record_success(self.ip, account)

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
                ssl_handshake_timeout=self.edge.settings.negotiation_timeout,
            )
        except (ssl.SSLError, OSError, ConnectionError, TimeoutError) as exc:
            log.info("TLS handshake with %s failed: %s", self.ip, exc)
            self._close_transport()
            return
        if new is None:
            self._close_transport()
            return
        self.transport = new
        # a fresh transport: reading not paused, writing not paused (the old
        # one now reports to the TLS layer, never to us), default limits
        self._reading_paused = self._write_paused = False
        self._writable.set()
        new.set_write_buffer_limits(high=self._high_water())
        self._update_reading()
        self.stream.tls_started()

    async def _on_need_credentials(self, ev: c2s.NeedCredentials) -> None:
        host = self.stream.host or self.edge.settings.default_host
        try:  # one account whatever the case or width the client spelt it in
            account = str(JID.make(ev.username, host).bare)
        except StanzaError:
            account = f"{ev.username}@{host}"
        verdict = await self.edge.throttle.check(self.ip, account)
        if verdict.blocked:
            self._metrics.auth_throttled["refused"].inc()
            self.stream.close(_blocked(verdict))
            return
        self._auth_account = account
        if verdict.delay > 0:
            # every attempt on the account waits, right password or not: the
            # answer's timing must not tell which it was
            self._metrics.auth_throttled["delayed"].inc()
            await asyncio.sleep(verdict.delay)
            if self.stream.state is not c2s.State.SASL_WAIT_CREDS:
                return  # closed meanwhile (negotiation timeout, shutdown)
        storage = self.edge.storage
        creds, disabled = await storage.get_login(host, ev.username, ev.hash_name)
        self.stream.provide_credentials(creds, disabled=disabled)

    async def _on_auth_failed(self, ev: c2s.AuthFailed) -> None:
        account, self._auth_account = self._auth_account, None
        if account is None or ev.condition == "aborted":
            return  # no password was tried: nothing to count
        verdict = await self.edge.throttle.record_failure(self.ip, account)
        if verdict.blocked:
            if verdict.started:
                self._metrics.auth_throttled["blocked"].inc()
                log.warning(
                    "blocking %s for %.0f s after %d failed authentications",
                    self.ip,
                    verdict.retry_after,
                    verdict.failures,
                )
            self.stream.close(_blocked(verdict))

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
        self._release_unauth()
        s = self.edge.settings
        self._set_output_cap(s.max_output_buffer, OUTPUT_HIGH_WATER)
        if str(jid.bare) in self.edge.admins:
            self._set_rate(s.shaper_rate_admin)
        self.stream.bind_done(jid)

    async def _on_preauth_iq(self, el: etree._Element) -> None:
        from ..features import register

        host = self.stream.host or self.edge.settings.default_host
        reply = await register.preauth(
            self.edge.context, host, el, ip=self.ip, limit=self.edge.throttle
        )
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
        self._schedule_flush()

    def send_ping(self) -> None:
        assert self.jid is not None
        self.ping_id = "ping-" + secrets.token_hex(4)
        self.ping_sent = time.monotonic()
        iq = st.make("iq", to=self.jid, frm=self.jid.domain, type_="get", id_=self.ping_id)
        iq.append(etree.Element(_PING, nsmap={None: ns.PING}))
        self.deliver(etree.tostring(iq, with_tail=False))

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
