"""Private XML storage (XEP-0049).

Each child of ``<query xmlns='jabber:iq:private'/>`` is stored under its
Clark name ``{namespace}localname``. This is the storage behind bookmarks
(XEP-0048), roster delimiters (XEP-0083) and annotations (XEP-0145), which
are simply namespaces kept here.

* Only the owner may get or set (``to`` absent or their own bare JID);
  anyone else gets forbidden (the XEP prefers it to service-unavailable).
* A query without a child element, or a child in the reserved namespaces
  ``jabber:client``, ``jabber:server`` or ``jabber:iq:private`` (which is
  also what an element without its own namespace inherits), is
  not-acceptable.
* get returns the stored element for each child asked for, or the empty
  child when nothing is stored under that name. set stores each child as
  sent and answers an empty result.
"""

from __future__ import annotations

import copy

from lxml import etree

from ..core.feature import Context, Feature
from ..core.pubsub import pubsub_of
from ..core.routing import Envelope
from ..xmpp import ns
from ..xmpp.errors import StanzaCondition, StanzaError
from ..xmpp.jid import JID
from ..xmpp.tree import parse_element

__all__ = ["FEATURE", "RESERVED_NAMESPACES"]

_QUERY = ns.q(ns.PRIVATE, "query")
#: XEP-0048 bookmarks' key (kept in step with PEP by the pubsub service)
_BOOKMARKS = "{storage:bookmarks}storage"
RESERVED_NAMESPACES = frozenset({ns.CLIENT, ns.SERVER, ns.PRIVATE})


def _children(ctx: Context, env: Envelope, payload: etree._Element) -> list[etree._Element]:
    if env.frm.bare != env.to.bare:
        raise StanzaError(StanzaCondition.FORBIDDEN)
    children = [c for c in payload if isinstance(c.tag, str)]
    if not children:
        raise StanzaError(StanzaCondition.NOT_ACCEPTABLE, "no child element to store or fetch")
    for c in children:
        if etree.QName(c).namespace in RESERVED_NAMESPACES or etree.QName(c).namespace is None:
            raise StanzaError(StanzaCondition.NOT_ACCEPTABLE, "reserved namespace")
    return children


def _query() -> etree._Element:
    return etree.Element(_QUERY, nsmap={None: ns.PRIVATE})


async def _get(ctx: Context, env: Envelope, payload: etree._Element) -> etree._Element:
    children = _children(ctx, env, payload)
    user = env.to.bare
    assert user.local is not None
    out = _query()
    for c in children:
        key = str(c.tag)
        data = await ctx.storage.get_private(user.domain, user.local, key)
        stored: etree._Element | None = None
        if data is not None:
            try:
                stored = parse_element(data)
            except etree.XMLSyntaxError:
                stored = None
        if stored is None:
            uri = etree.QName(c).namespace
            assert uri is not None  # checked by _children
            stored = etree.Element(key, nsmap={None: uri})
        out.append(stored)
    return out


async def _set(ctx: Context, env: Envelope, payload: etree._Element) -> None:
    children = _children(ctx, env, payload)
    user = env.to.bare
    assert user.local is not None
    for c in children:
        el = copy.deepcopy(c)
        el.tail = None
        etree.cleanup_namespaces(el)
        data = etree.tostring(el, with_tail=False)
        await ctx.storage.set_private(user.domain, user.local, str(c.tag), data)
        if str(c.tag) == _BOOKMARKS:
            await _bookmarks_moved(ctx, user, data)
    return None


async def _bookmarks_moved(ctx: Context, user: JID, data: bytes) -> None:
    """XEP-0411: bookmarks stored here are PEP bookmarks too (where the
    deployment has the pubsub service)."""
    try:
        pubsub = pubsub_of(ctx)
    except StanzaError:
        return
    await pubsub.legacy_bookmarks(user, data)


FEATURE = Feature(
    name="private",
    xeps=("XEP-0049", "XEP-0048", "XEP-0083", "XEP-0145"),
    storage=("private_xml",),
    disco_features=(ns.PRIVATE,),
    account_disco_features=(ns.PRIVATE,),
    account_iq={(_QUERY, "get"): _get, (_QUERY, "set"): _set},
)
