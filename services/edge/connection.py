"""The TCP transport of a client session (STARTTLS on 5222, direct TLS on
5223): the asyncio shell of :mod:`.shell` plus the input shaper and the TLS
upgrade. What the session does with its stream's events is in
:mod:`.session`; every protocol decision is made in :mod:`services.xmpp.c2s`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import ssl
import time
from typing import TYPE_CHECKING

from ..xmpp import c2s
from .session import ClientSession
from .shell import StreamShell

if TYPE_CHECKING:
    from .server import EdgeServer

log = logging.getLogger("xmppd.edge")

#: transport write buffer high-water mark: past it we stop reading the client
#: (and stop answering what it already sent) until it reads our output, so a
#: client that never reads cannot make us queue replies to its requests
OUTPUT_HIGH_WATER = 64 * 1024
#: seconds between releases of shaped input: held bytes go to the stream in
#: portions as the bucket earns them, so what the client sent first (a bind,
#: a ping reply) is not kept waiting for the whole debt
SHAPER_TICK = 0.1


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
        self.session = ClientSession(edge, self.stream, self)
        self._handle = self.session.handle  # type: ignore[method-assign]
        self._held = bytearray()  # input read past the shaper rate, not processed yet
        self._unshape_timer: asyncio.TimerHandle | None = None
        self._conn_gauge = edge.metrics.conn_tls if direct_tls else edge.metrics.conn_tcp
        # the input shaper, a token bucket of bytes refilled lazily (_refill);
        # the unauthenticated phase runs at the normal rate
        self._set_rate(settings.shaper_rate)

    # ---- asyncio callbacks ------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.edge.sessions.add(self.session)
        self._conn_gauge.inc()
        self._tok_time = asyncio.get_running_loop().time()
        self._accept(transport)

    def data_received(self, data: bytes) -> None:
        if self._half_closed:
            self._discard(data)
            return
        self.session.last_rx = time.monotonic()
        # the shaper's hot path: one subtraction and one comparison
        self._tokens -= len(data)
        if self._tokens < 0:
            self._shape(data)
            return
        self._feed(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._conn_gauge.dec()
        self._connection_gone()

    # ---- writing -------------------------------------------------------------

    def _name(self) -> str:
        return self.session.name()

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

    # ---- the session's transport ------------------------------------------------

    # the hot path of every delivered stanza: the shell's own method, no extra call
    schedule_flush = StreamShell._schedule_flush

    def stream_ended(self) -> None:
        self.flush()
        self._close_transport()

    def bound(self, admin: bool) -> None:
        self._release_unauth()
        s = self.edge.settings
        self._set_output_cap(s.max_output_buffer, OUTPUT_HIGH_WATER)
        if admin:
            self._set_rate(s.shaper_rate_admin)

    async def start_tls(self) -> bool:
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
            return False
        if new is None:
            self._close_transport()
            return False
        self.transport = new
        # a fresh transport: reading not paused, writing not paused (the old
        # one now reports to the TLS layer, never to us), default limits
        self._reading_paused = self._write_paused = False
        self._writable.set()
        new.set_write_buffer_limits(high=self._high_water())
        self._update_reading()
        return True

    async def _teardown(self) -> None:
        await self.session.transport_gone(self)
