"""The in-memory authentication throttle on a fake clock."""

from __future__ import annotations

import pytest

from services.platform.config import Settings
from services.security import throttle as th
from services.security.throttle import Limits, MemoryThrottle

IP, OTHER = "192.0.2.7", "198.51.100.9"
ALICE = "alice@localhost"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make(clock: Clock, **kw: object) -> MemoryThrottle:
    base: dict[str, object] = dict(
        max_failures=3, failure_window=60.0, block_time=100.0, delay=0.5, delay_max=4.0
    )
    base.update(kw)
    return MemoryThrottle(Limits(**base), clock)  # type: ignore[arg-type]


async def test_failures_from_one_address_block_it(clock: Clock) -> None:
    t = make(clock)
    assert not (await t.record_failure(IP, ALICE)).blocked
    assert not (await t.record_failure(IP, "bob@localhost")).blocked
    v = await t.record_failure(IP, "carol@localhost")
    assert v.blocked and v.started and v.failures == 3 and v.retry_after == 100.0
    v = await t.check(IP, "dave@localhost")
    assert v.blocked and v.failures == 3 and v.retry_after == 100.0
    assert not (await t.check(OTHER, "dave@localhost")).blocked
    # another failure while blocked (a concurrent connection) does not start a block
    v = await t.record_failure(IP, ALICE)
    assert v.blocked and not v.started
    clock.now += 60
    assert (await t.check(IP, ALICE)).retry_after == pytest.approx(40.0)
    clock.now += 40
    assert not (await t.check(IP, ALICE)).blocked
    # the count starts again from zero after the block
    assert not (await t.record_failure(IP, ALICE)).blocked


async def test_failures_are_counted_within_the_window(clock: Clock) -> None:
    t = make(clock)
    await t.record_failure(IP, ALICE)
    await t.record_failure(IP, ALICE)
    clock.now += 61  # the window runs from the first failure
    assert not (await t.record_failure(IP, ALICE)).blocked
    assert not (await t.record_failure(IP, ALICE)).blocked
    assert (await t.record_failure(IP, ALICE)).blocked


async def test_success_does_not_reset_the_address(clock: Clock) -> None:
    t = make(clock)
    await t.record_failure(IP, ALICE)
    await t.record_failure(IP, ALICE)
    await t.record_success(IP, "mallory@localhost")
    assert (await t.record_failure(IP, ALICE)).blocked


async def test_zero_max_failures_never_blocks(clock: Clock) -> None:
    t = make(clock, max_failures=0)
    for _ in range(50):
        assert not (await t.record_failure(IP, ALICE)).blocked
    assert not (await t.check(IP, ALICE)).blocked


async def test_account_delay_doubles_up_to_the_cap_and_resets(clock: Clock) -> None:
    t = make(clock, max_failures=0)
    assert (await t.check(IP, ALICE)).delay == 0
    delays = []
    for i in range(6):
        await t.record_failure(f"10.0.0.{i}", ALICE)  # from many addresses
        delays.append((await t.check(OTHER, ALICE)).delay)
    assert delays == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert (await t.check(OTHER, "bob@localhost")).delay == 0
    await t.record_success(OTHER, ALICE)
    assert (await t.check(OTHER, ALICE)).delay == 0


async def test_account_failures_expire_after_the_window_since_the_last(clock: Clock) -> None:
    t = make(clock, max_failures=0)
    await t.record_failure(IP, ALICE)
    clock.now += 50
    await t.record_failure(IP, ALICE)
    clock.now += 50  # 100 s after the first, 50 s after the last
    assert (await t.check(IP, ALICE)).delay == 1.0
    clock.now += 11
    assert (await t.check(IP, ALICE)).delay == 0


async def test_list_and_unblock(clock: Clock) -> None:
    t = make(clock)
    for _ in range(3):
        await t.record_failure(IP, ALICE)
    clock.now += 10
    blocks = await t.list_blocks()
    assert [b.key for b in blocks] == ["account:alice@localhost", f"ip:{IP}"]
    acct, ip = blocks
    assert (ip.kind, ip.subject, ip.failures, ip.expires_in, ip.delay) == ("ip", IP, 3, 90.0, 0.0)
    assert (acct.kind, acct.subject, acct.failures, acct.delay) == ("account", ALICE, 3, 2.0)
    assert acct.expires_in == pytest.approx(50.0)
    assert await t.unblock(f"ip:{IP}")
    assert not (await t.check(IP, ALICE)).blocked
    assert not await t.unblock(f"ip:{IP}")
    assert await t.unblock("account:alice@localhost")
    assert (await t.check(IP, ALICE)).delay == 0
    assert not await t.unblock("account:alice@localhost")
    assert not await t.unblock("nonsense")
    assert await t.list_blocks() == []


async def test_registrations_per_address_per_hour(clock: Clock) -> None:
    t = make(clock, registrations_per_hour=2)
    assert await t.reserve_registration(IP)
    assert await t.reserve_registration(IP)
    assert not await t.reserve_registration(IP)
    assert await t.reserve_registration(OTHER)
    await t.release_registration(IP)  # one did not happen after all
    assert await t.reserve_registration(IP)
    assert not await t.reserve_registration(IP)
    clock.now += th.HOUR
    assert await t.reserve_registration(IP)


async def test_unlimited_registrations(clock: Clock) -> None:
    t = make(clock, registrations_per_hour=0)
    for _ in range(100):
        assert await t.reserve_registration(IP)


async def test_tables_are_bounded(clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(th, "MAX_ENTRIES", 10)
    t = make(clock, max_failures=0)
    for i in range(25):
        await t.record_failure(IP, f"user{i}@localhost")
    blocks = await t.list_blocks()
    assert len(blocks) == 10
    assert "account:user24@localhost" in {b.key for b in blocks}  # the newest stay


def test_limits_from_settings_and_validation() -> None:
    s = Settings.load(
        env={},
        auth_ip_max_failures=4,
        auth_failure_window=30,
        auth_ip_block_time=90,
        auth_account_delay=0.25,
        auth_account_delay_max=2,
        registration_limit_per_hour=7,
    )
    assert Limits.from_settings(s) == Limits(4, 30.0, 90.0, 0.25, 2.0, 7)
    assert Limits.from_settings(Settings.load(env={})) == Limits()
    with pytest.raises(ValueError):
        Limits(block_time=0)
    with pytest.raises(ValueError):
        Limits(delay=2.0, delay_max=1.0)
    with pytest.raises(ValueError):
        Limits(max_failures=-1)
    assert Limits(delay=0.0).delay_after(5) == 0.0
    assert Limits(delay=1.0, delay_max=1e9).delay_after(10_000) == 1e9
