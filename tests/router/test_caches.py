"""The per-user caches behind ``Context.cache``, without a server."""

from __future__ import annotations

import asyncio

from services.router.caches import UserCaches
from services.xmpp.jid import JID

ALICE = JID.parse("alice@localhost/phone")


async def test_loads_once_per_user_and_keys_by_bare_jid() -> None:
    caches = UserCaches()
    calls = 0

    async def load() -> str | None:
        nonlocal calls
        calls += 1
        return "h1"

    c = caches.get("photo")
    assert await c.get(ALICE, load) == "h1"
    assert await c.get(ALICE.bare, load) == "h1"
    assert calls == 1
    assert caches.get("photo") is c


async def test_none_is_a_value_too() -> None:
    c = UserCaches().get("photo")
    calls = 0

    async def load() -> str | None:
        nonlocal calls
        calls += 1
        return None

    assert await c.get(ALICE, load) is None
    assert await c.get(ALICE, load) is None
    assert calls == 1


async def test_invalidate_drops_and_announces_forget_only_drops() -> None:
    caches = UserCaches()
    told: list[tuple[str, JID]] = []
    caches.subscribe(lambda name, jid: told.append((name, jid)))
    c = caches.get("photo")
    values = iter(["old", "new", "newer"])

    async def load() -> str | None:
        return next(values)

    assert await c.get(ALICE, load) == "old"
    c.invalidate(ALICE)
    assert told == [("photo", ALICE.bare)]
    assert await c.get(ALICE, load) == "new"
    caches.forget("photo", ALICE)  # changed in another process
    assert told == [("photo", ALICE.bare)]
    assert await c.get(ALICE, load) == "newer"
    caches.forget("unknown", ALICE)  # never used here: nothing to do


async def test_a_load_overtaken_by_a_change_is_not_kept() -> None:
    """A read that started before a change elsewhere may have read the old
    value: it is returned, not stored, so the next get reads again."""
    c = UserCaches().get("photo")
    started, go = asyncio.Event(), asyncio.Event()

    async def slow() -> str | None:
        started.set()
        await go.wait()
        return "old"

    task = asyncio.create_task(c.get(ALICE, slow))
    await started.wait()
    c.forget(ALICE)
    go.set()
    assert await task == "old"

    async def fresh() -> str | None:
        return "new"

    assert await c.get(ALICE, fresh) == "new"


async def test_bounded() -> None:
    c = UserCaches(limit=3).get("photo")
    loads: list[str] = []

    def loader(v: str):  # type: ignore[no-untyped-def]
        async def load() -> str | None:
            loads.append(v)
            return v

        return load

    for i in range(5):
        await c.get(JID.parse(f"u{i}@localhost"), loader(str(i)))
    assert len(c._values) == 3
    await c.get(JID.parse("u0@localhost"), loader("again"))  # the oldest went first
    assert loads[-1] == "again"
    await c.get(JID.parse("u4@localhost"), loader("no"))
    assert loads[-1] == "again"


async def test_clear_on_a_wildcard_forget() -> None:
    caches = UserCaches()
    c = caches.get("photo")

    async def a() -> str | None:
        return "a"

    async def b() -> str | None:
        return "b"

    await c.get(ALICE, a)
    caches.forget("photo", None)
    assert await c.get(ALICE, b) == "b"


async def test_forget_everything() -> None:
    caches = UserCaches()
    a, b = caches.get("a"), caches.get("b")

    async def one() -> str | None:
        return "1"

    async def two() -> str | None:
        return "2"

    await a.get(ALICE, one)
    await b.get(ALICE, one)
    caches.forget("*", None)
    assert await a.get(ALICE, two) == "2" and await b.get(ALICE, two) == "2"
