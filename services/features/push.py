"""Push notifications (XEP-0357), the user's server side.

A client registers an app server's XMPP Push Service (a JID and a node) for
its account; when a message the user would want to hear about cannot reach
a connected client, the server publishes a summary to every registration
and the app server wakes the device through its vendor's push service.

Rules chosen:

- **Enable** (section 5): ``<enable jid node/>`` set to the user's own bare
  JID (forbidden for anyone else: only the account owner). ``jid`` is
  required and must be a JID, ``node`` is required as the XEP's schema says
  (bad-request otherwise). An optional data form of FORM_TYPE
  ``http://jabber.org/protocol/pubsub#publish-options`` (type submit) is kept
  as it was sent and goes into each publish (another form: bad-request).
  The same (jid, node) enabled again replaces its options. At most
  ``push_max_registrations`` per user: past it ``not-acceptable`` (modify):
  the XEP sets no limit, and it is a per-account quota the client fixes by
  disabling one (``resource-constraint`` is type wait: retrying would not
  help).
- **Disable** (section 6): ``<disable jid node?/>`` removes that (jid, node),
  or every registration of ``jid`` without a node; removing nothing is not
  an error.
- **When** (section 7): a chat or normal message with a body or an
  end-to-end encrypted payload (OMEMO, legacy OpenPGP, OX), nothing else:
  not chat states, receipts, markers, errors, groupchat or headlines.
  (a) It found no resource and goes to offline storage: the ``undelivered``
  hook runs before offline's (load order, ``catalog.py``) and returns False,
  so offline storage still keeps it; no notification when offline storage
  is full (it refuses the message). (b) It was queued for a session that
  waits for XEP-0198 resumption: the ``detached_delivery`` hook, run by the
  edge holding the session with its own context.
- **What** (section 7): an IQ set from the user's bare JID to the app
  server, ``<pubsub><publish node><item><notification>`` with a
  ``urn:xmpp:push:summary`` form: ``message-count`` (the messages waiting
  in offline storage, this one included), ``last-message-sender`` (the
  message's ``from``) and, only with ``push_include_body``,
  ``last-message-body`` (off by default: the body would cross the app
  server and the phone vendor, section 10); then ``<publish-options>`` with
  the stored form, when there is one. Every registration of the user gets
  it (no per-session registrations, no rate limit).
- **Publish errors** (section 7.1): the IQ id names the registration (a
  digest of its jid and node). An IQ error to the user's bare JID from the
  registered JID with such an id removes that registration, unless its type
  is ``wait`` (transient: kept, as the XEP allows). The router drops IQ
  errors to a bare JID, so the feature sees them as a filter that never
  stops anything. Errors the server itself generates for an unreachable app
  server (routed as trusted, past the filters) are not seen, so they remove
  nothing.
- A failure of this feature (storage, routing) is logged and never costs
  the message its delivery or its offline copy.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time

from lxml import etree

from ..core.feature import Context, Drop, Feature
from ..core.routing import Envelope
from ..core.storage import PushRegistration
from ..xmpp import forms, ns
from ..xmpp import stanza as st
from ..xmpp.errors import StanzaCondition, StanzaError
from ..xmpp.jid import JID
from ..xmpp.tree import parse_element

__all__ = ["FEATURE", "PUSH", "SUMMARY", "notification", "worth_notifying"]

log = logging.getLogger("xmppd.features.push")

PUSH = "urn:xmpp:push:0"
SUMMARY = "urn:xmpp:push:summary"
PUBSUB = "http://jabber.org/protocol/pubsub"
PUBLISH_OPTIONS = "http://jabber.org/protocol/pubsub#publish-options"

_ENABLE = ns.q(PUSH, "enable")
_DISABLE = ns.q(PUSH, "disable")
_MESSAGE = ns.q(ns.CLIENT, "message")
_BODY = ns.q(ns.CLIENT, "body")
_ERROR = ns.q(ns.CLIENT, "error")
#: payloads that are the conversation even without a body (the same as the
#: archive's: end-to-end encrypted messages whose client sent no fallback body)
_ENCRYPTED = (
    "{eu.siacs.conversations.axolotl}encrypted",
    "{urn:xmpp:omemo:2}encrypted",
    "{jabber:x:encrypted}x",
    "{urn:xmpp:openpgp:0}openpgp",
)
#: the ids of notification IQs: the prefix, then the registration's digest
_ID_PREFIX = "push-"


def worth_notifying(el: etree._Element) -> bool:
    """A chat or normal message with a body or an encrypted payload."""
    if el.tag != _MESSAGE or (el.get("type") or "normal") not in ("normal", "chat"):
        return False
    for child in el:
        if child.tag == _BODY or child.tag in _ENCRYPTED:
            return True
    return False


def _digest(reg: PushRegistration) -> str:
    # names the registration in the IQ id without showing the node (a
    # credential of the app server's) to whoever sees the id
    return hashlib.sha256(f"{reg.jid}\0{reg.node}".encode()).hexdigest()[:16]


def notification(
    user: JID, reg: PushRegistration, count: int, sender: str | None, body: str | None
) -> etree._Element:
    """The publish IQ of section 7 for one registration."""
    iq = st.make(
        "iq",
        to=reg.jid,
        frm=user,
        type_="set",
        id_=f"{_ID_PREFIX}{_digest(reg)}-{secrets.token_hex(6)}",
    )
    pubsub = etree.SubElement(iq, ns.q(PUBSUB, "pubsub"), nsmap={None: PUBSUB})
    publish = etree.SubElement(pubsub, ns.q(PUBSUB, "publish"), node=reg.node)
    item = etree.SubElement(publish, ns.q(PUBSUB, "item"))
    note = etree.SubElement(item, ns.q(PUSH, "notification"), nsmap={None: PUSH})
    fields = [forms.Field("message-count", values=[str(count)])]
    if sender:
        fields.append(forms.Field("last-message-sender", values=[sender]))
    if body is not None:
        fields.append(forms.Field("last-message-body", values=[body]))
    note.append(forms.build_form("submit", SUMMARY, fields))
    if reg.options is not None:
        options = etree.SubElement(pubsub, ns.q(PUBSUB, "publish-options"))
        options.append(parse_element(reg.options))
    return iq


async def _notify(ctx: Context, user: JID, el: etree._Element, *, offline: bool) -> None:
    """Publish a summary of ``el`` to each of ``user``'s registrations.
    ``offline``: the message is about to go to offline storage."""
    assert user.local is not None
    storage = ctx.storage
    try:
        regs = await storage.get_push_registrations(user.domain, user.local)
        if not regs:
            return
        waiting = await storage.count_offline(user.domain, user.local)
        if offline and waiting >= ctx.settings.offline_quota:
            return  # offline storage refuses it: the sender gets the error, nobody waits
        body = el.findtext(_BODY) if ctx.settings.push_include_body else None
        sender = el.get("from")
    except Exception:
        log.exception("push: reading the registrations of %s failed", user)
        return
    for reg in regs:
        try:
            await ctx.send(notification(user, reg, waiting + 1, sender, body))
        except Exception:  # one registration's failure must not cost the others theirs
            log.exception("push: notifying %s for %s failed", reg.jid, user)


# ---- hooks -----------------------------------------------------------------------


async def _undelivered(ctx: Context, env: Envelope) -> bool:
    if env.kind == "message" and worth_notifying(env.tree()):
        await _notify(ctx, env.to.bare, env.tree(), offline=True)
    return False  # not kept here: offline storage, next in the chain, keeps it


async def _detached(ctx: Context, jid: JID, data: bytes) -> None:
    try:
        el = parse_element(data)
    except etree.XMLSyntaxError:
        return
    if worth_notifying(el):
        await _notify(ctx, jid.bare, el, offline=False)


async def _publish_error(ctx: Context, env: Envelope) -> Drop | None:
    """Section 7.1, as a filter that lets everything pass (see the module docstring)."""
    iq_id = env.id
    if env.kind != "iq" or env.type != "error" or not iq_id or not iq_id.startswith(_ID_PREFIX):
        return None
    user = env.to
    if user.resource is not None or user.local is None or not ctx.is_local(user.domain):
        return None
    digest = iq_id[len(_ID_PREFIX) :].split("-", 1)[0]
    err = env.tree().find(_ERROR)
    if err is not None and err.get("type") == "wait":
        return None  # transient: the registration stays
    sender = str(env.frm)
    try:
        for reg in await ctx.storage.get_push_registrations(user.domain, user.local):
            if reg.jid == sender and _digest(reg) == digest:
                await ctx.storage.delete_push_registrations(
                    user.domain, user.local, reg.jid, reg.node
                )
                log.info("push: %s answered an error, %s's registration removed", sender, user)
    except Exception:
        log.exception("push: removing a failed registration of %s failed", user)
    return None


# ---- IQ handlers -----------------------------------------------------------------


def _owner(env: Envelope) -> JID:
    user = env.to.bare
    if env.frm.bare != user or user.local is None:
        raise StanzaError(StanzaCondition.FORBIDDEN)
    return user


def _service(payload: etree._Element) -> str:
    raw = payload.get("jid")
    if not raw:
        raise StanzaError(StanzaCondition.BAD_REQUEST, "the push service's jid is missing")
    try:
        return str(JID.parse(raw))
    except StanzaError:
        raise StanzaError(
            StanzaCondition.BAD_REQUEST, "the push service's jid is not a JID"
        ) from None


async def _enable(ctx: Context, env: Envelope, payload: etree._Element) -> None:
    user = _owner(env)
    assert user.local is not None
    service = _service(payload)
    node = payload.get("node")
    if not node:
        raise StanzaError(StanzaCondition.BAD_REQUEST, "the node is missing")
    given = list(payload.iterchildren(forms.X))
    if len(given) > 1:
        raise StanzaError(StanzaCondition.BAD_REQUEST, "one publish-options form at most")
    options = None
    if given:
        forms.parse_form(given[0], PUBLISH_OPTIONS, allowed_types=("submit",))
        options = etree.tostring(given[0], with_tail=False)
    limit = ctx.settings.push_max_registrations
    reg = PushRegistration(jid=service, node=node, options=options, created=time.time())
    if not await ctx.storage.put_push_registration(user.domain, user.local, reg, limit):
        raise StanzaError(
            StanzaCondition.NOT_ACCEPTABLE, f"at most {limit} push registrations per account"
        )


async def _disable(ctx: Context, env: Envelope, payload: etree._Element) -> None:
    user = _owner(env)
    assert user.local is not None
    service = _service(payload)
    node = payload.get("node") or None
    await ctx.storage.delete_push_registrations(user.domain, user.local, service, node)


FEATURE = Feature(
    name="push",
    xeps=("XEP-0357",),
    storage=("push_registrations",),
    account_disco_features=(PUSH,),
    account_iq={(_ENABLE, "set"): _enable, (_DISABLE, "set"): _disable},
    filters=(_publish_error,),
    undelivered=(_undelivered,),
    detached_delivery=(_detached,),
)
