"""Presence (RFC 6121 sections 3 and 4) on the hook chain: a local user's
presence goes to the presence service's ``outbound``, presence addressed to
a local user to its ``inbound``. The service (``services/presence``) keeps
the subscription state, broadcasts and probes; this declaration is how the
router reaches it without knowing it exists."""

from __future__ import annotations

from ..core.feature import Context, Feature
from ..core.routing import Envelope


async def _outbound(ctx: Context, env: Envelope) -> bool:
    await ctx.presence.outbound(env)
    return True


async def _inbound(ctx: Context, env: Envelope) -> bool:
    to = env.to
    if to.resource is not None and env.type in (None, "unavailable"):
        # RFC 6121 4.6.3 / 4.5.3: plain presence to a full JID is delivered to
        # that resource or dropped; the presence service keeps no state for
        # it, so it is not asked: in a cluster that saves a gRPC hop (and an
        # account lookup) for each occupant presence a group chat sends
        if to.local is not None and (
            env.frm.bare == to.bare or not await ctx.blocks.blocks(to.bare, env.frm)
        ):
            await ctx.deliver(to, env.data)
        return True
    await ctx.presence.inbound(env)
    return True


FEATURE = Feature(
    name="presence",
    xeps=("RFC 6121",),
    depends=("roster",),
    storage=("roster_items", "last_activity"),
    presence_out=(_outbound,),
    presence_in=(_inbound,),
)
