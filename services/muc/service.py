"""The multi-user chat service (XEP-0045) of one domain (``conference.<host>``).

It is a :class:`~services.router.domains.DomainService`: the router hands it
every stanza addressed to its domain, it finds (or creates) the room, lets
the sans-IO :class:`~services.muc.room.Room` decide, and routes what the
room returns. Refusals are StanzaErrors, which the router bounces from the
address the stanza was sent to, as XEP-0045 wants.

Rooms live in this process's memory. A persistent room's state and history
are stored (the Storage contract) before its answers go out; in a cluster,
where one replica holds each room, the room's image (its occupants, and a
temporary room's state and history) is also kept in a
:class:`~services.core.muc.RoomMemory`, so the replica that takes the room
over carries it on with its occupants (see docs/architecture.md).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from lxml import etree

from ..core.muc import AFFILIATIONS, RoomMemory, RoomSummary
from ..core.routing import Envelope
from ..core.storage import ArchivedMessage
from ..features.mam import protocol as mam
from ..xmpp import ns
from ..xmpp import stanza as st
from ..xmpp.errors import StanzaCondition, StanzaError
from ..xmpp.jid import JID
from . import memory, persist
from .room import MUC, MUC_ADMIN, MUC_OWNER, OCCUPANT_ID, Limits, Room, RoomConfig, q

if TYPE_CHECKING:
    from ..core.feature import Context
    from ..core.muc import Muc, RoomOwnership
    from ..platform.config import Settings
    from ..platform.metrics import Metrics

log = logging.getLogger("xmppd.muc")

_DISCO_INFO = q(ns.DISCO_INFO, "query")
_DISCO_ITEMS = q(ns.DISCO_ITEMS, "query")
_ADMIN = q(MUC_ADMIN, "query")
_OWNER = q(MUC_OWNER, "query")
_PING = q(ns.PING, "ping")
_MAM_QUERY = q(mam.MAM, "query")


class _Mark:
    """What the service compares a room with after handling a stanza."""

    __slots__ = ("history_seq", "occupants", "persistent", "state_seq")

    def __init__(self, room: Room, images: bool = False, fresh: bool = False) -> None:
        self.persistent = room.config.persistent
        #: a room just made has everything to store
        self.state_seq = -1 if fresh else room.state_seq
        self.history_seq = room.history_seq
        self.occupants: memory.Marks | None = memory.marks(room) if images else None


class _RoomLock:
    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


class MucService:
    def __init__(
        self,
        domain: str,
        *,
        max_occupants: int = 200,
        max_history: int = 50,
        max_rooms_per_user: int = 100,
        clock: Callable[[], float] = time.time,
        metrics: Metrics | None = None,
        images: RoomMemory | None = None,
        secret: bytes | None = None,
    ) -> None:
        self.domain = domain
        self.limits = Limits(max_users=max_occupants, max_history=max_history)
        self.max_rooms_per_user = max_rooms_per_user
        self.clock = clock
        self.rooms: dict[str, Room] = {}
        #: where rooms' images are kept for the replica taking them over (a cluster)
        self.images = images
        #: the key of XEP-0421 occupant ids: stable while the service runs,
        #: or shared by the replicas of a cluster
        self._secret = secret or secrets.token_bytes(16)
        if metrics is None:
            from ..platform.metrics import Metrics

            metrics = Metrics()  # a private registry nobody scrapes: no-op
        metrics.muc_rooms.labels(domain).set_function(lambda: len(self.rooms))
        metrics.muc_occupants.labels(domain).set_function(
            lambda: sum(len(r.occupants) for r in self.rooms.values())
        )
        self._messages = metrics.muc_messages.labels(domain)
        self._fanout = metrics.muc_fanout.labels(domain)
        self._locks: dict[str, _RoomLock] = {}

    async def route(self, ctx: Context, env: Envelope) -> None:
        to = env.to
        el = env.tree()
        if to.local is None:
            if env.kind == "iq":
                await self._service_iq(ctx, env, el)
            elif env.type not in ("error", "result"):
                raise StanzaError(StanzaCondition.SERVICE_UNAVAILABLE)
            return
        local = to.local
        # one stanza of a room at a time, its fan-out included: every
        # occupant sees the room's stanzas in the same order
        lock = self._locks.get(local)
        if lock is None:
            lock = self._locks[local] = _RoomLock()
        lock.users += 1
        try:
            async with lock.lock:
                await self._route_room(ctx, env, el, local)
        finally:
            lock.users -= 1
            if lock.users == 0 and self._locks.get(local) is lock:
                del self._locks[local]

    async def _route_room(
        self, ctx: Context, env: Envelope, el: etree._Element, local: str
    ) -> None:
        to, frm = env.to, env.frm
        room = await self._held(ctx, local)
        fresh = False
        out: list[etree._Element]
        if env.kind == "presence":
            if room is None:
                if env.type not in (None, "available") or not to.resource:
                    if env.type in (None, "available"):
                        raise StanzaError(StanzaCondition.JID_MALFORMED, "a nickname is required")
                    return
                room = await self._create(ctx, to, frm)
                fresh = True
        elif room is None:
            if env.type in ("error", "result"):
                return
            raise StanzaError(StanzaCondition.ITEM_NOT_FOUND, "no such room")
        before = _Mark(room, self.images is not None, fresh)
        if env.kind == "presence":
            out = room.handle_presence(frm, to.resource, el)
        elif env.kind == "message":
            out = room.handle_message(frm, to.resource, el)
        elif env.type in ("result", "error"):
            # an occupant answering an IQ the room forwarded to it
            out = room.iq_answer(frm, to.resource, el) if to.resource else []
        elif to.resource is None and len(el) == 1 and el[0].tag == _MAM_QUERY:
            out = await self._archive_query(ctx, room, env, el)
        else:
            out = self._room_iq(room, env, el)
        await self._save(ctx, room, before)
        if env.kind == "message" and env.type == "groupchat" and to.resource is None and out:
            self._messages.inc()
        await self.fan_out(ctx, out)
        if room.destroyed or room.empty:
            # a temporary room ends with its last occupant (XEP-0045 10.1.3);
            # a persistent one leaves memory and comes back from storage
            if self.rooms.get(local) is room:
                del self.rooms[local]

    async def fan_out(self, ctx: Context, out: list[etree._Element]) -> None:
        """Route what a room sent: each recipient's stanzas in order, the
        recipients at once, so that in a cluster what goes to one edge
        leaves in one batch rather than one round trip per occupant."""
        self._fanout.inc(len(out))
        if len(out) <= 1:
            for o in out:
                await ctx.send(o)
            return
        by_to: dict[str | None, list[etree._Element]] = {}
        for o in out:
            by_to.setdefault(o.get("to"), []).append(o)

        async def one(items: list[etree._Element]) -> None:
            for o in items:
                await ctx.send(o)

        await asyncio.gather(*(one(items) for items in by_to.values()))

    async def _held(self, ctx: Context, local: str) -> Room | None:
        """The room in memory, or brought into it (see :meth:`_load`)."""
        room = self.rooms.get(local)
        if room is None:
            room, gone = await self._load(ctx, local)
            await self.fan_out(ctx, gone)
        return room

    async def _load(self, ctx: Context, local: str) -> tuple[Room | None, list[etree._Element]]:
        """A room that is not in memory: a persistent one from storage, and
        in a cluster what the replica that held it kept of it (its
        occupants; a temporary room's state and history). Also what to tell
        the occupants about those that went away meanwhile."""
        jid = JID.make(local, self.domain)
        state = await ctx.storage.get_muc_room(self.domain, local)
        image = await self.images.read(jid) if self.images is not None else None
        if state is None and (image is None or image.state is None):
            if image is not None and self.images is not None:
                await self.images.drop(jid)  # occupants of a room that ended
            return None, []
        room = self._new_room(jid)
        if state is not None:
            persist.apply_state(room, state)
            persist.restore_history(room, await ctx.storage.get_muc_history(self.domain, local))
            room.history_seq = len(room.history)
            if image is not None:
                image.state = None  # what storage has is what counts
        if image is not None:
            memory.restore(room, image)
        self.rooms[local] = room
        gone = await self._prune(ctx, room)
        if room.empty and not room.config.persistent:
            del self.rooms[local]  # a temporary room whose occupants all went: it ended
            return None, gone
        return room, gone

    async def _prune(self, ctx: Context, room: Room) -> list[etree._Element]:
        """Occupants whose session ended while nobody held the room (their
        unavailable presence found no room to go to) leave it now."""
        local = [o for o in room.occupants.values() if ctx.is_local(o.jid.domain)]
        if not local:
            return []
        found = await asyncio.gather(*(ctx.sessions.get(o.jid) for o in local))
        gone = [o for o, s in zip(local, found, strict=True) if s is None]
        if not gone:
            return []
        before = _Mark(room, True)
        out: list[etree._Element] = []
        for occ in gone:
            bye = st.make("presence", to=room.jid, frm=occ.jid)
            bye.set("type", "unavailable")
            told = room.handle_presence(occ.jid, occ.nick, bye)
            out.extend(o for o in told if o.get("to") != str(occ.jid))
        log.info("room %s: %d occupants had gone meanwhile", room.jid, len(gone))
        await self._save(ctx, room, before)
        return out

    async def _save(self, ctx: Context, room: Room, before: _Mark) -> None:
        """Store what changed of a persistent room: its state document, the
        messages added to its history; forget a room destroyed or made
        temporary. Stored before the room's answers go out, so what a client
        was told has happened is kept."""
        local = room.jid.local
        assert local is not None
        await self._remember(room, before)
        storage = ctx.storage
        archived, room.to_archive = room.to_archive, []
        if room.destroyed or (before.persistent and not room.config.persistent):
            await storage.delete_muc_room(self.domain, local)
            await storage.delete_archive(str(room.jid))
            return
        if not room.config.persistent or room.locked:
            return
        for sid, when, sender, message in archived:
            await storage.archive_message(
                str(room.jid),
                ArchivedMessage(sid, when, sender, False, etree.tostring(message)),
            )
        if room.state_seq != before.state_seq or not before.persistent:
            await storage.put_muc_room(self.domain, local, persist.state_of(room))
        added = min(room.history_seq - before.history_seq, len(room.history))
        keep = min(room.config.history_length, self.limits.max_history)
        for past in list(room.history)[len(room.history) - added :] if added > 0 else []:
            await storage.add_muc_history(
                self.domain,
                local,
                secrets.token_hex(8),
                past.when,
                persist.history_entry(past.element),
                keep,
            )

    async def _archive_query(
        self, ctx: Context, room: Room, env: Envelope, el: etree._Element
    ) -> list[etree._Element]:
        """XEP-0313 on the room's JID: the results to the asker, then the
        IQ result with ``<fin/>`` (one recipient: fan_out keeps the order)."""
        if env.type == "get":
            return [_result(el, env, mam.query_form())]
        if env.type != "set":
            raise StanzaError(StanzaCondition.BAD_REQUEST)
        if not room.may_read_archive(env.frm):
            raise StanzaError(StanzaCondition.FORBIDDEN, "only members may read this archive")
        query = mam.parse_query(el[0], ctx.settings.mam_max_page)
        page = await ctx.storage.query_archive(str(room.jid), query.query)
        if page is None:
            raise StanzaError(StanzaCondition.ITEM_NOT_FOUND, "no such message in the archive")
        messages = list(reversed(page.messages)) if query.flip else page.messages
        out = [mam.result_message(str(room.jid), str(env.frm), query.queryid, m) for m in messages]
        asked = query.query
        backward = asked.last or asked.page_before is not None
        out.append(_result(el, env, mam.fin(page, query.flip, backward)))
        return out

    async def _remember(self, room: Room, before: _Mark) -> None:
        """Keep the room's image where the replica taking it over finds it."""
        if self.images is None or before.occupants is None:
            return
        if room.destroyed or room.empty:
            await self.images.drop(room.jid)
            return
        added = min(room.history_seq - before.history_seq, len(room.history))
        changes = memory.changes(
            room,
            before.occupants,
            room.state_seq != before.state_seq or before.persistent != room.config.persistent,
            added,
            self.limits.max_history,
        )
        if changes:
            await self.images.write(room.jid, changes)

    async def _create(self, ctx: Context, to: JID, frm: JID) -> Room:
        assert to.local is not None
        owned = {local for local, r in self.rooms.items() if r.affiliation(frm) == "owner"}
        if len(owned) < self.max_rooms_per_user:
            # and the persistent rooms out of memory. (A cluster's other
            # replicas' temporary rooms are not counted: they end with their
            # last occupant.) Only a creation pays for the scan.
            me = str(frm.bare)
            for local, state in await ctx.storage.muc_rooms(self.domain):
                if local not in owned and persist.owner_of(state, me):
                    owned.add(local)
        if len(owned) >= self.max_rooms_per_user:
            raise StanzaError(StanzaCondition.NOT_ALLOWED, "you own too many rooms")
        room = self._new_room(to.bare)
        room.affiliations = {str(frm.bare): "owner"}
        room.locked = True
        self.rooms[to.local] = room
        return room

    def _new_room(self, jid: JID) -> Room:
        return Room(
            jid=jid,
            config=RoomConfig(
                max_users=self.limits.max_users, history_length=min(20, self.limits.max_history)
            ),
            limits=self.limits,
            clock=self.clock,
            secret=self._secret,
        )

    # ---- administration (MucHost) ---------------------------------------------------

    async def summaries(self, ctx: Context) -> list[RoomSummary]:
        out: dict[str, RoomSummary] = {}
        for local, state in await ctx.storage.muc_rooms(self.domain):
            room = self._new_room(JID.make(local, self.domain))
            persist.apply_state(room, state)
            out[local] = summary_of(room)
        for local, room in self.rooms.items():
            out[local] = summary_of(room)
        return [out[k] for k in sorted(out)]

    async def summary(self, ctx: Context, local: str) -> RoomSummary | None:
        room = await self._held(ctx, local)
        return summary_of(room) if room is not None else None

    async def create_room(
        self, ctx: Context, local: str, owner: JID, name: str, members_only: bool
    ) -> bool:
        if local in self.rooms or await ctx.storage.get_muc_room(self.domain, local) is not None:
            return False
        room = self._new_room(JID.make(local, self.domain))
        room.affiliations = {str(owner.bare): "owner"}
        room.config.name = name
        room.config.persistent = True
        room.config.members_only = members_only
        await ctx.storage.put_muc_room(self.domain, local, persist.state_of(room))
        return True

    async def destroy_room(
        self, ctx: Context, local: str, reason: str | None, alternate: JID | None
    ) -> bool:
        room = await self._held(ctx, local)
        if room is None:
            return False
        before = _Mark(room, self.images is not None)
        out = room.destroy(str(alternate) if alternate is not None else None, reason)
        await self._save(ctx, room, before)
        self.rooms.pop(local, None)
        await self.fan_out(ctx, out)
        return True

    async def set_affiliation(
        self, ctx: Context, local: str, jid: JID, affiliation: str, reason: str | None
    ) -> bool:
        room = await self._held(ctx, local)
        if room is None:
            return False
        if affiliation not in AFFILIATIONS:
            raise StanzaError(StanzaCondition.BAD_REQUEST, "not an affiliation")
        before = _Mark(room, self.images is not None)
        item = etree.Element(q(MUC_ADMIN, "item"), affiliation=affiliation, jid=str(jid.bare))
        out = room.apply_affiliation(item, reason, None)
        await self._save(ctx, room, before)
        if room.empty:
            self.rooms.pop(local, None)  # a persistent room comes back from storage
        await self.fan_out(ctx, out)
        return True

    # ---- IQs -----------------------------------------------------------------------

    def _room_iq(self, room: Room, env: Envelope, el: etree._Element) -> list[etree._Element]:
        query = el[0] if len(el) == 1 else None
        if query is None:
            raise StanzaError(StanzaCondition.BAD_REQUEST)
        frm, to = env.frm, env.to
        if to.resource:
            # XEP-0410: a ping to one's own occupant JID tells whether one is joined
            if query.tag == _PING and env.type == "get":
                occ = room.occupant_of(frm)
                if occ is None or occ.nick != to.resource:
                    raise StanzaError(StanzaCondition.NOT_ACCEPTABLE, "you are not joined")
                return [_result(el, env, None)]
            # 7.x: an IQ to an occupant goes to its real JID, from the sender's nick
            return room.forward_iq(frm, to.resource, el)
        tag, typ = query.tag, env.type
        if tag == _DISCO_INFO and typ == "get":
            if room.locked and room.affiliation(frm) != "owner":
                raise StanzaError(StanzaCondition.ITEM_NOT_FOUND)
            # at node x-roomuser-item: the asker's reserved nickname (7.12)
            return [_result(el, env, room.disco_info(frm, query.get("node")))]
        if tag == _DISCO_ITEMS and typ == "get":
            return [_result(el, env, etree.Element(_DISCO_ITEMS, nsmap={None: ns.DISCO_ITEMS}))]
        if tag == _ADMIN:
            if typ == "get":
                return [_result(el, env, room.admin_get(frm, query))]
            out = room.admin_set(frm, query)
            return [_result(el, env, None), *out]
        if tag == _OWNER:
            if typ == "get":
                return [_result(el, env, room.owner_get(frm))]
            out = room.owner_set(frm, query)
            return [_result(el, env, None), *out]
        if tag == q(ns.REGISTER, "query"):
            # 7.10: registering with the room (a member with a reserved nickname)
            if typ == "get":
                return [_result(el, env, room.register_get(frm))]
            out = room.register_set(frm, query)
            return [_result(el, env, None), *out]
        if tag == _PING and typ == "get":
            return [_result(el, env, None)]
        raise StanzaError(StanzaCondition.SERVICE_UNAVAILABLE)

    async def _service_iq(self, ctx: Context, env: Envelope, el: etree._Element) -> None:
        if env.type in ("result", "error"):
            return
        query = el[0] if len(el) == 1 else None
        if query is None:
            raise StanzaError(StanzaCondition.BAD_REQUEST)
        if query.tag == _DISCO_INFO and env.type == "get" and query.get("node") is None:
            info = etree.Element(_DISCO_INFO, nsmap={None: ns.DISCO_INFO})
            etree.SubElement(
                info,
                q(ns.DISCO_INFO, "identity"),
                category="conference",
                type="text",
                name="Chatrooms",
            )
            for var in (ns.DISCO_INFO, ns.DISCO_ITEMS, MUC, OCCUPANT_ID, ns.PING):
                etree.SubElement(info, q(ns.DISCO_INFO, "feature"), var=var)
            await ctx.send(_result(el, env, info))
            return
        if query.tag == _DISCO_ITEMS and env.type == "get" and query.get("node") is None:
            items = etree.Element(_DISCO_ITEMS, nsmap={None: ns.DISCO_ITEMS})
            listed: dict[str, str] = {}
            for local, state in await ctx.storage.muc_rooms(self.domain):
                public, name = persist.listing(state)
                if public:
                    listed[local] = name or local
            if self.images is not None:
                # the temporary rooms the other replicas hold
                for jid, name in (await self.images.listed(self.domain)).items():
                    listed[JID.parse(jid).local or ""] = name
            for room in self.rooms.values():
                local = room.jid.local or ""
                listed.pop(local, None)
                if room.config.public and not room.locked:
                    listed[local] = room.config.name or local
            for local, name in sorted(listed.items()):
                it = etree.SubElement(
                    items, q(ns.DISCO_ITEMS, "item"), jid=f"{local}@{self.domain}"
                )
                it.set("name", name)
            await ctx.send(_result(el, env, items))
            return
        if query.tag == _PING and env.type == "get":
            await ctx.send(_result(el, env, None))
            return
        raise StanzaError(StanzaCondition.SERVICE_UNAVAILABLE)


def summary_of(room: Room) -> RoomSummary:
    c = room.config
    return RoomSummary(
        jid=room.jid,
        name=c.name,
        persistent=c.persistent,
        public=c.public,
        members_only=c.members_only,
        moderated=c.moderated,
        password_protected=bool(c.password),
        occupants=len(room.occupants),
        affiliations=dict(sorted(room.affiliations.items())),
    )


def _result(iq: etree._Element, env: Envelope, payload: etree._Element | None) -> etree._Element:
    r = st.make("iq", to=env.frm, frm=env.to, type_="result", id_=iq.get("id"))
    if payload is not None:
        r.append(payload)
    return r


class MucHost:
    """The :class:`~services.core.muc.Muc` contract over this process's
    services, one per MUC domain; ``ctx`` routes what the rooms send. With
    an ``ownership`` (a cluster of muc replicas), a room another replica
    holds is that replica's: its stanzas and commands are passed on there."""

    def __init__(
        self,
        ctx: Context,
        services: dict[str, MucService],
        ownership: RoomOwnership | None = None,
    ) -> None:
        self.ctx = ctx
        self.services = services
        self.ownership = ownership

    def _service(self, domain: str) -> MucService:
        service = self.services.get(domain)
        if service is None:
            raise StanzaError(StanzaCondition.SERVICE_UNAVAILABLE, "no such group chat service")
        return service

    async def _elsewhere(self, room: JID) -> Muc | None:
        if self.ownership is None or room.local is None:
            return None  # the service's own domain is every replica's
        return await self.ownership.elsewhere(room.bare)

    async def _settle(self, room: JID) -> None:
        """A room that left memory (ended, or unloaded) is not held any more."""
        if self.ownership is not None and room.local is not None:
            if room.local not in self._service(room.domain).rooms:
                await self.ownership.release(room.bare)

    async def route(self, room: JID, env: Envelope) -> None:
        other = await self._elsewhere(room)
        if other is not None:
            try:
                await other.route(room, env)
                return
            except StanzaError:
                raise
            except Exception:
                # the holder did not answer: once its heartbeat is gone the
                # lease is free, and the room comes up here; until then the
                # caller's retry asks again
                if await self._elsewhere(room) is not None:
                    raise
        try:
            await self._service(room.domain).route(self.ctx, env)
        finally:
            await self._settle(room)

    async def shutdown(self) -> None:
        """Let every room held here go. Where rooms' images are kept (a
        cluster), the replica that takes a room over carries it on and its
        occupants see nothing; elsewhere each is told it is out (332) and
        joins again."""
        for service in self.services.values():
            for local, room in list(service.rooms.items()):
                service.rooms.pop(local, None)
                try:
                    if service.images is None:
                        await service.fan_out(self.ctx, room.shutdown())
                    if self.ownership is not None:
                        await self.ownership.release(room.jid)
                except Exception:
                    log.exception("letting %s go failed", room.jid)

    async def held(self) -> list[JID]:
        """The rooms in this process's memory."""
        return [r.jid for s in self.services.values() for r in s.rooms.values()]

    async def renew(self) -> None:
        """Keep the leases of the rooms held; forget any another replica took."""
        if self.ownership is None:
            return
        held = await self.held()
        lost = await self.ownership.renew(held)
        for room in lost:
            log.warning("room %s is held by another replica now: dropping it here", room)
            self._service(room.domain).rooms.pop(room.local or "", None)
        for service in self.services.values():
            if service.images is not None:
                await service.images.touch([r.jid for r in service.rooms.values()])

    async def rooms(self, domain: str) -> list[RoomSummary]:
        return await self._service(domain).summaries(self.ctx)

    async def room(self, room: JID) -> RoomSummary | None:
        other = await self._elsewhere(room)
        if other is not None:
            return await other.room(room)
        try:
            return await self._service(room.domain).summary(self.ctx, _local(room))
        finally:
            await self._settle(room)

    async def create_room(self, room: JID, owner: JID, name: str, members_only: bool) -> bool:
        other = await self._elsewhere(room)
        if other is not None:
            return await other.create_room(room, owner, name, members_only)
        try:
            return await self._service(room.domain).create_room(
                self.ctx, _local(room), owner, name, members_only
            )
        finally:
            await self._settle(room)

    async def destroy_room(self, room: JID, reason: str | None, alternate: JID | None) -> bool:
        other = await self._elsewhere(room)
        if other is not None:
            return await other.destroy_room(room, reason, alternate)
        try:
            return await self._service(room.domain).destroy_room(
                self.ctx, _local(room), reason, alternate
            )
        finally:
            await self._settle(room)

    async def set_affiliation(
        self, room: JID, jid: JID, affiliation: str, reason: str | None
    ) -> bool:
        other = await self._elsewhere(room)
        if other is not None:
            return await other.set_affiliation(room, jid, affiliation, reason)
        try:
            return await self._service(room.domain).set_affiliation(
                self.ctx, _local(room), jid, affiliation, reason
            )
        finally:
            await self._settle(room)


def _local(room: JID) -> str:
    if room.local is None or room.resource is not None:
        raise StanzaError(StanzaCondition.JID_MALFORMED, "a room's bare JID is required")
    return room.local


class MucDomain:
    """A MUC domain in the router's domain registry, served through the Muc
    contract (the muc role's replicas over gRPC, or a MucHost)."""

    def __init__(self, muc: Muc) -> None:
        self.muc = muc

    async def route(self, ctx: Context, env: Envelope) -> None:
        await self.muc.route(env.to.bare, env)


def muc_domains(settings: Settings) -> list[str]:
    """The group chat domain of each host (``muc_subdomain``; none if empty)."""
    if not settings.muc_subdomain:
        return []
    return [f"{settings.muc_subdomain}.{host}" for host in settings.hosts]


def muc_services(
    settings: Settings,
    metrics: Metrics | None = None,
    images: RoomMemory | None = None,
    secret: bytes | None = None,
) -> dict[str, MucService]:
    """The group chat service of each MUC domain, by domain."""
    return {
        domain: MucService(
            domain,
            max_occupants=settings.muc_max_occupants,
            max_history=settings.muc_max_history,
            max_rooms_per_user=settings.muc_max_rooms_per_user,
            metrics=metrics,
            images=images,
            secret=secret,
        )
        for domain in muc_domains(settings)
    }
