"""The Redis authentication throttle against the machine's real Redis, each test
under its own key prefix (removed afterwards): two instances, as two edges of a
cluster, share failures, blocks, delays and registration counts."""

from __future__ import annotations

import asyncio
from typing import Any

from services.cluster.redis_throttle import RedisThrottle
from services.security.throttle import Limits

IP, OTHER = "192.0.2.7", "2001:db8::1"
ALICE = "alice@localhost"
LIMITS = Limits(
    max_failures=3, failure_window=30.0, block_time=30.0, delay=0.5, delay_max=4.0,
    registrations_per_hour=2,
)  # fmt: skip


def pair(redis: tuple[Any, str], limits: Limits = LIMITS) -> tuple[RedisThrottle, RedisThrottle]:
    r, prefix = redis
    return RedisThrottle(r, prefix, limits), RedisThrottle(r, prefix, limits)


async def test_a_block_holds_on_every_edge(redis: tuple[Any, str]) -> None:
    a, b = pair(redis)
    assert not (await a.record_failure(IP, ALICE)).blocked
    assert not (await b.record_failure(IP, "bob@localhost")).blocked
    v = await a.record_failure(IP, "carol@localhost")
    assert v.blocked and v.started and v.failures == 3 and v.retry_after == 30.0
    v = await b.check(IP, "dave@localhost")
    assert v.blocked and v.failures == 3 and 29.0 < v.retry_after <= 30.0
    v = await b.record_failure(IP, ALICE)
    assert v.blocked and not v.started
    assert not (await a.check(OTHER, ALICE)).blocked
    # another cluster on the same Redis (another prefix) knows nothing of it
    other = RedisThrottle(redis[0], redis[1] + "other:", LIMITS)
    assert not (await other.check(IP, ALICE)).blocked


async def test_blocks_expire(redis: tuple[Any, str]) -> None:
    limits = Limits(max_failures=2, failure_window=30.0, block_time=0.3)
    a, b = pair(redis, limits)
    await a.record_failure(IP, ALICE)
    assert (await b.record_failure(IP, ALICE)).blocked
    assert (await a.check(IP, ALICE)).blocked
    await asyncio.sleep(0.4)
    assert not (await a.check(IP, ALICE)).blocked
    assert not (await a.record_failure(IP, ALICE)).blocked  # counted from zero again


async def test_account_delay_is_shared_and_reset_by_a_success(redis: tuple[Any, str]) -> None:
    a, b = pair(redis, Limits(max_failures=0, delay=0.5, delay_max=4.0))
    assert (await b.check(OTHER, ALICE)).delay == 0
    delays = []
    for i in range(5):
        await (a if i % 2 else b).record_failure(f"10.0.0.{i}", ALICE)
        delays.append((await b.check(OTHER, ALICE)).delay)
    assert delays == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert not (await a.check(IP, ALICE)).blocked  # max_failures 0: never
    await a.record_success(OTHER, ALICE)
    assert (await b.check(OTHER, ALICE)).delay == 0


async def test_list_and_unblock_from_another_instance(redis: tuple[Any, str]) -> None:
    a, b = pair(redis)
    for _ in range(3):
        await a.record_failure(OTHER, ALICE)
    blocks = await b.list_blocks()
    assert [x.key for x in blocks] == ["account:alice@localhost", f"ip:{OTHER}"]
    acct, ip = blocks
    assert (ip.kind, ip.subject, ip.failures, ip.delay) == ("ip", OTHER, 3, 0.0)
    assert 29.0 < ip.expires_in <= 30.0
    assert (acct.kind, acct.subject, acct.failures, acct.delay) == ("account", ALICE, 3, 2.0)
    assert await b.unblock(f"ip:{OTHER}")
    assert not (await a.check(OTHER, ALICE)).blocked
    assert not await b.unblock(f"ip:{OTHER}")
    assert await b.unblock("account:alice@localhost")
    assert (await a.check(OTHER, ALICE)).delay == 0
    assert not await b.unblock("account:alice@localhost")
    assert not await b.unblock("what:ever")
    assert await a.list_blocks() == []


async def test_registrations_are_counted_across_edges(redis: tuple[Any, str]) -> None:
    a, b = pair(redis)
    assert await a.reserve_registration(IP)
    assert await b.reserve_registration(IP)
    assert not await a.reserve_registration(IP)
    assert await a.reserve_registration(OTHER)
    await b.release_registration(IP)
    assert await a.reserve_registration(IP)
    assert not await b.reserve_registration(IP)
    r, prefix = redis
    ttl = await r.pttl(f"{prefix}auth:reg:{IP}")
    assert 3_500_000 < ttl <= 3_600_000  # an hour from the first
    await b.release_registration("203.0.113.1")  # nothing reserved: nothing goes negative
    assert await r.get(f"{prefix}auth:reg:203.0.113.1") is None


async def test_concurrent_failures_block_exactly_once(redis: tuple[Any, str]) -> None:
    a, b = pair(redis, Limits(max_failures=5, failure_window=30.0, block_time=30.0))
    verdicts = await asyncio.gather(
        *((a if i % 2 else b).record_failure(IP, f"u{i}@localhost") for i in range(20))
    )
    assert sum(v.started for v in verdicts) == 1
    assert sum(v.blocked for v in verdicts) == 16
