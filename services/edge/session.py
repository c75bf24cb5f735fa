"""A client session, apart from the transport that carries it.

:class:`ClientSession` is what the edge's session table holds and what the
router delivers to: the sans-IO c2s stream (negotiation state, bound JID),
the answers to its events (credentials, the login throttle, binding,
routing stanzas) and the keepalive state. A :class:`Transport` moves its
bytes or frames: TCP with STARTTLS or direct TLS (:mod:`.connection`), a
WebSocket (:mod:`.websocket`), BOSH's HTTP requests (:mod:`.bosh`).

The session may be without a transport for a while: output then waits in
the stream until one is attached (a resumable session after its socket
broke, XEP-0198: :meth:`detach`, :meth:`attach`). A transport says when it
is gone for good (:meth:`transport_gone`); that ends the session it still
carries. BOSH is one transport across many HTTP requests: between two, its
output waits in the transport.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import time
from typing import TYPE_CHECKING, Protocol

from lxml import etree

from ..core.routing import Envelope, Session
from ..security.throttle import Verdict
from ..xmpp import c2s, ns
from ..xmpp import stanza as st
from ..xmpp.errors import StanzaError, StreamCondition, StreamError, stanza_error_reply
from ..xmpp.jid import JID
from ..xmpp.parser import serialize

if TYPE_CHECKING:
    from .server import EdgeServer

log = logging.getLogger("xmppd.edge")

_SESSION_IQ = ns.q(ns.SESSION, "session")
_PING = ns.q(ns.PING, "ping")


class Transport(Protocol):
    """What a session needs of whatever carries it."""

    #: the peer's address (admission, the login throttle, logs)
    ip: str

    def flush(self) -> None:
        """Send what the stream has queued, now."""

    def schedule_flush(self) -> None:
        """Send what the stream has queued at the end of this loop turn: what
        is delivered in one turn leaves together."""

    def close(self, error: StreamError | None) -> None:
        """Close the stream (with ``error``), send its end, then the transport."""

    def stream_ended(self) -> None:
        """The stream has closed itself (its end is queued): send it and close."""

    async def start_tls(self) -> bool:
        """Upgrade to TLS (STARTTLS); False if the handshake failed."""

    def bound(self, admin: bool) -> None:
        """The session is bound: authenticated limits apply from now on."""


def _blocked(verdict: Verdict) -> StreamError:
    """The stream error for an address blocked after failed authentications (the
    condition and text of ejabberd's mod_fail2ban)."""
    return StreamError(
        StreamCondition.POLICY_VIOLATION,
        f"Too many ({verdict.failures}) failed authentications from this IP address;"
        f" it is blocked for {math.ceil(verdict.retry_after)} more seconds",
    )


class ClientSession:
    def __init__(self, edge: EdgeServer, stream: c2s.C2SStream, transport: Transport) -> None:
        self.edge = edge
        self.stream = stream
        self.transport: Transport | None = transport
        self.jid: JID | None = None
        self.opened = time.monotonic()
        self.last_rx = self.opened
        self.ping_id: str | None = None
        self.ping_sent = 0.0
        self.replaced = False
        self._ended = False
        self._metrics = edge.metrics
        #: the account (user@host) whose credentials the current SASL attempt checks
        self._auth_account: str | None = None

    @property
    def ip(self) -> str:
        return self.transport.ip if self.transport is not None else ""

    def name(self) -> str:
        """What logs call this session."""
        return str(self.jid) if self.jid is not None else self.ip

    # ---- transports ------------------------------------------------------------

    def attach(self, transport: Transport) -> None:
        """Carry on over ``transport``; what waited meanwhile goes out on it."""
        self.transport = transport
        transport.flush()

    def detach(self) -> None:
        """The transport is away for now; output waits in the stream."""
        self.transport = None

    async def transport_gone(self, transport: Transport) -> None:
        """``transport`` has ended for good. If it still carried the session,
        so has the session; a session detached from it or moved to another
        transport meanwhile is not its to end."""
        if self.transport is not transport:
            return
        self.transport = None
        if self._ended:
            return
        self._ended = True
        self.edge.sessions.discard(self)
        jid = self.jid
        if jid is None:
            self.edge.session_ended()
            return
        if self.edge.local.get(jid) is self:
            del self.edge.local[jid]
        if not self.replaced:
            self.edge.unbinding += 1
            try:
                await self.edge.router.unbind(jid, self.stream.stream_id)
            except Exception:
                log.exception("edge: unbind failed for %s", jid)
            finally:
                self.edge.unbinding -= 1
        self.edge.session_ended()

    def close(self, error: StreamError | None) -> None:
        t = self.transport
        if t is not None:
            t.close(error)
        else:
            self.stream.close(error)

    # ---- the stream's events ----------------------------------------------------

    async def handle(self, ev: c2s.Event) -> None:
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
            if self.transport is not None:
                self.transport.stream_ended()
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
        if self.transport is None or not await self.transport.start_tls():
            return
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
        if self.transport is not None:
            self.transport.bound(str(jid.bare) in self.edge.admins)
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
        """Queue a stanza for this client; it leaves with whatever else is
        delivered in this turn of the event loop (or with the next transport)."""
        self._metrics.stanza_out(data)
        self.stream.send_bytes(data)
        t = self.transport
        if t is not None:
            t.schedule_flush()

    def send_ping(self) -> None:
        assert self.jid is not None
        self.ping_id = "ping-" + secrets.token_hex(4)
        self.ping_sent = time.monotonic()
        iq = st.make("iq", to=self.jid, frm=self.jid.domain, type_="get", id_=self.ping_id)
        iq.append(etree.Element(_PING, nsmap={None: ns.PING}))
        self.deliver(etree.tostring(iq, with_tail=False))
