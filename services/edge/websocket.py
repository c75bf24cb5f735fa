"""The WebSocket transport of a client session (RFC 7395), on the edge's web
listener: uvicorn speaks WebSocket, this module moves messages between the
ASGI connection and the session's stream (framed by
:data:`services.xmpp.framing.WEBSOCKET`).

* The handshake must offer the ``xmpp`` subprotocol; otherwise it is refused
  (HTTP 403), so the answer never names ``xmpp`` (3.3.1).
* One message in is one element; the stream's decoder checks that. Messages
  are read one at a time and answered before the next is read, so a client
  cannot run ahead of its answers.
* Output waits in one bounded outbox that a writer task drains; past the cap
  the stream ends with ``resource-constraint``, as on TCP.
* Before the session is bound, uvicorn refuses messages longer than
  ``preauth_stanza_size`` (close code 1009) before buffering them: the limit
  on memory before login holds here too.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from typing import TYPE_CHECKING, Any

from ..xmpp.errors import StreamCondition, StreamError
from ..xmpp.framing import WEBSOCKET
from .framed import FramedTransport

if TYPE_CHECKING:
    from .server import EdgeServer

log = logging.getLogger("xmppd.edge")

Receive = Any  # the ASGI callables: typed loosely, as uvicorn hands them over
Send = Any

#: WebSocket close codes (RFC 6455 7.4.1)
NORMAL_CLOSURE = 1000
#: bytes of framing and namespace declarations a message may carry beyond its stanza
FRAME_SLACK = 1024


def _set_message_limit(receive: Receive, limit: int) -> bool:
    """Change uvicorn's limit on one incoming message for this connection.

    ASGI has no word for it; uvicorn's WebSocket protocol object (behind
    ``receive``) keeps the limit on its websockets ``ServerProtocol``. Where it
    is not reachable, uvicorn's ``ws_max_size`` (the authenticated limit)
    still holds, and the stream parser still refuses an element past the
    pre-authentication size with policy-violation."""
    conn = getattr(getattr(receive, "__self__", None), "conn", None)
    if conn is None or not hasattr(conn, "max_message_size"):
        return False
    conn.max_message_size = limit
    return True


class WebSocketTransport(FramedTransport):
    def __init__(self, edge: EdgeServer, ip: str, secure: bool, send: Send, receive: Receive):
        super().__init__(edge, ip, secure, WEBSOCKET)
        self._send = send
        self._receive = receive
        self._outbox: collections.deque[bytes] = collections.deque()
        self._outbox_bytes = 0
        self._wake = asyncio.Event()
        self._closing = False  # the stream is over: close the socket once the outbox is out
        self._gone = False  # the socket is closed

    # ---- the session's transport ----------------------------------------------

    def flush(self) -> None:
        frames = self.stream.frames_to_send()
        if not frames or self._gone:
            return
        self._outbox.extend(frames)
        self._outbox_bytes += sum(map(len, frames))
        self._wake.set()
        if self._outbox_bytes > self._out_cap and not self._closing:
            self.edge.metrics.limited["output_buffer"].inc()
            log.warning(
                "closing websocket %s: %d bytes unread", self.session.name(), self._outbox_bytes
            )
            # the peer is not reading: what is queued will not reach it anyway
            self._outbox.clear()
            self._outbox_bytes = 0
            self.close(StreamError(StreamCondition.RESOURCE_CONSTRAINT, "too much unread output"))

    def stream_ended(self) -> None:
        self.flush()
        self._closing = True
        self._wake.set()

    def bound(self, admin: bool) -> None:
        super().bound(admin)
        _set_message_limit(self._receive, self.edge.settings.max_stanza_size + FRAME_SLACK)

    # ---- running ------------------------------------------------------------------

    async def run(self) -> None:
        edge, session = self.edge, self.session
        edge.sessions.add(session)
        edge.metrics.conn_websocket.inc()
        writer = self._loop.create_task(self._write())
        try:
            refused = self._admit()
            if refused is not None:
                log.info("refusing websocket client %s: %s", self.ip, refused)
                self.close(StreamError(StreamCondition.POLICY_VIOLATION, refused))
            else:
                _set_message_limit(self._receive, edge.settings.preauth_stanza_size + FRAME_SLACK)
                await self._read()
        finally:
            self._release_unauth()
            self._closing = True
            self._wake.set()
            try:
                await asyncio.wait_for(writer, 5.0)
            except (TimeoutError, asyncio.CancelledError):
                writer.cancel()
            edge.metrics.conn_websocket.dec()
            await session.transport_gone(self)

    async def _read(self) -> None:
        session, stream = self.session, self.stream
        while not self._closing:
            msg = await self._receive()
            kind = msg["type"]
            if kind == "websocket.disconnect":
                self._gone = True
                return
            if kind != "websocket.receive":
                continue
            session.last_rx = time.monotonic()
            text = msg.get("text")
            if text is None:
                # 3.2: XMPP data frames MUST be text frames
                self.close(StreamError(StreamCondition.BAD_FORMAT, "binary frames are not XMPP"))
                return
            stream.receive_data(text.encode())
            try:
                while (ev := stream.next_event()) is not None:
                    await session.handle(ev)
                    self.flush()
            except Exception:  # a bug or a backend failure must not leave the socket hanging
                log.exception("edge: error handling a websocket stream")
                self.close(StreamError(StreamCondition.INTERNAL_SERVER_ERROR))
            self.flush()

    async def _write(self) -> None:
        send = self._send
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self._outbox:
                    frame = self._outbox.popleft()
                    self._outbox_bytes -= len(frame)
                    await send({"type": "websocket.send", "text": frame.decode()})
                if self._closing:
                    break
            if not self._gone:
                self._gone = True
                await send({"type": "websocket.close", "code": NORMAL_CLOSURE})
        except Exception:  # the peer went away under us: nothing left to tell it
            self._gone = True
            log.debug("websocket send failed", exc_info=True)


async def serve(
    edge: EdgeServer, scope: dict[str, Any], receive: Receive, send: Send, secure: bool
) -> None:
    """One WebSocket connection to ``/xmpp-websocket``; ``secure``: whether it
    counts as secure for authentication (``http_secure``)."""
    msg = await receive()
    if msg["type"] != "websocket.connect":
        return
    if "xmpp" not in scope.get("subprotocols", ()):
        # 3.3.1: without 'xmpp' in the answer no XMPP connection exists; the
        # handshake is refused so no client mistakes it for one
        await send({"type": "websocket.close", "code": 1002})
        return
    await send({"type": "websocket.accept", "subprotocol": "xmpp"})
    ip = (scope.get("client") or ("", 0))[0]
    transport = WebSocketTransport(edge, ip, secure, send, receive)
    await transport.run()
