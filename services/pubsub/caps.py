"""Entity capabilities (XEP-0115) as PEP uses them: which nodes a client
asks notifications for (``<node>+notify`` features, XEP-0163 4.1).

A client's presence carries ``<c node ver hash/>``; what ``ver`` stands for
is asked once per ``ver`` (disco#info to the client, from the pubsub
domain), checked against the hash (XEP-0115 5.4: a wrong answer is not
kept, so one client cannot poison the cache for others) and kept in a
:class:`CapsStore`: the process's memory, or Redis in a cluster.
"""

from __future__ import annotations

import base64
import functools
from typing import Protocol

from lxml import etree

from ..features.disco import ver_of_info
from ..xmpp import ns
from ..xmpp.jid import JID
from ..xmpp.tree import parse_element

__all__ = ["CAPS", "CapsStore", "MemoryCaps", "caps_of", "notify_nodes", "query_id", "waiter_of"]

CAPS = "http://jabber.org/protocol/caps"
_C = f"{{{CAPS}}}c"
NOTIFY = "+notify"


class CapsStore(Protocol):
    async def get(self, ver: str) -> frozenset[str] | None: ...

    async def put(self, ver: str, features: frozenset[str]) -> None: ...


class MemoryCaps:
    """The caps of one process (the embedded default)."""

    def __init__(self, limit: int = 10000) -> None:
        self._known: dict[str, frozenset[str]] = {}
        self._limit = limit

    async def get(self, ver: str) -> frozenset[str] | None:
        return self._known.get(ver)

    async def put(self, ver: str, features: frozenset[str]) -> None:
        if len(self._known) >= self._limit:
            self._known.pop(next(iter(self._known)))  # the oldest: enough for a bounded cache
        self._known[ver] = features


def caps_of(presence: bytes | etree._Element | None) -> tuple[str, str] | None:
    """(node, ver) of a presence's XEP-0115 element (sha-1 only: the one
    hash every client sends and the one this server checks)."""
    if presence is None:
        return None
    if isinstance(presence, bytes):
        return _caps_of_bytes(presence)
    return _caps_of_element(presence)


@functools.lru_cache(maxsize=4096)
def _caps_of_bytes(presence: bytes) -> tuple[str, str] | None:
    # every publish asks this of each contact session's stored presence,
    # which changes rarely: parsing it each time was a fifth of the profile
    return _caps_of_element(parse_element(presence))


def _caps_of_element(el: etree._Element) -> tuple[str, str] | None:
    c = el.find(_C)
    if c is None or (c.get("hash") or "sha-1") != "sha-1":
        return None
    node, ver = c.get("node"), c.get("ver")
    if not node or not ver:
        return None
    return node, ver


def notify_nodes(features: frozenset[str]) -> frozenset[str]:
    """The nodes a client asks notifications for."""
    return frozenset(f[: -len(NOTIFY)] for f in features if f.endswith(NOTIFY))


def query_id(waiter: JID) -> str:
    """The id of a caps query: it names the session that waits for the
    answer, so whichever replica gets the answer can carry on for it."""
    return "caps-" + base64.urlsafe_b64encode(str(waiter).encode()).decode().rstrip("=")


def waiter_of(iq_id: str | None) -> JID | None:
    if not iq_id or not iq_id.startswith("caps-"):
        return None
    raw = iq_id[5:]
    try:
        return JID.parse(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode())
    except (ValueError, UnicodeDecodeError):
        return None


def checked_features(ver: str, query: etree._Element) -> frozenset[str] | None:
    """The features of a disco#info answer, if it hashes to ``ver``."""
    if query.tag != ns.q(ns.DISCO_INFO, "query") or ver_of_info(query) != ver:
        return None
    return frozenset(
        el.get("var") or "" for el in query.iterchildren(ns.q(ns.DISCO_INFO, "feature"))
    )
