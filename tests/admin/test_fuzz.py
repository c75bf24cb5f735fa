"""Schemathesis against the OpenAPI document a running server serves.

The server runs in its own thread and event loop (schemathesis' calls are
synchronous) and is called over real sockets. The schema is the one
``create_app`` generates, loaded at import (schemathesis' lazy fixture loader
does not work with this pytest); a test checks the running server serves
exactly that document. Every built-in check runs (``--checks all``),
except that ``positive_data_acceptance`` is replaced by a sharper one: JSON
Schema cannot say which strings are valid JIDs (PRECIS) or which domains are
served, so a schema-valid request may still be refused on its meaning, with
422 and one of the command layer's codes; but never by the schema validation
itself (``invalid-request``, ``bad-json``) and never with a 5xx.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import positive_data_acceptance

from services.admin.api import create_app
from services.admin.commands import AdminContext
from services.app.embedded import EmbeddedServer

from ..conftest import add_user, make_settings
from .conftest import ADMIN, TOKENS, USERS, api_url


class LiveServer:
    """An embedded server with the admin API, on a thread of its own."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.server: EmbeddedServer | None = None
        self.error: BaseException | None = None
        self._stop: asyncio.Event | None = None
        self.thread = threading.Thread(target=self._run, name="admin-api-fuzz", daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._main())
        except BaseException as exc:  # report to the test thread
            self.error = exc
            self.ready.set()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        srv = EmbeddedServer(make_settings(self.tmp, admin_port=0, admin_tokens=TOKENS))
        await srv.start()
        try:
            for name in USERS:
                await add_user(srv, name)
            self.server = srv
            self.ready.set()
            await self._stop.wait()
        finally:
            await srv.stop()

    def start(self) -> EmbeddedServer:
        self.thread.start()
        assert self.ready.wait(30), "the server did not start"
        if self.error is not None:
            raise self.error
        assert self.server is not None
        return self.server

    def stop(self) -> None:
        if self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(30)
        self.loop.close()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    server = LiveServer(tmp_path_factory.mktemp("fuzz"))
    try:
        yield server.start()
    finally:
        server.stop()


def _no_context() -> AdminContext:
    raise AssertionError("only the OpenAPI document is used")


OPENAPI = create_app(_no_context, []).openapi()
schema = schemathesis.openapi.from_dict(
    OPENAPI,
    # the token as schemathesis' own auth, so its auth checks can take it away
    config=SchemathesisConfig.from_dict({"auth": {"openapi": {"bearerAuth": {"bearer": ADMIN}}}}),
)


def test_served_schema_is_the_fuzzed_one(live: EmbeddedServer) -> None:
    r = httpx.get(f"{api_url(live)}/openapi.json", timeout=10)
    assert r.status_code == 200
    assert r.json() == json.loads(json.dumps(OPENAPI))


#: codes that mean "the request does not match the schema"
SCHEMA_CODES = {"invalid-request", "bad-json"}


def schema_valid_data_is_not_refused_by_the_schema(
    ctx: Any, response: Any, case: Any
) -> bool | None:
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return None
    status = response.status_code
    assert status < 500, f"schema-valid request answered {status}"
    if status in (400, 422):
        code = response.json()["error"]["code"]
        assert code not in SCHEMA_CODES, f"schema-valid request refused: {response.text}"
    return None


@schema.parametrize()
@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_api_conforms_to_its_schema(case: Any, live: EmbeddedServer) -> None:
    case.call_and_validate(
        base_url=f"http://127.0.0.1:{live.admin_port}",
        excluded_checks=[positive_data_acceptance],
        additional_checks=[schema_valid_data_is_not_refused_by_the_schema],
        timeout=10,
    )
