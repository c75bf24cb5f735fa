"""The publish-subscribe service (XEP-0060) and PEP (XEP-0163): the I/O
around the sans-IO :class:`~services.pubsub.engine.PubsubService`.

:class:`PubsubHost` implements the :class:`~services.core.pubsub.Pubsub`
contract. For each request it loads the nodes the request names from
storage into a fresh engine, lets the engine decide, stores what changed
(before anything is answered: what a client was told happened is kept),
answers, and sends the notifications. Nothing about a node lives in memory
between requests, so any replica can serve any node; in a cluster one
replica at a time holds each node (a lease, as for group chat rooms) so a
node's requests run one after another and its notifications leave in
order.

Who gets a notification: the node's explicit subscribers (the engine), and
for PEP (XEP-0163 4.3) the owner's own available resources and those of
each contact with a presence subscription to the owner, whichever of them
asked for the node with ``<node>+notify`` in their entity capabilities
(:mod:`services.pubsub.caps`), the node's access model allowing.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from lxml import etree

from ..core.pubsub import NodeSummary, node_key, pubsub_of, request_key
from ..core.routing import Envelope
from ..features.vcard import PHOTO_CACHE
from ..xmpp import ns
from ..xmpp import stanza as st
from ..xmpp.errors import StanzaCondition, StanzaError
from ..xmpp.jid import JID
from ..xmpp.tree import parse_element
from ..xmpp.vcard_photo import photo_of
from . import avatars, bookmarks, caps, persist
from .engine import Effects, Notification, PubsubService, Viewer
from .node import PUBLISH_OPTIONS, PUBSUB, PUBSUB_OWNER, Limits, Node, default_config

if TYPE_CHECKING:
    from ..core.feature import Context
    from ..core.pubsub import NodeOwnership, Pubsub
    from ..core.storage import RosterItem
    from ..platform.config import Settings
    from ..platform.metrics import Metrics

log = logging.getLogger("xmppd.pubsub")

T = TypeVar("T")

_PUBSUB = f"{{{PUBSUB}}}pubsub"
_OWNER = f"{{{PUBSUB_OWNER}}}pubsub"
_DISCO_INFO = ns.q(ns.DISCO_INFO, "query")
_DISCO_ITEMS = ns.q(ns.DISCO_ITEMS, "query")
_FROM = ("from", "both")


class PubsubHost:
    """The Pubsub contract over this process: every pubsub domain in
    ``domains`` and every local account's PEP service. With an
    ``ownership`` (a cluster of pubsub replicas), a node another replica
    holds is that replica's: the request is passed on there."""

    def __init__(
        self,
        ctx: Context,
        domains: list[str],
        limits: Limits | None = None,
        *,
        caps_store: caps.CapsStore | None = None,
        ownership: NodeOwnership | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.ctx = ctx
        self.domains = frozenset(domains)
        self.limits = limits or Limits()
        self.caps = caps_store or caps.MemoryCaps()
        self.ownership = ownership
        self._locks: dict[str, tuple[asyncio.Lock, list[int]]] = {}
        if metrics is None:
            from ..platform.metrics import Metrics

            metrics = Metrics()
        self._published = metrics.pubsub_published
        self._notified = metrics.pubsub_notifications

    # ---- placement ---------------------------------------------------------------

    def _is_service(self, service: JID) -> bool:
        if service.local is None:
            return service.domain in self.domains
        return self.ctx.is_local(service.domain)

    async def _elsewhere(self, key: str) -> Pubsub | None:
        if self.ownership is None:
            return None
        return await self.ownership.elsewhere(key)

    async def _settle(self, key: str) -> None:
        # nothing stays in memory between requests: the lease goes with the request
        if self.ownership is not None:
            await self.ownership.release(key)

    async def _held(
        self,
        key: str,
        here: Callable[[], Awaitable[T]],
        there: Callable[[Pubsub], Awaitable[T]],
    ) -> T:
        """Run ``here`` holding ``key`` (its lease, then this process's lock
        of it: one request of a node at a time, in order), or ``there`` on
        the replica that holds it."""
        other = await self._elsewhere(key)
        if other is not None:
            return await there(other)
        entry = self._locks.get(key)
        if entry is None:
            entry = self._locks[key] = (asyncio.Lock(), [0])
        entry[1][0] += 1
        try:
            async with entry[0]:
                return await here()
        finally:
            entry[1][0] -= 1
            if entry[1][0] == 0:
                del self._locks[key]
            await self._settle(key)

    # ---- the contract ----------------------------------------------------------

    async def route(self, service: JID, env: Envelope) -> None:
        service = service.bare
        if not self._is_service(service):
            raise StanzaError(StanzaCondition.SERVICE_UNAVAILABLE, "no such pubsub service")
        el = env.tree()
        payload = el[0] if env.kind == "iq" and len(el) else None
        await self._held(
            request_key(service, env),
            lambda: self._route(service, env, el, payload),
            lambda other: other.route(service, env),
        )

    async def _route(
        self, service: JID, env: Envelope, el: etree._Element, payload: etree._Element | None
    ) -> None:
        if env.kind == "message":
            await self._authorization(service, env, el)
            return
        if env.kind != "iq":
            return  # presence to a pubsub service means nothing
        if env.type in ("result", "error"):
            if env.type == "result" and payload is not None:
                await self._caps_answer(env, payload)
            return
        if payload is None or len(el) != 1:
            raise StanzaError(StanzaCondition.BAD_REQUEST)
        engine = self._engine(service)
        viewer = Viewer()
        if payload.tag in (_DISCO_INFO, _DISCO_ITEMS):
            if env.type != "get":
                raise StanzaError(StanzaCondition.BAD_REQUEST)
            node = payload.get("node")
            await self._load(engine, engine.wants(payload), items=node is not None)
            viewer = await self._viewer(engine, env.frm, node)
            if payload.tag == _DISCO_INFO:
                answer = engine.disco_info(node, viewer, env.frm)
            else:
                answer = engine.disco_items(node, env.frm, viewer)
            await self.ctx.send(_result(el, env, answer))
            return
        if payload.tag not in (_PUBSUB, _OWNER):
            raise StanzaError(StanzaCondition.SERVICE_UNAVAILABLE)
        wants = engine.wants(payload)
        await self._load(engine, wants, items=_needs_items(payload))
        named = payload[0].get("node") if len(payload) else None
        if wants is not None and (named is None or named not in engine.nodes):
            # a node may be made: max_nodes counts the stored ones too; on
            # a pubsub domain, those the requester owns (a limit per user,
            # not on the whole service)
            stored = await self.ctx.storage.pubsub_nodes(str(service))
            if service.local is None:
                me = str(env.frm.bare)
                stored = [(n, st) for n, st in stored if persist.owned_by(st, me)]
            engine.node_count = len(stored)
        viewer = await self._viewer(engine, env.frm, named)
        effects = engine.handle_iq(env.frm, env.type or "get", payload, viewer)
        await self._store(service, engine, effects)
        if service.local is not None:
            # the other stores of the same data follow before the answer, so
            # a client reading one right after reads the same
            moved = _touched(effects)
            try:
                for source in sorted(moved & {bookmarks.LEGACY, bookmarks.NATIVE}):
                    await self._sync_bookmarks(service, source)
                if avatars.METADATA in moved:
                    await self._avatar_to_vcard(service, engine)
            except StanzaError as err:
                # the client's request is done; the other stores stay as
                # they were (a node configured otherwise)
                log.warning("%s: not carried over to the other store: %s", service, err)
        await self.ctx.send(_result(el, env, effects.result))
        if effects.items_put:
            self._published.inc(len(effects.items_put))
        await self._notify(service, engine, effects.notifications)

    # ---- avatars in two stores (XEP-0398) ------------------------------------------

    async def vcard_changed(self, user: JID, vcard: bytes) -> None:
        user = user.bare

        async def here() -> None:
            try:
                await self._vcard_to_avatar(user, parse_element(vcard))
            except StanzaError as err:  # the vCard is stored and answered
                log.warning("%s: vCard photo not carried over to PEP: %s", user, err)

        await self._held(node_key(user, None), here, lambda other: other.vcard_changed(user, vcard))

    async def _vcard_to_avatar(self, owner: JID, vcard: etree._Element) -> None:
        photo = photo_of(vcard)
        engine = self._engine(owner)
        await self._load(engine, [avatars.METADATA], items=True)
        meta = engine.nodes.get(avatars.METADATA)
        current = next(
            (i.payload for i in (meta.items if meta else []) if i.payload is not None), None
        )
        now = avatars.info_of(current) if current is not None else None
        if photo is None:
            if now is not None:  # the vCard dropped its photo: so does PEP (4.5)
                empty = etree.Element(
                    f"{{{avatars.METADATA}}}metadata", nsmap={None: avatars.METADATA}
                )
                await self._owner_publish(
                    owner, avatars.METADATA, {"none": empty}, [], avatars.OPTIONS
                )
            return
        image, mime = photo
        item_id, data, metadata = avatars.pep_items(image, mime)
        if now is not None and now[0] == item_id:
            return  # the same picture: nothing moved
        # data before metadata: a client fetches the data the metadata names (4.2)
        await self._owner_publish(owner, avatars.DATA, {item_id: data}, [], avatars.OPTIONS)
        await self._owner_publish(owner, avatars.METADATA, {item_id: metadata}, [], avatars.OPTIONS)

    async def _avatar_to_vcard(self, owner: JID, engine: PubsubService) -> None:
        assert owner.local is not None
        meta = engine.nodes.get(avatars.METADATA)
        current = next(
            (i.payload for i in (meta.items if meta else []) if i.payload is not None), None
        )
        info = avatars.info_of(current) if current is not None else None
        image: bytes | None = None
        mime = "image/png"
        if info is not None:
            item_id, mime = info
            records = await self.ctx.storage.get_pubsub_items(
                str(owner), avatars.DATA, ids=[item_id]
            )
            if not records:
                return  # the data is not (yet) in the data node: nothing to copy
            data = persist.item_of(records[0]).payload
            image = avatars.image_of(data) if data is not None else None
            if image is None:
                return
        stored = await self.ctx.storage.get_vcard(owner.domain, owner.local)
        vcard = parse_element(stored) if stored else None
        if vcard is not None:
            had = photo_of(vcard)
            if (had[0] if had else None) == image:
                return
        new = avatars.with_photo(vcard, image, mime)
        await self.ctx.storage.set_vcard(owner.domain, owner.local, etree.tostring(new))
        self.ctx.cache(PHOTO_CACHE).invalidate(owner)

    # ---- bookmarks in three stores (XEP-0411, XEP-0402 8.1) ----------------------------

    async def legacy_bookmarks(self, user: JID, storage: bytes) -> None:
        user = user.bare

        async def here() -> None:
            try:
                await self._sync_bookmarks(user, "private", parse_element(storage))
            except StanzaError as err:  # private XML is stored and answered
                log.warning("%s: bookmarks not carried over to PEP: %s", user, err)

        await self._held(
            node_key(user, None), here, lambda other: other.legacy_bookmarks(user, storage)
        )

    async def _sync_bookmarks(
        self, owner: JID, source: str, private: etree._Element | None = None
    ) -> None:
        """Rewrite the two bookmark stores ``source`` is not from ("private",
        or one of the PEP nodes) with what ``source`` holds now."""
        assert owner.local is not None
        storage = self.ctx.storage
        engine = self._engine(owner)
        await self._load(engine, [bookmarks.LEGACY, bookmarks.NATIVE], items=True)
        native = engine.nodes.get(bookmarks.NATIVE)
        native_items = {
            i.id: i.payload for i in (native.items if native else []) if i.payload is not None
        }
        legacy_node = engine.nodes.get(bookmarks.LEGACY)
        legacy_pep = next(
            (
                i.payload
                for i in (legacy_node.items if legacy_node else [])
                if i.payload is not None
            ),
            None,
        )
        stored = await storage.get_private(owner.domain, owner.local, bookmarks.PRIVATE_KEY)
        current_private = parse_element(stored) if stored else None
        if source == bookmarks.NATIVE:
            keep = legacy_pep if legacy_pep is not None else current_private
            legacy = bookmarks.legacy_of_native(native_items, keep)
        elif source == bookmarks.LEGACY:
            if legacy_pep is None:
                return
            legacy = legacy_pep
        else:
            assert private is not None
            legacy = private
        if source != "private" and not bookmarks.same(legacy, current_private):
            await storage.set_private(
                owner.domain, owner.local, bookmarks.PRIVATE_KEY, etree.tostring(legacy)
            )
        if source != bookmarks.LEGACY and not bookmarks.same(legacy, legacy_pep):
            await self._owner_publish(
                owner, bookmarks.LEGACY, {"current": legacy}, [], bookmarks.OPTIONS
            )
        if source != bookmarks.NATIVE:
            wanted = bookmarks.native_of_legacy(legacy, native_items)
            changed = {
                jid: el
                for jid, el in wanted.items()
                if not bookmarks.same(el, native_items.get(jid))
            }
            gone = [jid for jid in native_items if jid not in wanted]
            await self._owner_publish(
                owner, bookmarks.NATIVE, changed, gone, bookmarks.NATIVE_OPTIONS
            )

    async def _owner_publish(
        self,
        owner: JID,
        node: str,
        items: dict[str, etree._Element],
        retract: list[str],
        options: dict[str, str],
    ) -> None:
        """Publish and retract on ``owner``'s PEP node as the owner would,
        subscribers notified (the caller holds the service's lock)."""
        requests: list[etree._Element] = []
        # a node that exists keeps the configuration its owner gave it; a
        # new one gets ``options``
        exists = await self.ctx.storage.get_pubsub_node(str(owner), node) is not None
        for item_id, payload in items.items():
            req = etree.Element(_PUBSUB, nsmap={None: PUBSUB})
            pub = etree.SubElement(req, f"{{{PUBSUB}}}publish", node=node)
            it = etree.SubElement(pub, f"{{{PUBSUB}}}item", id=item_id)
            it.append(_copy(payload))
            if not exists:
                opts = etree.SubElement(req, f"{{{PUBSUB}}}publish-options")
                opts.append(_form(PUBLISH_OPTIONS, options))
                exists = True
            requests.append(req)
        if retract:
            req = etree.Element(_PUBSUB, nsmap={None: PUBSUB})
            r = etree.SubElement(req, f"{{{PUBSUB}}}retract", node=node, notify="true")
            for item_id in retract:
                etree.SubElement(r, f"{{{PUBSUB}}}item", id=item_id)
            requests.append(req)
        for req in requests:
            engine = self._engine(owner)
            await self._load(engine, engine.wants(req), items=True)
            effects = engine.handle_iq(owner, "set", req, Viewer(subscribed=True))
            await self._store(owner, engine, effects)
            await self._notify(owner, engine, effects.notifications)

    async def _authorization(self, service: JID, env: Envelope, el: etree._Element) -> None:
        """An owner's answer to a subscription authorization request (a
        message with the submitted form, XEP-0060 8.6)."""
        form = el.find(ns.q(ns.DATA_FORMS, "x"))
        if form is None or env.type == "error":
            return
        engine = self._engine(service)
        await self._load(engine, engine.wants(form), items=False)
        effects = engine.authorize(env.frm, form)
        await self._store(service, engine, effects)
        await self._notify(service, engine, effects.notifications)

    async def available(self, jid: JID, presence: bytes) -> None:
        """XEP-0163 6.3: a session that became available gets the last item
        of each node of its contacts' (and its own) PEP services it asks
        for and may see."""
        if jid.local is None or not self.ctx.is_local(jid.domain):
            return
        wanted = await self._notify_nodes_of(jid, presence)
        if not wanted:
            return
        _, roster = await self.ctx.storage.get_roster(jid.domain, jid.local)
        owners = [jid.bare] + [JID.parse(i.jid) for i in roster if i.subscription in ("to", "both")]
        for owner in owners:
            if owner.local is None or not self.ctx.is_local(owner.domain):
                continue  # remote PEP services send their own (federation)
            await self._last_items(owner, jid, wanted)

    async def nodes(self, service: JID) -> list[NodeSummary]:
        service = service.bare
        out = []
        for name, state in await self.ctx.storage.pubsub_nodes(str(service)):
            node = self._node(service, name, state)
            items = await self.ctx.storage.get_pubsub_items(str(service), name)
            out.append(
                NodeSummary(
                    service=service,
                    node=name,
                    title=node.config.title,
                    node_type=node.config.node_type,
                    access_model=node.config.access_model,
                    items=len(items),
                    subscriptions=len(node.subscriptions),
                    owners=tuple(
                        sorted(
                            {j for j, a in node.affiliations.items() if a == "owner"}
                            | ({str(service)} if service.local is not None else set())
                        )
                    ),
                )
            )
        return out

    async def delete_node(self, service: JID, node: str) -> bool:
        return await self._as_owner(service, node, "delete")

    async def purge_node(self, service: JID, node: str) -> bool:
        return await self._as_owner(service, node, "purge")

    async def _as_owner(self, service: JID, node: str, verb: str) -> bool:
        """An operator's delete or purge: the owner's request, made by the
        service itself, so subscribers are told as for an owner's."""
        service = service.bare

        async def here() -> bool:
            engine = self._engine(service)
            await self._load(engine, [node], items=False)
            if node not in engine.nodes:
                return False
            owner = next(
                (j for j, a in engine.nodes[node].affiliations.items() if a == "owner"),
                str(service),
            )
            payload = etree.Element(_OWNER, nsmap={None: PUBSUB_OWNER})
            etree.SubElement(payload, f"{{{PUBSUB_OWNER}}}{verb}", node=node)
            effects = engine.handle_iq(JID.parse(owner), "set", payload, Viewer())
            await self._store(service, engine, effects)
            await self._notify(service, engine, effects.notifications)
            return True

        async def there(other: Pubsub) -> bool:
            if verb == "delete":
                return await other.delete_node(service, node)
            return await other.purge_node(service, node)

        return await self._held(node_key(service, node), here, there)

    # ---- storage --------------------------------------------------------------

    def _engine(self, service: JID) -> PubsubService:
        pep = service.local is not None
        return PubsubService(service, pep=pep, limits=self.limits, owner=service if pep else None)

    def _node(self, service: JID, name: str, state: str) -> Node:
        node = Node(name=name, config=default_config(service.local is not None, self.limits))
        persist.apply_state(node, state)
        return node

    async def _load(self, engine: PubsubService, names: list[str] | None, items: bool) -> None:
        """The nodes a request names (None: all of the service), their
        collection ancestors (XEP-0248: a leaf's notifications reach them),
        and their items when the request reads them."""
        storage, service = self.ctx.storage, engine.jid
        if names is None:
            for name, state in await storage.pubsub_nodes(str(service)):
                engine.nodes[name] = self._node(service, name, state)
            todo = list(engine.nodes) if items else []
        else:
            todo = []
            queue = list(names)
            while queue:
                name = queue.pop()
                if name in engine.nodes:
                    continue
                stored = await storage.get_pubsub_node(str(service), name)
                if stored is None:
                    continue
                node = engine.nodes[name] = self._node(service, name, stored)
                todo.append(name)
                if node.config.collection:
                    queue.append(node.config.collection)
            if not items:
                todo = []
        for name in todo:
            records = await storage.get_pubsub_items(str(service), name)
            engine.nodes[name].items = [persist.item_of(r) for r in records]

    async def _store(self, service: JID, engine: PubsubService, fx: Effects) -> None:
        storage, s = self.ctx.storage, str(service)
        for name in fx.deleted:
            await storage.delete_pubsub_node(s, name)
        for name in sorted(fx.changed | fx.created):
            if name in engine.nodes and name not in fx.deleted:
                await storage.put_pubsub_node(s, name, persist.state_of(engine.nodes[name]))
        for name in fx.purged:
            await storage.purge_pubsub_node(s, name)
        for name, ids in fx.items_retracted:
            await storage.delete_pubsub_items(s, name, ids)
        for name, item in fx.items_put:
            node = engine.nodes.get(name)
            keep = node.config.max_items if node is not None else self.limits.max_items
            await storage.put_pubsub_item(s, name, persist.item_record(item), keep)
            if node is not None and node.config.item_expire > 0:
                # expired items are never shown (the engine reads past them);
                # a publish is when they also leave storage
                await storage.expire_pubsub_items(s, name, item.stamp - node.config.item_expire)

    # ---- who may see what --------------------------------------------------------

    async def _viewer(self, engine: PubsubService, frm: JID, node: str | None) -> Viewer:
        """The requester as the owner's roster sees it, for the presence and
        roster access models (PEP: the account; a pubsub domain's node: its
        first owner, when that is a local account)."""
        owner = self._owner_of(engine, node)
        if owner is None or owner.local is None or not self.ctx.is_local(owner.domain):
            return Viewer()
        if frm.bare == owner:
            return Viewer(subscribed=True)
        item = await self.ctx.storage.get_roster_item(owner.domain, owner.local, str(frm.bare))
        return _viewer_of(item)

    def _owner_of(self, engine: PubsubService, node: str | None) -> JID | None:
        if engine.jid.local is not None:
            return engine.jid
        n = engine.nodes.get(node) if node else None
        if n is None:
            return None
        owner = next((j for j, a in sorted(n.affiliations.items()) if a == "owner"), None)
        return JID.parse(owner) if owner else None

    # ---- notifications -------------------------------------------------------------

    async def _notify(self, service: JID, engine: PubsubService, notes: list[Notification]) -> None:
        for note in notes:
            targets: dict[JID, None] = dict.fromkeys(note.to)
            if note.pep and service.local is not None:
                for jid in await self._pep_audience(service, engine, note.node):
                    targets.setdefault(jid, None)
            sends = []
            for jid in targets:
                m = _copy(note.message)
                m.set("to", str(jid))
                sends.append(self.ctx.send(m))
            self._notified.inc(len(sends))
            await asyncio.gather(*sends)

    async def _pep_audience(self, owner: JID, engine: PubsubService, node: str) -> list[JID]:
        """The available resources, the owner's and its presence
        subscribers', that asked for ``node`` (+notify) and may see it."""
        assert owner.local is not None
        n = engine.nodes.get(node)
        _, roster = await self.ctx.storage.get_roster(owner.domain, owner.local)
        people: list[tuple[JID, Viewer]] = [(owner, Viewer(subscribed=True))]
        for item in roster:
            jid = JID.parse(item.jid)
            if (
                item.subscription in _FROM
                and jid.local is not None
                and self.ctx.is_local(jid.domain)
            ):
                people.append((jid, _viewer_of(item)))
        out: list[JID] = []
        for jid, viewer in people:
            if n is not None and jid != owner and not engine.may_see(n, jid, viewer):
                continue
            if jid != owner and await self.ctx.blocks.blocks(owner, jid):
                continue
            for s in await self.ctx.sessions.resources(jid):
                if s.available and node in await self._notify_nodes_of(s.jid, s.presence):
                    out.append(s.jid)
        return out

    async def _notify_nodes_of(self, jid: JID, presence: bytes | None) -> frozenset[str]:
        """What a session asks notifications for; an unknown caps ``ver`` is
        asked about (the answer carries on for this session)."""
        c = caps.caps_of(presence)
        if c is None:
            return frozenset()
        node, ver = c
        features = await self.caps.get(ver)
        if features is None:
            await self._ask_caps(jid, node, ver)
            return frozenset()
        return caps.notify_nodes(features)

    async def _ask_caps(self, jid: JID, node: str, ver: str) -> None:
        domain = next((d for d in sorted(self.domains) if d.endswith("." + jid.domain)), None)
        if domain is None:
            return  # no pubsub domain for the answer to come back to
        iq = st.make("iq", to=jid, frm=JID.parse(domain), type_="get", id_=caps.query_id(jid))
        etree.SubElement(iq, _DISCO_INFO, nsmap={None: ns.DISCO_INFO}, node=f"{node}#{ver}")
        await self.ctx.send(iq)

    async def _caps_answer(self, env: Envelope, payload: etree._Element) -> None:
        waiter = caps.waiter_of(env.tree().get("id"))
        if waiter is None or waiter != env.frm or payload.tag != _DISCO_INFO:
            return
        node = payload.get("node") or ""
        ver = node.rpartition("#")[2]
        features = caps.checked_features(ver, payload)
        if features is None:
            log.info("caps answer of %s does not hash to %s: not kept", env.frm, ver)
            return
        await self.caps.put(ver, features)
        s = await self.ctx.sessions.get(waiter)
        if s is not None and s.available and s.presence is not None:
            await pubsub_of(self.ctx).available(waiter, s.presence)

    async def _last_items(self, owner: JID, to: JID, wanted: frozenset[str]) -> None:
        # reads only: whichever replica holds the owner's service, storage
        # has what it answered, so this needs no lease
        engine = self._engine(owner)
        names = [name for name, _ in await self.ctx.storage.pubsub_nodes(str(owner))]
        names = [n for n in names if n in wanted]
        if not names:
            return
        await self._load(engine, names, items=True)
        viewer = (
            Viewer(subscribed=True)
            if to.bare == owner
            else _viewer_of(
                await self.ctx.storage.get_roster_item(
                    owner.domain, owner.local or "", str(to.bare)
                )
            )
        )
        if to.bare != owner and await self.ctx.blocks.blocks(owner, to):
            return
        for name in names:
            for m in engine.last_items(name, to, viewer):
                m.set("to", str(to))
                await self.ctx.send(m)
                self._notified.inc()


def _touched(fx: Effects) -> set[str]:
    """The nodes whose items a request changed."""
    return (
        {n for n, _ in fx.items_put}
        | {n for n, _ in fx.items_retracted}
        | set(fx.purged)
        | set(fx.deleted)
    )


def _form(form_type: str, values: dict[str, str]) -> etree._Element:
    x = etree.Element(ns.q(ns.DATA_FORMS, "x"), nsmap={None: ns.DATA_FORMS}, type="submit")
    for var, value in {"FORM_TYPE": form_type, **values}.items():
        f = etree.SubElement(x, ns.q(ns.DATA_FORMS, "field"), var=var)
        if var == "FORM_TYPE":
            f.set("type", "hidden")
        etree.SubElement(f, ns.q(ns.DATA_FORMS, "value")).text = value
    return x


def _viewer_of(item: RosterItem | None) -> Viewer:
    if item is None:
        return Viewer()
    return Viewer(subscribed=item.subscription in _FROM, groups=frozenset(item.groups))


def _needs_items(payload: etree._Element) -> bool:
    """Requests that read or change a node's items (others need only its state)."""
    # configure: a lower max_items cuts the stored items
    wanted = ("items", "retract", "publish", "configure")
    return any(str(child.tag).rpartition("}")[2] in wanted for child in payload)


def _copy(el: etree._Element) -> etree._Element:
    # a tree copy in C: serializing and parsing each recipient's copy was
    # the largest own-time item of the PEP benchmark's profile
    return copy.deepcopy(el)


def _result(iq: etree._Element, env: Envelope, payload: etree._Element | None) -> etree._Element:
    r = st.make("iq", to=env.frm, frm=env.to, type_="result", id_=iq.get("id"))
    if payload is not None:
        r.append(payload)
    return r


class PubsubDomain:
    """A pubsub domain in the router's domain registry, served through the
    Pubsub contract (the pubsub role over gRPC, or a PubsubHost)."""

    def __init__(self, pubsub: Pubsub) -> None:
        self.pubsub = pubsub

    async def route(self, ctx: Context, env: Envelope) -> None:
        await self.pubsub.route(JID.make(None, env.to.domain), env)


def pubsub_domains(settings: Settings) -> list[str]:
    """The pubsub domain of each host (``pubsub_subdomain``; none if empty)."""
    if not settings.pubsub_subdomain:
        return []
    return [f"{settings.pubsub_subdomain}.{host}" for host in settings.hosts]


def pubsub_limits(settings: Settings) -> Limits:
    return Limits(
        max_items=settings.pubsub_max_items,
        max_payload=settings.pubsub_max_payload,
        max_nodes=settings.pubsub_max_nodes,
    )


__all__ = ["PubsubDomain", "PubsubHost", "pubsub_domains", "pubsub_limits"]
