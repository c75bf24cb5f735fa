"""vcard-temp (XEP-0054).

* get: anyone may read an account's vCard (the router has already answered
  service-unavailable for accounts that do not exist); an account without one
  gets an empty ``<vCard xmlns='vcard-temp'/>`` (section 3.1).
* set: only the owner may publish (``to`` absent or their own bare JID),
  anyone else gets forbidden. The element is stored as sent, serialized.
  vCards larger than :data:`MAX_VCARD_BYTES` serialized are refused with
  not-acceptable: the XEP names no condition for "too large", and
  not-acceptable ("the content is not acceptable to the server", type
  modify) tells the client to send something else rather than to retry.

XEP-0153 / XEP-0398 section 4: every available presence a user sends
(directed ones too, a group chat join say) carries the hash of their vCard
photo, put there by :func:`_stamp` before the presence feature routes it.
The hash of each user is kept in the ``vcard-photo`` cache
(``Context.cache``), dropped by every write of the vCard: here, by the
pubsub service when a PEP avatar becomes the photo, by the admin API.
A user with no vCard at all gets nothing added.
"""

from __future__ import annotations

import copy

from lxml import etree

from ..core.feature import Context, Feature
from ..core.pubsub import pubsub_of
from ..core.routing import Envelope
from ..xmpp import ns
from ..xmpp.errors import StanzaCondition, StanzaError
from ..xmpp.jid import JID
from ..xmpp.parser import serialize
from ..xmpp.tree import parse_element
from ..xmpp.vcard_photo import photo_hash, stamp_presence

__all__ = ["FEATURE", "MAX_VCARD_BYTES", "PHOTO_CACHE"]

_VCARD = ns.q(ns.VCARD, "vCard")
#: the largest vCard accepted, serialized
MAX_VCARD_BYTES = 64 * 1024
#: the ``Context.cache`` of each user's photo hash ("" no photo, None no vCard)
PHOTO_CACHE = "vcard-photo"


def _empty() -> etree._Element:
    return etree.Element(_VCARD, nsmap={None: ns.VCARD})


async def _get(ctx: Context, env: Envelope, payload: etree._Element) -> etree._Element:
    user = env.to.bare
    assert user.local is not None
    data = await ctx.storage.get_vcard(user.domain, user.local)
    if data is None:
        return _empty()
    try:
        return parse_element(data)
    except etree.XMLSyntaxError:
        return _empty()


async def _set(ctx: Context, env: Envelope, payload: etree._Element) -> None:
    user = env.to.bare
    if env.frm.bare != user:
        raise StanzaError(StanzaCondition.FORBIDDEN)
    assert user.local is not None
    el = copy.deepcopy(payload)
    el.tail = None
    etree.cleanup_namespaces(el)
    data = serialize(el)
    if len(data) > MAX_VCARD_BYTES:
        raise StanzaError(
            StanzaCondition.NOT_ACCEPTABLE, f"vCard larger than {MAX_VCARD_BYTES} bytes"
        )
    await ctx.storage.set_vcard(user.domain, user.local, data)
    ctx.cache(PHOTO_CACHE).invalidate(user)
    try:
        pubsub = pubsub_of(ctx)
    except StanzaError:
        return None  # no pubsub service: no PEP avatar to keep in step
    # XEP-0398: the photo is the PEP avatar too
    await pubsub.vcard_changed(user, data)
    return None


async def _photo_hash(ctx: Context, user: JID) -> str | None:
    assert user.local is not None
    data = await ctx.storage.get_vcard(user.domain, user.local)
    if data is None:
        return None
    try:
        return photo_hash(parse_element(data))
    except etree.XMLSyntaxError:
        return None


async def _stamp(ctx: Context, env: Envelope) -> bool:
    if env.type is not None:  # available presence only (XEP-0398 4)
        return False
    user = env.frm.bare
    digest = await ctx.cache(PHOTO_CACHE).get(user, lambda: _photo_hash(ctx, user))
    if digest is not None:
        el = env.tree()
        if stamp_presence(el, digest):
            env.data = serialize(el)
    return False  # the presence feature routes it


async def _forget(ctx: Context, user: JID) -> None:
    ctx.cache(PHOTO_CACHE).invalidate(user)


FEATURE = Feature(
    name="vcard",
    xeps=("XEP-0054", "XEP-0153"),
    storage=("vcards",),
    disco_features=(ns.VCARD,),
    account_disco_features=(ns.VCARD,),
    account_iq={(_VCARD, "get"): _get, (_VCARD, "set"): _set},
    # before the presence feature's hook, which routes the presence
    presence_out=(_stamp,),
    account_removed=(_forget,),
)
