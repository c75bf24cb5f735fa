"""The BOSH transport of client sessions (XEP-0124, XEP-0206) on the edge's
web listener.

A :class:`BoshSession` is the transport of one client session for as long
as the client keeps coming back: each HTTP request brings zero or more
stanzas and is held until there is something to answer (or ``wait``
passes); between requests, output waits in the stream. A session whose
client sends nothing for ``inactivity`` seconds while no request is held
ends, and its contacts see it unavailable.

A session lives on the edge that created it (the table is in memory); in a
cluster the Ingress keeps a client on one edge (docs/operations.md).
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import secrets
import time
from typing import TYPE_CHECKING

from ..xmpp import bosh, c2s
from ..xmpp.bosh import Body, BoshError, Condition, RidWindow
from ..xmpp.errors import StreamCondition, StreamError
from ..xmpp.framing import BOSH
from ..xmpp.parser import Event as ParserEvent
from ..xmpp.parser import StreamClosed
from .framed import FramedTransport

if TYPE_CHECKING:
    from .server import EdgeServer

log = logging.getLogger("xmppd.edge")

#: the shortest polling interval we ask of polling clients, seconds
POLLING = 2
#: bytes of <body/> wrapper allowed beyond the element limits
BODY_SLACK = 4096


class Reply:
    """An answer to one HTTP request: the body and its HTTP status."""

    __slots__ = ("body", "status")

    def __init__(self, body: bytes, status: int = 200) -> None:
        self.body = body
        self.status = status


def terminate(err: BoshError, legacy: bool = False) -> Reply:
    status = bosh.LEGACY_STATUS.get(err.condition, 200) if legacy else 200
    return Reply(bosh.terminate_body(err.condition), status)


class BoshSession(FramedTransport):
    def __init__(
        self, edge: EdgeServer, manager: BoshManager, ip: str, secure: bool, first: Body
    ) -> None:
        super().__init__(edge, ip, secure, BOSH)
        s = edge.settings
        self.manager = manager
        self.secure = secure
        self.sid = secrets.token_urlsafe(18)
        self.legacy = first.version() is None
        client_ver = first.version() or (1, 5)
        self.ver = min(client_ver, bosh.VERSION)
        # 'wait' and 'hold' as asked, lowered to our limits (XEP-0124 7.1)
        self.wait = max(0, min(first.number("wait", s.bosh_max_wait), s.bosh_max_wait))
        self.hold = max(0, min(first.number("hold", 1), s.bosh_max_hold))
        self.requests = self.hold + 1
        self.inactivity = s.bosh_inactivity
        self.rids = RidWindow(first.rid, self.requests)
        #: a restart request carries no xmpp:version (XEP-0206 5): the stream
        #: header of every restart is the creation request's
        self._header = first.stream_header()
        #: requests waiting to be answered, oldest first: (rid, future)
        self._held: collections.deque[tuple[int, asyncio.Future[Reply]]] = collections.deque()
        #: requests that arrived ahead of their turn: rid -> (body, future)
        self._early: dict[int, tuple[Body, asyncio.Future[Reply]]] = {}
        self._pending: list[bytes] = []  # frames no request has carried yet
        self._pending_bytes = 0
        self._ended = False
        self._end_reply: bytes | None = None
        self._pumping = False
        self._idle_timer: asyncio.TimerHandle | None = None
        self._counted = False  # in the connections gauge

    # ---- the session's transport ----------------------------------------------

    def flush(self) -> None:
        if self.stream.state is c2s.State.CLOSED:
            # what is queued ends with a stream error or the stream's end:
            # it goes out as a terminate body, not as an ordinary answer
            self.stream_ended()
            return
        frames = self.stream.frames_to_send()
        if frames:
            self._pending.extend(frames)
            self._pending_bytes += sum(map(len, frames))
            if self._pending_bytes > self._out_cap and not self._ended:
                self.edge.metrics.limited["output_buffer"].inc()
                self._pending.clear()
                self._pending_bytes = 0
                self.close(
                    StreamError(StreamCondition.RESOURCE_CONSTRAINT, "too much unread output")
                )
                return
        if self._pending and self._held and not self._ended:
            self._answer_oldest()

    def stream_ended(self) -> None:
        """The stream is over: what it sent last (a stream error) goes out in a
        terminate body, to every request held and to the next that comes."""
        if self._ended:
            return
        frames = self._pending + self.stream.frames_to_send()
        self._pending = []
        errors = [f for f in frames if f.startswith(b"<stream:error")]
        others = [f for f in frames if not f.startswith(b"<stream:error")]
        if errors:
            self._end_reply = bosh.terminate_body(Condition.REMOTE_STREAM_ERROR, others + errors)
        else:
            self._end_reply = bosh.terminate_body(None, others)
        self._ended = True
        while self._held:
            _rid, fut = self._held.popleft()
            if not fut.done():
                fut.set_result(Reply(self._end_reply))
                self._end_reply = bosh.terminate_body(None)
        for _body, fut in self._early.values():
            if not fut.done():
                fut.set_result(Reply(bosh.terminate_body(Condition.OTHER_REQUEST)))
        self._early.clear()
        self._loop.create_task(self._finish())

    # ---- requests -------------------------------------------------------------------

    def element_limit(self) -> int:
        s = self.edge.settings
        return s.max_stanza_size if self.stream.authenticated else s.preauth_stanza_size

    async def create(self, first: Body) -> Reply:
        """Answer the session creation request."""
        edge = self.edge
        refused = self._admit()
        if refused is not None:
            raise BoshError(Condition.POLICY_VIOLATION, refused)
        edge.sessions.add(self.session)
        edge.metrics.conn_bosh.inc()
        self._counted = True
        self.manager.sessions[self.sid] = self
        self.stream.receive_events([self._header])
        await self._pump()
        frames = self.stream.frames_to_send()
        if self._ended or self.stream.state is c2s.State.CLOSED:
            # a bad 'to' or version: the stream error goes out as remote-stream-error
            self.stream_ended()
            assert self._end_reply is not None
            reply, self._end_reply = self._end_reply, bosh.terminate_body(None)
            return Reply(reply)
        payload = bosh.session_body(
            sid=self.sid,
            wait=self.wait,
            hold=self.hold,
            requests=self.requests,
            inactivity=self.inactivity,
            polling=POLLING,
            ver=self.ver,
            host=self.stream.host or edge.settings.default_host,
            stream_id=self.stream.stream_id,
            secure=self.secure,
            payload=frames,
        )
        self._idle()
        return Reply(payload)

    async def request(self, body: Body) -> Reply:
        """Answer one request of this session, in rid order."""
        if self._ended:
            reply, self._end_reply = self._end_reply or bosh.terminate_body(None), None
            return Reply(reply)
        self.session.last_rx = time.monotonic()
        rid = body.rid
        kind = self.rids.classify(rid)
        if kind == "repeat":
            return Reply(self.rids.answer(rid))
        if kind == "bad":
            # XEP-0124 section 14: outside the window of 'requests' ahead (so
            # also more simultaneous requests than allowed), or too old
            self.close(None)
            raise BoshError(Condition.ITEM_NOT_FOUND, "rid out of window")
        fut: asyncio.Future[Reply] = self._loop.create_future()
        if kind == "early":
            self._early[rid] = (body, fut)
        else:
            await self._take(body, fut)
            while self.rids.next in self._early and not self._ended:
                early_body, early_fut = self._early.pop(self.rids.next)
                await self._take(early_body, early_fut)
        return await fut

    async def _take(self, body: Body, fut: asyncio.Future[Reply]) -> None:
        """Process the request whose turn it is, then hold it."""
        rid = self.rids.advance()
        self._cancel_idle()
        self._held.append((rid, fut))
        fut.add_done_callback(functools.partial(self._answered, rid))
        if body.terminate:
            events: list[ParserEvent] = [*body.children, StreamClosed()]
            self.stream.receive_events(events)
        elif body.restart:
            self.stream.receive_events([self._header])
        elif body.children:
            self.stream.receive_events(list(body.children))
        await self._pump()
        self.flush()
        while len(self._held) > self.hold and not self._ended:
            # XEP-0124 section 10: never hold more than 'hold'; the oldest
            # goes back (empty) so the client may send again
            self._answer_oldest(empty=True)
        if self._held and not self._ended:
            self._loop.call_later(self.wait, self._wait_over, fut)

    def _answer_oldest(self, empty: bool = False) -> None:
        _rid, fut = self._held.popleft()
        if empty:
            fut.set_result(Reply(bosh.body([])))
            return
        payload, self._pending, self._pending_bytes = self._pending, [], 0
        fut.set_result(Reply(bosh.body(payload)))

    def _wait_over(self, fut: asyncio.Future[Reply]) -> None:
        for i, (_rid, held) in enumerate(self._held):
            if held is fut:
                del self._held[i]
                if not fut.done():
                    fut.set_result(Reply(bosh.body([])))
                return

    def _answered(self, rid: int, fut: asyncio.Future[Reply]) -> None:
        if not fut.cancelled() and fut.exception() is None:
            self.rids.answered(rid, fut.result().body)
        if not self._held and not self._ended:
            self._idle()

    async def _pump(self) -> None:
        if self._pumping:
            return  # the running pump takes what was just queued
        self._pumping = True
        try:
            while (ev := self.stream.next_event()) is not None:
                await self.session.handle(ev)
                self.flush()
        except Exception:  # a bug or a backend failure must not leave the session hanging
            log.exception("edge: error handling a BOSH stream")
            self.close(StreamError(StreamCondition.INTERNAL_SERVER_ERROR))
        finally:
            self._pumping = False

    # ---- the end ------------------------------------------------------------------

    def _idle(self) -> None:
        """No request is held: the client has ``inactivity`` seconds to send one."""
        self._cancel_idle()
        self._idle_timer = self._loop.call_later(self.inactivity, self._inactive)

    def _cancel_idle(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    def _inactive(self) -> None:
        self._idle_timer = None
        if not self._held and not self._ended:
            log.info("BOSH session %s of %s: inactive, ending it", self.sid, self.session.name())
            self.close(StreamError(StreamCondition.CONNECTION_TIMEOUT))

    async def _finish(self) -> None:
        self._cancel_idle()
        self._release_unauth()
        if self.manager.sessions.get(self.sid) is self:
            # kept a little longer than a request takes, so the client's next
            # request reads the end instead of item-not-found
            self._loop.call_later(self.wait + 5, self.manager.sessions.pop, self.sid, None)
        if self._counted:
            self._counted = False
            self.edge.metrics.conn_bosh.dec()
        await self.session.transport_gone(self)


class BoshManager:
    """The BOSH sessions of one edge, by sid."""

    def __init__(self, edge: EdgeServer) -> None:
        self.edge = edge
        self.sessions: dict[str, BoshSession] = {}

    def body_limit(self, sid: str | None) -> int:
        """The most bytes read of a request to ``sid`` (None: a new session):
        before the session authenticates, far fewer (the limit on memory
        before login)."""
        s = self.edge.settings
        sess = self.sessions.get(sid) if sid else None
        if sess is not None and sess.stream.authenticated:
            return s.max_stanza_size + BODY_SLACK
        return s.preauth_stanza_size + BODY_SLACK

    async def handle(self, data: bytes, ip: str, secure: bool) -> Reply:
        try:
            body = bosh.parse_body(data, self.edge.settings.max_stanza_size)
        except BoshError as err:
            return terminate(err)
        sid = body.sid
        try:
            if sid is None:
                if len(data) > self.body_limit(None):
                    raise BoshError(Condition.POLICY_VIOLATION, "request too large")
                return await self._create(body, ip, secure)
            sess = self.sessions.get(sid)
            if sess is None:
                raise BoshError(Condition.ITEM_NOT_FOUND, "no such session")
            if len(data) > sess.element_limit() + BODY_SLACK:
                sess.close(StreamError(StreamCondition.POLICY_VIOLATION, "request too large"))
                raise BoshError(Condition.POLICY_VIOLATION, "request too large")
            return await sess.request(body)
        except BoshError as err:
            legacy = sid is not None and sid in self.sessions and self.sessions[sid].legacy
            return terminate(err, legacy)

    async def _create(self, body: Body, ip: str, secure: bool) -> Reply:
        if body.terminate:
            raise BoshError(Condition.BAD_REQUEST, "no session to end")
        body.rid  # noqa: B018 - required: raises bad-request when missing
        to = body.attrs.get("to")
        if not to:
            raise BoshError(Condition.IMPROPER_ADDRESSING, "'to' is required")
        if to.lower() not in self.edge.settings.hosts:
            raise BoshError(Condition.HOST_UNKNOWN)
        if body.number("wait", 0) < 0 or body.number("hold", 0) < 0:
            raise BoshError(Condition.BAD_REQUEST)
        sess = BoshSession(self.edge, self, ip, secure, body)
        return await sess.create(body)

    def close_all(self) -> None:
        for sess in list(self.sessions.values()):
            sess.close(StreamError(StreamCondition.SYSTEM_SHUTDOWN))
