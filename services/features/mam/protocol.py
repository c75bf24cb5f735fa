"""XEP-0313 (MAM) and XEP-0359 (stanza ids) as pure functions: which
messages an archive keeps, the query form and RSM set a client sends, the
result messages and ``<fin/>`` the server answers, and the preferences
document. No storage, no sockets: the feature (``__init__.py``) runs them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from lxml import etree

from ...core.storage import ArchivedMessage, ArchivePage, ArchiveQuery
from ...xmpp import ns
from ...xmpp.errors import StanzaCondition, StanzaError
from ...xmpp.forms import Field, build_form, find_form, parse_form
from ...xmpp.jid import JID
from ...xmpp.timefmt import delay_element, parse_datetime
from ...xmpp.tree import parse_element

MAM = "urn:xmpp:mam:2"
SID = "urn:xmpp:sid:0"
RSM = "http://jabber.org/protocol/rsm"
FORWARD = "urn:xmpp:forward:0"
HINTS = "urn:xmpp:hints"
_BODY = ns.q(ns.CLIENT, "body")
_STANZA_ID = ns.q(SID, "stanza-id")
#: payloads that are the conversation even without a body (end-to-end
#: encrypted messages whose client sent no fallback body)
_CONTENT_WITHOUT_BODY = (
    "{eu.siacs.conversations.axolotl}encrypted",
    "{urn:xmpp:omemo:2}encrypted",
    "{jabber:x:encrypted}x",
    "{urn:xmpp:openpgp:0}openpgp",
)
#: the fields a query form may carry (XEP-0313 4.1.1; unknown: feature-not-implemented)
QUERY_FIELDS = ("FORM_TYPE", "with", "start", "end", "after-id", "before-id")


def worth_archiving(el: etree._Element) -> bool:
    """Section 5.1.1: chat and normal messages with a body (or an encrypted
    payload standing for one); XEP-0334 ``<store/>`` keeps any other chat or
    normal message, ``<no-store/>`` / ``<no-permanent-store/>`` none."""
    if (el.get("type") or "normal") not in ("normal", "chat"):
        return False
    content = hinted = False
    for child in el:
        tag = child.tag
        if not isinstance(tag, str):
            continue
        if tag == _BODY or tag in _CONTENT_WITHOUT_BODY:
            content = True
        elif tag in (ns.q(HINTS, "no-store"), ns.q(HINTS, "no-permanent-store")):
            return False
        elif tag == ns.q(HINTS, "store"):
            hinted = True
    return content or hinted


def strip_stanza_ids(el: etree._Element, by: str) -> bool:
    """Remove every ``<stanza-id by=by/>``: only this server may say which
    id its archive gave a message (XEP-0359 section 4, a sender could forge
    one). True if one was there."""
    found = False
    for old in el.findall(_STANZA_ID):
        if old.get("by") == by:
            el.remove(old)
            found = True
    return found


def stamp_stanza_id(el: etree._Element, by: str, sid: str) -> None:
    etree.SubElement(el, _STANZA_ID, nsmap={None: SID}, by=by, id=sid)


def stanza_id_of(el: etree._Element, by: str) -> str | None:
    for sid in el.iterfind(_STANZA_ID):
        if sid.get("by") == by:
            return sid.get("id")
    return None


# ---------------------------------------------------------------- preferences


@dataclass(frozen=True)
class Prefs:
    """Section 7: the default (always, roster, never) and the JIDs always
    or never archived, bare JIDs as strings."""

    default: str
    always: frozenset[str] = field(default_factory=frozenset)
    never: frozenset[str] = field(default_factory=frozenset)

    def to_json(self) -> str:
        return json.dumps(
            {"default": self.default, "always": sorted(self.always), "never": sorted(self.never)}
        )

    @staticmethod
    def from_json(doc: str) -> Prefs:
        d = json.loads(doc)
        return Prefs(str(d["default"]), frozenset(d["always"]), frozenset(d["never"]))

    def decide(self, peer: JID) -> bool | None:
        """True/False when the lists or the default decide; None: "roster",
        the caller asks whether ``peer`` is a contact."""
        if not self.never and not self.always:
            return None if self.default == "roster" else self.default == "always"
        bare = str(peer.bare)
        if bare in self.never:
            return False
        if bare in self.always:
            return True
        if self.default == "roster":
            return None
        return self.default == "always"


def _jids(parent: etree._Element | None) -> frozenset[str]:
    if parent is None:
        return frozenset()
    out = set()
    for j in parent.iterfind(ns.q(MAM, "jid")):
        try:
            out.add(str(JID.parse((j.text or "").strip()).bare))
        except StanzaError:
            raise StanzaError(StanzaCondition.BAD_REQUEST, f"bad JID {j.text!r}") from None
    return frozenset(out)


def parse_prefs(el: etree._Element) -> Prefs:
    default = el.get("default")
    if default not in ("always", "roster", "never"):
        raise StanzaError(StanzaCondition.BAD_REQUEST, "default: always, roster or never")
    return Prefs(default, _jids(el.find(ns.q(MAM, "always"))), _jids(el.find(ns.q(MAM, "never"))))


def prefs_element(p: Prefs) -> etree._Element:
    el = etree.Element(ns.q(MAM, "prefs"), nsmap={None: MAM}, default=p.default)
    for name, jids in (("always", p.always), ("never", p.never)):
        lst = etree.SubElement(el, ns.q(MAM, name))
        for j in sorted(jids):
            etree.SubElement(lst, ns.q(MAM, "jid")).text = j
    return el


# ---------------------------------------------------------------- queries


@dataclass(frozen=True)
class Query:
    query: ArchiveQuery
    queryid: str | None
    flip: bool


def query_form() -> etree._Element:
    """The form a client may fetch (4.1.1): the fields this server knows."""
    q = etree.Element(ns.q(MAM, "query"), nsmap={None: MAM})
    q.append(
        build_form(
            "form",
            MAM,
            [
                Field("with", "jid-single"),
                Field("start", "text-single"),
                Field("end", "text-single"),
                Field("after-id", "text-single"),
                Field("before-id", "text-single"),
            ],
        )
    )
    return q


def _one(values: dict[str, list[str]], var: str) -> str | None:
    v = values.get(var)
    if not v:
        return None
    if len(v) != 1 or not v[0].strip():
        raise StanzaError(StanzaCondition.BAD_REQUEST, f"field {var!r}: one value")
    return v[0].strip()


def _stamp(values: dict[str, list[str]], var: str) -> float | None:
    raw = _one(values, var)
    if raw is None:
        return None
    try:
        return parse_datetime(raw)
    except ValueError:
        raise StanzaError(StanzaCondition.BAD_REQUEST, f"{var}: not a XEP-0082 DateTime") from None


def parse_query(q: etree._Element, max_page: int) -> Query:
    """The query of an ``<iq type='set'><query xmlns='urn:xmpp:mam:2'/>``:
    its form (4.1), its RSM set (XEP-0059; ``max`` cut to ``max_page``) and
    ``<flip-page/>``."""
    with_jid = start = end = after_id = before_id = None
    form = find_form(q)
    if form is not None:
        values = parse_form(form, MAM, allowed_types=("submit",))
        unknown = sorted(set(values) - set(QUERY_FIELDS))
        if unknown:
            raise StanzaError(
                StanzaCondition.FEATURE_NOT_IMPLEMENTED, f"unknown field {unknown[0]!r}"
            )
        raw_with = _one(values, "with")
        if raw_with is not None:
            try:
                with_jid = str(JID.parse(raw_with))
            except StanzaError:
                raise StanzaError(StanzaCondition.BAD_REQUEST, "with: not a JID") from None
        start, end = _stamp(values, "start"), _stamp(values, "end")
        after_id, before_id = _one(values, "after-id"), _one(values, "before-id")
    limit = max_page
    page_after = page_before = None
    last = False
    rsm = q.find(ns.q(RSM, "set"))
    if rsm is not None:
        raw_max = rsm.findtext(ns.q(RSM, "max"))
        if raw_max is not None:
            try:
                limit = int(raw_max.strip())
            except ValueError:
                raise StanzaError(StanzaCondition.BAD_REQUEST, "max: not a number") from None
            if limit < 0:
                raise StanzaError(StanzaCondition.BAD_REQUEST, "max: negative")
            limit = min(limit, max_page)
        after_el = rsm.find(ns.q(RSM, "after"))
        before_el = rsm.find(ns.q(RSM, "before"))
        if after_el is not None and before_el is not None:
            # undefined in RSM; XEP-0313 points to after-id/before-id for ranges
            raise StanzaError(StanzaCondition.BAD_REQUEST, "after and before in one set")
        if after_el is not None:
            page_after = (after_el.text or "").strip()
            if not page_after:
                raise StanzaError(StanzaCondition.BAD_REQUEST, "after: an id")
        if before_el is not None:
            page_before = (before_el.text or "").strip() or None
            last = page_before is None
        if rsm.find(ns.q(RSM, "index")) is not None:
            raise StanzaError(StanzaCondition.FEATURE_NOT_IMPLEMENTED, "index")
    return Query(
        ArchiveQuery(
            with_jid=with_jid,
            start=start,
            end=end,
            after_id=after_id,
            before_id=before_id,
            page_after=page_after,
            page_before=page_before,
            last=last,
            limit=limit,
        ),
        q.get("queryid"),
        q.find(ns.q(MAM, "flip-page")) is not None,
    )


def result_message(
    archive: str, to: str, queryid: str | None, m: ArchivedMessage
) -> etree._Element:
    """One result (4.2): the archived message, forwarded (XEP-0297) with its
    delay stamp (XEP-0203), from the archive to the querying resource."""
    out = etree.Element(ns.q(ns.CLIENT, "message"), nsmap={None: ns.CLIENT})
    out.set("from", archive)
    out.set("to", to)
    res = etree.SubElement(out, ns.q(MAM, "result"), nsmap={None: MAM}, id=m.id)
    if queryid is not None:
        res.set("queryid", queryid)
    fwd = etree.SubElement(res, ns.q(FORWARD, "forwarded"), nsmap={None: FORWARD})
    fwd.append(delay_element(m.stamp, archive))
    try:
        fwd.append(parse_element(m.stanza))
    except etree.XMLSyntaxError:  # written by this server: cannot happen, but never fail a page
        fwd.append(etree.Element(ns.q(ns.CLIENT, "message")))
    return out


def fin(page: ArchivePage, flip: bool, backward: bool) -> etree._Element:
    """The ``<fin/>`` of the IQ result (4.3), with its RSM set: ``first``
    and ``last`` in the order the results were sent, ``count``, and
    ``complete`` when the page reached the end in its direction.

    ``first``'s ``index`` (optional in XEP-0059) is left out of pages
    walking backwards: slixmpp's RSM iterator takes ``index + items ==
    count`` as the end whichever way it walks, so with it a reverse
    iteration stopped after the newest page."""
    el = etree.Element(ns.q(MAM, "fin"), nsmap={None: MAM})
    if page.complete:
        el.set("complete", "true")
    s = etree.SubElement(el, ns.q(RSM, "set"), nsmap={None: RSM})
    msgs = list(reversed(page.messages)) if flip else page.messages
    if msgs:
        first = etree.SubElement(s, ns.q(RSM, "first"))
        first.text = msgs[0].id
        if not backward:
            first.set(
                "index",
                str(page.first_index + len(msgs) - 1 if flip else page.first_index),
            )
        etree.SubElement(s, ns.q(RSM, "last")).text = msgs[-1].id
    etree.SubElement(s, ns.q(RSM, "count")).text = str(page.count)
    return el


__all__ = [
    "MAM",
    "SID",
    "Prefs",
    "Query",
    "fin",
    "parse_prefs",
    "parse_query",
    "prefs_element",
    "query_form",
    "result_message",
    "stamp_stanza_id",
    "stanza_id_of",
    "strip_stanza_ids",
    "worth_archiving",
]
