"""services.storage.store.Store: every Storage method, on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from services.core.storage import (
    LastActivity,
    PubsubItem,
    RosterItem,
    ScramCredentials,
    Storage,
)
from services.platform.migrate import migrate
from services.storage.store import Store, UnknownAccountError, UnknownPubsubNodeError
from tests.platform import temp_database_url

H = "example.org"
OTHER_HOST = "example.net"


def creds(hash_name: str = "SHA-256", seed: int = 1) -> ScramCredentials:
    return ScramCredentials(
        hash_name=hash_name,
        salt=bytes([seed]) * 16,
        iterations=4096 + seed,
        stored_key=bytes([seed, 0xFF, 0x00]) * 8,
        server_key=bytes([0x00, seed]) * 16,
    )


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    async with temp_database_url(request.param, tmp_path) as url:
        s = await Store.open(url)
        try:
            yield s
        finally:
            await s.close()


def test_store_implements_storage() -> None:
    def check(s: Store) -> Storage:  # checked by mypy
        return s

    for name in dir(Storage):
        if not name.startswith("_"):
            assert callable(getattr(Store, name)), name


# ----------------------------------------------------------------------- schema


async def test_migrations_idempotent(store: Store) -> None:
    assert await migrate(store.db) == []
    assert await migrate(store.db) == []


# --------------------------------------------------------------------- accounts


async def test_create_get_duplicate(store: Store) -> None:
    before = time.time()
    assert await store.create_account(H, "alice", [creds("SHA-1", 1), creds("SHA-256", 2)])
    assert not await store.create_account(H, "alice", [creds("SHA-256", 9)])
    account = await store.get_account(H, "alice")
    assert account is not None
    assert (account.host, account.username, account.disabled) == (H, "alice", False)
    assert before - 1 <= account.created_at <= time.time() + 1
    # the duplicate did not touch the credentials
    assert await store.get_credentials(H, "alice", "SHA-256") == creds("SHA-256", 2)
    assert await store.get_credentials(H, "alice", "SHA-1") == creds("SHA-1", 1)
    assert await store.get_credentials(H, "alice", "SHA-512") is None
    assert await store.get_account(H, "bob") is None
    assert await store.get_account(OTHER_HOST, "alice") is None
    # same username, other host: a different account
    assert await store.create_account(OTHER_HOST, "alice", [])
    assert await store.get_credentials(OTHER_HOST, "alice", "SHA-256") is None


async def test_credentials(store: Store) -> None:
    assert await store.create_account(H, "alice", [creds("SHA-1", 1), creds("SHA-256", 2)])
    # replaced as a whole: the old SHA-1 one goes
    assert await store.set_credentials(H, "alice", [creds("SHA-256", 3)])
    assert await store.get_credentials(H, "alice", "SHA-256") == creds("SHA-256", 3)
    assert await store.get_credentials(H, "alice", "SHA-1") is None
    assert await store.set_credentials(H, "alice", [creds("SHA-1", 4), creds("SHA-256", 5)])
    assert await store.get_credentials(H, "alice", "SHA-1") == creds("SHA-1", 4)
    assert await store.get_credentials(H, "alice", "SHA-256") == creds("SHA-256", 5)
    assert not await store.set_credentials(H, "nobody", [creds()])
    assert await store.get_credentials(H, "nobody", "SHA-256") is None


async def test_get_login(store: Store) -> None:
    assert await store.create_account(H, "alice", [creds("SHA-1", 1), creds("SHA-256", 2)])
    assert await store.create_account(OTHER_HOST, "alice", [creds("SHA-1", 7)])
    assert await store.get_login(H, "alice", "SHA-256") == (creds("SHA-256", 2), False)
    assert await store.get_login(H, "alice", "SHA-1") == (creds("SHA-1", 1), False)
    assert await store.get_login(OTHER_HOST, "alice", "SHA-1") == (creds("SHA-1", 7), False)
    assert await store.get_login(H, "alice", "SHA-512") == (None, False)
    assert await store.get_login(H, "nobody", "SHA-1") == (None, False)
    assert await store.set_disabled(H, "alice", True)
    assert await store.get_login(H, "alice", "SHA-1") == (creds("SHA-1", 1), True)
    assert await store.get_login(H, "alice", "SHA-512") == (None, True)


async def test_disable(store: Store) -> None:
    assert await store.create_account(H, "alice", [creds()])
    assert await store.set_disabled(H, "alice", True)
    account = await store.get_account(H, "alice")
    assert account is not None and account.disabled is True
    assert await store.set_disabled(H, "alice", False)
    account = await store.get_account(H, "alice")
    assert account is not None and account.disabled is False
    assert not await store.set_disabled(H, "nobody", True)


async def test_list_and_count(store: Store) -> None:
    names = ["carol", "alice", "bob", "al_ex", "a%b", "dave", "xalx"]
    for name in names:
        assert await store.create_account(H, name, [creds()])
    assert await store.create_account(OTHER_HOST, "alfred", [creds()])
    assert await store.count_accounts(H) == len(names)
    assert await store.count_accounts(OTHER_HOST) == 1
    assert await store.count_accounts("nowhere.example") == 0

    listed = await store.list_accounts(H)
    assert [a.username for a in listed] == sorted(names)
    assert all(a.host == H for a in listed)
    assert [a.username for a in await store.list_accounts(H, limit=2)] == ["a%b", "al_ex"]
    assert [a.username for a in await store.list_accounts(H, limit=2, offset=2)] == [
        "alice",
        "bob",
    ]
    assert await store.list_accounts(H, offset=100) == []

    async def search(term: str) -> list[str]:
        return [a.username for a in await store.list_accounts(H, search=term)]

    assert await search("al") == ["al_ex", "alice", "xalx"]
    assert await search("AL") == ["al_ex", "alice", "xalx"]
    # LIKE wildcards are literal
    assert await search("_") == ["al_ex"]
    assert await search("%") == ["a%b"]
    assert await search("l_x") == []
    assert await search("\\") == []
    assert await search("zzz") == []
    assert await search("") == sorted(names)
    assert [a.username for a in await store.list_accounts(H, search="a", limit=2, offset=1)] == [
        "al_ex",
        "alice",
    ]


async def test_delete_account_removes_everything(store: Store) -> None:
    for name in ("alice", "bob"):
        assert await store.create_account(H, name, [creds()])
        await store.put_roster_item(H, name, RosterItem(jid="x@example.com", groups=("G",)))
        await store.store_offline(H, name, b"<message/>", 1.0, "k1")
        await store.set_vcard(H, name, b"<vCard/>")
        await store.set_private(H, name, "{ns}q", b"<q/>")
        await store.add_blocks(H, name, ["spam@example.com"])
        await store.set_last_activity(H, name, 5.0, "bye")

    assert await store.delete_account(H, "alice")
    assert not await store.delete_account(H, "alice")
    assert not await store.delete_account(H, "nobody")
    assert await store.get_account(H, "alice") is None
    assert await store.get_credentials(H, "alice", "SHA-256") is None
    assert await store.get_roster(H, "alice") == (0, [])
    assert await store.count_offline(H, "alice") == 0
    assert await store.get_vcard(H, "alice") is None
    assert await store.get_private(H, "alice", "{ns}q") is None
    assert await store.get_blocklist(H, "alice") == []
    assert await store.get_last_activity(H, "alice") is None
    for table in ("scram_credentials", "roster_items", "offline_messages", "vcards"):
        n = await store.db.fetchval(f"SELECT COUNT(*) FROM {table} WHERE username = $1", "alice")
        assert n == 0, table

    # bob is untouched
    assert await store.get_account(H, "bob") is not None
    assert (await store.get_roster(H, "bob"))[0] == 1
    assert await store.count_offline(H, "bob") == 1
    assert await store.get_vcard(H, "bob") == b"<vCard/>"
    assert await store.get_blocklist(H, "bob") == ["spam@example.com"]

    # a new account of the same name starts empty
    assert await store.create_account(H, "alice", [creds()])
    assert await store.get_roster(H, "alice") == (0, [])
    assert await store.fetch_offline(H, "alice") == []


# ----------------------------------------------------------------------- roster


async def test_roster(store: Store) -> None:
    assert await store.create_account(H, "alice", [creds()])
    assert await store.get_roster(H, "alice") == (0, [])

    carol = RosterItem(
        jid="carol@example.com",
        name="Carol",
        subscription="both",
        groups=("Friends", "Wörk"),
    )
    bob = RosterItem(
        jid="bob@example.com",
        subscription="none",
        ask=True,
        pending_in=True,
        approved=True,
        pending_in_stanza=b"<presence type='subscribe'/>",
    )
    assert await store.put_roster_item(H, "alice", carol) == 1
    assert await store.put_roster_item(H, "alice", bob) == 2
    assert await store.get_roster(H, "alice") == (2, [bob, carol])
    assert await store.get_roster_item(H, "alice", "carol@example.com") == carol
    got = await store.get_roster_item(H, "alice", "bob@example.com")
    assert got == bob
    assert got is not None and got.ask is True and got.pending_in_stanza is not None
    assert await store.get_roster_item(H, "alice", "nobody@example.com") is None

    # update in place
    carol2 = RosterItem(jid="carol@example.com", name=None, subscription="to", groups=())
    assert await store.put_roster_item(H, "alice", carol2) == 3
    assert await store.get_roster(H, "alice") == (3, [bob, carol2])

    # delete bumps too, also of an absent item
    assert await store.delete_roster_item(H, "alice", "bob@example.com") == 4
    assert await store.get_roster(H, "alice") == (4, [carol2])
    assert await store.delete_roster_item(H, "alice", "bob@example.com") == 5
    assert await store.delete_roster_item(H, "alice", "carol@example.com") == 6
    assert await store.get_roster(H, "alice") == (6, [])

    # rosters are per user
    assert await store.create_account(H, "dave", [creds()])
    assert await store.get_roster(H, "dave") == (0, [])


async def test_roster_entries_for(store: Store) -> None:
    for name in ("alice", "bob", "carol"):
        assert await store.create_account(H, name, [])
    assert await store.create_account(OTHER_HOST, "dave", [])
    alice = f"alice@{H}"
    await store.put_roster_item(H, "bob", RosterItem(jid=alice, subscription="from"))
    await store.put_roster_item(OTHER_HOST, "dave", RosterItem(jid=alice, subscription="both"))
    await store.put_roster_item(H, "carol", RosterItem(jid=f"bob@{H}", subscription="to"))
    await store.set_last_activity(H, "bob", 1234.5, "away")
    got = {(h, u): (i, last) for h, u, i, last in await store.roster_entries_for(alice)}
    assert {k: (i.jid, i.subscription) for k, (i, _) in got.items()} == {
        (H, "bob"): (alice, "from"),
        (OTHER_HOST, "dave"): (alice, "both"),
    }
    assert got[(H, "bob")][1] == LastActivity(stamp=1234.5, status="away")
    assert got[(OTHER_HOST, "dave")][1] is None
    assert await store.roster_entries_for(f"nobody@{H}") == []


async def test_roster_unknown_account(store: Store) -> None:
    with pytest.raises(UnknownAccountError):
        await store.put_roster_item(H, "nobody", RosterItem(jid="x@example.com"))
    with pytest.raises(UnknownAccountError):
        await store.delete_roster_item(H, "nobody", "x@example.com")
    assert await store.get_roster(H, "nobody") == (0, [])
    assert await store.get_roster_item(H, "nobody", "x@example.com") is None


async def test_roster_concurrent_versions(store: Store) -> None:
    assert await store.create_account(H, "alice", [creds()])
    versions = await asyncio.gather(
        *(store.put_roster_item(H, "alice", RosterItem(jid=f"c{i}@example.com")) for i in range(15))
    )
    assert sorted(versions) == list(range(1, 16))
    version, items = await store.get_roster(H, "alice")
    assert version == 15
    assert [i.jid for i in items] == sorted(f"c{i}@example.com" for i in range(15))


async def test_update_roster_item_compare_and_set(store: Store) -> None:
    assert await store.create_account(H, "alice", [creds()])
    bob = "bob@example.com"
    asked = RosterItem(jid=bob, ask=True)
    # insert: expected None (absent)
    assert await store.update_roster_item(H, "alice", bob, None, asked) == 1
    # a second insert finds the item: nothing written, version kept
    assert await store.update_roster_item(H, "alice", bob, None, RosterItem(jid=bob)) is None
    assert await store.get_roster(H, "alice") == (1, [asked])
    # update from what is stored
    both = RosterItem(jid=bob, subscription="both", groups=("Friends",))
    assert await store.update_roster_item(H, "alice", bob, asked, both) == 2
    # a stale expectation (the item before the last write) writes nothing
    assert await store.update_roster_item(H, "alice", bob, asked, RosterItem(jid=bob)) is None
    stale = replace(both, groups=("Other",))  # any field differing counts
    assert await store.update_roster_item(H, "alice", bob, stale, None) is None
    assert await store.get_roster(H, "alice") == (2, [both])
    # delete (new None) from what is stored
    assert await store.update_roster_item(H, "alice", bob, both, None) == 3
    assert await store.get_roster(H, "alice") == (3, [])
    assert await store.update_roster_item(H, "alice", bob, both, None) is None
    # pending_in_stanza takes part in the comparison too
    pending = RosterItem(jid=bob, pending_in=True, pending_in_stanza=b"<presence/>")
    assert await store.update_roster_item(H, "alice", bob, None, pending) == 4
    other = replace(pending, pending_in_stanza=b"<presence type='subscribe'/>")
    assert await store.update_roster_item(H, "alice", bob, other, None) is None
    assert await store.update_roster_item(H, "alice", bob, pending, None) == 5

    with pytest.raises(ValueError):
        await store.update_roster_item(H, "alice", bob, None, RosterItem(jid="carol@example.com"))
    with pytest.raises(UnknownAccountError):
        await store.update_roster_item(H, "nobody", bob, None, asked)


async def test_update_roster_item_concurrent_writers_lose_nothing(store: Store) -> None:
    """Read-modify-write loops racing on one item: with the compare-and-set
    every increment lands; the version counts the writes that went through."""
    assert await store.create_account(H, "alice", [creds()])
    jid = "counter@example.com"
    assert await store.update_roster_item(H, "alice", jid, None, RosterItem(jid=jid, name="0"))
    conflicts = 0

    async def increment() -> None:
        nonlocal conflicts
        while True:
            old = await store.get_roster_item(H, "alice", jid)
            assert old is not None and old.name is not None
            await asyncio.sleep(0)  # let the others read the same item
            new = replace(old, name=str(int(old.name) + 1))
            if await store.update_roster_item(H, "alice", jid, old, new) is not None:
                return
            conflicts += 1

    await asyncio.gather(*(increment() for _ in range(12)))
    version, items = await store.get_roster(H, "alice")
    assert items == [RosterItem(jid=jid, name="12")]
    assert version == 13  # the insert and 12 increments; conflicts bumped nothing
    assert conflicts > 0  # the race did happen


# ------------------------------------------------------------- offline messages


async def test_offline(store: Store) -> None:
    assert await store.create_account(H, "alice", [creds()])
    assert await store.create_account(H, "bob", [creds()])
    assert await store.count_offline(H, "alice") == 0
    assert await store.fetch_offline(H, "alice") == []
    ids = [
        await store.store_offline(H, "alice", f"<message id='{i}'/>".encode(), 100.0 + i, f"k{i}")
        for i in range(5)
    ]
    assert ids == sorted(ids) and len(set(ids)) == 5
    # the same key under another user is another message
    await store.store_offline(H, "bob", b"<message to='bob'/>", 1.5, "k0")
    assert await store.count_offline(H, "alice") == 5
    assert await store.count_offline(H, "bob") == 1

    fetched = await store.fetch_offline(H, "alice")
    assert [m.id for m in fetched] == ids
    assert [m.stanza for m in fetched] == [f"<message id='{i}'/>".encode() for i in range(5)]
    assert [m.stamp for m in fetched] == [100.0 + i for i in range(5)]
    assert await store.fetch_offline(H, "alice") == fetched  # reading removes nothing

    # deleting by id: only those, only the user's, and again is a no-op
    await store.delete_offline(H, "alice", [ids[0], ids[2]])
    await store.delete_offline(H, "alice", [ids[0], ids[2]])
    await store.delete_offline(H, "bob", ids)
    assert [m.id for m in await store.fetch_offline(H, "alice")] == [ids[1], ids[3], ids[4]]
    assert await store.count_offline(H, "bob") == 1
    await store.delete_offline(H, "alice", [])
    await store.delete_offline(H, "alice", [ids[1], ids[3], ids[4]])
    assert await store.count_offline(H, "alice") == 0

    # ids keep increasing after the queue emptied
    later = await store.store_offline(H, "alice", b"<message/>", 200.0, "later")
    assert later > ids[-1]

    with pytest.raises(UnknownAccountError):
        await store.store_offline(H, "nobody", b"<message/>", 1.0, "x")
    assert await store.count_offline(H, "nobody") == 0


async def test_offline_same_key_stores_once(store: Store) -> None:
    """A retried store_offline (same key) keeps one row and answers its id."""
    assert await store.create_account(H, "alice", [creds()])
    first = await store.store_offline(H, "alice", b"<message>1</message>", 1.0, "uuid-1")
    again = await store.store_offline(H, "alice", b"<message>1</message>", 1.0, "uuid-1")
    assert again == first
    both = await asyncio.gather(
        *(store.store_offline(H, "alice", b"<message>2</message>", 2.0, "uuid-2") for _ in range(4))
    )
    assert len(set(both)) == 1
    assert [m.stanza for m in await store.fetch_offline(H, "alice")] == [
        b"<message>1</message>",
        b"<message>2</message>",
    ]


# ------------------------------------------------------- vcard, private, blocks


async def test_vcard(store: Store) -> None:
    assert await store.create_account(H, "alice", [creds()])
    assert await store.get_vcard(H, "alice") is None
    await store.set_vcard(H, "alice", b"<vCard xmlns='vcard-temp'><FN>A</FN></vCard>")
    assert await store.get_vcard(H, "alice") == b"<vCard xmlns='vcard-temp'><FN>A</FN></vCard>"
    await store.set_vcard(H, "alice", b"<vCard xmlns='vcard-temp'/>")
    assert await store.get_vcard(H, "alice") == b"<vCard xmlns='vcard-temp'/>"
    with pytest.raises(UnknownAccountError):
        await store.set_vcard(H, "nobody", b"<vCard/>")
    assert await store.get_vcard(H, "nobody") is None


async def test_private(store: Store) -> None:
    assert await store.create_account(H, "alice", [creds()])
    key1, key2 = "{storage:bookmarks}storage", "{jabber:iq:private:x}x"
    assert await store.get_private(H, "alice", key1) is None
    await store.set_private(H, "alice", key1, b"<storage/>")
    await store.set_private(H, "alice", key2, b"<x/>")
    assert await store.get_private(H, "alice", key1) == b"<storage/>"
    await store.set_private(H, "alice", key1, b"<storage><conference/></storage>")
    assert await store.get_private(H, "alice", key1) == b"<storage><conference/></storage>"
    assert await store.get_private(H, "alice", key2) == b"<x/>"
    with pytest.raises(UnknownAccountError):
        await store.set_private(H, "nobody", key1, b"<storage/>")


async def test_blocklist(store: Store) -> None:
    assert await store.create_account(H, "alice", [creds()])
    assert await store.get_blocklist(H, "alice") == []
    await store.add_blocks(H, "alice", ["spam@example.com", "evil.example", "x@y/res"])
    await store.add_blocks(H, "alice", ["spam@example.com", "more@example.com"])
    await store.add_blocks(H, "alice", [])
    assert await store.get_blocklist(H, "alice") == sorted(
        ["spam@example.com", "evil.example", "x@y/res", "more@example.com"]
    )
    await store.remove_blocks(H, "alice", ["evil.example", "not-there@example.com"])
    assert await store.get_blocklist(H, "alice") == [
        "more@example.com",
        "spam@example.com",
        "x@y/res",
    ]
    await store.remove_blocks(H, "alice", [])
    assert len(await store.get_blocklist(H, "alice")) == 3
    await store.remove_blocks(H, "alice", None)
    assert await store.get_blocklist(H, "alice") == []
    await store.remove_blocks(H, "nobody", None)
    await store.remove_blocks(H, "nobody", ["a@b"])
    with pytest.raises(UnknownAccountError):
        await store.add_blocks(H, "nobody", ["a@b"])


async def test_last_activity(store: Store) -> None:
    assert await store.create_account(H, "alice", [creds()])
    assert await store.get_last_activity(H, "alice") is None
    await store.set_last_activity(H, "alice", 1234.5, "Gone fishing")
    assert await store.get_last_activity(H, "alice") == LastActivity(1234.5, "Gone fishing")
    await store.set_last_activity(H, "alice", 2000.25, None)
    assert await store.get_last_activity(H, "alice") == LastActivity(2000.25, None)
    with pytest.raises(UnknownAccountError):
        await store.set_last_activity(H, "nobody", 1.0, None)


# ------------------------------------------------------------------ persistence


async def test_sqlite_persists_across_reopen(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path}/data/xmppd.db"
    store = await Store.open(url)
    try:
        assert await store.create_account(H, "alice", [creds("SHA-256", 7)])
        assert await store.put_roster_item(H, "alice", RosterItem(jid="b@x", groups=("G",))) == 1
        await store.store_offline(H, "alice", b"<message/>", 3.0, "k1")
        await store.set_vcard(H, "alice", b"<vCard/>")
        await store.set_private(H, "alice", "{a}b", b"<b xmlns='a'/>")
        await store.add_blocks(H, "alice", ["spam@x"])
        await store.set_last_activity(H, "alice", 9.0, "away")
        assert await store.set_disabled(H, "alice", True)
    finally:
        await store.close()

    store = await Store.open(url)
    try:
        assert await migrate(store.db) == []
        account = await store.get_account(H, "alice")
        assert account is not None and account.disabled
        assert await store.get_credentials(H, "alice", "SHA-256") == creds("SHA-256", 7)
        assert await store.get_roster(H, "alice") == (1, [RosterItem(jid="b@x", groups=("G",))])
        assert await store.put_roster_item(H, "alice", RosterItem(jid="c@x")) == 2
        messages = await store.fetch_offline(H, "alice")
        assert [(m.stanza, m.stamp) for m in messages] == [(b"<message/>", 3.0)]
        assert await store.get_vcard(H, "alice") == b"<vCard/>"
        assert await store.get_private(H, "alice", "{a}b") == b"<b xmlns='a'/>"
        assert await store.get_blocklist(H, "alice") == ["spam@x"]
        assert await store.get_last_activity(H, "alice") == LastActivity(9.0, "away")
    finally:
        await store.close()


async def test_muc_rooms_and_history(store: Store) -> None:
    D = "conference.localhost"
    assert await store.get_muc_room(D, "lobby") is None
    await store.put_muc_room(D, "lobby", '{"v":1}')
    await store.put_muc_room(D, "lobby", '{"v":2}')  # an upsert: one row
    await store.put_muc_room(D, "attic", '{"v":1}')
    await store.put_muc_room("conference.other", "lobby", '{"v":9}')
    assert await store.get_muc_room(D, "lobby") == '{"v":2}'
    assert await store.muc_rooms(D) == [("attic", '{"v":1}'), ("lobby", '{"v":2}')]
    for i in range(5):
        await store.add_muc_history(D, "lobby", f"k{i}", 100.0 + i, b"<m%d/>" % i, keep=3)
    # a retried store (the same key) keeps one row
    await store.add_muc_history(D, "lobby", "k4", 104.0, b"<m4/>", keep=3)
    assert await store.get_muc_history(D, "lobby") == [
        (102.0, b"<m2/>"), (103.0, b"<m3/>"), (104.0, b"<m4/>"),
    ]  # fmt: skip
    await store.delete_muc_room(D, "lobby")
    assert await store.get_muc_room(D, "lobby") is None
    assert await store.get_muc_history(D, "lobby") == []
    assert await store.get_muc_room("conference.other", "lobby") == '{"v":9}'
    await store.delete_muc_room(D, "lobby")  # deleting again is harmless


# ------------------------------------------------------------ publish-subscribe

PS = "pubsub.example.org"


def pitem(item_id: str, stamp: float = 1.0, payload: bytes | None = None) -> PubsubItem:
    return PubsubItem(
        id=item_id,
        publisher=f"alice@{H}/phone",
        stamp=stamp,
        payload=b"<entry>%s</entry>" % item_id.encode() if payload is None else payload,
    )


async def item_ids(store: Store, service: str, node: str, **kw: Any) -> list[str]:
    return [i.id for i in await store.get_pubsub_items(service, node, **kw)]


async def test_pubsub_nodes_state_round_trip(store: Store) -> None:
    assert await store.pubsub_nodes(PS) == []
    assert await store.get_pubsub_node(PS, "news") is None
    state = json.dumps({"config": {"pubsub#title": "Nouvelles ☃"}, "subs": [["a@b", "x"]]})
    await store.put_pubsub_node(PS, "news", '{"v":1}')
    await store.put_pubsub_node(PS, "news", state)  # an upsert: one row, the new state
    await store.put_pubsub_node(PS, "Zeta", "{}")
    await store.put_pubsub_node(PS, "alpha", "{}")
    await store.put_pubsub_node("pubsub.example.net", "news", '{"other":true}')
    assert await store.get_pubsub_node(PS, "news") == state
    assert json.loads(state) == json.loads(await store.get_pubsub_node(PS, "news") or "")
    # code point order ("Z" < "a"), whatever the database's collation
    assert await store.pubsub_nodes(PS) == [("Zeta", "{}"), ("alpha", "{}"), ("news", state)]
    assert await store.pubsub_nodes("pubsub.example.net") == [("news", '{"other":true}')]
    assert await store.pubsub_nodes("pubsub.nowhere") == []


async def test_pubsub_items_newest_first_and_replace_by_id(store: Store) -> None:
    await store.put_pubsub_node(PS, "news", "{}")
    for n, item_id in enumerate(["a", "b", "c"]):
        await store.put_pubsub_item(PS, "news", pitem(item_id, 10.0 + n), keep=0)
    assert await item_ids(store, PS, "news") == ["c", "b", "a"]
    # publishing "a" again replaces it, and it becomes the newest
    new_a = pitem("a", 20.0, b"<entry>a, again</entry>")
    await store.put_pubsub_item(PS, "news", new_a, keep=0)
    items = await store.get_pubsub_items(PS, "news")
    assert [i.id for i in items] == ["a", "c", "b"]
    assert items[0] == new_a  # every field stored, the old payload gone
    assert items[1] == pitem("c", 12.0)
    # an empty payload round-trips as b""
    await store.put_pubsub_item(PS, "news", pitem("empty", 21.0, b""), keep=0)
    assert (await store.get_pubsub_items(PS, "news", ids=["empty"]))[0].payload == b""
    # an item id is per node
    await store.put_pubsub_node(PS, "other", "{}")
    await store.put_pubsub_item(PS, "other", pitem("b", 30.0), keep=0)
    assert await item_ids(store, PS, "news") == ["empty", "a", "c", "b"]
    assert await item_ids(store, PS, "other") == ["b"]


async def test_pubsub_items_trimmed_to_keep(store: Store) -> None:
    await store.put_pubsub_node(PS, "news", "{}")
    await store.put_pubsub_node(PS, "other", "{}")
    await store.put_pubsub_item(PS, "other", pitem("o1"), keep=0)
    for n in range(5):
        await store.put_pubsub_item(PS, "news", pitem(f"i{n}", float(n)), keep=3)
    assert await item_ids(store, PS, "news") == ["i4", "i3", "i2"]
    # a republished id is the newest, so trimming keeps it and drops the oldest
    await store.put_pubsub_item(PS, "news", pitem("i2", 9.0), keep=3)
    assert await item_ids(store, PS, "news") == ["i2", "i4", "i3"]
    await store.put_pubsub_item(PS, "news", pitem("i5", 10.0), keep=3)
    assert await item_ids(store, PS, "news") == ["i5", "i2", "i4"]
    # PEP's usual max_items=1: the last one only
    await store.put_pubsub_item(PS, "news", pitem("i6", 11.0), keep=1)
    assert await item_ids(store, PS, "news") == ["i6"]
    # keep <= 0: no limit
    for n in range(7, 10):
        await store.put_pubsub_item(PS, "news", pitem(f"i{n}", float(n)), keep=-1)
    assert await item_ids(store, PS, "news") == ["i9", "i8", "i7", "i6"]
    # trimming is per node
    assert await item_ids(store, PS, "other") == ["o1"]


async def test_pubsub_items_ids_and_limit(store: Store) -> None:
    await store.put_pubsub_node(PS, "news", "{}")
    for n in range(6):
        await store.put_pubsub_item(PS, "news", pitem(f"i{n}", float(n)), keep=0)
    assert await item_ids(store, PS, "news", limit=2) == ["i5", "i4"]
    assert await item_ids(store, PS, "news", limit=100) == [f"i{n}" for n in range(5, -1, -1)]
    assert await item_ids(store, PS, "news", limit=0) == []
    # only those asked for, newest first whatever the order asked, each once
    asked = ["i1", "i4", "gone", "i1", "i2"]
    assert await item_ids(store, PS, "news", ids=asked) == ["i4", "i2", "i1"]
    assert await item_ids(store, PS, "news", ids=asked, limit=2) == ["i4", "i2"]
    assert await item_ids(store, PS, "news", ids=[]) == []
    assert await item_ids(store, PS, "news", ids=["gone"]) == []
    items = await store.get_pubsub_items(PS, "news", ids=["i3"])
    assert items == [pitem("i3", 3.0)]
    # more ids than one statement takes (chunks) still come back newest first
    many = [f"x{n}" for n in range(1200)] + ["i0", "i5"]
    assert await item_ids(store, PS, "news", ids=many) == ["i5", "i0"]
    # unknown nodes and services hold nothing
    assert await store.get_pubsub_items(PS, "nothing") == []
    assert await store.get_pubsub_items("pubsub.nowhere", "news", ids=["i1"]) == []


async def test_put_pubsub_item_needs_the_node(store: Store) -> None:
    with pytest.raises(UnknownPubsubNodeError) as err:
        await store.put_pubsub_item(PS, "missing", pitem("a"), keep=0)
    assert isinstance(err.value, LookupError)
    assert (err.value.service, err.value.node) == (PS, "missing")
    assert await store.get_pubsub_items(PS, "missing") == []
    assert await store.get_pubsub_node(PS, "missing") is None  # not created either
    # a node of that name on another service does not count
    await store.put_pubsub_node("pubsub.example.net", "missing", "{}")
    with pytest.raises(UnknownPubsubNodeError):
        await store.put_pubsub_item(PS, "missing", pitem("a"), keep=0)


async def test_pubsub_concurrent_publishes_to_one_node(store: Store) -> None:
    await store.put_pubsub_node(PS, "news", "{}")
    # the same ids from many writers at once: no unique-index collision, and
    # trimming leaves exactly ``keep`` (PostgreSQL: several pool connections)
    await asyncio.gather(
        *(
            store.put_pubsub_item(PS, "news", pitem(f"i{n % 4}", float(n)), keep=3)
            for n in range(24)
        )
    )
    ids = await item_ids(store, PS, "news")
    assert len(ids) == 3 and len(set(ids)) == 3


async def test_delete_pubsub_items(store: Store) -> None:
    await store.put_pubsub_node(PS, "news", "{}")
    await store.put_pubsub_node(PS, "other", "{}")
    for item_id in ("a", "b", "c", "d"):
        await store.put_pubsub_item(PS, "news", pitem(item_id), keep=0)
    await store.put_pubsub_item(PS, "other", pitem("a"), keep=0)
    # the ids that were there, in the order asked, each once
    assert await store.delete_pubsub_items(PS, "news", ["c", "gone", "a", "c"]) == ["c", "a"]
    assert await item_ids(store, PS, "news") == ["d", "b"]
    assert await store.delete_pubsub_items(PS, "news", ["a"]) == []  # deleted already
    assert await store.delete_pubsub_items(PS, "news", []) == []
    assert await store.delete_pubsub_items(PS, "nothing", ["b"]) == []
    assert await item_ids(store, PS, "other") == ["a"]  # other nodes untouched
    many = [f"x{n}" for n in range(1200)] + ["b"]
    assert await store.delete_pubsub_items(PS, "news", many) == ["b"]
    assert await item_ids(store, PS, "news") == ["d"]


async def test_purge_and_expire_pubsub_items(store: Store) -> None:
    await store.put_pubsub_node(PS, "news", "{}")
    await store.put_pubsub_node(PS, "other", "{}")
    for n in range(5):
        await store.put_pubsub_item(PS, "news", pitem(f"i{n}", 100.0 + n), keep=0)
    await store.put_pubsub_item(PS, "other", pitem("old", 1.0), keep=0)
    # strictly before: the item stamped 102.0 stays
    assert await store.expire_pubsub_items(PS, "news", 102.0) == 2
    assert await item_ids(store, PS, "news") == ["i4", "i3", "i2"]
    assert await store.expire_pubsub_items(PS, "news", 102.0) == 0
    assert await store.expire_pubsub_items(PS, "nothing", 1e12) == 0
    assert await item_ids(store, PS, "other") == ["old"]  # per node
    await store.purge_pubsub_node(PS, "news")
    assert await store.get_pubsub_items(PS, "news") == []
    assert await store.get_pubsub_node(PS, "news") == "{}"  # the node stays
    assert await item_ids(store, PS, "other") == ["old"]
    await store.purge_pubsub_node(PS, "nothing")  # harmless
    # a purged node takes new items
    await store.put_pubsub_item(PS, "news", pitem("fresh"), keep=1)
    assert await item_ids(store, PS, "news") == ["fresh"]


async def test_delete_pubsub_node_takes_its_items(store: Store) -> None:
    await store.put_pubsub_node(PS, "news", "{}")
    await store.put_pubsub_node(PS, "other", '{"o":1}')
    for item_id in ("a", "b"):
        await store.put_pubsub_item(PS, "news", pitem(item_id), keep=0)
        await store.put_pubsub_item(PS, "other", pitem(item_id), keep=0)
    assert await store.delete_pubsub_node(PS, "news") is True
    assert await store.delete_pubsub_node(PS, "news") is False
    assert await store.delete_pubsub_node(PS, "never") is False
    assert await store.get_pubsub_node(PS, "news") is None
    assert await store.get_pubsub_items(PS, "news") == []
    n = await store.db.fetchval(
        "SELECT COUNT(*) FROM pubsub_items WHERE service = $1 AND node = $2", PS, "news"
    )
    assert n == 0
    assert await store.pubsub_nodes(PS) == [("other", '{"o":1}')]
    assert await item_ids(store, PS, "other") == ["b", "a"]
    # a node made again under the same name starts empty
    await store.put_pubsub_node(PS, "news", "{}")
    assert await store.get_pubsub_items(PS, "news") == []


async def test_pubsub_items_cascade_with_their_node(store: Store) -> None:
    # the schema's own guarantee, whatever deletes the node row
    await store.put_pubsub_node(PS, "news", "{}")
    await store.put_pubsub_item(PS, "news", pitem("a"), keep=0)
    await store.db.execute("DELETE FROM pubsub_nodes WHERE service = $1", PS)
    assert await store.db.fetchval("SELECT COUNT(*) FROM pubsub_items") == 0


async def test_delete_pubsub_service(store: Store) -> None:
    other = "pubsub.example.net"
    for service in (PS, other):
        for node in ("n1", "n2"):
            await store.put_pubsub_node(service, node, "{}")
            await store.put_pubsub_item(service, node, pitem("a"), keep=0)
    await store.delete_pubsub_service(PS)
    assert await store.pubsub_nodes(PS) == []
    assert await store.get_pubsub_items(PS, "n1") == []
    n = await store.db.fetchval("SELECT COUNT(*) FROM pubsub_items WHERE service = $1", PS)
    assert n == 0
    assert await store.pubsub_nodes(other) == [("n1", "{}"), ("n2", "{}")]
    assert await item_ids(store, other, "n2") == ["a"]
    await store.delete_pubsub_service(PS)  # harmless
    await store.delete_pubsub_service("pubsub.nowhere")


async def test_delete_account_removes_its_pep_service_only(store: Store) -> None:
    alice, bob, alice_elsewhere = f"alice@{H}", f"bob@{H}", f"alice@{OTHER_HOST}"
    for name in ("alice", "bob"):
        assert await store.create_account(H, name, [creds()])
    assert await store.create_account(OTHER_HOST, "alice", [creds()])
    for service in (alice, bob, alice_elsewhere, PS):
        for node in ("urn:xmpp:avatar:data", "urn:xmpp:microblog:0"):
            await store.put_pubsub_node(service, node, "{}")
            await store.put_pubsub_item(service, node, pitem("current"), keep=1)
    # a pubsub node that happens to be named like the user is not theirs
    await store.put_pubsub_node(PS, alice, "{}")

    assert await store.delete_account(H, "alice")
    assert await store.pubsub_nodes(alice) == []
    assert await store.get_pubsub_items(alice, "urn:xmpp:avatar:data") == []
    n = await store.db.fetchval("SELECT COUNT(*) FROM pubsub_items WHERE service = $1", alice)
    assert n == 0
    for service in (bob, alice_elsewhere):
        assert len(await store.pubsub_nodes(service)) == 2, service
        assert await item_ids(store, service, "urn:xmpp:microblog:0") == ["current"]
    assert len(await store.pubsub_nodes(PS)) == 3
    assert await item_ids(store, PS, "urn:xmpp:avatar:data") == ["current"]
