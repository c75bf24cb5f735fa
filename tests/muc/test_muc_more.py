"""More of XEP-0045 through a real client (slixmpp), in every mode: status
codes of the room's privacy (170-173), nicknames the service normalizes
(210), occupants removed after a bounce (333) and registration with a room
(7.10, 7.12)."""

from __future__ import annotations

import asyncio
import secrets
import sys
import xml.etree.ElementTree as ET
from typing import Any

import pytest
from slixmpp.exceptions import IqError, PresenceError

from .test_muc import _client, _presence

ROOM = "lobby@conference.localhost"
PLUGINS = ("xep_0030", "xep_0199", "xep_0045", "xep_0004")
MUC_USER = "http://jabber.org/protocol/muc#user"
REGISTER = "jabber:iq:register"
DATA = "jabber:x:data"


@pytest.fixture(autouse=True)
def _fresh_room(monkeypatch: pytest.MonkeyPatch) -> None:
    """A room name of its own for each test: a cluster's muc role outlives tests."""
    monkeypatch.setattr(
        sys.modules[__name__], "ROOM", f"more-{secrets.token_hex(4)}@conference.localhost"
    )


async def _message(c: Any, pred: Any, timeout: float = 5.0) -> Any:
    while True:
        m = await c.next_message(timeout)
        if pred(m):
            return m


def _codes(stanza: Any) -> set[str]:
    return {str(s.get("code")) for s in stanza.xml.findall(f"{{{MUC_USER}}}x/{{{MUC_USER}}}status")}


def _item(stanza: Any) -> Any:
    return stanza.xml.find(f"{{{MUC_USER}}}x/{{{MUC_USER}}}item")


async def _instant_room(owner: Any, nick: str = "owner", **config: Any) -> None:
    muc = owner.plugin["xep_0045"]
    await muc.join_muc_wait(ROOM, nick, timeout=10)
    await _configure(owner, **config)


async def _configure(owner: Any, **config: Any) -> None:
    muc = owner.plugin["xep_0045"]
    form = await muc.get_room_config(ROOM)
    for var, value in config.items():
        form.field[f"muc#roomconfig_{var}"]["value"] = value
    await muc.set_room_config(ROOM, form)


def _is_config_change(m: Any) -> bool:
    return str(m["from"]) == ROOM and "104" in _codes(m)


async def test_logging_and_anonymity_changes_are_announced(connect: Any) -> None:
    alice = await _client(connect, "alice")
    bob = await _client(connect, "bob")
    carol = await _client(connect, "carol")
    await _instant_room(alice)
    await bob.plugin["xep_0045"].join_muc_wait(ROOM, "bob", timeout=10)
    form = await alice.plugin["xep_0045"].get_room_config(ROOM)
    assert form.field["muc#roomconfig_enablelogging"]["type"] == "boolean"
    await _configure(alice, enablelogging=True)
    m = await _message(bob, _is_config_change)
    assert _codes(m) == {"104", "170"} and m["type"] == "groupchat"
    info = await carol.plugin["xep_0030"].get_info(jid=ROOM)
    roominfo = info["disco_info"]["form"]
    assert roominfo.field["muc#roomconfig_enablelogging"]["value"] in (True, "1")
    # 7.2.12: who enters a logged room is warned in its own presence
    joined = await carol.plugin["xep_0045"].join_muc_wait(ROOM, "carol", timeout=10)
    assert {"110", "170"} <= _codes(joined[0])
    await _configure(alice, enablelogging=False, whois="anyone")
    m = await _message(carol, _is_config_change)
    assert _codes(m) == {"104", "171", "172"}
    await _configure(alice, whois="moderators")
    m = await _message(bob, lambda m: _is_config_change(m) and "173" in _codes(m))
    assert _codes(m) == {"104", "173"}


async def test_service_normalizes_nicknames_with_210(connect: Any) -> None:
    alice = await _client(connect, "alice")
    bob = await _client(connect, "bob")
    carol = await _client(connect, "carol")
    await _instant_room(alice)
    # raw: a client library prepares the nickname its own way first
    bob.send_raw(
        f"<presence to='{ROOM}/bob  smith '><x xmlns='http://jabber.org/protocol/muc'/></presence>"
    )
    own = await _presence(bob, lambda p: "110" in _codes(p))
    assert str(own["from"]) == f"{ROOM}/bob smith"
    assert {"110", "210"} <= _codes(own)
    seen = await _presence(alice, lambda p: str(p["from"]) == f"{ROOM}/bob smith")
    assert "210" not in _codes(seen)
    # the same nickname in another form is the same nickname: a conflict
    carol.send_raw(
        f"<presence to='{ROOM}/ bob smith'><x xmlns='http://jabber.org/protocol/muc'/></presence>"
    )
    err = await _presence(carol, lambda p: p["type"] == "error")
    assert err["error"]["condition"] == "conflict"
    # a nick change the service normalizes: 303 with the nick it kept, 210
    bob.send_raw(f"<presence to='{ROOM}/robert   smith'/>")
    gone = await _presence(
        alice, lambda p: str(p["from"]) == f"{ROOM}/bob smith" and p["type"] == "unavailable"
    )
    assert "303" in _codes(gone) and _item(gone).get("nick") == "robert smith"
    again = await _presence(
        bob, lambda p: str(p["from"]) == f"{ROOM}/robert smith" and p["type"] != "unavailable"
    )
    assert {"110", "210"} <= _codes(again)


@pytest.mark.parametrize("kind", ["message", "presence"])
async def test_occupant_whose_client_bounces_is_removed_with_333(connect: Any, kind: str) -> None:
    """What the room sends an occupant comes back as an error (its client or
    the way to it is gone): the others see it leave with status 333."""
    alice = await _client(connect, "alice")
    bob = await _client(connect, "bob")
    await _instant_room(alice)
    await bob.plugin["xep_0045"].join_muc_wait(ROOM, "bob", timeout=10)
    to = ROOM if kind == "message" else f"{ROOM}/bob"
    bob.send_raw(
        f"<{kind} to='{to}' type='error'><error type='cancel'>"
        "<recipient-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>"
        f"</error></{kind}>"
    )
    p = await _presence(
        alice, lambda p: str(p["from"]) == f"{ROOM}/bob" and p["type"] == "unavailable"
    )
    assert _codes(p) == {"333"}
    # bob is out: the room refuses what it sends now
    bob.send_message(mto=ROOM, mbody="still here?", mtype="groupchat")
    err = await _message(bob, lambda m: m["type"] == "error")
    assert err["error"]["condition"] == "not-acceptable"


async def _register_form(c: Any) -> Any:
    iq = c.make_iq_get(ito=ROOM)
    iq.append(ET.Element(f"{{{REGISTER}}}query"))
    return await iq.send(timeout=10)


async def _register(c: Any, nick: str) -> Any:
    iq = c.make_iq_set(ito=ROOM)
    iq.append(
        ET.fromstring(
            f"<query xmlns='{REGISTER}'><x xmlns='{DATA}' type='submit'>"
            "<field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#register</value></field>"
            f"<field var='muc#register_roomnick'><value>{nick}</value></field></x></query>"
        )
    )
    return await iq.send(timeout=10)


async def _reserved_nick(c: Any) -> str | None:
    info = await c.plugin["xep_0030"].get_info(jid=ROOM, node="x-roomuser-item", timeout=10)
    names = [i[3] for i in info["disco_info"]["identities"] if i[:2] == ("conference", "text")]
    return names[0] if names else None


async def test_register_with_a_room_reserves_the_nick(connect: Any) -> None:
    alice = await _client(connect, "alice")
    bob = await _client(connect, "bob")
    carol = await _client(connect, "carol")
    await _instant_room(alice, moderatedroom=True)
    features = set((await bob.plugin["xep_0030"].get_info(jid=ROOM))["disco_info"]["features"])
    assert "jabber:iq:register" in features
    await bob.plugin["xep_0045"].join_muc_wait(ROOM, "bob", timeout=10)
    assert await _reserved_nick(bob) is None
    got = await _register_form(bob)
    form = got.xml.find(f"{{{REGISTER}}}query/{{{DATA}}}x")
    fields = {f.get("var"): f for f in form.findall(f"{{{DATA}}}field")}
    assert fields["FORM_TYPE"].findtext(f"{{{DATA}}}value") == (
        "http://jabber.org/protocol/muc#register"
    )
    assert fields["muc#register_roomnick"].find(f"{{{DATA}}}required") is not None
    await _register(bob, "Bobby")
    # 7.10: bob, in the room, is a member now (and has voice), for everyone
    p = await _presence(
        alice, lambda p: str(p["from"]) == f"{ROOM}/bob" and _item(p).get("affiliation") == "member"
    )
    assert _item(p).get("role") == "participant"
    assert await _reserved_nick(bob) == "Bobby"
    again = await _register_form(bob)
    query = again.xml.find(f"{{{REGISTER}}}query")
    assert query.find(f"{{{REGISTER}}}registered") is not None
    assert query.findtext(f"{{{REGISTER}}}username") == "Bobby"
    members = await alice.plugin["xep_0045"].get_affiliation_list(ROOM, "member")
    assert members == ["bob@localhost"]
    # nobody else takes the reserved nick, to enter or to register
    with pytest.raises(PresenceError) as exc:
        await carol.plugin["xep_0045"].join_muc_wait(ROOM, "Bobby", timeout=10)
    assert exc.value.condition == "conflict"
    with pytest.raises(IqError) as exc2:
        await _register(carol, "Bobby")
    assert exc2.value.condition == "conflict"
    # a ban ends the registration, and registering again is forbidden
    await alice.plugin["xep_0045"].set_affiliation(ROOM, "outcast", jid="bob@localhost")
    with pytest.raises(IqError) as exc3:
        await _register_form(bob)
    assert exc3.value.condition == "forbidden"
    await carol.plugin["xep_0045"].join_muc_wait(ROOM, "Bobby", timeout=10)


async def test_members_only_room_refuses_registration_of_non_members(connect: Any) -> None:
    alice = await _client(connect, "alice")
    bob = await _client(connect, "bob")
    await _instant_room(alice, membersonly=True)
    with pytest.raises(IqError) as exc:
        await _register(bob, "bob")
    assert exc.value.condition == "not-allowed"
    await alice.plugin["xep_0045"].set_affiliation(ROOM, "member", jid="bob@localhost")
    await _register(bob, "bob")
    assert await _reserved_nick(bob) == "bob"


@pytest.mark.embedded_only
async def test_reserved_nick_survives_a_restart(server_factory: Any, connect: Any) -> None:
    from tests.conftest import add_user

    srv = await server_factory()
    for name in ("alice", "bob", "carol"):
        await add_user(srv, name)
    alice = await _client(connect, "alice", srv)
    await _instant_room(alice, persistentroom=True)
    bob = await _client(connect, "bob", srv)
    await _register(bob, "Bobby")
    await srv.stop()

    srv2 = await server_factory()  # the same data folder
    bob = await _client(connect, "bob", srv2)
    assert await _reserved_nick(bob) == "Bobby"
    carol = await _client(connect, "carol", srv2)
    with pytest.raises(PresenceError) as exc:
        await carol.plugin["xep_0045"].join_muc_wait(ROOM, "Bobby", timeout=10)
    assert exc.value.condition == "conflict"


async def test_rooms_per_user_counts_stored_rooms_out_of_memory(
    server_factory: Any, connect: Any
) -> None:
    """``muc_max_rooms_per_user``: a persistent room its owner left (out of
    memory, in storage) still counts, so leaving does not lift the limit."""
    from tests.conftest import add_user

    srv = await server_factory(muc_max_rooms_per_user=2)
    await add_user(srv, "alice")
    alice = await _client(connect, "alice", srv)
    muc = alice.plugin["xep_0045"]
    for name in ("one", "two"):
        room = f"{name}@conference.localhost"
        await muc.join_muc_wait(room, "owner", timeout=10)
        form = await muc.get_room_config(room)
        form.field["muc#roomconfig_persistentroom"]["value"] = True
        await muc.set_room_config(room, form)
        muc.leave_muc(room, "owner")
    await asyncio.sleep(0.3)
    with pytest.raises(PresenceError) as exc:
        await muc.join_muc_wait("three@conference.localhost", "owner", timeout=10)
    assert exc.value.condition == "not-allowed"
    # joining a room one owns is not creating one
    await muc.join_muc_wait("one@conference.localhost", "owner", timeout=10)
