"""The asyncio shell every stream of the edge shares (clients, components):
it moves bytes between a socket and a sans-IO stream object and owns what
concerns the socket, not the protocol.

* Flow control: reading pauses while the stream has too many parsed
  elements waiting, while the peer leaves our output unread (past a
  high-water mark asyncio calls ``pause_writing``), or while a subclass says
  so (``_shaped``, the client shaper). While the peer is not reading, what it
  already sent is not answered either: that would only queue output.
* One bounded output buffer: every write goes through :meth:`flush`, and
  past the cap the stream ends with ``resource-constraint``.
* A lingering close: closing a socket with unread input makes the kernel
  answer with a reset, which throws away the stream error just written. So
  our output and a FIN go out (TCP), input is read and ignored, and the
  socket closes when the peer closes its side, or at :data:`CLOSE_LINGER`.
* The per-IP admission of :meth:`EdgeServer.admit` and its release.

A subclass supplies the stream and acts on its events (:meth:`_handle`),
and says what to forget when the connection ends (:meth:`_teardown`).
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import sys
import termios
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar, cast

from ..xmpp.errors import StreamCondition, StreamError

if TYPE_CHECKING:
    from .server import EdgeServer

log = logging.getLogger("xmppd.edge")

#: stop reading from a peer with this many parsed elements waiting
READ_BACKLOG = 256
#: seconds a closed transport may keep unread output before it is aborted: a
#: peer that never reads would otherwise hold the socket and buffer forever
CLOSE_LINGER = 5.0
#: input read and ignored after our close before the socket is aborted: a peer
#: that goes on sending at line rate gets its reset sooner
CLOSE_DISCARD = 1024 * 1024

EventT = TypeVar("EventT")
EventT_co = TypeVar("EventT_co", covariant=True)


class SansIOStream(Protocol[EventT_co]):
    """What the shell drives: bytes in, events and bytes out."""

    @property
    def backlog(self) -> int: ...
    def receive_data(self, data: bytes) -> None: ...
    def next_event(self) -> EventT_co | None: ...
    def data_to_send(self) -> bytes: ...
    def close(self, error: StreamError | None = None) -> None: ...


def unread_input(t: asyncio.Transport) -> bool:
    """Does the socket under ``t`` hold input nobody has read (FIONREAD)?"""
    sock = t.get_extra_info("socket")
    if sock is None:
        return True
    try:
        buf = fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0")
    except OSError:
        return True
    return int.from_bytes(buf, sys.byteorder) > 0


class StreamShell(asyncio.Protocol, Generic[EventT]):
    #: what the logs call the peer
    PEER = "client"

    def __init__(
        self,
        edge: EdgeServer,
        stream: SansIOStream[EventT],
        out_cap: int,
        high_water: int,
    ) -> None:
        self.edge = edge
        self.stream = stream
        self.transport: asyncio.Transport | None = None
        self.ip = ""
        self._metrics = edge.metrics
        # looked up once: get_running_loop() makes a getpid() system call on
        # Python 3.11, and the profile found it on every received chunk
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pumping = False
        self._closing = False
        self._lost = False
        self._half_closed = False  # our side is closed; waiting for the peer's
        self._discarded = 0  # bytes read and ignored since then
        self._flush_pending = False
        # reading is paused while any of these holds (see _update_reading)
        self._backlogged = False  # too many parsed elements waiting
        self._write_paused = False  # the peer is not reading our output
        self._shaped = False  # over an input rate (a subclass's shaper)
        self._reading_paused = False
        self._writable = asyncio.Event()
        self._writable.set()
        #: output cap (resource-constraint past it) and the high-water mark
        #: below it, where reading pauses
        self._out_cap = out_cap
        self._high = high_water
        self._overflowed = False
        self._unauth_counted = False  # holds one of edge.admit()'s per-IP slots

    # ---- asyncio callbacks ------------------------------------------------

    def _accept(self, transport: asyncio.BaseTransport) -> bool:
        """The common part of ``connection_made``; False if the address is
        refused (the stream is then closed with policy-violation)."""
        # uvloop's transports are not asyncio.Transport subclasses: duck-typed
        self.transport = t = cast(asyncio.Transport, transport)
        self._loop = asyncio.get_running_loop()
        peer = transport.get_extra_info("peername")
        self.ip = str(peer[0]) if peer else ""
        # every write counts toward one bounded buffer: past the high-water
        # mark asyncio calls pause_writing() and we stop reading the peer
        t.set_write_buffer_limits(high=self._high_water())
        refused = self.edge.admit(self.ip)
        if refused is not None:
            # RFC 6120 4.9.3.14: a local service policy, named in <text/>;
            # the stream header goes first (4.9.1.1), then the error and close
            log.info("refusing %s %s: %s", self.PEER, self.ip, refused)
            self.close(StreamError(StreamCondition.POLICY_VIOLATION, refused))
            return False
        self._unauth_counted = True
        return True

    def _feed(self, data: bytes) -> None:
        self.stream.receive_data(data)
        if self.stream.backlog > READ_BACKLOG and not self._backlogged:
            self._backlogged = True
            self._update_reading()
        if not self._pumping:
            self._pumping = True
            (self._loop or asyncio.get_running_loop()).create_task(self._pump())

    def _discard(self, data: bytes) -> None:
        """Input after our close: read only so that it causes no reset."""
        self._discarded += len(data)
        if self._discarded > CLOSE_DISCARD and self.transport is not None:
            self.transport.abort()

    def eof_received(self) -> bool | None:
        return None  # close the transport

    def _connection_gone(self) -> None:
        """The common part of ``connection_lost``."""
        self._lost = True
        self._release_unauth()
        self._writable.set()  # a pump waiting for the peer to read must end
        if not self._closing:
            self._closing = True
            asyncio.get_running_loop().create_task(self._teardown())

    # ---- writing -------------------------------------------------------------

    def flush(self) -> None:
        """Write what the stream has queued. Every write to the peer goes
        through here, so the output cap holds for replies, errors and
        features as well as delivered stanzas."""
        out = self.stream.data_to_send()
        t = self.transport
        if out and t is not None and not t.is_closing() and not self._half_closed:
            t.write(out)
            if t.get_write_buffer_size() > self._out_cap and not self._overflowed:
                self._overflowed = True
                self._metrics.limited["output_buffer"].inc()
                log.warning(
                    "closing %s %s: %d bytes unread",
                    self.PEER,
                    self._name(),
                    t.get_write_buffer_size(),
                )
                self.close(
                    StreamError(StreamCondition.RESOURCE_CONSTRAINT, "too much unread output")
                )

    def _schedule_flush(self) -> None:
        """Stanzas queued in one turn of the event loop leave in one write
        (one syscall, one TLS record) at its end: the profile showed a write
        per stanza dominating the hot path."""
        if not self._flush_pending:
            self._flush_pending = True
            (self._loop or asyncio.get_running_loop()).call_soon(self._deferred_flush)

    def _deferred_flush(self) -> None:
        self._flush_pending = False
        self.flush()

    def _name(self) -> str:
        return self.ip

    def _set_output_cap(self, cap: int, high_water: int) -> None:
        self._out_cap, self._high = cap, high_water
        if self.transport is not None:
            self.transport.set_write_buffer_limits(high=self._high_water())

    def _high_water(self) -> int:
        # below the cap, so a peer that stops reading is paused long before
        # it is cut off
        return min(self._high, self._out_cap // 2)

    # ---- flow control ----------------------------------------------------------

    def pause_writing(self) -> None:
        self._write_paused = True
        self._writable.clear()
        self._update_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._writable.set()
        self._update_reading()

    def _update_reading(self) -> None:
        """Pause reading while any reason holds, resume when none does."""
        want = self._backlogged or self._write_paused or self._shaped
        t = self.transport
        if want is self._reading_paused or t is None or t.is_closing():
            return
        self._reading_paused = want
        if want:
            t.pause_reading()
        else:
            t.resume_reading()

    def _release_unauth(self) -> None:
        if self._unauth_counted:
            self._unauth_counted = False
            self.edge.release_unauthenticated(self.ip)

    # ---- driving the stream --------------------------------------------------

    async def _handle(self, ev: EventT) -> None:
        raise NotImplementedError

    async def _teardown(self) -> None:
        raise NotImplementedError

    async def _pump(self) -> None:
        try:
            while True:
                if self._write_paused:
                    # the peer is not reading: answering more of what it
                    # sent would only queue output, so wait until it reads
                    await self._writable.wait()
                ev = self.stream.next_event()
                if ev is None:
                    break
                await self._handle(ev)
                self.flush()
        except Exception:  # a bug or a backend failure must not leave the socket hanging
            log.exception("edge: error handling a %s stream", self.PEER)
            self.close(StreamError(StreamCondition.INTERNAL_SERVER_ERROR))
        finally:
            self._pumping = False
            if self._backlogged:
                self._backlogged = False
                self._update_reading()
        self.flush()

    # ---- closing ---------------------------------------------------------------

    def close(self, error: StreamError | None) -> None:
        self.stream.close(error)
        self.flush()
        self._close_transport()

    def _close_transport(self) -> None:
        t = self.transport
        if t is not None and not t.is_closing() and not self._half_closed:
            loop = self._loop or asyncio.get_running_loop()
            if t.can_write_eof() or unread_input(t):
                # see the module docstring: a reset would lose the stream error
                self._half_closed = True
                if t.can_write_eof():
                    t.write_eof()
                if self._reading_paused:
                    self._reading_paused = False
                    t.resume_reading()
            else:
                t.close()
            loop.call_later(CLOSE_LINGER, self._abort)
        if not self._closing:
            self._closing = True
            asyncio.get_running_loop().create_task(self._teardown())

    def _abort(self) -> None:
        """The peer has not read the rest of our output since we closed."""
        if not self._lost and self.transport is not None:
            self.transport.abort()
