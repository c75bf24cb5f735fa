"""Password-guessing blocks in a real cluster: failures on one edge block the
address on the other (the counts are in Redis), and the admin process lists
the block and lifts it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from services.app.local import LocalCluster

from ..conftest import PASSWORD
from ..edge.test_auth_throttle import attempt_on
from .conftest import CLUSTER_MARKS, running_cluster

pytestmark = CLUSTER_MARKS
TOKEN = "cluster-throttle-token"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LocalCluster]:
    env = {"XMPPD_AUTH_IP_MAX_FAILURES": "2", "XMPPD_AUTH_ACCOUNT_DELAY": "0"}
    async with running_cluster(
        Path(tmp_path_factory.mktemp("throttle")),
        admin=True,
        admin_tokens=f"{TOKEN}:admin",
        extra_env=env,
    ) as c:
        yield c


async def test_a_block_made_on_one_edge_holds_on_the_other(cluster, users):
    (a,) = await users("alice")
    user = a.split("@")[0]
    edge1, edge2 = (e.c2s_ports[0] for e in cluster.edges)
    out, _ = await attempt_on(edge1, user, "wrong")
    assert b"<not-authorized/>" in out and b"stream:error" not in out
    out, _ = await attempt_on(edge2, user, "wrong")
    assert b"<policy-violation" in out and b"Too many (2) failed" in out
    out, _ = await attempt_on(edge1, user, PASSWORD)
    assert b"<success" not in out and b"Too many (2) failed" in out

    base = f"http://127.0.0.1:{cluster.proc('admin').admin_port}/api/v1"
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10) as http:
        r = await http.get(f"{base}/auth-blocks")
        assert r.status_code == 200, r.text
        keys = {b["key"]: b for b in r.json()["blocks"]}
        assert keys["ip:127.0.0.1"]["failures"] == 2
        assert keys[f"account:{a}"]["failures"] == 2
        r = await http.delete(f"{base}/auth-blocks/ip:127.0.0.1")
        assert r.status_code == 200, r.text
    out, _ = await attempt_on(edge2, user, PASSWORD)
    assert b"<success" in out
