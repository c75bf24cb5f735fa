"""XEP-0136 message archiving, read-only, for the clients that still ask:
listing collections and retrieving one, served from the XEP-0313 archive.

XEP-0136 sees an archive as *collections* (a conversation with one JID,
from a start time); the XEP-0313 store keeps messages. A collection here
is what one user exchanged with one bare JID during one UTC day; its
``start`` is the time of its first message, in whole seconds (the
DateTime profile without fractions), so a client retrieves it by the
``with`` and ``start`` it was listed with. Listing scans the archive's
messages (at most :data:`MAX_SCAN` per request: a client with more asks
for a narrower ``start``/``end``; more is resource-constraint). Writing
(``save``, automatic archiving preferences, ``remove``) is not offered:
the XEP-0313 archive is written by the server itself.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

from lxml import etree

from ...core.storage import ArchivedMessage, ArchivePage, ArchiveQuery
from ...xmpp import ns
from ...xmpp.errors import StanzaCondition, StanzaError
from ...xmpp.jid import JID
from ...xmpp.timefmt import datetime_str, parse_datetime
from ...xmpp.tree import parse_element
from .protocol import RSM

ARCHIVE = "urn:xmpp:archive"
#: the disco feature of listing and retrieving collections (XEP-0136 11)
MANAGE = "urn:xmpp:archive:manage"
#: messages one list request may scan
MAX_SCAN = 50_000
_DAY = 86400


@dataclass(frozen=True)
class Collection:
    with_jid: str  # a bare JID
    start: int  # POSIX seconds of its first message

    @property
    def id(self) -> str:
        # opaque to clients (RSM); orders as the list does when compared as
        # (start, with), which is how :func:`page_of` finds an ``after``
        return f"{self.start}/{self.with_jid}"


Query = Callable[[ArchiveQuery], Awaitable[ArchivePage | None]]


def _attr_time(el: etree._Element, name: str) -> float | None:
    raw = el.get(name)
    if raw is None:
        return None
    try:
        return parse_datetime(raw)
    except ValueError:
        raise StanzaError(StanzaCondition.BAD_REQUEST, f"{name}: not a XEP-0082 DateTime") from None


def _attr_jid(el: etree._Element, required: bool) -> str | None:
    raw = el.get("with")
    if raw is None:
        if required:
            raise StanzaError(StanzaCondition.BAD_REQUEST, "with is required")
        return None
    try:
        return str(JID.parse(raw))
    except StanzaError:
        raise StanzaError(StanzaCondition.BAD_REQUEST, "with: not a JID") from None


def _rsm(el: etree._Element, max_page: int) -> tuple[int, str | None]:
    """(max, after) of a ``<set/>``; ``before`` paging is not offered."""
    s = el.find(ns.q(RSM, "set"))
    if s is None:
        return max_page, None
    limit = max_page
    raw = s.findtext(ns.q(RSM, "max"))
    if raw is not None:
        try:
            limit = min(max(int(raw.strip()), 0), max_page)
        except ValueError:
            raise StanzaError(StanzaCondition.BAD_REQUEST, "max: not a number") from None
    if s.find(ns.q(RSM, "before")) is not None or s.find(ns.q(RSM, "index")) is not None:
        raise StanzaError(StanzaCondition.FEATURE_NOT_IMPLEMENTED, "page forwards with after")
    after = s.findtext(ns.q(RSM, "after"))
    return limit, (after.strip() if after is not None else None)


def _set(first: str | None, last: str | None, count: int, index: int = 0) -> etree._Element:
    s = etree.Element(ns.q(RSM, "set"), nsmap={None: RSM})
    if first is not None:
        etree.SubElement(s, ns.q(RSM, "first"), index=str(index)).text = first
        etree.SubElement(s, ns.q(RSM, "last")).text = last
    etree.SubElement(s, ns.q(RSM, "count")).text = str(count)
    return s


async def _scan(query: Query, base: ArchiveQuery) -> list[ArchivedMessage]:
    out: list[ArchivedMessage] = []
    after: str | None = None
    while True:
        page = await query(replace(base, page_after=after, limit=500))
        if page is None:  # cannot happen without ids in the query
            return out
        out.extend(page.messages)
        if len(out) > MAX_SCAN:
            raise StanzaError(
                StanzaCondition.RESOURCE_CONSTRAINT,
                "too many messages: list a narrower time range (start, end)",
            )
        if page.complete or not page.messages:
            return out
        after = page.messages[-1].id


def collections(messages: list[ArchivedMessage]) -> list[Collection]:
    """The collections of these messages (oldest first): one per bare JID
    and UTC day."""
    seen: dict[tuple[str, int], Collection] = {}
    for m in messages:
        bare = m.peer.split("/", 1)[0]
        key = (bare, int(m.stamp) // _DAY)
        if key not in seen:
            seen[key] = Collection(bare, int(m.stamp))
    return sorted(seen.values(), key=lambda c: (c.start, c.with_jid))


async def list_collections(query: Query, el: etree._Element, max_page: int) -> etree._Element:
    """The answer to ``<list/>`` (XEP-0136 5.1)."""
    with_jid = _attr_jid(el, required=False)
    start, end = _attr_time(el, "start"), _attr_time(el, "end")
    limit, after = _rsm(el, max_page)
    found = collections(await _scan(query, ArchiveQuery(with_jid=with_jid, start=start, end=end)))
    index = 0
    if after is not None:
        ids = [c.id for c in found]
        if after not in ids:
            raise StanzaError(StanzaCondition.ITEM_NOT_FOUND, "no such collection")
        index = ids.index(after) + 1
    page = found[index : index + limit]
    out = etree.Element(ns.q(ARCHIVE, "list"), nsmap={None: ARCHIVE})
    for c in page:
        etree.SubElement(
            out, ns.q(ARCHIVE, "chat"), {"with": c.with_jid, "start": datetime_str(c.start)}
        )
    if page or after is not None or el.find(ns.q(RSM, "set")) is not None:
        out.append(
            _set(page[0].id if page else None, page[-1].id if page else None, len(found), index)
        )
    return out


def _bodies(m: ArchivedMessage) -> list[etree._Element]:
    try:
        msg = parse_element(m.stanza)
    except etree.XMLSyntaxError:
        return []
    return [
        child for child in msg if child.tag in (ns.q(ns.CLIENT, "body"), ns.q(ns.CLIENT, "subject"))
    ]


async def retrieve(query: Query, el: etree._Element, max_page: int) -> etree._Element:
    """The answer to ``<retrieve with start/>`` (XEP-0136 5.2): a page of
    the collection's messages, ``<to/>`` what the user sent and ``<from/>``
    what they received, each ``secs`` after the one before."""
    with_jid = _attr_jid(el, required=True)
    start = _attr_time(el, "start")
    if start is None:
        raise StanzaError(StanzaCondition.BAD_REQUEST, "start is required")
    limit, after = _rsm(el, max_page)
    day_end = (int(start) // _DAY + 1) * _DAY - 0.000001
    base = ArchiveQuery(with_jid=with_jid, start=float(int(start)), end=day_end)
    everything = await query(replace(base, limit=0))
    if everything is None or everything.count == 0:
        raise StanzaError(StanzaCondition.ITEM_NOT_FOUND, "no such collection")
    page = await query(replace(base, page_after=after, limit=limit))
    if page is None:
        raise StanzaError(StanzaCondition.ITEM_NOT_FOUND, "no such message in the collection")
    chat = etree.Element(
        ns.q(ARCHIVE, "chat"),
        {"with": with_jid or "", "start": datetime_str(start)},
        nsmap={None: ARCHIVE},
    )
    previous = float(int(start))
    if page.messages and page.first_index > 0:
        # secs count from the message before the page, which the client has
        before = await query(replace(base, page_before=page.messages[0].id, limit=1))
        if before is not None and before.messages:
            previous = before.messages[0].stamp
    elapsed = 0  # whole seconds given so far, so their sum stays true (5.2)
    origin = previous
    for m in page.messages:
        secs = round(m.stamp - origin) - elapsed
        elapsed += secs
        item = etree.SubElement(chat, ns.q(ARCHIVE, "to" if m.outgoing else "from"))
        item.set("secs", str(max(secs, 0)))
        for b in _bodies(m):
            part = etree.SubElement(item, ns.q(ARCHIVE, etree.QName(b).localname))
            part.text = b.text
    msgs = page.messages
    chat.append(
        _set(
            msgs[0].id if msgs else None,
            msgs[-1].id if msgs else None,
            page.count,
            page.first_index,
        )
    )
    return chat
