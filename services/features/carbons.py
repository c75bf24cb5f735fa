"""Message Carbons (XEP-0280 1.0, ``urn:xmpp:carbons:2``) with the
``<no-copy/>`` hint of Message Processing Hints (XEP-0334).

A client turns carbons on and off for its own session with an IQ-set of
``<enable/>`` or ``<disable/>`` (sections 4 and 5), sent without ``to`` (the
account answers: RFC 6121 10.3.3) or to the server's domain. The switch is
the ``"carbons"`` entry of the session's ``flags``, so every router replica
sees it through the session registry, and a new stream starts without it.
Asking twice is not an error (section 9.1). A request for another account,
or from a JID that is no session of this server, gets ``<not-allowed/>``
(sections 4.1 and 5.1).

Copies, each wrapped in ``<sent/>`` or ``<received/>`` with a XEP-0297
``<forwarded/>``, from the user's bare JID to one full JID, keeping the
original's ``type`` (sections 7 and 8), are delivered straight to each
carbons-enabled, available resource:

* ``message_out``, a message a user sends: a ``<sent/>`` copy to each of the
  user's other resources (section 8, whether or not the sender has carbons
  on). A message to the user's own account skips the resources that get
  the original.
* ``message_in``, a message delivered to a user: a ``<received/>`` copy to
  each resource that did not get the original under RFC 6121 8.5.3
  (section 7): all but the addressed one for a full JID; for a bare JID
  (or an absent full JID, routed as bare by RFC 6121 8.5.3.2.1) all but the
  available resources of the highest non-negative priority. The observer
  runs only after a delivery, so a blocked or stored message is not copied.
  A message between two resources of one account gets no ``<received/>``
  copies: its ``<sent/>`` copies reached every other resource already.

Which messages (section 6.1, and 6.2's note that clients must not rely on it):

* copied: type ``chat``; type ``normal`` with a ``<body/>``, or with a
  payload of instant messaging (XEP-0184 receipts, XEP-0085 chat states,
  XEP-0333 markers), a XEP-0249 invitation or a XEP-0045 mediated one;
  private MUC messages a user sends (type ``chat`` to an occupant).
* not copied: ``groupchat``; ``headline`` (notifications, which RFC 6121
  already sends to every non-negative resource when addressed to the bare
  JID); private MUC messages a user receives (a ``<x/>`` of
  ``muc#user`` without an invitation: the room sends them to each joined
  client, section 6.1); anything with ``<private/>`` (section 10) or
  ``<no-copy/>`` (XEP-0334 4.3); anything that already carries ``<sent/>``
  or ``<received/>``.
* ``error``: never. Section 6.1 copies an error in reply to a copied
  message, but which message an error answers is only known by keeping
  state per message (the original payload in an error is optional, RFC
  6120 8.3.1, the reason section 9.3 gives for not trusting it either).
  Hence ``urn:xmpp:carbons:rules:0`` (section 6.2) is not advertised.

Nothing is removed from a message: section 10 dropped the stripping of
``<private/>``, and a ``<sent/>``/``<received/>`` wrapper arriving from
another entity (the impersonation of section 12) is delivered as it is,
from its real sender, which clients must check is their own bare JID; it is
never copied, so it cannot reach a client wearing the user's bare JID.
"""

from __future__ import annotations

import copy

from lxml import etree

from ..core.feature import Context, Feature, IQHandler
from ..core.routing import Envelope, Session
from ..xmpp import ns
from ..xmpp import stanza as st
from ..xmpp.errors import StanzaCondition, StanzaError
from ..xmpp.jid import JID

__all__ = ["CACHE", "CARBONS", "FEATURE", "FLAG", "eligible"]

CARBONS = "urn:xmpp:carbons:2"
FORWARD = "urn:xmpp:forward:0"
HINTS = "urn:xmpp:hints"
#: the entry of Session.flags meaning "carbons enabled"
FLAG = "carbons"

_ENABLE = ns.q(CARBONS, "enable")
_DISABLE = ns.q(CARBONS, "disable")
_PRIVATE = ns.q(CARBONS, "private")
_SENT = ns.q(CARBONS, "sent")
_RECEIVED = ns.q(CARBONS, "received")
_NO_COPY = ns.q(HINTS, "no-copy")
_FORWARDED = ns.q(FORWARD, "forwarded")
_BODY = ns.q(ns.CLIENT, "body")
_MUC_USER = "http://jabber.org/protocol/muc#user"
_MUC_X = ns.q(_MUC_USER, "x")
_MUC_INVITE = ns.q(_MUC_USER, "invite")

#: namespaces of payloads that make a body-less type normal message one of
#: instant messaging (section 6.1): receipts, chat states, chat markers and
#: XEP-0249 invitations
_IM_PAYLOADS = frozenset(
    {"urn:xmpp:receipts", ns.CHATSTATES, "urn:xmpp:chat-markers:0", "jabber:x:conference"}
)


def _is_invitation(x: etree._Element) -> bool:
    return x.find(_MUC_INVITE) is not None


def eligible(el: etree._Element) -> bool:
    """Section 6.1's rules (see the module docstring) for either direction."""
    typ = el.get("type") or "normal"
    if typ not in ("chat", "normal"):
        return False
    for unwanted in (_PRIVATE, _NO_COPY, _SENT, _RECEIVED):
        if el.find(unwanted) is not None:
            return False
    if typ == "chat":
        return True
    for child in el:
        tag = child.tag
        if not isinstance(tag, str):
            continue  # a comment or processing instruction
        if tag == _BODY:
            return True
        if tag == _MUC_X:
            if _is_invitation(child):
                return True
            continue
        if etree.QName(tag).namespace in _IM_PAYLOADS:
            return True
    return False


def _from_room_occupant(el: etree._Element) -> bool:
    """A private message relayed by a MUC room (not an invitation from it)."""
    x = el.find(_MUC_X)
    return x is not None and not _is_invitation(x)


def _carbon(kind: str, user: JID, to: JID, original: etree._Element) -> bytes:
    wrapper = st.make("message", frm=user, to=to, type_=original.get("type"))
    outer = etree.SubElement(wrapper, ns.q(CARBONS, kind), nsmap={None: CARBONS})
    fwd = etree.SubElement(outer, _FORWARDED, nsmap={None: FORWARD})
    fwd.append(original)
    return etree.tostring(wrapper, with_tail=False)


def _original(env: Envelope) -> etree._Element:
    """A copy of the stanza to forward, addressed as it travelled: ``from`` is
    the sender's full JID (the edge stamped it), and a message a client sent
    without ``to`` (to its own account) gets that ``to`` written out."""
    el = copy.deepcopy(env.tree())
    el.tail = None
    el.set("from", str(env.frm))
    if el.get("to") is None:
        el.set("to", str(env.to))
    return el


#: the ``Context.cache`` of the users with a session that turned carbons on
#: ("1"; None: nobody): most messages are of users without, and this saves
#: them a session lookup each way (a Redis read each in a cluster). A copy
#: is dropped everywhere by enable and disable; one kept after such a
#: session ended costs a lookup, nothing else.
CACHE = "carbons"


async def _wanted(ctx: Context, user: JID) -> bool:
    async def load() -> str | None:
        # flags, not availability: a client turns carbons on before its
        # initial presence, which would not drop this copy
        sessions = await ctx.sessions.resources(user)
        return "1" if any(FLAG in s.flags for s in sessions) else None

    return await ctx.cache(CACHE).get(user, load) is not None


def _enabled(sessions: list[Session]) -> list[Session]:
    return [s for s in sessions if s.available and FLAG in s.flags]


def _bare_recipients(sessions: list[Session]) -> set[JID]:
    """Who gets a message to the bare JID under RFC 6121 8.5.2.1.1 (the
    router's rule: the available resources of the top non-negative priority;
    headlines, never copied, would go to all of them)."""
    live = [s for s in sessions if s.available and s.priority >= 0]
    if not live:
        return set()
    top = max(s.priority for s in live)
    return {s.jid for s in live if s.priority == top}


async def _send_copies(
    ctx: Context, kind: str, user: JID, env: Envelope, targets: list[Session]
) -> None:
    if not targets:
        return
    original = _original(env)
    for s in targets:
        # deliver, not route: a copy runs no hooks (it is no new message
        # to copy again) and, should it fail, bounces to nobody (section 9.3)
        await ctx.deliver(s.jid, _carbon(kind, user, s.jid, copy.deepcopy(original)))


async def _sent(ctx: Context, env: Envelope) -> None:
    """Section 8: the sender's other carbons-enabled resources get a copy."""
    frm = env.frm
    if frm.local is None or frm.resource is None:
        return
    user = frm.bare
    if not await _wanted(ctx, user):
        return
    sessions = await ctx.sessions.resources(user)
    # first whether anyone wants copies: most users have no other resource
    # with carbons on, and then the message is not looked into at all
    if not any(s.jid != frm for s in _enabled(sessions)) or not eligible(env.tree()):
        return
    skip = {frm}
    if env.to.bare == user and ctx.is_local(env.to.domain):
        # to the user's own account: who gets the original needs no copy
        own = await ctx.sessions.get(env.to) if env.to.resource is not None else None
        skip |= {own.jid} if own is not None else _bare_recipients(sessions)
    await _send_copies(ctx, "sent", user, env, [s for s in _enabled(sessions) if s.jid not in skip])


async def _received(ctx: Context, env: Envelope) -> None:
    """Section 7: the recipient's carbons-enabled resources that did not get
    the message get a copy."""
    to = env.to
    user = to.bare
    if to.local is None or env.frm.bare == user:
        return
    if not await _wanted(ctx, user):
        return
    sessions = await ctx.sessions.resources(user)
    enabled = _enabled(sessions)
    if not enabled or (to.resource is not None and all(s.jid == to for s in enabled)):
        return  # nobody to copy to: the message is not looked into
    el = env.tree()
    if not eligible(el) or _from_room_occupant(el):
        return
    addressed = next((s for s in sessions if s.jid == to), None) if to.resource else None
    got = {addressed.jid} if addressed is not None else _bare_recipients(sessions)
    await _send_copies(ctx, "received", user, env, [s for s in enabled if s.jid not in got])


async def _requester(ctx: Context, env: Envelope) -> Session:
    """The session asking to switch carbons: its own, of this server."""
    frm = env.frm
    if frm.local is None or frm.resource is None or not ctx.is_local(frm.domain):
        raise StanzaError(StanzaCondition.NOT_ALLOWED, "carbons are for this server's clients")
    if env.to.local is not None and env.to.bare != frm.bare:
        raise StanzaError(StanzaCondition.NOT_ALLOWED, "carbons of another account")
    s = await ctx.sessions.get(frm)
    if s is None:
        raise StanzaError(StanzaCondition.NOT_ALLOWED, "no such session")
    return s


async def _enable(ctx: Context, env: Envelope, payload: etree._Element) -> None:
    s = await _requester(ctx, env)
    if FLAG not in s.flags:
        s.flags.add(FLAG)
        await ctx.sessions.update(s)
    ctx.cache(CACHE).invalidate(s.jid)
    return None


async def _disable(ctx: Context, env: Envelope, payload: etree._Element) -> None:
    s = await _requester(ctx, env)
    if FLAG in s.flags:
        s.flags.discard(FLAG)
        await ctx.sessions.update(s)
    ctx.cache(CACHE).invalidate(s.jid)
    return None


_IQ: dict[tuple[str, str], IQHandler] = {(_ENABLE, "set"): _enable, (_DISABLE, "set"): _disable}

FEATURE = Feature(
    name="carbons",
    xeps=("XEP-0280", "XEP-0334"),
    disco_features=(CARBONS,),
    server_iq=dict(_IQ),
    account_iq=dict(_IQ),
    message_out=(_sent,),
    message_in=(_received,),
)
