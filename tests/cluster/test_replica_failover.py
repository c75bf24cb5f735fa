"""Storage and presence replicas die; the other replica carries on."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from services.cluster.local import LocalCluster

from .conftest import CLUSTER_MARKS, running_cluster

pytestmark = CLUSTER_MARKS


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LocalCluster]:
    async with running_cluster(
        Path(tmp_path_factory.mktemp("replicas")), edges=1, routers=1, storages=2, presences=2
    ) as c:
        yield c


async def test_storage_and_presence_replica_kill(cluster, users, login):
    a, b = await users("alice", "bob")
    alice = await login(a)
    bob = await login(b)
    for c in (alice, bob):
        c.roster.auto_authorize = True
        c.roster.auto_subscribe = True
        await c.get_roster()
    # kill the first replica of each: calls fail over to the second
    cluster.proc("storage1").kill()
    cluster.proc("presence1").kill()
    await asyncio.sleep(0.2)
    # logins read credentials through storage; subscriptions go through presence
    bob2 = await login(b)
    alice.send_presence_subscription(pto=b, ptype="subscribe")
    for _ in range(100):
        await asyncio.sleep(0.1)
        if alice.client_roster[b]["subscription"] == "both":
            break
    assert alice.client_roster[b]["subscription"] == "both"
    # offline storage still works through the surviving storage replica
    alice.send_message(mto="nobody@localhost", mbody="x", mtype="chat")
    err = await alice.next_message(10)
    assert err["type"] == "error"
    bob.disconnect()
    bob2.disconnect()
    await asyncio.sleep(0.5)
    alice.send_message(mto=b, mbody="stored via replica 2", mtype="chat")
    await asyncio.sleep(0.5)
    bob3 = await login(b)
    assert (await bob3.next_message(10))["body"] == "stored via replica 2"
