"""One avatar, two stores (XEP-0398): the PEP nodes of XEP-0084
(``urn:xmpp:avatar:data``, its item id the image's SHA-1, and
``urn:xmpp:avatar:metadata``) and the vCard's ``<PHOTO/>`` (XEP-0054,
XEP-0153). A client changes one; the pubsub service writes the other, so a
contact whose client only knows vCard avatars sees the same picture. Pure
conversions here.
"""

from __future__ import annotations

import base64
import binascii
import copy

from lxml import etree

from ..xmpp.vcard_photo import sha1

DATA = "urn:xmpp:avatar:data"
METADATA = "urn:xmpp:avatar:metadata"
VCARD = "vcard-temp"
#: announced on accounts (XEP-0398 3)
FEATURE = "urn:xmpp:pep-vcard-conversion:0"
#: the avatar nodes follow the vCard's audience: readable by anyone, as a vCard is
OPTIONS = {"pubsub#persist_items": "true", "pubsub#access_model": "open"}


def _q(ns: str, local: str) -> str:
    return f"{{{ns}}}{local}"


def pep_items(image: bytes, mime: str) -> tuple[str, etree._Element, etree._Element]:
    """(id, data payload, metadata payload) publishing ``image`` (XEP-0084 4)."""
    item_id = sha1(image)
    data = etree.Element(_q(DATA, "data"), nsmap={None: DATA})
    data.text = base64.b64encode(image).decode()
    meta = etree.Element(_q(METADATA, "metadata"), nsmap={None: METADATA})
    etree.SubElement(meta, _q(METADATA, "info"), id=item_id, bytes=str(len(image)), type=mime)
    return item_id, data, meta


def info_of(metadata: etree._Element) -> tuple[str, str] | None:
    """(id, type) of the avatar a metadata item announces (the first
    ``<info/>`` without a url: the one in the data node); None: no avatar
    (an empty ``<metadata/>`` disables it, 4.5)."""
    for info in metadata.iterchildren(_q(METADATA, "info")):
        if info.get("url") is None and info.get("id"):
            return info.get("id") or "", info.get("type") or "image/png"
    return None


def image_of(data: etree._Element) -> bytes | None:
    try:
        return base64.b64decode("".join((data.text or "").split()), validate=True)
    except (binascii.Error, ValueError):
        return None


def with_photo(vcard: etree._Element | None, image: bytes | None, mime: str) -> etree._Element:
    """``vcard`` (or an empty one) with its PHOTO replaced (removed: None)."""
    out = (
        copy.deepcopy(vcard)
        if vcard is not None
        else etree.Element(_q(VCARD, "vCard"), nsmap={None: VCARD})
    )
    for old in out.findall(_q(VCARD, "PHOTO")):
        out.remove(old)
    if image is not None:
        photo = etree.SubElement(out, _q(VCARD, "PHOTO"))
        etree.SubElement(photo, _q(VCARD, "TYPE")).text = mime
        etree.SubElement(photo, _q(VCARD, "BINVAL")).text = base64.b64encode(image).decode()
    return out
