"""The one hardened libxml2 configuration, for every XML this server parses.

Entities are never expanded, no DTD is loaded, nothing is fetched from the
network, and libxml2's size limits stay on (``huge_tree=False``). The stream
parser (:mod:`.parser`) uses :data:`HARDENED` for its pull parser; everything
else that turns stored or received bytes back into an element (offline
messages, vCards, private XML, envelopes crossing a process, the admin API's
XML) calls :func:`parse_element`. A second copy of these settings is how one
of them drifted before: import them from here.
"""

from __future__ import annotations

from typing import Any

from lxml import etree

__all__ = ["HARDENED", "parse_element"]

#: keyword arguments for every lxml parser this server creates
HARDENED: dict[str, Any] = {
    "resolve_entities": False,
    "no_network": True,
    "load_dtd": False,
    "huge_tree": False,
}

# Processing instructions and comments cannot reach here through a client
# stream (the stream parser refuses them); from the admin API they are dropped.
_PARSER = etree.XMLParser(remove_pis=True, remove_comments=True, **HARDENED)


def parse_element(data: bytes | str) -> etree._Element:
    """One element from its serialized form (``XMLSyntaxError`` if it is not)."""
    el: etree._Element = etree.fromstring(data, parser=_PARSER)
    return el
