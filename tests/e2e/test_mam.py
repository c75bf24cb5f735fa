"""Message archives (XEP-0313) with real clients (slixmpp's ``xep_0313``),
on the embedded default and through the cluster: the archive has what was
said both ways, under the stanza-id (XEP-0359) the recipient saw; messages
kept offline are archived under the id they arrive with; and a 10,000
message archive pages forwards and backwards with the right counts."""

from __future__ import annotations

from typing import Any

from slixmpp.xmlstream import ET

from ..conftest import wait_until

MAM = ("xep_0030", "xep_0199", "xep_0059", "xep_0313")
SID = "{urn:xmpp:sid:0}stanza-id"


def _sid(m: Any, by: str) -> str | None:
    for el in m.xml.iter(SID):
        if el.get("by") == by:
            return el.get("id")
    return None


async def test_both_sides_are_archived_under_the_ids_clients_see(connect: Any) -> None:
    alice = await connect("alice@localhost/a", plugins=MAM)
    bob = await connect("bob@localhost/b", plugins=MAM)
    seen = []
    for i in range(3):
        bob.send_message(mto="alice@localhost", mbody=f"hello {i}", mtype="chat")
        m = await alice.next_message()
        assert m["body"] == f"hello {i}"
        seen.append(_sid(m, "alice@localhost"))
    assert all(seen) and len(set(seen)) == 3
    alice.send_message(mto="bob@localhost", mbody="and back", mtype="chat")
    await bob.next_message()
    iq = await alice.plugin["xep_0313"].retrieve(rsm={"max": 10}, timeout=10)
    results = iq["mam"]["results"]
    bodies = [r["mam_result"]["forwarded"]["stanza"]["body"] for r in results]
    assert bodies == ["hello 0", "hello 1", "hello 2", "and back"]
    assert [r["mam_result"]["id"] for r in results[:3]] == seen
    assert iq["mam_fin"]["complete"] in (True, "true")
    assert int(iq["mam_fin"]["rsm"]["count"]) == 4
    # the other side's archive, filtered by the peer
    iq = await bob.plugin["xep_0313"].retrieve(with_jid="alice@localhost", timeout=10)
    assert [r["mam_result"]["forwarded"]["stanza"]["body"] for r in iq["mam"]["results"]] == [
        "hello 0",
        "hello 1",
        "hello 2",
        "and back",
    ]


async def test_offline_messages_carry_their_archive_id(connect: Any, server: Any) -> None:
    from ..conftest import add_user

    await add_user(server, "carol")
    bob = await connect("bob@localhost/b", plugins=MAM)
    bob.send_message(mto="carol@localhost", mbody="while you were out", mtype="chat")

    async def stored() -> bool:
        return await server.store.count_offline("localhost", "carol") == 1

    await wait_until(stored, what="an offline message")
    carol = await connect("carol@localhost/c", plugins=MAM)
    m = await carol.next_message()
    sid = _sid(m, "carol@localhost")
    assert sid is not None
    iq = await carol.plugin["xep_0313"].retrieve(timeout=10)
    assert [r["mam_result"]["id"] for r in iq["mam"]["results"]] == [sid]


async def test_ten_thousand_messages_page_both_ways(connect: Any, server: Any) -> None:
    """Paging over 10,000 archived messages: every page's first/last/count
    right, all of them once, in order, forwards and backwards."""
    n = 10_000
    store = server.store
    # written straight into the archive's table, 500 rows a statement: the
    # paging is under test, not 10,000 sends (nor 10,000 round trips)
    rows = [
        (
            "dave@localhost",
            f"m{i:05d}",
            1_700_000_000.0 + i,
            "eve@localhost/e",
            "eve@localhost",
            i % 2 == 1,
            (
                f"<message xmlns='jabber:client' type='chat' to='dave@localhost'"
                f" from='eve@localhost/e'><body>{i}</body></message>"
            ).encode(),
        )
        for i in range(n)
    ]
    for start in range(0, n, 500):
        chunk = rows[start : start + 500]
        marks = ", ".join(
            "(" + ", ".join(f"${7 * k + c + 1}" for c in range(7)) + ")" for k in range(len(chunk))
        )
        await store.db.execute(
            "INSERT INTO archive_messages"
            " (archive, stanza_id, stamp, peer, peer_bare, outgoing, stanza)"
            f" VALUES {marks}",
            *(v for row in chunk for v in row),
        )
    dave = await connect("dave@localhost/d", plugins=MAM)
    mam = dave.plugin["xep_0313"]
    # the first page, by hand: first, last, index and count
    iq = await mam.retrieve(rsm={"max": 250}, timeout=30)
    fin = iq["mam_fin"]["rsm"]
    assert (fin["first"], fin["last"], int(fin["count"])) == ("m00000", "m00249", n)
    assert int(fin["first_index"]) == 0
    assert iq["mam_fin"]["complete"] not in (True, "true")
    # the last page: <before/>
    last = dave.make_iq_set()
    last.append(
        ET.fromstring(
            "<query xmlns='urn:xmpp:mam:2'><set xmlns='http://jabber.org/protocol/rsm'>"
            "<max>250</max><before/></set></query>"
        )
    )
    iq = await last.send(timeout=30)
    rsm = "{http://jabber.org/protocol/rsm}"
    first = iq.xml.find(f".//{rsm}first")
    assert (first.text, iq.xml.findtext(f".//{rsm}last")) == ("m09750", "m09999")
    assert first.get("index") is None  # see protocol.fin
    assert iq.xml.findtext(f".//{rsm}count") == str(n)
    # everything, forwards then backwards (slixmpp pages through RSM itself)
    got = [m["mam_result"]["id"] async for m in mam.iterate(rsm={"max": 250})]
    assert got == [f"m{i:05d}" for i in range(n)]
    got = [m["mam_result"]["id"] async for m in mam.iterate(rsm={"max": 250}, reverse=True)]
    assert got == [f"m{i:05d}" for i in reversed(range(n))]
