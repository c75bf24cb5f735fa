"""Password guessing and mass registration against a real embedded server over
real sockets: an address blocked after failed logins (policy-violation), a
growing per-account delay, a per-address registration limit; and what the
metrics show of them."""

from __future__ import annotations

import asyncio
import base64
import re
import time
from collections.abc import Awaitable, Callable

from services.app.embedded import EmbeddedServer
from services.security.throttle import AuthThrottle

from ..conftest import PASSWORD, Raw, add_user

ServerFactory = Callable[..., Awaitable[EmbeddedServer]]
#: what a SASL attempt ends with: success, a SASL failure, or a stream error
_ANSWER = rb"<success[^>]*(/>|>[^<]*</success>)|</failure>|</stream:error>"


async def attempt(srv: EmbeddedServer, user: str, password: str) -> tuple[bytes, float]:
    """Open a stream, STARTTLS, try SASL PLAIN once: (what came back, seconds
    from sending the credentials to the answer). The socket is closed."""
    return await attempt_on(srv.c2s_port, user, password)


async def attempt_on(port: int, user: str, password: str) -> tuple[bytes, float]:
    """:func:`attempt` on a STARTTLS port."""
    r = await Raw.open(port)
    try:
        await r.starttls()
        r.header()
        await r.expect(b"</stream:features>")
        token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        t0 = time.monotonic()
        r.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>")
        out = await r.expect(_ANSWER, timeout=20)
        elapsed = time.monotonic() - t0
        if b"</stream:error>" not in out and b"<success" not in out:
            # a failure may be followed by the stream error that blocks the address
            try:
                out += await r.expect(rb"</stream:error>", timeout=0.5)
            except (TimeoutError, ConnectionError):
                pass
        return out, elapsed
    finally:
        r.close()


def sample(srv: EmbeddedServer, name: str, **labels: str) -> float:
    assert srv.metrics is not None
    return srv.metrics.registry.get_sample_value(name, labels) or 0.0


def throttle_of(srv: EmbeddedServer) -> AuthThrottle:
    assert srv.edge is not None
    return srv.edge.throttle


def throttled(srv: EmbeddedServer, action: str) -> float:
    return sample(srv, "xmppd_auth_throttled_total", action=action)


async def test_failed_logins_from_one_address_block_it(server_factory: ServerFactory) -> None:
    srv = await server_factory(auth_ip_max_failures=3, auth_ip_block_time=600)
    await add_user(srv, "alice")
    await add_user(srv, "bob")
    for user in ("alice", "bob"):
        out, _ = await attempt(srv, user, "wrong")
        assert b"<not-authorized/>" in out and b"stream:error" not in out
    # the third failure from 127.0.0.1 blocks it: the failure, then the stream error
    out, _ = await attempt(srv, "nobody", "wrong")
    assert b"<not-authorized/>" in out
    assert b"<policy-violation" in out, out
    assert b"Too many (3) failed authentications from this IP address" in out
    assert throttled(srv, "blocked") == 1
    # now even the right password is refused, before any credentials are checked
    out, _ = await attempt(srv, "alice", PASSWORD)
    assert b"<success" not in out and b"<failure" not in out
    assert b"<policy-violation" in out and b"Too many (3) failed" in out
    assert throttled(srv, "refused") == 1
    assert sample(srv, "xmppd_auth_total", mechanism="PLAIN", outcome="success") == 0
    [block] = [b for b in await throttle_of(srv).list_blocks() if b.kind == "ip"]
    assert block.key == "ip:127.0.0.1" and block.failures == 3
    assert 590 < block.expires_in <= 600


async def test_a_burst_on_one_connection_is_blocked(server_factory: ServerFactory) -> None:
    """Retries on one stream count toward the address's block as well."""
    srv = await server_factory(auth_ip_max_failures=2, max_auth_failures=10)
    await add_user(srv, "alice")
    r = await Raw.open(srv.c2s_port)
    try:
        await r.starttls()
        r.header()
        await r.expect(b"</stream:features>")
        token = base64.b64encode(b"\0alice\0wrong").decode()
        auth = f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>"
        r.send(auth)
        await r.expect(b"</failure>")
        r.send(auth)
        await r.expect(b"</failure>")
        rest = await r.closed()
        assert b"<policy-violation" in rest and b"Too many (2) failed" in rest
    finally:
        r.close()


async def test_account_delay_grows_and_a_success_resets_it(server_factory: ServerFactory) -> None:
    srv = await server_factory(
        auth_ip_max_failures=0, auth_account_delay=0.25, auth_account_delay_max=10
    )
    await add_user(srv, "alice")
    times = []
    for _ in range(4):
        out, elapsed = await attempt(srv, "alice", "wrong")
        assert b"<not-authorized/>" in out and b"stream:error" not in out
        times.append(elapsed)
    # after 1, 2, 3 failures the next attempt waits 0.25, 0.5, 1.0 s (lower bounds only)
    assert times[1] >= 0.2 and times[2] >= 0.45 and times[3] >= 0.95, times
    assert throttled(srv, "delayed") == 3
    # the right password waits too (2.0 s now), so timing tells nothing; then it succeeds
    out, elapsed = await attempt(srv, "alice", PASSWORD)
    assert b"<success" in out and elapsed >= 1.9
    assert [b.key for b in await throttle_of(srv).list_blocks()] == []
    # the delay belongs to the account, not to the address
    await add_user(srv, "bob")
    for _ in range(2):
        await attempt(srv, "bob", "wrong")
    [acct] = await throttle_of(srv).list_blocks()
    assert (acct.key, acct.failures, acct.delay) == ("account:bob@localhost", 2, 0.5)


async def test_a_block_ends_after_its_time(server_factory: ServerFactory) -> None:
    srv = await server_factory(auth_ip_max_failures=1, auth_ip_block_time=0.5)
    await add_user(srv, "alice")
    out, _ = await attempt(srv, "alice", "wrong")
    assert b"<policy-violation" in out
    out, _ = await attempt(srv, "alice", PASSWORD)
    assert b"<policy-violation" in out
    await asyncio.sleep(0.6)
    out, _ = await attempt(srv, "alice", PASSWORD)
    assert b"<success" in out


async def _register(srv: EmbeddedServer, username: str) -> bytes:
    r = await Raw.open(srv.c2s_port)
    try:
        await r.starttls()
        r.header()
        await r.expect(b"</stream:features>")
        r.send(
            "<iq type='set' id='r1'><query xmlns='jabber:iq:register'>"
            f"<username>{username}</username><password>pw-{username}</password></query></iq>"
        )
        return await r.expect(rb"</iq>|<iq[^>]*/>")
    finally:
        r.close()


def _result(out: bytes) -> bool:
    return re.search(rb"type=['\"]result['\"]", out) is not None


async def test_registrations_per_address_are_limited(server_factory: ServerFactory) -> None:
    srv = await server_factory(registration=True, registration_limit_per_hour=2)
    assert _result(await _register(srv, "first"))
    # a refused registration (a taken name) does not count
    out = await _register(srv, "first")
    assert b"<conflict" in out
    assert _result(await _register(srv, "second"))
    out = await _register(srv, "third")
    assert b"<resource-constraint" in out and b"type='wait'" in out.replace(b'"', b"'")
    assert b"too many registrations" in out
    assert srv.store is not None
    assert await srv.store.get_account("localhost", "third") is None
    assert await srv.store.get_account("localhost", "second") is not None
