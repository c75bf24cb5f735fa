"""Operations on a real cluster: Prometheus scraping every process, the REST
admin API acting across edges, /healthz and /readyz of each role."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from services.app.local import LocalCluster

from ..e2e.test_prometheus import http_get, run_prometheus
from .conftest import CLUSTER_MARKS, running_cluster

pytestmark = CLUSTER_MARKS
TOKEN = "cluster-test-token"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LocalCluster]:
    async with running_cluster(
        Path(tmp_path_factory.mktemp("ops")), admin=True, admin_tokens=f"{TOKEN}:admin"
    ) as c:
        yield c


async def test_every_process_is_healthy_and_ready(cluster):
    for p in cluster.procs:
        assert p.ops_port > 0, p.name
        for path in ("/healthz", "/readyz"):
            status, body = await http_get(f"http://127.0.0.1:{p.ops_port}{path}")
            assert status == 200, (p.name, path, body)


async def test_prometheus_scrapes_the_cluster(cluster, users, login, tmp_path):
    a, b = await users("alice", "bob")
    alice = await login(a, edge=0)
    bob = await login(b, edge=1)
    targets = [(p.ops_port, p.role) for p in cluster.procs]
    async with run_prometheus(tmp_path / "prom", targets) as prom:
        up = await prom.wait_for("count(up == 1)", lambda v: v == len(targets))
        assert up == len(targets)
        stop = asyncio.Event()

        async def chatter() -> None:
            while not stop.is_set():
                alice.send_message(mto=b, mbody="tick", mtype="chat")
                await asyncio.sleep(0.05)

        task = asyncio.get_running_loop().create_task(chatter())
        try:
            first = await prom.wait_for(
                'sum(xmppd_stanzas_in_total{kind="message"})', lambda v: v > 0
            )
            await prom.wait_for(
                'sum(xmppd_stanzas_in_total{kind="message"})', lambda v: v > first + 20
            )
            await prom.wait_for('sum(xmppd_stanzas_out_total{kind="message"})', lambda v: v > 20)
            # routing latency is observed across processes (wall clock)
            await prom.wait_for("sum(xmppd_routing_latency_seconds_count)", lambda v: v > 0)
            await prom.wait_for("sum(xmppd_grpc_call_seconds_count)", lambda v: v > 0)
            await prom.wait_for("sum(xmppd_redis_latency_seconds_count)", lambda v: v > 0)
            await prom.wait_for("sum(xmppd_db_latency_seconds_count)", lambda v: v > 0)
            await prom.wait_for("sum(xmppd_connections)", lambda v: v >= 2)
            await prom.wait_for(
                "sum(xmppd_edge_up) / count(count by (node) (xmppd_edge_up))", lambda v: v >= 1
            )
            # cluster-wide figures come from exactly one process
            await prom.wait_for("count(xmppd_online_users)", lambda v: v == 1)
            await prom.wait_for("sum(xmppd_online_users)", lambda v: v >= 2)
            await prom.wait_for('count(xmppd_registered_users{host="localhost"})', lambda v: v == 1)
        finally:
            stop.set()
            await task
        for _ in range(50):
            try:
                await bob.next_message(0.2)
            except TimeoutError:
                break


async def test_admin_api_sees_and_kicks_sessions_on_any_edge(cluster, users, login):
    (a,) = await users("alice")
    on_edge2 = await login(a, edge=1, resource="far")
    closed = asyncio.get_running_loop().create_future()
    on_edge2.add_event_handler("disconnected", lambda _e: closed.done() or closed.set_result(True))
    admin = cluster.proc("admin")
    base = f"http://127.0.0.1:{admin.admin_port}/api/v1"
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(headers=headers, timeout=10) as http:
        r = await http.get(f"{base}/sessions")
        assert r.status_code == 200, r.text
        rows = [s for s in r.json()["sessions"] if s["jid"] == f"{a}/far"]
        assert rows and rows[0]["node"] == "edge2"
        r = await http.get(f"{base}/users", params={"search": a.split("@")[0]})
        assert r.status_code == 200 and r.json()["total"] == 1
        r = await http.post(
            f"{base}/messages",
            json={
                "from": "localhost",
                "to": f"{a}/far",
                "body": "from the admin API",
                "type": "headline",
            },
        )
        assert r.status_code == 202, r.text
        m = await on_edge2.next_message(10)
        assert m["body"] == "from the admin API"
        r = await http.delete(f"{base}/sessions/{a}/far")
        assert r.status_code == 200, r.text
    await asyncio.wait_for(closed, 10)
    async with httpx.AsyncClient(timeout=10) as anon:
        r = await anon.get(f"{base}/sessions", headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401


async def test_admin_api_manages_rooms_of_the_muc_role(cluster, users, login):
    """The admin role reaches the muc role over gRPC: a room created through
    the API is a room clients on either edge join, and it is listed with them."""
    a, b = await users("alice", "bob")
    room = f"ops-{a.split('@')[0]}@conference.localhost"
    base = f"http://127.0.0.1:{cluster.proc('admin').admin_port}/api/v1"
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10) as http:
        r = await http.post(f"{base}/rooms", json={"jid": room, "owner": a, "name": "Ops"})
        assert r.status_code == 201, r.text
        alice = await login(a, edge=0, resource="r", plugins=("xep_0030", "xep_0045"))
        bob = await login(b, edge=1, resource="r", plugins=("xep_0030", "xep_0045"))
        await alice.plugin["xep_0045"].join_muc_wait(room, "alice", timeout=10)
        await bob.plugin["xep_0045"].join_muc_wait(room, "bob", timeout=10)
        bob.send_message(mto=room, mbody="across edges", mtype="groupchat")
        while (await alice.next_message(10))["body"] != "across edges":
            pass
        r = await http.get(f"{base}/rooms/{room}")
        assert r.status_code == 200 and r.json()["occupants"] == 2, r.text
        r = await http.delete(f"{base}/rooms/{room}")
        assert r.status_code == 200, r.text
