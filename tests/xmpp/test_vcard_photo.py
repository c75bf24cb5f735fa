"""The vCard photo hash and its place in presence (XEP-0153, XEP-0398 4)."""

from __future__ import annotations

import base64
import hashlib

from lxml import etree

from services.xmpp.vcard_photo import photo_hash, photo_of, stamp_presence

U = "{vcard-temp:x:update}"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(32))
SHA = hashlib.sha1(PNG).hexdigest()


def _vcard(photo: str | None, kind: str | None = "image/png") -> etree._Element:
    inner = ""
    if photo is not None:
        t = f"<TYPE>{kind}</TYPE>" if kind else ""
        inner = f"<PHOTO>{t}<BINVAL>{photo}</BINVAL></PHOTO>"
    return etree.fromstring(f"<vCard xmlns='vcard-temp'><FN>A</FN>{inner}</vCard>")


def _presence(inner: str = "") -> etree._Element:
    return etree.fromstring(f"<presence xmlns='jabber:client'>{inner}</presence>")


def _photos(p: etree._Element) -> list[str]:
    return [e.text or "" for e in p.iterfind(f"{U}x/{U}photo")]


def test_photo_and_hash() -> None:
    b64 = base64.b64encode(PNG).decode()
    # line breaks inside BINVAL are allowed (vCard folding)
    folded = "\n".join(b64[i : i + 16] for i in range(0, len(b64), 16))
    assert photo_of(_vcard(folded)) == (PNG, "image/png")
    assert photo_of(_vcard(b64, kind=None)) == (PNG, "image/png")
    assert photo_hash(_vcard(b64)) == SHA
    assert photo_hash(_vcard(None)) == ""
    assert photo_hash(_vcard("")) == ""
    assert photo_hash(_vcard("not base64 !")) == ""


def test_adds_x_to_a_plain_presence() -> None:
    p = _presence("<show>away</show>")
    assert stamp_presence(p, SHA)
    assert _photos(p) == [SHA]
    p = _presence()
    assert stamp_presence(p, "")
    assert _photos(p) == [""]
    assert b'<x xmlns="vcard-temp:x:update"><photo/></x>' in etree.tostring(p)


def test_fills_an_empty_x() -> None:
    p = _presence("<x xmlns='vcard-temp:x:update'/>")
    assert stamp_presence(p, SHA)
    assert _photos(p) == [SHA] and len(p.findall(f"{U}x")) == 1


def test_keeps_an_explicit_no_avatar() -> None:
    p = _presence("<x xmlns='vcard-temp:x:update'><photo/></x>")
    assert not stamp_presence(p, SHA)
    assert _photos(p) == [""]
    p = _presence("<x xmlns='vcard-temp:x:update'><photo>  </photo></x>")
    assert not stamp_presence(p, SHA)


def test_replaces_another_hash_and_duplicates() -> None:
    p = _presence(f"<x xmlns='vcard-temp:x:update'><photo>{'0' * 40}</photo></x>")
    assert stamp_presence(p, SHA)
    assert _photos(p) == [SHA]
    p = _presence(f"<x xmlns='vcard-temp:x:update'><photo>{SHA}</photo><photo>b</photo></x>")
    assert stamp_presence(p, SHA)
    assert _photos(p) == [SHA]


def test_same_hash_is_unchanged() -> None:
    p = _presence(f"<x xmlns='vcard-temp:x:update'><photo>{SHA}</photo></x>")
    before = etree.tostring(p)
    assert not stamp_presence(p, SHA)
    assert etree.tostring(p) == before
