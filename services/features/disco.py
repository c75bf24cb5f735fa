"""Service discovery (XEP-0030), its extended forms (XEP-0128) and the
server's entity capabilities (XEP-0115).

* The server (``to`` a served domain) is ``server/im`` named
  ``settings.server_name``, with every feature the loaded modules declare, and
  a ``http://jabber.org/network/serverinfo`` form carrying the XEP-0157
  ``admin-addresses``. Its disco#items list the services and the external
  components (XEP-0114) the server routes to, by domain.
* An account (a local bare JID) is ``account/registered``. Its owner gets the
  features the modules declare for accounts; anyone else gets the identity
  only (the router has already answered service-unavailable if the account
  does not exist).
* A ``node`` is answered only for the server's own caps node
  ``https://xmppd.dev#<ver>`` (XEP-0115 section 6.2) and, on an account, for
  the nodes features declare (``Feature.account_disco_nodes``: XEP-0013's
  offline message node, say); any other node is item-not-found.

:func:`caps_ver` computes the XEP-0115 section 5.1 verification string of
exactly what disco#info answers, and :func:`caps_feature` the ``<c/>`` the
edge puts in the post-bind stream features.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from lxml import etree

from ..core.feature import Context, Feature
from ..core.routing import Envelope
from ..xmpp import forms, ns
from ..xmpp.errors import StanzaCondition, StanzaError

__all__ = [
    "CAPS_NODE",
    "FEATURE",
    "Identity",
    "account_info",
    "caps_feature",
    "caps_ver",
    "info_element",
    "server_info",
    "ver_of_info",
    "verification_string",
]

#: the XEP-0115 node naming this software
CAPS_NODE = "https://xmppd.dev"

_INFO_QUERY = ns.q(ns.DISCO_INFO, "query")
_ITEMS_QUERY = ns.q(ns.DISCO_ITEMS, "query")
_IDENTITY = ns.q(ns.DISCO_INFO, "identity")
_FEATURE = ns.q(ns.DISCO_INFO, "feature")
_XML_LANG = ns.q(ns.XML, "lang")

_OWN = (ns.DISCO_INFO, ns.DISCO_ITEMS)


@dataclass(frozen=True, slots=True)
class Identity:
    category: str
    type: str
    name: str | None = None
    lang: str | None = None


# ----------------------------------------------------------------- disco#info


def info_element(
    identities: Iterable[Identity],
    features: Iterable[str],
    extensions: Iterable[etree._Element] = (),
    node: str | None = None,
) -> etree._Element:
    """``<query xmlns='http://jabber.org/protocol/disco#info'/>`` with the given content."""
    q = etree.Element(_INFO_QUERY, nsmap={None: ns.DISCO_INFO})
    if node is not None:
        q.set("node", node)
    for ident in identities:
        el = etree.SubElement(q, _IDENTITY, category=ident.category, type=ident.type)
        if ident.name is not None:
            el.set("name", ident.name)
        if ident.lang is not None:
            el.set(_XML_LANG, ident.lang)
    for var in features:
        etree.SubElement(q, _FEATURE, var=var)
    for x in extensions:
        q.append(x)
    return q


def _server_parts(ctx: Context) -> tuple[list[Identity], list[str], list[etree._Element]]:
    identities = [Identity("server", "im", ctx.settings.server_name)]
    features = sorted({*ctx.features.disco_features(), *_OWN})
    serverinfo = forms.build_form(
        "result",
        ns.SERVERINFO,
        [forms.Field("admin-addresses", "list-multi", values=list(ctx.settings.contact_addresses))]
        if ctx.settings.contact_addresses
        else [],
    )
    return identities, features, [serverinfo]


def server_info(ctx: Context, node: str | None = None) -> etree._Element:
    """The server's disco#info query element."""
    identities, features, extensions = _server_parts(ctx)
    return info_element(identities, features, extensions, node)


def account_info(ctx: Context, full: bool, node: str | None = None) -> etree._Element:
    """An account's disco#info: everything for its owner (``full``), else the identity."""
    features = sorted({*ctx.features.account_disco_features(), *_OWN}) if full else []
    identities = [Identity("account", "registered")]
    identities += [Identity(c, t) for c, t in ctx.features.account_identities()]
    return info_element(identities, features, (), node)


async def _server_info(ctx: Context, env: Envelope, payload: etree._Element) -> etree._Element:
    node = payload.get("node")
    if node is not None and node != f"{CAPS_NODE}#{caps_ver(ctx)}":
        raise StanzaError(StanzaCondition.ITEM_NOT_FOUND)
    return server_info(ctx, node)


async def _node(
    ctx: Context, env: Envelope, payload: etree._Element, kind: str
) -> etree._Element | None:
    node = payload.get("node") or ""
    handler = ctx.features.account_disco_nodes.get((node, kind))
    if handler is None:
        raise StanzaError(StanzaCondition.ITEM_NOT_FOUND)
    return await handler(ctx, env, payload)


async def _account_info(
    ctx: Context, env: Envelope, payload: etree._Element
) -> etree._Element | None:
    if payload.get("node") is not None:
        return await _node(ctx, env, payload, "info")
    return account_info(ctx, full=env.frm.bare == env.to.bare)


# ---------------------------------------------------------------- disco#items


_ITEM = ns.q(ns.DISCO_ITEMS, "item")


async def _items(ctx: Context, env: Envelope, payload: etree._Element) -> etree._Element | None:
    if payload.get("node") is not None:
        if env.to.local is None:
            raise StanzaError(StanzaCondition.ITEM_NOT_FOUND)
        return await _node(ctx, env, payload, "items")
    q = etree.Element(_ITEMS_QUERY, nsmap={None: ns.DISCO_ITEMS})
    if env.to.local is None:  # the server: its services and components
        for domain, name in await ctx.service_domains():
            etree.SubElement(q, _ITEM, jid=domain, name=name)
    return q


# ---------------------------------------------------------------- XEP-0115


def verification_string(
    identities: Iterable[Identity],
    features: Iterable[str],
    extensions: Iterable[etree._Element] = (),
) -> str:
    """XEP-0115 section 5.1: SHA-1 over identities, features and forms, base64."""
    s: list[str] = []
    idents = sorted(identities, key=lambda i: (i.category, i.type, i.lang or "", i.name or ""))
    for i in idents:
        s.append(f"{i.category}/{i.type}/{i.lang or ''}/{i.name or ''}<")
    for var in sorted(features):
        s.append(f"{var}<")
    typed: list[tuple[str, list[forms.Field]]] = []
    for x in extensions:
        fields = forms.parse_fields(x)
        ft = next((f for f in fields if f.var == forms.FORM_TYPE_VAR), None)
        if ft is None or not ft.values:
            continue  # section 5.4: forms without a FORM_TYPE are ignored
        typed.append((ft.values[0], fields))
    for form_type, fields in sorted(typed, key=lambda t: t[0]):
        s.append(f"{form_type}<")
        named = [f for f in fields if f.var is not None and f.var != forms.FORM_TYPE_VAR]
        for f in sorted(named, key=lambda f: f.var or ""):
            s.append(f"{f.var}<")
            for v in sorted(f.values):
                s.append(f"{v}<")
    digest = hashlib.sha1("".join(s).encode("utf-8")).digest()
    return base64.b64encode(digest).decode("ascii")


def ver_of_info(query: etree._Element) -> str:
    """The verification string of a disco#info ``<query/>`` element."""
    identities = [
        Identity(
            el.get("category") or "",
            el.get("type") or "",
            el.get("name"),
            el.get(_XML_LANG),
        )
        for el in query.iterchildren(_IDENTITY)
    ]
    features = [el.get("var") or "" for el in query.iterchildren(_FEATURE)]
    extensions = list(query.iterchildren(forms.X))
    return verification_string(identities, features, extensions)


def caps_ver(ctx: Context) -> str:
    """The ``ver`` of the server's own disco#info."""
    return verification_string(*_server_parts(ctx))


def caps_feature(ctx: Context) -> bytes:
    """``<c xmlns='http://jabber.org/protocol/caps'/>`` for the stream features."""
    el = etree.Element(ns.q(ns.CAPS, "c"), nsmap={None: ns.CAPS})
    el.set("hash", "sha-1")
    el.set("node", CAPS_NODE)
    el.set("ver", caps_ver(ctx))
    return etree.tostring(el, with_tail=False)


FEATURE = Feature(
    name="disco",
    xeps=("XEP-0030", "XEP-0115", "XEP-0128", "XEP-0157", "XEP-0004"),
    disco_features=_OWN,
    account_disco_features=_OWN,
    server_iq={
        (_INFO_QUERY, "get"): _server_info,
        (_ITEMS_QUERY, "get"): _items,
    },
    account_iq={
        (_INFO_QUERY, "get"): _account_info,
        (_ITEMS_QUERY, "get"): _items,
    },
)
