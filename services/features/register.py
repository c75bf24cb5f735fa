"""In-band registration (XEP-0077): create, change the password of, and
cancel accounts.

Before authentication the edge hands registration IQs to :func:`preauth`,
which returns the reply to send (result or error):

* get: instructions and the ``<username/>``/``<password/>`` fields, plus the
  same fields as a ``jabber:iq:register`` data form (section 4);
* set: create the account with SCRAM-SHA-1 and SCRAM-SHA-256 credentials.
  A missing or empty username or password, or a username that is not a
  valid JID localpart (RFC 7622, UsernameCaseMapped) or password that
  SASLprep rejects, is not-acceptable (section 3.1; the XEP has no
  condition for a bad username, not-acceptable is what it uses for bad
  fields); a taken username is conflict; ``<remove/>`` before
  authentication is not-authorized. Past ``registration_limit_per_hour``
  accounts created from the client's IP address, resource-constraint (type
  wait, as ejabberd's registration_timeout answers): the XEP's section 3.1
  allows not-acceptable for "too many times before authenticating" on one
  stream, but that is the condition of a bad field here, and this limit is
  one on the address that a later attempt may pass.

After authentication (``to`` the domain, or no ``to``, meaning the user's own
account; someone else's account is forbidden):

* get: ``<registered/>`` with the username;
* set ``<remove/>``: delete the account and all its data, answer the result,
  then close all the account's sessions with the ``not-authorized`` stream
  error (section 3.2); ``<remove/>`` with siblings is bad-request;
* set ``<username/>`` + ``<password/>``: change the password (section 3.3). A
  missing username or an empty password is bad-request, someone else's
  username forbidden.

With ``settings.registration`` off everything answers service-unavailable
except password change and cancellation.
"""

from __future__ import annotations

import asyncio

from lxml import etree

from ..core.feature import NO_REPLY, Context, Feature
from ..core.routing import Envelope
from ..core.storage import ScramCredentials
from ..security.throttle import AuthThrottle
from ..xmpp import forms, ns
from ..xmpp import stanza as st
from ..xmpp.errors import SaslFailure, StanzaCondition, StanzaError, stanza_error_reply
from ..xmpp.jid import JID
from ..xmpp.sasl import derive_credentials

__all__ = ["FEATURE", "HASHES", "INSTRUCTIONS", "preauth"]

_QUERY = ns.q(ns.REGISTER, "query")
_USERNAME = ns.q(ns.REGISTER, "username")
_PASSWORD = ns.q(ns.REGISTER, "password")
_REMOVE = ns.q(ns.REGISTER, "remove")
_REGISTERED = ns.q(ns.REGISTER, "registered")
_INSTRUCTIONS = ns.q(ns.REGISTER, "instructions")

#: the SCRAM hashes credentials are derived for
HASHES = ("SHA-1", "SHA-256")
INSTRUCTIONS = "Choose a username and password to register with this server."


def _query() -> etree._Element:
    return etree.Element(_QUERY, nsmap={None: ns.REGISTER})


def _fields(query: etree._Element) -> dict[str, str | None]:
    """username/password as submitted: the data form takes precedence (section 6)."""
    form = forms.find_form(query, ns.REGISTER)
    if form is None:
        form = forms.find_form(query)
    if form is not None:
        values = forms.parse_form(form, allowed_types=("submit",))
        return {k: (values[k][0] if values.get(k) else None) for k in ("username", "password")}
    out: dict[str, str | None] = {}
    for key, tag in (("username", _USERNAME), ("password", _PASSWORD)):
        el = query.find(tag)
        out[key] = None if el is None else (el.text or "")
    return out


async def _credentials(password: str) -> list[ScramCredentials]:
    """SCRAM credentials for every hash in :data:`HASHES` (PBKDF2 off the event loop)."""

    def derive() -> list[ScramCredentials]:
        return [derive_credentials(password, h) for h in HASHES]

    try:
        return await asyncio.to_thread(derive)
    except SaslFailure:
        raise StanzaError(StanzaCondition.NOT_ACCEPTABLE, "password not acceptable") from None


# ------------------------------------------------------------ before authentication


def _registration_form() -> etree._Element:
    q = _query()
    etree.SubElement(q, _INSTRUCTIONS).text = INSTRUCTIONS
    etree.SubElement(q, _USERNAME)
    etree.SubElement(q, _PASSWORD)
    q.append(
        forms.build_form(
            "form",
            ns.REGISTER,
            [
                forms.Field("username", "text-single", "Username", required=True),
                forms.Field("password", "text-private", "Password", required=True),
            ],
            title="Account registration",
            instructions=INSTRUCTIONS,
        )
    )
    return q


async def _preauth(
    ctx: Context, host: str, iq: etree._Element, ip: str, limit: AuthThrottle | None
) -> etree._Element | None:
    if not ctx.settings.registration:
        raise StanzaError(StanzaCondition.SERVICE_UNAVAILABLE)
    to = iq.get("to")
    if to is not None and (JID.parse(to) != JID(None, host) or not ctx.is_local(host)):
        raise StanzaError(StanzaCondition.SERVICE_UNAVAILABLE)
    typ = iq.get("type")
    query = iq[0] if len(iq) == 1 else None
    if typ not in ("get", "set") or query is None:
        raise StanzaError(StanzaCondition.BAD_REQUEST)
    if query.tag != _QUERY:
        raise StanzaError(StanzaCondition.SERVICE_UNAVAILABLE)
    if typ == "get":
        return _registration_form()
    if query.find(_REMOVE) is not None:
        raise StanzaError(StanzaCondition.NOT_AUTHORIZED, "authenticate before cancelling")
    values = _fields(query)
    username, password = values["username"], values["password"]
    if not username or not password:
        raise StanzaError(StanzaCondition.NOT_ACCEPTABLE, "username and password are required")
    try:
        local = JID.make(username, host).local
    except StanzaError:
        raise StanzaError(StanzaCondition.NOT_ACCEPTABLE, "invalid username") from None
    assert local is not None
    if await ctx.storage.get_account(host, local) is not None:
        raise StanzaError(StanzaCondition.CONFLICT, "username taken")
    if limit is not None and not await limit.reserve_registration(ip):
        raise StanzaError(
            StanzaCondition.RESOURCE_CONSTRAINT,
            "too many registrations from your address; try again later",
        )
    created = False
    try:
        creds = await _credentials(password)
        created = await ctx.storage.create_account(host, local, creds)
    finally:
        if not created and limit is not None:
            await limit.release_registration(ip)
    if not created:
        raise StanzaError(StanzaCondition.CONFLICT, "username taken")
    return None


async def preauth(
    ctx: Context,
    host: str,
    iq: etree._Element,
    *,
    ip: str = "",
    limit: AuthThrottle | None = None,
) -> etree._Element:
    """Answer a registration IQ received before authentication on a stream to ``host``
    from a client at ``ip``; ``limit`` counts the accounts created per address.

    Returns the element to send back: the IQ result, or the IQ error.
    """
    try:
        payload = await _preauth(ctx, host, iq, ip, limit)
    except StanzaError as err:
        return stanza_error_reply(iq, err)
    return st.iq_result(iq, payload)


# ------------------------------------------------------------- after authentication


def _account(ctx: Context, env: Envelope) -> JID:
    """The account the request is about: the sender's own, or forbidden."""
    user = env.frm.bare
    if user.local is None or not ctx.is_local(user.domain):
        raise StanzaError(StanzaCondition.SERVICE_UNAVAILABLE)
    if env.to.local is not None and env.to.bare != user:
        raise StanzaError(StanzaCondition.FORBIDDEN)
    return user


async def _get(ctx: Context, env: Envelope, payload: etree._Element) -> etree._Element:
    user = _account(ctx, env)
    if not ctx.settings.registration:
        raise StanzaError(StanzaCondition.SERVICE_UNAVAILABLE)
    q = _query()
    etree.SubElement(q, _REGISTERED)
    etree.SubElement(q, _USERNAME).text = user.local
    etree.SubElement(q, _PASSWORD)
    return q


async def _set(ctx: Context, env: Envelope, payload: etree._Element) -> etree._Element | None:
    user = _account(ctx, env)
    if payload.find(_REMOVE) is not None:
        if len([c for c in payload if isinstance(c.tag, str)]) != 1:
            raise StanzaError(StanzaCondition.BAD_REQUEST, "remove must be the only child")
        await _cancel(ctx, env, user)
        return NO_REPLY
    values = _fields(payload)
    username, password = values["username"], values["password"]
    if password is None and username is None:
        if not ctx.settings.registration:
            raise StanzaError(StanzaCondition.SERVICE_UNAVAILABLE)
        raise StanzaError(StanzaCondition.BAD_REQUEST, "nothing to do")
    if not username or not password:
        raise StanzaError(StanzaCondition.BAD_REQUEST, "username and a password are required")
    if not _is_user(username, user):
        raise StanzaError(StanzaCondition.FORBIDDEN, "not your account")
    assert user.local is not None
    creds = await _credentials(password)
    if not await ctx.storage.set_credentials(user.domain, user.local, creds):
        raise StanzaError(StanzaCondition.REGISTRATION_REQUIRED)
    return None


def _is_user(username: str, user: JID) -> bool:
    """Does ``username`` (a localpart or a bare JID) name ``user``?"""
    try:
        named = JID.parse(username) if "@" in username else JID.make(username, user.domain)
    except StanzaError:
        return False
    return named == user


async def _cancel(ctx: Context, env: Envelope, user: JID) -> None:
    assert user.local is not None
    if not await ctx.storage.delete_account(user.domain, user.local):
        raise StanzaError(StanzaCondition.REGISTRATION_REQUIRED)
    await ctx.features.remove_account(ctx, user)
    reply = st.make("iq", to=env.frm, frm=env.to, type_="result", id_=env.id)
    if env.frm.resource is not None:
        await ctx.deliver(env.frm, etree.tostring(reply, with_tail=False))
    else:
        await ctx.send(reply)
    for s in await ctx.sessions.resources(user):
        await ctx.close_session(s, "not-authorized", "account removed")


FEATURE = Feature(
    name="register",
    xeps=("XEP-0077", "XEP-0004"),
    storage=("accounts", "scram_credentials"),
    disco_features=(ns.REGISTER,),
    server_iq={(_QUERY, "get"): _get, (_QUERY, "set"): _set},
    account_iq={(_QUERY, "get"): _get, (_QUERY, "set"): _set},
)
