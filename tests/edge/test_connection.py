"""C2SConnection's limits over real sockets: the output cap with flow control
(a client that does not read cannot make the server queue replies) and the
per-session input shaper (docs/operations.md, "Limits")."""

from __future__ import annotations

import asyncio
import base64
import re
import socket
import time
from typing import Any

import pytest

from services.edge.connection import C2SConnection

from ..conftest import PASSWORD, Raw, add_user

HEADER = (
    b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
    b"xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>"
)
#: answered before authentication with the registration form, several times its size
REGISTER_GET = b"<iq type='get' id='r'><query xmlns='jabber:iq:register'/></iq>"


async def _only_connection(srv: Any) -> C2SConnection:
    for _ in range(200):
        if len(srv.edge.sessions) == 1:
            (sess,) = srv.edge.sessions
            conn = sess.transport
            assert isinstance(conn, C2SConnection)
            return conn
        await asyncio.sleep(0.01)
    raise AssertionError(f"{len(srv.edge.sessions)} connections")


async def test_client_that_never_reads_cannot_grow_the_output_buffer(server_factory: Any) -> None:
    """Defect 4: pre-authentication requests sent without reading the replies."""
    cap = 64 * 1024
    srv = await server_factory(
        require_tls=False, registration=True, max_output_buffer_unauthenticated=cap
    )
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", srv.c2s_port))
    conn = await _only_connection(srv)
    assert conn.transport is not None
    # small kernel buffers on both sides, so what the client leaves unread
    # piles up in the server process quickly (as it would over a slow link)
    conn.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)

    peak = 0

    async def sample() -> None:
        nonlocal peak
        while True:
            t = conn.transport
            if t is not None:
                peak = max(peak, t.get_write_buffer_size())
            await asyncio.sleep(0.002)

    sampler = loop.create_task(sample())
    sent = 0
    try:
        await loop.sock_sendall(sock, HEADER)
        chunk = REGISTER_GET * 1000
        while sent < 4 * 1024 * 1024:
            try:
                # blocks once the server stops reading us: that is the point
                await asyncio.wait_for(loop.sock_sendall(sock, chunk), 1.0)
            except TimeoutError:
                break
            sent += len(chunk)
        await asyncio.sleep(0.3)  # let the server answer what it has read
    finally:
        sampler.cancel()
    t = conn.transport
    queued = t.get_write_buffer_size() if t is not None else 0
    # bounded whatever the client sent: paused (reading stopped) or closed
    assert queued <= cap and peak <= cap, (queued, peak, sent)
    assert conn._reading_paused or conn._lost or (t is not None and t.is_closing()), sent
    # the replies to what was read stay a fraction of what the client pushed
    assert sent > 4 * cap, sent
    sock.close()


async def test_output_overflow_closes_with_resource_constraint(server_factory: Any) -> None:
    """Past the cap (replies to requests read before the pause, deliveries)
    the stream is closed with resource-constraint, and the socket is freed."""
    srv = await server_factory(
        require_tls=False, registration=True, max_output_buffer_unauthenticated=4096
    )
    r = await Raw.open(srv.c2s_port)
    conn = await _only_connection(srv)
    assert conn.transport is not None
    conn.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    # without flow control (a client that reads just enough to never trip
    # the high-water mark, or deliveries from others) the cap must still hold
    conn.pause_writing = lambda: None  # type: ignore[method-assign]
    r.send(HEADER + REGISTER_GET * 2000)
    for _ in range(300):
        if conn._overflowed:
            break
        await asyncio.sleep(0.01)
    assert conn._overflowed
    assert conn.transport.get_write_buffer_size() < 4096 + 2048
    rest = await r.closed(timeout=10)
    assert re.search(rb"<resource-constraint xmlns=", r.buf + rest) or conn._lost
    registry = srv.edge.metrics.registry
    assert registry.get_sample_value("xmppd_limited_total", {"limit": "output_buffer"}) == 1
    r.close()


async def _send_stream(srv: Any, user: str, n: int, size: int) -> float:
    """``user`` sends ``n`` messages of ``size`` bytes to bob as fast as it can;
    returns the seconds until bob has them all, checked complete and in order."""
    bob = await Raw.open(srv.c2s_port)
    await bob.login("bob")
    bob.send("<presence/>")
    sender = await Raw.open(srv.c2s_port)
    await sender.login(user)
    pad = "x" * size
    t0 = time.monotonic()
    for i in range(n):
        sender.send(f"<message to='bob@localhost/raw' type='chat'><body>{i} {pad}</body></message>")
    got: list[int] = []
    while len(got) < n:
        out = await bob.expect(b"</message>", timeout=30)
        m = re.search(rb"<body>(\d+) ", out)
        if m:
            got.append(int(m.group(1)))
    elapsed = time.monotonic() - t0
    assert got == list(range(n))
    sender.close()
    bob.close()
    return elapsed


async def test_shaper_slows_input_without_dropping(server_factory: Any) -> None:
    rate = 100_000
    srv = await server_factory(shaper_rate=rate, shaper_burst=0.5, shaper_rate_admin=10**9)
    for name in ("alice", "bob"):
        await add_user(srv, name)
    n, size = 300, 1000
    elapsed = await _send_stream(srv, "alice", n, size)
    # 300 KB at 100 KB/s, less the 50 KB burst (and what the login spent of it)
    assert elapsed >= (n * size - rate * 0.5) / rate * 0.9, elapsed
    registry = srv.edge.metrics.registry
    assert registry.get_sample_value("xmppd_limited_total", {"limit": "shaper"}) >= 1


async def test_admins_get_the_admin_rate(server_factory: Any) -> None:
    rate = 100_000
    srv = await server_factory(
        shaper_rate=rate, shaper_burst=0.5, shaper_rate_admin=10**9, admins=["Alice@LocalHost"]
    )
    for name in ("alice", "bob"):
        await add_user(srv, name)
    elapsed = await _send_stream(srv, "alice", 300, 1000)
    assert elapsed < 1.5, elapsed


async def test_unauthenticated_phase_is_shaped(server_factory: Any) -> None:
    """Bytes before authentication count too: 3000 registration requests
    (190 KB) at 100 KB/s with a 50 KB burst take over 1.4 s to be answered."""
    rate = 100_000
    srv = await server_factory(
        require_tls=False, registration=True, shaper_rate=rate, shaper_burst=0.5
    )
    r = await Raw.open(srv.c2s_port)
    r.header()
    await r.expect(b"</stream:features>")
    t0 = time.monotonic()
    n = 3000
    r.send(REGISTER_GET * (n - 1) + REGISTER_GET.replace(b"id='r'", b"id='last'"))
    await r.expect(b"id=.last.", timeout=20)
    elapsed = time.monotonic() - t0
    assert elapsed >= (n * len(REGISTER_GET) - rate * 0.5) / rate * 0.9, elapsed
    r.close()


@pytest.mark.parametrize("admin_rate", [10**9, 0])  # 0: no shaper for admins
async def test_admin_rate_applies_to_input_held_at_bind(
    server_factory: Any, admin_rate: int
) -> None:
    """Input held by the normal rate when an admin binds is released at the
    admin rate, not at the pace the normal rate had scheduled."""
    srv = await server_factory(
        shaper_rate=2000,
        shaper_burst=0.25,
        shaper_rate_admin=admin_rate,
        admins=["alice@localhost"],
    )
    for name in ("alice", "bob"):
        await add_user(srv, name)
    bob = await Raw.open(srv.c2s_port)
    await bob.login("bob")
    bob.send("<presence/>")
    alice = await Raw.open(srv.c2s_port)
    await alice.starttls()
    alice.header()
    await alice.expect(b"</stream:features>")
    token = base64.b64encode(f"\0alice\0{PASSWORD}".encode()).decode()
    alice.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>")
    await alice.expect(rb"<success[^>]*(/>|>[^<]*</success>)")
    alice.header()
    await alice.expect(b"</stream:features>")
    n = 50  # 10 KB: 5 s at the normal rate
    t0 = time.monotonic()
    alice.send(
        "<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>"
        + "".join(
            f"<message to='bob@localhost/raw' type='chat'><body>{i} {'x' * 150}</body></message>"
            for i in range(n)
        )
    )
    got = []
    while len(got) < n:
        out = await bob.expect(b"</message>", timeout=10)
        m = re.search(rb"<body>(\d+) ", out)
        if m:
            got.append(int(m.group(1)))
    assert got == list(range(n))
    assert time.monotonic() - t0 < 2.0
    alice.close()
    bob.close()
