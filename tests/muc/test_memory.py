"""A room's image (services/muc/memory.py): what changed after a stanza, and
a room rebuilt from its image as it was, without a server."""

from __future__ import annotations

import pytest

from services.core.muc import RoomImage
from services.muc import memory
from services.muc.room import Room
from services.xmpp.errors import StanzaCondition, StanzaError

from .test_room import ROOM, A, B, C, M, P, room


def _image(r: Room) -> RoomImage:
    ch = memory.everything(r, 50)
    return RoomImage(occupants=ch.occupants, state=ch.state, history=ch.history)


def test_changes_name_only_what_moved() -> None:
    r = room()
    r.locked = False
    before = memory.marks(r)
    r.handle_presence(B, "bob", P())
    ch = memory.changes(r, before, False, 0, 50)
    assert set(ch.occupants) == {"bob"} and ch.left == [] and ch.state is None
    before, seq = memory.marks(r), r.history_seq
    r.handle_message(A, None, M("hello"))
    ch = memory.changes(r, before, False, r.history_seq - seq, 50)
    assert ch.occupants == {} and len(ch.history) == 1 and ch.keep == 20
    before = memory.marks(r)
    r.handle_presence(B, "bob", _away())
    ch = memory.changes(r, before, False, 0, 50)
    assert set(ch.occupants) == {"bob"}  # a new presence is a change
    before = memory.marks(r)
    r.handle_presence(B, None, _unavailable())
    ch = memory.changes(r, before, False, 0, 50)
    assert ch.left == ["bob"] and not ch.occupants


def test_a_persistent_room_keeps_only_occupants() -> None:
    r = room(persistent=True)
    r.locked = False
    before, seq = memory.marks(r), r.history_seq
    r.handle_message(A, None, M("kept by storage"))
    ch = memory.changes(r, before, True, r.history_seq - seq, 50)
    assert ch.history == [] and ch.state is None and ch.persistent


def test_a_room_comes_back_as_it_was() -> None:
    r = room(name="Lobby", moderated=True)
    r.locked = False
    r.affiliations["carol@localhost"] = "member"
    r.handle_presence(B, "bob", P())
    r.handle_presence(C, "carol", P())
    r.handle_message(A, None, M("one"))
    r.handle_message(C, None, M("two"))
    back = Room(jid=ROOM, clock=lambda: 1000.0)
    memory.restore(back, _image(r))
    assert back.config == r.config and back.affiliations == r.affiliations
    assert {n: (o.jid, o.role) for n, o in back.occupants.items()} == {
        n: (o.jid, o.role) for n, o in r.occupants.items()
    }
    assert [p.element.findtext("{jabber:client}body") for p in back.history] == ["one", "two"]
    assert back.history_seq == 2 and not back.locked
    # the occupants are in: carol speaks without joining again, and all three
    # hear it; bob is still a visitor of the moderated room
    out = back.handle_message(C, None, M("still here"))
    assert sorted(o.get("to") for o in out) == sorted(str(j) for j in (A, B, C))
    with pytest.raises(StanzaError) as exc:
        back.handle_message(B, None, M("no voice"))
    assert exc.value.condition == StanzaCondition.FORBIDDEN


def _away() -> object:
    from lxml import etree

    return etree.fromstring("<presence xmlns='jabber:client'><show>away</show></presence>")


def _unavailable() -> object:
    from lxml import etree

    return etree.fromstring("<presence xmlns='jabber:client' type='unavailable'/>")
