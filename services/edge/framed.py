"""What the web transports (WebSocket, BOSH) share: a client session over a
framed stream, output sent at the end of the loop turn it was queued in,
TLS that is never ours (wss:, https: end before us), and the per-IP slot
of an unauthenticated client."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from ..xmpp import c2s
from ..xmpp.errors import StreamError
from ..xmpp.framing import Framing
from .session import ClientSession

if TYPE_CHECKING:
    from .server import EdgeServer


class FramedTransport:
    def __init__(self, edge: EdgeServer, ip: str, secure: bool, framing: Framing) -> None:
        self.edge = edge
        self.ip = ip
        self.stream = c2s.C2SStream(
            edge.stream_config(secure, tls_available=False), framing=framing
        )
        self.session = ClientSession(edge, self.stream, self)
        self._out_cap = edge.settings.max_output_buffer_unauthenticated
        self._unauth_counted = False
        self._flush_pending = False
        self._loop = asyncio.get_running_loop()

    def flush(self) -> None:
        raise NotImplementedError

    def stream_ended(self) -> None:
        raise NotImplementedError

    def schedule_flush(self) -> None:
        if not self._flush_pending:
            self._flush_pending = True
            self._loop.call_soon(self._deferred_flush)

    def _deferred_flush(self) -> None:
        self._flush_pending = False
        self.flush()

    def close(self, error: StreamError | None) -> None:
        self.stream.close(error)
        self.stream_ended()

    async def start_tls(self) -> bool:
        return False  # no STARTTLS over HTTP: TLS is the listener's (wss:, https:)

    def bound(self, admin: bool) -> None:
        self._release_unauth()
        self._out_cap = self.edge.settings.max_output_buffer

    def _admit(self) -> str | None:
        """Take one of the address's unauthenticated slots; why not, or None."""
        refused = self.edge.admit(self.ip)
        if refused is None:
            self._unauth_counted = True
        return refused

    def _release_unauth(self) -> None:
        if self._unauth_counted:
            self._unauth_counted = False
            self.edge.release_unauthenticated(self.ip)
