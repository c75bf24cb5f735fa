"""Bearer tokens and scopes: 401 without or with an unknown token, 403 without
the operation's scope, and authentication before anything reads the request."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from fastapi.params import Security
from fastapi.routing import APIRoute

from services.admin.auth import SCOPES, TokenError
from services.app.embedded import EmbeddedServer

from ..conftest import add_user
from .conftest import ADMIN, READ, TOKENS, WRITE, api_url, bearer, error_code

# one server for the module (reset before each test), except where a test makes its own
pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest.fixture
def api(shared_api: httpx.AsyncClient) -> httpx.AsyncClient:
    return shared_api


@pytest.fixture
def anon(shared_anon: httpx.AsyncClient) -> httpx.AsyncClient:
    return shared_anon


@pytest.fixture
def server(shared_server: EmbeddedServer) -> EmbeddedServer:
    return shared_server


@pytest.mark.asyncio(loop_scope="function")
async def test_bad_token_setting_stops_the_start(server_factory: Any) -> None:
    with pytest.raises(TokenError):
        await server_factory(admin_port=0, admin_tokens=["t:superuser"])


@pytest.mark.asyncio(loop_scope="function")
async def test_api_off_by_default(server_factory: Any) -> None:
    srv = await server_factory()
    assert srv.admin_port == -1 and srv.admin_api is None


# ---------------------------------------------------------------- over HTTP


async def test_no_token_is_401(anon: httpx.AsyncClient) -> None:
    r = await anon.get("/users")
    assert r.status_code == 401
    assert error_code(r) == "unauthorized"
    assert r.headers["www-authenticate"].startswith("Bearer")


async def test_unknown_or_malformed_token_is_401(anon: httpx.AsyncClient) -> None:
    for header in ("Bearer nope", "Bearer", "Basic YWRtaW46YWRtaW4=", f"Token {ADMIN}", ADMIN):
        r = await anon.get("/users", headers={"Authorization": header})
        assert r.status_code == 401, header
        assert error_code(r) == "unauthorized"
        assert r.headers["www-authenticate"].startswith("Bearer")


async def test_scheme_is_case_insensitive(anon: httpx.AsyncClient) -> None:
    r = await anon.get("/stats", headers={"Authorization": f"bearer {READ}"})
    assert r.status_code == 200


async def test_scopes(anon: httpx.AsyncClient) -> None:
    new = {"jid": "dave@localhost", "password": "pw-dave"}
    msg = {"to": "alice@localhost", "body": "hi"}
    # read: GETs only
    assert (await anon.get("/users", headers=bearer(READ))).status_code == 200
    r = await anon.post("/users", json=new, headers=bearer(READ))
    assert r.status_code == 403 and error_code(r) == "forbidden"
    assert 'error="insufficient_scope"' in r.headers["www-authenticate"]
    assert 'scope="write"' in r.headers["www-authenticate"]
    # write: changes, but not acting as another JID
    assert (await anon.post("/users", json=new, headers=bearer(WRITE))).status_code == 201
    r = await anon.post("/messages", json=msg, headers=bearer(WRITE))
    assert r.status_code == 403 and error_code(r) == "forbidden"
    # admin: everything
    assert (await anon.post("/messages", json=msg, headers=bearer(ADMIN))).status_code == 202
    assert (await anon.delete("/users/dave@localhost", headers=bearer(ADMIN))).status_code == 200


async def test_authentication_comes_before_reading_the_request(anon: httpx.AsyncClient) -> None:
    bad_json = {"content": b"{not json", "headers": {"Content-Type": "application/json"}}
    r = await anon.post("/users", **bad_json)  # type: ignore[arg-type]
    assert r.status_code == 401
    r = await anon.post(
        "/users", content=b"{not json", headers={"Content-Type": "application/json", **bearer(READ)}
    )
    assert r.status_code == 403
    r = await anon.get("/users/not a jid/vcard")
    assert r.status_code == 401
    r = await anon.get("/no/such/path")
    assert r.status_code == 401


async def test_openapi_and_docs_are_public(anon: httpx.AsyncClient) -> None:
    r = await anon.get("/openapi.json")
    assert r.status_code == 200
    doc = r.json()
    assert doc["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "An admin token from the admin_tokens setting",
    }
    for path, ops in doc["paths"].items():
        assert path.startswith("/api/v1/")
        for method, op in ops.items():
            [req] = op["security"]
            assert list(req) == ["bearerAuth"] and len(req["bearerAuth"]) == 1, (method, path)
            assert req["bearerAuth"][0] in ("read", "write", "admin")
            if method == "get":
                assert req["bearerAuth"] == ["read"], path
            assert {"401", "403"} <= set(op["responses"]), (method, path)
            for status, resp in op["responses"].items():
                if status >= "400":
                    ref = resp["content"]["application/json"]["schema"]["$ref"]
                    assert ref.endswith("/ErrorBody"), (method, path, status)
    r = await anon.get("/docs")
    assert r.status_code == 200 and "swagger" in r.text.lower()


async def test_every_operation_refuses_without_a_token(
    server: EmbeddedServer, anon: httpx.AsyncClient
) -> None:
    doc = (await anon.get("/openapi.json")).json()
    n = 0
    for path, ops in doc["paths"].items():
        url = re.sub(r"\{[^}]+\}", "alice@localhost", path)
        for method in ops:
            for headers in ({}, bearer("wrong")):
                r = await anon.request(
                    method, f"http://127.0.0.1:{server.admin_port}{url}", headers=headers
                )
                assert r.status_code == 401, (method, url, r.text)
                assert error_code(r) == "unauthorized"
                n += 1
    assert n >= 40


def _declared_scope(route: APIRoute) -> str:
    """The scope a route declares itself: its one ``Security(..., scopes=[...])``."""
    declared = [s for d in route.dependencies if isinstance(d, Security) for s in d.scopes]
    assert len(declared) == 1, f"{sorted(route.methods)} {route.path} declares scopes {declared}"
    assert declared[0] in SCOPES, (route.path, declared)
    return declared[0]


@pytest.mark.asyncio(loop_scope="function")
async def test_every_route_with_every_scope(
    server_factory: Callable[..., Awaitable[EmbeddedServer]],
) -> None:
    """Generated from the app's own routes, so a new route is covered as it lands:
    no token is 401; a token with only one scope is 403 unless that scope is the
    route's declared one or admin (which implies the others); otherwise the
    operation runs and answers whatever it answers, but never 401/403."""
    only = {scope: f"only-{scope}-token-0123456789" for scope in SCOPES}
    server = await server_factory(
        admin_port=0, admin_tokens=[f"{t}:{scope}" for scope, t in only.items()]
    )
    for name in ("alice", "bob"):
        await add_user(server, name)
    assert server.admin_api is not None
    routes = [r for r in server.admin_api.app.routes if isinstance(r, APIRoute)]
    seen: set[str] = set()
    base = f"http://127.0.0.1:{server.admin_port}"
    async with httpx.AsyncClient(base_url=base, timeout=30) as c:
        for route in routes:
            required = _declared_scope(route)
            seen.add(required)
            url = re.sub(r"\{[^}]+\}", "alice@localhost", route.path)
            for method in sorted(route.methods):
                where = f"{method} {route.path}"
                r = await c.request(method, url)
                assert r.status_code == 401, (where, "no token", r.text)
                for scope, token in only.items():
                    r = await c.request(method, url, headers=bearer(token))
                    # the documented rule, not the code's: admin implies the others
                    if scope in (required, "admin"):
                        assert r.status_code not in (401, 403), (where, scope, r.text)
                    else:
                        assert r.status_code == 403, (where, scope, r.text)
                        assert error_code(r) == "forbidden"
                        assert f'scope="{required}"' in r.headers["www-authenticate"]
    # the walk saw the routes and each scope at least once
    assert len(routes) >= 20 and seen == set(SCOPES), (len(routes), seen)


async def test_unknown_path_and_method(api: httpx.AsyncClient) -> None:
    r = await api.get("/no/such/path")
    assert r.status_code == 404 and error_code(r) == "not-found"
    r = await api.patch("/users")
    assert r.status_code == 405 and error_code(r) == "method-not-allowed"
    assert set(r.headers["allow"].split(", ")) == {"GET", "POST"}


@pytest.mark.asyncio(loop_scope="function")
async def test_stopping_the_server_stops_the_api(
    server_factory: Callable[..., Awaitable[EmbeddedServer]],
) -> None:
    server = await server_factory(admin_port=0, admin_tokens=TOKENS)
    port = server.admin_port
    async with httpx.AsyncClient(base_url=api_url(server), headers=bearer(READ)) as c:
        assert (await c.get("/stats")).status_code == 200
    await server.stop()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}/api/v1") as c:
        with pytest.raises(httpx.ConnectError):
            await c.get("/stats")
