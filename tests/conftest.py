"""Shared fixtures: a real embedded server on free ports, real clients.

The server runs in the test's event loop (same process, real sockets); the
clients are slixmpp (the main client), raw sockets for stream-level cases,
and external programs in the interop tests.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import secrets
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import slixmpp
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from services.app.embedded import EmbeddedServer
from services.platform.config import Settings
from services.xmpp.sasl import derive_credentials

from .cluster_target import ClusterServer, ClusterThread

PASSWORD = "s3cret-Pa55"


def make_settings(tmp: Path, **over: Any) -> Settings:
    base: dict[str, Any] = dict(
        hosts=["localhost"],
        data_dir=str(tmp / "data"),
        c2s_host="127.0.0.1",
        c2s_port=0,
        c2s_direct_tls_port=0,
        registration=True,
        ops_host="127.0.0.1",
        ops_port=0,
        http_host="127.0.0.1",
        http_port=0,
        # the suite opens many connections from 127.0.0.1 at once; the limits'
        # own tests (tests/edge/) set low values. The shaper stays on, high.
        max_unauthenticated_per_ip=100000,
        connection_rate_per_ip=100000.0,
        connection_burst_per_ip=100000,
        shaper_rate=100_000_000,
        # the suite fails logins and registers accounts on purpose, all from
        # 127.0.0.1: the tests of these limits (tests/edge/) set their own
        auth_ip_max_failures=0,
        auth_account_delay=0.0,
        registration_limit_per_hour=0,
    )
    base.update(over)
    return Settings.load(env={}, **base)


REDIS_URL = os.environ.get("XMPPD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest_asyncio.fixture
async def redis() -> AsyncIterator[tuple[Any, str]]:
    """The real Redis and a key prefix of this test's own, emptied afterwards."""
    import redis.asyncio as aioredis

    r = aioredis.Redis.from_url(REDIS_URL)
    try:
        await r.ping()
    except (OSError, aioredis.ConnectionError) as exc:
        await r.aclose()
        message = f"no Redis at {REDIS_URL}: {exc}"
        if os.environ.get("XMPPD_REQUIRE_POSTGRES") == "1":  # CI: backends must be there
            pytest.fail(message)
        pytest.skip(message)
    prefix = f"xmppd-test-{secrets.token_hex(4)}:"
    try:
        yield r, prefix
    finally:
        keys = [k async for k in r.scan_iter(match=prefix + "*")]
        if keys:
            await r.delete(*keys)
        await r.aclose()


@pytest.fixture
def mode(request: pytest.FixtureRequest) -> str:
    """embedded, or cluster where tests/e2e/conftest.py parametrizes it."""
    return str(getattr(request, "param", "embedded"))


@pytest.fixture(scope="session")
def shared_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterThread]:
    """One cluster (processes) for every cluster-mode test without overrides."""
    ct = ClusterThread(tmp_path_factory.mktemp("shared-cluster"))
    ct.start()
    yield ct
    ct.stop()


@pytest.fixture
async def server_factory(tmp_path: Path, mode: str) -> AsyncIterator[Callable[..., Awaitable[Any]]]:
    """Start a server with settings overrides: embedded, or a dedicated cluster."""
    started: list[Any] = []
    threads: list[ClusterThread] = []

    async def start(**over: Any) -> Any:
        if mode == "cluster":
            ct = ClusterThread(
                tmp_path / f"cluster{len(threads)}", {"max_stanza_size": 262144, **over}
            )
            threads.append(ct)
            await asyncio.to_thread(ct.start)
            csrv = ClusterServer(ct)
            await csrv.open()
            started.append(csrv)
            return csrv
        srv = EmbeddedServer(make_settings(tmp_path, **over))
        await srv.start()
        started.append(srv)
        return srv

    yield start
    for srv in started:
        await srv.stop()
    for ct in threads:
        await asyncio.to_thread(ct.stop)


@pytest.fixture
async def server(
    request: pytest.FixtureRequest, mode: str, server_factory: Callable[..., Awaitable[Any]]
) -> AsyncIterator[Any]:
    if mode == "cluster":
        csrv = ClusterServer(request.getfixturevalue("shared_cluster"))
        await csrv.open()
        await csrv.reset()
        srv: Any = csrv
    else:
        srv = await server_factory()
    for name in ("alice", "bob", "carol", "dave"):
        await add_user(srv, name)
    yield srv
    if mode == "cluster":
        await srv.close()


async def session_count(srv: Any) -> int:
    """Bound sessions on the server, whichever mode."""
    if isinstance(srv, ClusterServer):
        return await srv.session_count()
    return len(srv.edge.local)


async def shutdown(srv: Any) -> None:
    """Stop the edge clients are connected to (system-shutdown to each)."""
    if isinstance(srv, ClusterServer):
        await srv.shutdown_edge()
    else:
        await srv.edge.stop()


async def add_user(srv: Any, name: str, password: str = PASSWORD) -> None:
    assert srv.store is not None
    creds = [derive_credentials(password, "SHA-1"), derive_credentials(password, "SHA-256")]
    await srv.store.create_account("localhost", name, creds)


def client_ssl_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class Client(slixmpp.ClientXMPP):  # type: ignore[misc]
    """slixmpp with queues of what arrives, for tests to await on."""

    def __init__(self, jid: str, password: str, **kw: Any) -> None:
        super().__init__(jid, password, **kw)
        self.ssl_context = client_ssl_context()
        self.messages: asyncio.Queue[Any] = asyncio.Queue()
        self.presences: asyncio.Queue[Any] = asyncio.Queue()
        # every <message/>, not only those slixmpp raises "message" events for
        self.register_handler(
            Callback("all messages", MatchXPath("{jabber:client}message"), self.messages.put_nowait)
        )
        self.add_event_handler("presence", self.presences.put_nowait)

    async def next_message(self, timeout: float = 5.0) -> Any:
        return await asyncio.wait_for(self.messages.get(), timeout)

    async def next_presence(
        self, timeout: float = 5.0, pred: Callable[[Any], bool] | None = None
    ) -> Any:
        while True:
            p = await asyncio.wait_for(self.presences.get(), timeout)
            if pred is None or pred(p):
                return p


async def wait_until(
    cond: Callable[[], Any], timeout: float = 10.0, what: str = "condition"
) -> None:
    """Poll ``cond`` (a function, or one returning an awaitable) until it is true.

    For synchronisation instead of a fixed sleep: the deadline is generous, so
    only a hang fails it, and a fast machine does not wait for nothing."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        ok = cond()
        if asyncio.iscoroutine(ok) or isinstance(ok, asyncio.Future):
            ok = await ok
        if ok:
            return
        if loop.time() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout} s")
        await asyncio.sleep(0.01)


async def send_initial_presence(c: Client, timeout: float = 10.0, **kw: Any) -> None:
    """Send available presence and wait until the server has made the session
    available: it sends the presence back to its sender (RFC 6121 4.2.2) after
    marking the session available and before probes and offline messages. The
    echo also stays in ``c.presences`` for the test, as before."""
    echoed: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    def on_presence(p: Any) -> None:
        if p["from"] == c.boundjid and p["type"] != "unavailable" and not echoed.done():
            echoed.set_result(True)

    c.add_event_handler("presence", on_presence)
    try:
        c.send_presence(**kw)
        await asyncio.wait_for(echoed, timeout)
    finally:
        c.del_event_handler("presence", on_presence)


@pytest.fixture
async def connect(server: EmbeddedServer) -> AsyncIterator[Callable[..., Awaitable[Client]]]:
    clients: list[Client] = []

    async def _connect(
        jid: str,
        password: str = PASSWORD,
        *,
        direct_tls: bool = False,
        presence: bool = True,
        plugins: tuple[str, ...] = ("xep_0030", "xep_0199"),
        srv: EmbeddedServer | None = None,
        **kw: Any,
    ) -> Client:
        s = srv or server
        c = Client(jid, password, **kw)
        for p in plugins:
            c.register_plugin(p)
        c.plugin["feature_mechanisms"].unencrypted_plain = False
        started: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        c.add_event_handler("session_start", lambda _e: started.done() or started.set_result(True))
        c.add_event_handler("failed_auth", lambda _e: started.done() or started.set_result(False))
        if direct_tls:
            c.enable_starttls = False
            c.enable_plaintext = False
            port = s.direct_tls_port
        else:
            c.enable_direct_tls = False
            port = s.c2s_port
        c.connect("127.0.0.1", port)
        clients.append(c)
        ok = await asyncio.wait_for(started, 10)
        if not ok:
            raise PermissionError("authentication failed")
        if presence:
            await send_initial_presence(c)
        return c

    yield _connect
    closing = [c.disconnect(wait=False) for c in clients]
    await asyncio.wait_for(asyncio.gather(*closing, return_exceptions=True), 10)


# ---- raw sockets for stream-level cases ------------------------------------


class Raw:
    """A raw XML stream over a real socket, for the cases no client library sends."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.buf = b""

    @classmethod
    async def open(cls, port: int, tls: bool = False) -> Raw:
        r, w = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client_ssl_context() if tls else None
        )
        return cls(r, w)

    def send(self, data: bytes | str) -> None:
        self.writer.write(data.encode() if isinstance(data, str) else data)

    async def expect(self, pattern: bytes | str, timeout: float = 5.0) -> bytes:
        """Read until ``pattern`` (a regex) matches the buffer; return what was read."""
        pat = re.compile(pattern.encode() if isinstance(pattern, str) else pattern, re.S)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            m = pat.search(self.buf)
            if m:
                out, self.buf = self.buf[: m.end()], self.buf[m.end() :]
                return out
            left = deadline - loop.time()
            if left <= 0:
                raise TimeoutError(f"no {pattern!r} in {self.buf[-500:]!r}")
            chunk = await asyncio.wait_for(self.reader.read(65536), left)
            if not chunk:
                raise ConnectionError(f"closed before {pattern!r}; got {self.buf[-500:]!r}")
            self.buf += chunk

    async def closed(self, timeout: float = 5.0) -> bytes:
        """Wait for the server to close the connection; return the rest."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            left = deadline - loop.time()
            if left <= 0:
                raise TimeoutError(f"connection still open; got {self.buf[-500:]!r}")
            chunk = await asyncio.wait_for(self.reader.read(65536), left)
            if not chunk:
                rest, self.buf = self.buf, b""
                return rest
            self.buf += chunk

    def header(self, to: str = "localhost", extra: str = "") -> None:
        self.send(
            "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
            f"xmlns:stream='http://etherx.jabber.org/streams' to='{to}' version='1.0'{extra}>"
        )

    async def starttls(self) -> None:
        self.header()
        await self.expect(b"</stream:features>")
        self.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        await self.expect(b"<proceed[^>]*/>")
        await self.writer.start_tls(client_ssl_context())

    async def authenticate(
        self, user: str = "alice", password: str = PASSWORD
    ) -> tuple[bytes, bytes]:
        """STARTTLS and SASL PLAIN, no bind: the stream features offered
        before and after authentication."""
        await self.starttls()
        self.header()
        before = await self.expect(b"</stream:features>")
        token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        self.send(
            f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>"
        )
        await self.expect(rb"<success[^>]*(/>|>[^<]*</success>)")
        self.header()
        after = await self.expect(b"</stream:features>")
        return before, after

    async def login(
        self, user: str = "alice", password: str = PASSWORD, resource: str = "raw"
    ) -> str:
        """STARTTLS, SASL PLAIN, bind; returns the bound full JID."""
        await self.authenticate(user, password)
        out = await self.bind(resource)
        m = re.search(rb"<jid>([^<]+)</jid>", out)
        assert m, out
        return m.group(1).decode()

    async def bind(self, resource: str, iq_id: str = "bind1") -> bytes:
        """Bind ``resource`` on an authenticated stream; the answer as read."""
        self.send(
            f"<iq type='set' id='{iq_id}'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
            f"<resource>{resource}</resource></bind></iq>"
        )
        return await self.expect(b"</iq>")

    def close(self) -> None:
        self.writer.close()


@pytest.fixture
async def raw(server: EmbeddedServer) -> AsyncIterator[Callable[..., Awaitable[Raw]]]:
    opened: list[Raw] = []

    async def _open(tls: bool = False) -> Raw:
        r = await Raw.open(server.direct_tls_port if tls else server.c2s_port, tls)
        opened.append(r)
        return r

    yield _open
    for r in opened:
        r.close()
