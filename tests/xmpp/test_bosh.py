"""BOSH's wrapper, sans-IO: parsing a request's <body/> with the stream
parser's limits, the request-id window, and the response bodies."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from services.xmpp import bosh
from services.xmpp.bosh import BoshError, Condition, RidWindow, parse_body

NS = bosh.HTTPBIND


def test_parse_body_attributes_and_children() -> None:
    b = parse_body(
        f"<body xmlns='{NS}' xmlns:xmpp='urn:xmpp:xbosh' rid='42' sid='s' xmpp:restart='true'>"
        "<message xmlns='jabber:client' to='a@b'/><presence xmlns='jabber:client'/></body>".encode(),
        1000,
    )
    assert b.rid == 42 and b.sid == "s" and b.restart and not b.terminate
    assert [etree.QName(c.element).localname for c in b.children] == ["message", "presence"]


@pytest.mark.parametrize(
    ("data", "condition"),
    [
        (b"<body xmlns='%s' rid='1'>" % NS.encode(), Condition.BAD_REQUEST),  # incomplete
        (b"<other xmlns='%s'/>" % NS.encode(), Condition.BAD_REQUEST),
        (b"<body rid='1'/>", Condition.BAD_REQUEST),
        (b"<!DOCTYPE b><body xmlns='%s'/>" % NS.encode(), Condition.BAD_REQUEST),
        (b"<body xmlns='%s'><!-- c --></body>" % NS.encode(), Condition.BAD_REQUEST),
        (b"<body xmlns='%s'><iq>&x;</iq></body>" % NS.encode(), Condition.BAD_REQUEST),
        (b"not xml", Condition.BAD_REQUEST),
        (b"<body xmlns='%s'><iq id='%s'/></body>" % (NS.encode(), b"x" * 2000), Condition.POLICY_VIOLATION),
    ],
)  # fmt: skip
def test_parse_body_errors(data: bytes, condition: Condition) -> None:
    with pytest.raises(BoshError) as exc:
        parse_body(data, 1000)
    assert exc.value.condition is condition


@pytest.mark.parametrize("rid", ["", "-1", "1e3", "x", "9" * 17])
def test_bad_rid(rid: str) -> None:
    b = parse_body(f"<body xmlns='{NS}' rid='{rid}'/>".encode(), 100)
    with pytest.raises(BoshError) as exc:
        _ = b.rid
    assert exc.value.condition is Condition.BAD_REQUEST


def test_version() -> None:
    assert parse_body(f"<body xmlns='{NS}' ver='1.11'/>".encode(), 100).version() == (1, 11)
    assert parse_body(f"<body xmlns='{NS}'/>".encode(), 100).version() is None
    with pytest.raises(BoshError):
        parse_body(f"<body xmlns='{NS}' ver='one'/>".encode(), 100).version()


def test_rid_window() -> None:
    w = RidWindow(100, requests=2)
    assert w.classify(101) == "next"
    assert w.classify(102) == "early"
    assert w.classify(103) == "bad"  # beyond the window
    assert w.classify(100) == "bad"  # the creation request's answer is not kept
    assert w.advance() == 101
    w.answered(101, b"<body/>")
    assert w.classify(101) == "repeat" and w.answer(101) == b"<body/>"
    for rid in (102, 103, 104):
        assert w.advance() == rid
        w.answered(rid, b"<body rid='%d'/>" % rid)
    # only the last 'requests' answers are kept
    assert w.classify(101) == "bad" and w.classify(102) == "bad"
    assert w.classify(103) == "repeat" and w.classify(104) == "repeat"


def test_response_bodies_are_well_formed() -> None:
    created = bosh.session_body(
        sid="s", wait=60, hold=1, requests=2, inactivity=60, polling=2, ver=(1, 11),
        host="localhost", stream_id="id", secure=True,
        payload=[b"<stream:features xmlns:stream='http://etherx.jabber.org/streams'/>"],
    )  # fmt: skip
    el = etree.fromstring(created)
    assert el.get("sid") == "s" and el.get("{urn:xmpp:xbosh}restartlogic") == "true"
    term = etree.fromstring(bosh.terminate_body(Condition.ITEM_NOT_FOUND))
    assert term.get("type") == "terminate" and term.get("condition") == "item-not-found"
    assert etree.fromstring(bosh.body([])).tag == bosh.BODY_TAG


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_parse_body_fuzz(data: bytes) -> None:
    """Arbitrary bytes: a Body or a BoshError, never another exception."""
    try:
        parse_body(data, 200)
    except BoshError:
        pass
