"""A client session, apart from the transport that carries it.

:class:`ClientSession` is what the edge's session table holds and what the
router delivers to: the sans-IO c2s stream (negotiation state, bound JID),
the answers to its events (credentials, the login throttle, binding,
routing stanzas) and the keepalive state. A :class:`Transport` moves its
bytes or frames: TCP with STARTTLS or direct TLS (:mod:`.connection`), a
WebSocket (:mod:`.websocket`), BOSH's HTTP requests (:mod:`.bosh`).

A transport says when it is gone for good (:meth:`transport_gone`); that
ends the session it still carries, unless the session may be resumed
(below: it then waits without a transport, and a new session adopts it).
BOSH is one transport across many HTTP requests: between two, its output
waits in the transport.

XEP-0198 stream management (the counters and queue are
:class:`~services.xmpp.sm.StreamManagement`, its rules in that module):

- **Counting**: every stanza written to the client after ``<enabled/>``
  passes :meth:`_sm_out`, in the order written: deliveries, the edge's own
  replies and errors, and what the CSI queue releases, when it releases it
  (what CSI holds back is not written, so not counted, until then).
- **Requests**: ``<r/>`` follows the stanza that makes ``sm_request_every``
  sent since the last request; fewer are asked for at the next keepalive
  tick (at most 5 s later: :meth:`sm_tick`).
- **Bound**: past ``sm_max_unacked`` unacknowledged stanzas the stream is
  closed with ``policy-violation``. That is a broken stream like any other:
  a resumable session is then kept for resumption, its queue with it. A
  detached session whose queue passes the bound (stanzas keep arriving
  while the client is away) ends at once, as if its time had run out.
- **Detached** (section 5): when the transport of a resumable session is
  lost without the client's clean ``</stream:stream>`` (a cut socket, a
  keepalive timeout, a stream error, the bound above), the session is not
  unbound: it stays in ``edge.local`` (deliveries go on into its queue;
  nothing is written) and in ``edge.resumable`` under its id, for the
  resumption time (``max`` of ``<enabled/>``: the client's wish, at most
  ``sm_resume_timeout``). A session closed on purpose is never kept: the
  client's clean close, a replaced resource (conflict), a kick
  (``close_session``), the edge's shutdown.
- **Resumed**: a ``<resume/>`` after SASL on a new stream of the same
  account takes the session over (:meth:`_on_sm_resume`): the new
  ClientSession adopts its JID, registry sid, counters, queue and CSI state
  and replaces it in ``edge.local`` and ``edge.resumable``; the router's
  registry is not told (the session is still bound on this edge). The
  stanzas the client's ``h`` does not cover are sent again after
  ``<resumed/>``. A session whose old stream is still open (the client came
  back before the server noticed) has that stream closed with ``conflict``
  first (section 5). An unknown or expired id, or another account's, is
  ``<failed><item-not-found/></failed>``, and the client may bind.
- **The end**: when the time runs out, or the session ends for good with
  stanzas unacknowledged (a clean close too: section 4, as Prosody does),
  it is unbound as any session, then each unacknowledged message is routed
  again to the session's JID, now unavailable, so RFC 6121 8.5.3.2.1 gives
  it to another resource or offline storage (or bounces it); an unanswered
  ``get``/``set`` IQ is answered with ``service-unavailable``; presence,
  errors and results are dropped.

While the client says it is inactive (XEP-0352), what is delivered to it
passes a :class:`~.csi.CsiQueue` first, which holds back presence and chat
states until something important, ``<active/>`` or a stanza from the client
comes (the rules are in :mod:`.csi`).
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
from ..xmpp import sm as sm_
from ..xmpp import stanza as st
from ..xmpp.errors import (
    StanzaCondition,
    StanzaError,
    StreamCondition,
    StreamError,
    stanza_error_reply,
)
from ..xmpp.jid import JID
from ..xmpp.parser import serialize
from ..xmpp.tree import parse_element
from .csi import CsiQueue

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
        #: XEP-0352 state, made at the first <inactive/>; None: active, as
        #: every session starts
        self.csi: CsiQueue | None = None
        #: the registry's id of the bound session (the stream id of the bind;
        #: a resumed session keeps the first stream's)
        self.sid = stream.stream_id
        #: XEP-0198 state, made at <enable/>; shared with the stream, which
        #: counts what the client sends
        self.sm: sm_.StreamManagement | None = None
        #: ended on purpose (kicked, replaced, shutdown): never kept for resumption
        self.no_resume = False
        #: detached, waiting for <resume/> until the timer runs out
        self.detached = False
        #: taken over by the session of a new stream (resumed): inert
        self.moved = False
        self._expiry: asyncio.TimerHandle | None = None
        self._ending: asyncio.Task[None] | None = None
        self._sm_overflow = False

    @property
    def ip(self) -> str:
        return self.transport.ip if self.transport is not None else ""

    def name(self) -> str:
        """What logs call this session."""
        return str(self.jid) if self.jid is not None else self.ip

    # ---- transports ------------------------------------------------------------

    async def transport_gone(self, transport: Transport) -> None:
        """``transport`` has ended for good. If it still carried the session,
        so has the session, unless it may be resumed (XEP-0198: it is then
        kept detached); a session detached from it or moved to another
        transport meanwhile is not its to end."""
        if self.transport is not transport:
            return
        self.transport = None
        if self._ended:
            return
        if self._resumable_now():
            self._keep_detached()
            return
        await self._end()

    def _resumable_now(self) -> bool:
        sm, jid = self.sm, self.jid
        return (
            sm is not None
            and sm.resumable
            and jid is not None
            and not self.no_resume
            and not self.replaced
            and not self.stream.peer_closed
            and self.edge.local.get(jid) is self
        )

    def _keep_detached(self) -> None:
        sm = self.sm
        assert sm is not None and sm.id is not None
        self.detached = True
        self.ping_id = None
        # out of the table the keepalive loop and stop() walk: edge.resumable has it
        self.edge.sessions.discard(self)
        self._expiry = asyncio.get_running_loop().call_later(sm.max, self._expire)
        log.info("%s: connection lost, kept %d s for resumption", self.name(), sm.max)
        self.edge.session_ended()

    def _expire(self) -> None:
        self._expiry = None
        if self.detached and self._ending is None:
            log.info("%s: not resumed in time", self.name())
            self._ending = asyncio.get_running_loop().create_task(self._end())

    async def _end(self) -> None:
        """The session is over: forget it, unbind it, and route again what
        the client never acknowledged."""
        if self._ended:
            return
        self._ended = True
        self.detached = False
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        if self.csi is not None:
            self.csi.drop()  # presence and chat states only: nothing to keep
        edge = self.edge
        edge.sessions.discard(self)
        sm = self.sm
        if sm is not None and sm.id is not None and edge.resumable.get(sm.id) is self:
            del edge.resumable[sm.id]
        jid = self.jid
        if jid is None:
            edge.session_ended()
            return
        if edge.local.get(jid) is self:
            del edge.local[jid]
        edge.unbinding += 1
        try:
            if not self.replaced:
                try:
                    await edge.router.unbind(jid, self.sid)
                except Exception:
                    log.exception("edge: unbind failed for %s", jid)
            if sm is not None and sm.pending:
                # after the unbind: the session's JID is unavailable now, so
                # the router treats them as sent to an unavailable resource
                await self._route_unacked(jid, sm.take_unacked())
        finally:
            edge.unbinding -= 1
        edge.session_ended()

    async def _route_unacked(self, jid: JID, stanzas: list[bytes]) -> None:
        """XEP-0198 section 4: what the client never acknowledged is handled
        as a stanza to an unavailable resource (see the module docstring)."""
        router = self.edge.router
        for data in stanzas:
            try:
                el = parse_element(data)
                tag = el.tag
                typ = el.get("type")
                frm_attr = el.get("from")
                frm = JID.parse(frm_attr) if frm_attr else JID.make(None, jid.domain)
                if tag == ns.q(ns.CLIENT, "message") and typ != "error":
                    env = Envelope("message", typ, el.get("id"), frm, jid, data, el)
                elif tag == ns.q(ns.CLIENT, "iq") and typ in ("get", "set") and frm_attr:
                    reply = stanza_error_reply(el, StanzaError(StanzaCondition.SERVICE_UNAVAILABLE))
                    reply.set("from", str(jid))
                    env = Envelope.of(reply, jid, frm)
                else:
                    continue  # presence, errors, results: nothing to do for them
                await router.route(env, trusted=True)
            except Exception:  # one bad stanza must not cost the others their delivery
                log.exception("edge: re-routing an unacknowledged stanza of %s failed", jid)

    def close(self, error: StreamError | None) -> None:
        t = self.transport
        if t is not None:
            t.close(error)
            return
        self.stream.close(error)
        if self.detached and self._ending is None:
            # no transport will report its end: end it here
            self._ending = asyncio.get_running_loop().create_task(self._end())

    # ---- the stream's events ----------------------------------------------------

    async def handle(self, ev: c2s.Event) -> None:
        if self.moved:
            return  # a stream whose session was resumed elsewhere: nothing is its any more
        if isinstance(ev, c2s.Stanza):
            csi = self.csi
            if csi is not None and not csi.active:
                # the client's radio is awake: what was held goes out with
                # whatever answers this stanza
                self._write(csi.flush())
            await self._on_stanza(ev.element)
        elif isinstance(ev, c2s.SmAck):
            self._on_sm_ack(ev.h)
        elif isinstance(ev, c2s.SmRequest):
            assert self.sm is not None
            self.stream.send_bytes(self.sm.ack_nonza())
        elif isinstance(ev, c2s.ClientState):
            self._on_client_state(ev.active)
        elif isinstance(ev, c2s.SmEnable):
            self._on_sm_enable(ev)
        elif isinstance(ev, c2s.SmResume):
            self._on_sm_resume(ev)
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

    def _on_client_state(self, active: bool) -> None:
        # synchronous on purpose: what <active/> releases is queued before
        # anything the client sent after it is answered (XEP-0352 5.1)
        if active:
            if self.csi is not None:
                self._write(self.csi.set_active())
            return
        if self.csi is None:
            s = self.edge.settings
            self.csi = CsiQueue(s.csi_max_held, s.max_output_buffer)
        self.csi.set_inactive()

    # ---- stream management (XEP-0198) ---------------------------------------------

    def _on_sm_enable(self, ev: c2s.SmEnable) -> None:
        s = self.edge.settings
        limit = math.ceil(s.sm_resume_timeout)
        resume = ev.resume and limit > 0
        granted = ev.max if ev.max is not None and 0 < ev.max < limit else limit
        sm = sm_.StreamManagement(
            resumable=resume,
            max_seconds=granted if resume else 0,
            max_unacked=s.sm_max_unacked,
            request_every=s.sm_request_every,
        )
        self.sm = sm
        if sm.id is not None:
            self.edge.resumable[sm.id] = self
        self.stream.sm_enabled(sm)

    def _on_sm_ack(self, h: int) -> None:
        sm = self.sm
        assert sm is not None
        try:
            sm.ack(h)
        except sm_.HandledCountTooHigh as err:
            self.no_resume = True  # its view of the session cannot be trusted
            self.close(err)

    def _sm_out(self, data: bytes) -> None:
        """Write a stanza to the client of a session with stream management:
        counted and queued first. Detached, the queue is the only copy."""
        sm = self.sm
        assert sm is not None
        within = sm.stanza_out(data)
        if self.detached:
            if not within and self._ending is None:
                log.info("%s: unacknowledged queue full while detached", self.name())
                self._ending = asyncio.get_running_loop().create_task(self._end())
            return
        self.stream.send_bytes(data)
        if not within:
            if not self._sm_overflow:
                self._sm_overflow = True
                log.warning("closing %s: %d stanzas unacknowledged", self.name(), sm.pending)
                self.close(
                    StreamError(
                        StreamCondition.POLICY_VIOLATION,
                        f"more than {sm.max_unacked} stanzas sent without acknowledgement"
                        " (XEP-0198)",
                    )
                )
            return
        if sm.want_request():
            self.stream.send_bytes(sm.request())

    def sm_tick(self) -> None:
        """The keepalive loop's turn: ask for an acknowledgement of stanzas
        sent since the last request, however few."""
        sm = self.sm
        if sm is not None and sm.since_request > 0 and not self.detached:
            self.stream.send_bytes(sm.request())
            t = self.transport
            if t is not None:
                t.schedule_flush()

    def _on_sm_resume(self, ev: c2s.SmResume) -> None:
        edge = self.edge
        old = edge.resumable.get(ev.previd)
        host = self.stream.host or edge.settings.default_host
        user = JID.make(self.stream.username, host) if self.stream.username else None
        if (
            old is None
            or old is self
            or old._ended
            or old.moved
            or old.sm is None
            or old.jid is None
            or old.jid.bare != user
        ):
            # another account's id is not told apart from an unknown one
            self.stream.resume_failed(StanzaCondition.ITEM_NOT_FOUND)
            return
        sm, jid = old.sm, old.jid
        try:
            resend = sm.resume_from(ev.h)
        except sm_.HandledCountTooHigh as err:
            self.stream.close(err)  # the old session is left as it was
            return
        # take the old session over: from here on it is inert
        old.moved = True
        old._ended = True
        old.detached = False
        if old._expiry is not None:
            old._expiry.cancel()
            old._expiry = None
        edge.sessions.discard(old)
        t = old.transport
        old.transport = None  # its transport_gone is no longer the session's end
        if t is not None:
            # section 5: the old stream is still open; close it
            t.close(StreamError(StreamCondition.CONFLICT, "the session was resumed elsewhere"))
        self.jid = jid
        self.sid = old.sid
        self.sm = sm
        self.csi = old.csi
        edge.local[jid] = self
        assert sm.id is not None
        edge.resumable[sm.id] = self
        if self.transport is not None:
            self.transport.bound(str(jid.bare) in edge.admins)
        self.stream.resumed(jid, sm)
        for data in resend:
            self._metrics.stanza_out(data)
            self.stream.send_bytes(data)
        if resend:
            self.stream.send_bytes(sm.request())
        log.info("%s: resumed, %d stanzas sent again", jid, len(resend))

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
        self.sid = session.sid
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
                self._send_stanza(etree.tostring(reply, with_tail=False))
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
                self._send_stanza(
                    etree.tostring(st.make("iq", type_="result", id_=hdr.id), with_tail=False)
                )
                self._metrics.out_iq.inc()
                return True
        return False

    # ---- called by the edge server ------------------------------------------

    def deliver(self, data: bytes) -> None:
        """Queue a stanza for this client; it leaves with whatever else is
        delivered in this turn of the event loop (or with the next transport).
        An inactive client's may be held back (XEP-0352)."""
        csi = self.csi
        if csi is not None and not csi.active:
            self._write(csi.push(data))
            return
        self._write((data,))

    def _write(self, stanzas: list[bytes] | tuple[bytes, ...]) -> None:
        """Queue stanzas for the client (delivered, or released by the CSI
        queue), in order, and have the transport send them this loop turn."""
        if not stanzas:
            return
        for data in stanzas:
            self._metrics.stanza_out(data)
            self._send_stanza(data)
        t = self.transport
        if t is not None:
            t.schedule_flush()

    def _send_stanza(self, data: bytes) -> None:
        """A stanza the edge answers the client with itself (counted by
        stream management like any other; the transport flushes it after
        the event)."""
        if self.sm is None:
            self.stream.send_bytes(data)
        else:
            self._sm_out(data)

    def send_ping(self) -> None:
        assert self.jid is not None
        self.ping_id = "ping-" + secrets.token_hex(4)
        self.ping_sent = time.monotonic()
        iq = st.make("iq", to=self.jid, frm=self.jid.domain, type_="get", id_=self.ping_id)
        iq.append(etree.Element(_PING, nsmap={None: ns.PING}))
        self.deliver(etree.tostring(iq, with_tail=False))
