"""Offline message storage (XEP-0160) with delayed-delivery stamps (XEP-0203).

On the hook chain: a message for a local user with no resource to take it
(``undelivered``) is kept, up to ``offline_quota`` per user, if it is worth
keeping (section 3: not errors, groupchat or headlines, nor bare chat
states: those are taken and dropped); a session's initial presence
(``session_available``) gets what was kept, oldest first, stamped with
``<delay/>``.
"""

from __future__ import annotations

import asyncio
import time
import uuid
import weakref

from lxml import etree

from ..core.feature import Context, Feature
from ..core.routing import Envelope, Session
from ..xmpp import ns
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


async def _available(ctx: Context, s: Session) -> None:
    await flush(ctx, s.jid)


FEATURE = Feature(
    name="offline",
    xeps=("XEP-0160", "XEP-0203"),
    storage=("offline_messages",),
    disco_features=(ns.OFFLINE,),
    undelivered=(store,),
    session_available=(_available,),
)
