"""services.platform.db and services.platform.migrate, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.platform.db import (
    Database,
    DatabaseError,
    IntegrityError,
    open_database,
    sqlite_placeholders,
)
from services.platform.migrate import (
    MigrationError,
    apply_dialect_lines,
    load_migrations,
    migrate,
    schema_version,
    split_statements,
)
from tests.platform import temp_database_url, temp_pg_database


@pytest.fixture(params=["sqlite", "postgres"])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    async with temp_database_url(request.param, tmp_path) as url:
        database = await open_database(url)
        try:
            yield database
        finally:
            await database.close()


async def _make_table(db: Database) -> None:
    await db.execute("CREATE TABLE t (k TEXT PRIMARY KEY, n BIGINT NOT NULL, b BYTEA)")


# ------------------------------------------------------------------ placeholders


def test_placeholder_rewrite() -> None:
    assert sqlite_placeholders("SELECT $1, $2 WHERE a = $10") == "SELECT ?1, ?2 WHERE a = ?10"
    assert sqlite_placeholders("SELECT '$1', \"$2\" -- $3\n, $4") == (
        "SELECT '$1', \"$2\" -- $3\n, ?4"
    )
    assert sqlite_placeholders("SELECT 'it''s $1' /* $2 */, $3") == (
        "SELECT 'it''s $1' /* $2 */, ?3"
    )
    assert sqlite_placeholders("SELECT $ , $a") == "SELECT $ , $a"


# ------------------------------------------------------------------- both engines


async def test_dialect(db: Database) -> None:
    assert db.dialect in ("sqlite", "postgres")


async def test_execute_and_fetch(db: Database) -> None:
    await _make_table(db)
    assert await db.execute("INSERT INTO t (k, n, b) VALUES ($1, $2, $3)", "a", 1, b"\x00\xff") == 1
    assert await db.execute("INSERT INTO t (k, n) VALUES ($1, $2)", "b", 2) == 1
    assert await db.execute("UPDATE t SET n = n + $1", 10) == 2
    assert await db.execute("UPDATE t SET n = 0 WHERE k = $1", "zzz") == 0
    rows = await db.fetch("SELECT k, n, b FROM t ORDER BY k")
    assert rows == [("a", 11, b"\x00\xff"), ("b", 12, None)]
    assert all(type(r) is tuple for r in rows)
    assert await db.fetchrow("SELECT k, n FROM t WHERE k = $1", "b") == ("b", 12)
    assert await db.fetchrow("SELECT k, n FROM t WHERE k = $1", "nope") is None
    assert await db.fetchval("SELECT n FROM t WHERE k = $1", "a") == 11
    assert await db.fetchval("SELECT n FROM t WHERE k = $1", "nope") is None
    # placeholders reused and out of order
    assert (
        await db.fetchval("SELECT COUNT(*) FROM t WHERE n > $2 AND k <> $1 AND k <> $1", "a", 5)
        == 1
    )
    assert await db.execute("DELETE FROM t") == 2


async def test_transaction_commit_and_rollback(db: Database) -> None:
    await _make_table(db)
    async with db.transaction() as tx:
        await tx.execute("INSERT INTO t (k, n) VALUES ($1, $2)", "a", 1)
        assert await tx.fetchval("SELECT n FROM t WHERE k = $1", "a") == 1
        assert await tx.fetch("SELECT k FROM t") == [("a",)]
        assert await tx.fetchrow("SELECT k, n FROM t") == ("a", 1)
    assert await db.fetchval("SELECT COUNT(*) FROM t") == 1

    with pytest.raises(RuntimeError):
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO t (k, n) VALUES ($1, $2)", "b", 2)
            raise RuntimeError("boom")
    assert await db.fetch("SELECT k FROM t") == [("a",)]

    # a statement failing inside rolls the whole transaction back
    with pytest.raises(IntegrityError):
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO t (k, n) VALUES ($1, $2)", "c", 3)
            await tx.execute("INSERT INTO t (k, n) VALUES ($1, $2)", "a", 4)
    assert await db.fetch("SELECT k, n FROM t") == [("a", 1)]


async def test_integrity_error(db: Database) -> None:
    await _make_table(db)
    await db.execute("INSERT INTO t (k, n) VALUES ($1, $2)", "a", 1)
    with pytest.raises(IntegrityError):
        await db.execute("INSERT INTO t (k, n) VALUES ($1, $2)", "a", 2)
    with pytest.raises(IntegrityError):
        await db.execute("INSERT INTO t (k) VALUES ($1)", "z")
    assert await db.fetchval("SELECT n FROM t WHERE k = 'a'") == 1


async def test_statements_wait_for_transactions(db: Database) -> None:
    """Another task never sees (or joins) a transaction that has not committed."""
    await _make_table(db)
    seen: list[int] = []

    async def reader() -> None:
        seen.append(await db.fetchval("SELECT COUNT(*) FROM t"))

    async with db.transaction() as tx:
        await tx.execute("INSERT INTO t (k, n) VALUES ($1, $2)", "a", 1)
        task = asyncio.create_task(reader())
        if db.dialect == "sqlite":
            # one connection: the reader waits for the commit
            await asyncio.sleep(0.05)
            assert not task.done()
        else:
            # a pool: the reader uses another connection and sees the committed state
            await asyncio.wait_for(task, 10)
        await tx.execute("INSERT INTO t (k, n) VALUES ($1, $2)", "b", 2)
    await task
    assert seen == ([2] if db.dialect == "sqlite" else [0])


async def test_cancelled_transaction_rolls_back(db: Database) -> None:
    await _make_table(db)
    started = asyncio.Event()

    async def stuck() -> None:
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO t (k, n) VALUES ($1, $2)", "a", 1)
            started.set()
            await asyncio.sleep(60)

    task = asyncio.create_task(stuck())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await db.fetchval("SELECT COUNT(*) FROM t") == 0
    async with db.transaction() as tx:
        await tx.execute("INSERT INTO t (k, n) VALUES ($1, $2)", "b", 2)
    assert await db.fetch("SELECT k FROM t") == [("b",)]


async def test_concurrent_transactions(db: Database) -> None:
    await _make_table(db)
    await db.execute("INSERT INTO t (k, n) VALUES ($1, $2)", "counter", 0)

    async def bump() -> None:
        async with db.transaction() as tx:
            await tx.fetchval("UPDATE t SET n = n + 1 WHERE k = $1 RETURNING n", "counter")

    await asyncio.gather(*(bump() for _ in range(20)))
    assert await db.fetchval("SELECT n FROM t WHERE k = $1", "counter") == 20


# ------------------------------------------------------------------------- SQLite


async def test_sqlite_settings(tmp_path: Path) -> None:
    db = await open_database(f"sqlite://{tmp_path}/sub/dir/x.db")
    try:
        assert db.dialect == "sqlite"
        assert (tmp_path / "sub" / "dir" / "x.db").exists()
        assert await db.fetchval("PRAGMA journal_mode") == "wal"
        assert await db.fetchval("PRAGMA foreign_keys") == 1
        assert await db.fetchval("PRAGMA synchronous") == 1  # NORMAL
        assert await db.fetchval("PRAGMA busy_timeout") == 5000
    finally:
        await db.close()


async def test_sqlite_memory() -> None:
    for url in ("sqlite://:memory:", "sqlite:///:memory:"):
        db = await open_database(url)
        try:
            await _make_table(db)
            await db.execute("INSERT INTO t (k, n) VALUES ($1, $2)", "a", 1)
            assert await db.fetchval("SELECT n FROM t") == 1
        finally:
            await db.close()


async def test_sqlite_finished_transaction_refuses(tmp_path: Path) -> None:
    db = await open_database(f"sqlite://{tmp_path}/x.db")
    try:
        async with db.transaction() as tx:
            pass
        with pytest.raises(DatabaseError):
            await tx.execute("SELECT 1")
    finally:
        await db.close()


async def test_bad_urls() -> None:
    for url in ("mysql://x/y", "sqlite://", "nonsense"):
        with pytest.raises(ValueError):
            await open_database(url)


async def test_postgres_pool_size_parameters() -> None:
    async with temp_pg_database() as url:
        db = await open_database(url + "?min_size=1&max_size=2")
        try:
            assert db.dialect == "postgres"
            assert await db.fetchval("SELECT 1 + $1::int", 1) == 2
        finally:
            await db.close()


async def test_postgres_pool_skips_the_reset_query_but_not_the_rollback() -> None:
    """Released connections keep their session (no RESET ALL round trip), and a
    transaction left open is still rolled back before the next user."""
    async with temp_pg_database() as url:
        db = await open_database(url + "?min_size=1&max_size=1")
        try:
            await db.execute("SET application_name = 'kept'")
            assert await db.fetchval("SHOW application_name") == "kept"
            await db.execute("CREATE TABLE t (x INT)")
            async with db._pool.acquire() as conn:  # type: ignore[attr-defined]
                await conn.execute("BEGIN")  # left open on release
                await conn.execute("INSERT INTO t VALUES (1)")
            assert await db.fetchval("SELECT count(*) FROM t") == 0
        finally:
            await db.close()


# --------------------------------------------------------------------- migrations


def test_split_statements() -> None:
    sql = """
    -- a comment; with a semicolon
    CREATE TABLE a (x TEXT DEFAULT 'a;b');  /* c; d */
    INSERT INTO a VALUES ('it''s; fine');
    -- trailing comment
    ;
    SELECT 1
    """
    assert split_statements(sql) == [
        "-- a comment; with a semicolon\n    CREATE TABLE a (x TEXT DEFAULT 'a;b')",
        "/* c; d */\n    INSERT INTO a VALUES ('it''s; fine')",
        "SELECT 1",
    ]
    assert split_statements("-- nothing\n;;  ") == []


def test_dialect_lines() -> None:
    sql = "CREATE TABLE t (\n  -- sqlite: id INTEGER,\n  -- postgres: id BIGINT,\n  x TEXT\n)"
    assert apply_dialect_lines(sql, "sqlite") == (
        "CREATE TABLE t (\n  id INTEGER,\n  -- postgres: id BIGINT,\n  x TEXT\n)"
    )
    assert apply_dialect_lines(sql, "postgres") == (
        "CREATE TABLE t (\n  -- sqlite: id INTEGER,\n  id BIGINT,\n  x TEXT\n)"
    )


def test_shipped_migrations_load() -> None:
    for dialect in ("sqlite", "postgres"):
        migrations = load_migrations(dialect)
        assert migrations[0].name == "0001_initial"
        assert [m.version for m in migrations] == sorted({m.version for m in migrations})
        assert all(m.statements for m in migrations)


def test_migration_file_errors(tmp_path: Path) -> None:
    (tmp_path / "0001_a.sql").write_text("SELECT 1;")
    (tmp_path / "0001_b.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="several"):
        load_migrations("sqlite", tmp_path)
    (tmp_path / "0001_b.sql").unlink()
    (tmp_path / "0002_c.postgres.sql").write_text("SELECT 1;")
    assert [m.name for m in load_migrations("postgres", tmp_path)] == ["0001_a", "0002_c"]
    with pytest.raises(MigrationError, match="no file for sqlite"):
        load_migrations("sqlite", tmp_path)
    with pytest.raises(MigrationError, match="dialect"):
        load_migrations("oracle", tmp_path)


async def test_migrate_is_idempotent(db: Database) -> None:
    first = await migrate(db)
    assert first and first[0] == "0001_initial"
    assert await migrate(db) == []
    assert await schema_version(db) == int(first[-1][:4])
    rows = await db.fetch("SELECT version, name FROM schema_version ORDER BY version")
    assert [name for _, name in rows] == first
    tables = {"accounts", "scram_credentials", "roster_items", "offline_messages"}
    tables |= {"vcards", "private_xml", "blocklist", "last_activity"}
    for table in sorted(tables):
        assert await db.fetchval(f"SELECT COUNT(*) FROM {table}") == 0


async def test_migrate_custom_source(db: Database, tmp_path: Path) -> None:
    src = tmp_path / "migrations"
    src.mkdir()
    (src / "0001_items.sql").write_text(
        "CREATE TABLE items (\n"
        "    -- sqlite: id INTEGER PRIMARY KEY AUTOINCREMENT,\n"
        "    -- postgres: id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,\n"
        "    label TEXT NOT NULL\n"
        ");\n"
        "INSERT INTO items (label) VALUES ('first; one');\n"
    )
    (src / "0002_more.sqlite.sql").write_text("INSERT INTO items (label) VALUES ('sqlite');")
    (src / "0002_more.postgres.sql").write_text("INSERT INTO items (label) VALUES ('postgres');")
    (src / "README.txt").write_text("not a migration")
    assert await migrate(db, src) == ["0001_items", "0002_more"]
    assert await migrate(db, src) == []
    labels = await db.fetch("SELECT id, label FROM items ORDER BY id")
    assert labels == [(1, "first; one"), (2, db.dialect)]

    # a failing migration leaves nothing behind and is retried next time
    (src / "0003_broken.sql").write_text(
        "INSERT INTO items (label) VALUES ('x'); INSERT INTO nowhere VALUES (1);"
    )
    with pytest.raises(Exception):  # noqa: B017 (the engines raise their own errors)
        await migrate(db, src)
    assert await db.fetchval("SELECT COUNT(*) FROM items") == 2
    assert await schema_version(db) == 2
    (src / "0003_broken.sql").write_text("INSERT INTO items (label) VALUES ('x');")
    assert await migrate(db, src) == ["0003_broken"]

    # a recorded version whose file was renamed is an error
    (src / "0003_broken.sql").rename(src / "0003_renamed.sql")
    with pytest.raises(MigrationError, match="recorded"):
        await migrate(db, src)


async def test_concurrent_migrations_postgres() -> None:
    async with temp_pg_database() as url:
        dbs = [await open_database(url) for _ in range(3)]
        try:
            results = await asyncio.gather(*(migrate(d) for d in dbs))
            applied = [name for r in results for name in r]
            assert sorted(applied) == sorted(set(applied))
            assert "0001_initial" in applied
        finally:
            for d in dbs:
                await d.close()
