"""Incremental, bounded XMPP stream parser (sans-IO).

``feed(bytes)`` returns a list of events: :class:`StreamOpened`,
:class:`StanzaReceived` (one top-level child of the stream root) and
:class:`StreamClosed`. Malformed or restricted input raises
:class:`~services.xmpp.errors.StreamError` carrying the RFC 6120 condition.

RFC 6120 section 11.1 forbids comments, processing instructions, DTDs and
entity references other than the predefined ones; libxml2 would silently
stall on an undeclared entity, so references are checked before the bytes
reach it.

Every byte handed to libxml2 counts toward the bound of the element it
belongs to (``policy-violation`` past it), at every depth: an unfinished
stream header, start tag or attribute value is buffered by libxml2 until it
ends, so a bound checked only on finished stanzas would let one connection
grow the process without limit. Whitespace between stanzas (keepalives)
counts toward the next stanza: libxml2 keeps it as text of the root until
that stanza is released. The number of attributes of an element and the length of element
and attribute names are bounded too: libxml2 spends about 25 times the
input's size on a start tag of many small attributes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lxml import etree

from . import ns
from .errors import StreamCondition, StreamError
from .tree import HARDENED

_BAD_REF = re.compile(rb"&(?!amp;|lt;|gt;|quot;|apos;|#[0-9]{1,7};|#x[0-9a-fA-F]{1,6};)")
# libxml2's push parser holds back errors until more input comes; these are
# caught on sight so a peer sending garbage gets its error at once.
_BAD_BYTES = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f]|<[<>\s=&]")
# Only judged once enough bytes follow the "<": a read that ends in the
# middle of "<?xml " or "<![CDATA[" is judged with the next read's first bytes.
_MARKUP_DECL = re.compile(rb"<!(?=[\s\S]{7})(?!\[CDATA\[)|<\?(?=[\s\S]{4})(?!xml[\s?])")
_MARKUP_TAIL = 8
_XML_DECL = re.compile(rb"^\s*<\?xml[^>]*?encoding\s*=\s*['\"]([A-Za-z0-9._-]+)['\"]")
_STREAM_NS_DECL = b' xmlns:stream="http://etherx.jabber.org/streams"'

#: most attributes on one element (data forms, XHTML-IM and Jingle use a handful)
MAX_ATTRIBUTES = 64
#: longest element or attribute name, namespace included ("{uri}local")
MAX_NAME = 1024


@dataclass(frozen=True, slots=True)
class StreamOpened:
    tag: str
    prefix: str | None
    attrs: dict[str, str]
    default_ns: str | None


@dataclass(frozen=True, slots=True)
class StanzaReceived:
    element: etree._Element
    size: int


@dataclass(frozen=True, slots=True)
class StreamClosed:
    pass


Event = StreamOpened | StanzaReceived | StreamClosed


class StreamParser:
    """Parses one XML stream; create a new one on every stream restart."""

    def __init__(self, max_stanza_size: int = 262144) -> None:
        self._parser = etree.XMLPullParser(
            events=("start", "end", "comment", "pi"), remove_blank_text=False, **HARDENED
        )
        self._max = max_stanza_size
        self._slice = max(1024, max_stanza_size // 32)
        self._depth = 0
        self._root: etree._Element | None = None
        self._pending = 0  # bytes fed since the last stanza ended (or the stream began)
        self._carry = b""  # an unfinished '&...' at a chunk boundary
        self._tail = b""  # the last bytes fed, for markup cut between two reads
        self._started = False
        self._closed = False

    @property
    def root(self) -> etree._Element | None:
        return self._root

    def set_limit(self, max_stanza_size: int) -> None:
        """Change the bound of an element, for a stream that authenticates
        without a restart (XEP-0114's handshake)."""
        self._max = max_stanza_size
        self._slice = max(1024, max_stanza_size // 32)

    def feed(self, data: bytes) -> list[Event]:
        if self._closed or not data:
            return []
        if not self._started:
            m = _XML_DECL.match(data)
            if m and m.group(1).lower().replace(b"-", b"") not in (b"utf8",):
                raise StreamError(StreamCondition.UNSUPPORTED_ENCODING)
            if data[:3] == b"\xef\xbb\xbf":
                data = data[3:]
            self._started = True
        if _BAD_BYTES.search(data):
            raise StreamError(StreamCondition.NOT_WELL_FORMED)
        seam = self._tail + data[:_MARKUP_TAIL]
        self._tail = (
            (self._tail + data)[-_MARKUP_TAIL:]
            if len(data) < _MARKUP_TAIL
            else data[-_MARKUP_TAIL:]
        )
        if _MARKUP_DECL.search(data) or _MARKUP_DECL.search(seam):
            raise StreamError(
                StreamCondition.RESTRICTED_XML, "DTDs, comments and PIs are not allowed"
            )
        self._check_refs(data)
        # Feed in slices so a whole oversized stanza in one read is still
        # caught; the size bound is exact to within one slice.
        step = self._slice
        events: list[Event] = []
        for i in range(0, len(data), step):
            piece = data[i : i + step] if len(data) > step else data
            self._pending += len(piece)
            try:
                self._parser.feed(piece)
                events.extend(self._collect())
            except etree.XMLSyntaxError as exc:
                raise StreamError(StreamCondition.NOT_WELL_FORMED, str(exc)[:200]) from None
            if self._pending > self._max:
                raise StreamError(StreamCondition.POLICY_VIOLATION, "element too large")
        return events

    def _check_refs(self, data: bytes) -> None:
        if b"&" not in data and not self._carry:
            return
        scan = self._carry + data
        cut = scan.rfind(b"&")
        if cut != -1 and b";" not in scan[cut:] and len(scan) - cut < 12:
            self._carry = scan[cut:]
            scan = scan[:cut]
        else:
            self._carry = b""
        if _BAD_REF.search(scan):
            raise StreamError(StreamCondition.RESTRICTED_XML, "entity references are not allowed")

    def _collect(self) -> list[Event]:
        out: list[Event] = []
        for ev, el in self._parser.read_events():
            if ev == "start":
                self._depth += 1
                tag = el.tag
                if isinstance(tag, str):
                    if tag[0] != "{" and ":" in tag:
                        raise StreamError(StreamCondition.BAD_NAMESPACE_PREFIX)
                    if len(tag) > MAX_NAME:
                        raise StreamError(StreamCondition.POLICY_VIOLATION, "name too long")
                attrib = el.attrib
                if attrib:
                    if len(attrib) > MAX_ATTRIBUTES:
                        raise StreamError(StreamCondition.POLICY_VIOLATION, "too many attributes")
                    if max(map(len, attrib)) > MAX_NAME:
                        raise StreamError(StreamCondition.POLICY_VIOLATION, "name too long")
                if self._depth == 1:
                    self._root = el
                    if el.getroottree().docinfo.doctype:
                        raise StreamError(StreamCondition.RESTRICTED_XML, "DTD not allowed")
                    out.append(
                        StreamOpened(
                            tag=str(tag),
                            prefix=el.prefix,
                            attrs={str(k): str(v) for k, v in el.attrib.items()},
                            default_ns=el.nsmap.get(None),
                        )
                    )
            elif ev == "end":
                self._depth -= 1
                if self._depth == 1:
                    if self._pending > self._max:
                        raise StreamError(StreamCondition.POLICY_VIOLATION, "stanza too large")
                    out.append(StanzaReceived(el, self._pending))
                    self._pending = 0
                elif self._depth == 0:
                    self._closed = True
                    out.append(StreamClosed())
            else:  # comment or processing instruction
                raise StreamError(StreamCondition.RESTRICTED_XML, f"{ev} not allowed")
        return out

    def release(self, element: etree._Element) -> None:
        """Detach a handled stanza from the root so the tree does not grow."""
        parent = element.getparent()
        if parent is not None:
            parent.remove(element)
        if self._root is not None:
            self._root.text = None


def serialize(element: etree._Element) -> bytes:
    """Serialize a stanza parsed from a stream, still attached to its root.

    lxml repeats every in-scope namespace declaration on the element; the
    ``stream`` prefix is never used inside a stanza, so its declaration is
    dropped to keep the bytes lean.
    """
    data = etree.tostring(element, with_tail=False)
    if _STREAM_NS_DECL in data:
        data = data.replace(_STREAM_NS_DECL, b"", 1)
    return data


def is_stream_tag(tag: str) -> bool:
    return tag == ns.q(ns.STREAM, "stream")
