"""The operations HTTP endpoint: ``/metrics``, ``/healthz``, ``/readyz``.

A small HTTP/1.1 server on asyncio streams, no dependencies beyond
prometheus-client's text encoder:

* ``GET /metrics``: the Prometheus text exposition of the server's registry.
* ``GET /healthz``: 200 while the process's event loop runs (answering at all
  proves it) — the liveness probe.
* ``GET /readyz``: 200 when every readiness check passes (listeners up,
  database answering), else 503; the JSON body names each check and the
  failing ones — the readiness probe.

``HEAD`` works wherever ``GET`` does. Anything else is answered without a
traceback: 400 for a malformed request, 404 for an unknown path, 405 (with
``Allow``) for another method, 413/431 for oversized bodies/headers, 500 if a
handler fails. Connections are kept alive (HTTP/1.1), bounded in number, in
header size and in idle time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest

log = logging.getLogger("xmppd.ops")

#: a readiness check: returns normally (and not False) when ready, else raises or returns False
Check = Callable[[], Awaitable[object]]

METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
JSON_CONTENT_TYPE = "application/json"
MAX_LINE = 8192  # request line or one header line
MAX_HEADERS = 100
MAX_BODY = 64 * 1024  # requests here carry no body; a small one is read and ignored
IDLE_TIMEOUT = 60.0  # a kept-alive connection with no request for this long is closed
READ_TIMEOUT = 10.0  # once a request started, all of it must arrive within this
MAX_CONNECTIONS = 128
CHECK_TIMEOUT = 2.0

_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Content Too Large",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}
_TOKEN = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _Request:
    __slots__ = ("headers", "keep_alive", "method", "path")

    def __init__(self, method: str, path: str, headers: dict[str, str], keep_alive: bool) -> None:
        self.method = method
        self.path = path
        self.headers = headers
        self.keep_alive = keep_alive


class OpsHTTPServer:
    """Serves one registry's metrics and the health probes of one server process."""

    def __init__(
        self,
        registry: CollectorRegistry,
        ready_checks: Mapping[str, Check] | None = None,
        *,
        check_timeout: float = CHECK_TIMEOUT,
    ) -> None:
        self.registry = registry
        self.ready_checks = dict(ready_checks or {})
        self.check_timeout = check_timeout
        self.port = -1
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._routes: dict[str, Callable[[], Awaitable[tuple[int, str, bytes]]]] = {
            "/metrics": self._metrics,
            "/healthz": self._healthz,
            "/readyz": self._readyz,
        }

    async def start(self, host: str, port: int) -> int:
        """Listen on ``host:port`` (0: a free port); return the bound port."""
        self._server = await asyncio.start_server(
            self._serve, host=host, port=port, limit=MAX_LINE, reuse_address=True
        )
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for w in list(self._writers):  # kept-alive scrapers would hold wait_closed()
            w.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._server.wait_closed(), 2.0)
        self._server = None

    # ---- connections --------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._writers) >= MAX_CONNECTIONS:
            writer.close()
            return
        self._writers.add(writer)
        try:
            while True:
                try:
                    req = await self._read_request(reader)
                except _BadRequest as bad:
                    self._respond(
                        writer, bad.status, JSON_CONTENT_TYPE, _json(error=bad.message), False
                    )
                    await writer.drain()
                    break
                if req is None:
                    break  # the client closed, or stayed idle
                status, ctype, body, extra = await self._dispatch(req)
                self._respond(
                    writer,
                    status,
                    ctype,
                    b"" if req.method == "HEAD" else body,
                    req.keep_alive,
                    extra,
                    length=len(body),
                )
                await writer.drain()
                if not req.keep_alive:
                    break
        except (ConnectionError, OSError, asyncio.IncompleteReadError):
            pass
        except Exception:  # never let a bug kill the listener or leak a traceback to a client
            log.exception("ops http: error serving a request")
        finally:
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _read_request(self, reader: asyncio.StreamReader) -> _Request | None:
        try:
            line = await asyncio.wait_for(reader.readuntil(b"\n"), IDLE_TIMEOUT)
        except TimeoutError:
            return None
        except asyncio.IncompleteReadError as e:
            if e.partial.strip():
                raise _BadRequest(400, "incomplete request line") from None
            return None
        except asyncio.LimitOverrunError:
            raise _BadRequest(400, "request line too long") from None
        try:
            return await asyncio.wait_for(self._read_rest(reader, line), READ_TIMEOUT)
        except TimeoutError:
            raise _BadRequest(408, "request not complete in time") from None
        except asyncio.IncompleteReadError:
            raise _BadRequest(400, "incomplete request") from None

    async def _read_rest(self, reader: asyncio.StreamReader, line: bytes) -> _Request:
        try:
            text = line.decode("ascii").rstrip("\r\n")
        except UnicodeDecodeError:
            raise _BadRequest(400, "request line is not ASCII") from None
        parts = text.split(" ")
        if len(parts) != 3 or not parts[0] or not parts[1]:
            raise _BadRequest(400, "malformed request line")
        method, target, version = parts
        if not set(method) <= _TOKEN:
            raise _BadRequest(400, "malformed method")
        if not version.startswith("HTTP/") or len(version) != 8:
            raise _BadRequest(400, "malformed HTTP version")
        if version not in ("HTTP/1.0", "HTTP/1.1"):
            raise _BadRequest(505, "only HTTP/1.0 and HTTP/1.1")

        headers: dict[str, str] = {}
        count = 0
        while True:
            try:
                raw = await reader.readuntil(b"\n")
            except asyncio.LimitOverrunError:
                raise _BadRequest(431, "header line too long") from None
            if raw in (b"\r\n", b"\n"):
                break
            count += 1
            if count > MAX_HEADERS:
                raise _BadRequest(431, "too many header fields")
            try:
                h = raw.decode("latin-1").rstrip("\r\n")
            except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes any byte
                raise _BadRequest(400, "bad header") from None
            name, sep, value = h.partition(":")
            if not sep or not name or not set(name) <= _TOKEN:
                raise _BadRequest(400, "malformed header field")
            key = name.lower()
            value = value.strip()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value

        if "transfer-encoding" in headers:
            raise _BadRequest(501, "request bodies are not supported")
        length = headers.get("content-length")
        if length is not None:
            if not length.isdigit() or not length.isascii():
                raise _BadRequest(400, "malformed Content-Length")
            n = int(length)
            if n > MAX_BODY:
                raise _BadRequest(413, "request body too large")
            if n:
                await reader.readexactly(n)  # nothing here takes a body: drop it

        conn = {t.strip().lower() for t in headers.get("connection", "").split(",")}
        keep_alive = "keep-alive" in conn if version == "HTTP/1.0" else "close" not in conn

        if target.startswith("/"):
            path = target
        elif target.startswith(("http://", "https://")):  # absolute form
            rest = target.split("://", 1)[1]
            path = "/" + rest.split("/", 1)[1] if "/" in rest else "/"
        else:
            raise _BadRequest(400, "malformed request target")
        path = path.split("?", 1)[0].split("#", 1)[0]
        return _Request(method, path, headers, keep_alive)

    async def _dispatch(self, req: _Request) -> tuple[int, str, bytes, list[tuple[str, str]]]:
        handler = self._routes.get(req.path)
        if handler is None:
            return 404, JSON_CONTENT_TYPE, _json(error="not found"), []
        if req.method not in ("GET", "HEAD"):
            return (
                405,
                JSON_CONTENT_TYPE,
                _json(error="method not allowed"),
                [("Allow", "GET, HEAD")],
            )
        try:
            status, ctype, body = await handler()
        except Exception:
            log.exception("ops http: %s failed", req.path)
            return 500, JSON_CONTENT_TYPE, _json(error="internal error"), []
        return status, ctype, body, []

    @staticmethod
    def _respond(
        writer: asyncio.StreamWriter,
        status: int,
        ctype: str,
        body: bytes,
        keep_alive: bool,
        extra: list[tuple[str, str]] | None = None,
        *,
        length: int | None = None,
    ) -> None:
        lines = [
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}",
            f"Content-Type: {ctype}",
            f"Content-Length: {len(body) if length is None else length}",
            "Cache-Control: no-store",
            f"Connection: {'keep-alive' if keep_alive else 'close'}",
        ]
        lines.extend(f"{k}: {v}" for k, v in extra or ())
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)

    # ---- the endpoints ------------------------------------------------------------

    async def _metrics(self) -> tuple[int, str, bytes]:
        return 200, METRICS_CONTENT_TYPE, generate_latest(self.registry)

    async def _healthz(self) -> tuple[int, str, bytes]:
        return 200, JSON_CONTENT_TYPE, _json(status="ok")

    async def _readyz(self) -> tuple[int, str, bytes]:
        names = list(self.ready_checks)
        results = await asyncio.gather(*(self._run_check(self.ready_checks[n]) for n in names))
        checks = dict(zip(names, results, strict=True))
        failing = [n for n, r in checks.items() if r != "ok"]
        if failing:
            body = _json(status="unavailable", failing=failing, checks=checks)
            return 503, JSON_CONTENT_TYPE, body
        return 200, JSON_CONTENT_TYPE, _json(status="ready", checks=checks)

    async def _run_check(self, check: Check) -> str:
        try:
            ok = await asyncio.wait_for(check(), self.check_timeout)
        except TimeoutError:
            return "timeout"
        except Exception as exc:
            return f"error: {type(exc).__name__}"
        return "failed" if ok is False else "ok"


def _json(**fields: Any) -> bytes:
    return json.dumps(fields, separators=(",", ":")).encode() + b"\n"
