"""Blocking command (XEP-0191).

* get ``<blocklist/>``: the account's blocked JIDs.
* set ``<block/>`` with one or more ``<item jid=.../>``: add them; no item is
  bad-request, an unparseable JID jid-malformed (nothing is stored then).
* set ``<unblock/>``: remove the listed JIDs, or everything when it lists
  none.

Only the owner may use the list (``to`` absent or their own bare JID),
anyone else gets forbidden. JIDs are stored prepared (RFC 7622), so the
router's :class:`~services.router.blocking.BlockCache` compares like with
like; the cache entry is dropped after each change.

After each change the server answers the requester, then pushes the same
``<block/>``/``<unblock/>`` to the account's bound resources (section 3.3 and
3.4). The XEP addresses pushes to the resources "that have requested the
block list"; this implementation pushes to all bound resources instead,
which needs no per-session state and works the same when the session
registry is shared across a cluster; clients that did not ask ignore the
push (or answer it with an error that the server drops).
"""

from __future__ import annotations

import copy
import secrets

from lxml import etree

from ..core.feature import DROP, NO_REPLY, Context, Drop, Feature
from ..core.routing import Envelope
from ..xmpp import ns
from ..xmpp import stanza as st
from ..xmpp.errors import StanzaCondition, StanzaError
from ..xmpp.jid import JID

__all__ = ["FEATURE", "parse_items"]

_BLOCKLIST = ns.q(ns.BLOCKING, "blocklist")
_BLOCK = ns.q(ns.BLOCKING, "block")
_UNBLOCK = ns.q(ns.BLOCKING, "unblock")
_ITEM = ns.q(ns.BLOCKING, "item")


def _owner(env: Envelope) -> JID:
    user = env.to.bare
    if env.frm.bare != user or user.local is None:
        raise StanzaError(StanzaCondition.FORBIDDEN)
    return user


def parse_items(payload: etree._Element) -> list[str]:
    """The prepared JIDs of the ``<item/>`` children (jid-malformed if one is bad)."""
    out: list[str] = []
    for item in payload.iterchildren(_ITEM):
        out.append(str(JID.parse(item.get("jid") or "")))
    return list(dict.fromkeys(out))


def _element(tag: str, jids: list[str]) -> etree._Element:
    el = etree.Element(tag, nsmap={None: ns.BLOCKING})
    for j in jids:
        etree.SubElement(el, _ITEM, jid=j)
    return el


async def _answer_and_push(ctx: Context, env: Envelope, user: JID, push: etree._Element) -> None:
    reply = st.make("iq", to=env.frm, frm=env.to, type_="result", id_=env.id)
    if env.frm.resource is not None and ctx.is_local(env.frm.domain):
        await ctx.deliver(env.frm, etree.tostring(reply, with_tail=False))
    else:
        await ctx.send(reply)
    for s in await ctx.sessions.resources(user):
        iq = st.make("iq", to=s.jid, frm=user, type_="set", id_=f"block-{secrets.token_hex(6)}")
        iq.append(copy.deepcopy(push))
        await ctx.deliver(s.jid, etree.tostring(iq, with_tail=False))


async def _get(ctx: Context, env: Envelope, payload: etree._Element) -> etree._Element:
    user = _owner(env)
    assert user.local is not None
    return _element(_BLOCKLIST, await ctx.storage.get_blocklist(user.domain, user.local))


async def _block(ctx: Context, env: Envelope, payload: etree._Element) -> etree._Element:
    user = _owner(env)
    assert user.local is not None
    jids = parse_items(payload)
    if not jids:
        raise StanzaError(StanzaCondition.BAD_REQUEST, "block needs at least one item")
    await ctx.storage.add_blocks(user.domain, user.local, jids)
    ctx.blocks.invalidate(user)
    await _answer_and_push(ctx, env, user, _element(_BLOCK, jids))
    return NO_REPLY


async def _unblock(ctx: Context, env: Envelope, payload: etree._Element) -> etree._Element:
    user = _owner(env)
    assert user.local is not None
    jids = parse_items(payload)
    await ctx.storage.remove_blocks(user.domain, user.local, jids or None)
    ctx.blocks.invalidate(user)
    await _answer_and_push(ctx, env, user, _element(_UNBLOCK, jids))
    return NO_REPLY


async def _filter(ctx: Context, env: Envelope) -> Drop | None:
    """Section 3.4 and 3.5: nothing passes between a user and whom they block,
    either way. The blocker's own stanzas to a blocked JID are refused with
    not-acceptable and <blocked/>; stanzas to a blocker look, to the sender,
    as if the blocker were offline (service-unavailable for what expects an
    answer); presence is dropped."""
    frm, to = env.frm, env.to
    if frm.bare == to.bare:
        return None
    blocks = ctx.blocks
    if frm.local is not None and ctx.is_local(frm.domain) and await blocks.blocks(frm, to):
        if env.kind != "presence":
            app = etree.Element(
                ns.q(ns.BLOCKING_ERRORS, "blocked"), nsmap={None: ns.BLOCKING_ERRORS}
            )
            raise StanzaError(StanzaCondition.NOT_ACCEPTABLE, app_condition=app)
        return DROP
    if to.local is not None and ctx.is_local(to.domain) and await blocks.blocks(to, frm):
        if (env.kind == "iq" and env.type in ("get", "set")) or (
            env.kind == "message" and env.type not in ("error", "groupchat", "headline")
        ):
            raise StanzaError(StanzaCondition.SERVICE_UNAVAILABLE)
        return DROP
    return None


def _changing(ctx: Context, env: Envelope) -> None:
    """A block or unblock command is on its way to a router, which applies it
    and tells every process; the sender's next stanza may be delivered from
    this process before that news arrives, so its copy goes now."""
    ctx.blocks.forget(env.frm)


async def _account_removed(ctx: Context, user: JID) -> None:
    ctx.blocks.invalidate(user)


FEATURE = Feature(
    name="blocking",
    xeps=("XEP-0191",),
    storage=("blocklist",),
    filters=(_filter,),
    edge_iq={(_BLOCK, "set"): _changing, (_UNBLOCK, "set"): _changing},
    account_removed=(_account_removed,),
    disco_features=(ns.BLOCKING,),
    account_disco_features=(ns.BLOCKING,),
    account_iq={
        (_BLOCKLIST, "get"): _get,
        (_BLOCK, "set"): _block,
        (_UNBLOCK, "set"): _unblock,
    },
)
