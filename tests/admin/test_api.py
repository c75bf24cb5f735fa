"""The REST operations over HTTP against a running server (no XMPP clients):
users, pagination, rosters, vCards, messages, jobs, statistics, hosts, and the
error format for each kind of failure."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest

from services.admin import control
from services.app.embedded import EmbeddedServer

from .conftest import ADMIN, TOKENS, USERS, bearer, error_code

# one server for the module (reset before each test), except where a test makes its own
pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest.fixture
def api(shared_api: httpx.AsyncClient) -> httpx.AsyncClient:
    return shared_api


@pytest.fixture
def server(shared_server: EmbeddedServer) -> EmbeddedServer:
    return shared_server


# ---------------------------------------------------------------- users


async def test_create_get_delete_user(api: httpx.AsyncClient) -> None:
    r = await api.post("/users", json={"jid": "Dave@LocalHost", "password": "pw"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["jid"] == "dave@localhost"  # prepared (PRECIS)
    assert body["username"] == "dave" and body["host"] == "localhost"
    assert body["disabled"] is False and body["online"] is False and body["sessions"] == 0
    assert body["last_activity"] is None and body["created_at"] > 0
    r = await api.post("/users", json={"jid": "dave@localhost", "password": "other"})
    assert r.status_code == 409 and error_code(r) == "exists"
    r = await api.get("/users/dave@localhost")
    assert r.status_code == 200 and r.json()["jid"] == "dave@localhost"
    r = await api.get("/users/dave")  # a bare username means the first host
    assert r.status_code == 200 and r.json()["jid"] == "dave@localhost"
    r = await api.delete("/users/dave@localhost")
    assert r.status_code == 200 and r.json() == {"jid": "dave@localhost", "disconnected": 0}
    r = await api.get("/users/dave@localhost")
    assert r.status_code == 404 and error_code(r) == "not-found"
    r = await api.delete("/users/dave@localhost")
    assert r.status_code == 404 and error_code(r) == "not-found"


CREATE_REFUSALS: list[tuple[object, str]] = [
    ({"jid": "a b@localhost", "password": "pw"}, "bad-jid"),
    ({"jid": "@localhost", "password": "pw"}, "bad-jid"),
    ({"jid": "x@localhost/res", "password": "pw"}, "bad-jid"),
    ({"jid": "x@elsewhere.example", "password": "pw"}, "unknown-host"),
    ({"jid": "x@localhost", "password": "\u0007"}, "bad-password"),
    ({"jid": "x@localhost", "password": ""}, "invalid-request"),
    ({"jid": "x@localhost"}, "invalid-request"),
    ({"jid": "x@localhost", "password": 1234}, "invalid-request"),
    ({"jid": "x@localhost", "password": "pw", "admin": True}, "invalid-request"),
    ([], "invalid-request"),
]


async def test_create_user_refusals(api: httpx.AsyncClient) -> None:
    for body, code in CREATE_REFUSALS:
        r = await api.post("/users", json=body)
        assert r.status_code == 422, (body, r.text)
        assert error_code(r) == code, (body, r.text)


async def test_validation_errors_say_where(api: httpx.AsyncClient) -> None:
    r = await api.post("/users", json={"jid": 5, "password": "pw"})
    details = r.json()["error"]["details"]
    assert details == [
        {"loc": ["body", "jid"], "message": "Input should be a valid string", "type": "string_type"}
    ]
    r = await api.get("/users", params={"limit": "many"})
    assert r.status_code == 422 and error_code(r) == "invalid-request"
    assert r.json()["error"]["details"][0]["loc"] == ["query", "limit"]


async def test_malformed_json_is_400(api: httpx.AsyncClient) -> None:
    for content in (b"{not json", b'{"jid": "x@localhost",', b"\xff\xfe"):
        r = await api.post("/users", content=content, headers={"Content-Type": "application/json"})
        assert r.status_code == 400, (content, r.text)
        assert error_code(r) == "bad-json"


async def test_body_must_be_json(api: httpx.AsyncClient) -> None:
    r = await api.post(
        "/users", content=b"jid=x&password=y", headers={"Content-Type": "text/plain"}
    )
    assert r.status_code == 422 and error_code(r) == "invalid-request"


async def test_too_large_body_is_413(api: httpx.AsyncClient) -> None:
    r = await api.put("/users/alice@localhost/vcard", json={"vcard": "x" * (2 * 1024 * 1024)})
    assert r.status_code == 413 and error_code(r) == "body-too-large"

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: chunked
        yield b'{"vcard": "'
        for _ in range(40):
            yield b"x" * 65536
        yield b'"}'

    r = await api.put(
        "/users/alice@localhost/vcard",
        content=chunks(),
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 413 and error_code(r) == "body-too-large"


async def test_path_jid_not_served_or_malformed_is_404(api: httpx.AsyncClient) -> None:
    for jid in ("alice@elsewhere.example", "a b@localhost", "@localhost", "alice@localhost%2Fres"):
        r = await api.get(f"/users/{jid}")
        assert r.status_code == 404, (jid, r.text)
        assert error_code(r) == "not-found"


async def test_list_users_search_and_pages(api: httpx.AsyncClient) -> None:
    for i in range(12):
        r = await api.post("/users", json={"jid": f"user{i:02d}@localhost", "password": "pw"})
        assert r.status_code == 201
    r = await api.get("/users")
    body = r.json()
    assert body["total"] == 12 + len(USERS) and body["limit"] == 100 and body["offset"] == 0
    jids = [u["jid"] for u in body["users"]]
    assert jids == sorted(jids) and "alice@localhost" in jids
    # pages
    r = await api.get("/users", params={"search": "USER", "limit": 5, "offset": 10})
    body = r.json()
    assert body["total"] == 12 and body["limit"] == 5 and body["offset"] == 10
    assert [u["username"] for u in body["users"]] == ["user10", "user11"]
    r = await api.get("/users", params={"search": "user", "limit": 5, "offset": 100})
    assert r.json()["users"] == [] and r.json()["total"] == 12
    # search is a substring, with LIKE wildcards taken literally
    r = await api.get("/users", params={"search": "r0"})
    assert r.json()["total"] == 10
    r = await api.get("/users", params={"search": "%"})
    assert r.json()["total"] == 0
    # a domain not served lists nothing
    r = await api.get("/users", params={"host": "elsewhere.example"})
    assert r.json() == {"total": 0, "limit": 100, "offset": 0, "users": []}
    for bad in ({"limit": 0}, {"limit": 1001}, {"offset": -1}):
        r = await api.get("/users", params=bad)
        assert r.status_code == 422 and error_code(r) == "invalid-request"


@pytest.mark.asyncio(loop_scope="function")
async def test_pages_across_hosts(server_factory: Callable[..., Awaitable[EmbeddedServer]]) -> None:
    srv = await server_factory(hosts=["a.example", "b.example"], admin_port=0, admin_tokens=TOKENS)
    assert srv.store is not None
    for host, names in (("a.example", ["x1", "x2", "x3"]), ("b.example", ["y1", "y2"])):
        for n in names:
            await srv.store.create_account(host, n, [])
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{srv.admin_port}/api/v1", headers=bearer(ADMIN)
    ) as c:
        got = []
        for offset in range(0, 6, 2):
            body = (await c.get("/users", params={"limit": 2, "offset": offset})).json()
            assert body["total"] == 5
            got += [u["jid"] for u in body["users"]]
        assert got == [
            "x1@a.example",
            "x2@a.example",
            "x3@a.example",
            "y1@b.example",
            "y2@b.example",
        ]
        hosts = (await c.get("/hosts")).json()
        assert [(h["host"], h["registered_users"]) for h in hosts["hosts"]] == [
            ("a.example", 3),
            ("b.example", 2),
        ]
        page = (await c.get("/hosts", params={"limit": 1, "offset": 1})).json()
        assert page["total"] == 2 and [h["host"] for h in page["hosts"]] == ["b.example"]
        stats = (await c.get("/stats")).json()
        assert stats["registered_users"] == 5
        assert stats["registered_users_per_host"] == {"a.example": 3, "b.example": 2}


async def test_change_password_unknown_user(api: httpx.AsyncClient) -> None:
    r = await api.put("/users/nobody@localhost/password", json={"password": "pw"})
    assert r.status_code == 404 and error_code(r) == "not-found"
    r = await api.put("/users/alice@localhost/password", json={"password": "new-pw"})
    assert r.status_code == 200 and r.json() == {"jid": "alice@localhost"}


async def test_disable_enable_without_sessions(api: httpx.AsyncClient) -> None:
    r = await api.post("/users/bob@localhost/disable")
    assert r.json() == {"jid": "bob@localhost", "disabled": True, "disconnected": 0}
    assert (await api.get("/users/bob@localhost")).json()["disabled"] is True
    users = (await api.get("/users", params={"search": "bob"})).json()["users"]
    assert users[0]["disabled"] is True
    r = await api.post("/users/bob@localhost/enable")
    assert r.json() == {"jid": "bob@localhost", "disabled": False, "disconnected": 0}
    r = await api.post("/users/nobody@localhost/disable")
    assert r.status_code == 404


# ---------------------------------------------------------------- rosters


async def test_roster_add_get_remove(api: httpx.AsyncClient) -> None:
    r = await api.get("/users/alice@localhost/roster")
    assert r.json() == {
        "jid": "alice@localhost",
        "version": 0,
        "items": [],
        "total": 0,
        "limit": 100,
        "offset": 0,
    }
    item = {
        "jid": "Bob@LocalHost",
        "name": "Bob",
        "groups": ["Friends", "Work", "Friends"],
        "subscription": "both",
    }
    r = await api.post("/users/alice@localhost/roster", json=item)
    assert r.status_code == 201, r.text
    assert r.json() == {
        "jid": "alice@localhost",
        "version": 1,
        "item": {
            "jid": "bob@localhost",
            "name": "Bob",
            "subscription": "both",
            "ask": False,
            "pending_in": False,
            "approved": False,
            "groups": ["Friends", "Work"],
        },
    }
    await api.post("/users/alice@localhost/roster", json={"jid": "someone@remote.example"})
    r = await api.get("/users/alice@localhost/roster", params={"limit": 1})
    body = r.json()
    assert body["version"] == 2 and body["total"] == 2
    assert [i["jid"] for i in body["items"]] == ["bob@localhost"]
    # replace: name and groups change
    r = await api.post(
        "/users/alice@localhost/roster", json={"jid": "bob@localhost", "subscription": "to"}
    )
    assert r.json()["item"]["name"] is None and r.json()["item"]["groups"] == []
    r = await api.delete("/users/alice@localhost/roster/bob@localhost")
    assert r.json() == {"jid": "alice@localhost", "contact": "bob@localhost", "version": 4}
    r = await api.delete("/users/alice@localhost/roster/bob@localhost")
    assert r.status_code == 404 and error_code(r) == "not-found"
    r = await api.get("/users/alice@localhost/roster")
    assert [i["jid"] for i in r.json()["items"]] == ["someone@remote.example"]


ROSTER_REFUSALS: list[tuple[dict[str, object], str]] = [
    ({"jid": "alice@localhost"}, "bad-jid"),
    ({"jid": "bob@localhost/res"}, "bad-jid"),
    ({"jid": "not a jid"}, "bad-jid"),
    ({"jid": "bob@localhost", "subscription": "remove"}, "invalid-request"),
    ({"jid": "bob@localhost", "groups": [""]}, "invalid-request"),
    ({"jid": "bob@localhost", "name": "a\u0000b"}, "bad-text"),
    ({"jid": "bob@localhost", "groups": ["é" * 600]}, "too-large"),
]


async def test_roster_refusals(api: httpx.AsyncClient) -> None:
    for item, code in ROSTER_REFUSALS:
        r = await api.post("/users/alice@localhost/roster", json=item)
        assert r.status_code == 422, (item, r.text)
        assert error_code(r) == code, (item, r.text)


async def test_roster_of_unknown_user(api: httpx.AsyncClient) -> None:
    r = await api.get("/users/nobody@localhost/roster")
    assert r.status_code == 404
    r = await api.post("/users/nobody@localhost/roster", json={"jid": "bob@localhost"})
    assert r.status_code == 404


# ---------------------------------------------------------------- vCards


async def test_vcard_set_and_get(api: httpx.AsyncClient) -> None:
    r = await api.get("/users/alice@localhost/vcard")
    assert r.json() == {"jid": "alice@localhost", "vcard": None}
    vcard = "<?xml version='1.0'?><vCard xmlns='vcard-temp'><FN>Alice Ærø</FN><!-- c --></vCard>"
    r = await api.put("/users/alice@localhost/vcard", json={"vcard": vcard})
    assert r.status_code == 200, r.text
    stored = r.json()["vcard"]
    assert stored.startswith('<vCard xmlns="vcard-temp"><FN>Alice Ærø</FN>')
    r = await api.get("/users/alice@localhost/vcard")
    assert r.json()["vcard"] == stored


VCARD_REFUSALS: list[tuple[str, str]] = [
    ("<vCard xmlns='vcard-temp'>", "bad-xml"),
    ("not xml at all", "bad-xml"),
    ("<vCard/>", "not-vcard"),
    ("<x xmlns='vcard-temp'/>", "not-vcard"),
    (
        "<!DOCTYPE v [<!ENTITY e 'boom'>]><vCard xmlns='vcard-temp'><FN>&e;</FN></vCard>",
        "bad-xml",
    ),
    ("<vCard xmlns='vcard-temp'><FN>" + "é" * 40000 + "</FN></vCard>", "too-large"),
]


async def test_vcard_refusals(api: httpx.AsyncClient) -> None:
    for vcard, code in VCARD_REFUSALS:
        r = await api.put("/users/alice@localhost/vcard", json={"vcard": vcard})
        assert r.status_code == 422, (vcard[:80], r.text)
        assert error_code(r) == code, (vcard[:80], r.text)
    assert (await api.get("/users/alice@localhost/vcard")).json()["vcard"] is None


async def test_vcard_of_unknown_user(api: httpx.AsyncClient) -> None:
    r = await api.put(
        "/users/nobody@localhost/vcard", json={"vcard": "<vCard xmlns='vcard-temp'/>"}
    )
    assert r.status_code == 404 and error_code(r) == "not-found"


# ---------------------------------------------------------------- messages and jobs


MESSAGE_REFUSALS: list[tuple[dict[str, object], int, str]] = [
    ({"to": "nobody@localhost", "body": "x"}, 404, "not-found"),
    ({"to": "alice@localhost", "body": "a\u0001b"}, 422, "bad-text"),
    ({"to": "alice@localhost", "body": "x", "subject": "\ud800"}, 422, "invalid-request"),
    ({"to": "not a jid", "body": "x"}, 422, "bad-jid"),
    ({"to": "alice@localhost", "from": "@@", "body": "x"}, 422, "bad-jid"),
    ({"to": "alice@localhost", "body": "x", "type": "groupchat"}, 422, "invalid-request"),
    ({"to": "alice@localhost", "body": ""}, 422, "invalid-request"),
]


async def test_message_refusals(api: httpx.AsyncClient) -> None:
    for msg, status, code in MESSAGE_REFUSALS:
        # json.dumps escapes the lone surrogate, which httpx's encoder refuses
        r = await api.post(
            "/messages", content=json.dumps(msg), headers={"Content-Type": "application/json"}
        )
        assert r.status_code == status, (msg, r.text)
        assert error_code(r) == code, (msg, r.text)


async def test_message_to_a_remote_domain_from_a_remote_sender(api: httpx.AsyncClient) -> None:
    # no federation: the router cannot route it, nor bounce it to a remote sender
    r = await api.post(
        "/messages", json={"to": "x@remote.example", "from": "y@other.example", "body": "x"}
    )
    assert r.status_code in (202, 422), r.text
    if r.status_code == 422:
        assert error_code(r) == "undeliverable"


async def test_broadcast_with_nobody_online(api: httpx.AsyncClient) -> None:
    r = await api.post("/broadcasts", json={"body": "hello"})
    assert r.status_code == 202
    job = r.json()
    assert job["kind"] == "broadcast" and job["total"] == 0
    r = await api.get(f"/jobs/{job['id']}")
    assert r.status_code == 200 and r.json()["id"] == job["id"]
    r = await api.get("/jobs")
    assert r.json()["total"] == 1 and r.json()["jobs"][0]["id"] == job["id"]
    r = await api.post("/broadcasts", json={"body": "hello", "host": "elsewhere.example"})
    assert r.status_code == 422 and error_code(r) == "unknown-host"


async def test_unknown_job(api: httpx.AsyncClient) -> None:
    r = await api.get("/jobs/0123")
    assert r.status_code == 404 and error_code(r) == "not-found"
    r = await api.post("/jobs/0123/cancel")
    assert r.status_code == 404 and error_code(r) == "not-found"


# ---------------------------------------------------------------- statistics and hosts


async def test_stats_and_hosts(api: httpx.AsyncClient, server: EmbeddedServer) -> None:
    r = await api.get("/stats")
    s = r.json()
    assert s["registered_users"] == len(USERS)
    assert s["registered_users_per_host"] == {"localhost": len(USERS)}
    assert s["online_users"] == 0 and s["online_sessions"] == 0
    assert s["online_users_per_host"] == {"localhost": 0}
    assert server.edge is not None
    assert s["sessions_per_node"] == {server.edge.node_id: 0}
    assert s["stanzas_total"] == 0 and s["stanzas_per_second"] == 0.0
    assert s["uptime_seconds"] >= 0
    r = await api.get("/hosts")
    assert r.json() == {
        "total": 1,
        "limit": 100,
        "offset": 0,
        "hosts": [
            {
                "host": "localhost",
                "registered_users": len(USERS),
                "online_users": 0,
                "online_sessions": 0,
            }
        ],
    }


async def test_control_socket_serves_the_same_commands(server: EmbeddedServer) -> None:
    sock = control.socket_path(server.settings.data_dir)
    out = await control.call(sock, "stats")
    assert out["ok"] and out["result"]["registered_users"] == len(USERS)
    out = await control.call(
        sock, "set_roster_item", jid="alice@localhost", contact="bob@localhost"
    )
    assert out["ok"] and out["result"]["item"]["jid"] == "bob@localhost"
    out = await control.call(sock, "get_user", jid="nobody@localhost")
    assert out == {"ok": False, "code": "not-found", "message": "nobody@localhost does not exist"}
    out = await control.call(sock, "list_users", search="ali")
    assert [u["jid"] for u in out["result"]["users"]] == ["alice@localhost"]
