"""Serving an ASGI application with uvicorn as a task of the running event
loop, in a process that owns its signals: the admin API and the edge's web
listener (WebSocket, BOSH, host-meta) both run this way."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Generator
from typing import Any

import uvicorn

log = logging.getLogger("xmppd.http")


class _Uvicorn(uvicorn.Server):
    """uvicorn inside a process that owns its signals (ours)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class AsgiServer:
    """Serves an app with uvicorn as a task of the running event loop."""

    def __init__(self, app: Any, what: str = "HTTP server", **config: Any) -> None:
        self.app = app
        self.what = what
        #: further uvicorn.Config arguments (WebSocket limits, keep-alive)
        self.config = config
        self.server: uvicorn.Server | None = None
        self.task: asyncio.Task[None] | None = None

    async def start(self, host: str, port: int) -> int:
        """Bind (SO_REUSEADDR; port 0 picks a free one), start serving, return the port."""
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        family, type_, proto, _, addr = infos[0]
        sock = socket.socket(family, type_, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(addr)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        bound = int(sock.getsockname()[1])
        config = uvicorn.Config(
            self.app,
            host=host,
            port=bound,
            lifespan="off",
            log_level="warning",
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=5,
            **self.config,
        )
        server = self.server = _Uvicorn(config)
        self.task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while not server.started:
            if self.task.done() or loop.time() > deadline:
                await self.stop()
                sock.close()
                raise OSError(f"the {self.what} did not start on {host}:{bound}")
            await asyncio.sleep(0.01)
        return bound

    async def stop(self) -> None:
        server, task = self.server, self.task
        if server is None or task is None:
            return
        server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(task), 10)
        except (TimeoutError, asyncio.CancelledError):
            task.cancel()
        except BaseException:  # uvicorn's own failure: already logged
            log.debug("%s ended with an error", self.what, exc_info=True)
        self.server = self.task = None
