"""Offline message storage (XEP-0160) with delayed-delivery stamps (XEP-0203)."""

from __future__ import annotations

import time
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

    async def store(self, to: JID, env: Envelope) -> None:
        el = env.tree()
        if not worth_storing(el):
            return
        storage = self._router.storage
        assert to.local is not None
        if await storage.count_offline(to.domain, to.local) >= self._router.settings.offline_quota:
            raise StanzaError(StanzaCondition.SERVICE_UNAVAILABLE, "offline storage is full")
        await storage.store_offline(to.domain, to.local, env.data, time.time())
        self._router.metrics.offline_added()

    async def flush(self, jid: JID) -> int:
        """Deliver stored messages to a session that just became available."""
        storage = self._router.storage
        assert jid.local is not None
        msgs = await storage.pop_offline(jid.domain, jid.local)
        self._router.metrics.offline_removed(len(msgs))
        for m in msgs:
            el = etree.fromstring(m.stanza, parser=_SAFE)
            el.append(delay_element(m.stamp, jid.domain, "Offline Storage"))
            if not await self._router.deliver(jid, etree.tostring(el, with_tail=False)):
                # the session went away meanwhile: keep the rest for next time
                await storage.store_offline(jid.domain, jid.local, m.stanza, m.stamp)
                self._router.metrics.offline_added(new=False)
        return len(msgs)
