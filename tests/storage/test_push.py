"""Push registrations (XEP-0357) in the Store, on SQLite and on PostgreSQL:
keyed upserts that keep their creation time, the per-user limit, deletion of
one node or of every node of a JID, unknown accounts, account removal, and
the limit holding under concurrent enables."""

from __future__ import annotations

import asyncio

import pytest

from services.core.storage import PushRegistration
from services.storage.store import Store, UnknownAccountError

from .test_store import H, creds, store  # noqa: F401  (the fixture)


def reg(jid: str, node: str, options: bytes | None = None, at: float = 1.0) -> PushRegistration:
    return PushRegistration(jid=jid, node=node, options=options, created=at)


async def test_put_replace_list_delete(store: Store) -> None:  # noqa: F811
    assert await store.create_account(H, "alice", [creds()])
    assert await store.get_push_registrations(H, "alice") == []
    assert await store.put_push_registration(H, "alice", reg("p.example", "a", b"<x/>", 1.0), 0)
    assert await store.put_push_registration(H, "alice", reg("p.example", "b", None, 2.0), 0)
    assert await store.put_push_registration(H, "alice", reg("q.example", "a", None, 3.0), 0)
    # the same (jid, node): options replaced, still the oldest
    assert await store.put_push_registration(H, "alice", reg("p.example", "a", b"<y/>", 9.0), 0)
    assert await store.get_push_registrations(H, "alice") == [
        reg("p.example", "a", b"<y/>", 1.0),
        reg("p.example", "b", None, 2.0),
        reg("q.example", "a", None, 3.0),
    ]
    await store.delete_push_registrations(H, "alice", "p.example", "b")
    await store.delete_push_registrations(H, "alice", "p.example", "nope")
    assert [r.node for r in await store.get_push_registrations(H, "alice")] == ["a", "a"]
    await store.delete_push_registrations(H, "alice", "p.example", None)
    assert await store.get_push_registrations(H, "alice") == [reg("q.example", "a", None, 3.0)]
    # deleting the account deletes them
    assert await store.delete_account(H, "alice")
    assert await store.get_push_registrations(H, "alice") == []


async def test_limit_and_unknown_account(store: Store) -> None:  # noqa: F811
    assert await store.create_account(H, "alice", [creds()])
    assert await store.put_push_registration(H, "alice", reg("p", "1"), 2)
    assert await store.put_push_registration(H, "alice", reg("p", "2"), 2)
    assert not await store.put_push_registration(H, "alice", reg("p", "3"), 2)
    assert await store.put_push_registration(H, "alice", reg("p", "2", b"<x/>"), 2)
    assert len(await store.get_push_registrations(H, "alice")) == 2
    with pytest.raises(UnknownAccountError):
        await store.put_push_registration(H, "nobody", reg("p", "1"), 2)


async def test_concurrent_enables_respect_the_limit(store: Store) -> None:  # noqa: F811
    assert await store.create_account(H, "alice", [creds()])
    results = await asyncio.gather(
        *(store.put_push_registration(H, "alice", reg("p", str(i)), 3) for i in range(10))
    )
    assert sum(results) == 3
    assert len(await store.get_push_registrations(H, "alice")) == 3
