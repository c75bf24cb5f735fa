"""Tests of services.platform, and database helpers shared with the storage tests.

The PostgreSQL tests use the local server at 127.0.0.1:5432 as user postgres
(trust auth); set ``XMPPD_TEST_PG_DSN`` to use another (a DSN of a database the
user may connect to and create databases from). Each test gets a new database
``xmppd_test_<hex>``, dropped afterwards. When no server answers, those tests
are skipped, unless ``XMPPD_REQUIRE_POSTGRES=1`` makes that a failure.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

ADMIN_DSNS = (
    [os.environ["XMPPD_TEST_PG_DSN"]]
    if os.environ.get("XMPPD_TEST_PG_DSN")
    else [
        "postgresql://postgres@127.0.0.1:5432/postgres",
        "postgresql://postgres@127.0.0.1:5432/test",
    ]
)

_admin_dsn: str | None = None
_admin_error: str | None = None


async def _connect_admin() -> Any:
    """A connection to an existing database of the test server; skip the test if none."""
    global _admin_dsn, _admin_error
    import asyncpg  # type: ignore[import-untyped]

    if _admin_error is None:
        for dsn in [_admin_dsn] if _admin_dsn else ADMIN_DSNS:
            try:
                conn = await asyncpg.connect(dsn, timeout=5)
            except (OSError, asyncpg.PostgresError) as e:
                _admin_error = f"{dsn}: {e!r}"
                continue
            _admin_dsn, _admin_error = dsn, None
            return conn
    message = f"no PostgreSQL server for the tests ({_admin_error})"
    if os.environ.get("XMPPD_REQUIRE_POSTGRES") == "1":
        pytest.fail(message)
    pytest.skip(message)


@asynccontextmanager
async def temp_pg_database() -> AsyncIterator[str]:
    """Create a uniquely named PostgreSQL database; yield its URL; drop it."""
    admin = await _connect_admin()
    name = f"xmppd_test_{secrets.token_hex(8)}"
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    assert _admin_dsn is not None
    url = urlunsplit(urlsplit(_admin_dsn)._replace(path=f"/{name}"))
    try:
        yield url
    finally:
        admin = await _connect_admin()
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@asynccontextmanager
async def temp_database_url(engine: str, tmp_path: Any) -> AsyncIterator[str]:
    """The URL of a new, empty database of the given engine ("sqlite" or "postgres")."""
    if engine == "sqlite":
        yield f"sqlite://{tmp_path}/xmppd.db"
    else:
        async with temp_pg_database() as url:
            yield url
