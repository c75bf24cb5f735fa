"""The group chat service's contract (XEP-0045). Routers, and every role's
own router, hand it the stanzas addressed to a MUC domain; the in-process
:class:`~services.muc.service.MucHost` and the muc role's gRPC client
implement it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from ..xmpp.jid import JID
from .routing import Envelope

__all__ = [
    "AFFILIATIONS",
    "Muc",
    "RoomChanges",
    "RoomImage",
    "RoomMemory",
    "RoomOwnership",
    "RoomSummary",
]

#: XEP-0045 affiliations, "none" meaning no affiliation
AFFILIATIONS = ("owner", "admin", "member", "none", "outcast")


@dataclass(frozen=True, slots=True)
class RoomSummary:
    """One room as operators see it (the admin API, ``xmppctl rooms``)."""

    jid: JID
    name: str = ""
    persistent: bool = False
    public: bool = True
    members_only: bool = False
    moderated: bool = False
    password_protected: bool = False
    occupants: int = 0
    #: bare JID -> affiliation (owner, admin, member, outcast)
    affiliations: dict[str, str] = field(default_factory=dict)


class Muc(Protocol):
    async def route(self, room: JID, env: Envelope) -> None:
        """A stanza to ``room`` (a room's bare JID, or the service's domain
        for the service itself); a StanzaError raised is bounced to the
        sender, from the address the stanza was sent to."""
        ...

    # ---- administration (the admin API and xmppctl) ----

    async def rooms(self, domain: str) -> list[RoomSummary]:
        """The rooms of a MUC domain: those in memory and the stored persistent ones."""
        ...

    async def room(self, room: JID) -> RoomSummary | None: ...

    async def create_room(self, room: JID, owner: JID, name: str, members_only: bool) -> bool:
        """Create a persistent room owned by ``owner``; False if it exists."""
        ...

    async def destroy_room(self, room: JID, reason: str | None, alternate: JID | None) -> bool:
        """Destroy a room (its occupants are told, XEP-0045 10.9); False if none."""
        ...

    async def set_affiliation(
        self, room: JID, jid: JID, affiliation: str, reason: str | None
    ) -> bool:
        """Set a bare JID's affiliation as the service (no owner's rights
        needed; occupants are told as for an owner's change); False: no room."""
        ...


class RoomOwnership(Protocol):
    """Which muc replica holds each room (a cluster); the embedded default
    has none: every room is the process's own."""

    async def elsewhere(self, room: JID) -> Muc | None:
        """None when this replica holds ``room`` (it has taken or kept its
        lease); else the Muc of the replica that does."""
        ...

    async def renew(self, rooms: list[JID]) -> list[JID]:
        """Keep holding ``rooms``; those another replica holds now."""
        ...

    async def release(self, room: JID) -> None: ...


@dataclass(slots=True)
class RoomImage:
    """What a replica taking a room over needs beyond storage: the room's
    occupants and, for a temporary room (which storage does not keep), its
    state and recent history. Opaque documents (services/muc/memory.py)."""

    #: nickname -> occupant document
    occupants: dict[str, bytes] = field(default_factory=dict)
    #: a temporary room's state document; None for a persistent room
    state: bytes | None = None
    #: a temporary room's history, oldest first
    history: list[bytes] = field(default_factory=list)


@dataclass(slots=True)
class RoomChanges:
    """What changed of a room's image after one stanza."""

    occupants: dict[str, bytes] = field(default_factory=dict)
    left: list[str] = field(default_factory=list)
    state: bytes | None = None
    history: list[bytes] = field(default_factory=list)
    #: how many history entries to keep (with ``history``)
    keep: int = 0
    #: the room is persistent now: any temporary state and history go
    persistent: bool = False
    #: a temporary room's place in the service's room list (disco#items):
    #: its name when listed, "" when not, None when unchanged
    listing: str | None = None

    def __bool__(self) -> bool:
        return (
            bool(self.occupants or self.left or self.state is not None or self.history)
            or self.persistent
            or self.listing is not None
        )


class RoomMemory(Protocol):
    """Where the image of each room held in memory is kept, so that another
    replica carries the room on, occupants and all, when its holder dies or
    stops (a cluster: Redis). The embedded default has none: the process
    that would read it is the one that died."""

    async def write(self, room: JID, changes: RoomChanges) -> None: ...

    async def read(self, room: JID) -> RoomImage | None: ...

    async def drop(self, room: JID) -> None:
        """The room ended (its last occupant left, or it was destroyed)."""
        ...

    async def touch(self, rooms: list[JID]) -> None:
        """The rooms are still held: keep their images from expiring."""
        ...

    async def listed(self, domain: str) -> dict[str, str]:
        """The public temporary rooms of ``domain`` held anywhere: bare JID
        -> name (persistent ones are in storage)."""
        ...
