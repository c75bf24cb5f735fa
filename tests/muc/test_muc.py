"""Group chat (XEP-0045) with slixmpp's xep_0045 plugin against the embedded
default: rooms, roles and affiliations, history, and every refusal with the
condition the XEP names."""

from __future__ import annotations

import asyncio
import secrets
import sys
import xml.etree.ElementTree as ET
from typing import Any

import pytest
from slixmpp.exceptions import IqError, PresenceError
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

ROOM = "lobby@conference.localhost"
PLUGINS = ("xep_0030", "xep_0199", "xep_0045", "xep_0004")


async def _client(connect: Any, who: str, srv: Any = None) -> Any:
    c = await connect(f"{who}@localhost/r", plugins=PLUGINS, srv=srv)
    # every <presence/> as it arrives: slixmpp raises no "presence" event for
    # some occupant presences (its roster logic), the queue must see them all
    c.muc_presences = asyncio.Queue()
    c.register_handler(
        Callback("all presences", MatchXPath("{jabber:client}presence"), c.muc_presences.put_nowait)
    )
    return c


async def _presence(c: Any, pred: Any, timeout: float = 5.0) -> Any:
    while True:
        p = await asyncio.wait_for(c.muc_presences.get(), timeout)
        if pred(p):
            return p


async def _body(c: Any, body: str, timeout: float = 5.0) -> Any:
    """The next message with this body (subjects, status messages skipped)."""
    while True:
        m = await c.next_message(timeout)
        if m["body"] == body:
            return m


async def _error(c: Any, timeout: float = 5.0) -> Any:
    while True:
        m = await c.next_message(timeout)
        if m["type"] == "error":
            return m


@pytest.fixture(autouse=True)
def _fresh_room(monkeypatch: pytest.MonkeyPatch) -> None:
    """A room name of its own for each test: a cluster's muc role outlives tests."""
    monkeypatch.setattr(
        sys.modules[__name__], "ROOM", f"lobby-{secrets.token_hex(4)}@conference.localhost"
    )


async def _instant_room(
    owner: Any, room: str | None = None, nick: str = "owner", **config: Any
) -> Any:
    """Create a room and configure it (an instant room if ``config`` is empty)."""
    room = room or ROOM
    muc = owner.plugin["xep_0045"]
    result = await muc.join_muc_wait(room, nick, timeout=10)
    form = await muc.get_room_config(room)
    for var, value in config.items():
        form.field[f"muc#roomconfig_{var}"]["value"] = value
    await muc.set_room_config(room, form)
    return result


def _codes(pres: Any) -> set[str]:
    return {str(s.get("code")) for s in pres.xml.findall(
        "{http://jabber.org/protocol/muc#user}x/{http://jabber.org/protocol/muc#user}status")}  # fmt: skip


async def test_create_join_chat_history_and_leave(connect: Any) -> None:
    alice = await _client(connect, "alice")
    bob = await _client(connect, "bob")
    muc_a = alice.plugin["xep_0045"]
    own = await muc_a.join_muc_wait(ROOM, "alice", timeout=10)
    assert {"110", "201"} <= _codes(own[0])
    # a locked room: nobody else enters before it is configured (10.1.1)
    with pytest.raises(PresenceError) as exc:
        await bob.plugin["xep_0045"].join_muc_wait(ROOM, "bob", timeout=10)
    assert exc.value.condition == "item-not-found"
    await muc_a.set_room_config(ROOM, await muc_a.get_room_config(ROOM))

    alice.send_message(mto=ROOM, mbody="first", mtype="groupchat")
    echo = await _body(alice, "first")
    assert echo["body"] == "first" and str(echo["from"]) == f"{ROOM}/alice"
    joined = await bob.plugin["xep_0045"].join_muc_wait(ROOM, "bob", maxstanzas=10, timeout=10)
    assert "110" in _codes(joined[0])
    others = [str(p["from"]) for p in joined[2] if str(p["from"]) != f"{ROOM}/bob"]
    assert others == [f"{ROOM}/alice"]
    (past,) = joined[3]
    assert past["body"] == "first"
    assert past.xml.find("{urn:xmpp:delay}delay").get("from") == ROOM
    bob.send_message(mto=ROOM, mbody="hello all", mtype="groupchat")
    for c in (alice, bob):
        while True:
            m = await c.next_message()
            if m["body"] == "hello all":
                break
        assert str(m["from"]) == f"{ROOM}/bob"
        # XEP-0421: every message carries the sender's occupant id
        assert m.xml.find("{urn:xmpp:occupant-id:0}occupant-id") is not None
    bob.plugin["xep_0045"].leave_muc(ROOM, "bob")
    gone = await _presence(
        alice, pred=lambda p: str(p["from"]) == f"{ROOM}/bob" and p["type"] == "unavailable"
    )
    assert gone["type"] == "unavailable"


async def test_nickname_conflict_and_change(connect: Any) -> None:
    alice = await _client(connect, "alice")
    bob = await _client(connect, "bob")
    await _instant_room(alice)
    with pytest.raises(PresenceError) as exc:
        await bob.plugin["xep_0045"].join_muc_wait(ROOM, "owner", timeout=10)
    assert exc.value.condition == "conflict"
    await bob.plugin["xep_0045"].join_muc_wait(ROOM, "bob", timeout=10)
    bob.send_presence(pto=f"{ROOM}/robert")
    p = await _presence(
        alice, pred=lambda p: str(p["from"]) == f"{ROOM}/bob" and p["type"] == "unavailable"
    )
    assert "303" in _codes(p)
    item = p.xml.find(
        "{http://jabber.org/protocol/muc#user}x/{http://jabber.org/protocol/muc#user}item"
    )
    assert item.get("nick") == "robert"
    await _presence(alice, pred=lambda p: str(p["from"]) == f"{ROOM}/robert")


async def test_private_message_and_not_an_occupant(connect: Any) -> None:
    alice = await _client(connect, "alice")
    bob = await _client(connect, "bob")
    carol = await _client(connect, "carol")
    await _instant_room(alice)
    await bob.plugin["xep_0045"].join_muc_wait(ROOM, "bob", timeout=10)
    bob.send_message(mto=f"{ROOM}/owner", mbody="psst", mtype="chat")
    while True:
        m = await alice.next_message()
        if m["body"] == "psst":
            break
    assert str(m["from"]) == f"{ROOM}/bob" and m["type"] == "chat"
    # 7.4, 7.5: who is not in the room may not speak in it
    carol.send_message(mto=ROOM, mbody="let me in", mtype="groupchat")
    err = await carol.next_message()
    assert err["type"] == "error" and err["error"]["condition"] == "not-acceptable"


async def test_members_only_room_and_invitation(connect: Any) -> None:
    alice = await _client(connect, "alice")
    bob = await _client(connect, "bob")
    await _instant_room(alice, membersonly=True)
    with pytest.raises(PresenceError) as exc:
        await bob.plugin["xep_0045"].join_muc_wait(ROOM, "bob", timeout=10)
    assert exc.value.condition == "registration-required"
    alice.plugin["xep_0045"].invite(ROOM, "bob@localhost", reason="come in")
    while True:
        inv = await bob.next_message()
        if inv.xml.find("{http://jabber.org/protocol/muc#user}x") is not None:
            break
    invite = inv.xml.find(
        "{http://jabber.org/protocol/muc#user}x/{http://jabber.org/protocol/muc#user}invite"
    )
    assert invite.get("from") == "alice@localhost/r"
    # the invitation made bob a member (7.8.2)
    await bob.plugin["xep_0045"].join_muc_wait(ROOM, "bob", timeout=10)
    members = await alice.plugin["xep_0045"].get_affiliation_list(ROOM, "member")
    assert [str(j) for j in members] == ["bob@localhost"]


async def test_password_protected_room(connect: Any) -> None:
    alice = await _client(connect, "alice")
    bob = await _client(connect, "bob")
    await _instant_room(alice, passwordprotectedroom=True, roomsecret="sesame")
    with pytest.raises(PresenceError) as exc:
        await bob.plugin["xep_0045"].join_muc_wait(ROOM, "bob", password="wrong", timeout=10)
    assert exc.value.condition == "not-authorized"
    await bob.plugin["xep_0045"].join_muc_wait(ROOM, "bob", password="sesame", timeout=10)


async def test_kick_and_ban(connect: Any) -> None:
    alice = await _client(connect, "alice")
    bob = await _client(connect, "bob")
    carol = await _client(connect, "carol")
    await _instant_room(alice)
    await bob.plugin["xep_0045"].join_muc_wait(ROOM, "bob", timeout=10)
    await carol.plugin["xep_0045"].join_muc_wait(ROOM, "carol", timeout=10)
    # a participant cannot kick
    with pytest.raises(IqError) as exc:
        await bob.plugin["xep_0045"].set_role(ROOM, "carol", "none")
    assert exc.value.condition == "forbidden"
    await alice.plugin["xep_0045"].set_role(ROOM, "carol", "none", reason="out")
    kicked = await _presence(
        carol, pred=lambda p: str(p["from"]) == f"{ROOM}/carol" and p["type"] == "unavailable"
    )
    assert {"307", "110"} <= _codes(kicked)
    await alice.plugin["xep_0045"].set_affiliation(ROOM, "outcast", jid="bob@localhost")
    banned = await _presence(
        bob, pred=lambda p: str(p["from"]) == f"{ROOM}/bob" and p["type"] == "unavailable"
    )
    assert "301" in _codes(banned)
    with pytest.raises(PresenceError) as exc2:
        await bob.plugin["xep_0045"].join_muc_wait(ROOM, "bob", timeout=10)
    assert exc2.value.condition == "forbidden"


async def test_moderated_room_visitor_and_voice(connect: Any) -> None:
    alice = await _client(connect, "alice")
    bob = await _client(connect, "bob")
    await _instant_room(alice, moderatedroom=True)
    joined = await bob.plugin["xep_0045"].join_muc_wait(ROOM, "bob", timeout=10)
    item = joined[0].xml.find(
        "{http://jabber.org/protocol/muc#user}x/{http://jabber.org/protocol/muc#user}item"
    )
    assert item.get("role") == "visitor"
    bob.send_message(mto=ROOM, mbody="may I?", mtype="groupchat")
    while True:
        err = await bob.next_message()
        if err["type"] == "error":
            break
    assert err["error"]["condition"] == "forbidden"
    await alice.plugin["xep_0045"].set_role(ROOM, "bob", "participant")
    await _presence(bob, pred=lambda p: str(p["from"]) == f"{ROOM}/bob" and "participant" in str(p))
    bob.send_message(mto=ROOM, mbody="thanks", mtype="groupchat")
    while (await alice.next_message())["body"] != "thanks":
        pass


async def test_semi_anonymous_room_hides_real_jids(connect: Any) -> None:
    alice = await _client(connect, "alice")
    bob = await _client(connect, "bob")
    carol = await _client(connect, "carol")
    await _instant_room(alice)  # whois defaults to moderators
    await bob.plugin["xep_0045"].join_muc_wait(ROOM, "bob", timeout=10)
    joined = await carol.plugin["xep_0045"].join_muc_wait(ROOM, "carol", timeout=10)
    for p in joined[2]:
        if str(p["from"]) == f"{ROOM}/carol":
            continue  # its own presence carries its own JID
        item = p.xml.find(
            "{http://jabber.org/protocol/muc#user}x/{http://jabber.org/protocol/muc#user}item"
        )
        assert item.get("jid") is None, p
    # the moderator sees carol's real JID
    seen = await _presence(alice, pred=lambda p: str(p["from"]) == f"{ROOM}/carol")
    item = seen.xml.find(
        "{http://jabber.org/protocol/muc#user}x/{http://jabber.org/protocol/muc#user}item"
    )
    assert item.get("jid") == "carol@localhost/r"


async def test_full_room(connect: Any) -> None:
    alice = await _client(connect, "alice")
    bob = await _client(connect, "bob")
    carol = await _client(connect, "carol")
    await _instant_room(alice, maxusers="2")
    await bob.plugin["xep_0045"].join_muc_wait(ROOM, "bob", timeout=10)
    with pytest.raises(PresenceError) as exc:
        await carol.plugin["xep_0045"].join_muc_wait(ROOM, "carol", timeout=10)
    assert exc.value.condition == "service-unavailable"


async def test_subject(connect: Any) -> None:
    alice = await _client(connect, "alice")
    bob = await _client(connect, "bob")
    await _instant_room(alice)
    await bob.plugin["xep_0045"].join_muc_wait(ROOM, "bob", timeout=10)
    alice.plugin["xep_0045"].set_subject(ROOM, "plans for today")
    while True:
        m = await bob.next_message()
        if m["subject"]:
            break
    assert m["subject"] == "plans for today"
    bob.plugin["xep_0045"].set_subject(ROOM, "mine now")
    while True:
        err = await bob.next_message()
        if err["type"] == "error":
            break
    assert err["error"]["condition"] == "forbidden"


async def test_destroy_with_alternate_venue(connect: Any) -> None:
    alice = await _client(connect, "alice")
    bob = await _client(connect, "bob")
    await _instant_room(alice, persistentroom=True)
    await bob.plugin["xep_0045"].join_muc_wait(ROOM, "bob", timeout=10)
    with pytest.raises(IqError) as exc:
        await bob.plugin["xep_0045"].destroy(ROOM, reason="mine")
    assert exc.value.condition == "forbidden"
    await alice.plugin["xep_0045"].destroy(
        ROOM, reason="moving", altroom="new@conference.localhost"
    )
    p = await _presence(
        bob, pred=lambda p: str(p["from"]) == f"{ROOM}/bob" and p["type"] == "unavailable"
    )
    d = p.xml.find(
        "{http://jabber.org/protocol/muc#user}x/{http://jabber.org/protocol/muc#user}destroy"
    )
    assert d.get("jid") == "new@conference.localhost"
    assert d.findtext("{http://jabber.org/protocol/muc#user}reason") == "moving"
    # the room is gone: the service knows it no more
    alice.send_message(mto=ROOM, mbody="anyone?", mtype="groupchat")
    err = await _error(alice)
    assert err["error"]["condition"] == "item-not-found"


async def test_disco_of_service_and_room_and_self_ping(connect: Any) -> None:
    alice = await _client(connect, "alice")
    disco = alice.plugin["xep_0030"]
    info = await disco.get_info(jid="conference.localhost")
    assert ("conference", "text") in {(i[0], i[1]) for i in info["disco_info"]["identities"]}
    assert "http://jabber.org/protocol/muc" in info["disco_info"]["features"]
    items = await disco.get_items(jid="localhost")
    assert "conference.localhost" in {i[0] for i in items["disco_items"]["items"]}
    await _instant_room(alice, roomname="The Lobby", moderatedroom=True)
    rooms = await disco.get_items(jid="conference.localhost")
    assert (ROOM, "The Lobby") in [(i[0], i[2]) for i in rooms["disco_items"]["items"]]
    rinfo = await disco.get_info(jid=ROOM)
    features = set(rinfo["disco_info"]["features"])
    assert {
        "muc_public",
        "muc_temporary",
        "muc_open",
        "muc_moderated",
        "muc_semianonymous",
    } <= features
    # XEP-0410: a ping to one's own occupant JID answers while joined
    await alice.plugin["xep_0199"].ping(jid=f"{ROOM}/owner", timeout=5)
    bob = await _client(connect, "bob")
    with pytest.raises(IqError) as exc:
        await bob.plugin["xep_0199"].ping(jid=f"{ROOM}/owner", timeout=5)
    assert exc.value.condition == "not-acceptable"


async def test_no_nickname_and_no_room(connect: Any) -> None:
    alice = await _client(connect, "alice")
    alice.send_message(mto="nowhere@conference.localhost", mbody="x", mtype="groupchat")
    err = await alice.next_message()
    assert err["error"]["condition"] == "item-not-found"
    alice.send_presence(pto="nowhere@conference.localhost")
    p = await _presence(alice, pred=lambda p: p["type"] == "error")
    assert p["error"]["condition"] == "jid-malformed"
    await asyncio.sleep(0)


async def test_occupant_whose_session_ends_leaves_the_room(connect: Any) -> None:
    """The join was directed presence: the end of the session sends the room
    unavailable (RFC 6121 4.6.3), so the occupant does not linger."""
    alice = await _client(connect, "alice")
    bob = await _client(connect, "bob")
    await _instant_room(alice)
    await bob.plugin["xep_0045"].join_muc_wait(ROOM, "bob", timeout=10)
    bob.disconnect()
    p = await _presence(
        alice, lambda p: str(p["from"]) == f"{ROOM}/bob" and p["type"] == "unavailable", timeout=10
    )
    assert p["type"] == "unavailable"


@pytest.mark.embedded_only
async def test_persistent_room_survives_a_restart(server_factory: Any, connect: Any) -> None:
    """Configuration, affiliations and history of a persistent room are kept
    in the database (XEP-0045 10.1.3); a temporary room is not."""
    from tests.conftest import add_user

    srv = await server_factory()
    for name in ("alice", "bob", "carol"):
        await add_user(srv, name)
    alice = await _client(connect, "alice", srv)
    await _instant_room(alice, persistentroom=True, membersonly=True, roomname="Kept")
    await alice.plugin["xep_0045"].set_affiliation(ROOM, "member", jid="bob@localhost")
    for body in ("one", "two"):
        alice.send_message(mto=ROOM, mbody=body, mtype="groupchat")
        await _body(alice, body)
    temporary = ROOM.replace("@", "-temp@")
    await _instant_room(alice, room=temporary, nick="owner")
    await srv.stop()

    srv2 = await server_factory()  # the same data folder
    bob = await _client(connect, "bob", srv2)
    joined = await bob.plugin["xep_0045"].join_muc_wait(ROOM, "bob", maxstanzas=10, timeout=10)
    assert [m["body"] for m in joined[3]] == ["one", "two"]
    info = await bob.plugin["xep_0030"].get_info(jid=ROOM)
    assert {"muc_persistent", "muc_membersonly"} <= set(info["disco_info"]["features"])
    carol = await _client(connect, "carol", srv2)
    with pytest.raises(PresenceError) as exc:
        await carol.plugin["xep_0045"].join_muc_wait(ROOM, "carol", timeout=10)
    assert exc.value.condition == "registration-required"
    items = await carol.plugin["xep_0030"].get_items(jid="conference.localhost")
    assert [(i[0], i[2]) for i in items["disco_items"]["items"]] == [(ROOM, "Kept")]
    carol.send_message(mto=temporary, mbody="x", mtype="groupchat")
    assert (await _error(carol))["error"]["condition"] == "item-not-found"


@pytest.mark.embedded_only
async def test_metrics(server: Any, connect: Any) -> None:
    def value(name: str) -> float:
        v = server.metrics.registry.get_sample_value(name, {"domain": "conference.localhost"})
        return float(v or 0.0)

    alice = await _client(connect, "alice")
    bob = await _client(connect, "bob")
    assert value("xmppd_muc_rooms") == 0
    await _instant_room(alice)
    await bob.plugin["xep_0045"].join_muc_wait(ROOM, "bob", timeout=10)
    assert value("xmppd_muc_rooms") == 1 and value("xmppd_muc_occupants") == 2
    fanned = value("xmppd_muc_fanout_total")
    alice.send_message(mto=ROOM, mbody="count me", mtype="groupchat")
    await _body(bob, "count me")
    assert value("xmppd_muc_messages_total") == 1
    assert value("xmppd_muc_fanout_total") == fanned + 2  # one copy per occupant


async def test_iq_to_an_occupant_is_forwarded(connect: Any) -> None:
    """7.x: an IQ to room/nick reaches the occupant's real JID from the
    sender's occupant JID, and the answer comes back the same way."""
    alice = await _client(connect, "alice")
    bob = await _client(connect, "bob")
    carol = await _client(connect, "carol")
    await _instant_room(alice)
    await bob.plugin["xep_0045"].join_muc_wait(ROOM, "bob", timeout=10)
    info = await alice.plugin["xep_0030"].get_info(jid=f"{ROOM}/bob", timeout=10)
    assert str(info["from"]) == f"{ROOM}/bob"
    assert "http://jabber.org/protocol/muc" in info["disco_info"]["features"]
    with pytest.raises(IqError) as exc:
        await carol.plugin["xep_0030"].get_info(jid=f"{ROOM}/bob", timeout=10)
    assert exc.value.condition == "not-acceptable"
    with pytest.raises(IqError) as exc2:
        await alice.plugin["xep_0030"].get_info(jid=f"{ROOM}/nobody", timeout=10)
    assert exc2.value.condition == "item-not-found"


async def test_voice_request_and_approval(connect: Any) -> None:
    alice = await _client(connect, "alice")
    bob = await _client(connect, "bob")
    await _instant_room(alice, moderatedroom=True)
    await bob.plugin["xep_0045"].join_muc_wait(ROOM, "bob", timeout=10)
    bob.plugin["xep_0045"].request_voice(ROOM, "participant")
    while True:
        req = await alice.next_message()
        form = req.xml.find("{jabber:x:data}x")
        if form is not None:
            break
    fields = {f.get("var"): f.findtext("{jabber:x:data}value") for f in form}
    assert fields["FORM_TYPE"] == "http://jabber.org/protocol/muc#request"
    assert fields["muc#roomnick"] == "bob" and fields["muc#jid"] == "bob@localhost/r"
    answer = alice.make_message(mto=ROOM)
    answer.append(alice.plugin["xep_0004"].make_form(ftype="submit"))
    f = answer["form"]
    f.add_field(var="FORM_TYPE", value="http://jabber.org/protocol/muc#request")
    f.add_field(var="muc#role", value="participant")
    f.add_field(var="muc#roomnick", value="bob")
    f.add_field(var="muc#request_allow", ftype="boolean", value=True)
    answer.send()
    p = await _presence(
        bob, lambda p: str(p["from"]) == f"{ROOM}/bob" and 'role="participant"' in str(p)
    )
    assert p is not None


async def test_direct_invitation_passes_through(connect: Any) -> None:
    """XEP-0249: a user-to-user message; the server carries it unchanged."""
    alice = await _client(connect, "alice")
    bob = await _client(connect, "bob")
    await _instant_room(alice)
    m = alice.make_message(mto="bob@localhost/r", mbody="join us")
    m.append(ET.fromstring(f"<x xmlns='jabber:x:conference' jid='{ROOM}' reason='standup'/>"))
    m.send()
    got = await _body(bob, "join us")
    x = got.xml.find("{jabber:x:conference}x")
    assert x is not None and x.get("jid") == ROOM and x.get("reason") == "standup"


async def test_bookmark_with_autojoin_is_kept(connect: Any) -> None:
    """XEP-0048 bookmarks in private XML storage: what a client reads back
    after logging in again to autojoin its rooms."""
    alice = await _client(connect, "alice")
    await _instant_room(alice, persistentroom=True)
    bookmark = ET.fromstring(
        "<query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'>"
        f"<conference jid='{ROOM}' autojoin='true' name='Lobby'><nick>alice</nick></conference>"
        "</storage></query>"
    )
    iq = alice.make_iq_set(ito=None)
    iq.append(bookmark)
    await iq.send(timeout=10)
    again = await connect("alice@localhost/other", plugins=PLUGINS)
    get = again.make_iq_get(ito=None)
    get.append(
        ET.fromstring(
            "<query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'/></query>"
        )
    )
    result = await get.send(timeout=10)
    conf = result.xml.find(
        "{jabber:iq:private}query/{storage:bookmarks}storage/{storage:bookmarks}conference"
    )
    assert conf is not None and conf.get("jid") == ROOM and conf.get("autojoin") == "true"
    # and the room it names is there to join, under the bookmarked nick
    await again.plugin["xep_0045"].join_muc_wait(
        ROOM, conf.findtext("{storage:bookmarks}nick"), timeout=10
    )
