"""Last activity (XEP-0012).

* To a served domain (section 5): seconds since the server started.
* To an account's bare JID (section 4): ``0`` while the account has an
  available resource; otherwise the seconds since its last session ended,
  with the status text of its last unavailable presence. Only the owner and
  contacts with a presence subscription to the account (``from``/``both`` in
  its roster) may ask: anyone else gets forbidden. An account that has never
  logged out has nothing to tell: item-not-found.
"""

from __future__ import annotations

import time

from lxml import etree

from ..core.feature import Context, Feature
from ..core.routing import Envelope
from ..xmpp import ns
from ..xmpp.errors import StanzaCondition, StanzaError

__all__ = ["FEATURE"]

_QUERY = ns.q(ns.LAST, "query")


def _query(seconds: float, status: str | None = None) -> etree._Element:
    q = etree.Element(_QUERY, nsmap={None: ns.LAST})
    q.set("seconds", str(max(0, int(seconds))))
    if status:
        q.text = status
    return q


async def _server_last(ctx: Context, env: Envelope, payload: etree._Element) -> etree._Element:
    return _query(time.time() - ctx.started_at)


async def _account_last(ctx: Context, env: Envelope, payload: etree._Element) -> etree._Element:
    user = env.to.bare
    assert user.local is not None
    if env.frm.bare != user:
        item = await ctx.storage.get_roster_item(user.domain, user.local, str(env.frm.bare))
        if item is None or item.subscription not in ("from", "both"):
            raise StanzaError(StanzaCondition.FORBIDDEN)
    if any(s.available for s in await ctx.sessions.resources(user)):
        return _query(0)
    last = await ctx.storage.get_last_activity(user.domain, user.local)
    if last is None:
        raise StanzaError(StanzaCondition.ITEM_NOT_FOUND)
    return _query(time.time() - last.stamp, last.status)


FEATURE = Feature(
    name="last",
    xeps=("XEP-0012",),
    storage=("last_activity", "roster_items"),
    disco_features=(ns.LAST,),
    account_disco_features=(ns.LAST,),
    server_iq={(_QUERY, "get"): _server_last},
    account_iq={(_QUERY, "get"): _account_last},
)
