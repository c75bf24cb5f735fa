"""A feature as a third party would write one: a folder and its declaration,
loaded with ``features_extra``, touching neither the router, the edge nor
the direct path. Used by tests/e2e/test_feature_hooks.py on the embedded
server and on a cluster (where the direct edge-to-edge path is on).

It refuses messages whose body is exactly "spam" (a filter) and greets each
session when it becomes available (a session hook)."""

from __future__ import annotations

from services.core.feature import Context, Drop, Feature
from services.core.routing import Envelope, Session
from services.xmpp import ns
from services.xmpp import stanza as st
from services.xmpp.errors import StanzaCondition, StanzaError

GREETING = "welcome from the spam filter"


async def _no_spam(ctx: Context, env: Envelope) -> Drop | None:
    if env.kind == "message" and env.tree().findtext(ns.q(ns.CLIENT, "body")) == "spam":
        raise StanzaError(StanzaCondition.NOT_ACCEPTABLE, "no spam here")
    return None


async def _greet(ctx: Context, s: Session) -> None:
    msg = st.make("message", to=s.jid, frm=s.jid.domain, type_="headline")
    st.sub(msg, "body").text = GREETING
    await ctx.send(msg)


FEATURE = Feature(
    name="spam-filter",
    filters=(_no_spam,),
    session_available=(_greet,),
)
