"""Server IQs and per-account data with real clients: disco, caps, version,
time, ping, last activity, vCard, private XML, blocking, registration."""

from __future__ import annotations

import asyncio
import base64
import re

import pytest
from slixmpp.exceptions import IqError

from ..conftest import PASSWORD, Raw


async def test_disco_info_with_contact_addresses(connect):
    c = await connect("alice@localhost/a")
    info = await c.plugin["xep_0030"].get_info(jid="localhost")
    q = info["disco_info"]
    assert ("server", "im", None, "xmppd") in q["identities"] or any(
        i[0] == "server" and i[1] == "im" for i in q["identities"]
    )
    feats = set(q["features"])
    for f in (
        "http://jabber.org/protocol/disco#info",
        "urn:xmpp:ping",
        "jabber:iq:version",
        "urn:xmpp:time",
        "jabber:iq:last",
        "vcard-temp",
        "jabber:iq:private",
        "urn:xmpp:blocking",
        "jabber:iq:register",
    ):
        assert f in feats, f
    form = info.xml.find(".//{jabber:x:data}x")
    fields = {f.get("var"): [v.text for v in f.findall("{jabber:x:data}value")] for f in form}
    assert fields["FORM_TYPE"] == ["http://jabber.org/network/serverinfo"]
    assert fields["admin-addresses"] == ["mailto:admin@localhost"]
    items = await c.plugin["xep_0030"].get_items(jid="localhost")
    # the server's own services (XEP-0045 group chat, XEP-0060 pubsub) and no component
    assert {(i[0], i[2]) for i in items["disco_items"]["items"]} == {
        ("conference.localhost", "Chatrooms"),
        ("pubsub.localhost", "Publish-Subscribe"),
    }


async def test_caps_in_stream_features_match_disco(raw, connect):
    r: Raw = await raw()
    await r.login()
    # the features after authentication carry a XEP-0115 caps element
    r2 = await raw()
    await r2.starttls()
    r2.header()
    await r2.expect(b"</stream:features>")
    token = base64.b64encode(f"\0bob\0{PASSWORD}".encode()).decode()
    r2.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>")
    await r2.expect(b"</success>")
    r2.header()
    feats = await r2.expect(b"</stream:features>")
    m = re.search(
        rb"<c xmlns=.http://jabber.org/protocol/caps. hash=.sha-1. node=.([^'\"]+). ver=.([^'\"]+)./>",
        feats,
    )
    assert m, feats
    from services.features.disco import ver_of_info

    c = await connect("alice@localhost/x")
    info = await c.plugin["xep_0030"].get_info(jid="localhost")
    import xml.etree.ElementTree as ET

    from lxml import etree

    q = etree.fromstring(ET.tostring(info.xml.find("{http://jabber.org/protocol/disco#info}query")))
    assert ver_of_info(q) == m.group(2).decode()


async def test_version_time_ping(connect):
    c = await connect("alice@localhost/a", plugins=("xep_0030", "xep_0092", "xep_0202", "xep_0199"))
    v = await c.plugin["xep_0092"].get_version("localhost")
    assert v["software_version"]["name"] == "xmppd" and v["software_version"]["version"]
    t = await c.plugin["xep_0202"].get_entity_time("localhost")
    from services.xmpp.timefmt import parse_datetime

    # (slixmpp's own utc getter appends a second 'Z', so read the text)
    utc = t.xml.find("{urn:xmpp:time}time/{urn:xmpp:time}utc").text
    assert utc.endswith("Z") and abs(parse_datetime(utc) - __import__("time").time()) < 5
    assert re.fullmatch(r"[+-]\d\d:\d\d", t.xml.find("{urn:xmpp:time}time/{urn:xmpp:time}tzo").text)
    rtt = await c.plugin["xep_0199"].ping("localhost", timeout=5)
    assert rtt >= 0


async def test_server_uptime_last_activity(connect):
    c = await connect("alice@localhost/a", plugins=("xep_0012",))
    await asyncio.sleep(1.0)  # not synchronisation: an uptime of at least a second
    last = await c.plugin["xep_0012"].get_last_activity("localhost")
    assert last["last_activity"]["seconds"] >= 1


async def test_vcard_set_get_and_others_read(connect):
    alice = await connect("alice@localhost/a", plugins=("xep_0054",))
    bob = await connect("bob@localhost/b", plugins=("xep_0054",))
    vc = alice.plugin["xep_0054"].make_vcard()
    vc["FN"] = "Alice Liddell"
    vc["NICKNAME"] = "alice"
    await alice.plugin["xep_0054"].publish_vcard(vc)
    got = await bob.plugin["xep_0054"].get_vcard("alice@localhost", local=False, cached=False)
    assert got["vcard_temp"]["FN"] == "Alice Liddell"
    # bob cannot overwrite alice's vCard
    iq = bob.make_iq_set(ito="alice@localhost")
    iq.append(bob.plugin["xep_0054"].make_vcard())
    with pytest.raises(IqError) as exc:
        await iq.send(timeout=5)
    assert exc.value.iq["error"]["condition"] == "forbidden"


async def test_private_storage_bookmarks(connect):
    alice = await connect("alice@localhost/a", plugins=("xep_0049", "xep_0048"))
    from slixmpp.plugins.xep_0048 import Bookmarks

    bm = Bookmarks()
    bm.add_conference("room@conference.localhost", "alice", name="Room", autojoin=True)
    await alice.plugin["xep_0048"].set_bookmarks(bm, method="xep_0049")
    got = await alice.plugin["xep_0048"].get_bookmarks(method="xep_0049")
    conf = got["private"]["bookmarks"]["conferences"][0]
    assert conf["jid"] == "room@conference.localhost" and conf["autojoin"]


async def test_blocking_bounces_and_drops(connect):
    alice = await connect("alice@localhost/a", plugins=("xep_0030", "xep_0191"))
    bob = await connect("bob@localhost/b")
    await alice.plugin["xep_0191"].block("bob@localhost")
    blocked = await alice.plugin["xep_0191"].get_blocked()
    items = {i.get("jid") for i in blocked.xml.iter("{urn:xmpp:blocking}item")}
    assert items == {"bob@localhost"}
    # bob's message to alice is refused with service-unavailable (XEP-0191 3.5)
    bob.send_message(mto="alice@localhost", mbody="let me in", mtype="chat")
    err = await bob.next_message()
    assert err["type"] == "error" and err["error"]["condition"] == "service-unavailable"
    # alice's message to bob is refused with not-acceptable + <blocked/>
    alice.send_message(mto="bob@localhost", mbody="oops", mtype="chat")
    err = await alice.next_message()
    assert err["error"]["condition"] == "not-acceptable"
    assert err.xml.find(".//{urn:xmpp:blocking:errors}blocked") is not None
    await alice.plugin["xep_0191"].unblock("bob@localhost")
    bob.send_message(mto="alice@localhost", mbody="hello again", mtype="chat")
    assert (await alice.next_message())["body"] == "hello again"


async def test_blocklist_push_to_other_resource(connect):
    a1 = await connect("alice@localhost/one", plugins=("xep_0030", "xep_0191"))
    a2 = await connect("alice@localhost/two", plugins=("xep_0030", "xep_0191"))
    from slixmpp.xmlstream.handler import Callback
    from slixmpp.xmlstream.matcher import MatchXPath

    pushed = asyncio.get_running_loop().create_future()
    a2.register_handler(
        Callback(
            "block push",
            MatchXPath("{jabber:client}iq/{urn:xmpp:blocking}block"),
            lambda iq: pushed.done() or pushed.set_result(iq),
        )
    )
    await a2.plugin["xep_0191"].get_blocked()
    await a1.plugin["xep_0191"].block("eve@localhost")
    iq = await asyncio.wait_for(pushed, 5)
    assert iq["type"] == "set" and iq["from"] == "alice@localhost"
    assert "eve@localhost" in {i.get("jid") for i in iq.xml.iter("{urn:xmpp:blocking}item")}


async def _register_raw(r: Raw, username: str, password: str) -> bytes:
    await r.starttls()
    r.header()
    feats = await r.expect(b"</stream:features>")
    assert b"http://jabber.org/features/iq-register" in feats
    r.send("<iq type='get' id='g1'><query xmlns='jabber:iq:register'/></iq>")
    out = await r.expect(b"</iq>")
    assert b"<username/>" in out and b"<password/>" in out
    r.send(
        f"<iq type='set' id='s1'><query xmlns='jabber:iq:register'><username>{username}</username>"
        f"<password>{password}</password></query></iq>"
    )
    return await r.expect(rb"</iq>|<iq[^>]*/>")


async def test_in_band_registration_change_password_cancel(raw, connect):
    r = await raw()
    out = await _register_raw(r, "newbie", "first-pass")
    assert b'type="result"' in out or b"type='result'" in out
    # registering the same name again is a conflict
    r2 = await raw()
    out = await _register_raw(r2, "newbie", "other")
    assert b"<conflict" in out
    c = await connect("newbie@localhost/x", "first-pass", plugins=("xep_0030", "xep_0077"))
    # the result means the new password is stored
    await c.plugin["xep_0077"].change_password("second-pass")
    await asyncio.wait_for(c.disconnect(), 10)
    with pytest.raises(PermissionError):
        await connect("newbie@localhost/y", "first-pass")
    c2 = await connect("newbie@localhost/z", "second-pass", plugins=("xep_0030", "xep_0077"))
    closed = asyncio.get_running_loop().create_future()
    c2.add_event_handler("disconnected", lambda _e: closed.done() or closed.set_result(True))
    await c2.plugin["xep_0077"].cancel_registration()
    # XEP-0077 3.2: deleted, answered, then the server closes the account's sessions
    await asyncio.wait_for(closed, 10)
    with pytest.raises(PermissionError):
        await connect("newbie@localhost/w", "second-pass")


async def test_registration_disabled_by_default(server_factory):
    srv = await server_factory(registration=False)
    r = await Raw.open(srv.c2s_port)
    await r.starttls()
    r.header()
    feats = await r.expect(b"</stream:features>")
    assert b"iq-register" not in feats
    r.send("<iq type='get' id='g1'><query xmlns='jabber:iq:register'/></iq>")
    await r.expect(b"<stream:error><not-authorized")
    r.close()
