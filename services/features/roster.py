"""The roster IQ (RFC 6121 section 2) with versioning (XEP-0237) and pre-approval.

Roster gets are answered from storage; roster sets and removals go through the
presence service, which owns the subscription state and the roster pushes.
"""

from __future__ import annotations

from typing import cast

from lxml import etree

from ..presence.service import PresenceService, is_hidden, roster_query
from ..router.interface import Envelope
from ..xmpp import ns
from ..xmpp.errors import StanzaCondition, StanzaError
from ..xmpp.jid import JID
from .base import Context, Feature

#: longest item name and group name accepted, in UTF-8 bytes (not-acceptable past it)
MAX_NAME_BYTES = 1023
#: most groups on one item
MAX_GROUPS = 100

_ITEM = ns.q(ns.ROSTER, "item")
_GROUP = ns.q(ns.ROSTER, "group")
_QUERY = ns.q(ns.ROSTER, "query")
_SUBSCRIPTIONS = frozenset({"none", "to", "from", "both"})


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
    # the local PresenceService, or in a cluster its gRPC client (same methods)
    presence = cast("PresenceService | None", getattr(ctx, "presence", None))
    if presence is None:
        raise StanzaError(StanzaCondition.INTERNAL_SERVER_ERROR, "presence service missing")
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
    account_iq={(_QUERY, "get"): roster_get, (_QUERY, "set"): roster_set},
    stream_features=(
        b"<ver xmlns='urn:xmpp:features:rosterver'/>",
        b"<sub xmlns='urn:xmpp:features:pre-approval'/>",
    ),
)
