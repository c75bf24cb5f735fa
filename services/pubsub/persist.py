"""What a node keeps (XEP-0060): its configuration, affiliations and
subscriptions as one JSON document (the node's row), and each item as a
:class:`~services.core.storage.PubsubItem` (a row of its own). Pure
functions: the service reads and writes them through the Storage contract.

A document written by another version of this code is read as far as it
goes: keys this version does not know are skipped, keys it lacks keep what
the node had (its default configuration, for a node being loaded).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from lxml import etree

from ..core.storage import PubsubItem
from ..xmpp.tree import parse_element
from .node import Item, Node, NodeConfig, Subscription

__all__ = ["VERSION", "apply_state", "item_of", "item_record", "state_of"]

VERSION = 1
_CONFIG_FIELDS = {f.name: f for f in dataclasses.fields(NodeConfig)}


def state_of(node: Node) -> str:
    doc: dict[str, Any] = {
        "v": VERSION,
        "config": dataclasses.asdict(node.config),
        "affiliations": dict(sorted(node.affiliations.items())),
        "subscriptions": [
            {"jid": s.jid, "subid": s.subid, "state": s.state, "options": s.options}
            for s in node.subscriptions
        ],
        "creator": node.creator,
        "created": node.created,
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":"))


def apply_state(node: Node, state: str) -> None:
    """Load a stored document into ``node`` (made with its default
    configuration): what the document has replaces what the node has."""
    doc = json.loads(state)
    config = doc.get("config", {})
    for key, value in config.items():
        f = _CONFIG_FIELDS.get(key)
        if f is None:
            continue
        default = getattr(node.config, key)
        if isinstance(default, bool):
            value = bool(value)
        elif isinstance(default, int):
            value = int(value)
        elif isinstance(default, list):
            value = [str(v) for v in value]
        else:
            value = str(value)
        setattr(node.config, key, value)
    if "affiliations" in doc:
        node.affiliations = {str(k): str(v) for k, v in doc["affiliations"].items()}
    if "subscriptions" in doc:
        node.subscriptions = [
            Subscription(
                jid=str(s["jid"]),
                subid=str(s.get("subid", "")),
                state=str(s.get("state", "subscribed")),
                options={str(k): [str(x) for x in v] for k, v in s.get("options", {}).items()},
            )
            for s in doc["subscriptions"]
        ]
    node.creator = str(doc.get("creator", node.creator))
    node.created = float(doc.get("created", node.created))


def item_record(item: Item) -> PubsubItem:
    payload = b"" if item.payload is None else etree.tostring(item.payload, with_tail=False)
    return PubsubItem(id=item.id, publisher=item.publisher, stamp=item.stamp, payload=payload)


def item_of(record: PubsubItem) -> Item:
    payload = parse_element(record.payload) if record.payload else None
    return Item(id=record.id, publisher=record.publisher, stamp=record.stamp, payload=payload)


def owned_by(state: str, bare: str) -> bool:
    """Is ``bare`` an owner of the stored node?"""
    affiliations = json.loads(state).get("affiliations", {})
    return bool(isinstance(affiliations, dict) and affiliations.get(bare) == "owner")
