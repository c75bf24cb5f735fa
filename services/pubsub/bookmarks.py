"""One set of bookmarks, three stores (XEP-0411, XEP-0402 8.1): private XML
``<storage xmlns='storage:bookmarks'/>`` (XEP-0048 1.0, XEP-0049), the PEP
node ``storage:bookmarks`` (XEP-0048 1.1: the same element as one item), and
the PEP node ``urn:xmpp:bookmarks:1`` (XEP-0402: one item per room, its id
the room's JID). A client changes one; the service rewrites the other two,
so old and new clients see the same rooms. Pure conversions here; the
pubsub service does the writing.

What only one format can say survives where it can: XEP-0048 ``<url/>``
bookmarks stay in the legacy stores when the native node changes, and a
native bookmark's ``<extensions/>`` are kept when the legacy side rewrites a
room it already had.
"""

from __future__ import annotations

import copy

from lxml import etree

LEGACY = "storage:bookmarks"
NATIVE = "urn:xmpp:bookmarks:1"
#: the private XML key of legacy bookmarks (services/features/private.py)
PRIVATE_KEY = f"{{{LEGACY}}}storage"
#: what the pubsub service announces on accounts (XEP-0411 2, XEP-0402 8.1)
FEATURES = ("urn:xmpp:bookmarks-conversion:0", NATIVE + "#compat", NATIVE + "#compat-pep")
#: both PEP bookmark nodes are the account's alone (XEP-0411 4, XEP-0402 3)
OPTIONS = {
    "pubsub#persist_items": "true",
    "pubsub#access_model": "whitelist",
    "pubsub#send_last_published_item": "never",
}
NATIVE_OPTIONS = {**OPTIONS, "pubsub#max_items": "max"}
_TRUE = ("1", "true")


def _q(ns: str, local: str) -> str:
    return f"{{{ns}}}{local}"


def native_of_legacy(
    storage: etree._Element, current: dict[str, etree._Element] | None = None
) -> dict[str, etree._Element]:
    """The native items (room JID -> ``<conference/>``) a legacy
    ``<storage/>`` stands for; ``current`` native items keep their
    extensions."""
    out: dict[str, etree._Element] = {}
    for conf in storage.iterchildren(_q(LEGACY, "conference")):
        jid = conf.get("jid")
        if not jid:
            continue
        el = etree.Element(_q(NATIVE, "conference"), nsmap={None: NATIVE})
        if conf.get("name"):
            el.set("name", conf.get("name") or "")
        if (conf.get("autojoin") or "").lower() in _TRUE:
            el.set("autojoin", "true")
        for tag in ("nick", "password"):
            text = conf.findtext(_q(LEGACY, tag))
            if text:
                etree.SubElement(el, _q(NATIVE, tag)).text = text
        old = (current or {}).get(jid)
        ext = old.find(_q(NATIVE, "extensions")) if old is not None else None
        if ext is not None:
            el.append(copy.deepcopy(ext))
        out[jid] = el
    return out


def legacy_of_native(
    items: dict[str, etree._Element], current: etree._Element | None = None
) -> etree._Element:
    """The legacy ``<storage/>`` for native items; ``<url/>`` bookmarks of
    the ``current`` legacy storage are kept (the native format has none)."""
    storage = etree.Element(_q(LEGACY, "storage"), nsmap={None: LEGACY})
    for jid, conf in sorted(items.items()):
        el = etree.SubElement(storage, _q(LEGACY, "conference"), jid=jid)
        if conf.get("name"):
            el.set("name", conf.get("name") or "")
        el.set("autojoin", "true" if (conf.get("autojoin") or "") in _TRUE else "false")
        for tag in ("nick", "password"):
            text = conf.findtext(_q(NATIVE, tag))
            if text:
                etree.SubElement(el, _q(LEGACY, tag)).text = text
    if current is not None:
        for url in current.iterchildren(_q(LEGACY, "url")):
            storage.append(copy.deepcopy(url))
    return storage


def same(a: etree._Element | None, b: etree._Element | None) -> bool:
    """Whether two bookmark elements say the same (canonical XML)."""
    if a is None or b is None:
        return a is b
    return etree.tostring(a, method="c14n") == etree.tostring(b, method="c14n")
