"""Blocked addresses in the admin API and the metrics: a block made by failed
logins over real sockets is listed, counted on /metrics, and lifted with
DELETE, after which the address logs in again."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx
import pytest

from services.admin import commands as cmd
from services.admin.commands import AdminContext, CommandError
from services.app.embedded import EmbeddedServer

from ..conftest import PASSWORD, add_user
from ..edge.test_auth_throttle import attempt
from .conftest import ADMIN, READ, TOKENS, WRITE, api_url, bearer


async def test_blocks_are_listed_counted_and_lifted(
    server_factory: Callable[..., Awaitable[EmbeddedServer]],
) -> None:
    srv = await server_factory(
        admin_port=0, admin_tokens=TOKENS, auth_ip_max_failures=2, auth_account_delay=0.1
    )
    await add_user(srv, "alice")
    async with httpx.AsyncClient(base_url=api_url(srv), timeout=10) as http:
        r = await http.get("/auth-blocks", headers=bearer(READ))
        assert r.status_code == 200
        assert r.json() == {"blocks": [], "total": 0, "limit": 100, "offset": 0}

        for _ in range(2):
            await attempt(srv, "alice", "wrong")
        out, _ = await attempt(srv, "alice", PASSWORD)
        assert b"<policy-violation" in out

        r = await http.get("/auth-blocks", headers=bearer(READ))
        assert r.status_code == 200
        body = r.json()
        assert body["total"] == 2
        acct, ip = body["blocks"]
        assert ip["key"] == "ip:127.0.0.1" and ip["kind"] == "ip"
        assert ip["subject"] == "127.0.0.1" and ip["failures"] == 2 and ip["delay"] == 0
        assert 0 < ip["expires_in"] <= 600
        assert acct["key"] == "account:alice@localhost" and acct["kind"] == "account"
        assert acct["failures"] == 2 and acct["delay"] == 0.2
        r = await http.get("/auth-blocks", params={"limit": 1, "offset": 1}, headers=bearer(READ))
        assert [b["key"] for b in r.json()["blocks"]] == ["ip:127.0.0.1"]

        # on /metrics
        metrics = (await http.get(f"http://127.0.0.1:{srv.ops_port}/metrics")).text
        assert 'xmppd_auth_throttled_total{action="blocked"} 1.0' in metrics
        assert 'xmppd_auth_throttled_total{action="refused"} 1.0' in metrics

        # lifting it needs the write scope
        r = await http.delete("/auth-blocks/ip:127.0.0.1", headers=bearer(READ))
        assert r.status_code == 403
        r = await http.delete("/auth-blocks/ip:127.0.0.1", headers=bearer(WRITE))
        assert r.status_code == 200
        assert r.json() == {"key": "ip:127.0.0.1", "unblocked": True}
        r = await http.delete("/auth-blocks/ip:127.0.0.1", headers=bearer(ADMIN))
        assert r.status_code == 404 and r.json()["error"]["code"] == "not-found"

        out, _ = await attempt(srv, "alice", PASSWORD)
        assert b"<success" in out
        r = await http.get("/auth-blocks", headers=bearer(READ))
        assert r.json()["total"] == 0  # the success forgot the account's failures

        await attempt(srv, "alice", "wrong")
        r = await http.delete("/auth-blocks/account:alice@localhost", headers=bearer(WRITE))
        assert r.status_code == 200
        r = await http.delete("/auth-blocks/nonsense", headers=bearer(WRITE))
        assert r.status_code == 404


async def test_without_a_running_server(
    server_factory: Callable[..., Awaitable[EmbeddedServer]],
) -> None:
    srv = await server_factory()
    assert srv.store is not None
    offline = AdminContext(srv.store, ["localhost"])  # the CLI without a server
    with pytest.raises(CommandError) as exc:
        await cmd.list_auth_blocks(offline)
    assert exc.value.code == "not-running"
    with pytest.raises(CommandError) as exc:
        await cmd.unblock_auth(offline, "ip:127.0.0.1")
    assert exc.value.code == "not-running"
