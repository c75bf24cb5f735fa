"""The sans-IO stream parser: events, limits, refusals, and a fuzz target."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.xmpp.errors import StreamCondition, StreamError
from services.xmpp.parser import (
    MAX_ATTRIBUTES,
    MAX_NAME,
    StanzaReceived,
    StreamClosed,
    StreamOpened,
    StreamParser,
    serialize,
)

HEADER = (
    b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
    b"xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>"
)


def test_events_in_order_byte_by_byte():
    p = StreamParser()
    data = (
        HEADER
        + b"<message to='a@b'><body>hi &amp; bye</body></message> <iq id='1' type='get'/></stream:stream>"
    )
    events = []
    for i in range(len(data)):
        events.extend(p.feed(data[i : i + 1]))
    kinds = [type(e) for e in events]
    assert kinds == [StreamOpened, StanzaReceived, StanzaReceived, StreamClosed]
    msg = events[1].element
    assert msg.findtext("{jabber:client}body") == "hi & bye"
    assert (
        serialize(msg)
        == b'<message xmlns="jabber:client" to="a@b"><body>hi &amp; bye</body></message>'
    )


@pytest.mark.parametrize(
    ("chunk", "cond"),
    [
        (b"<!-- c -->", StreamCondition.RESTRICTED_XML),
        (b"<?pi x?>", StreamCondition.RESTRICTED_XML),
        (b"<a>&x;</a>", StreamCondition.RESTRICTED_XML),
        (b"<a></b>", StreamCondition.NOT_WELL_FORMED),
        (b"<p:a/>", StreamCondition.BAD_NAMESPACE_PREFIX),
        (b"\x01", StreamCondition.NOT_WELL_FORMED),
        (b"<<", StreamCondition.NOT_WELL_FORMED),
    ],
)
def test_refusals(chunk, cond):
    p = StreamParser()
    p.feed(HEADER)
    with pytest.raises(StreamError) as exc:
        p.feed(chunk)
    assert exc.value.condition is cond


def test_doctype_refused():
    p = StreamParser()
    with pytest.raises(StreamError) as exc:
        p.feed(b"<!DOCTYPE x>" + HEADER)
    assert exc.value.condition is StreamCondition.RESTRICTED_XML


def test_predefined_and_character_references_allowed():
    p = StreamParser()
    p.feed(HEADER)
    (ev,) = p.feed(b"<message><body>&lt;&gt;&quot;&apos;&#65;&#x42;</body></message>")
    assert ev.element.findtext("{jabber:client}body") == "<>\"'AB"


def test_size_limit_whole_and_partial():
    p = StreamParser(max_stanza_size=2048)
    p.feed(HEADER)
    p.feed(b"<message><body>" + b"x" * 1000 + b"</body></message>")  # under the limit
    with pytest.raises(StreamError) as exc:
        p.feed(b"<message><body>" + b"x" * 5000 + b"</body></message>")
    assert exc.value.condition is StreamCondition.POLICY_VIOLATION
    p = StreamParser(max_stanza_size=2048)
    p.feed(HEADER + b"<message><body>")
    with pytest.raises(StreamError):
        for _ in range(10):
            p.feed(b"y" * 500)


def test_release_keeps_root_small():
    p = StreamParser()
    p.feed(HEADER)
    for _ in range(100):
        (ev,) = p.feed(b"<presence/>")
        p.release(ev.element)
    assert p.root is not None and len(p.root) == 0


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=8))
def test_fuzz_parser_only_raises_stream_errors(chunks):
    p = StreamParser(max_stanza_size=4096)
    try:
        p.feed(HEADER)
        for c in chunks:
            p.feed(c)
    except StreamError:
        pass


XMLISH = st.lists(
    st.sampled_from(
        [
            b"<",
            b">",
            b"/",
            b"message",
            b"iq",
            b" to='a@b'",
            b"&amp;",
            b"&",
            b";",
            b"<body>",
            b"</body>",
            b"</message>",
            b"<!--",
            b"-->",
            b"<?",
            b"?>",
            b"x:",
            b"xmlns='q'",
            b"\xc3\xa9",
            b"\xff",
            b"]]>",
            b"<![CDATA[",
            b"'",
            b'"',
            b"=",
            b" ",
        ]
    ),
    max_size=40,
)


@settings(max_examples=500, deadline=None)
@given(XMLISH)
def test_fuzz_xmlish_tokens(tokens):
    p = StreamParser(max_stanza_size=4096)
    p.feed(HEADER)
    try:
        for t in tokens:
            for ev in p.feed(t):
                assert isinstance(ev, StanzaReceived | StreamClosed)
    except StreamError:
        pass


# ---- the bound holds for every byte buffered (issue 9, defect 3) -------------

LIMIT = 4096


def _feed_until_error(p: StreamParser, head: bytes, filler: bytes, most: int) -> int:
    """Feed ``head`` then ``filler`` in 1 KiB chunks; return the bytes fed
    after ``head`` when the parser refused, failing if it never does."""
    p.feed(head)
    fed = 0
    with pytest.raises(StreamError) as exc:
        while fed < most:
            p.feed(filler)
            fed += len(filler)
    assert exc.value.condition is StreamCondition.POLICY_VIOLATION
    return fed


@pytest.mark.parametrize(
    ("head", "filler"),
    [
        # an unfinished start tag of a stanza, at depth 1
        (HEADER + b"<message", b" " * 1024),
        # an unfinished attribute value
        (HEADER + b"<message to='", b"x" * 1024),
        # an unfinished stream header: depth 0, before any stanza
        (HEADER[:-1] + b" from='", b"y" * 1024),
        # an unfinished start tag inside a stanza
        (HEADER + b"<message><body", b" " * 1024),
        # text of a stanza's child
        (HEADER + b"<message><body>", b"z" * 1024),
    ],
    ids=["start-tag", "attribute", "header", "nested-tag", "text"],
)
def test_unfinished_markup_is_bounded_at_every_depth(head, filler):
    p = StreamParser(max_stanza_size=LIMIT)
    fed = _feed_until_error(p, head, filler, most=1_000_000)
    # exact to within one slice of the limit
    assert fed <= LIMIT + 1024


def test_whitespace_keepalives_count_until_the_next_stanza_releases_them():
    p = StreamParser(max_stanza_size=LIMIT)
    p.feed(HEADER)
    for _ in range(50):
        for _ in range(LIMIT // 2):
            assert p.feed(b" ") == []
        (ev,) = p.feed(b"<presence/>")
        p.release(ev.element)
    # but whitespace alone is buffered by libxml2 too: it is bounded like the rest
    with pytest.raises(StreamError) as exc:
        for _ in range(2 * LIMIT):
            p.feed(b" ")
    assert exc.value.condition is StreamCondition.POLICY_VIOLATION


def test_too_many_attributes_refused():
    p = StreamParser()
    p.feed(HEADER)
    attrs = b" ".join(b"a%d=''" % i for i in range(MAX_ATTRIBUTES + 1))
    with pytest.raises(StreamError) as exc:
        p.feed(b"<message " + attrs + b"/>")
    assert exc.value.condition is StreamCondition.POLICY_VIOLATION
    p = StreamParser()
    p.feed(HEADER)
    attrs = b" ".join(b"a%d=''" % i for i in range(MAX_ATTRIBUTES))
    (ev,) = p.feed(b"<message><x " + attrs + b"/></message>")
    assert isinstance(ev, StanzaReceived)


@pytest.mark.parametrize(
    "stanza",
    [
        b"<message><" + b"n" * (MAX_NAME + 1) + b"/></message>",
        b"<message " + b"a" * (MAX_NAME + 1) + b"='1'/>",
        b"<message><x xmlns='" + b"u" * MAX_NAME + b"'/></message>",
    ],
    ids=["element", "attribute", "namespace"],
)
def test_long_names_refused(stanza):
    p = StreamParser()
    p.feed(HEADER)
    with pytest.raises(StreamError) as exc:
        p.feed(stanza)
    assert exc.value.condition is StreamCondition.POLICY_VIOLATION


# A stream of stanzas of random sizes, cut at random places, with or without
# keepalives between them. Nothing but a StreamError ever comes out; stanzas
# arrive whole whatever the cuts; and the bound holds to within one slice
# (the parser cannot see where in a read a stanza ended): one more than a
# slice past the bound is always refused, before more than that was fed, and
# one within a slice under it never is.

SLICE = 1024  # StreamParser's slice for a 4 KiB bound (its minimum)


@settings(max_examples=300, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=0, max_value=2 * LIMIT), min_size=1, max_size=6),
    cuts=st.lists(st.integers(min_value=1, max_value=3000), min_size=1, max_size=40),
    keepalives=st.booleans(),
)
def test_property_bound_holds_for_any_split(sizes, cuts, keepalives):
    stanzas = [b"<message><body>" + b"x" * n + b"</body></message>" for n in sizes]
    gap = b"  \n" if keepalives else b""
    data = HEADER + gap.join(stanzas)
    # what counts toward a stanza: what was fed since the previous one ended
    # (the header for the first, the keepalive gap for the others), from ``starts``
    counted = [len(HEADER) + len(stanzas[0])] + [len(gap) + len(s) for s in stanzas[1:]]
    starts = [0]
    for n in counted[:-1]:
        starts.append(starts[-1] + n)
    p = StreamParser(max_stanza_size=LIMIT)
    received: list[int] = []
    fed = k = 0
    try:
        while fed < len(data):
            chunk = data[fed : fed + cuts[k % len(cuts)]]
            k += 1
            for ev in p.feed(chunk):
                if isinstance(ev, StanzaReceived):
                    received.append(len(ev.element.findtext("{jabber:client}body") or ""))
                    p.release(ev.element)
            fed += len(chunk)
    except StreamError as err:
        assert err.condition is StreamCondition.POLICY_VIOLATION
        refused = len(received)  # every stanza before it arrived
        assert counted[refused] > LIMIT - SLICE
        assert fed - starts[refused] <= LIMIT + SLICE
    else:
        assert all(n <= LIMIT + SLICE for n in counted)
        refused = len(sizes)
    assert received == sizes[:refused]


@pytest.mark.parametrize("cut", range(1, 12))
def test_a_read_may_end_inside_the_xml_declaration_or_cdata(cut):
    p = StreamParser()
    for part in (HEADER[:cut], HEADER[cut:]):
        p.feed(part)
    stanza = b"<message><body><![CDATA[a<b]]></body></message>"
    at = stanza.index(b"<![") + cut % 9
    events = p.feed(stanza[:at]) + p.feed(stanza[at:])
    assert events[0].element.findtext("{jabber:client}body") == "a<b"
    # a real comment cut the same way is still refused
    p.feed(b"<!")
    with pytest.raises(StreamError) as exc:
        p.feed(b"-- c -->")
    assert exc.value.condition is StreamCondition.RESTRICTED_XML
