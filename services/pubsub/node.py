"""One publish-subscribe node (XEP-0060), its configuration and its forms.

What a node is: its configuration (the ``pubsub#node_config`` fields a
server is expected to honour, :class:`NodeConfig`), its affiliations and
subscriptions (what the service writes as one state document, see
:mod:`.persist`) and its items, newest first. The forms that read and show
a configuration are here too: the configuration form (XEP-0060 8.2), the
publish-options preconditions (7.1.5), the node meta-data (5.4) and the
subscription options (6.3). Nothing here decides who may do what: that is
:mod:`.engine`.

One table (:data:`_FIELDS`) names every configuration field with its form
field type and how its values read, so the form shown, the form applied
and the preconditions compared can never disagree about a field.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from lxml import etree

from ..xmpp import forms
from ..xmpp.errors import ErrorType, StanzaCondition, StanzaError
from ..xmpp.forms import Field, Option
from ..xmpp.jid import JID
from ..xmpp.timefmt import datetime_str

PUBSUB = "http://jabber.org/protocol/pubsub"
PUBSUB_OWNER = PUBSUB + "#owner"
PUBSUB_EVENT = PUBSUB + "#event"
PUBSUB_ERRORS = PUBSUB + "#errors"
NODE_CONFIG = PUBSUB + "#node_config"
PUBLISH_OPTIONS = PUBSUB + "#publish-options"
SUBSCRIBE_OPTIONS = PUBSUB + "#subscribe_options"
SUBSCRIBE_AUTHORIZATION = PUBSUB + "#subscribe_authorization"
META_DATA = PUBSUB + "#meta-data"
#: XEP-0059 result set management
RSM = "http://jabber.org/protocol/rsm"
#: XEP-0131 headers: XEP-0248 names the collection a notification came through
SHIM = "http://jabber.org/protocol/shim"

ACCESS_MODELS = ("authorize", "open", "presence", "roster", "whitelist")
PUBLISH_MODELS = ("publishers", "subscribers", "open")
SEND_LAST = ("never", "on_sub", "on_sub_and_presence")
NOTIFICATION_TYPES = ("normal", "headline")
NODE_TYPES = ("leaf", "collection")
ITEMREPLY = ("owner", "publisher", "none")
PUBLISH_NODE_FULL = ("retract-oldest", "discard-oldest", "reject")
#: XEP-0060 4.1; "none" is never stored
AFFILIATIONS = ("owner", "publisher", "publish-only", "member", "none", "outcast")
SUBSCRIPTION_STATES = ("subscribed", "pending", "unconfigured")
#: XEP-0248 subscription options of a subscription to a collection
SUBSCRIPTION_TYPES = ("items", "nodes", "all")

#: a text field longer than this is refused rather than cut: a limit holds
#: for every byte a node keeps
MAX_TEXT = 1024
#: at most this many roster groups may be allowed on one node
MAX_GROUPS = 100


def q(namespace: str, local: str) -> str:
    return f"{{{namespace}}}{local}"


def error(
    condition: StanzaCondition,
    app: str | None = None,
    *,
    feature: str | None = None,
    text: str | None = None,
    type_: ErrorType | None = None,
) -> StanzaError:
    """A refusal with the XEP-0060 condition and, where the XEP names one,
    its ``pubsub#errors`` condition (``unsupported`` carries the feature)."""
    app_el = None
    if app is not None:
        app_el = etree.Element(q(PUBSUB_ERRORS, app), nsmap={None: PUBSUB_ERRORS})
        if feature is not None:
            app_el.set("feature", feature)
    return StanzaError(condition, text, type_, app_el)


def unsupported(feature: str, text: str | None = None) -> StanzaError:
    """feature-not-implemented with ``<unsupported feature='...'/>`` (XEP-0060 passim)."""
    return error(StanzaCondition.FEATURE_NOT_IMPLEMENTED, "unsupported", feature=feature, text=text)


@dataclass(slots=True)
class Limits:
    """What the operator allows, whatever a node's configuration says."""

    #: most items a node keeps (``pubsub#max_items`` "max" means this)
    max_items: int = 1000
    #: largest payload in bytes, serialized (``pubsub#max_payload_size`` at most this)
    max_payload: int = 65536
    #: most nodes of one service (a pubsub domain, or one account's PEP)
    max_nodes: int = 1000
    max_subscriptions_per_node: int = 10000


@dataclass(slots=True)
class NodeConfig:
    """The ``pubsub#node_config`` fields this server honours (XEP-0060 16.4.4,
    XEP-0248 for ``node_type`` and ``collection``)."""

    title: str = ""
    description: str = ""
    #: "leaf" (items) or "collection" (other nodes, XEP-0248)
    node_type: str = "leaf"
    #: the parent collection's name; "" for none (the root). One parent only
    #: (no "multi-collections")
    collection: str = ""
    access_model: str = "open"
    roster_groups_allowed: list[str] = field(default_factory=list)
    publish_model: str = "publishers"
    max_items: int = 10
    persist_items: bool = True
    deliver_payloads: bool = True
    deliver_notifications: bool = True
    notify_config: bool = False
    notify_delete: bool = True
    #: on by default, as in the servers clients meet (the XEP's example
    #: form has it off): a subscriber's copy follows the node's items
    notify_retract: bool = True
    notify_sub: bool = False
    #: for the caller: notifications only to available subscribers
    presence_based_delivery: bool = False
    send_last_published_item: str = "on_sub"
    #: seconds after which an item is removed; 0: never
    item_expire: int = 0
    notification_type: str = "headline"
    max_payload_size: int = 65536
    #: items of a publisher are removed when it goes offline (see
    #: ``PubsubService.publisher_gone``)
    purge_offline: bool = False
    #: the payload namespace the node takes; "" for any
    type: str = ""
    #: "publisher": items carry their publisher's JID; "owner" and "none": they do not
    itemreply: str = "none"
    #: whether entities may subscribe at all
    subscribe: bool = True
    #: what a publish to a full node does (XEP-0060 7.1.2.7)
    publish_node_full: str = "retract-oldest"
    language: str = ""


def default_config(pep: bool, limits: Limits, node_type: str = "leaf") -> NodeConfig:
    """The configuration a new node starts from (XEP-0060 8.3).

    PEP (XEP-0163 8, XEP-0060 9): access "presence", one item, the last item
    sent on subscription and on the subscriber's presence, notifications for
    available resources only. A generic service: open access, the last item
    sent on subscription only (it does not see subscribers' presence, so it
    does not claim "last-published"), ten items. Both notify retractions
    and purges (``notify_retract``)."""
    c = NodeConfig(node_type=node_type)
    c.max_payload_size = limits.max_payload
    if pep:
        c.access_model = "presence"
        c.max_items = 1
        c.send_last_published_item = "on_sub_and_presence"
        c.presence_based_delivery = True
    else:
        c.max_items = min(10, limits.max_items)
    if node_type == "collection":
        # a collection holds no items (XEP-0248 3.1)
        c.persist_items = False
        c.send_last_published_item = "never"
    return c


# ---- the configuration fields ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _F:
    attr: str
    #: text | bool | int | choice | groups | parent
    kind: str
    form_type: str
    label: str
    options: tuple[str, ...] = ()


_FIELDS: tuple[_F, ...] = (
    _F("title", "text", "text-single", "A friendly name for the node"),
    _F("description", "text", "text-single", "A description of the node"),
    _F(
        "node_type",
        "choice",
        "list-single",
        "Whether the node is a leaf or a collection",
        NODE_TYPES,
    ),
    _F("collection", "parent", "text-multi", "The collection this node belongs to"),
    _F(
        "access_model",
        "choice",
        "list-single",
        "Who may subscribe and retrieve items",
        ACCESS_MODELS,
    ),
    _F("roster_groups_allowed", "groups", "list-multi", "Roster groups allowed to subscribe"),
    _F("publish_model", "choice", "list-single", "Who may publish", PUBLISH_MODELS),
    _F(
        "max_items",
        "int",
        "text-single",
        "Max # of items to persist. `max` for the server's maximum",
    ),
    _F("persist_items", "bool", "boolean", "Persist items to storage"),
    _F("deliver_payloads", "bool", "boolean", "Deliver payloads with event notifications"),
    _F("deliver_notifications", "bool", "boolean", "Deliver event notifications"),
    _F("notify_config", "bool", "boolean", "Notify subscribers when the configuration changes"),
    _F("notify_delete", "bool", "boolean", "Notify subscribers when the node is deleted"),
    _F("notify_retract", "bool", "boolean", "Notify subscribers when items are removed"),
    _F("notify_sub", "bool", "boolean", "Notify owners about new subscribers and unsubscribes"),
    _F(
        "presence_based_delivery",
        "bool",
        "boolean",
        "Deliver notifications to available users only",
    ),
    _F(
        "send_last_published_item",
        "choice",
        "list-single",
        "When to send the last published item",
        SEND_LAST,
    ),
    _F("item_expire", "int", "text-single", "Seconds after which items are removed (0: never)"),
    _F(
        "notification_type",
        "choice",
        "list-single",
        "Message type of notifications",
        NOTIFICATION_TYPES,
    ),
    _F("max_payload_size", "int", "text-single", "Max payload size in bytes"),
    _F("purge_offline", "bool", "boolean", "Purge a publisher's items when it goes offline"),
    _F("type", "text", "text-single", "The namespace of the payloads of this node"),
    _F("itemreply", "choice", "list-single", "Whether items carry their publisher", ITEMREPLY),
    _F("subscribe", "bool", "boolean", "Whether to allow subscriptions"),
    _F(
        "publish_node_full",
        "choice",
        "list-single",
        "What publishing to a full node does",
        PUBLISH_NODE_FULL,
    ),
    _F("language", "text", "text-single", "The default language of the node"),
)
_BY_VAR = {f"pubsub#{f.attr}": f for f in _FIELDS}


def _render(f: _F, value: Any) -> list[str]:
    if f.kind == "bool":
        return ["1" if value else "0"]
    if f.kind == "int":
        return [str(value)]
    if f.kind == "groups":
        return list(value)
    if f.kind == "parent":
        return [value] if value else []
    return [str(value)] if value != "" else []


def config_form(
    c: NodeConfig, limits: Limits, children: list[str] | None = None, type_: str = "form"
) -> etree._Element:
    """The node_config form holding ``c`` (8.2.1), or its ``result`` (the
    configuration notification, 8.2.5.3). ``children``: a collection's
    (XEP-0248 6.2, shown, not settable here: a child names its parent)."""
    out: list[Field] = []
    for f in _FIELDS:
        if f.attr == "max_items":
            values = [str(min(c.max_items, limits.max_items))]
        else:
            values = _render(f, getattr(c, f.attr))
        out.append(
            Field(
                f"pubsub#{f.attr}",
                f.form_type if type_ == "form" else None,
                f.label if type_ == "form" else None,
                values,
                [Option(o) for o in f.options] if type_ == "form" else [],
            )
        )
    if c.node_type == "collection" and children is not None:
        out.append(Field("pubsub#children", "text-multi", "The child nodes", list(children)))
    return forms.build_form(type_, NODE_CONFIG, out)


def _bool(raw: str) -> bool:
    if raw in ("1", "true"):
        return True
    if raw in ("0", "false"):
        return False
    raise ValueError(raw)


def _parse(f: _F, values: list[str], limits: Limits) -> Any:
    """One field's typed value; ValueError when it is not acceptable."""
    first = values[0] if values else ""
    if f.kind == "bool":
        return _bool(first)
    if f.kind == "choice":
        if first not in f.options:
            raise ValueError(first)
        return first
    if f.kind == "text":
        if len(first) > MAX_TEXT:
            raise ValueError("too long")
        return first
    if f.kind == "groups":
        if len(values) > MAX_GROUPS or any(len(v) > MAX_TEXT for v in values):
            raise ValueError("too many roster groups")
        return list(dict.fromkeys(v for v in values if v))
    if f.kind == "parent":
        parents = [v for v in values if v]
        if len(parents) > 1:
            # XEP-0248 2.1: one parent is all this service supports
            raise unsupported("multi-collection", "a node belongs to one collection at most")
        if parents and len(parents[0].encode()) > 1023:
            raise ValueError("too long")
        return parents[0] if parents else ""
    # int: "max" is the server's limit (the label of max_items and item_expire)
    if f.attr == "max_items":
        n = limits.max_items if first == "max" else int(first)
        if not 1 <= n <= limits.max_items:
            raise ValueError(first)
        return n
    if f.attr == "max_payload_size":
        n = limits.max_payload if first == "max" else int(first)
        if not 1 <= n <= limits.max_payload:
            raise ValueError(first)
        return n
    n = 0 if first == "max" else int(first)  # item_expire: no limit of ours
    if n < 0:
        raise ValueError(first)
    return n


def parse_config(
    form: etree._Element, limits: Limits, form_type: str = NODE_CONFIG
) -> tuple[dict[str, Any], list[str]]:
    """The typed values a submitted node_config (or publish-options) form
    sets, by attribute of :class:`NodeConfig`, and the vars it has that this
    server does not know. A malformed form is bad-request; a value that is
    not acceptable is not-acceptable (8.2.5.2), an access model this server
    does not have with ``unsupported-access-model`` (8.1.2)."""
    given = forms.form_type(form)
    # node_config submissions without FORM_TYPE are common enough to take;
    # publish-options MUST carry theirs (7.1.5)
    if given != form_type and not (given is None and form_type == NODE_CONFIG):
        raise forms.FormError(f"expected a {form_type} form")
    raw = forms.parse_form(form, allowed_types=("submit",))
    out: dict[str, Any] = {}
    unknown: list[str] = []
    for var, values in raw.items():
        if var == forms.FORM_TYPE_VAR:
            continue
        f = _BY_VAR.get(var)
        if f is None:
            unknown.append(var)
            continue
        try:
            out[f.attr] = _parse(f, values, limits)
        except ValueError:
            if f.attr == "access_model":
                raise error(
                    StanzaCondition.NOT_ACCEPTABLE,
                    "unsupported-access-model",
                    text=f"no access model {(values or [''])[0]!r}",
                ) from None
            raise error(
                StanzaCondition.NOT_ACCEPTABLE, text=f"{var}: not an acceptable value"
            ) from None
    return out, unknown


def apply_form(
    c: NodeConfig, form: etree._Element, limits: Limits, form_type: str = NODE_CONFIG
) -> None:
    """Apply a submitted node_config form to ``c``: all of it, or nothing
    when a value is refused (a StanzaError, not-acceptable). Fields this
    server does not know are left alone (XEP-0004: the form it showed has
    none of them). Rules about the node graph (a collection turning into a
    leaf, parents) are the service's: they need the other nodes."""
    values, _unknown = parse_config(form, limits, form_type)
    for attr, value in values.items():
        setattr(c, attr, value)


def check_preconditions(c: NodeConfig, form: etree._Element, limits: Limits) -> None:
    """XEP-0060 7.1.5: each field of a publish-options form is a
    precondition on the node's configuration; one that does not hold, or a
    field this server does not know, is conflict + precondition-not-met."""
    try:
        values, unknown = parse_config(form, limits, PUBLISH_OPTIONS)
    except StanzaError as exc:
        if exc.condition != StanzaCondition.NOT_ACCEPTABLE:
            raise
        # a value the node could never have cannot match what it has
        raise _precondition(exc.text) from None
    if unknown:
        raise _precondition(f"unknown option {unknown[0]}")
    for attr, value in values.items():
        have = getattr(c, attr)
        same = set(have) == set(value) if isinstance(value, list) else have == value
        if not same:
            raise _precondition(f"pubsub#{attr} is not {_render(_BY_VAR['pubsub#' + attr], value)}")


def _precondition(text: str | None) -> StanzaError:
    return error(StanzaCondition.CONFLICT, "precondition-not-met", text=text)


# ---- items, subscriptions, nodes --------------------------------------------------------


@dataclass(slots=True)
class Item:
    id: str
    #: the full JID that published it (the ``publisher`` of 7.1.2.3)
    publisher: str
    stamp: float
    #: the item's one payload element; None for an item without one
    payload: etree._Element | None


@dataclass(slots=True)
class Subscription:
    #: the subscribed JID, as the subscriber gave it (bare or full)
    jid: str
    subid: str
    #: subscribed | pending | unconfigured
    state: str
    #: subscribe_options values by var (``pubsub#deliver``, ...)
    options: dict[str, list[str]] = field(default_factory=dict)

    @property
    def active(self) -> bool:
        """Notifications go to it (XEP-0060 4.2: unconfigured MAY, pending MUST NOT)."""
        return self.state in ("subscribed", "unconfigured")

    @property
    def deliver(self) -> bool:
        return (self.options.get("pubsub#deliver") or ["1"])[0] in ("1", "true")

    @property
    def subscription_type(self) -> str:
        # items by default: subscribing to a collection is asking for what is
        # published in it (XEP-0060 9.1 gives the root the same); a client
        # wanting XEP-0248's "nodes" asks for it
        return (self.options.get("pubsub#subscription_type") or ["items"])[0]

    @property
    def depth(self) -> int | None:
        """How many levels below the collection it hears; None for all."""
        raw = (self.options.get("pubsub#subscription_depth") or ["all"])[0]
        return None if raw == "all" else int(raw)


@dataclass
class Node:
    name: str
    config: NodeConfig
    #: bare JID -> owner | publisher | publish-only | member | outcast ("none" is not stored)
    affiliations: dict[str, str] = field(default_factory=dict)
    subscriptions: list[Subscription] = field(default_factory=list)
    #: newest first, at most ``config.max_items``
    items: list[Item] = field(default_factory=list)
    #: bumped on every change of what :func:`.persist.state_of` writes
    #: (configuration, affiliations, subscriptions); items are rows of their own
    state_seq: int = 0
    #: the bare JID that created it and when (meta-data, 5.4)
    creator: str = ""
    created: float = 0.0

    def item(self, item_id: str) -> Item | None:
        for it in self.items:
            if it.id == item_id:
                return it
        return None

    def subscriptions_of(self, jid: JID) -> list[Subscription]:
        """Those whose subscribed JID has ``jid``'s bare JID."""
        bare = str(jid.bare)
        return [s for s in self.subscriptions if _bare(s.jid) == bare]

    def subscription(self, jid: str) -> Subscription | None:
        for s in self.subscriptions:
            if s.jid == jid:
                return s
        return None


def _bare(jid: str) -> str:
    return jid.partition("/")[0]


# ---- meta-data and subscription options ------------------------------------------------


def meta_form(node: Node, limits: Limits, owners: list[str]) -> etree._Element:
    """The pubsub#meta-data form of a node's disco#info (XEP-0060 5.4)."""
    c = node.config
    publishers = sorted(b for b, a in node.affiliations.items() if a == "publisher")
    fields = [
        Field("pubsub#type", values=[c.type] if c.type else []),
        Field("pubsub#title", values=[c.title] if c.title else []),
        Field("pubsub#description", values=[c.description] if c.description else []),
        Field("pubsub#language", values=[c.language] if c.language else []),
        Field("pubsub#access_model", values=[c.access_model]),
        Field("pubsub#publish_model", values=[c.publish_model]),
        Field("pubsub#max_items", values=[str(min(c.max_items, limits.max_items))]),
        Field("pubsub#owner", "jid-multi", values=owners),
        Field("pubsub#publisher", "jid-multi", values=publishers),
        Field(
            "pubsub#num_subscribers",
            values=[str(sum(1 for s in node.subscriptions if s.active))],
        ),
    ]
    if node.creator:
        fields.append(Field("pubsub#creator", "jid-single", values=[node.creator]))
    if node.created:
        fields.append(Field("pubsub#creation_date", values=[datetime_str(node.created)]))
    return forms.build_form("result", META_DATA, fields)


def options_form(options: dict[str, list[str]], collection: bool, type_: str) -> etree._Element:
    """The subscribe_options form (6.3): delivery on or off, and for a
    collection what it hears (XEP-0248 5.1). Digests, bodies and presence
    filters are not offered (6.3: a service offers only what it does)."""
    sub = Subscription("", "", "subscribed", options)
    fields = [Field("pubsub#deliver", "boolean", "Enable delivery?", ["1" if sub.deliver else "0"])]
    if collection:
        depth = sub.depth
        fields += [
            Field(
                "pubsub#subscription_type",
                "list-single",
                "What to be notified of",
                [sub.subscription_type],
                [Option(o) for o in SUBSCRIPTION_TYPES],
            ),
            Field(
                "pubsub#subscription_depth",
                "list-single",
                "How deep in the collection",
                ["all" if depth is None else str(depth)],
                [Option("1"), Option("all")],
            ),
        ]
    if type_ != "form":
        for f in fields:
            f.type, f.label, f.options = None, None, []
    return forms.build_form(type_, SUBSCRIBE_OPTIONS, fields)


def parse_options(form: etree._Element) -> dict[str, list[str]]:
    """The options of a submitted subscribe_options form, normalized; a
    value this server cannot honour is bad-request + invalid-options (6.3.5)."""
    if forms.form_type(form) not in (None, SUBSCRIBE_OPTIONS):
        raise error(StanzaCondition.BAD_REQUEST, "invalid-options", text="not subscribe_options")
    raw = forms.parse_form(form, allowed_types=("submit",))
    out: dict[str, list[str]] = {}
    try:
        for var, values in raw.items():
            first = values[0] if values else ""
            if var == "pubsub#deliver":
                out[var] = ["1" if _bool(first) else "0"]
            elif var == "pubsub#subscription_type":
                if first not in SUBSCRIPTION_TYPES:
                    raise ValueError(first)
                out[var] = [first]
            elif var == "pubsub#subscription_depth":
                if first != "all" and int(first) < 0:
                    raise ValueError(first)
                out[var] = [first if first == "all" else str(int(first))]
            elif var in ("pubsub#digest", "pubsub#include_body") and _bool(first):
                # asked for and not offered: the subscriber would wait for them
                raise ValueError(var)
    except ValueError:
        raise error(
            StanzaCondition.BAD_REQUEST, "invalid-options", text="an option cannot be honoured"
        ) from None
    return out


def copy_config(c: NodeConfig) -> NodeConfig:
    """A configuration to change without touching ``c`` (lists included)."""
    return dataclasses.replace(c, roster_groups_allowed=list(c.roster_groups_allowed))


def element(namespace: str, local: str, **attrs: str) -> etree._Element:
    el = etree.Element(q(namespace, local), nsmap={None: namespace})
    for k, v in attrs.items():
        el.set(k, v)
    return el


__all__ = [
    "ACCESS_MODELS",
    "AFFILIATIONS",
    "META_DATA",
    "NODE_CONFIG",
    "PUBLISH_OPTIONS",
    "PUBSUB",
    "PUBSUB_ERRORS",
    "PUBSUB_EVENT",
    "PUBSUB_OWNER",
    "RSM",
    "SHIM",
    "SUBSCRIBE_AUTHORIZATION",
    "SUBSCRIBE_OPTIONS",
    "Item",
    "Limits",
    "Node",
    "NodeConfig",
    "Subscription",
    "apply_form",
    "check_preconditions",
    "config_form",
    "default_config",
    "error",
    "meta_form",
    "options_form",
    "parse_config",
    "parse_options",
    "unsupported",
]
