"""A small database abstraction: one typed API over SQLite and PostgreSQL.

SQL is written once, with asyncpg-style ``$1, $2`` placeholders. The SQLite
engine rewrites them to SQLite's numbered ``?1, ?2`` form (so a placeholder may
be reused or appear out of order), caching each rewrite.

Both engines return rows as plain tuples. Values come back as the driver gives
them: in particular SQLite returns BOOLEAN columns as ``0``/``1``, so callers
convert with ``bool()``.

Constraint violations (unique, foreign key, not null, check) are raised as
:class:`IntegrityError` by both engines, with the driver's exception chained.

Usage::

    db = await open_database("sqlite:///var/lib/xmppd/xmppd.db")
    n = await db.execute("UPDATE t SET a = $1 WHERE b = $2", 1, "x")
    async with db.transaction() as tx:
        await tx.execute(...)
        row = await tx.fetchrow(...)
    await db.close()

Inside ``async with db.transaction() as tx`` use only ``tx``: on SQLite, the
database object itself waits for the transaction to end, so calling it from
inside the block deadlocks.

URLs accepted by :func:`open_database`:

* ``sqlite:///abs/path/to/file.db`` (the path is everything after ``sqlite://``,
  so this one is ``/abs/path/to/file.db``; ``sqlite://rel/file.db`` is relative),
* ``sqlite://:memory:`` (a private in-memory database),
* ``postgresql://user@host:port/dbname`` (or ``postgres://``); the optional
  query parameters ``min_size`` and ``max_size`` size the connection pool and
  are not passed on to the server.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import aiosqlite

__all__ = [
    "SQL_OPS",
    "Connection",
    "Database",
    "DatabaseError",
    "IntegrityError",
    "PostgresDatabase",
    "SqliteDatabase",
    "open_database",
    "sql_op",
    "sqlite_placeholders",
    "timed_database",
]

Row = tuple[Any, ...]
T = TypeVar("T")

#: milliseconds SQLite waits on a lock held by another connection before failing
SQLITE_BUSY_TIMEOUT_MS = 5000


class DatabaseError(Exception):
    """Base class of the errors this module raises itself."""


class IntegrityError(DatabaseError):
    """A constraint was violated (unique, foreign key, not null, check)."""


class Connection(Protocol):
    """What can run SQL: the database itself or an open transaction."""

    async def execute(self, sql: str, *args: Any) -> int:
        """Run a statement; return the number of rows it changed (0 for DDL)."""
        ...

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        """Run a query; return all its rows."""
        ...

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        """Run a query; return its first row, or None."""
        ...

    async def fetchval(self, sql: str, *args: Any) -> Any:
        """Run a query; return the first column of its first row, or None."""
        ...


class Database(Connection, Protocol):
    """A database: statements run in their own transaction unless inside ``transaction()``."""

    #: "sqlite" or "postgres"
    dialect: str

    def transaction(self) -> AbstractAsyncContextManager[Connection]:
        """Open a transaction, committed on normal exit and rolled back on an exception."""
        ...

    async def close(self) -> None:
        """Close every connection."""
        ...


# --------------------------------------------------------------------------- SQLite


@functools.lru_cache(maxsize=2048)
def sqlite_placeholders(sql: str) -> str:
    """Rewrite ``$N`` placeholders to SQLite's ``?N``, leaving literals and comments alone."""
    out: list[str] = []
    i, n = 0, len(sql)
    while i < n:
        c = sql[i]
        if c in "'\"`":
            end = sql.find(c, i + 1)
            while end != -1 and end + 1 < n and sql[end + 1] == c:  # doubled quote
                end = sql.find(c, end + 2)
            end = n if end == -1 else end + 1
            out.append(sql[i:end])
            i = end
        elif c == "-" and sql.startswith("--", i):
            end = sql.find("\n", i)
            end = n if end == -1 else end
            out.append(sql[i:end])
            i = end
        elif c == "/" and sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            end = n if end == -1 else end + 2
            out.append(sql[i:end])
            i = end
        elif c == "$" and i + 1 < n and sql[i + 1].isdigit():
            j = i + 1
            while j < n and sql[j].isdigit():
                j += 1
            out.append("?" + sql[i + 1 : j])
            i = j
        else:
            out.append(c)
            i += 1
    return "".join(out)


async def _sqlite_call(awaitable: Awaitable[T]) -> T:
    try:
        return await awaitable
    except sqlite3.IntegrityError as e:
        raise IntegrityError(str(e)) from e


async def _simple(conn: aiosqlite.Connection, sql: str) -> None:
    async with conn.execute(sql):
        pass


class _SqliteExecutor:
    """Runs statements on the connection, without any locking."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    async def _run_execute(self, sql: str, args: tuple[Any, ...]) -> int:
        async with self._conn.execute(sqlite_placeholders(sql), args) as cur:
            rowcount = cur.rowcount
        return max(int(rowcount), 0)

    async def _run_fetch(self, sql: str, args: tuple[Any, ...]) -> list[Row]:
        rows = await self._conn.execute_fetchall(sqlite_placeholders(sql), args)
        return [tuple(r) for r in rows]


class _SqliteTransaction(_SqliteExecutor):
    """The connection-like object yielded by :meth:`SqliteDatabase.transaction`."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        super().__init__(conn)
        self.active = True

    def _check(self) -> None:
        if not self.active:
            raise DatabaseError("transaction is finished")

    async def execute(self, sql: str, *args: Any) -> int:
        self._check()
        return await _sqlite_call(self._run_execute(sql, args))

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        self._check()
        return await _sqlite_call(self._run_fetch(sql, args))

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        rows = await self.fetch(sql, *args)
        return rows[0] if rows else None

    async def fetchval(self, sql: str, *args: Any) -> Any:
        row = await self.fetchrow(sql, *args)
        return row[0] if row else None


class SqliteDatabase(_SqliteExecutor):
    """One aiosqlite connection in autocommit mode; transactions are serialized by a lock.

    Every statement outside a transaction also takes the lock, so it never runs
    inside (and never sees the uncommitted state of) another task's transaction.
    """

    dialect: str = "sqlite"

    def __init__(self, conn: aiosqlite.Connection) -> None:
        super().__init__(conn)
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: str) -> SqliteDatabase:
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        pending = aiosqlite.connect(
            path, isolation_level=None, timeout=SQLITE_BUSY_TIMEOUT_MS / 1000
        )
        try:
            conn = await pending
        except BaseException:
            # aiosqlite stops its worker thread without waiting for it; the
            # thread then answers on this loop, which a CLI closes right away
            # (a traceback on stderr): let it finish while the loop runs
            thread = getattr(pending, "_thread", None)
            if thread is not None and thread.is_alive():
                await asyncio.to_thread(thread.join, 5)
            raise
        try:
            for pragma in (
                "journal_mode=WAL",
                "foreign_keys=ON",
                "synchronous=NORMAL",
                f"busy_timeout={int(SQLITE_BUSY_TIMEOUT_MS)}",
            ):
                await _simple(conn, f"PRAGMA {pragma}")
        except BaseException:
            await conn.close()
            raise
        return cls(conn)

    async def _locked(self, fn: Callable[[], Awaitable[T]]) -> T:
        async with self._lock:
            return await _sqlite_call(fn())

    async def execute(self, sql: str, *args: Any) -> int:
        return await self._locked(lambda: self._run_execute(sql, args))

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        return await self._locked(lambda: self._run_fetch(sql, args))

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        rows = await self.fetch(sql, *args)
        return rows[0] if rows else None

    async def fetchval(self, sql: str, *args: Any) -> Any:
        row = await self.fetchrow(sql, *args)
        return row[0] if row else None

    async def _rollback(self) -> None:
        try:
            await _simple(self._conn, "ROLLBACK")
        except sqlite3.OperationalError:
            pass  # no transaction is active (SQLite may already have rolled back)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        async with self._lock:
            tx = _SqliteTransaction(self._conn)
            try:
                # IMMEDIATE takes the write lock up front, so a read-then-write
                # transaction cannot fail half-way on another process's writer.
                await _simple(self._conn, "BEGIN IMMEDIATE")
                yield tx
            except BaseException:
                tx.active = False
                await self._rollback()
                raise
            tx.active = False
            try:
                await _sqlite_call(_simple(self._conn, "COMMIT"))
            except BaseException:
                await self._rollback()
                raise

    async def close(self) -> None:
        async with self._lock:
            await self._conn.close()


# ----------------------------------------------------------------------- PostgreSQL


def _asyncpg() -> Any:
    """asyncpg, imported on first use: it is only needed (and installed) for PostgreSQL."""
    import asyncpg  # type: ignore[import-untyped]

    return asyncpg


def _rowcount(status: Any) -> int:
    """The row count of an asyncpg status string such as ``UPDATE 3`` or ``INSERT 0 1``."""
    if not isinstance(status, str):
        return 0
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0


class _PgExecutor:
    """Runs statements on an asyncpg pool or connection (they share these methods)."""

    def __init__(self, target: Any) -> None:
        self._target = target

    async def _call(self, method: str, sql: str, args: tuple[Any, ...]) -> Any:
        asyncpg = _asyncpg()
        try:
            return await getattr(self._target, method)(sql, *args)
        except asyncpg.exceptions.IntegrityConstraintViolationError as e:
            raise IntegrityError(str(e)) from e

    async def execute(self, sql: str, *args: Any) -> int:
        return _rowcount(await self._call("execute", sql, args))

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        records = await self._call("fetch", sql, args)
        return [tuple(r) for r in records]

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        record = await self._call("fetchrow", sql, args)
        return None if record is None else tuple(record)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        return await self._call("fetchval", sql, args)


async def _no_session_state(conn: Any) -> None:
    """Pool release without asyncpg's reset query (RESET ALL, UNLISTEN *,
    advisory unlocks, CLOSE ALL): xmppd sets no session state, so it was a
    wasted round trip per storage operation, 13 % of the storage process's
    time in the login benchmark. asyncpg still rolls back a transaction left
    open before calling this."""


class PostgresDatabase(_PgExecutor):
    """An asyncpg connection pool."""

    dialect: str = "postgres"

    def __init__(self, pool: Any) -> None:
        super().__init__(pool)
        self._pool = pool

    @classmethod
    async def open(cls, dsn: str, min_size: int = 1, max_size: int = 10) -> PostgresDatabase:
        pool = await _asyncpg().create_pool(
            dsn, min_size=min_size, max_size=max_size, reset=_no_session_state
        )
        return cls(pool)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        async with self._pool.acquire() as conn, conn.transaction():
            yield _PgExecutor(conn)

    async def close(self) -> None:
        await self._pool.close()


# -------------------------------------------------------------------------- factory


async def open_database(url: str) -> Database:
    """Open the database named by ``url`` (see the module docstring for the forms)."""
    if url.startswith("sqlite://"):
        path = url[len("sqlite://") :]
        if path in (":memory:", "/:memory:"):
            path = ":memory:"
        if not path:
            raise ValueError(f"no path in database URL {url!r}")
        return await SqliteDatabase.open(path)
    if url.startswith(("postgresql://", "postgres://")):
        parts = urlsplit(url)
        query = parse_qsl(parts.query, keep_blank_values=True)
        sizes = {k: int(v) for k, v in query if k in ("min_size", "max_size")}
        rest = [(k, v) for k, v in query if k not in ("min_size", "max_size")]
        dsn = urlunsplit(parts._replace(query=urlencode(rest)))
        return await PostgresDatabase.open(
            dsn, min_size=sizes.get("min_size", 1), max_size=sizes.get("max_size", 10)
        )
    raise ValueError(f"unsupported database URL {url!r} (want sqlite:// or postgresql://)")


# --------------------------------------------------------------------------- timing

#: the ``op`` label values of the latency histogram: the statement's SQL verb
SQL_OPS = ("select", "insert", "update", "delete", "other")
_SQL_OPS = frozenset(SQL_OPS)


class Observer(Protocol):
    """Where a timing goes (a prometheus-client histogram child)."""

    def observe(self, amount: float) -> None: ...


@functools.lru_cache(maxsize=2048)
def sql_op(sql: str) -> str:
    """The statement's verb, one of :data:`SQL_OPS` (the SQL strings are constants: cached)."""
    verb = sql.lstrip()[:6].lower()  # the four verbs are all six letters long
    return verb if verb in _SQL_OPS else "other"


class _TimedConnection:
    """Times every statement of a connection into ``timers[sql_op(sql)]``."""

    def __init__(self, conn: Connection, timers: Mapping[str, Observer]) -> None:
        self._conn = conn
        self._timers = timers

    async def execute(self, sql: str, *args: Any) -> int:
        t = time.perf_counter()
        try:
            return await self._conn.execute(sql, *args)
        finally:
            self._timers[sql_op(sql)].observe(time.perf_counter() - t)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        t = time.perf_counter()
        try:
            return await self._conn.fetch(sql, *args)
        finally:
            self._timers[sql_op(sql)].observe(time.perf_counter() - t)

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        t = time.perf_counter()
        try:
            return await self._conn.fetchrow(sql, *args)
        finally:
            self._timers[sql_op(sql)].observe(time.perf_counter() - t)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        t = time.perf_counter()
        try:
            return await self._conn.fetchval(sql, *args)
        finally:
            self._timers[sql_op(sql)].observe(time.perf_counter() - t)


class _TimedDatabase(_TimedConnection):
    def __init__(self, db: Database, timers: Mapping[str, Observer]) -> None:
        super().__init__(db, timers)
        self._db = db
        self.dialect = db.dialect

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        async with self._db.transaction() as tx:
            yield _TimedConnection(tx, self._timers)

    async def close(self) -> None:
        await self._db.close()


def timed_database(db: Database, timers: Mapping[str, Observer]) -> Database:
    """``db`` with every statement's latency observed in ``timers``, keyed by :data:`SQL_OPS`
    (the time includes waiting for the connection or SQLite's lock: what callers wait)."""
    return _TimedDatabase(db, timers)
