from __future__ import annotations

from lxml import etree

from services.features.vcard import MAX_VCARD_BYTES
from services.xmpp import ns

from .conftest import HOST, Harness, assert_error, assert_result, el

V = f"{{{ns.VCARD}}}"
VCARD = f"<vCard xmlns='{ns.VCARD}'><FN>Juliet Capulet</FN><NICKNAME>jc</NICKNAME></vCard>"


async def test_empty_vcard(h: Harness) -> None:
    me = await h.login("juliet")
    q = assert_result(await h.iq(me, "get", el(f"<vCard xmlns='{ns.VCARD}'/>")))
    assert q is not None and q.tag == V + "vCard" and len(q) == 0


async def test_set_and_get_own(h: Harness) -> None:
    me = await h.login("juliet")
    assert assert_result(await h.iq(me, "set", el(VCARD))) is None
    q = assert_result(await h.iq(me, "get", el(f"<vCard xmlns='{ns.VCARD}'/>")))
    assert q is not None
    assert q.findtext(V + "FN") == "Juliet Capulet"
    assert q.findtext(V + "NICKNAME") == "jc"
    stored = await h.store.get_vcard(HOST, "juliet")
    assert stored is not None and b"jabber:client" not in stored


async def test_set_own_with_explicit_to(h: Harness) -> None:
    me = await h.login("juliet")
    assert assert_result(await h.iq(me, "set", el(VCARD), to=me.bare)) is None
    assert await h.store.get_vcard(HOST, "juliet") is not None


async def test_replace(h: Harness) -> None:
    me = await h.login("juliet")
    await h.iq(me, "set", el(VCARD))
    await h.iq(me, "set", el(f"<vCard xmlns='{ns.VCARD}'><FN>J</FN></vCard>"))
    q = assert_result(await h.iq(me, "get", el(f"<vCard xmlns='{ns.VCARD}'/>")))
    assert q is not None and q.findtext(V + "FN") == "J" and q.find(V + "NICKNAME") is None


async def test_get_other(h: Harness) -> None:
    juliet = await h.login("juliet")
    romeo = await h.login(f"romeo@{HOST}/r")
    await h.iq(juliet, "set", el(VCARD))
    reply = await h.iq(romeo, "get", el(f"<vCard xmlns='{ns.VCARD}'/>"), to=juliet.bare)
    assert reply.get("from") == str(juliet.bare)
    q = assert_result(reply)
    assert q is not None and q.findtext(V + "FN") == "Juliet Capulet"


async def test_get_other_without_vcard(h: Harness) -> None:
    juliet = await h.login("juliet")
    await h.account("romeo")
    q = assert_result(
        await h.iq(juliet, "get", el(f"<vCard xmlns='{ns.VCARD}'/>"), to=f"romeo@{HOST}")
    )
    assert q is not None and len(q) == 0


async def test_set_other_forbidden(h: Harness) -> None:
    juliet = await h.login("juliet")
    await h.account("romeo")
    assert_error(await h.iq(juliet, "set", el(VCARD), to=f"romeo@{HOST}"), "forbidden", "auth")
    assert await h.store.get_vcard(HOST, "romeo") is None


async def test_unknown_account(h: Harness) -> None:
    juliet = await h.login("juliet")
    reply = await h.iq(juliet, "get", el(f"<vCard xmlns='{ns.VCARD}'/>"), to=f"nobody@{HOST}")
    assert_error(reply, "service-unavailable")


async def test_too_large(h: Harness) -> None:
    me = await h.login("juliet")
    big = etree.Element(V + "vCard", nsmap={None: ns.VCARD})
    etree.SubElement(big, V + "PHOTO").text = "A" * MAX_VCARD_BYTES
    assert_error(await h.iq(me, "set", big), "not-acceptable", "modify")
    assert await h.store.get_vcard(HOST, "juliet") is None
    # just under the limit is fine
    ok = etree.Element(V + "vCard", nsmap={None: ns.VCARD})
    photo = etree.SubElement(ok, V + "PHOTO")
    photo.text = "A" * (MAX_VCARD_BYTES - 200)
    assert assert_result(await h.iq(me, "set", ok)) is None
