"""XEP-0136 (read-only) over the XEP-0313 archive: collections (one bare
JID, one UTC day) listed with RSM, a collection retrieved with ``secs``
that add up, and the refusals."""

from __future__ import annotations

import pytest
from lxml import etree

from services.core.storage import ArchivedMessage
from services.features import mam
from services.features.mam import legacy
from services.xmpp.jid import JID

from .conftest import HOST, Harness, MakeHarness, assert_error, assert_result, el

A = f"{{{legacy.ARCHIVE}}}"
RSM = "{http://jabber.org/protocol/rsm}"
DAY1 = 1_700_000_000.0  # 2023-11-14T22:13:20Z
DAY2 = DAY1 + 86400


@pytest.fixture
async def h(make_harness: MakeHarness) -> Harness:
    return await make_harness(features=[mam.FEATURE])


async def seed(h: Harness) -> JID:
    alice = await h.login(f"alice@{HOST}/a")
    rows = [
        (DAY1 + 0.4, "bob@x.example/phone", False, "hi"),
        (DAY1 + 11.2, "bob@x.example/phone", True, "hello"),
        (DAY1 + 12.0, "carol@x.example/c", False, "hey"),
        (DAY1 + 20.9, "bob@x.example/desk", False, "again"),
        (DAY2 + 5.0, "bob@x.example/phone", True, "next day"),
    ]
    for i, (stamp, peer, out, body) in enumerate(rows):
        stanza = f"<message xmlns='jabber:client' type='chat'><body>{body}</body></message>"
        await h.store.archive_message(
            f"alice@{HOST}", ArchivedMessage(f"id{i}", stamp, peer, out, stanza.encode())
        )
    return alice


def chats(q: etree._Element) -> list[tuple[str | None, str | None]]:
    return [(c.get("with"), c.get("start")) for c in q.iter(f"{A}chat")]


async def test_list_collections(h: Harness) -> None:
    alice = await seed(h)
    q = assert_result(await h.iq(alice, "get", el(f"<list xmlns='{legacy.ARCHIVE}'/>")))
    assert q is not None
    assert chats(q) == [
        ("bob@x.example", "2023-11-14T22:13:20Z"),
        ("carol@x.example", "2023-11-14T22:13:32Z"),
        ("bob@x.example", "2023-11-15T22:13:25Z"),
    ]
    # with and a time range
    q = assert_result(
        await h.iq(
            alice,
            "get",
            el(
                f"<list xmlns='{legacy.ARCHIVE}' with='bob@x.example'"
                " start='2023-11-15T00:00:00Z'/>"
            ),
        )
    )
    assert q is not None and chats(q) == [("bob@x.example", "2023-11-15T22:13:25Z")]
    # RSM: two, then the rest after the last id
    page = "<set xmlns='http://jabber.org/protocol/rsm'><max>2</max></set>"
    q = assert_result(await h.iq(alice, "get", el(f"<list xmlns='{legacy.ARCHIVE}'>{page}</list>")))
    assert q is not None and len(chats(q)) == 2 and q.findtext(f"{RSM}set/{RSM}count") == "3"
    last = q.findtext(f"{RSM}set/{RSM}last")
    page = f"<set xmlns='http://jabber.org/protocol/rsm'><max>2</max><after>{last}</after></set>"
    q = assert_result(await h.iq(alice, "get", el(f"<list xmlns='{legacy.ARCHIVE}'>{page}</list>")))
    assert q is not None and chats(q) == [("bob@x.example", "2023-11-15T22:13:25Z")]


async def test_retrieve_a_collection(h: Harness) -> None:
    alice = await seed(h)
    ask = f"<retrieve xmlns='{legacy.ARCHIVE}' with='bob@x.example' start='2023-11-14T22:13:20Z'/>"
    chat = assert_result(await h.iq(alice, "get", el(ask)))
    assert chat is not None and chat.tag == f"{A}chat"
    got = [
        (e.tag.split("}")[1], e.get("secs"), e.findtext(f"{A}body"))
        for e in chat
        if e.tag != f"{RSM}set"
    ]
    # 0.4 s, 11.2 s and 20.9 s after the start: the secs add up to the whole seconds
    assert got == [("from", "0", "hi"), ("to", "11", "hello"), ("from", "10", "again")]
    assert chat.findtext(f"{RSM}set/{RSM}count") == "3"
    # a full JID matches that resource only
    ask = (
        f"<retrieve xmlns='{legacy.ARCHIVE}' with='bob@x.example/desk'"
        " start='2023-11-14T22:13:20Z'><set xmlns='http://jabber.org/protocol/rsm'>"
        "<max>5</max></set></retrieve>"
    )
    chat = assert_result(await h.iq(alice, "get", el(ask)))
    assert chat is not None and [e.findtext(f"{A}body") for e in chat.iter(f"{A}from")] == ["again"]


@pytest.mark.parametrize(
    ("xml", "condition"),
    [
        (f"<retrieve xmlns='{legacy.ARCHIVE}' start='2023-11-14T22:13:20Z'/>", "bad-request"),
        (f"<retrieve xmlns='{legacy.ARCHIVE}' with='bob@x.example'/>", "bad-request"),
        (
            f"<retrieve xmlns='{legacy.ARCHIVE}' with='dave@x.example'"
            " start='2023-11-14T22:13:20Z'/>",
            "item-not-found",
        ),
        (f"<list xmlns='{legacy.ARCHIVE}' start='soon'/>", "bad-request"),
        (
            f"<list xmlns='{legacy.ARCHIVE}'><set xmlns='http://jabber.org/protocol/rsm'>"
            "<after>nope</after></set></list>",
            "item-not-found",
        ),
    ],
)
async def test_refusals(h: Harness, xml: str, condition: str) -> None:
    alice = await seed(h)
    assert_error(await h.iq(alice, "get", el(xml)), condition)


async def test_read_only_and_owner_only(h: Harness) -> None:
    alice = await seed(h)
    save = f"<save xmlns='{legacy.ARCHIVE}'><chat with='bob@x.example' start='2023-11-14T22:13:20Z'/></save>"
    assert_error(await h.iq(alice, "set", el(save)), "feature-not-implemented")
    bob = await h.login(f"bob@{HOST}/b")
    reply = await h.iq(bob, "get", el(f"<list xmlns='{legacy.ARCHIVE}'/>"), f"alice@{HOST}")
    assert_error(reply, "forbidden")
