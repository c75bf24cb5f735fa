"""A node's state document and its item rows."""

from __future__ import annotations

import json

from lxml import etree

from services.core.storage import PubsubItem
from services.pubsub import persist
from services.pubsub.node import Item, Limits, Node, Subscription, default_config


def node() -> Node:
    n = Node("n", default_config(False, Limits()), creator="a@x", created=5.0)
    n.config.title = "T"
    n.config.roster_groups_allowed = ["g"]
    n.config.access_model = "roster"
    n.affiliations = {"a@x": "owner", "b@x": "outcast"}
    n.subscriptions = [
        Subscription("c@x/r", "s1", "subscribed", {"pubsub#deliver": ["0"]}),
        Subscription("d@x", "s2", "pending"),
    ]
    return n


def test_state_round_trip() -> None:
    n = node()
    again = Node("n", default_config(False, Limits()))
    persist.apply_state(again, persist.state_of(n))
    assert again.config == n.config
    assert again.affiliations == n.affiliations
    assert again.subscriptions == n.subscriptions
    assert (again.creator, again.created) == ("a@x", 5.0)


def test_state_tolerates_missing_and_unknown_keys() -> None:
    doc = {"v": 9, "config": {"title": "Old", "some_future_field": 1}, "future": []}
    again = Node("n", default_config(True, Limits()))
    persist.apply_state(again, json.dumps(doc))
    assert again.config.title == "Old"
    # what the document lacks keeps the node's defaults
    assert again.config.access_model == "presence"
    assert again.affiliations == {} and again.subscriptions == []
    persist.apply_state(again, "{}")
    assert again.config.title == "Old"


def test_state_is_stable_json() -> None:
    n = node()
    assert persist.state_of(n) == persist.state_of(n)
    doc = json.loads(persist.state_of(n))
    assert doc["v"] == persist.VERSION
    assert doc["config"]["roster_groups_allowed"] == ["g"]


def test_item_round_trip() -> None:
    payload = etree.fromstring("<entry xmlns='urn:x'><title>hi</title></entry>")
    item = Item("i1", "a@x/r", 12.5, payload)
    record = persist.item_record(item)
    assert isinstance(record, PubsubItem)
    assert record.payload == b'<entry xmlns="urn:x"><title>hi</title></entry>'
    back = persist.item_of(record)
    assert (back.id, back.publisher, back.stamp) == ("i1", "a@x/r", 12.5)
    assert back.payload is not None and etree.tostring(back.payload) == record.payload


def test_item_without_payload() -> None:
    record = persist.item_record(Item("i", "a@x", 1.0, None))
    assert record.payload == b""
    assert persist.item_of(record).payload is None
