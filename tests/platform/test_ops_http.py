"""services.platform.ops_http over real sockets: /metrics, /healthz, /readyz,
and what it answers to requests it does not like."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter

from services.app.embedded import EmbeddedServer
from services.platform import ops_http
from services.platform.ops_http import OpsHTTPServer


class Response:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)


class Conn:
    """A raw HTTP/1.1 connection: send exact bytes, read whole responses."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> Conn:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        return cls(r, w)

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def response(self, head: bool = False, timeout: float = 5.0) -> Response:
        raw = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), timeout)
        lines = raw.decode("latin-1").split("\r\n")
        version, status, _reason = lines[0].split(" ", 2)
        assert version == "HTTP/1.1"
        headers = {}
        for line in lines[1:]:
            if line:
                k, _, v = line.partition(":")
                headers[k.strip().lower()] = v.strip()
        n = 0 if head else int(headers["content-length"])
        body = await asyncio.wait_for(self.reader.readexactly(n), timeout)
        return Response(int(status), headers, body)

    async def closed(self, timeout: float = 5.0) -> bool:
        return await asyncio.wait_for(self.reader.read(1), timeout) == b""

    def close(self) -> None:
        self.writer.close()


class Checks:
    def __init__(self) -> None:
        self.db_ok = True
        self.listeners_ok = True
        self.slow = False

    async def listeners(self) -> bool:
        return self.listeners_ok

    async def database(self) -> None:
        if self.slow:
            await asyncio.sleep(10)
        if not self.db_ok:
            raise ConnectionRefusedError("secret connection details")


@pytest.fixture
async def ops() -> AsyncIterator[tuple[OpsHTTPServer, Checks, Counter]]:
    registry = CollectorRegistry()
    c = Counter("xmppd_test_things", "things", registry=registry)
    checks = Checks()
    srv = OpsHTTPServer(
        registry, {"listeners": checks.listeners, "database": checks.database}, check_timeout=0.3
    )
    await srv.start("127.0.0.1", 0)
    yield srv, checks, c
    await srv.stop()


@pytest.fixture
async def conn(
    ops: tuple[OpsHTTPServer, Checks, Counter],
) -> AsyncIterator[Callable[[], Awaitable[Conn]]]:
    opened: list[Conn] = []

    async def _open() -> Conn:
        c = await Conn.open(ops[0].port)
        opened.append(c)
        return c

    yield _open
    for c in opened:
        c.close()


async def get(conn: Callable[[], Awaitable[Conn]], path: str, method: str = "GET") -> Response:
    c = await conn()
    c.send(f"{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    return await c.response(head=method == "HEAD")


# ---- the endpoints ------------------------------------------------------------------


async def test_metrics(ops: Any, conn: Any) -> None:
    ops[2].inc(3)
    r = await get(conn, "/metrics")
    assert r.status == 200
    assert r.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert b"xmppd_test_things_total 3.0" in r.body
    r = await get(conn, "/metrics?name[]=x")  # query strings are ignored
    assert r.status == 200 and b"xmppd_test_things_total" in r.body


async def test_healthz(conn: Any) -> None:
    r = await get(conn, "/healthz")
    assert r.status == 200 and r.json() == {"status": "ok"}


async def test_readyz_names_the_failing_check(ops: Any, conn: Any) -> None:
    _srv, checks, _c = ops
    r = await get(conn, "/readyz")
    assert r.status == 200
    assert r.json() == {"status": "ready", "checks": {"listeners": "ok", "database": "ok"}}

    checks.db_ok = False
    r = await get(conn, "/readyz")
    assert r.status == 503
    body = r.json()
    assert body["failing"] == ["database"]
    assert body["checks"] == {"listeners": "ok", "database": "error: ConnectionRefusedError"}
    assert b"secret" not in r.body and b"Traceback" not in r.body

    checks.listeners_ok = False
    r = await get(conn, "/readyz")
    assert r.status == 503 and r.json()["failing"] == ["listeners", "database"]
    assert r.json()["checks"]["listeners"] == "failed"

    checks.listeners_ok, checks.db_ok, checks.slow = True, True, True
    r = await get(conn, "/readyz")
    assert r.status == 503 and r.json()["checks"]["database"] == "timeout"


async def test_head(conn: Any) -> None:
    r = await get(conn, "/healthz", "HEAD")
    assert r.status == 200 and r.body == b"" and int(r.headers["content-length"]) > 0


async def test_unknown_path_and_method(conn: Any) -> None:
    r = await get(conn, "/nope")
    assert r.status == 404 and r.json() == {"error": "not found"}
    for method in ("POST", "PUT", "DELETE", "OPTIONS", "FOO"):
        r = await get(conn, "/metrics", method)
        assert r.status == 405, method
        assert r.headers["allow"] == "GET, HEAD"


async def test_handler_failure_is_500_without_traceback(ops: Any, conn: Any) -> None:
    class Broken:
        def collect(self) -> Any:
            raise RuntimeError("boom in a collector")

    ops[0].registry.register(Broken())
    r = await get(conn, "/metrics")
    assert r.status == 500
    assert r.json() == {"error": "internal error"}
    assert b"boom" not in r.body and b"Traceback" not in r.body
    assert (await get(conn, "/healthz")).status == 200  # still serving


# ---- connections ------------------------------------------------------------------------


async def test_keep_alive_and_pipelining(conn: Any) -> None:
    c = await conn()
    c.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    r = await c.response()
    assert r.status == 200 and r.headers["connection"] == "keep-alive"
    c.send(b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\nGET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await c.response()).status == 200
    assert (await c.response()).status == 404
    c.send(b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n")
    r = await c.response()
    assert r.status == 200 and r.headers["connection"] == "close"
    assert await c.closed()


async def test_http10_closes_unless_asked(conn: Any) -> None:
    c = await conn()
    c.send(b"GET /healthz HTTP/1.0\r\n\r\n")
    r = await c.response()
    assert r.status == 200 and r.headers["connection"] == "close"
    assert await c.closed()
    c = await conn()
    c.send(b"GET /healthz HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
    assert (await c.response()).headers["connection"] == "keep-alive"


async def test_a_small_body_is_read_and_ignored(conn: Any) -> None:
    c = await conn()
    c.send(b"GET /healthz HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET /healthz HTTP/1.1\r\n\r\n")
    assert (await c.response()).status == 200
    assert (await c.response()).status == 200


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"garbage\r\n\r\n", 400),
        (b"GET /metrics\r\n\r\n", 400),
        (b"GET  /metrics HTTP/1.1\r\n\r\n", 400),
        (b"GET /metrics HTTP/1.1 extra\r\n\r\n", 400),
        (b"G(T /metrics HTTP/1.1\r\n\r\n", 400),
        (b"GET metrics HTTP/1.1\r\n\r\n", 400),
        (b"GET /metrics HTTP/2.0\r\n\r\n", 505),
        (b"GET /metrics HTTP/x\r\n\r\n", 400),
        (b"GET /m\xe9trics HTTP/1.1\r\n\r\n", 400),
        (b"GET /metrics HTTP/1.1\r\nno colon here\r\n\r\n", 400),
        (b"GET /metrics HTTP/1.1\r\n: empty name\r\n\r\n", 400),
        (b"GET /metrics HTTP/1.1\r\nbad name: x\r\n\r\n", 400),
        (b"GET /metrics HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
        (b"GET /metrics HTTP/1.1\r\nContent-Length: ten\r\n\r\n", 400),
        (b"GET /metrics HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n", 413),
        (b"GET /metrics HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 501),
        (b"GET /" + b"a" * 10000 + b" HTTP/1.1\r\n\r\n", 400),
        (b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 10000 + b"\r\n\r\n", 431),
        (b"GET /metrics HTTP/1.1\r\n" + b"X: y\r\n" * 200 + b"\r\n", 431),
    ],
)
async def test_bad_requests(conn: Any, request_bytes: bytes, status: int) -> None:
    c = await conn()
    c.send(request_bytes)
    r = await c.response()
    assert r.status == status, r.body
    assert r.headers["content-type"] == "application/json"
    assert "error" in r.json()
    assert r.headers["connection"] == "close"
    assert await c.closed()


async def test_absolute_form_target(conn: Any) -> None:
    r = await get(conn, "http://127.0.0.1/healthz")
    assert r.status == 200


async def test_silent_and_truncated_clients(
    ops: Any, conn: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ops_http, "READ_TIMEOUT", 0.2)
    c = await conn()
    c.send(b"GET /healthz HTTP/1.1\r\n")  # and never the blank line
    r = await c.response()
    assert r.status == 408
    c = await conn()
    c.send(b"GET /healthz HT")
    c.writer.write_eof()
    r = await c.response()
    assert r.status == 400
    c = await conn()
    c.writer.write_eof()  # connects and leaves: no response, no error
    assert await c.closed()
    assert (await get(conn, "/healthz")).status == 200


async def test_idle_connection_closed(ops: Any, conn: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ops_http, "IDLE_TIMEOUT", 0.2)
    c = await conn()
    assert await c.closed(2.0)


async def test_stop_closes_kept_alive_connections(conn: Any, ops: Any) -> None:
    c = await conn()
    c.send(b"GET /healthz HTTP/1.1\r\n\r\n")
    assert (await c.response()).status == 200
    # stop must not wait out the kept-alive connection's idle timeout: a bound
    # far above any stop on a slow machine, far below that timeout
    await asyncio.wait_for(ops[0].stop(), ops_http.IDLE_TIMEOUT / 2)
    assert await c.closed()
    with pytest.raises(OSError):
        await Conn.open(ops[0].port)


# ---- in the embedded server -------------------------------------------------------------


async def test_embedded_serves_ops(server: EmbeddedServer, monkeypatch: pytest.MonkeyPatch) -> None:
    assert server.ops_port > 0

    async def opener() -> Conn:
        return await Conn.open(server.ops_port)

    r = await get(opener, "/metrics")
    assert r.status == 200 and b"xmppd_edge_up" in r.body and b"process_cpu_seconds_total" in r.body
    r = await get(opener, "/readyz")
    assert r.status == 200, r.body

    async def broken(*_a: Any) -> Any:
        raise OSError("disk gone")

    assert server.db is not None
    monkeypatch.setattr(server.db, "fetchval", broken)
    r = await get(opener, "/readyz")
    assert r.status == 503 and r.json()["failing"] == ["database"]
    monkeypatch.undo()
    assert (await get(opener, "/readyz")).status == 200

    assert server.edge is not None
    for s in server.edge.servers:
        s.close()
    r = await get(opener, "/readyz")
    assert r.status == 503 and r.json()["failing"] == ["listeners"]
    assert (await get(opener, "/healthz")).status == 200


async def test_embedded_ops_disabled(server_factory: Any) -> None:
    srv = await server_factory(ops_port=-1)
    assert srv.ops is None and srv.ops_port == -1


async def test_embedded_ops_port_taken(
    server_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with caplog.at_level(logging.ERROR, "xmppd"):
            srv = await server_factory(ops_port=port)
    assert srv.ops is None and srv.ops_port == -1
    assert srv.c2s_port > 0  # XMPP is served all the same
    assert f"cannot serve /metrics on 127.0.0.1:{port}" in caplog.text
