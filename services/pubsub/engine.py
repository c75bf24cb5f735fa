"""A publish-subscribe service (XEP-0060), sans-IO: collections (XEP-0248),
result set management on item retrieval (XEP-0059) and PEP (XEP-0163,
with the node profiles of XEP-0222 and XEP-0223).

How it is driven. The async service that owns storage asks :meth:`wants`
which nodes a request needs, loads them (and, reading
``config.collection``, their ancestors) into a :class:`PubsubService`, calls
:meth:`~PubsubService.handle_iq` (or a discovery or presence method) and
gets :class:`Effects` back: the IQ result's payload, the notifications to
send (``to`` unset: one :class:`Notification` names its recipients), and
what to write (node states, items put, items retracted, nodes purged,
created or deleted). A refusal is a :class:`StanzaError` raised before
anything changed, with the XEP-0060 condition and the ``pubsub#errors``
condition the XEP names; the caller bounces it.

The requests, by the namespace and type of the IQ and the first child of
``<pubsub/>`` (XEP-0060 says the secondary elements, ``<options/>``,
``<configure/>``, ``<publish-options/>``, follow it), are the table
:data:`_ROUTES` at the bottom of this module: everything a client can ask
is there.

Who may do what (XEP-0060 4.1, 4.5): :meth:`PubsubService.affiliation`
(on a PEP service the account owns every node; ``owner=`` on a generic
service is an administrator owning every node), then the node's access
model with the requester's :class:`Viewer` (its presence subscription and
roster groups, as the node owner's roster has them: the caller computes
it; the core never sees a roster).

What the core leaves to the caller: presence. A :class:`Notification`
with ``pep`` set also goes, in PEP, to the account's own available
resources and to the contacts whose caps ask for ``node+notify`` and who
may see the node (:meth:`PubsubService.may_see` tells); with
``presence_based`` set only to available resources. Item trimming in
storage: ``put_pubsub_item(..., keep=node.config.max_items)``; trimmed
items are listed in ``items_retracted`` too, so writing them is safe either
way.
"""

from __future__ import annotations

import copy
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from lxml import etree

from ..xmpp import forms, ns
from ..xmpp.errors import ErrorType, StanzaCondition, StanzaError
from ..xmpp.forms import Field
from ..xmpp.jid import JID
from ..xmpp.timefmt import delay_element
from .node import (
    AFFILIATIONS,
    NODE_TYPES,
    PUBLISH_OPTIONS,
    PUBSUB,
    PUBSUB_EVENT,
    PUBSUB_OWNER,
    RSM,
    SHIM,
    SUBSCRIBE_AUTHORIZATION,
    Item,
    Limits,
    Node,
    NodeConfig,
    Subscription,
    check_preconditions,
    config_form,
    copy_config,
    default_config,
    element,
    error,
    meta_form,
    options_form,
    parse_config,
    parse_options,
    q,
    unsupported,
)

__all__ = ["Effects", "Notification", "PubsubService", "Viewer"]

#: the features of XEP-0060 10 (and XEP-0248 2.1) this core implements, as
#: ``pubsub#<name>``; the PEP-only ones are added in :meth:`disco_info`
_FEATURES = (
    "collections",
    "config-node",
    "create-and-configure",
    "create-nodes",
    "delete-items",
    "delete-nodes",
    "instant-nodes",
    "item-ids",
    "manage-subscriptions",
    "member-affiliation",
    "meta-data",
    "modify-affiliations",
    "multi-items",
    "outcast-affiliation",
    "persistent-items",
    "publish",
    "publish-node-full",
    "publish-only-affiliation",
    "publish-options",
    "publisher-affiliation",
    "purge-nodes",
    "retract-items",
    "retrieve-affiliations",
    "retrieve-default",
    "retrieve-default-sub",
    "retrieve-items",
    "retrieve-subscriptions",
    "rsm",
    "subscribe",
    "subscription-notifications",
    "subscription-options",
)
_PEP_FEATURES = (
    "access-presence",
    "auto-create",
    "auto-subscribe",
    "filtered-notifications",
    "last-published",
    "presence-notifications",
    "presence-subscribe",
)
#: the affiliations that see a node whatever its access model (4.1: they
#: may retrieve items; 4.5: members are the whitelist)
_INSIDERS = ("owner", "publisher", "member")
_PUBLISHERS = ("owner", "publisher", "publish-only")


@dataclass(frozen=True, slots=True)
class Viewer:
    """The requester as the node owner's roster sees it (PEP: the owner is
    the account; a generic service: whatever roster its caller consults)."""

    #: it has a presence subscription to the owner ("from" or "both")
    subscribed: bool = False
    #: the owner's roster groups it is in
    groups: frozenset[str] = frozenset()


@dataclass(slots=True)
class Notification:
    """One event to send: ``message`` (``from`` the service, ``to`` unset)
    to each of ``to``."""

    node: str
    message: etree._Element
    #: explicit subscribers that get it (already filtered by their options)
    to: list[JID] = field(default_factory=list)
    #: PEP: also to the account's resources and the contacts XEP-0163 4 names
    #: (presence subscription, caps with ``node+notify``, :meth:`PubsubService.may_see`)
    pep: bool = False
    #: ``pubsub#presence_based_delivery``: only to available resources
    presence_based: bool = False


@dataclass(slots=True)
class Effects:
    """What one request did."""

    #: the IQ result's payload; None is an empty result
    result: etree._Element | None = None
    notifications: list[Notification] = field(default_factory=list)
    #: nodes whose state document (persist.state_of) to write; a created
    #: node is here too and is written before its items
    changed: set[str] = field(default_factory=set)
    created: set[str] = field(default_factory=set)
    deleted: list[str] = field(default_factory=list)
    #: (node, item) to store, in order
    items_put: list[tuple[str, Item]] = field(default_factory=list)
    items_retracted: list[tuple[str, list[str]]] = field(default_factory=list)
    #: nodes whose items all go
    purged: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Request:
    frm: JID
    payload: etree._Element  # <pubsub/>
    verb: etree._Element  # its first child
    viewer: Viewer


def _new_id() -> str:
    return secrets.token_hex(16)


def _first(payload: etree._Element, namespace: str) -> etree._Element | None:
    for child in payload:
        if isinstance(child.tag, str) and etree.QName(child).namespace == namespace:
            return child
    return None


def _true(raw: str | None) -> bool:
    return raw in ("1", "true")


class PubsubService:
    """One pubsub service: a pubsub domain, or an account's PEP service
    (``pep=True``, ``jid`` the account's bare JID)."""

    def __init__(
        self,
        jid: JID,
        *,
        pep: bool,
        limits: Limits,
        clock: Callable[[], float] = time.time,
        owner: JID | None = None,
        nodes: dict[str, Node] | None = None,
        node_count: int | None = None,
        auto_create: bool | None = None,
    ) -> None:
        """``owner``: PEP, the account (``jid`` when omitted); a generic
        service, an administrator who owns every node. ``nodes``: what the
        caller loaded. ``node_count``: how many nodes the service has in
        storage when fewer were loaded (``max_nodes`` holds against it).
        ``auto_create``: publishing to a missing node creates it (7.1.4;
        always for PEP, XEP-0163 3)."""
        self.jid = jid
        self.pep = pep
        self.limits = limits
        self.clock = clock
        self.owner: JID | None = (owner or jid).bare if pep else (owner.bare if owner else None)
        self.nodes: dict[str, Node] = nodes if nodes is not None else {}
        self.node_count = node_count
        self.auto_create = pep if auto_create is None else auto_create

    # ---- what a request needs ------------------------------------------------------

    def wants(self, payload: etree._Element) -> list[str] | None:
        """The nodes ``payload`` (a pubsub IQ's child, a disco query, or a
        subscribe_authorization form) needs loaded, their ancestors aside
        (the caller follows ``config.collection``); None for every node of
        the service."""
        tag = payload.tag
        if tag == q(ns.DISCO_INFO, "query"):
            name = payload.get("node")
            return [name] if name else []
        if tag == q(ns.DISCO_ITEMS, "query"):
            # the root lists top-level nodes; a collection its children: both
            # are found by reading every node's parent
            return None
        if tag == q(ns.DATA_FORMS, "x"):
            values = _form_values(payload)
            return [v for v in values.get("pubsub#node", [])[:1] if v]
        namespace = etree.QName(payload).namespace
        if etree.QName(payload).localname != "pubsub" or namespace not in (PUBSUB, PUBSUB_OWNER):
            return []
        verb = _first(payload, namespace)
        if verb is None:
            return []
        local = etree.QName(verb).localname
        name = verb.get("node")
        names = [name] if name else []
        if local in ("subscriptions", "affiliations"):
            return names or None
        if local == "delete" or (local == "configure" and namespace == PUBSUB_OWNER):
            # a collection's children lose their parent, or are listed in its
            # configuration: found by reading every node's parent
            return None
        if local == "default":
            return names if namespace == PUBSUB else []
        if local == "collection":
            for child in verb:
                if isinstance(child.tag, str) and child.get("node"):
                    names.append(child.get("node") or "")
            return names
        # a create, configure or auto-creating publish may name a new parent
        for secondary in ("configure", "publish-options"):
            el = verb if local == secondary else payload.find(q(namespace, secondary))
            if el is not None:
                x = el.find(q(ns.DATA_FORMS, "x"))
                parent = _form_values(x).get("pubsub#collection", []) if x is not None else []
                names += [p for p in parent[:1] if p and p not in names]
        return names

    # ---- who may do what ----------------------------------------------------------------

    def affiliation(self, node: Node, jid: JID) -> str:
        if self.owner is not None and jid.bare == self.owner:
            return "owner"
        return node.affiliations.get(str(jid.bare), "none")

    def owners(self, node: Node) -> list[str]:
        out = sorted(b for b, a in node.affiliations.items() if a == "owner")
        if self.owner is not None and str(self.owner) not in out:
            out.insert(0, str(self.owner))
        return out

    def _check_access(self, node: Node, frm: JID, viewer: Viewer) -> None:
        """The node's access model for ``frm`` (4.5, 6.1.3, 6.5.9): whether it
        may subscribe; retrieval adds the authorize rule (:meth:`_check_read`)."""
        aff = self.affiliation(node, frm)
        if aff == "outcast":
            raise error(StanzaCondition.FORBIDDEN, text="you are banned from this node")
        if aff in _INSIDERS:
            return
        if aff == "publish-only":
            # 4.1: a publish-only entity neither subscribes nor retrieves
            raise error(StanzaCondition.FORBIDDEN, text="publish-only")
        model = node.config.access_model
        if model == "presence" and not viewer.subscribed:
            raise error(StanzaCondition.NOT_AUTHORIZED, "presence-subscription-required")
        if model == "roster" and not viewer.groups & set(node.config.roster_groups_allowed):
            raise error(StanzaCondition.NOT_AUTHORIZED, "not-in-roster-group")
        if model == "whitelist":
            raise error(StanzaCondition.NOT_ALLOWED, "closed-node")

    def _check_read(self, node: Node, frm: JID, viewer: Viewer) -> None:
        self._check_access(node, frm, viewer)
        if (
            node.config.access_model == "authorize"
            and self.affiliation(node, frm) not in _INSIDERS
            and not any(s.state == "subscribed" for s in node.subscriptions_of(frm))
        ):
            # 6.5.9.3: a pending subscription is no subscription
            raise error(StanzaCondition.NOT_AUTHORIZED, "not-subscribed")

    def may_see(self, node: Node, jid: JID, viewer: Viewer) -> bool:
        """May ``jid`` read ``node``'s items, and so get its notifications
        without an explicit subscription (XEP-0163 4: the caller asks before
        sending a ``pep`` notification to a contact)."""
        try:
            self._check_read(node, jid, viewer)
        except StanzaError:
            return False
        return True

    def _visible(self, node: Node, jid: JID, viewer: Viewer) -> bool:
        """Listed in disco (XEP-0163 7.2: nodes it may subscribe to or read)."""
        try:
            self._check_access(node, jid, viewer)
        except StanzaError:
            return False
        return True

    def _reaches(self, node: Node, jid: JID) -> bool:
        """Access that needs no roster to decide: whether a subscriber of a
        collection hears what ``node`` (inside it) publishes. Presence and
        roster models cannot be decided without the subscriber's viewer, so
        they are refused here rather than leaked (XEP-0248 5: the
        collection's access model is not the leaf's)."""
        aff = self.affiliation(node, jid)
        if aff in _INSIDERS:
            return True
        if aff in ("outcast", "publish-only"):
            return False
        return node.config.access_model == "open"

    def _require_owner(self, node: Node, frm: JID) -> None:
        if self.affiliation(node, frm) != "owner":
            raise error(StanzaCondition.FORBIDDEN, text="only an owner of the node may do that")

    def _node(self, name: str) -> Node:
        node = self.nodes.get(name)
        if node is None:
            raise error(StanzaCondition.ITEM_NOT_FOUND, text="no such node")
        return node

    # ---- dispatch -------------------------------------------------------------------------

    def handle_iq(self, frm: JID, iq_type: str, payload: etree._Element, viewer: Viewer) -> Effects:
        """One pubsub IQ (``payload``: its ``<pubsub/>`` child, either namespace)."""
        namespace = etree.QName(payload).namespace
        if etree.QName(payload).localname != "pubsub" or namespace not in (PUBSUB, PUBSUB_OWNER):
            raise StanzaError(StanzaCondition.FEATURE_NOT_IMPLEMENTED)
        verb = _first(payload, namespace)
        if verb is None:
            raise StanzaError(StanzaCondition.BAD_REQUEST, "an empty pubsub request")
        local = etree.QName(verb).localname
        route = _ROUTES.get((namespace, iq_type, local))
        if route is None:
            if any((namespace, t, local) in _ROUTES for t in ("get", "set")):
                raise StanzaError(StanzaCondition.BAD_REQUEST, f"{local} is not a {iq_type}")
            raise StanzaError(StanzaCondition.FEATURE_NOT_IMPLEMENTED, f"no {local} here")
        return route(self, _Request(frm, payload, verb, viewer))

    @staticmethod
    def _name(el: etree._Element) -> str:
        name = el.get("node")
        if not name:
            raise error(StanzaCondition.BAD_REQUEST, "nodeid-required")
        return name

    @staticmethod
    def _jid_attr(el: etree._Element) -> JID:
        raw = el.get("jid")
        if not raw:
            raise error(StanzaCondition.BAD_REQUEST, "jid-required")
        try:
            return JID.parse(raw)
        except StanzaError:
            raise error(StanzaCondition.BAD_REQUEST, "invalid-jid", text="not a JID") from None

    # ---- discovery (5.1 - 5.5, XEP-0248 4.2) ------------------------------------------------

    def disco_info(
        self, node: str | None, viewer: Viewer, frm: JID | None = None
    ) -> etree._Element:
        """disco#info of the service or of one node (with its meta-data). A
        node ``frm`` may not see is item-not-found, as one that is not there."""
        query = element(ns.DISCO_INFO, "query")
        if node is None:
            etree.SubElement(
                query,
                q(ns.DISCO_INFO, "identity"),
                category="pubsub",
                type="pep" if self.pep else "service",
            )
            features = [PUBSUB] + [f"{PUBSUB}#{f}" for f in _FEATURES]
            if self.pep:
                features += [f"{PUBSUB}#{f}" for f in _PEP_FEATURES]
            else:
                features.append(f"{PUBSUB}#access-open")
                if self.auto_create:
                    features.append(f"{PUBSUB}#auto-create")
            for var in sorted(features):
                etree.SubElement(query, q(ns.DISCO_INFO, "feature"), var=var)
            return query
        n = self._node(node)
        if frm is not None and not self._visible(n, frm, viewer):
            raise error(StanzaCondition.ITEM_NOT_FOUND, text="no such node")
        query.set("node", node)
        etree.SubElement(
            query, q(ns.DISCO_INFO, "identity"), category="pubsub", type=n.config.node_type
        )
        etree.SubElement(query, q(ns.DISCO_INFO, "feature"), var=PUBSUB)
        query.append(meta_form(n, self.limits, self.owners(n)))
        return query

    def disco_items(self, node: str | None, frm: JID, viewer: Viewer) -> etree._Element:
        """The root: the top-level nodes ``frm`` may see (XEP-0163 7.2); a
        collection: its children it may see; a leaf: its items (``name`` the
        item id, 5.5), when ``frm`` may read them."""
        query = element(ns.DISCO_ITEMS, "query")
        if node is None:
            children = [n for n in self.nodes.values() if n.config.collection not in self.nodes]
            return self._list_nodes(query, children, frm, viewer)
        n = self._node(node)
        if not self._visible(n, frm, viewer):
            raise error(StanzaCondition.ITEM_NOT_FOUND, text="no such node")
        query.set("node", node)
        if n.config.node_type == "collection":
            children = [c for c in self.nodes.values() if c.config.collection == node]
            return self._list_nodes(query, children, frm, viewer)
        if self.may_see(n, frm, viewer):
            for item in self._live(n):
                etree.SubElement(query, q(ns.DISCO_ITEMS, "item"), jid=str(self.jid), name=item.id)
        return query

    def _list_nodes(
        self, query: etree._Element, nodes: Iterable[Node], frm: JID, viewer: Viewer
    ) -> etree._Element:
        for n in sorted(nodes, key=lambda n: n.name):
            if self._visible(n, frm, viewer):
                item = etree.SubElement(
                    query, q(ns.DISCO_ITEMS, "item"), jid=str(self.jid), node=n.name
                )
                if n.config.title:
                    item.set("name", n.config.title)
        return query

    # ---- entity use cases (5.6, 5.7) -----------------------------------------------------

    def _my_subscriptions(self, r: _Request) -> Effects:
        name = r.verb.get("node")
        nodes = [self._node(name)] if name else sorted(self.nodes.values(), key=lambda n: n.name)
        pubsub = element(PUBSUB, "pubsub")
        subs = etree.SubElement(pubsub, q(PUBSUB, "subscriptions"))
        if name:
            subs.set("node", name)
        for n in nodes:
            for s in n.subscriptions_of(r.frm):
                subs.append(self._subscription_el(PUBSUB, n, s))
        return Effects(result=pubsub)

    def _my_affiliations(self, r: _Request) -> Effects:
        name = r.verb.get("node")
        nodes = [self._node(name)] if name else sorted(self.nodes.values(), key=lambda n: n.name)
        pubsub = element(PUBSUB, "pubsub")
        affs = etree.SubElement(pubsub, q(PUBSUB, "affiliations"))
        if name:
            affs.set("node", name)
        for n in nodes:
            aff = self.affiliation(n, r.frm)
            if aff != "none":
                etree.SubElement(affs, q(PUBSUB, "affiliation"), node=n.name, affiliation=aff)
        return Effects(result=pubsub)

    @staticmethod
    def _subscription_el(
        namespace: str, node: Node | None, s: Subscription, state: str | None = None
    ) -> etree._Element:
        el = etree.Element(q(namespace, "subscription"))
        if node is not None:
            el.set("node", node.name)
        el.set("jid", s.jid)
        el.set("subscription", state or s.state)
        el.set("subid", s.subid)
        return el

    # ---- subscriber use cases (6) ---------------------------------------------------------

    def _subscribe(self, r: _Request) -> Effects:
        name = self._name(r.verb)
        jid = self._jid_attr(r.verb)
        options: dict[str, list[str]] = {}
        opts = r.payload.find(q(PUBSUB, "options"))
        if opts is not None:
            if opts.get("node") is not None or opts.get("jid") is not None:
                # 6.3.7: the subscribe element names both
                raise StanzaError(StanzaCondition.BAD_REQUEST, "options with node or jid")
            form = forms.find_form(opts)
            if form is not None:
                options = parse_options(form)
        node = self._node(name)
        aff = self.affiliation(node, r.frm)
        if jid.bare != r.frm.bare and aff != "owner":
            raise error(StanzaCondition.BAD_REQUEST, "invalid-jid", text="not your JID")
        if not node.config.subscribe:
            raise unsupported("subscribe", "this node takes no subscriptions")
        if jid.bare == r.frm.bare:
            # an owner subscribing someone else has the owner's rights; the
            # viewer is the requester's, so it says nothing about that entity
            self._check_access(node, r.frm, r.viewer)
        existing = node.subscription(str(jid))
        if existing is not None:
            if existing.state == "pending":
                raise error(StanzaCondition.NOT_AUTHORIZED, "pending-subscription")
            # no multi-subscribe: the current subscription is the answer (6.1.6)
            if options:
                existing.options.update(options)
                node.state_seq += 1
                return self._subscribed(node, existing, opts is not None, changed=True)
            return self._subscribed(node, existing, opts is not None)
        if len(node.subscriptions) >= self.limits.max_subscriptions_per_node:
            raise error(
                StanzaCondition.POLICY_VIOLATION, "too-many-subscriptions", type_=ErrorType.WAIT
            )
        # an owner's approval is what an authorize node waits for: an owner
        # subscribing someone has given it
        pending = (
            node.config.access_model == "authorize"
            and self.affiliation(node, jid) not in _INSIDERS
            and aff != "owner"
        )
        sub = Subscription(str(jid), _new_id(), "pending" if pending else "subscribed", options)
        node.subscriptions.append(sub)
        node.state_seq += 1
        eff = self._subscribed(node, sub, opts is not None, changed=True)
        if pending:
            eff.notifications.append(self._authorization_request(node, sub))
        else:
            eff.notifications += self._last_item_to(node, JID.parse(sub.jid))
        eff.notifications += self._notify_owners_sub(node, sub, sub.state)
        return eff

    def _subscribed(
        self, node: Node, sub: Subscription, with_options: bool, changed: bool = False
    ) -> Effects:
        pubsub = element(PUBSUB, "pubsub")
        pubsub.append(self._subscription_el(PUBSUB, node, sub))
        if with_options:
            # 6.3.7: the options in force, as a result form
            opts = etree.SubElement(pubsub, q(PUBSUB, "options"))
            opts.append(options_form(sub.options, node.config.node_type == "collection", "result"))
        return Effects(result=pubsub, changed={node.name} if changed else set())

    def _unsubscribe(self, r: _Request) -> Effects:
        name = self._name(r.verb)
        jid = self._jid_attr(r.verb)
        node = self._node(name)
        if jid.bare != r.frm.bare and self.affiliation(node, r.frm) != "owner":
            raise error(StanzaCondition.FORBIDDEN, text="not your subscription")
        sub = self._find_sub(node, jid, r.verb.get("subid"), ErrorType.CANCEL)
        node.subscriptions.remove(sub)
        node.state_seq += 1
        pubsub = element(PUBSUB, "pubsub")
        pubsub.append(self._subscription_el(PUBSUB, node, sub, "none"))
        eff = Effects(result=pubsub, changed={node.name})
        eff.notifications += self._notify_owners_sub(node, sub, "none")
        return eff

    @staticmethod
    def _find_sub(node: Node, jid: JID, subid: str | None, type_: ErrorType) -> Subscription:
        sub = node.subscription(str(jid))
        if sub is None:
            raise error(StanzaCondition.UNEXPECTED_REQUEST, "not-subscribed", type_=type_)
        if subid and subid != sub.subid:
            raise error(StanzaCondition.NOT_ACCEPTABLE, "invalid-subid")
        return sub

    def _options_target(self, r: _Request) -> tuple[Node, Subscription]:
        name = self._name(r.verb)
        jid = self._jid_attr(r.verb)
        node = self._node(name)
        if jid.bare != r.frm.bare and self.affiliation(node, r.frm) != "owner":
            raise error(StanzaCondition.FORBIDDEN, text="not your subscription")
        return node, self._find_sub(node, jid, r.verb.get("subid"), ErrorType.MODIFY)

    def _options_get(self, r: _Request) -> Effects:
        node, sub = self._options_target(r)
        pubsub = element(PUBSUB, "pubsub")
        opts = etree.SubElement(pubsub, q(PUBSUB, "options"), node=node.name, jid=sub.jid)
        opts.set("subid", sub.subid)
        opts.append(options_form(sub.options, node.config.node_type == "collection", "form"))
        return Effects(result=pubsub)

    def _options_set(self, r: _Request) -> Effects:
        node, sub = self._options_target(r)
        form = forms.find_form(r.verb)
        if form is None:
            raise error(StanzaCondition.BAD_REQUEST, "invalid-options", text="no form")
        sub.options.update(parse_options(form))
        if sub.state == "unconfigured":
            sub.state = "subscribed"
        node.state_seq += 1
        return Effects(changed={node.name})

    def _default_options(self, r: _Request) -> Effects:
        name = r.verb.get("node")
        collection = False
        pubsub = element(PUBSUB, "pubsub")
        default = etree.SubElement(pubsub, q(PUBSUB, "default"))
        if name:
            collection = self._node(name).config.node_type == "collection"
            default.set("node", name)
        default.append(options_form({}, collection, "result"))
        return Effects(result=pubsub)

    def _items(self, r: _Request) -> Effects:
        """6.5: all items, the newest ``max_items``, some by id, or a page
        (XEP-0059). One order everywhere: newest first, the order the node
        keeps and storage returns, so a page of ``<max/>`` N is the N most
        recent, as ``max_items`` is, and ``<after/>`` pages back in time."""
        name = self._name(r.verb)
        node = self._node(name)
        if node.config.node_type == "collection":
            # 6.5.9.5: a collection has no items of its own (XEP-0248 5.2 MAY)
            raise unsupported("retrieve-items", "a collection has no items")
        self._check_read(node, r.frm, r.viewer)
        subid = r.verb.get("subid")
        mine = node.subscriptions_of(r.frm)
        if subid and mine and all(s.subid != subid for s in mine):
            raise error(StanzaCondition.NOT_ACCEPTABLE, "invalid-subid")
        if not node.config.persist_items:
            # 6.5.9.4: a transient node keeps nothing to return
            raise unsupported("persistent-items", "this node keeps no items")
        items = self._live(node)
        wanted = [el.get("id") for el in r.verb.iterchildren(q(PUBSUB, "item"))]
        if wanted:
            ids = {i for i in wanted if i}
            items = [it for it in items if it.id in ids]
        raw_max = r.verb.get("max_items")
        if raw_max is not None:
            items = items[: _nonneg(raw_max, "max_items")]
        page, rsm = items, None
        set_el = r.payload.find(q(RSM, "set"))
        if set_el is not None:
            page, rsm = _rsm_page(items, set_el, self.limits.max_items)
        pubsub = element(PUBSUB, "pubsub")
        out = etree.SubElement(pubsub, q(PUBSUB, "items"), node=name)
        for item in page:
            out.append(self._item_el(PUBSUB, node, item, payload=True))
        if rsm is not None:
            pubsub.append(rsm)
        return Effects(result=pubsub)

    # ---- publisher use cases (7) -------------------------------------------------------------

    def _check_publisher(self, node: Node, frm: JID) -> None:
        aff = self.affiliation(node, frm)
        if aff == "outcast":
            raise error(StanzaCondition.FORBIDDEN, text="you are banned from this node")
        if aff in _PUBLISHERS:
            return
        model = node.config.publish_model
        if model == "open":
            return
        if model == "subscribers" and any(s.active for s in node.subscriptions_of(frm)):
            return
        raise error(StanzaCondition.FORBIDDEN, text="you may not publish here")

    def _publish(self, r: _Request) -> Effects:
        name = self._name(r.verb)
        item_els = r.verb.findall(q(PUBSUB, "item"))
        if len(item_els) > 1:
            # batch publishing left XEP-0060 in 1.13
            raise StanzaError(StanzaCondition.BAD_REQUEST, "one item per publish")
        options = None
        po = r.payload.find(q(PUBSUB, "publish-options"))
        if po is not None:
            options = forms.find_form(po)
        node = self.nodes.get(name)
        created = node is None
        if node is None:
            node = self._auto_create(name, r.frm, options)
        elif options is not None:
            check_preconditions(node.config, options, self.limits)
        if node.config.node_type == "collection":
            raise unsupported("publish", "a collection takes no items")
        self._check_publisher(node, r.frm)
        item = self._make_item(node, item_els[0] if item_els else None, r.frm)
        # nothing is refused past this point: the node and the item go in
        eff = Effects()
        if created:
            self._insert(node, eff)
        item_id = self._store(node, item, eff)
        pubsub = element(PUBSUB, "pubsub")
        publish = etree.SubElement(pubsub, q(PUBSUB, "publish"), node=name)
        if item_id is not None:
            etree.SubElement(publish, q(PUBSUB, "item"), id=item_id)
        eff.result = pubsub
        return eff

    def _auto_create(self, name: str, frm: JID, options: etree._Element | None) -> Node:
        """7.1.4, 7.1.5: a publish to a missing node creates it, with the
        publish-options as its configuration (XEP-0222, XEP-0223 rely on it)."""
        if not self.auto_create or not self._may_create(frm):
            raise error(StanzaCondition.ITEM_NOT_FOUND, text="no such node")
        config = default_config(self.pep, self.limits)
        if options is not None:
            values, unknown = parse_config(options, self.limits, PUBLISH_OPTIONS)
            if unknown:
                raise error(
                    StanzaCondition.CONFLICT, "precondition-not-met", text=f"unknown {unknown[0]}"
                )
            if values.get("node_type", "leaf") != "leaf":
                raise unsupported("publish", "a collection takes no items")
            for attr, value in values.items():
                setattr(config, attr, value)
        return self._new_node(name, config, frm)

    def _make_item(self, node: Node, el: etree._Element | None, frm: JID) -> Item | None:
        """The item to publish, checked against the node's event type (4.3,
        7.1.3.6), payload rules (7.1.3.5) and size (7.1.3.4)."""
        c = node.config
        if el is None:
            if c.persist_items:
                raise error(StanzaCondition.BAD_REQUEST, "item-required")
            if c.deliver_payloads:
                raise error(StanzaCondition.BAD_REQUEST, "payload-required")
            return None
        if not c.persist_items and not c.deliver_payloads:
            raise error(StanzaCondition.BAD_REQUEST, "item-forbidden")
        children = [ch for ch in el if isinstance(ch.tag, str)]
        if len(children) > 1:
            raise error(StanzaCondition.BAD_REQUEST, "invalid-payload", text="one payload per item")
        payload = children[0] if children else None
        if payload is None and c.deliver_payloads:
            raise error(StanzaCondition.BAD_REQUEST, "payload-required")
        if payload is not None:
            if c.type and etree.QName(payload).namespace != c.type:
                raise error(
                    StanzaCondition.BAD_REQUEST, "invalid-payload", text=f"this node takes {c.type}"
                )
            size = len(etree.tostring(payload, with_tail=False))
            if size > min(c.max_payload_size, self.limits.max_payload):
                raise error(StanzaCondition.NOT_ACCEPTABLE, "payload-too-big")
            payload = copy.deepcopy(payload)
            payload.tail = None
        item_id = el.get("id") or _new_id()
        if len(item_id.encode()) > 1023:
            raise StanzaError(StanzaCondition.BAD_REQUEST, "the item id is too long")
        if (
            c.persist_items
            and c.publish_node_full == "reject"
            and node.item(item_id) is None
            and len(node.items) >= self._keep(c)
        ):
            raise error(StanzaCondition.CONFLICT, "node-full")
        return Item(item_id, str(frm), self.clock(), payload)

    def _keep(self, c: NodeConfig) -> int:
        """How many items a node keeps: its max_items, within the operator's
        limit (which may have been lowered since the node was configured)."""
        return max(1, min(c.max_items, self.limits.max_items))

    def _store(self, node: Node, item: Item | None, eff: Effects) -> str | None:
        """Keep the item (a persistent node), notify, and say what to write."""
        c = node.config
        dropped: list[str] = []
        keep = self._keep(c)
        if item is not None and c.persist_items:
            old = node.item(item.id)
            if old is not None:
                node.items.remove(old)  # re-publication is modification (7.1.2)
            node.items.insert(0, item)
            dropped = [it.id for it in node.items[keep:]]
            del node.items[keep:]
            eff.items_put.append((node.name, item))
            if dropped:
                eff.items_retracted.append((node.name, dropped))
        if c.deliver_notifications:
            items = element(PUBSUB_EVENT, "items", node=node.name)
            if item is not None:
                items.append(self._item_el(PUBSUB_EVENT, node, item, c.deliver_payloads))
            eff.notifications += self._broadcast(node, items, "items")
        if dropped and c.publish_node_full == "retract-oldest" and c.notify_retract and keep > 1:
            # 7.1.2.7: the oldest item made room, and subscribers see it go.
            # Not on a singleton node (12.21): there the new item overwrites
            # the old, and a retraction would read as the data being removed
            eff.notifications += self._retract_event(node, dropped)
        return item.id if item is not None else None

    def _item_el(self, namespace: str, node: Node, item: Item, payload: bool) -> etree._Element:
        el = etree.Element(q(namespace, "item"), id=item.id)
        if node.config.itemreply == "publisher" and item.publisher:
            el.set("publisher", item.publisher)
        if payload and item.payload is not None:
            el.append(copy.deepcopy(item.payload))
        return el

    def _retract(self, r: _Request) -> Effects:
        name = self._name(r.verb)
        ids = [el.get("id") or "" for el in r.verb.iterchildren(q(PUBSUB, "item"))]
        if not ids or not all(ids):
            raise error(StanzaCondition.BAD_REQUEST, "item-required")
        node = self._node(name)
        if node.config.node_type == "collection" or not node.config.persist_items:
            raise unsupported("persistent-items", "this node keeps no items")
        aff = self.affiliation(node, r.frm)
        if aff not in _PUBLISHERS:
            raise error(StanzaCondition.FORBIDDEN, text="you may not retract here")
        items = []
        for item_id in dict.fromkeys(ids):
            item = node.item(item_id)
            if item is None:
                raise error(StanzaCondition.ITEM_NOT_FOUND, text=f"no item {item_id}")
            if aff == "publish-only" and JID.parse(item.publisher).bare != r.frm.bare:
                # 4.1: publish-only retracts its own items only
                raise error(StanzaCondition.FORBIDDEN, text="not your item")
            items.append(item)
        for item in items:
            node.items.remove(item)
        eff = Effects(items_retracted=[(name, [it.id for it in items])])
        notify = r.verb.get("notify")
        # 7.2.2.1: notify="true" asks for it; without the attribute the
        # node's notify_retract decides
        if _true(notify) if notify is not None else node.config.notify_retract:
            eff.notifications += self._retract_event(node, [it.id for it in items])
        return eff

    def _retract_event(self, node: Node, ids: list[str]) -> list[Notification]:
        if not node.config.deliver_notifications:
            return []
        items = element(PUBSUB_EVENT, "items", node=node.name)
        for item_id in ids:
            etree.SubElement(items, q(PUBSUB_EVENT, "retract"), id=item_id)
        return self._broadcast(node, items, "items")

    # ---- owner use cases (8) -------------------------------------------------------------------

    def _may_create(self, frm: JID) -> bool:
        # PEP: the account is the only publisher there is (XEP-0163 2.2)
        return not self.pep or frm.bare == self.owner

    def _new_node(self, name: str, config: NodeConfig, frm: JID) -> Node:
        """A node about to be created, after the checks that apply to every
        new node (its name, the service's node limit, its parent)."""
        if not name or len(name.encode()) > 1023:
            raise StanzaError(StanzaCondition.BAD_REQUEST, "not a valid node name")
        if name in self.nodes:
            raise error(StanzaCondition.CONFLICT, text="the node exists")
        if max(self.node_count or 0, len(self.nodes)) >= self.limits.max_nodes:
            # XEP-0248 6.2.3's condition for too many nodes is the closest there is
            raise error(StanzaCondition.NOT_ALLOWED, "max-nodes-exceeded")
        if config.collection:
            self._check_parent(name, config.collection, frm)
        affiliations = {} if self.pep else {str(frm.bare): "owner"}
        return Node(name, config, affiliations, creator=str(frm.bare), created=self.clock())

    def _insert(self, node: Node, eff: Effects) -> None:
        node.state_seq += 1
        self.nodes[node.name] = node
        if self.node_count is not None:
            self.node_count += 1
        eff.created.add(node.name)
        eff.changed.add(node.name)
        if node.config.collection:
            eff.notifications += self._association(node.config.collection, node.name, "associate")

    def _check_parent(self, child: str, parent: str, frm: JID) -> None:
        """XEP-0248 6.2.3: the parent is a collection the requester owns, and
        no cycle comes of it."""
        p = self.nodes.get(parent)
        if p is None:
            raise error(StanzaCondition.ITEM_NOT_FOUND, text=f"no collection {parent}")
        if p.config.node_type != "collection":
            raise error(StanzaCondition.NOT_ALLOWED, "invalid-options", text=f"{parent} is a leaf")
        if self.affiliation(p, frm) != "owner":
            raise error(StanzaCondition.FORBIDDEN, text=f"you do not own {parent}")
        if child in [n.name for n in self._ancestors(p)] or child == parent:
            raise error(StanzaCondition.NOT_ALLOWED, "invalid-options", text="a cycle")

    def _ancestors(self, node: Node) -> list[Node]:
        """``node`` and the collections above it, nearest first (a missing
        parent ends the chain; a cycle, which :meth:`_check_parent` keeps
        out, would too)."""
        out = [node]
        seen = {node.name}
        while True:
            parent = self.nodes.get(out[-1].config.collection)
            if parent is None or parent.name in seen:
                return out
            out.append(parent)
            seen.add(parent.name)

    def _create(self, r: _Request) -> Effects:
        if not self._may_create(r.frm):
            raise error(StanzaCondition.FORBIDDEN, text="only the account creates nodes here")
        conf = r.payload.find(q(PUBSUB, "configure"))
        if conf is not None and conf.get("node") is not None:
            raise StanzaError(StanzaCondition.BAD_REQUEST, "configure names no node (8.1.3)")
        form = forms.find_form(conf) if conf is not None else None
        values: dict[str, Any] = {}
        if form is not None and form.get("type") != "cancel":
            values, _unknown = parse_config(form, self.limits)
        node_type = values.get("node_type", "leaf")
        config = default_config(self.pep, self.limits, node_type)
        for attr, value in values.items():
            setattr(config, attr, value)
        name = r.verb.get("node")
        if name is None:
            name = _new_id()  # an instant node (8.1.2)
            while name in self.nodes:
                name = _new_id()
        node = self._new_node(name, config, r.frm)
        eff = Effects()
        self._insert(node, eff)
        pubsub = element(PUBSUB, "pubsub")
        etree.SubElement(pubsub, q(PUBSUB, "create"), node=name)
        eff.result = pubsub
        return eff

    def _configure_get(self, r: _Request) -> Effects:
        node = self._node(self._name(r.verb))
        self._require_owner(node, r.frm)
        pubsub = element(PUBSUB_OWNER, "pubsub")
        conf = etree.SubElement(pubsub, q(PUBSUB_OWNER, "configure"), node=node.name)
        conf.append(config_form(node.config, self.limits, self._children(node.name)))
        return Effects(result=pubsub)

    def _children(self, name: str) -> list[str]:
        return sorted(n.name for n in self.nodes.values() if n.config.collection == name)

    def _configure_set(self, r: _Request) -> Effects:
        node = self._node(self._name(r.verb))
        self._require_owner(node, r.frm)
        form = forms.find_form(r.verb)
        if form is None:
            raise StanzaError(StanzaCondition.BAD_REQUEST, "a node_config form is required")
        if form.get("type") == "cancel":
            return Effects()  # 8.2.4: the configuration stays
        old = node.config
        new = copy_config(old)
        values, _unknown = parse_config(form, self.limits)
        for attr, value in values.items():
            setattr(new, attr, value)
        if old.node_type == "collection" and new.node_type == "leaf":
            # XEP-0248 6.2.3.4
            raise error(
                StanzaCondition.NOT_ALLOWED, "invalid-options", text="a collection stays one"
            )
        if new.collection and new.collection != old.collection:
            self._check_parent(node.name, new.collection, r.frm)
        eff = Effects(changed={node.name})
        if new.node_type == "collection" and old.node_type == "leaf":
            # XEP-0248 6.2.4: a leaf becoming a collection loses its items
            new.persist_items = False
            new.send_last_published_item = "never"
        if node.items and not new.persist_items:
            node.items.clear()
            eff.purged.append(node.name)
        elif len(node.items) > self._keep(new):
            keep = self._keep(new)
            eff.items_retracted.append((node.name, [it.id for it in node.items[keep:]]))
            del node.items[keep:]
        node.config = new
        node.state_seq += 1
        if old.collection != new.collection:
            if old.collection:
                eff.notifications += self._association(old.collection, node.name, "dissociate")
            if new.collection:
                eff.notifications += self._association(new.collection, node.name, "associate")
        if new.notify_config and new.deliver_notifications:
            event = element(PUBSUB_EVENT, "configuration", node=node.name)
            if new.deliver_payloads:
                event.append(config_form(new, self.limits, self._children(node.name), "result"))
            eff.notifications += self._broadcast(node, event, "nodes")
        return eff

    def _default_config(self, r: _Request) -> Effects:
        node_type = r.verb.get("type") or "leaf"
        if node_type not in NODE_TYPES:
            raise StanzaError(StanzaCondition.BAD_REQUEST, f"no node type {node_type}")
        pubsub = element(PUBSUB_OWNER, "pubsub")
        default = etree.SubElement(pubsub, q(PUBSUB_OWNER, "default"))
        default.append(config_form(default_config(self.pep, self.limits, node_type), self.limits))
        return Effects(result=pubsub)

    def _delete(self, r: _Request) -> Effects:
        node = self._node(self._name(r.verb))
        self._require_owner(node, r.frm)
        eff = Effects(deleted=[node.name])
        redirect = r.verb.find(q(PUBSUB_OWNER, "redirect"))
        if node.config.notify_delete:
            event = element(PUBSUB_EVENT, "delete", node=node.name)
            if redirect is not None and redirect.get("uri"):
                etree.SubElement(event, q(PUBSUB_EVENT, "redirect"), uri=redirect.get("uri") or "")
            # 8.4.2: every subscriber, pending ones included
            eff.notifications += self._broadcast(node, event, "nodes", pending=True)
        if node.config.collection:
            eff.notifications += self._association(node.config.collection, node.name, "dissociate")
        for child in self.nodes.values():
            if child.config.collection == node.name:
                # XEP-0248 10.2: the children stay, at the top of the service
                child.config.collection = ""
                child.state_seq += 1
                eff.changed.add(child.name)
        del self.nodes[node.name]
        if self.node_count is not None:
            self.node_count -= 1
        return eff

    def _purge(self, r: _Request) -> Effects:
        node = self._node(self._name(r.verb))
        if self.affiliation(node, r.frm) not in ("owner", "publisher"):
            raise error(StanzaCondition.FORBIDDEN, text="only owners and publishers purge")
        if node.config.node_type == "collection" or not node.config.persist_items:
            raise unsupported("persistent-items", "this node keeps no items")
        node.items.clear()
        eff = Effects(purged=[node.name])
        if node.config.notify_retract and node.config.deliver_notifications:
            # 8.5.2: one <purge/>, not a retraction per item
            event = element(PUBSUB_EVENT, "purge", node=node.name)
            eff.notifications += self._broadcast(node, event, "items")
        return eff

    def _subscriptions_get(self, r: _Request) -> Effects:
        node = self._node(self._name(r.verb))
        self._require_owner(node, r.frm)
        pubsub = element(PUBSUB_OWNER, "pubsub")
        subs = etree.SubElement(pubsub, q(PUBSUB_OWNER, "subscriptions"), node=node.name)
        # 8.8.1.2: not the pending ones (they come as authorization requests)
        for s in node.subscriptions:
            if s.active:
                subs.append(self._subscription_el(PUBSUB_OWNER, None, s))
        return Effects(result=pubsub)

    def _subscriptions_set(self, r: _Request) -> Effects:
        """8.8.2: each entry sets one subscription; all are checked first, so
        a refusal changes nothing (the XEP's partial application, with the
        failed entries echoed, is not done)."""
        node = self._node(self._name(r.verb))
        self._require_owner(node, r.frm)
        changes: list[tuple[JID, str, str | None]] = []
        for el in r.verb.iterchildren(q(PUBSUB_OWNER, "subscription")):
            jid = self._jid_attr(el)
            state = el.get("subscription")
            if state is None:
                continue  # "MUST NOT be changed"
            if state not in ("none", "subscribed", "pending", "unconfigured"):
                raise error(StanzaCondition.NOT_ACCEPTABLE, text=f"no state {state}")
            subid = el.get("subid")
            current = node.subscription(str(jid))
            if current is not None and subid and subid != current.subid:
                raise error(StanzaCondition.NOT_ACCEPTABLE, "invalid-subid")
            if current is None and state != "none":
                if len(node.subscriptions) + len(changes) >= self.limits.max_subscriptions_per_node:
                    raise error(
                        StanzaCondition.POLICY_VIOLATION,
                        "too-many-subscriptions",
                        type_=ErrorType.WAIT,
                    )
            changes.append((jid, state, subid))
        eff = Effects()
        for jid, state, _subid in changes:
            self._set_subscription(node, jid, state, eff)
        return eff

    def _set_subscription(self, node: Node, jid: JID, state: str, eff: Effects) -> None:
        """Set ``jid``'s subscription and tell it (8.8.4, 12.13); a
        subscription just made active gets the last item as a new one does."""
        current = node.subscription(str(jid))
        if current is not None and current.state == state:
            return
        was_active = current is not None and current.active
        if state == "none":
            if current is None:
                return
            node.subscriptions.remove(current)
            sub = current
        elif current is None:
            sub = Subscription(str(jid), _new_id(), state)
            node.subscriptions.append(sub)
        else:
            sub = current
            sub.state = state
        node.state_seq += 1
        eff.changed.add(node.name)
        eff.notifications.append(self._subscription_event(node, sub, state))
        if sub.active and state != "none" and not was_active:
            eff.notifications += self._last_item_to(node, jid)

    def _subscription_event(self, node: Node, sub: Subscription, state: str) -> Notification:
        event = etree.Element(q(PUBSUB_EVENT, "subscription"), node=node.name, jid=sub.jid)
        event.set("subscription", state)
        event.set("subid", sub.subid)
        return Notification(node.name, self._message(event, node.config), [JID.parse(sub.jid)])

    def _affiliations_get(self, r: _Request) -> Effects:
        node = self._node(self._name(r.verb))
        self._require_owner(node, r.frm)
        pubsub = element(PUBSUB_OWNER, "pubsub")
        affs = etree.SubElement(pubsub, q(PUBSUB_OWNER, "affiliations"), node=node.name)
        listed = dict(node.affiliations)
        if self.owner is not None:
            listed[str(self.owner)] = "owner"
        for bare, aff in sorted(listed.items()):
            etree.SubElement(affs, q(PUBSUB_OWNER, "affiliation"), jid=bare, affiliation=aff)
        return Effects(result=pubsub)

    def _affiliations_set(self, r: _Request) -> Effects:
        """8.9.2: a delta of affiliations, all checked before any is applied;
        a node keeps an owner (8.9.2.4), a PEP node's is the account."""
        node = self._node(self._name(r.verb))
        self._require_owner(node, r.frm)
        new = dict(node.affiliations)
        seen: set[str] = set()
        for el in r.verb.iterchildren(q(PUBSUB_OWNER, "affiliation")):
            bare = str(self._jid_attr(el).bare)
            if bare in seen:
                raise StanzaError(StanzaCondition.BAD_REQUEST, f"{bare} is named twice")
            seen.add(bare)
            aff = el.get("affiliation")
            if aff is None:
                continue
            if aff not in AFFILIATIONS:
                raise StanzaError(StanzaCondition.BAD_REQUEST, f"no affiliation {aff}")
            if self.owner is not None and bare == str(self.owner):
                raise error(StanzaCondition.NOT_ACCEPTABLE, text="the service's owner stays owner")
            if self.pep and aff == "owner":
                raise error(StanzaCondition.NOT_ACCEPTABLE, text="a PEP node has one owner")
            if aff == "none":
                new.pop(bare, None)
            else:
                new[bare] = aff
        if self.owner is None and "owner" not in new.values():
            raise error(StanzaCondition.NOT_ACCEPTABLE, text="a node needs an owner")
        changed = {
            b for b in set(new) | set(node.affiliations) if new.get(b) != node.affiliations.get(b)
        }
        if not changed:
            return Effects()
        node.affiliations = new
        node.state_seq += 1
        eff = Effects(changed={node.name})
        for bare in sorted(changed):
            self._after_affiliation(node, bare, eff)
        return eff

    def _after_affiliation(self, node: Node, bare: str, eff: Effects) -> None:
        """What an affiliation change does to that entity's subscriptions:
        an owner or publisher is approved (8.6), an outcast or one who lost
        its place on a whitelist is unsubscribed and told (12.13)."""
        aff = node.affiliations.get(bare, "none")
        for sub in [s for s in node.subscriptions if s.jid.partition("/")[0] == bare]:
            jid = JID.parse(sub.jid)
            if aff in ("outcast", "publish-only") or (
                node.config.access_model == "whitelist" and aff not in _INSIDERS
            ):
                self._set_subscription(node, jid, "none", eff)
            elif sub.state == "pending" and aff in _INSIDERS:
                self._set_subscription(node, jid, "subscribed", eff)

    def _collection(self, r: _Request) -> Effects:
        """XEP-0248 7.3, 7.4: associate a node with this collection or
        dissociate it, without reconfiguring either."""
        parent = self._node(self._name(r.verb))
        self._require_owner(parent, r.frm)
        op = _first(r.verb, PUBSUB_OWNER)
        if op is None or etree.QName(op).localname not in ("associate", "dissociate"):
            raise StanzaError(StanzaCondition.BAD_REQUEST, "associate or dissociate a node")
        child = self._node(self._name(op))
        self._require_owner(child, r.frm)
        kind = etree.QName(op).localname
        if kind == "associate":
            if child.config.collection == parent.name:
                return Effects()
            if child.config.collection:
                raise unsupported("multi-collection", "the node is in a collection already")
            self._check_parent(child.name, parent.name, r.frm)
            child.config.collection = parent.name
        else:
            if child.config.collection != parent.name:
                # XEP-0248 7.4.3.1
                raise StanzaError(StanzaCondition.BAD_REQUEST, "not in this collection")
            child.config.collection = ""
        child.state_seq += 1
        eff = Effects(changed={child.name})
        eff.notifications += self._association(parent.name, child.name, kind)
        return eff

    # ---- subscription authorization (8.6) ----------------------------------------------

    def _authorization_request(self, node: Node, sub: Subscription) -> Notification:
        """The form sent to the owners when an authorize node gets a subscriber."""
        fields = [
            Field("pubsub#subid", "hidden", values=[sub.subid]),
            Field("pubsub#node", "text-single", "Node ID", [node.name]),
            Field("pubsub#subscriber_jid", "jid-single", "Subscriber Address", [sub.jid]),
            Field("pubsub#allow", "boolean", "Allow this JID to subscribe?", ["0"]),
        ]
        m = self._message(None, node.config, type_="normal")
        m.append(
            forms.build_form(
                "form",
                SUBSCRIBE_AUTHORIZATION,
                fields,
                title="PubSub subscriber request",
                instructions="To approve the subscription, set allow and submit the form.",
            )
        )
        return Notification(node.name, m, [JID.parse(o) for o in self.owners(node)])

    def authorize(self, frm: JID, form: etree._Element) -> Effects:
        """An owner's answer to an authorization request (a message with the
        submitted form, 8.6): allow subscribes, deny removes, cancel leaves
        it pending."""
        if form.get("type") == "cancel":
            return Effects()
        values = forms.parse_form(form, SUBSCRIBE_AUTHORIZATION, allowed_types=("submit",))
        name = (values.get("pubsub#node") or [""])[0]
        node = self._node(name)
        self._require_owner(node, frm)
        raw = (values.get("pubsub#subscriber_jid") or [""])[0]
        try:
            jid = JID.parse(raw)
        except StanzaError:
            raise error(StanzaCondition.BAD_REQUEST, "invalid-jid") from None
        sub = node.subscription(str(jid))
        subid = (values.get("pubsub#subid") or [""])[0]
        if sub is None or sub.state != "pending" or (subid and subid != sub.subid):
            raise error(StanzaCondition.ITEM_NOT_FOUND, text="no such pending subscription")
        eff = Effects()
        allow = _true((values.get("pubsub#allow") or ["0"])[0])
        self._set_subscription(node, jid, "subscribed" if allow else "none", eff)
        return eff

    # ---- presence, time, access changes (for the caller) ---------------------------------

    def last_items(self, node: str, frm: JID, viewer: Viewer) -> list[etree._Element]:
        """The last published item of ``node`` as a notification for ``frm``
        (a new subscriber, or PEP: a contact's resource coming online with
        ``node+notify``, XEP-0163 4.3.4), delayed-delivery stamped; nothing
        when the node does not send it, or ``frm`` may not read it."""
        n = self.nodes.get(node)
        if n is None or n.config.node_type == "collection":
            return []
        if n.config.send_last_published_item == "never" or not n.config.deliver_notifications:
            return []
        if not self.may_see(n, frm, viewer):
            return []
        items = self._live(n)
        if not items:
            return []
        return [self._last_message(n, items[0])]

    def _last_message(self, node: Node, item: Item) -> etree._Element:
        items = element(PUBSUB_EVENT, "items", node=node.name)
        items.append(self._item_el(PUBSUB_EVENT, node, item, node.config.deliver_payloads))
        m = self._message(items, node.config)
        m.append(delay_element(item.stamp, str(self.jid)))
        return m

    def _last_item_to(self, node: Node, jid: JID) -> list[Notification]:
        """6.1.7: the last item for a subscription just made active."""
        c = node.config
        if c.node_type == "collection" or c.send_last_published_item == "never":
            return []
        if not c.deliver_notifications:
            return []
        items = self._live(node)
        if not items:
            return []
        return [Notification(node.name, self._last_message(node, items[0]), [jid])]

    def expire(self, now: float) -> Effects:
        """Remove items older than their node's ``item_expire`` (retractions
        notified where the node notifies them)."""
        eff = Effects()
        for node in self.nodes.values():
            ttl = node.config.item_expire
            if ttl <= 0 or not node.items:
                continue
            gone = [it for it in node.items if it.stamp < now - ttl]
            if not gone:
                continue
            node.items = [it for it in node.items if it.stamp >= now - ttl]
            ids = [it.id for it in gone]
            eff.items_retracted.append((node.name, ids))
            if node.config.notify_retract:
                eff.notifications += self._retract_event(node, ids)
        return eff

    def publisher_gone(self, jid: JID) -> Effects:
        """``jid`` (a full JID: a session that ended) went offline: nodes
        with ``purge_offline`` drop what it published."""
        eff = Effects()
        for node in self.nodes.values():
            if not node.config.purge_offline or not node.items:
                continue
            ids = [it.id for it in node.items if it.publisher == str(jid)]
            if not ids:
                continue
            node.items = [it for it in node.items if it.id not in ids]
            eff.items_retracted.append((node.name, ids))
            if node.config.notify_retract:
                eff.notifications += self._retract_event(node, ids)
        return eff

    def access_changed(self, jid: JID, viewer: Viewer) -> Effects:
        """``jid``'s standing with the owner changed (a presence subscription
        or roster groups, XEP-0163 8.1): subscriptions of its bare JID it may
        no longer have are cancelled, and it is told."""
        eff = Effects()
        for node in self.nodes.values():
            for sub in node.subscriptions_of(jid):
                try:
                    self._check_access(node, jid, viewer)
                except StanzaError:
                    self._set_subscription(node, JID.parse(sub.jid), "none", eff)
        return eff

    # ---- notifications -------------------------------------------------------------------

    def _message(
        self, event_child: etree._Element | None, c: NodeConfig, type_: str | None = None
    ) -> etree._Element:
        """``<message from=service id=...>`` with ``<event/>`` around
        ``event_child``; each has an id of its own (7.1.2: to trace bounces)."""
        m = etree.Element(q(ns.CLIENT, "message"), nsmap={None: ns.CLIENT})
        m.set("from", str(self.jid))
        m.set("id", secrets.token_hex(8))
        kind = type_ or c.notification_type
        if kind != "normal":
            m.set("type", kind)
        if event_child is not None:
            event = etree.SubElement(m, q(PUBSUB_EVENT, "event"), nsmap={None: PUBSUB_EVENT})
            event.append(event_child)
        return m

    def _broadcast(
        self, node: Node, event_child: etree._Element, kind: str, pending: bool = False
    ) -> list[Notification]:
        """The notifications of an event on ``node``: one to its subscribers
        (and, on a PEP service, to whoever else XEP-0163 names: ``pep``),
        then one per collection above it to the subscribers who hear that
        ``kind`` (items or nodes) through it and are not told already,
        marked with the collection (XEP-0248 4.3: the event names the node
        it happened on, a SHIM header the collection it came through)."""
        c = node.config
        out: list[Notification] = []
        seen: set[str] = set()
        direct = []
        for s in node.subscriptions:
            if (s.active or pending) and s.deliver and s.jid not in seen:
                seen.add(s.jid)
                direct.append(JID.parse(s.jid))
        if direct or self.pep:
            m = self._message(event_child, c)
            out.append(Notification(node.name, m, direct, self.pep, c.presence_based_delivery))
        for depth, coll in enumerate(self._ancestors(node)[1:], start=1):
            to = []
            for s in coll.subscriptions:
                wanted = s.subscription_type in (kind, "all")
                deep = s.depth is None or depth <= s.depth
                if s.active and s.deliver and wanted and deep and s.jid not in seen:
                    jid = JID.parse(s.jid)
                    if self._reaches(node, jid):
                        seen.add(s.jid)
                        to.append(jid)
            if to:
                m = self._message(copy.deepcopy(event_child), c)
                headers = etree.SubElement(m, q(SHIM, "headers"), nsmap={None: SHIM})
                etree.SubElement(headers, q(SHIM, "header"), name="Collection").text = coll.name
                out.append(Notification(node.name, m, to, False, c.presence_based_delivery))
        return out

    def _association(self, parent: str, child: str, kind: str) -> list[Notification]:
        """XEP-0248 4.3.2: a collection's "nodes" subscribers hear of a node
        joining or leaving it."""
        p = self.nodes.get(parent)
        if p is None:
            return []
        event = element(PUBSUB_EVENT, "collection", node=parent)
        etree.SubElement(event, q(PUBSUB_EVENT, kind), node=child)
        to = [
            JID.parse(s.jid)
            for s in p.subscriptions
            if s.active and s.deliver and s.subscription_type in ("nodes", "all")
        ]
        if not to:
            return []
        return [Notification(parent, self._message(event, p.config), to)]

    def _notify_owners_sub(self, node: Node, sub: Subscription, state: str) -> list[Notification]:
        """``pubsub#notify_sub``: owners hear of subscribers coming and going."""
        if not node.config.notify_sub:
            return []
        event = etree.Element(q(PUBSUB_EVENT, "subscription"), node=node.name, jid=sub.jid)
        event.set("subscription", state)
        owners = [JID.parse(o) for o in self.owners(node)]
        return [Notification(node.name, self._message(event, node.config), owners)]

    def _live(self, node: Node) -> list[Item]:
        """Its items without those ``item_expire`` has already taken, though
        :meth:`expire` has not run yet."""
        ttl = node.config.item_expire
        if ttl <= 0:
            return list(node.items)
        cutoff = self.clock() - ttl
        return [it for it in node.items if it.stamp >= cutoff]


# ---- helpers ---------------------------------------------------------------------------------


def _nonneg(raw: str, what: str) -> int:
    try:
        n = int(raw)
    except ValueError:
        n = -1
    if n < 0:
        raise StanzaError(StanzaCondition.BAD_REQUEST, f"{what} is not a count")
    return n


def _rsm_page(
    items: list[Item], set_el: etree._Element, cap: int
) -> tuple[list[Item], etree._Element]:
    """XEP-0059 over ``items`` (the whole result set, in order): the page
    asked for (``<max/>``, ``<after/>``, ``<before/>``, ``<index/>``) and the
    ``<set/>`` that describes it (first with its index, last, count)."""
    raw_max = set_el.findtext(q(RSM, "max"))
    limit = min(_nonneg(raw_max, "max"), cap) if raw_max is not None else cap
    ids = [it.id for it in items]
    after = set_el.findtext(q(RSM, "after"))
    before_el = set_el.find(q(RSM, "before"))
    raw_index = set_el.findtext(q(RSM, "index"))
    if before_el is not None:
        if before_el.text:
            if before_el.text not in ids:
                raise StanzaError(StanzaCondition.ITEM_NOT_FOUND, "no such item to page from")
            end = ids.index(before_el.text)
        else:
            end = len(items)  # 2.5: an empty <before/> is the last page
        start = max(0, end - limit)
    elif after:
        if after not in ids:
            raise StanzaError(StanzaCondition.ITEM_NOT_FOUND, "no such item to page from")
        start = ids.index(after) + 1
        end = start + limit
    else:
        start = _nonneg(raw_index, "index") if raw_index is not None else 0
        end = start + limit
    page = items[start:end]
    out = element(RSM, "set")
    if page:
        first = etree.SubElement(out, q(RSM, "first"), index=str(start))
        first.text = page[0].id
        etree.SubElement(out, q(RSM, "last")).text = page[-1].id
    etree.SubElement(out, q(RSM, "count")).text = str(len(items))
    return page, out


def _form_values(form: etree._Element) -> dict[str, list[str]]:
    """Field values of a form, read without checking it (:meth:`wants` only
    needs a node name; the request itself is checked when handled)."""
    out: dict[str, list[str]] = {}
    for f in form.iterchildren(q(ns.DATA_FORMS, "field")):
        var = f.get("var")
        if var:
            out[var] = [v.text or "" for v in f.iterchildren(q(ns.DATA_FORMS, "value"))]
    return out


_Route = Callable[[PubsubService, _Request], Effects]

#: (namespace, IQ type, first child of <pubsub/>) -> its handler: every
#: request a client can make (XEP-0060 5 - 8, XEP-0248 7)
_ROUTES: dict[tuple[str, str, str], _Route] = {
    (PUBSUB, "get", "subscriptions"): PubsubService._my_subscriptions,
    (PUBSUB, "get", "affiliations"): PubsubService._my_affiliations,
    (PUBSUB, "get", "items"): PubsubService._items,
    (PUBSUB, "get", "options"): PubsubService._options_get,
    (PUBSUB, "get", "default"): PubsubService._default_options,
    (PUBSUB, "set", "subscribe"): PubsubService._subscribe,
    (PUBSUB, "set", "unsubscribe"): PubsubService._unsubscribe,
    (PUBSUB, "set", "options"): PubsubService._options_set,
    (PUBSUB, "set", "publish"): PubsubService._publish,
    (PUBSUB, "set", "retract"): PubsubService._retract,
    (PUBSUB, "set", "create"): PubsubService._create,
    (PUBSUB_OWNER, "get", "configure"): PubsubService._configure_get,
    (PUBSUB_OWNER, "set", "configure"): PubsubService._configure_set,
    (PUBSUB_OWNER, "get", "default"): PubsubService._default_config,
    (PUBSUB_OWNER, "set", "delete"): PubsubService._delete,
    (PUBSUB_OWNER, "set", "purge"): PubsubService._purge,
    (PUBSUB_OWNER, "get", "subscriptions"): PubsubService._subscriptions_get,
    (PUBSUB_OWNER, "set", "subscriptions"): PubsubService._subscriptions_set,
    (PUBSUB_OWNER, "get", "affiliations"): PubsubService._affiliations_get,
    (PUBSUB_OWNER, "set", "affiliations"): PubsubService._affiliations_set,
    (PUBSUB_OWNER, "set", "collection"): PubsubService._collection,
}
