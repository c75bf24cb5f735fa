"""What a persistent room keeps (XEP-0045 10.1.3): its configuration,
affiliations, reserved nicknames and subject as one JSON document, and its history as stored
stanzas. Pure functions: the service reads and writes them through the
Storage contract."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from lxml import etree

from ..xmpp.tree import parse_element
from .room import Room, RoomConfig, _Past

VERSION = 1


def state_of(room: Room) -> str:
    doc: dict[str, Any] = {
        "v": VERSION,
        "config": dataclasses.asdict(room.config),
        "affiliations": dict(sorted(room.affiliations.items())),
        "nicks": dict(sorted(room.nicks.items())),
        "subject": room.subject,
        "subject_by": room.subject_by,
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":"))


def apply_state(room: Room, state: str) -> None:
    doc = json.loads(state)
    fields = {f.name for f in dataclasses.fields(RoomConfig)}
    room.config = RoomConfig(**{k: v for k, v in doc["config"].items() if k in fields})
    room.affiliations = {str(k): str(v) for k, v in doc["affiliations"].items()}
    # reserved nicknames came later: a document without them has none
    room.nicks = {str(k): str(v) for k, v in doc.get("nicks", {}).items()}
    room.subject = str(doc.get("subject", ""))
    room.subject_by = str(doc.get("subject_by", ""))


def owner_of(state: str, bare: str) -> bool:
    """Is ``bare`` an owner of the stored room?"""
    return bool(json.loads(state)["affiliations"].get(bare) == "owner")


def listing(state: str) -> tuple[bool, str]:
    """(public, name) of a stored room, for the service's disco#items."""
    config = json.loads(state)["config"]
    return bool(config.get("public")), str(config.get("name", ""))


def history_entry(element: etree._Element) -> bytes:
    return etree.tostring(element, with_tail=False)


def restore_history(room: Room, rows: list[tuple[float, bytes]]) -> None:
    for stamp, data in rows:
        el = parse_element(data)
        room.history.append(_Past(el, stamp, len(data)))
