"""Offline message storage (XEP-0160) with delayed-delivery stamps (XEP-0203)."""

from __future__ import annotations

import asyncio
import time
import uuid
import weakref
from typing import TYPE_CHECKING

from lxml import etree

from ..xmpp import ns
from ..xmpp.errors import StanzaCondition, StanzaError
from ..xmpp.jid import JID
from ..xmpp.timefmt import delay_element
from .interface import Envelope

if TYPE_CHECKING:
    from .service import RouterService

_SAFE = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
_CHATSTATE_PREFIX = "{" + ns.CHATSTATES + "}"
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


class OfflineStore:
    def __init__(self, router: RouterService) -> None:
        self._router = router
        # one flush per user at a time in this process: two that read the
        # same messages before either deleted them would deliver them twice
        self._flushing: weakref.WeakValueDictionary[JID, asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )

    async def store(self, to: JID, env: Envelope) -> None:
        el = env.tree()
        if not worth_storing(el):
            return
        storage = self._router.storage
        assert to.local is not None
        if await storage.count_offline(to.domain, to.local) >= self._router.settings.offline_quota:
            raise StanzaError(StanzaCondition.SERVICE_UNAVAILABLE, "offline storage is full")
        # a fresh key per message: a control-plane retry of this call (after a
        # timeout that hid a success) stores nothing more
        await storage.store_offline(to.domain, to.local, env.data, time.time(), uuid.uuid4().hex)
        self._router.metrics.offline_added()

    async def flush(self, jid: JID) -> int:
        """Deliver stored messages to a session that just became available.

        Messages are read, delivered in order, and only the delivered ones
        deleted (idempotently, by id): a failed delivery, a failed call or a
        crash in between leaves the rest where they were, in their order, for
        the next flush. A crash after delivering and before deleting delivers
        those again next time: at least once, never lost. Returns how many
        were delivered."""
        storage = self._router.storage
        assert jid.local is not None
        user = jid.bare
        lock = self._flushing.get(user)
        if lock is None:
            lock = self._flushing[user] = asyncio.Lock()
        delivered: list[int] = []
        async with lock:
            try:
                for m in await storage.fetch_offline(jid.domain, jid.local):
                    el = etree.fromstring(m.stanza, parser=_SAFE)
                    el.append(delay_element(m.stamp, jid.domain, "Offline Storage"))
                    if not await self._router.deliver(jid, etree.tostring(el, with_tail=False)):
                        break  # the session went away meanwhile: the rest stay stored
                    delivered.append(m.id)
            finally:
                if delivered:
                    await storage.delete_offline(jid.domain, jid.local, delivered)
                    self._router.metrics.offline_removed(len(delivered))
        return len(delivered)
