"""XMPP ping (XEP-0199), answered by the server.

* A ping to a served domain (section 4.2, client-to-server) gets an empty
  result.
* A ping to an account's bare JID is answered by the server on the account's
  behalf (RFC 6121 section 8.5.1) when it comes from the account's owner; to
  anyone else the server behaves as for any IQ it does not handle on a user's
  behalf: service-unavailable. Pings to a full JID go to that client.
"""

from __future__ import annotations

from lxml import etree

from ..core.feature import Context, Feature
from ..core.routing import Envelope
from ..xmpp import ns
from ..xmpp.errors import StanzaCondition, StanzaError

__all__ = ["FEATURE"]

_PING = ns.q(ns.PING, "ping")


async def _server_ping(ctx: Context, env: Envelope, payload: etree._Element) -> None:
    return None


async def _account_ping(ctx: Context, env: Envelope, payload: etree._Element) -> None:
    if env.frm.bare != env.to.bare:
        raise StanzaError(StanzaCondition.SERVICE_UNAVAILABLE)
    return None


FEATURE = Feature(
    name="ping",
    xeps=("XEP-0199",),
    disco_features=(ns.PING,),
    account_disco_features=(ns.PING,),
    server_iq={(_PING, "get"): _server_ping},
    account_iq={(_PING, "get"): _account_ping},
)
