"""Presence broadcast, probes and the subscription state machine (RFC 6121).

The router hands this service every presence stanza: :meth:`PresenceService.outbound`
gets what a local user's bound session sends, :meth:`PresenceService.inbound`
what is addressed to a local user (from another local user through the routed
path, from the server itself, later from remote servers). Subscription stanzas
run the state tables of RFC 6121 Appendix A: the user's outbound side in
``outbound``, then the stanza is stamped (bare ``from`` and ``to``) and routed,
and the contact's inbound side runs in ``inbound``. The tables themselves, what
each stanza does to a roster item's state and what is sent because of it, are
the sans-IO :mod:`services.xmpp.subscription`; this service reads and writes
the items and does the sending.

Roster items (:class:`~services.core.storage.RosterItem`) carry the
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
import logging
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Generic, TypeVar, assert_never

from lxml import etree

from ..core.routing import Envelope, Session
from ..core.storage import LastActivity, RosterItem, Storage
from ..features.roster import is_hidden, push_roster
from ..xmpp import ns
from ..xmpp import stanza as st
from ..xmpp.errors import StanzaError
from ..xmpp.jid import JID
from ..xmpp.subscription import Action, Direction, StanzaType, State, Transition, transition
from ..xmpp.tree import parse_element

if TYPE_CHECKING:
    from ..core.feature import Context

log = logging.getLogger("xmppd.presence")

SUBSCRIPTION_TYPES = frozenset({"subscribe", "subscribed", "unsubscribe", "unsubscribed"})

_PRIORITY = ns.q(ns.CLIENT, "priority")
_STATUS = ns.q(ns.CLIENT, "status")
T = TypeVar("T")


# ---------------------------------------------------------------- roster items


def _is_void(item: RosterItem) -> bool:
    return (
        item.subscription == "none"
        and not item.pending_in
        and not item.ask
        and not item.approved
        and not item.name
        and not item.groups
    )


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


def _state_of(item: RosterItem | None) -> State:
    """The subscription state of a stored item (none: RFC 6121 A.1 "None")."""
    if item is None:
        return State()
    return State.from_stored(item.subscription, item.ask, item.pending_in, item.approved)


def _with_state(item: RosterItem, state: State, request: bytes) -> RosterItem:
    """``item`` in ``state``. ``request``: the inbound subscribe being handled,
    kept from when the request becomes pending until it is answered (it is
    redelivered at each login, RFC 6121 3.1.3)."""
    if not state.pending_in:
        stanza = None
    elif item.pending_in:
        stanza = item.pending_in_stanza
    else:
        stanza = request
    return replace(
        item,
        subscription=state.subscription.value,
        ask=state.ask,
        pending_in=state.pending_in,
        approved=state.approved,
        pending_in_stanza=stanza,
    )


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


# ---------------------------------------------------------------- stanza helpers


def _readdress(src: bytes | etree._Element, frm: JID | None, to: JID | None) -> etree._Element:
    """A copy of a stanza with new addresses (``to=None`` drops the attribute)."""
    el = parse_element(src) if isinstance(src, bytes) else copy.deepcopy(src)
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
        el = parse_element(data)
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


# ---------------------------------------------------------------- the service


class PresenceService:
    def __init__(self, ctx: Context) -> None:
        # the server as features see it: the router in-process, or the
        # presence role's own router core in a cluster
        self.ctx = ctx
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
        _, items = await self.ctx.storage.get_roster(user.domain, user.local)
        return items

    async def _get_item(self, user: JID, contact: JID) -> RosterItem | None:
        assert user.local is not None
        return await self.ctx.storage.get_roster_item(user.domain, user.local, str(contact))

    async def _available_sessions(self, user: JID) -> list[Session]:
        return [s for s in await self.ctx.sessions.resources(user.bare) if s.available]

    async def _send(self, el: etree._Element, frm: JID, to: JID) -> None:
        """Route a server-built presence with ``trusted`` so it lands in :meth:`inbound`."""
        await self.ctx.route(Envelope.of(el, frm, to), trusted=True)

    async def _blocked(self, user: JID, other: JID) -> bool:
        """XEP-0191: does the local ``user`` block ``other``?"""
        if user.local is None or other.bare == user.bare:
            return False
        return await self.ctx.blocks.blocks(user.bare, other)

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
        s = await self.ctx.sessions.get(full)
        if s is None:
            return
        pres = _readdress(el, full, None)
        first = not s.available
        flushed = s.available and s.priority >= 0
        s.priority = _priority(el)
        s.available = True
        s.presence = etree.tostring(pres, with_tail=False)
        await self.ctx.sessions.update(s, broadcast=True)
        roster = await self._roster(full.bare)  # read once for all three below
        await self._broadcast(full, pres, include=full, roster=roster)
        if first:
            await self._probe_contacts(full, roster, s.broadcast_seq)
            await self._redeliver_pending(full, roster)
        if s.priority >= 0 and not flushed:
            # XEP-0160: offline messages go to the first non-negative available
            # resource: the session_available hooks (features/offline.py)
            features = self.ctx.features
            await features.session_event(features.session_available, self.ctx, s)

    async def _unavailable(self, full: JID, el: etree._Element) -> None:
        """Unavailable broadcast from a session that stays connected (RFC 6121 4.5)."""
        s = await self.ctx.sessions.get(full)
        if s is None:
            return
        pres = _readdress(el, full, None)
        was_available = s.available
        s.available = False
        s.presence = etree.tostring(pres, with_tail=False)
        directed, s.directed = s.directed, set()
        await self.ctx.sessions.update(s)
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
        for s in await self.ctx.sessions.resources(user):
            if s.available or s.jid == include:
                await self.ctx.deliver(
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
            if self.ctx.is_local(contact.domain):
                if contact.local is not None:
                    if known is None:
                        known = {
                            JID.make(username, host, None): (it, last)
                            for host, username, it, last in (
                                await self.ctx.storage.roster_entries_for(str(user))
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
                await self.ctx.deliver(full, item.pending_in_stanza)

    async def _directed(self, env: Envelope) -> None:
        """Directed presence (RFC 6121 4.6), tracked for the unavailable on logout."""
        full, target = env.frm, env.to
        if target.bare != full.bare:
            if await self._blocked(full, target):
                return
            s = await self.ctx.sessions.get(full)
            if s is not None:
                if env.type is None:
                    s.directed.add(target)
                elif env.type == "unavailable":
                    s.directed.discard(target)
                await self.ctx.sessions.update(s)
        await self.ctx.route(env, trusted=True)

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
        if contact == user or (contact.local is None and self.ctx.is_local(contact.domain)):
            return
        if await self._blocked(user, contact):
            return
        out = _readdress(el, user, contact)
        await self._subscription(Direction.OUTBOUND, user, contact, typ, out)

    async def _subscription(
        self, direction: Direction, user: JID, contact: JID, typ: str, stanza: etree._Element
    ) -> None:
        """Run the Appendix A row for ``stanza`` (addressed already: ``user``
        to ``contact`` outbound, the other way inbound) on ``user``'s item for
        ``contact``, then do what the row says (services/xmpp/subscription.py)."""
        kind = StanzaType(typ)
        data = etree.tostring(stanza, with_tail=False)

        def decide(item: RosterItem | None) -> tuple[bool, RosterItem | None, Transition]:
            state = _state_of(item)
            step = transition(direction, kind, state)
            if step.new == state:
                return False, item, step
            base = item if item is not None else RosterItem(jid=str(contact))
            return True, _stored_form(item, _with_state(base, step.new, data)), step

        async with self._lock(user):
            # the lock only saves compare-and-set retries
            change = await change_roster_item(self.ctx.storage, user, str(contact), decide)
            step, new = change.result, change.new
            if (
                Action.PUSH in step.actions
                and change.version is not None
                and new is not None
                and not is_hidden(new)
            ):
                await push_roster(self.ctx, user, new, change.version)
        local = self.ctx.is_local(contact.domain)
        for action in step.actions:
            match action:
                case Action.PUSH:
                    pass  # done with the write
                case Action.ROUTE:
                    await self._send(stanza, user, contact)
                case Action.DELIVER:
                    for s in await self._available_sessions(user):
                        await self.ctx.deliver(s.jid, data)
                case Action.REPLY_SUBSCRIBED:
                    reply = st.make("presence", to=contact, frm=user, type_="subscribed")
                    await self._send(reply, user, contact)
                case Action.SEND_PRESENCE:
                    # a local contact's inbound "subscribed" delivers it itself
                    # (DELIVER_CONTACT_PRESENCE)
                    if not local:
                        await self._send_current_presence(user, contact)
                case Action.SEND_UNAVAILABLE:
                    # and so does a local contact's inbound "unsubscribed"
                    # (DELIVER_CONTACT_UNAVAILABLE) after an outbound one
                    if direction is Direction.INBOUND or not local:
                        await self._send_unavailable(user, contact)
                case Action.DELIVER_CONTACT_PRESENCE:
                    await self._deliver_presence_of(contact, user)
                case Action.DELIVER_CONTACT_UNAVAILABLE:
                    await self._deliver_unavailable_of(contact, user)
                case _:
                    assert_never(action)

    # ---- inbound: to a local user ------------------------------------------------

    async def inbound(self, env: Envelope) -> None:
        to, frm, typ = env.to, env.frm, env.type
        if to.local is None or not self.ctx.is_local(to.domain):
            return  # presence to the server itself: nothing handles it (yet)
        if (typ is None or typ == "unavailable") and not await self.ctx.sessions.resources(to.bare):
            # plain presence only ever goes to sessions: none, nothing to do,
            # and no account lookup (a login broadcasts to every contact)
            return
        if not await self.ctx.user_exists(to):
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
            await self.ctx.deliver(to, env.data)
            return
        for s in await self._available_sessions(user):
            await self.ctx.deliver(s.jid, env.data)

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
            if after and s.broadcast_seq > after and self.ctx.sessions.consistent_reads:
                continue  # its own broadcast reaches the prober
            await self._send(_readdress(s.presence, s.jid, reply_to), s.jid, reply_to)
        if sessions:
            return
        assert user.local is not None
        if known is None:
            last = await self.ctx.storage.get_last_activity(user.domain, user.local)
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
        await self._subscription(Direction.INBOUND, user, contact, typ, stanza)

    async def _deliver_presence_of(self, contact: JID, user: JID) -> None:
        """After a subscription is approved: the local contact's current presence."""
        if contact.local is None or not self.ctx.is_local(contact.domain):
            return  # a remote server sends it itself
        targets = await self._available_sessions(user)
        for cs in await self._available_sessions(contact):
            if cs.presence is None:
                continue
            for t in targets:
                pres = _readdress(cs.presence, cs.jid, t.jid)
                await self.ctx.deliver(t.jid, etree.tostring(pres, with_tail=False))

    async def _deliver_unavailable_of(self, contact: JID, user: JID) -> None:
        """After the user lost 'to': unavailable from the contact (RFC 6121 3.2.3)."""
        if contact.local is not None and self.ctx.is_local(contact.domain):
            sources = [s.jid for s in await self._available_sessions(contact)]
        else:
            sources = [contact]
        targets = await self._available_sessions(user)
        for src in sources:
            for t in targets:
                pres = st.make("presence", to=t.jid, frm=src, type_="unavailable")
                await self.ctx.deliver(t.jid, etree.tostring(pres, with_tail=False))

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
        if await self.ctx.sessions.resources(user):
            return
        assert user.local is not None
        status = _unavailable_status(session.presence)
        try:
            await self.ctx.storage.set_last_activity(user.domain, user.local, time.time(), status)
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
            change = await change_roster_item(self.ctx.storage, user, str(contact), decide)
            assert change.new is not None and change.version is not None
            await push_roster(self.ctx, user, change.new, change.version)

    async def roster_remove(self, user: JID, contact: JID) -> bool:
        """RFC 6121 2.5: remove an item, cancelling subscriptions both ways.

        Returns False when there was no such item."""
        assert user.local is not None

        def decide(old: RosterItem | None) -> tuple[bool, RosterItem | None, None]:
            return old is not None, None, None

        async with self._lock(user):
            change = await change_roster_item(self.ctx.storage, user, str(contact), decide)
            item = change.old
            if item is None or change.version is None:
                return False
            await push_roster(self.ctx, user, item, change.version, remove=True)
        local = self.ctx.is_local(contact.domain)
        if item.ask or _has_to(item):
            unsub = st.make("presence", to=contact, frm=user, type_="unsubscribe")
            await self._send(unsub, user, contact)
        if _has_from(item) or item.pending_in:
            if _has_from(item) and not local:
                await self._send_unavailable(user, contact)
            unsub = st.make("presence", to=contact, frm=user, type_="unsubscribed")
            await self._send(unsub, user, contact)
        return True
