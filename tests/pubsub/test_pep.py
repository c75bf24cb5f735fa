"""PEP (XEP-0163) between real clients (slixmpp), on the embedded default
and through the cluster: nicknames (XEP-0172), avatars (XEP-0084),
bookmarks (XEP-0402), an OMEMO device list, +notify filtering from entity
capabilities (XEP-0115) and the last item on login, with the refusals the
access models name."""

from __future__ import annotations

import secrets
from typing import Any

import pytest
from slixmpp.exceptions import IqError
from slixmpp.xmlstream import ET

from ..conftest import wait_until

PEP = ("xep_0030", "xep_0199", "xep_0004", "xep_0060", "xep_0115", "xep_0163")
NICK = "http://jabber.org/protocol/nick"
AVATAR_DATA = "urn:xmpp:avatar:data"
AVATAR_META = "urn:xmpp:avatar:metadata"
BOOKMARKS = "urn:xmpp:bookmarks:1"
DEVICELIST = "eu.siacs.conversations.axolotl.devicelist"
PUBSUB = "http://jabber.org/protocol/pubsub"
EVENT = PUBSUB + "#event"


#: a node each test client asks for, to learn when the server knows its caps
READY = "urn:xmpp:test:ready"


async def _client(connect: Any, jid: str, notify: tuple[str, ...] = (), **kw: Any) -> Any:
    """A client whose caps ask for ``notify`` nodes (+notify) before its
    initial presence, as real clients do. Returns once the server knows
    what its caps stand for: the server asks the client (XEP-0115) and, as
    Prosody does, sends a resource nothing while that question is open."""
    c = await connect(jid, plugins=PEP, presence=False, **kw)
    for node in (*notify, READY):
        c.plugin["xep_0030"].add_feature(f"{node}+notify")
    await c.plugin["xep_0115"].update_caps()
    from ..conftest import send_initial_presence

    await send_initial_presence(c)
    for _ in range(50):
        await _publish(c, READY, _nick("ready"))
        try:
            await _event(c, READY, 0.2)
            break
        except TimeoutError:
            continue
    else:
        raise AssertionError("the server never learnt the client's caps")
    return c


async def _subscribe_both(a: Any, b: Any) -> None:
    for c in (a, b):
        c.roster.auto_authorize = True
        c.roster.auto_subscribe = True
    await a.get_roster()
    await b.get_roster()
    a.send_presence_subscription(pto=b.boundjid.bare, ptype="subscribe")
    await wait_until(
        lambda: (
            a.client_roster[b.boundjid.bare]["subscription"]
            == b.client_roster[a.boundjid.bare]["subscription"]
            == "both"
        ),
        what="mutual subscription",
    )


async def _event(c: Any, node: str, timeout: float = 5.0) -> Any:
    """The next PEP/pubsub notification of ``node``."""
    while True:
        m = await c.next_message(timeout)
        items = m.xml.find(f"{{{EVENT}}}event/{{{EVENT}}}items")
        if items is not None and items.get("node") == node:
            return m


async def _no_event(c: Any, node: str, wait: float = 1.0) -> None:
    with pytest.raises(TimeoutError):
        await _event(c, node, wait)


def _nick(text: str) -> Any:
    el = ET.Element(f"{{{NICK}}}nick")
    el.text = text
    return el


async def _publish(c: Any, node: str, payload: Any, item: str | None = None, **opts: Any) -> Any:
    options = None
    if opts:
        form = c.plugin["xep_0004"].make_form(ftype="submit")
        form.add_field(
            var="FORM_TYPE",
            ftype="hidden",
            value="http://jabber.org/protocol/pubsub#publish-options",
        )
        for k, v in opts.items():
            form.add_field(var=f"pubsub#{k}", value=v)
        options = form
    return await c.plugin["xep_0060"].publish(
        c.boundjid.bare, node, id=item, payload=payload, options=options, timeout=5
    )


async def _publish_avatar(c: Any, size: int = 48) -> tuple[bytes, str]:
    """Publish a fresh XEP-0084 avatar (data, then metadata); (image, SHA-1)."""
    import base64
    import hashlib

    png = b"\x89PNG\r\n\x1a\n" + secrets.token_bytes(size)
    sha = hashlib.sha1(png).hexdigest()
    data = ET.Element(f"{{{AVATAR_DATA}}}data")
    data.text = base64.b64encode(png).decode()
    await _publish(c, AVATAR_DATA, data, item=sha)
    meta = ET.Element(f"{{{AVATAR_META}}}metadata")
    ET.SubElement(meta, f"{{{AVATAR_META}}}info", id=sha, bytes=str(len(png)), type="image/png")
    await _publish(c, AVATAR_META, meta, item=sha)
    return png, sha


async def test_nickname_goes_to_contacts_that_ask_for_it(connect: Any) -> None:
    alice = await _client(connect, "alice@localhost/a")
    bob = await _client(connect, "bob@localhost/b", notify=(NICK,))
    carol = await _client(connect, "carol@localhost/c")  # no +notify
    await _subscribe_both(alice, bob)
    await _subscribe_both(alice, carol)
    name = f"Alice {secrets.token_hex(3)}"
    await _publish(alice, NICK, _nick(name))
    m = await _event(bob, NICK)
    assert m["from"] == "alice@localhost"
    assert m.xml.findtext(f".//{{{NICK}}}nick") == name
    await _no_event(carol, NICK)
    # bob's next session gets the last item at login (XEP-0163 6.3)
    bob2 = await _client(connect, "bob@localhost/later", notify=(NICK,))
    m = await _event(bob2, NICK)
    assert m.xml.findtext(f".//{{{NICK}}}nick") == name
    # and a contact's session that does not ask for it gets nothing at login
    carol2 = await _client(connect, "carol@localhost/later")
    await _no_event(carol2, NICK)


async def test_presence_access_model_refuses_strangers(connect: Any) -> None:
    alice = await _client(connect, "alice@localhost/a")
    dave = await _client(connect, "dave@localhost/d", notify=(NICK,))
    node = f"{NICK}-{secrets.token_hex(3)}"
    await _publish(alice, node, _nick("private"))
    with pytest.raises(IqError) as exc:
        await dave.plugin["xep_0060"].get_items("alice@localhost", node, timeout=5)
    assert exc.value.condition == "not-authorized"
    err = exc.value.iq.xml.find("{jabber:client}error")
    assert err.find(f"{{{PUBSUB}#errors}}presence-subscription-required") is not None
    await _no_event(dave, node)


async def test_open_device_list_is_readable_by_anyone(connect: Any) -> None:
    alice = await _client(connect, "alice@localhost/a")
    dave = await _client(connect, "dave@localhost/d")
    devices = ET.Element("{eu.siacs.conversations.axolotl}list")
    ET.SubElement(devices, "{eu.siacs.conversations.axolotl}device", id="12345")
    await _publish(alice, DEVICELIST, devices, item="current", access_model="open")
    items = await dave.plugin["xep_0060"].get_items("alice@localhost", DEVICELIST, timeout=5)
    got = items.xml.find(f".//{{{PUBSUB}}}item")
    assert got.get("id") == "current"
    assert got.find(".//{eu.siacs.conversations.axolotl}device").get("id") == "12345"


async def test_bookmarks_stay_private_and_reach_own_resources(connect: Any) -> None:
    alice = await _client(connect, "alice@localhost/a", notify=(BOOKMARKS,))
    other = await _client(connect, "alice@localhost/phone", notify=(BOOKMARKS,))
    bob = await _client(connect, "bob@localhost/b", notify=(BOOKMARKS,))
    await _subscribe_both(alice, bob)
    room = f"room{secrets.token_hex(3)}@conference.localhost"
    conf = ET.Element(f"{{{BOOKMARKS}}}conference", autojoin="true", name="Room")
    ET.SubElement(conf, f"{{{BOOKMARKS}}}nick").text = "alice"
    await _publish(
        alice,
        BOOKMARKS,
        conf,
        item=room,
        persist_items="true",
        access_model="whitelist",
        max_items="max",
        send_last_published_item="never",
    )
    m = await _event(other, BOOKMARKS)
    assert m.xml.find(f".//{{{EVENT}}}item").get("id") == room
    await _no_event(bob, BOOKMARKS)
    with pytest.raises(IqError) as exc:
        await bob.plugin["xep_0060"].get_items("alice@localhost", BOOKMARKS, timeout=5)
    # XEP-0060 6.5.4: a whitelist node refuses who is not on it
    assert exc.value.condition == "not-allowed"
    err = exc.value.iq.xml.find("{jabber:client}error")
    assert err.find(f"{{{PUBSUB}#errors}}closed-node") is not None
    # a second bookmark: both are kept (max_items max)
    room2 = f"room{secrets.token_hex(3)}@conference.localhost"
    await _publish(
        alice,
        BOOKMARKS,
        ET.Element(f"{{{BOOKMARKS}}}conference"),
        item=room2,
        persist_items="true",
        access_model="whitelist",
        max_items="max",
        send_last_published_item="never",
    )
    items = await alice.plugin["xep_0060"].get_items("alice@localhost", BOOKMARKS, timeout=5)
    ids = {i.get("id") for i in items.xml.iter(f"{{{PUBSUB}}}item")}
    assert {room, room2} <= ids


async def test_avatar_metadata_and_data(connect: Any) -> None:
    alice = await _client(connect, "alice@localhost/a")
    bob = await _client(connect, "bob@localhost/b", notify=(AVATAR_META,))
    await _subscribe_both(alice, bob)
    import base64

    png, sha = await _publish_avatar(alice, 64)
    m = await _event(bob, AVATAR_META)
    assert m.xml.find(f".//{{{AVATAR_META}}}info").get("id") == sha
    got = await bob.plugin["xep_0060"].get_items(
        "alice@localhost", AVATAR_DATA, item_ids=[sha], timeout=5
    )
    text = got.xml.findtext(f".//{{{AVATAR_DATA}}}data")
    assert base64.b64decode(text) == png


async def test_account_disco_shows_pep(connect: Any) -> None:
    alice = await _client(connect, "alice@localhost/a")
    info = await alice.plugin["xep_0030"].get_info(jid="alice@localhost", timeout=5)
    ids = {(i[0], i[1]) for i in info["disco_info"]["identities"]}
    assert ("pubsub", "pep") in ids
    assert PUBSUB + "#publish" in info["disco_info"]["features"]


async def test_bookmarks_are_one_set_in_three_stores(connect: Any) -> None:
    """XEP-0411 and XEP-0402 8.1: legacy bookmarks stored in private XML
    show up in both PEP bookmark nodes (own resources notified), and a
    native bookmark published over PEP shows up in private XML."""
    user = "carol@localhost"
    carol = await _client(connect, f"{user}/legacy", notify=(BOOKMARKS,))
    room = f"legacy{secrets.token_hex(3)}@conference.localhost"
    storage = ET.fromstring(
        f"<storage xmlns='storage:bookmarks'><conference jid='{room}' name='Old'"
        " autojoin='true'><nick>carol</nick></conference>"
        "<url name='Site' url='https://example.org/'/></storage>"
    )
    iq = carol.make_iq_set(ito=user)
    query = ET.SubElement(iq.xml, "{jabber:iq:private}query")
    query.append(storage)
    await iq.send(timeout=5)
    # the native node has the room, and carol's client heard of it
    m = await _event(carol, BOOKMARKS)
    assert m.xml.find(f".//{{{EVENT}}}item").get("id") == room
    items = await carol.plugin["xep_0060"].get_items(user, BOOKMARKS, timeout=5)
    conf = items.xml.find(f".//{{{PUBSUB}}}item[@id='{room}']/{{{BOOKMARKS}}}conference")
    assert conf is not None and conf.get("autojoin") == "true" and conf.get("name") == "Old"
    assert conf.findtext(f"{{{BOOKMARKS}}}nick") == "carol"
    legacy = await carol.plugin["xep_0060"].get_items(user, "storage:bookmarks", timeout=5)
    assert legacy.xml.find(f".//{{storage:bookmarks}}conference[@jid='{room}']") is not None
    # a native bookmark from a modern client reaches private XML; the url stays
    room2 = f"native{secrets.token_hex(3)}@conference.localhost"
    await _publish(
        carol,
        BOOKMARKS,
        ET.Element(f"{{{BOOKMARKS}}}conference", name="New", autojoin="false"),
        item=room2,
        persist_items="true",
        access_model="whitelist",
        max_items="max",
        send_last_published_item="never",
    )
    get = carol.make_iq_get(ito=user)
    q = ET.SubElement(get.xml, "{jabber:iq:private}query")
    ET.SubElement(q, "{storage:bookmarks}storage")
    got = await get.send(timeout=5)
    jids = {c.get("jid") for c in got.xml.iter("{storage:bookmarks}conference")}
    assert jids == {room, room2}
    assert got.xml.find(".//{storage:bookmarks}url") is not None


async def test_avatar_is_one_picture_in_two_stores(connect: Any) -> None:
    """XEP-0398: a vCard photo becomes the PEP avatar (contacts notified),
    and a PEP avatar becomes the vCard photo."""
    import base64
    import hashlib

    alice = await _client(connect, "alice@localhost/a")
    bob = await _client(connect, "bob@localhost/b", notify=(AVATAR_META,))
    await _subscribe_both(alice, bob)
    png = b"\x89PNG\r\n\x1a\n" + secrets.token_bytes(48)
    vcard = ET.fromstring(
        "<vCard xmlns='vcard-temp'><FN>Alice</FN><PHOTO><TYPE>image/png</TYPE>"
        f"<BINVAL>{base64.b64encode(png).decode()}</BINVAL></PHOTO></vCard>"
    )
    iq = alice.make_iq_set(ito="alice@localhost")
    iq.append(vcard)
    await iq.send(timeout=5)
    m = await _event(bob, AVATAR_META)
    info = m.xml.find(f".//{{{AVATAR_META}}}info")
    assert info.get("id") == hashlib.sha1(png).hexdigest() and info.get("type") == "image/png"
    got = await bob.plugin["xep_0060"].get_items(
        "alice@localhost", AVATAR_DATA, item_ids=[info.get("id")], timeout=5
    )
    assert base64.b64decode(got.xml.findtext(f".//{{{AVATAR_DATA}}}data")) == png
    # the other way: a new PEP avatar is the vCard's photo, the rest of the vCard kept
    png2, _ = await _publish_avatar(alice)
    get = bob.make_iq_get(ito="alice@localhost")
    ET.SubElement(get.xml, "{vcard-temp}vCard")
    card = await get.send(timeout=5)
    assert card.xml.findtext(".//{vcard-temp}FN") == "Alice"
    assert base64.b64decode(card.xml.findtext(".//{vcard-temp}BINVAL")) == png2


UPDATE = "vcard-temp:x:update"


def _photo(p: Any) -> str | None:
    """The XEP-0153 hash a presence carries: None without ``<x/>``, "" for
    ``<photo/>`` (no avatar)."""
    x = p.xml.find(f"{{{UPDATE}}}x")
    if x is None:
        return None
    photos = x.findall(f"{{{UPDATE}}}photo")
    assert len(photos) == 1, "one photo element"
    return photos[0].text or ""


async def test_presence_carries_the_vcard_photo_hash(connect: Any) -> None:
    """XEP-0153 / XEP-0398 section 4: the server puts the hash of the
    sender's vCard photo in each available presence (broadcast and
    directed: a group chat join), follows a photo changed through the vCard
    or through a PEP avatar (written by the pubsub service, in another
    process in the cluster), and leaves a client's explicit "no avatar"
    alone."""
    import base64
    import hashlib

    alice = await _client(connect, "alice@localhost/a")
    bob = await _client(connect, "bob@localhost/b")
    await _subscribe_both(alice, bob)

    async def seen_by_bob(**kw: Any) -> Any:
        show = secrets.token_hex(4)
        alice.send_presence(pstatus=show, **kw)
        return await bob.next_presence(pred=lambda p: p["status"] == show)

    # no vCard: nothing added
    assert _photo(await seen_by_bob()) is None
    # a vCard without a photo: "no avatar"
    iq = alice.make_iq_set(ito="alice@localhost")
    iq.append(ET.fromstring("<vCard xmlns='vcard-temp'><FN>Alice</FN></vCard>"))
    await iq.send(timeout=5)
    assert _photo(await seen_by_bob()) == ""
    # a photo: its SHA-1
    png = b"\x89PNG\r\n\x1a\n" + secrets.token_bytes(48)
    iq = alice.make_iq_set(ito="alice@localhost")
    iq.append(
        ET.fromstring(
            "<vCard xmlns='vcard-temp'><FN>Alice</FN><PHOTO><TYPE>image/png</TYPE>"
            f"<BINVAL>{base64.b64encode(png).decode()}</BINVAL></PHOTO></vCard>"
        )
    )
    await iq.send(timeout=5)
    assert _photo(await seen_by_bob()) == hashlib.sha1(png).hexdigest()
    # a client's own stale hash is replaced, its empty <x/> filled
    stale = ET.fromstring(f"<x xmlns='{UPDATE}'><photo>{'0' * 40}</photo></x>")
    p = alice.make_presence(pstatus="stale")
    p.append(stale)
    p.send()
    got = await bob.next_presence(pred=lambda p: p["status"] == "stale")
    assert _photo(got) == hashlib.sha1(png).hexdigest()
    p = alice.make_presence(pstatus="not-ready")
    p.append(ET.fromstring(f"<x xmlns='{UPDATE}'/>"))
    p.send()
    got = await bob.next_presence(pred=lambda p: p["status"] == "not-ready")
    assert _photo(got) == hashlib.sha1(png).hexdigest()
    # an explicit "no avatar" from the client is kept
    p = alice.make_presence(pstatus="none")
    p.append(ET.fromstring(f"<x xmlns='{UPDATE}'><photo/></x>"))
    p.send()
    assert _photo(await bob.next_presence(pred=lambda p: p["status"] == "none")) == ""
    # a PEP avatar becomes the photo: the next presence has its hash
    _, sha2 = await _publish_avatar(alice)

    async def has_new_hash() -> bool:
        # the cache of another process learns of the change over the event bus
        return _photo(await seen_by_bob()) == sha2

    await wait_until(has_new_hash, what="the PEP avatar's hash in presence")
    # a directed presence (a group chat join) carries it too
    room = f"r{secrets.token_hex(4)}@conference.localhost"
    alice.send_presence(pto=f"{room}/alice")
    echo = await alice.next_presence(
        timeout=10, pred=lambda p: p["from"] == f"{room}/alice" and p["type"] != "error"
    )
    assert _photo(echo) == sha2
    # unavailable presence gets nothing
    alice.send_presence(pto=f"{room}/alice", ptype="unavailable")
    gone = await alice.next_presence(
        timeout=10, pred=lambda p: p["from"] == f"{room}/alice" and p["type"] == "unavailable"
    )
    assert _photo(gone) is None
