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
"""

from __future__ import annotations

import copy

from lxml import etree

from ..core.feature import Context, Feature
from ..core.pubsub import pubsub_of
from ..core.routing import Envelope
from ..xmpp import ns
from ..xmpp.errors import StanzaCondition, StanzaError
from ..xmpp.tree import parse_element

__all__ = ["FEATURE", "MAX_VCARD_BYTES"]

_VCARD = ns.q(ns.VCARD, "vCard")
#: the largest vCard accepted, serialized
MAX_VCARD_BYTES = 64 * 1024


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
    data = etree.tostring(el, with_tail=False)
    if len(data) > MAX_VCARD_BYTES:
        raise StanzaError(
            StanzaCondition.NOT_ACCEPTABLE, f"vCard larger than {MAX_VCARD_BYTES} bytes"
        )
    await ctx.storage.set_vcard(user.domain, user.local, data)
    try:
        pubsub = pubsub_of(ctx)
    except StanzaError:
        return None  # no pubsub service: no PEP avatar to keep in step
    # XEP-0398: the photo is the PEP avatar too
    await pubsub.vcard_changed(user, data)
    return None


FEATURE = Feature(
    name="vcard",
    xeps=("XEP-0054",),
    storage=("vcards",),
    disco_features=(ns.VCARD,),
    account_disco_features=(ns.VCARD,),
    account_iq={(_VCARD, "get"): _get, (_VCARD, "set"): _set},
)
