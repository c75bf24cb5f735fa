"""The typed clients retry only what is safe to run twice (issue 9, defect 7).

Real gRPC servers on loopback serve a stand-in Storage that counts how often
each method ran: a call that times out may have run, so a non-idempotent one
must not be sent again, while an idempotent read fails over to the next
replica; a replica that is not connected is skipped without sending.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

import grpc
import pytest

from services.cluster.edge_rpc import EDGE_IDEMPOTENT, EdgeControl
from services.cluster.presence_rpc import PRESENCE_IDEMPOTENT
from services.cluster.router_rpc import ROUTER_IDEMPOTENT, RouterControl
from services.cluster.rpc import (
    CallTimes,
    Channels,
    RemoteError,
    affinity,
    contract_methods,
    pb2_grpc,
)
from services.cluster.storage_rpc import STORAGE_IDEMPOTENT, StorageClient, StorageServicer
from services.core.presence import Presence
from services.core.storage import Storage

TIMEOUT = 0.3


#: what the stand-in answers; every other method answers None
ANSWERS: dict[str, Any] = {"create_account": True}


class CountingStorage:
    """Stands in for every Storage method: counts each method's runs;
    ``slow`` methods outlast the client's timeout."""

    def __init__(self, slow: set[str]) -> None:
        self.slow = slow
        self.runs: dict[str, int] = {}

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith("_"):
            raise AttributeError(name)

        async def run(*args: Any, **kwargs: Any) -> Any:
            self.runs[name] = self.runs.get(name, 0) + 1
            if name in self.slow:
                await asyncio.sleep(TIMEOUT * 4)
            return ANSWERS.get(name)

        return run


Start = Callable[[CountingStorage], Any]


@pytest.fixture
async def start() -> AsyncIterator[Start]:
    servers: list[grpc.aio.Server] = []

    async def start_one(target: CountingStorage) -> str:
        server = grpc.aio.server()
        pb2_grpc.add_StorageServicer_to_server(StorageServicer(cast(Storage, target)), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        servers.append(server)
        return f"127.0.0.1:{port}"

    try:
        yield start_one
    finally:
        for server in servers:
            await server.stop(0)


def first_then(args: tuple[Any, ...], preferred: str, other: str) -> list[str]:
    """The address list in which ``affinity`` picks ``preferred`` for ``args``."""
    return [preferred, other] if affinity(args, 2) == 0 else [other, preferred]


def proxy(addresses: list[str], channels: Channels) -> StorageClient:
    return StorageClient(
        addresses,
        channels,
        CallTimes(timeout=TIMEOUT, failover_for=5.0, connect_timeout=TIMEOUT),
    )


async def test_a_timed_out_non_idempotent_call_is_not_sent_again(start: Start) -> None:
    a, b = CountingStorage({"create_account"}), CountingStorage({"create_account"})
    args: tuple[str, str, list[Any]] = ("example.org", "alice", [])
    channels = Channels()
    try:
        remote = proxy(first_then(args, await start(a), await start(b)), channels)
        with pytest.raises(RemoteError, match="DEADLINE_EXCEEDED"):
            await remote.create_account(*args)
        await asyncio.sleep(TIMEOUT * 2)  # anything sent meanwhile would have started
        assert a.runs.get("create_account", 0) + b.runs.get("create_account", 0) == 1
        assert a.runs == {"create_account": 1}  # on the preferred replica
    finally:
        await channels.close()


async def test_a_timed_out_idempotent_read_fails_over(start: Start) -> None:
    slow, fast = CountingStorage({"get_account"}), CountingStorage(set())
    args = ("example.org", "alice")
    channels = Channels()
    try:
        remote = proxy(first_then(args, await start(slow), await start(fast)), channels)
        assert await remote.get_account(*args) is None
        assert slow.runs == {"get_account": 1} and fast.runs == {"get_account": 1}
    finally:
        await channels.close()


async def test_a_non_idempotent_call_skips_a_replica_it_cannot_reach(start: Start) -> None:
    """Nothing was sent to a replica whose channel never connected, so the
    call goes to the next one, and runs once there."""
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{s.getsockname()[1]}"
    live = CountingStorage(set())
    args: tuple[str, str, list[Any]] = ("example.org", "bob", [])
    channels = Channels()
    try:
        remote = proxy(first_then(args, dead, await start(live)), channels)
        assert await remote.create_account(*args) is True
        assert live.runs == {"create_account": 1}
    finally:
        await channels.close()


def test_every_remote_method_is_classified() -> None:
    assert set(STORAGE_IDEMPOTENT) == set(contract_methods(Storage))
    assert set(PRESENCE_IDEMPOTENT) == set(contract_methods(Presence))
    assert set(ROUTER_IDEMPOTENT) == set(contract_methods(RouterControl))
    assert set(EDGE_IDEMPOTENT) == set(contract_methods(EdgeControl))
    # the calls a retry could duplicate or misreport
    for name in ("create_account", "delete_account", "put_roster_item", "update_roster_item"):
        assert not STORAGE_IDEMPOTENT[name], name
    assert STORAGE_IDEMPOTENT["store_offline"] and STORAGE_IDEMPOTENT["delete_offline"]
    assert not PRESENCE_IDEMPOTENT["inbound"] and not ROUTER_IDEMPOTENT["bind"]
