"""Room archives (XEP-0313 on a room's JID) with slixmpp: a persistent
room keeps its messages and subject under the stanza-ids its occupants
saw, pages them like a user archive, and reads them only to those who may:
members of a members-only room, nobody banned. A temporary room keeps
nothing."""

from __future__ import annotations

import secrets
from typing import Any

import pytest
from slixmpp.exceptions import IqError

from .test_muc import _body, _instant_room

PLUGINS = ("xep_0030", "xep_0199", "xep_0045", "xep_0004", "xep_0059", "xep_0313")
SID = "{urn:xmpp:sid:0}stanza-id"


async def _client(connect: Any, who: str) -> Any:
    return await connect(f"{who}@localhost/r", plugins=PLUGINS)


def _room() -> str:
    return f"kept-{secrets.token_hex(4)}@conference.localhost"


def _sid(m: Any, by: str) -> str | None:
    for el in m.xml.iter(SID):
        if el.get("by") == by:
            return el.get("id")
    return None


async def test_a_persistent_room_archives_what_occupants_saw(connect: Any) -> None:
    room = _room()
    alice = await _client(connect, "alice")
    bob = await _client(connect, "bob")
    await _instant_room(alice, room=room, persistentroom=True)
    await bob.plugin["xep_0045"].join_muc_wait(room, "bob", timeout=10)
    seen = []
    for body in ("one", "two", "three"):
        alice.send_message(mto=room, mbody=body, mtype="groupchat")
        m = await _body(bob, body)
        seen.append(_sid(m, room))
    assert all(seen) and len(set(seen)) == 3
    alice.plugin["xep_0045"].set_subject(room, "news")
    iq = await bob.plugin["xep_0313"].retrieve(jid=room, rsm={"max": 2}, timeout=10)
    results = iq["mam"]["results"]
    assert [r["mam_result"]["id"] for r in results] == seen[:2]
    fwd = results[0]["mam_result"]["forwarded"]["stanza"]
    assert fwd["body"] == "one" and fwd["from"] == f"{room}/owner"
    assert int(iq["mam_fin"]["rsm"]["count"]) >= 3
    # the rest, subject change included
    last = iq["mam_fin"]["rsm"]["last"]
    iq = await bob.plugin["xep_0313"].retrieve(jid=room, rsm={"after": last}, timeout=10)
    rest = [r["mam_result"]["forwarded"]["stanza"] for r in iq["mam"]["results"]]
    assert [m["body"] for m in rest][:1] == ["three"]
    assert rest[-1]["subject"] == "news"
    info = await bob.plugin["xep_0030"].get_info(jid=room)
    assert "urn:xmpp:mam:2" in info["disco_info"]["features"]


async def test_a_temporary_room_keeps_nothing(connect: Any) -> None:
    room = _room()
    alice = await _client(connect, "alice")
    await _instant_room(alice, room=room)
    alice.send_message(mto=room, mbody="gone", mtype="groupchat")
    m = await _body(alice, "gone")
    assert _sid(m, room) is None
    iq = await alice.plugin["xep_0313"].retrieve(jid=room, timeout=10)
    assert iq["mam"]["results"] == [] and int(iq["mam_fin"]["rsm"]["count"]) == 0


async def test_who_may_read(connect: Any) -> None:
    room = _room()
    alice = await _client(connect, "alice")
    await _instant_room(alice, room=room, persistentroom=True, membersonly=True)
    alice.send_message(mto=room, mbody="members only", mtype="groupchat")
    await _body(alice, "members only")
    carol = await _client(connect, "carol")
    with pytest.raises(IqError) as exc:
        await carol.plugin["xep_0313"].retrieve(jid=room, timeout=10)
    assert exc.value.condition == "forbidden"
    await alice.plugin["xep_0045"].set_affiliation(room, "member", jid="carol@localhost")
    iq = await carol.plugin["xep_0313"].retrieve(jid=room, timeout=10)
    assert [r["mam_result"]["forwarded"]["stanza"]["body"] for r in iq["mam"]["results"]] == [
        "members only"
    ]
    await alice.plugin["xep_0045"].set_affiliation(room, "outcast", jid="carol@localhost")
    with pytest.raises(IqError) as exc:
        await carol.plugin["xep_0313"].retrieve(jid=room, timeout=10)
    assert exc.value.condition == "forbidden"
