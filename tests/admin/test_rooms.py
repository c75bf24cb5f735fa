"""Group chat rooms in the REST admin API (and xmppctl), against a real
embedded server with slixmpp occupants seeing the effects."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any

import httpx
from slixmpp.exceptions import PresenceError

from tests.muc.test_muc import _client, _presence

ROOM = "ops@conference.localhost"


async def test_create_list_get_and_destroy(api: httpx.AsyncClient, connect: Any) -> None:
    r = await api.post(
        "/rooms",
        json={"jid": ROOM, "owner": "alice@localhost", "name": "Ops", "members_only": True},
    )
    assert r.status_code == 201, r.text
    room = r.json()
    assert room["jid"] == ROOM and room["persistent"] and room["members_only"]
    assert room["affiliations"] == {"alice@localhost": "owner"}
    again = await api.post("/rooms", json={"jid": ROOM, "owner": "alice@localhost"})
    assert again.status_code == 409 and again.json()["error"]["code"] == "exists"

    # members only: bob is refused until the API makes him a member
    bob = await _client(connect, "bob")
    muc = bob.plugin["xep_0045"]
    try:
        await muc.join_muc_wait(ROOM, "bob", timeout=10)
        raise AssertionError("joined a members-only room without being a member")
    except PresenceError as exc:
        assert exc.condition == "registration-required"
    r = await api.put(f"/rooms/{ROOM}/affiliations/bob@localhost", json={"affiliation": "member"})
    assert r.status_code == 200 and r.json()["affiliations"]["bob@localhost"] == "member"
    await muc.join_muc_wait(ROOM, "bob", timeout=10)

    listed = (await api.get("/rooms")).json()
    assert listed["total"] == 1
    (row,) = listed["rooms"]
    assert row["jid"] == ROOM and row["occupants"] == 1 and row["name"] == "Ops"
    assert (await api.get(f"/rooms/{ROOM}")).json()["occupants"] == 1

    # an outcast is removed at once, with status 301
    r = await api.put(
        f"/rooms/{ROOM}/affiliations/bob@localhost",
        json={"affiliation": "outcast", "reason": "spam"},
    )
    assert r.status_code == 200
    gone = await _presence(
        bob, lambda p: str(p["from"]) == f"{ROOM}/bob" and p["type"] == "unavailable"
    )
    assert "301" in str(gone)

    r = await api.delete(f"/rooms/{ROOM}", params={"reason": "done"})
    assert r.status_code == 200 and r.json() == {"jid": ROOM, "destroyed": True}
    assert (await api.get(f"/rooms/{ROOM}")).status_code == 404
    assert (await api.get("/rooms")).json()["total"] == 0


async def test_errors(api: httpx.AsyncClient) -> None:
    cases = [
        (await api.post("/rooms", json={"jid": "x@elsewhere.example", "owner": "alice"}), 422),
        (await api.post("/rooms", json={"jid": "conference.localhost", "owner": "alice"}), 422),
        (await api.post("/rooms", json={"jid": ROOM, "owner": "nobody@elsewhere.example"}), 422),
        (await api.get("/rooms/nothing@conference.localhost"), 404),
        (await api.get("/rooms/not-a-room"), 404),
        (await api.delete("/rooms/nothing@conference.localhost"), 404),
        (await api.get("/rooms", params={"domain": "localhost"}), 422),
        (
            await api.put(
                "/rooms/nothing@conference.localhost/affiliations/bob@localhost",
                json={"affiliation": "member"},
            ),
            404,
        ),
        (
            await api.put(
                f"/rooms/{ROOM}/affiliations/bob@localhost", json={"affiliation": "king"}
            ),
            422,
        ),
    ]
    for r, status in cases:
        assert r.status_code == status, (r.request.url, r.text)


async def test_read_token_cannot_create(anon: httpx.AsyncClient) -> None:
    from .conftest import READ, bearer

    r = await anon.post(
        "/rooms", json={"jid": ROOM, "owner": "alice@localhost"}, headers=bearer(READ)
    )
    assert r.status_code == 403


async def test_xmppctl_rooms(server: Any) -> None:
    env = {"XMPPD_DATA_DIR": server.settings.data_dir, "PATH": "/usr/bin:/bin"}

    def ctl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "services.app.cli", *args],
            env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    created = await asyncio.to_thread(ctl, "room-create", ROOM, "alice@localhost", "--name", "Ops")
    assert created.returncode == 0, created.stderr
    listed = await asyncio.to_thread(ctl, "rooms")
    assert listed.returncode == 0 and listed.stdout.startswith(f"{ROOM}\tOps\tpersistent")
    aff = await asyncio.to_thread(ctl, "room-affiliation", ROOM, "bob@localhost", "admin")
    assert aff.returncode == 0, aff.stderr
    destroyed = await asyncio.to_thread(ctl, "room-destroy", ROOM)
    assert destroyed.returncode == 0, destroyed.stderr
    missing = await asyncio.to_thread(ctl, "room-destroy", ROOM)
    assert missing.returncode == 1 and "no room" in missing.stderr
