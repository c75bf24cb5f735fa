"""The sans-IO stream parser: events, limits, refusals, and a fuzz target."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.xmpp.errors import StreamCondition, StreamError
from services.xmpp.parser import StanzaReceived, StreamClosed, StreamOpened, StreamParser, serialize

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
