"""Message archives (XEP-0313) in the Store, on SQLite and on PostgreSQL:
the filters, RSM paging both ways, counts and indexes, ids unknown,
idempotent writes, retention, preferences, account removal."""

from __future__ import annotations

from services.core.storage import ArchivedMessage, ArchiveQuery
from services.storage.store import Store

from .test_store import H, creds, store  # noqa: F401  (the fixture)

A = f"alice@{H}"


def msg(i: int, peer: str = "bob@example.org/b", out: bool = False) -> ArchivedMessage:
    return ArchivedMessage(f"id{i}", 1000.0 + i, peer, out, f"<message>{i}</message>".encode())


async def fill(s: Store, n: int, **kw: object) -> None:
    for i in range(n):
        await s.archive_message(A, msg(i, **kw))  # type: ignore[arg-type]


def ids(page: object) -> list[str]:
    return [m.id for m in page.messages]  # type: ignore[attr-defined]


async def test_forward_pages_and_counts(store: Store) -> None:  # noqa: F811
    await fill(store, 7)
    p = await store.query_archive(A, ArchiveQuery(limit=3))
    assert p is not None
    assert ids(p) == ["id0", "id1", "id2"] and p.count == 7 and p.first_index == 0
    assert not p.complete
    p = await store.query_archive(A, ArchiveQuery(page_after="id2", limit=3))
    assert p is not None and ids(p) == ["id3", "id4", "id5"] and p.first_index == 3
    p = await store.query_archive(A, ArchiveQuery(page_after="id5", limit=3))
    assert p is not None and ids(p) == ["id6"] and p.complete and p.first_index == 6
    m = p.messages[0]
    assert (m.stamp, m.peer, m.outgoing, m.stanza) == (
        1006.0,
        "bob@example.org/b",
        False,
        b"<message>6</message>",
    )


async def test_backward_pages_from_the_end(store: Store) -> None:  # noqa: F811
    await fill(store, 7)
    p = await store.query_archive(A, ArchiveQuery(last=True, limit=3))
    assert p is not None and ids(p) == ["id4", "id5", "id6"] and p.first_index == 4
    assert not p.complete
    p = await store.query_archive(A, ArchiveQuery(page_before="id4", limit=3))
    assert p is not None and ids(p) == ["id1", "id2", "id3"] and not p.complete
    p = await store.query_archive(A, ArchiveQuery(page_before="id1", limit=3))
    assert p is not None and ids(p) == ["id0"] and p.complete and p.first_index == 0


async def test_filters(store: Store) -> None:  # noqa: F811
    for i in range(6):
        peer = "bob@example.org/b" if i % 2 else "carol@example.org/c"
        await store.archive_message(A, msg(i, peer=peer, out=i == 3))
    await store.archive_message(A, msg(6, peer="bob@example.org/other"))
    p = await store.query_archive(A, ArchiveQuery(with_jid="bob@example.org"))
    assert p is not None and ids(p) == ["id1", "id3", "id5", "id6"] and p.count == 4
    p = await store.query_archive(A, ArchiveQuery(with_jid="bob@example.org/b"))
    assert p is not None and ids(p) == ["id1", "id3", "id5"]
    p = await store.query_archive(A, ArchiveQuery(start=1002.0, end=1004.0))
    assert p is not None and ids(p) == ["id2", "id3", "id4"] and p.count == 3
    p = await store.query_archive(A, ArchiveQuery(after_id="id1", before_id="id5"))
    assert p is not None and ids(p) == ["id2", "id3", "id4"] and p.count == 3
    # paging inside a filter: the count and index are of the filtered set
    p = await store.query_archive(
        A, ArchiveQuery(with_jid="bob@example.org", page_after="id3", limit=1)
    )
    assert p is not None and ids(p) == ["id5"] and p.count == 4 and p.first_index == 2
    assert p.messages[0].outgoing is False
    p = await store.query_archive(A, ArchiveQuery(with_jid="bob@example.org", limit=2))
    assert p is not None and [m.outgoing for m in p.messages] == [False, True]


async def test_unknown_ids_answer_none(store: Store) -> None:  # noqa: F811
    await fill(store, 2)
    for q in (
        ArchiveQuery(after_id="nope"),
        ArchiveQuery(before_id="nope"),
        ArchiveQuery(page_after="nope"),
        ArchiveQuery(page_before="nope"),
    ):
        assert await store.query_archive(A, q) is None
    # an id of another archive is unknown here
    await store.archive_message("bob@example.org", msg(99))
    assert await store.query_archive(A, ArchiveQuery(page_after="id99")) is None


async def test_count_only_and_empty(store: Store) -> None:  # noqa: F811
    p = await store.query_archive(A, ArchiveQuery())
    assert p is not None and ids(p) == [] and p.count == 0 and p.complete
    await fill(store, 3)
    p = await store.query_archive(A, ArchiveQuery(limit=0))
    assert p is not None and ids(p) == [] and p.count == 3


async def test_same_id_twice_is_stored_once(store: Store) -> None:  # noqa: F811
    await store.archive_message(A, msg(1))
    await store.archive_message(A, msg(1))
    p = await store.query_archive(A, ArchiveQuery())
    assert p is not None and ids(p) == ["id1"]


async def test_retention_and_delete(store: Store) -> None:  # noqa: F811
    await fill(store, 5)
    await store.archive_message("bob@example.org", msg(0))
    assert await store.expire_archives(1002.0) == 3  # 1000, 1001 and bob's 1000
    p = await store.query_archive(A, ArchiveQuery())
    assert p is not None and ids(p) == ["id2", "id3", "id4"]
    await store.delete_archive(A)
    p = await store.query_archive(A, ArchiveQuery())
    assert p is not None and p.count == 0


async def test_prefs_and_account_removal(store: Store) -> None:  # noqa: F811
    assert await store.get_archive_prefs(A) is None
    await store.set_archive_prefs(A, '{"default": "never"}')
    await store.set_archive_prefs(A, '{"default": "roster"}')
    assert await store.get_archive_prefs(A) == '{"default": "roster"}'
    assert await store.create_account(H, "alice", [creds()])
    await fill(store, 2)
    await store.archive_message("bob@example.org", msg(0))
    assert await store.delete_account(H, "alice")
    assert await store.get_archive_prefs(A) is None
    p = await store.query_archive(A, ArchiveQuery())
    assert p is not None and p.count == 0
    p = await store.query_archive("bob@example.org", ArchiveQuery())
    assert p is not None and p.count == 1
