"""Offline message storage (XEP-0160) with delayed-delivery stamps (XEP-0203).

On the hook chain: a message for a local user with no resource to take it
(``undelivered``) is kept, up to ``offline_quota`` per user, if it is worth
keeping (section 3: not errors, groupchat or headlines, nor bare chat
states: those are taken and dropped); a session's initial presence
(``session_available``) gets what was kept, oldest first, stamped with
``<delay/>``.

XEP-0013 (flexible offline message retrieval): a client that asks for the
offline node (disco#info: the count; disco#items: a header per message) or
fetches is not flooded at its initial presence, nor is any other resource
of the user while it is connected; it views, fetches, removes and purges
messages by node (the message's row id, zero-padded: arrival order as
strings). Viewed or fetched messages stay stored until removed (2.5).
"""

from __future__ import annotations

import asyncio
import time
import uuid
import weakref

from lxml import etree

from ..core.feature import Context, Feature
from ..core.routing import Envelope, Session
from ..core.storage import OfflineMessage
from ..xmpp import forms, ns
from ..xmpp.errors import StanzaCondition, StanzaError
from ..xmpp.jid import JID
from ..xmpp.timefmt import delay_element
from ..xmpp.tree import parse_element

_STORABLE_WITHOUT_BODY = (
    "{urn:xmpp:receipts}",
    "{jabber:x:conference}",
    "{http://jabber.org/protocol/muc#user}",
    "{urn:xmpp:chat-markers:0}",
)


def worth_storing(el: etree._Element) -> bool:
    """XEP-0160 section 3: no errors, groupchat or headlines, nor bare chat states."""
    if (el.get("type") or "normal") not in ("normal", "chat"):
        return False
    for child in el:
        tag = child.tag
        if not isinstance(tag, str):
            continue
        if tag in (ns.q(ns.CLIENT, "body"), ns.q(ns.CLIENT, "subject")):
            return True
        if tag.startswith(_STORABLE_WITHOUT_BODY):
            return True
    return False


# one flush per user at a time in this process: two that read the same
# messages before either deleted them would deliver them twice
_flushing: weakref.WeakValueDictionary[JID, asyncio.Lock] = weakref.WeakValueDictionary()


async def store(ctx: Context, env: Envelope) -> bool:
    to = env.to.bare
    el = env.tree()
    if not worth_storing(el):
        return True  # taken: section 3 says such messages are not kept
    storage = ctx.storage
    assert to.local is not None
    if await storage.count_offline(to.domain, to.local) >= ctx.settings.offline_quota:
        raise StanzaError(StanzaCondition.SERVICE_UNAVAILABLE, "offline storage is full")
    # a fresh key per message: a control-plane retry of this call (after a
    # timeout that hid a success) stores nothing more
    await storage.store_offline(to.domain, to.local, env.data, time.time(), uuid.uuid4().hex)
    ctx.metrics.offline_added()
    return True


async def flush(ctx: Context, jid: JID) -> int:
    """Deliver stored messages to a session that just became available.

    Messages are read, delivered in order, and only the delivered ones
    deleted (idempotently, by id): a failed delivery, a failed call or a
    crash in between leaves the rest where they were, in their order, for
    the next flush. A crash after delivering and before deleting delivers
    those again next time: at least once, never lost. Returns how many
    were delivered."""
    storage = ctx.storage
    assert jid.local is not None
    user = jid.bare
    lock = _flushing.get(user)
    if lock is None:
        lock = _flushing[user] = asyncio.Lock()
    delivered: list[int] = []
    async with lock:
        try:
            for m in await storage.fetch_offline(jid.domain, jid.local):
                el = parse_element(m.stanza)
                el.append(delay_element(m.stamp, jid.domain, "Offline Storage"))
                if not await ctx.deliver(jid, etree.tostring(el, with_tail=False)):
                    break  # the session went away meanwhile: the rest stay stored
                delivered.append(m.id)
        finally:
            if delivered:
                await storage.delete_offline(jid.domain, jid.local, delivered)
                ctx.metrics.offline_removed(len(delivered))
    return len(delivered)


#: XEP-0013 flexible offline message retrieval
FLEXIBLE = "http://jabber.org/protocol/offline"
#: the session flag of a client that asked for the offline node (XEP-0013 2.2)
_FLEXIBLE_FLAG = "offline-flexible"
_OFFLINE = ns.q(FLEXIBLE, "offline")


async def _available(ctx: Context, s: Session) -> None:
    # XEP-0013 2.2: once a client of the user has read the message list, no
    # resource of that user is flooded (its messages are read one by one)
    for other in await ctx.sessions.resources(s.jid.bare):
        if _FLEXIBLE_FLAG in other.flags:
            return
    await flush(ctx, s.jid)


def _node_of(m: OfflineMessage) -> str:
    # opaque, and in arrival order when compared as strings (section 2.3)
    return f"{m.id:016d}"


async def _own(ctx: Context, env: Envelope) -> JID:
    """The requester's own account, after marking its session as one that
    reads the list (no flood on its initial presence); forbidden for others."""
    user = env.to.bare
    if env.frm.bare != user or user.local is None:
        raise StanzaError(StanzaCondition.FORBIDDEN)
    s = await ctx.sessions.get(env.frm)
    if s is not None and _FLEXIBLE_FLAG not in s.flags:
        s.flags.add(_FLEXIBLE_FLAG)
        await ctx.sessions.update(s)
    return user


async def _node_info(ctx: Context, env: Envelope, payload: etree._Element) -> etree._Element:
    user = await _own(ctx, env)
    assert user.local is not None
    count = await ctx.storage.count_offline(user.domain, user.local)
    q = etree.Element(ns.q(ns.DISCO_INFO, "query"), nsmap={None: ns.DISCO_INFO}, node=FLEXIBLE)
    etree.SubElement(q, ns.q(ns.DISCO_INFO, "identity"), category="automation", type="message-list")
    etree.SubElement(q, ns.q(ns.DISCO_INFO, "feature"), var=FLEXIBLE)
    q.append(
        forms.build_form(
            "result", FLEXIBLE, [forms.Field("number_of_messages", values=[str(count)])]
        )
    )
    return q


async def _node_items(ctx: Context, env: Envelope, payload: etree._Element) -> etree._Element:
    user = await _own(ctx, env)
    assert user.local is not None
    q = etree.Element(ns.q(ns.DISCO_ITEMS, "query"), nsmap={None: ns.DISCO_ITEMS}, node=FLEXIBLE)
    for m in await ctx.storage.fetch_offline(user.domain, user.local):
        try:
            sender = parse_element(m.stanza).get("from") or ""
        except etree.XMLSyntaxError:
            sender = ""
        etree.SubElement(
            q, ns.q(ns.DISCO_ITEMS, "item"), jid=str(user), node=_node_of(m), name=sender
        )
    return q


async def _send(ctx: Context, to: JID, m: OfflineMessage) -> bool:
    el = parse_element(m.stanza)
    marker = etree.SubElement(el, _OFFLINE, nsmap={None: FLEXIBLE})
    etree.SubElement(marker, ns.q(FLEXIBLE, "item"), node=_node_of(m))
    el.append(delay_element(m.stamp, to.domain, "Offline Storage"))
    return await ctx.deliver(to, etree.tostring(el, with_tail=False))


async def _chosen(
    ctx: Context, user: JID, payload: etree._Element, action: str
) -> list[OfflineMessage]:
    """The messages the ``<item action=... node=.../>`` children name, in
    arrival order; item-not-found if any is not stored (2.4, 2.5)."""
    assert user.local is not None
    wanted = set()
    for item in payload.iterfind(ns.q(FLEXIBLE, "item")):
        if item.get("action") != action:
            raise StanzaError(StanzaCondition.BAD_REQUEST, f"expected action {action!r}")
        wanted.add(item.get("node") or "")
    if not wanted:
        raise StanzaError(StanzaCondition.BAD_REQUEST, "no item")
    stored = {_node_of(m): m for m in await ctx.storage.fetch_offline(user.domain, user.local)}
    missing = wanted - stored.keys()
    if missing:
        raise StanzaError(StanzaCondition.ITEM_NOT_FOUND, f"no message {sorted(missing)[0]}")
    return [stored[n] for n in sorted(wanted)]


async def _asked(
    ctx: Context, env: Envelope, payload: etree._Element, everything: str, action: str
) -> tuple[JID, list[OfflineMessage]]:
    """The requester's account and the messages a request names: all of
    them with ``<everything/>`` (fetch, purge), else its items of ``action``."""
    user = await _own(ctx, env)
    assert user.local is not None
    if payload.find(ns.q(FLEXIBLE, everything)) is not None:
        return user, await ctx.storage.fetch_offline(user.domain, user.local)
    return user, await _chosen(ctx, user, payload, action)


async def _offline_get(ctx: Context, env: Envelope, payload: etree._Element) -> None:
    """view (2.4) or fetch (2.6): the messages, marked with their node, stay stored."""
    _, messages = await _asked(ctx, env, payload, "fetch", "view")
    for m in messages:
        await _send(ctx, env.frm, m)


async def _offline_set(ctx: Context, env: Envelope, payload: etree._Element) -> None:
    """remove (2.5) or purge (2.7)."""
    user, messages = await _asked(ctx, env, payload, "purge", "remove")
    if messages:
        assert user.local is not None
        await ctx.storage.delete_offline(user.domain, user.local, [m.id for m in messages])
        ctx.metrics.offline_removed(len(messages))


FEATURE = Feature(
    name="offline",
    xeps=("XEP-0013", "XEP-0160", "XEP-0203"),
    storage=("offline_messages",),
    disco_features=(ns.OFFLINE, FLEXIBLE),
    account_iq={(_OFFLINE, "get"): _offline_get, (_OFFLINE, "set"): _offline_set},
    account_disco_nodes={(FLEXIBLE, "info"): _node_info, (FLEXIBLE, "items"): _node_items},
    undelivered=(store,),
    session_available=(_available,),
)
