"""A room's image for the replica that takes it over (see
:class:`~services.core.muc.RoomMemory`): its occupants, and a temporary
room's state and recent history, as documents. Pure functions: the service
decides when to write and read them.

An occupant's document carries what the room needs to carry on as if it had
never moved: the nickname, the real JID, the role and the last presence the
occupant sent. Affiliations and configuration are the room's state (stored
for a persistent room, in the image for a temporary one).
"""

from __future__ import annotations

import json

from lxml import etree

from ..core.muc import RoomChanges, RoomImage
from ..xmpp.jid import JID
from ..xmpp.tree import parse_element
from . import persist
from .room import Occupant, Room, _Past

#: what a room's occupants looked like: nick -> (occupant, role, presence) by identity
Marks = dict[str, tuple[Occupant, str, etree._Element]]


def marks(room: Room) -> Marks:
    return {nick: (o, o.role, o.presence) for nick, o in room.occupants.items()}


def occupant_doc(occ: Occupant) -> bytes:
    return json.dumps(
        {
            "n": occ.nick,
            "j": str(occ.jid),
            "r": occ.role,
            "p": etree.tostring(occ.presence, with_tail=False).decode(),
        },
        separators=(",", ":"),
    ).encode()


def occupant_of(doc: bytes) -> Occupant:
    d = json.loads(doc)
    return Occupant(
        nick=str(d["n"]), jid=JID.parse(d["j"]), role=str(d["r"]), presence=parse_element(d["p"])
    )


def temporary_state(room: Room) -> bytes:
    doc = {"state": persist.state_of(room), "locked": room.locked}
    return json.dumps(doc, separators=(",", ":")).encode()


def history_doc(past: _Past) -> bytes:
    return b"%r\n%s" % (past.when, persist.history_entry(past.element))


def changes(
    room: Room, before: Marks, state_moved: bool, added: int, max_history: int
) -> RoomChanges:
    """What to write after a stanza: the occupants that joined or changed
    (compared by identity with ``before``), those that left, and for a
    temporary room its state when it ``state_moved`` and the ``added``
    history entries."""
    out = RoomChanges()
    now = room.occupants
    for nick, occ in now.items():
        was = before.get(nick)
        if was is None or was[0] is not occ or was[1] != occ.role or was[2] is not occ.presence:
            out.occupants[nick] = occupant_doc(occ)
    out.left = [nick for nick in before if nick not in now]
    if room.config.persistent:
        out.persistent = state_moved
        if state_moved:
            out.listing = ""  # storage lists it now
        return out
    if state_moved:
        out.state = temporary_state(room)
        listed = room.config.public and not room.locked
        out.listing = (room.config.name or room.jid.local or "") if listed else ""
    if added > 0:
        past = list(room.history)[-added:]
        out.history = [history_doc(p) for p in past]
        out.keep = min(room.config.history_length, max_history)
    return out


def everything(room: Room, max_history: int) -> RoomChanges:
    """The whole image of ``room`` (a room whose image was not kept yet)."""
    return changes(room, {}, True, len(room.history), max_history)


def restore(room: Room, image: RoomImage) -> None:
    """Put back what ``image`` kept into ``room`` (state from storage already
    applied for a persistent room)."""
    if image.state is not None:
        doc = json.loads(image.state)
        persist.apply_state(room, str(doc["state"]))
        room.locked = bool(doc.get("locked", False))
        room.history.clear()
        for entry in image.history:
            stamp, _, data = entry.partition(b"\n")
            room.history.append(_Past(parse_element(data), float(stamp), len(data)))
        room.history_seq = len(room.history)
    for doc in image.occupants.values():
        occ = occupant_of(doc)
        room.occupants[occ.nick] = occ
