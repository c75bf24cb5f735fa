"""A real local cluster per test module: storage, presence, two routers and
two edges as separate processes against the machine's PostgreSQL and Redis,
each module with its own database and Redis key prefix."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from services.app.local import LocalCluster
from services.platform.db import open_database
from services.storage.store import Store
from services.xmpp.sasl import derive_credentials

from ..conftest import PASSWORD, Client, send_initial_presence, wait_until

#: cluster tests share one event loop per module, like the cluster fixture
CLUSTER_MARKS = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]


@contextlib.asynccontextmanager
async def running_cluster(folder: Path, **kw: Any) -> AsyncIterator[LocalCluster]:
    """A LocalCluster with its own database and Redis prefix, removed afterwards."""
    tag = secrets.token_hex(4)
    env = {"XMPPD_NODE_TTL": "3", "XMPPD_ROUTE_TIMEOUT": "5", **kw.pop("extra_env", {})}
    c = LocalCluster(
        folder, database=f"xmppd_test_{tag}", redis_prefix=f"xmppd-test-{tag}:", extra_env=env, **kw
    )
    await c.prepare_database(fresh=True)
    await c.start()
    try:
        yield c
    finally:
        await c.stop()
        await c.clear_redis()
        await c.drop_database()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LocalCluster]:
    async with running_cluster(Path(tmp_path_factory.mktemp("cluster"))) as c:
        yield c


@pytest_asyncio.fixture(loop_scope="module")
async def users(cluster: LocalCluster) -> AsyncIterator[Any]:
    """Creates fresh accounts (unique names per test) straight in PostgreSQL."""
    db = await open_database(cluster.database_url)
    store = Store(db)
    tag = secrets.token_hex(3)

    async def make(*names: str) -> list[str]:
        out = []
        for n in names:
            user = f"{n}{tag}"
            creds = [derive_credentials(PASSWORD, "SHA-1"), derive_credentials(PASSWORD, "SHA-256")]
            await store.create_account("localhost", user, creds)
            out.append(f"{user}@localhost")
        return out

    yield make
    await db.close()


@pytest_asyncio.fixture(loop_scope="module")
async def login(cluster: LocalCluster) -> AsyncIterator[Any]:
    clients: list[Client] = []

    async def _login(
        jid: str,
        edge: int = 0,
        presence: bool = True,
        resource: str | None = None,
        plugins: tuple[str, ...] = (),
    ) -> Client:
        full = f"{jid}/{resource or 'r' + secrets.token_hex(2)}"
        c = Client(full, PASSWORD)
        for plugin in plugins:
            c.register_plugin(plugin)
        c.enable_direct_tls = False
        started = asyncio.get_running_loop().create_future()
        c.add_event_handler("session_start", lambda _e: started.done() or started.set_result(True))
        c.add_event_handler("failed_auth", lambda _e: started.done() or started.set_result(False))
        c.connect("127.0.0.1", cluster.edges[edge].c2s_ports[0])
        clients.append(c)
        assert await asyncio.wait_for(started, 15), f"{full} could not log in"
        if presence:
            await send_initial_presence(c, timeout=15)
        return c

    yield _login
    closing = [c.disconnect(wait=False) for c in clients]
    await asyncio.wait_for(asyncio.gather(*closing, return_exceptions=True), 15)


async def routed(c: Client) -> None:
    """Wait until a router has handled everything ``c`` sent so far (delivered,
    stored offline or bounced): one sender's stanzas cross one router replica,
    one after another, so the error for a message to a non-existing user,
    sent now, comes back only after all of them."""
    marker = f"marker-{secrets.token_hex(4)}"
    c.send_message(mto="nobody@localhost", mbody=marker, mtype="chat")
    others = []
    while True:
        m = await c.next_message(15)
        if m["type"] == "error" and m["body"] == marker:
            break
        others.append(m)
    # what was not ours goes back for the test, in the order it arrived
    while not c.messages.empty():
        others.append(c.messages.get_nowait())
    for m in others:
        c.messages.put_nowait(m)


async def befriend(alice: Client, bob: Client, a: str, b: str, *others: Client) -> None:
    """Mutual subscription between two users (auto-accepting clients)."""
    for c in (alice, bob, *others):
        c.roster.auto_authorize = True
        c.roster.auto_subscribe = True
        await c.get_roster()
    alice.send_presence_subscription(pto=b, ptype="subscribe")
    await wait_until(
        lambda: (
            alice.client_roster[b]["subscription"] == bob.client_roster[a]["subscription"] == "both"
        ),
        timeout=15,
        what="mutual subscription",
    )
