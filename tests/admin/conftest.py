"""A real embedded server with the REST admin API on a free port, and HTTP
clients for it (httpx over real sockets).

The ``server`` fixture here replaces the one of ``tests/conftest.py``, so the
``connect`` fixture's slixmpp clients log in to the same server the API runs.
Modules that only speak HTTP share one server per module instead
(``shared_server``, ``shared_api``: run them with ``loop_scope="module"``),
reset to the same accounts before each test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
import pytest_asyncio

from services.admin.jobs import JobManager
from services.app.embedded import EmbeddedServer

from ..conftest import add_user, make_settings

ADMIN = "admin-token-0123456789"
READ = "read-token-0123456789"
WRITE = "write-token-0123456789"
TOKENS = [f"{ADMIN}:admin", f"{READ}:read", f"{WRITE}:read,write"]
USERS = ("alice", "bob", "carol")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def api_url(srv: EmbeddedServer) -> str:
    return f"http://127.0.0.1:{srv.admin_port}/api/v1"


@pytest.fixture
async def server(server_factory: Callable[..., Awaitable[EmbeddedServer]]) -> EmbeddedServer:
    srv = await server_factory(admin_port=0, admin_tokens=TOKENS)
    assert srv.admin_port > 0
    for name in USERS:
        await add_user(srv, name)
    return srv


@pytest.fixture
async def api(server: EmbeddedServer) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client with the admin token."""
    async with httpx.AsyncClient(base_url=api_url(server), headers=bearer(ADMIN), timeout=10) as c:
        yield c


@pytest.fixture
async def anon(server: EmbeddedServer) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client without a token."""
    async with httpx.AsyncClient(base_url=api_url(server), timeout=10) as c:
        yield c


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[EmbeddedServer]:
    tmp = tmp_path_factory.mktemp("admin-api")
    srv = EmbeddedServer(make_settings(tmp, admin_port=0, admin_tokens=TOKENS))
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


async def reset(srv: EmbeddedServer) -> None:
    """Only the accounts of USERS, without data; no jobs."""
    assert srv.store is not None and srv.admin is not None
    for host in srv.settings.hosts:
        for a in await srv.store.list_accounts(host, limit=1_000_000):
            await srv.store.delete_account(host, a.username)
    for name in USERS:
        await add_user(srv, name)
    await srv.admin.jobs.close()
    srv.admin.jobs = JobManager()


@pytest_asyncio.fixture(loop_scope="module")
async def shared_api(shared_server: EmbeddedServer) -> AsyncIterator[httpx.AsyncClient]:
    await reset(shared_server)
    url = api_url(shared_server)
    async with httpx.AsyncClient(base_url=url, headers=bearer(ADMIN), timeout=10) as c:
        yield c


@pytest_asyncio.fixture(loop_scope="module")
async def shared_anon(shared_server: EmbeddedServer) -> AsyncIterator[httpx.AsyncClient]:
    await reset(shared_server)
    async with httpx.AsyncClient(base_url=api_url(shared_server), timeout=10) as c:
        yield c


def error_code(r: httpx.Response) -> str:
    body = r.json()
    assert set(body) == {"error"}, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    code: str = body["error"]["code"]
    return code
