"""EdgeServer's limits over real sockets: unauthenticated connections and new
connections per second from one IP address, and the TLS handshake timeout
(docs/operations.md, "Limits")."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from ..conftest import Raw, add_user

POLICY_VIOLATION = (
    rb"<stream:error><policy-violation xmlns=['\"]urn:ietf:params:xml:ns:xmpp-streams['\"]/>"
    rb"<text[^>]*>[^<]*</text></stream:error></stream:stream>"
)


def limited(srv: Any, limit: str) -> float:
    value = srv.edge.metrics.registry.get_sample_value("xmppd_limited_total", {"limit": limit})
    return float(value or 0)


async def _accepted(srv: Any) -> Raw:
    r = await Raw.open(srv.c2s_port)
    r.header()
    await r.expect(b"</stream:features>")
    return r


async def _refused(srv: Any) -> bytes:
    """RFC 6120 4.9.1.1: a stream header, the error, the close, without the
    client having sent anything."""
    r = await Raw.open(srv.c2s_port)
    out = await r.expect(POLICY_VIOLATION)
    assert out.startswith(b"<?xml version='1.0'?><stream:stream "), out
    await r.closed()
    r.close()
    return out


async def test_unauthenticated_connections_per_ip(server_factory: Any) -> None:
    srv = await server_factory(max_unauthenticated_per_ip=3)
    await add_user(srv, "alice")
    open_ = [await _accepted(srv) for _ in range(3)]
    out = await _refused(srv)
    assert b"unauthenticated connections" in out
    # a connection that binds gives its slot back
    open_[0].close()
    await asyncio.sleep(0.1)
    bound = await Raw.open(srv.c2s_port)
    await bound.login("alice")
    open_[0] = await _accepted(srv)
    await _refused(srv)
    # so does one that goes away
    open_[1].close()
    await asyncio.sleep(0.1)
    open_[1] = await _accepted(srv)
    assert len(srv.edge.local) == 1
    assert limited(srv, "unauthenticated_per_ip") == 2
    assert limited(srv, "connection_rate") == 0
    for r in (*open_, bound):
        r.close()


async def test_new_connections_per_second_per_ip(server_factory: Any) -> None:
    srv = await server_factory(
        max_unauthenticated_per_ip=0, connection_rate_per_ip=2.0, connection_burst_per_ip=3
    )
    t0 = time.monotonic()
    opened = [await _accepted(srv) for _ in range(3)]
    out = await _refused(srv)
    assert b"new connections" in out
    await asyncio.sleep(max(0.0, t0 + 0.6 - time.monotonic()))  # one token at 2/s
    opened.append(await _accepted(srv))
    await _refused(srv)
    assert limited(srv, "connection_rate") == 2
    for r in opened:
        r.close()


async def test_silent_client_on_direct_tls_port_is_dropped(server_factory: Any) -> None:
    """The TLS handshake counts toward negotiation_timeout (the asyncio default
    would keep a silent socket 60 s)."""
    srv = await server_factory(negotiation_timeout=1.0)
    reader, writer = await asyncio.open_connection("127.0.0.1", srv.direct_tls_port)
    t0 = time.monotonic()
    assert await asyncio.wait_for(reader.read(), 5.0) == b""
    assert 0.8 < time.monotonic() - t0 < 5.0
    writer.close()
