"""Shared fixtures: a real router over a SQLite Store, with a recording edge.

IQs go in through :meth:`RouterService.route` exactly as the edge sends them
(``from`` stamped with the full JID, ``to`` defaulting to the sender's bare
JID) and the replies are read back from what the fake edge was asked to
deliver.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest_asyncio
from lxml import etree

from services.core.feature import Feature, FeatureSet
from services.core.routing import Envelope, LocalEdges, Session
from services.core.storage import ScramCredentials
from services.features import (
    blocking,
    disco,
    last,
    offline,
    ping,
    private,
    register,
    session,
    time,
    vcard,
    version,
)
from services.platform.config import Settings
from services.router.registry import LocalRegistry
from services.router.service import RouterService
from services.storage.store import Store
from services.xmpp import ns
from services.xmpp import stanza as st
from services.xmpp.jid import JID

HOST = "example.com"
MY_FEATURES: list[Feature] = [
    m.FEATURE
    for m in (
        disco,
        session,
        register,
        version,
        ping,
        time,
        last,
        vcard,
        private,
        blocking,
        offline,
    )
]
_ids = itertools.count(1)
_STANZAS = ns.STANZAS_ERR


class FakeEdge:
    """An EdgeLink recording what the router hands it."""

    def __init__(self, node_id: str = "edge-1") -> None:
        self.node_id = node_id
        self.sent: list[tuple[JID, bytes]] = []
        self.closed: list[tuple[JID, str, str | None]] = []

    async def deliver(self, jid: JID, data: bytes) -> bool:
        self.sent.append((jid, data))
        return True

    async def close_session(self, jid: JID, condition: str, text: str | None = None) -> bool:
        self.closed.append((jid, condition, text))
        return True


def fake_creds() -> list[ScramCredentials]:
    return [ScramCredentials("SHA-1", b"salt", 4096, b"k" * 20, b"s" * 20)]


@dataclass
class Harness:
    router: RouterService
    store: Store
    edge: FakeEdge
    features: list[Feature] = field(default_factory=list)

    async def account(self, user: str) -> JID:
        jid = JID.parse(f"{user}@{HOST}")
        assert jid.local is not None
        assert await self.store.create_account(HOST, jid.local, fake_creds())
        return jid

    async def login(self, full: str, available: bool = False, create: bool = True) -> JID:
        jid = JID.parse(full if "@" in full else f"{full}@{HOST}/res")
        if create and await self.store.get_account(jid.domain, jid.local or "") is None:
            await self.account(jid.local or "")
        await self.router.bind(Session(jid, node=self.edge.node_id, available=available))
        return jid

    async def send_iq(
        self, frm: JID, type_: str, payload: etree._Element | None, to: str | JID | None = None
    ) -> str:
        iq_id = f"iq{next(_ids)}"
        el = st.make("iq", frm=frm, to=to, type_=type_, id_=iq_id)
        if payload is not None:
            el.append(payload)
        target = JID.parse(str(to)) if to is not None else frm.bare
        await self.router.route(Envelope.of(el, frm, target))
        return iq_id

    async def iq(
        self, frm: JID, type_: str, payload: etree._Element | None, to: str | JID | None = None
    ) -> etree._Element:
        """Send an IQ and return the reply delivered to ``frm``."""
        iq_id = await self.send_iq(frm, type_, payload, to)
        return self.reply(frm, iq_id)

    def reply(self, frm: JID, iq_id: str) -> etree._Element:
        for jid, data in self.edge.sent:
            el = etree.fromstring(data)
            if (
                jid == frm
                and el.tag == st.IQ
                and el.get("id") == iq_id
                and el.get("type") in ("result", "error")
            ):
                return el
        raise AssertionError(f"no reply to {iq_id} for {frm}: {self.edge.sent!r}")

    def delivered(self, to: JID) -> list[etree._Element]:
        return [etree.fromstring(d) for j, d in self.edge.sent if j == to]


def error_condition(reply: etree._Element) -> tuple[str, str]:
    """(condition, error type) of an IQ error reply."""
    assert reply.get("type") == "error", etree.tostring(reply)
    err = reply.find(ns.q(ns.CLIENT, "error"))
    assert err is not None
    conds = [etree.QName(c).localname for c in err if etree.QName(c).namespace == _STANZAS]
    conds = [c for c in conds if c != "text"]
    assert len(conds) == 1, conds
    return conds[0], err.get("type") or ""


def assert_error(reply: etree._Element, condition: str, type_: str | None = None) -> None:
    got, typ = error_condition(reply)
    assert got == condition, etree.tostring(reply)
    if type_ is not None:
        assert typ == type_


def assert_result(reply: etree._Element) -> etree._Element | None:
    assert reply.get("type") == "result", etree.tostring(reply)
    return reply[0] if len(reply) else None


def el(xml: str) -> etree._Element:
    return etree.fromstring(xml)


MakeHarness = Callable[..., Awaitable[Harness]]


@pytest_asyncio.fixture
async def make_harness(tmp_path: Path) -> AsyncIterator[MakeHarness]:
    stores: list[Store] = []

    async def make(features: list[Feature] | None = None, **settings: Any) -> Harness:
        opts: dict[str, Any] = {"hosts": [HOST], "registration": True, **settings}
        cfg = Settings.load(env={}, **opts)
        store = await Store.open(f"sqlite:///{tmp_path / f'db{len(stores)}.sqlite'}")
        stores.append(store)
        feats = MY_FEATURES if features is None else features
        edge = FakeEdge()
        edges = LocalEdges({edge.node_id: edge})
        router = RouterService(cfg, store, LocalRegistry(), FeatureSet(list(feats)), edges=edges)
        return Harness(router, store, edge, list(feats))

    yield make
    for s in stores:
        await s.close()


@pytest_asyncio.fixture
async def h(make_harness: MakeHarness) -> Harness:
    return await make_harness()
