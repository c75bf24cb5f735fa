"""The roster IQ (RFC 6121 section 2) with versioning (XEP-0237) and pre-approval.

Roster gets are answered from storage; roster sets and removals go through the
presence service, which owns the subscription state and the roster pushes.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterable

from lxml import etree

from ..core.feature import Context, Feature
from ..core.routing import Envelope
from ..core.storage import RosterItem
from ..xmpp import ns
from ..xmpp import stanza as st
from ..xmpp.errors import StanzaCondition, StanzaError
from ..xmpp.jid import JID

#: longest item name and group name accepted, in UTF-8 bytes (not-acceptable past it)
MAX_NAME_BYTES = 1023
#: most groups on one item
MAX_GROUPS = 100

_ITEM = ns.q(ns.ROSTER, "item")
_GROUP = ns.q(ns.ROSTER, "group")
_QUERY = ns.q(ns.ROSTER, "query")
_SUBSCRIPTIONS = frozenset({"none", "to", "from", "both"})
_push_ids = itertools.count(1)


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


def _owner(env: Envelope) -> JID:
    """RFC 6121 2.1.5: only the account's own resources manage its roster."""
    if env.frm.bare != env.to.bare or env.frm.local is None:
        raise StanzaError(StanzaCondition.FORBIDDEN)
    return env.frm.bare


async def roster_get(ctx: Context, env: Envelope, query: etree._Element) -> etree._Element | None:
    user = _owner(env)
    assert user.local is not None
    session = await ctx.sessions.get(env.frm)
    if session is not None:
        session.interested = True  # RFC 6121 2.1.6: from now on it gets pushes
        await ctx.sessions.update(session)
    ver, items = await ctx.storage.get_roster(user.domain, user.local)
    if query.get("ver") == str(ver):
        return None  # XEP-0237 / RFC 6121 2.6.3: the client's copy is current
    return roster_query(ver, (item for item in items if not is_hidden(item)))


def _too_long(s: str) -> bool:
    return len(s.encode()) > MAX_NAME_BYTES


async def roster_set(ctx: Context, env: Envelope, query: etree._Element) -> etree._Element | None:
    user = _owner(env)
    children = [c for c in query if isinstance(c.tag, str)]
    if len(children) != 1 or children[0].tag != _ITEM:
        raise StanzaError(StanzaCondition.BAD_REQUEST, "a roster set carries exactly one item")
    item = children[0]
    jid_s = item.get("jid")
    if not jid_s:
        raise StanzaError(StanzaCondition.BAD_REQUEST, "item without jid")
    contact = JID.parse(jid_s)  # jid-malformed
    if contact.resource is not None:
        raise StanzaError(StanzaCondition.JID_MALFORMED, "roster items are bare JIDs")
    if contact == user:
        raise StanzaError(StanzaCondition.NOT_ALLOWED, "the user's own JID cannot be a contact")
    # the local PresenceService, or in a cluster its gRPC client (same contract)
    presence = ctx.presence
    subscription = item.get("subscription")
    if subscription == "remove":
        if not await presence.roster_remove(user, contact):
            raise StanzaError(StanzaCondition.ITEM_NOT_FOUND)
        return None
    # RFC 6121 2.1.2.5: other subscription values are ignored; unknown ones are wrong
    if subscription is not None and subscription not in _SUBSCRIPTIONS:
        raise StanzaError(StanzaCondition.BAD_REQUEST, "bad subscription value")
    name = item.get("name") or None
    if name is not None and _too_long(name):
        raise StanzaError(StanzaCondition.NOT_ACCEPTABLE, "name too long")
    groups: list[str] = []
    for g in item:
        if g.tag != _GROUP:
            continue
        text = g.text or ""
        if not text:
            raise StanzaError(StanzaCondition.NOT_ACCEPTABLE, "empty group name")
        if _too_long(text):
            raise StanzaError(StanzaCondition.NOT_ACCEPTABLE, "group name too long")
        if text in groups:
            raise StanzaError(StanzaCondition.BAD_REQUEST, "duplicate group")
        groups.append(text)
    if len(groups) > MAX_GROUPS:
        raise StanzaError(StanzaCondition.NOT_ACCEPTABLE, "too many groups")
    await presence.roster_set(user, contact, name, tuple(groups))
    return None


FEATURE = Feature(
    name="roster",
    xeps=("RFC 6121", "XEP-0237"),
    storage=("roster_items",),
    account_iq={(_QUERY, "get"): roster_get, (_QUERY, "set"): roster_set},
    stream_features=(
        b"<ver xmlns='urn:xmpp:features:rosterver'/>",
        b"<sub xmlns='urn:xmpp:features:pre-approval'/>",
    ),
)
