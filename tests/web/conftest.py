"""Browser-client tests: the modes of tests/e2e (embedded and cluster), and a
server with the HTTP listener (WebSocket and BOSH) on a free loopback port."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from ..conftest import add_user
from ..e2e import conftest as e2e_conftest


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """The same ``mode`` parametrization as tests/e2e (XMPPD_TEST_MODES)."""
    e2e_conftest.pytest_generate_tests(metafunc)


@pytest.fixture
async def server(server_factory: Callable[..., Awaitable[Any]]) -> AsyncIterator[Any]:
    """Overrides tests/conftest.py's ``server`` (so its ``connect`` uses this
    one): a dedicated server, embedded or cluster, with HTTP on 127.0.0.1,
    where plain HTTP from loopback counts as secure (PLAIN/SCRAM allowed)."""
    srv = await server_factory(http_host="127.0.0.1", http_port=0, http_secure="loopback")
    for name in ("alice", "bob"):
        await add_user(srv, name)
    yield srv
