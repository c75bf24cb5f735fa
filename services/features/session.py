"""The legacy session establishment IQ of RFC 3921 section 3.

RFC 6121 dropped it, and the stream features mark it ``<optional/>``; old
clients still send ``<session xmlns='urn:ietf:params:xml:ns:xmpp-session'/>``
after binding and wait for the result. It is an empty result whether the IQ
is addressed to the domain or, without a ``to``, to the user's own account.
Someone else's account answers service-unavailable.
"""

from __future__ import annotations

from lxml import etree

from ..core.feature import Context, Feature
from ..core.routing import Envelope
from ..xmpp import ns
from ..xmpp.errors import StanzaCondition, StanzaError

__all__ = ["FEATURE"]

_SESSION = ns.q(ns.SESSION, "session")


async def _server_session(ctx: Context, env: Envelope, payload: etree._Element) -> None:
    return None


async def _account_session(ctx: Context, env: Envelope, payload: etree._Element) -> None:
    if env.frm.bare != env.to.bare:
        raise StanzaError(StanzaCondition.SERVICE_UNAVAILABLE)
    return None


FEATURE = Feature(
    name="session",
    xeps=("RFC 3921",),
    server_iq={(_SESSION, "set"): _server_session},
    account_iq={(_SESSION, "set"): _account_session},
)
