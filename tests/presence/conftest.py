"""A real router, presence service and SQLite Store, with a recording edge.

Stanzas go in through :meth:`RouterService.route` exactly as the edge sends
them (``from`` stamped with the full JID; ``to`` defaulting to the sender's
bare JID); what the router delivers is read back from the fake edge.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest_asyncio
from lxml import etree

from services.core.feature import FeatureSet
from services.core.routing import Envelope, LocalEdges, Session
from services.core.storage import RosterItem
from services.features import offline, roster
from services.features import presence as presence_feature
from services.platform.config import Settings
from services.platform.db import open_database
from services.platform.migrate import migrate
from services.presence.service import PresenceService
from services.router.registry import LocalRegistry
from services.router.service import RouterService
from services.storage.store import Store
from services.xmpp import ns
from services.xmpp import stanza as st
from services.xmpp.jid import JID

HOST = "example.com"
REMOTE = "remote.test"
_ids = itertools.count(1)


class FakeEdge:
    """An EdgeLink recording (jid, bytes) deliveries."""

    node_id = "test-edge"

    def __init__(self) -> None:
        self.sent: list[tuple[JID, bytes]] = []
        self.closed: list[tuple[JID, str]] = []

    async def deliver(self, jid: JID, data: bytes) -> bool:
        self.sent.append((jid, data))
        return True

    async def close_session(self, jid: JID, condition: str, text: str | None = None) -> bool:
        self.closed.append((jid, condition))
        return True


@dataclass
class World:
    router: RouterService
    store: Store
    edge: FakeEdge
    presence: PresenceService
    #: every presence the server routed with trusted=True (stamped, server-side)
    routed: list[etree._Element] = field(default_factory=list)

    # ---- setup --------------------------------------------------------------

    async def account(self, name: str) -> JID:
        assert await self.store.create_account(HOST, name, [])
        return JID.parse(f"{name}@{HOST}")

    async def bind(self, full: str) -> JID:
        jid = JID.parse(full)
        await self.router.bind(Session(jid, node=self.edge.node_id, sid=f"sid{next(_ids)}"))
        return jid

    async def unbind(self, full: JID) -> None:
        """The stream of ``full`` closed (the edge calls the router so)."""
        s = await self.router.sessions.get(full)
        assert s is not None
        await self.router.unbind(full, s.sid)

    async def online(self, full: str, priority: int | None = None, interested: bool = True) -> JID:
        """Bind, optionally fetch the roster (interested), send initial presence."""
        jid = await self.bind(full)
        if interested:
            await self.iq(jid, "get", roster_query())
        await self.send(jid, pres(priority=priority))
        return jid

    async def put(self, user: JID, item: RosterItem) -> None:
        assert user.local is not None
        await self.store.put_roster_item(user.domain, user.local, item)

    async def item(self, user: JID, contact: JID | str) -> RosterItem | None:
        assert user.local is not None
        return await self.store.get_roster_item(user.domain, user.local, str(contact))

    # ---- traffic ------------------------------------------------------------

    async def send(self, frm: JID, el: etree._Element) -> None:
        """What the edge does with a client stanza: stamp from, route untrusted."""
        el.set("from", str(frm))
        to_s = el.get("to")
        to = JID.parse(to_s) if to_s is not None else frm.bare
        await self.router.route(Envelope.of(el, frm, to))

    async def inject(self, el: etree._Element) -> None:
        """A stanza arriving from elsewhere (another server, the routed path)."""
        frm = JID.parse(el.get("from") or HOST)
        to = JID.parse(el.get("to") or HOST)
        await self.router.route(Envelope.of(el, frm, to), trusted=True)

    async def iq(self, frm: JID, type_: str, payload: etree._Element) -> etree._Element:
        iq_id = f"iq{next(_ids)}"
        el = st.make("iq", type_=type_, id_=iq_id)
        el.append(payload)
        await self.send(frm, el)
        for jid, data in self.edge.sent:
            got = etree.fromstring(data)
            if jid == frm and got.tag == st.IQ and got.get("id") == iq_id:
                return got
        raise AssertionError(f"no reply to {iq_id}")

    def got(self, to: JID, kind: str | None = None) -> list[etree._Element]:
        out = [etree.fromstring(d) for j, d in self.edge.sent if j == to]
        if kind is not None:
            out = [e for e in out if etree.QName(e).localname == kind]
        return out

    def presences(self, to: JID, type_: str | None = "*") -> list[etree._Element]:
        """Presence delivered to ``to`` (``type_='*'`` for any type)."""
        out = self.got(to, "presence")
        if type_ != "*":
            out = [e for e in out if e.get("type") == type_]
        return out

    def pushes(self, to: JID) -> list[etree._Element]:
        """Roster pushes (the <item/> elements) delivered to ``to``."""
        items = []
        for e in self.got(to, "iq"):
            if e.get("type") == "set" and e.get("id", "").startswith("push"):
                q = e.find(ns.q(ns.ROSTER, "query"))
                assert q is not None
                assert q.get("ver") is not None
                items.extend(q)
        return items

    def routed_of(self, type_: str | None) -> list[etree._Element]:
        return [e for e in self.routed if e.get("type") == type_]

    def clear(self) -> None:
        self.edge.sent.clear()
        self.routed.clear()


def pres(
    to: str | JID | None = None,
    type_: str | None = None,
    priority: int | None = None,
    status: str | None = None,
) -> etree._Element:
    el = st.make("presence", to=to, type_=type_)
    if priority is not None:
        etree.SubElement(el, ns.q(ns.CLIENT, "priority")).text = str(priority)
    if status is not None:
        etree.SubElement(el, ns.q(ns.CLIENT, "status")).text = status
    return el


def roster_query(**attrs: str) -> etree._Element:
    return etree.Element(ns.q(ns.ROSTER, "query"), attrs, nsmap={None: ns.ROSTER})


@pytest_asyncio.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    db = await open_database(f"sqlite:///{tmp_path / 'presence.sqlite'}")
    await migrate(db)
    store = Store(db)
    settings = Settings.load(env={}, hosts=[HOST])
    edge = FakeEdge()
    router = RouterService(
        settings,
        store,
        LocalRegistry(),
        FeatureSet([roster.FEATURE, presence_feature.FEATURE, offline.FEATURE]),
        edges=LocalEdges({edge.node_id: edge}),
        presence=PresenceService,
    )
    presence = router.presence
    assert isinstance(presence, PresenceService)
    w = World(router, store, edge, presence)

    real_route = router.route

    async def spy(env: Envelope, trusted: bool = False) -> None:
        if trusted and env.kind == "presence":
            w.routed.append(env.tree())
        await real_route(env, trusted)

    router.route = spy  # type: ignore[method-assign]
    try:
        yield w
    finally:
        await store.close()
