"""Presence broadcast, probes and the subscription state machine (RFC 6121).

The router hands this service every presence stanza: :meth:`PresenceService.outbound`
gets what a local user's bound session sends, :meth:`PresenceService.inbound`
what is addressed to a local user (from another local user through the routed
path, from the server itself, later from remote servers). Subscription stanzas
run the state tables of RFC 6121 Appendix A: the user's outbound side in
``outbound``, then the stanza is stamped (bare ``from`` and ``to``) and routed,
and the contact's inbound side runs in ``inbound``.

Roster items (:class:`~services.storage.interface.RosterItem`) carry the
subscription (none/to/from/both), ``ask`` (pending out), ``pending_in`` and
``approved`` (pre-approval, RFC 6121 section 3.4). An item that only records an
inbound request from someone the user never put in the roster (state "None +
Pending In" with no name and no groups) is *hidden*: it is left out of roster
results and pushes, and deleted once the request is withdrawn or denied.

Every change to a roster item is a compare-and-set in storage
(:func:`change_roster_item` over ``Storage.update_roster_item``): read the
item, decide, write only if the item is still what was read, otherwise read
and decide again. That holds across processes: in cluster mode a user's
inbound presence reaches whichever replica its *sender* maps to, and the admin
API writes rosters from its own process. A per-user lock in this process only
saves most of the retries. No lock is held while routing: routing to a local
contact re-enters this service, and an auto-reply can come straight back to
the same user.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import logging
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Generic, TypeVar

from lxml import etree

from ..router.interface import Envelope, Session
from ..storage.interface import LastActivity, RosterItem, Storage
from ..xmpp import ns
from ..xmpp import stanza as st
from ..xmpp.errors import StanzaError
from ..xmpp.jid import JID

if TYPE_CHECKING:
    from ..features.base import Context
    from ..router.service import RouterService

log = logging.getLogger("xmppd.presence")

SUBSCRIPTION_TYPES = frozenset({"subscribe", "subscribed", "unsubscribe", "unsubscribed"})

_SAFE = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
_PRIORITY = ns.q(ns.CLIENT, "priority")
_STATUS = ns.q(ns.CLIENT, "status")
_push_ids = itertools.count(1)
T = TypeVar("T")


# ---------------------------------------------------------------- roster items


def is_hidden(item: RosterItem) -> bool:
    """An item that only records an unanswered inbound request (not in the roster)."""
    return (
        item.subscription == "none"
        and item.pending_in
        and not item.ask
        and not item.approved
        and not item.name
        and not item.groups
    )


def _is_void(item: RosterItem) -> bool:
    return (
        item.subscription == "none"
        and not item.pending_in
        and not item.ask
        and not item.approved
        and not item.name
        and not item.groups
    )


def _add_from(sub: str) -> str:
    return {"none": "from", "to": "both"}.get(sub, sub)


def _add_to(sub: str) -> str:
    return {"none": "to", "from": "both"}.get(sub, sub)


def _drop_from(sub: str) -> str:
    return {"from": "none", "both": "to"}.get(sub, sub)


def _drop_to(sub: str) -> str:
    return {"to": "none", "both": "from"}.get(sub, sub)


def _has_from(item: RosterItem | None) -> bool:
    return item is not None and item.subscription in ("from", "both")


def _has_to(item: RosterItem | None) -> bool:
    return item is not None and item.subscription in ("to", "both")


def _stored_form(old: RosterItem | None, new: RosterItem) -> RosterItem | None:
    """What to store for ``new``: nothing (None) for a withdrawn or denied
    request from someone never in the roster, rather than a void item."""
    if _is_void(new) and (old is None or is_hidden(old)):
        return None
    return new


# ---------------------------------------------------------------- compare-and-set

#: attempts of one roster change: each retry means another writer changed the
#: item between our read and our write, so a handful is plenty
CAS_TRIES = 16

#: ``decide(stored item) -> (write?, new item or None to delete, result)``; it
#: may run several times, so it must only compute
Decide = Callable[[RosterItem | None], tuple[bool, RosterItem | None, T]]


class RosterConflictError(RuntimeError):
    """A roster item kept changing under a read-modify-write (``CAS_TRIES`` times)."""


@dataclass(frozen=True, slots=True)
class RosterChange(Generic[T]):
    old: RosterItem | None  # the stored item the change was decided on
    new: RosterItem | None  # the item stored now (``old`` when nothing was written)
    version: int | None  # the new roster version; None when nothing was written
    result: T  # what ``decide`` returned with it


async def change_roster_item(
    storage: Storage, user: JID, jid: str, decide: Decide[T]
) -> RosterChange[T]:
    """Read-modify-write ``user``'s item for ``jid`` with compare-and-set.

    ``decide`` gets the stored item (None: none) and returns whether to write,
    the item to write (None: delete) and a result for the caller. The write
    goes through only if the item is still the one ``decide`` saw; otherwise
    the item is read and decided on again, so no writer's update is lost,
    whichever process it runs in."""
    assert user.local is not None
    for _ in range(CAS_TRIES):
        old = await storage.get_roster_item(user.domain, user.local, jid)
        write, new, result = decide(old)
        if not write or (new is None and old is None):
            return RosterChange(old, old, None, result)
        version = await storage.update_roster_item(user.domain, user.local, jid, old, new)
        if version is not None:
            return RosterChange(old, new, version, result)
    raise RosterConflictError(f"the roster item {jid} of {user} kept changing")


def roster_item_element(item: RosterItem, remove: bool = False) -> etree._Element:
    """``<item/>`` as RFC 6121 section 2.1.2 shows it (pending-in is never visible)."""
    el = etree.Element(ns.q(ns.ROSTER, "item"), nsmap={None: ns.ROSTER})
    el.set("jid", item.jid)
    if remove:
        el.set("subscription", "remove")
        return el
    if item.name:
        el.set("name", item.name)
    el.set("subscription", item.subscription)
    if item.ask:
        el.set("ask", "subscribe")
    if item.approved:
        el.set("approved", "true")
    for group in item.groups:
        etree.SubElement(el, ns.q(ns.ROSTER, "group")).text = group
    return el


def roster_query(ver: int, items: Iterable[RosterItem], remove: bool = False) -> etree._Element:
    query = etree.Element(ns.q(ns.ROSTER, "query"), nsmap={None: ns.ROSTER})
    query.set("ver", str(ver))
    for item in items:
        query.append(roster_item_element(item, remove))
    return query


async def push_roster(
    ctx: Context, user: JID, item: RosterItem, ver: int, remove: bool = False
) -> None:
    """Roster push (RFC 6121 2.1.6) to every interested resource of ``user``."""
    sessions = [s for s in await ctx.sessions.resources(user.bare) if s.interested]
    if not sessions:
        return
    query = roster_query(ver, [item], remove)
    for s in sessions:
        iq = st.make("iq", to=s.jid, frm=user.bare, type_="set", id_=f"push{next(_push_ids)}")
        iq.append(copy.deepcopy(query))
        await ctx.deliver(s.jid, etree.tostring(iq, with_tail=False))


# ---------------------------------------------------------------- stanza helpers


def _readdress(src: bytes | etree._Element, frm: JID | None, to: JID | None) -> etree._Element:
    """A copy of a stanza with new addresses (``to=None`` drops the attribute)."""
    el = etree.fromstring(src, parser=_SAFE) if isinstance(src, bytes) else copy.deepcopy(src)
    if frm is not None:
        el.set("from", str(frm))
    if to is None:
        el.attrib.pop("to", None)
    else:
        el.set("to", str(to))
    return el


def _priority(el: etree._Element) -> int:
    """RFC 6121 4.7.2.3: an integer from -128 to +127, 0 when absent or unreadable."""
    p = el.find(_PRIORITY)
    if p is None or not p.text:
        return 0
    try:
        value = int(p.text.strip())
    except ValueError:
        return 0
    return max(-128, min(127, value))


def _unavailable_status(data: bytes | None) -> str | None:
    """The status text of a stored presence, if it is an unavailable one."""
    if data is None:
        return None
    try:
        el = etree.fromstring(data, parser=_SAFE)
    except etree.XMLSyntaxError:
        return None
    if el.get("type") != "unavailable":
        return None
    status = el.find(_STATUS)
    return status.text if status is not None and status.text else None


def last_unavailable(frm: JID, to: JID, last: LastActivity) -> etree._Element:
    """XEP-0256: unavailable presence carrying the idle time since the last logout."""
    p = st.make("presence", to=to, frm=frm, type_="unavailable")
    if last.status:
        etree.SubElement(p, _STATUS).text = last.status
    query = etree.SubElement(p, ns.q(ns.LAST, "query"), nsmap={None: ns.LAST})
    query.set("seconds", str(max(0, int(time.time() - last.stamp))))
    return p


def _jid(s: str) -> JID | None:
    try:
        return JID.parse(s)
    except StanzaError:
        return None


#: what an outbound subscription stanza does besides the roster change:
#: (route it, send current presence after it, send unavailable before it)
_OutboundFlags = tuple[bool, bool, bool]


@dataclass(frozen=True, slots=True)
class _InboundEffects:
    """What an inbound subscription stanza does besides the roster change."""

    deliver: bool = False  # to the user's available resources
    reply: str | None = None  # presence type the server answers with
    auto_approved: bool = False
    gained_to: bool = False
    lost_from: bool = False
    lost_to: bool = False


# ---------------------------------------------------------------- the service


class PresenceService:
    def __init__(self, router: RouterService) -> None:
        self.router = router
        self._locks: weakref.WeakValueDictionary[JID, asyncio.Lock] = weakref.WeakValueDictionary()

    # ---- plumbing ---------------------------------------------------------------

    def _lock(self, user: JID) -> asyncio.Lock:
        lock = self._locks.get(user)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[user] = lock
        return lock

    async def _roster(self, user: JID) -> list[RosterItem]:
        assert user.local is not None
        _, items = await self.router.storage.get_roster(user.domain, user.local)
        return items

    async def _get_item(self, user: JID, contact: JID) -> RosterItem | None:
        assert user.local is not None
        return await self.router.storage.get_roster_item(user.domain, user.local, str(contact))

    async def _change(self, user: JID, contact: JID, decide: Decide[T]) -> T:
        """Change an item (compare-and-set) and push what was written, unless
        hidden. Call with the user's lock held: it only saves CAS retries."""
        change = await change_roster_item(self.router.storage, user, str(contact), decide)
        new = change.new
        if change.version is not None and new is not None and not is_hidden(new):
            await push_roster(self.router, user, new, change.version)
        return change.result

    async def _available_sessions(self, user: JID) -> list[Session]:
        return [s for s in await self.router.sessions.resources(user.bare) if s.available]

    async def _send(self, el: etree._Element, frm: JID, to: JID) -> None:
        """Route a server-built presence with ``trusted`` so it lands in :meth:`inbound`."""
        await self.router.route(Envelope.of(el, frm, to), trusted=True)

    async def _blocked(self, user: JID, other: JID) -> bool:
        """XEP-0191: does the local ``user`` block ``other``?"""
        if user.local is None or other.bare == user.bare:
            return False
        return await self.router.blocks.blocks(user.bare, other)

    # ---- outbound: from a local user's session ---------------------------------

    async def outbound(self, env: Envelope) -> None:
        el = env.tree()
        typ = env.type
        if typ is not None and typ in SUBSCRIPTION_TYPES:
            if el.get("to") is not None:
                await self._outbound_subscription(env.frm.bare, env.to.bare, typ, el)
            return
        if typ == "probe":
            return  # the server probes on the user's behalf (RFC 6121 4.3)
        if el.get("to") is None:
            if typ is None:
                await self._available(env.frm, el)
            elif typ == "unavailable":
                await self._unavailable(env.frm, el)
            return
        await self._directed(env)

    async def _available(self, full: JID, el: etree._Element) -> None:
        """Initial presence (RFC 6121 4.2) or a presence update (4.4)."""
        s = await self.router.sessions.get(full)
        if s is None:
            return
        pres = _readdress(el, full, None)
        first = not s.available
        flushed = s.available and s.priority >= 0
        s.priority = _priority(el)
        s.available = True
        s.presence = etree.tostring(pres, with_tail=False)
        await self.router.sessions.update(s, broadcast=True)
        roster = await self._roster(full.bare)  # read once for all three below
        await self._broadcast(full, pres, include=full, roster=roster)
        if first:
            await self._probe_contacts(full, roster, s.broadcast_seq)
            await self._redeliver_pending(full, roster)
        if s.priority >= 0 and not flushed:
            # XEP-0160: offline messages go to the first non-negative available resource
            await self.router.offline.flush(full)

    async def _unavailable(self, full: JID, el: etree._Element) -> None:
        """Unavailable broadcast from a session that stays connected (RFC 6121 4.5)."""
        s = await self.router.sessions.get(full)
        if s is None:
            return
        pres = _readdress(el, full, None)
        was_available = s.available
        s.available = False
        s.presence = etree.tostring(pres, with_tail=False)
        directed, s.directed = s.directed, set()
        await self.router.sessions.update(s)
        sent = await self._broadcast(full, pres, include=full) if was_available else set()
        await self._directed_unavailable(full, pres, directed, sent)

    async def _broadcast(
        self,
        full: JID,
        pres: etree._Element,
        include: JID | None,
        roster: list[RosterItem] | None = None,
    ) -> set[JID]:
        """Send to contacts with from/both and to the user's available resources
        (plus ``include``, the sender, RFC 6121 4.2.2/4.4.2). Returns the contacts."""
        user = full.bare
        sent: set[JID] = set()
        for item in roster if roster is not None else await self._roster(user):
            if not _has_from(item):
                continue
            contact = _jid(item.jid)
            if contact is None or await self._blocked(user, contact):
                continue
            sent.add(contact)
            await self._send(_readdress(pres, full, contact), full, contact)
        for s in await self.router.sessions.resources(user):
            if s.available or s.jid == include:
                await self.router.deliver(
                    s.jid, etree.tostring(_readdress(pres, full, s.jid), with_tail=False)
                )
        return sent

    async def _directed_unavailable(
        self, full: JID, pres: etree._Element, directed: set[JID], sent: set[JID]
    ) -> None:
        """RFC 6121 4.6.3: unavailable to entities that got directed presence."""
        for target in directed:
            if target.bare in sent or await self._blocked(full, target):
                continue
            await self._send(_readdress(pres, full, target), full, target)

    async def _probe_contacts(self, full: JID, roster: list[RosterItem], seq: int = 0) -> None:
        """RFC 6121 4.3: presence of the contacts the user is subscribed to.
        Local contacts' rosters and last activity come in one storage query.
        ``seq``: the user's own broadcast_seq (see :meth:`_answer_probe`)."""
        user = full.bare
        known: dict[JID, tuple[RosterItem, LastActivity | None]] | None = None
        for item in roster:
            if not _has_to(item):
                continue
            contact = _jid(item.jid)
            if contact is None or await self._blocked(user, contact):
                continue
            if self.router.is_local(contact.domain):
                if contact.local is not None:
                    if known is None:
                        known = {
                            JID.make(username, host, None): (it, last)
                            for host, username, it, last in (
                                await self.router.storage.roster_entries_for(str(user))
                            )
                        }
                    await self._answer_probe(
                        contact, user, full, known.get(contact.bare, (None, None)), seq
                    )
            else:
                probe = st.make("presence", to=contact, frm=user, type_="probe")
                await self._send(probe, user, contact)

    async def _redeliver_pending(self, full: JID, roster: list[RosterItem]) -> None:
        """RFC 6121 3.1.3: unanswered subscription requests, on each login."""
        for item in roster:
            if item.pending_in and item.pending_in_stanza is not None:
                await self.router.deliver(full, item.pending_in_stanza)

    async def _directed(self, env: Envelope) -> None:
        """Directed presence (RFC 6121 4.6), tracked for the unavailable on logout."""
        full, target = env.frm, env.to
        if target.bare != full.bare:
            if await self._blocked(full, target):
                return
            s = await self.router.sessions.get(full)
            if s is not None:
                if env.type is None:
                    s.directed.add(target)
                elif env.type == "unavailable":
                    s.directed.discard(target)
                await self.router.sessions.update(s)
        await self.router.route(env, trusted=True)

    async def _send_current_presence(self, user: JID, to: JID) -> None:
        """Presence of each available resource of ``user``, routed to ``to``."""
        for s in await self._available_sessions(user):
            if s.presence is not None:
                await self._send(_readdress(s.presence, s.jid, to), s.jid, to)

    async def _send_unavailable(self, user: JID, to: JID) -> None:
        for s in await self._available_sessions(user):
            pres = st.make("presence", to=to, frm=s.jid, type_="unavailable")
            await self._send(pres, s.jid, to)

    async def _outbound_subscription(
        self, user: JID, contact: JID, typ: str, el: etree._Element
    ) -> None:
        """RFC 6121 section 3 and Appendix A.2, the user's side."""
        if contact == user or (contact.local is None and self.router.is_local(contact.domain)):
            return
        if await self._blocked(user, contact):
            return
        out = _readdress(el, user, contact)

        def decide(item: RosterItem | None) -> tuple[bool, RosterItem | None, _OutboundFlags]:
            def write(
                new: RosterItem, flags: _OutboundFlags
            ) -> tuple[bool, RosterItem | None, _OutboundFlags]:
                return True, _stored_form(item, new), flags

            base = item if item is not None else RosterItem(jid=str(contact))
            if typ == "subscribe":
                # A.2.1: routed whatever the state, so the contact can resync
                if base.subscription in ("none", "from") and not base.ask:
                    return write(replace(base, ask=True), (True, False, False))
                return False, item, (True, False, False)
            if typ == "subscribed":
                if _has_from(item):
                    return False, item, (False, False, False)
                if item is not None and item.pending_in:
                    new = replace(
                        item,
                        subscription=_add_from(item.subscription),
                        pending_in=False,
                        pending_in_stanza=None,
                        approved=False,
                    )
                    return write(new, (True, True, False))
                if not base.approved:
                    # 3.4: pre-approval, not routed
                    return write(replace(base, approved=True), (False, False, False))
                return False, item, (False, False, False)
            if typ == "unsubscribe":
                if item is not None and (item.ask or _has_to(item)):
                    new = replace(item, ask=False, subscription=_drop_to(item.subscription))
                    return write(new, (True, False, False))
                return False, item, (True, False, False)
            # unsubscribed
            if item is None:
                return False, item, (False, False, False)
            if _has_from(item):
                new = replace(
                    item,
                    subscription=_drop_from(item.subscription),
                    pending_in=False,
                    pending_in_stanza=None,
                    approved=False,
                )
                return write(new, (True, False, True))
            if item.pending_in:
                new = replace(item, pending_in=False, pending_in_stanza=None)
                return write(new, (True, False, False))
            if item.approved:
                # 3.2.2: cancelling a pre-approval is not routed
                return write(replace(item, approved=False), (False, False, False))
            return False, item, (False, False, False)

        async with self._lock(user):
            route, after_approval, unavailable_first = await self._change(user, contact, decide)
        local = self.router.is_local(contact.domain)
        if unavailable_first and not local:
            # a local contact's inbound side delivers these itself
            await self._send_unavailable(user, contact)
        if route:
            await self._send(out, user, contact)
        if after_approval and not local:
            await self._send_current_presence(user, contact)

    # ---- inbound: to a local user ------------------------------------------------

    async def inbound(self, env: Envelope) -> None:
        to, frm, typ = env.to, env.frm, env.type
        if to.local is None or not self.router.is_local(to.domain):
            return  # presence to the server itself: nothing handles it (yet)
        if (typ is None or typ == "unavailable") and not await self.router.sessions.resources(
            to.bare
        ):
            # plain presence only ever goes to sessions: none, nothing to do,
            # and no account lookup (a login broadcasts to every contact)
            return
        if not await self.router.user_exists(to):
            return  # RFC 6121 8.5.1: silently ignored
        user = to.bare
        if await self._blocked(user, frm):
            return
        if typ is not None and typ in SUBSCRIPTION_TYPES:
            await self._inbound_subscription(user, frm.bare, typ, env.tree())
            return
        if typ == "probe":
            if frm.bare != user:
                await self._answer_probe(user, frm, frm)
            return
        if to.resource is not None:
            await self.router.deliver(to, env.data)
            return
        for s in await self._available_sessions(user):
            await self.router.deliver(s.jid, env.data)

    async def _answer_probe(
        self,
        user: JID,
        prober: JID,
        reply_to: JID,
        known: tuple[RosterItem | None, LastActivity | None] | None = None,
        after: int = 0,
    ) -> None:
        """RFC 6121 4.3.2 and XEP-0256: answer for ``user`` if ``prober`` is subscribed.
        (No account, no roster: a user that does not exist answers nothing.)
        ``known``: ``user``'s roster item for the prober and last activity, read already.

        ``after``: the prober's broadcast_seq, at its own initial presence.
        A session of ``user`` that broadcast after that (a higher seq, in a
        registry with consistent reads) saw the prober available, so its
        broadcast carries the same presence to the prober: answering as well
        only doubled it when contacts log in at the same moment (a development
        run of the benchmark's presence storm: 76 -> 68 presence stanzas per
        user where 51 would do). Only the probe side is skipped: skipping the
        broadcast instead would rely on the prober's roster matching the
        contact's, which nothing guarantees.
        """
        item = await self._get_item(user, prober.bare) if known is None else known[0]
        if not _has_from(item) or await self._blocked(user, prober):
            return
        sessions = [s for s in await self._available_sessions(user) if s.presence is not None]
        for s in sessions:
            assert s.presence is not None
            if after and s.broadcast_seq > after and self.router.sessions.consistent_reads:
                continue  # its own broadcast reaches the prober
            await self._send(_readdress(s.presence, s.jid, reply_to), s.jid, reply_to)
        if sessions:
            return
        assert user.local is not None
        if known is None:
            last = await self.router.storage.get_last_activity(user.domain, user.local)
        else:
            last = known[1]
        if last is not None:
            await self._send(last_unavailable(user, reply_to, last), user, reply_to)

    async def _inbound_subscription(
        self, user: JID, contact: JID, typ: str, el: etree._Element
    ) -> None:
        """RFC 6121 section 3 and Appendix A.3, the contact's side (here ``user``)."""
        if contact == user:
            return
        stanza = _readdress(el, contact, user)
        data = etree.tostring(stanza, with_tail=False)
        nothing = _InboundEffects()

        def decide(item: RosterItem | None) -> tuple[bool, RosterItem | None, _InboundEffects]:
            def write(
                new: RosterItem, effects: _InboundEffects
            ) -> tuple[bool, RosterItem | None, _InboundEffects]:
                return True, _stored_form(item, new), effects

            if typ == "subscribe":
                if _has_from(item):
                    # 3.1.3: already subscribed, auto-reply
                    return False, item, _InboundEffects(reply="subscribed")
                if item is not None and item.approved:
                    new = replace(
                        item,
                        subscription=_add_from(item.subscription),
                        approved=False,
                        pending_in=False,
                        pending_in_stanza=None,
                    )
                    return write(new, _InboundEffects(reply="subscribed", auto_approved=True))
                if item is None or not item.pending_in:
                    base = item if item is not None else RosterItem(jid=str(contact))
                    new = replace(base, pending_in=True, pending_in_stanza=data)
                    return write(new, _InboundEffects(deliver=True))
            elif typ == "subscribed":
                if item is not None and item.ask and item.subscription in ("none", "from"):
                    new = replace(item, ask=False, subscription=_add_to(item.subscription))
                    return write(new, _InboundEffects(deliver=True, gained_to=True))
            elif typ == "unsubscribe":
                if item is not None and (_has_from(item) or item.pending_in):
                    new = replace(
                        item,
                        subscription=_drop_from(item.subscription),
                        pending_in=False,
                        pending_in_stanza=None,
                    )
                    return write(new, _InboundEffects(deliver=True, lost_from=_has_from(item)))
            elif item is not None and (item.ask or _has_to(item)):  # unsubscribed
                new = replace(item, ask=False, subscription=_drop_to(item.subscription))
                return write(new, _InboundEffects(deliver=True, lost_to=_has_to(item)))
            return False, item, nothing

        async with self._lock(user):
            effects = await self._change(user, contact, decide)
        deliver, reply = effects.deliver, effects.reply
        auto_approved, gained_to = effects.auto_approved, effects.gained_to
        lost_from, lost_to = effects.lost_from, effects.lost_to
        if deliver:
            for s in await self._available_sessions(user):
                await self.router.deliver(s.jid, data)
        if reply is not None:
            await self._send(st.make("presence", to=contact, frm=user, type_=reply), user, contact)
        if auto_approved and not self.router.is_local(contact.domain):
            await self._send_current_presence(user, contact)
        if gained_to:
            await self._deliver_presence_of(contact, user)
        if lost_from:
            # 3.3.3: the unsubscribed contact stops seeing the user
            await self._send_unavailable(user, contact)
        if lost_to:
            await self._deliver_unavailable_of(contact, user)

    async def _deliver_presence_of(self, contact: JID, user: JID) -> None:
        """After a subscription is approved: the local contact's current presence."""
        if contact.local is None or not self.router.is_local(contact.domain):
            return  # a remote server sends it itself
        targets = await self._available_sessions(user)
        for cs in await self._available_sessions(contact):
            if cs.presence is None:
                continue
            for t in targets:
                pres = _readdress(cs.presence, cs.jid, t.jid)
                await self.router.deliver(t.jid, etree.tostring(pres, with_tail=False))

    async def _deliver_unavailable_of(self, contact: JID, user: JID) -> None:
        """After the user lost 'to': unavailable from the contact (RFC 6121 3.2.3)."""
        if contact.local is not None and self.router.is_local(contact.domain):
            sources = [s.jid for s in await self._available_sessions(contact)]
        else:
            sources = [contact]
        targets = await self._available_sessions(user)
        for src in sources:
            for t in targets:
                pres = st.make("presence", to=t.jid, frm=src, type_="unavailable")
                await self.router.deliver(t.jid, etree.tostring(pres, with_tail=False))

    # ---- session end -----------------------------------------------------------

    async def session_gone(self, session: Session, replaced: bool) -> None:
        """The session ended (already out of the registry, or replaced in it)."""
        full = session.jid
        user = full.bare
        pres = st.make("presence", frm=full, type_="unavailable")
        sent: set[JID] = set()
        if session.available:
            session.available = False
            sent = await self._broadcast(full, pres, include=None)
        directed, session.directed = session.directed, set()
        await self._directed_unavailable(full, pres, directed, sent)
        if await self.router.sessions.resources(user):
            return
        assert user.local is not None
        status = _unavailable_status(session.presence)
        try:
            await self.router.storage.set_last_activity(
                user.domain, user.local, time.time(), status
            )
        except LookupError:  # the account was deleted meanwhile
            log.debug("no last activity for %s: account gone", user)

    # ---- the roster IQ's changes (services/features/roster.py) -----------------

    async def roster_set(
        self, user: JID, contact: JID, name: str | None, groups: tuple[str, ...]
    ) -> None:
        """RFC 6121 2.3: add or update an item; the subscription state is kept."""
        assert user.local is not None

        def decide(old: RosterItem | None) -> tuple[bool, RosterItem | None, None]:
            if old is None:
                return True, RosterItem(jid=str(contact), name=name, groups=groups), None
            return True, replace(old, name=name, groups=groups), None

        async with self._lock(user):
            change = await change_roster_item(self.router.storage, user, str(contact), decide)
            assert change.new is not None and change.version is not None
            await push_roster(self.router, user, change.new, change.version)

    async def roster_remove(self, user: JID, contact: JID) -> bool:
        """RFC 6121 2.5: remove an item, cancelling subscriptions both ways.

        Returns False when there was no such item."""
        assert user.local is not None

        def decide(old: RosterItem | None) -> tuple[bool, RosterItem | None, None]:
            return old is not None, None, None

        async with self._lock(user):
            change = await change_roster_item(self.router.storage, user, str(contact), decide)
            item = change.old
            if item is None or change.version is None:
                return False
            await push_roster(self.router, user, item, change.version, remove=True)
        local = self.router.is_local(contact.domain)
        if item.ask or _has_to(item):
            unsub = st.make("presence", to=contact, frm=user, type_="unsubscribe")
            await self._send(unsub, user, contact)
        if _has_from(item) or item.pending_in:
            if _has_from(item) and not local:
                await self._send_unavailable(user, contact)
            unsub = st.make("presence", to=contact, frm=user, type_="unsubscribed")
            await self._send(unsub, user, contact)
        return True
