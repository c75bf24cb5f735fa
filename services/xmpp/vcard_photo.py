"""A vCard's photo (XEP-0054) and its hash in presence (XEP-0153).

XEP-0398 section 4 has the server put the hash of a user's vCard photo in
every available presence they send, so a contact's client learns of a new
avatar without each client downloading its own vCard at every login to
compute it. Pure functions here; the vcard feature decides when they run.
"""

from __future__ import annotations

import base64
import binascii
import hashlib

from lxml import etree

from . import ns

__all__ = ["photo_hash", "photo_of", "sha1", "stamp_presence"]

_PHOTO = ns.q(ns.VCARD, "PHOTO")
_BINVAL = ns.q(ns.VCARD, "BINVAL")
_TYPE = ns.q(ns.VCARD, "TYPE")
_X = ns.q(ns.VCARD_UPDATE, "x")
_X_PHOTO = ns.q(ns.VCARD_UPDATE, "photo")


def photo_of(vcard: etree._Element) -> tuple[bytes, str] | None:
    """(image, type) of a vCard's embedded photo; None: none, or not base64."""
    photo = vcard.find(_PHOTO)
    if photo is None:
        return None
    raw = "".join((photo.findtext(_BINVAL) or "").split())
    if not raw:
        return None
    try:
        image = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        return None
    return image, (photo.findtext(_TYPE) or "image/png").strip()


def sha1(image: bytes) -> str:
    # XEP-0153 and XEP-0084 name SHA-1: an identifier, not a security measure
    return hashlib.sha1(image).hexdigest()


def photo_hash(vcard: etree._Element) -> str:
    """The XEP-0153 hash of a vCard's photo; "" when it has none (which a
    presence says as ``<photo/>``: "no avatar")."""
    photo = photo_of(vcard)
    return sha1(photo[0]) if photo is not None else ""


def stamp_presence(presence: etree._Element, digest: str) -> bool:
    """Put ``digest`` (the server's hash of the sender's photo, "" for none)
    in an available presence, by XEP-0398 section 4's rules; True if the
    presence changed.

    * ``<x><photo/></x>`` (the client says "no avatar") is left alone;
    * an ``<x/>`` without ``<photo/>`` (the client is not ready) is filled;
    * another hash is replaced: the server holds the vCard, so its hash is
      the one contacts can fetch (the XEP allows it);
    * a presence without ``<x/>`` gets one.
    """
    x = presence.find(_X)
    if x is None:
        x = etree.SubElement(presence, _X, nsmap={None: ns.VCARD_UPDATE})
        etree.SubElement(x, _X_PHOTO).text = digest or None
        return True
    photos = x.findall(_X_PHOTO)
    if photos and not (photos[0].text or "").strip():
        return False
    if len(photos) == 1 and (photos[0].text or "").strip() == digest:
        return False
    for old in photos:
        x.remove(old)
    etree.SubElement(x, _X_PHOTO).text = digest or None
    return True
