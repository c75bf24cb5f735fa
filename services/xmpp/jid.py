"""XMPP addresses (RFC 7622), prepared with the PRECIS profiles of precis-i18n.

JIDs are frozen and normalized on construction; parsing is cached because the
same few thousand addresses cross the hot path over and over.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import precis_i18n
from precis_i18n import get_profile

from .errors import StanzaCondition, StanzaError

_LOCAL = get_profile("UsernameCaseMapped")
_RESOURCE = get_profile("OpaqueString")
_LOCAL_FORBIDDEN = frozenset("\"&'/:<>@")
_MAX_PART = 1023


class JIDError(StanzaError):
    def __init__(self, text: str) -> None:
        super().__init__(StanzaCondition.JID_MALFORMED, text)


def _prep_local(s: str) -> str:
    try:
        out: str = _LOCAL.enforce(s)
    except (UnicodeError, ValueError) as exc:
        raise JIDError(f"bad localpart: {exc}") from None
    if any(c in _LOCAL_FORBIDDEN for c in out):
        raise JIDError("localpart contains a forbidden character")
    if len(out.encode()) > _MAX_PART:
        raise JIDError("localpart too long")
    return out


def _prep_domain(s: str) -> str:
    if s.endswith("."):
        s = s[:-1]
    if not s:
        raise JIDError("empty domainpart")
    if s.startswith("[") and s.endswith("]"):
        return s.lower()
    try:
        # IDNA2008-ish: lowercase and NFC, then check each label.
        out = precis_i18n.get_profile("NicknameCaseMapped").enforce(s) if not s.isascii() else s
    except (UnicodeError, ValueError) as exc:
        raise JIDError(f"bad domainpart: {exc}") from None
    out = out.lower()
    for label in out.split("."):
        if not label or len(label) > 63:
            raise JIDError("bad domain label")
        if any(c in " \t\r\n/@\"'<>&:" for c in label):
            raise JIDError("forbidden character in domainpart")
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in label):
            # RFC 7622 3.2: a domainpart is a host name; controls cannot
            # even travel in XML 1.0
            raise JIDError("control character in domainpart")
    if len(out.encode()) > _MAX_PART:
        raise JIDError("domainpart too long")
    return out


def _prep_resource(s: str) -> str:
    try:
        out: str = _RESOURCE.enforce(s)
    except (UnicodeError, ValueError) as exc:
        raise JIDError(f"bad resourcepart: {exc}") from None
    if len(out.encode()) > _MAX_PART:
        raise JIDError("resourcepart too long")
    return out


@dataclass(frozen=True, slots=True)
class JID:
    local: str | None
    domain: str
    resource: str | None = None

    @staticmethod
    def parse(s: str) -> JID:
        """Parse and prepare a JID string; raises JIDError (jid-malformed)."""
        return _parse_cached(s)

    @staticmethod
    def make(local: str | None, domain: str, resource: str | None = None) -> JID:
        return JID(
            _prep_local(local) if local is not None else None,
            _prep_domain(domain),
            _prep_resource(resource) if resource is not None else None,
        )

    @property
    def bare(self) -> JID:
        # cached: every stanza asks for bare JIDs several times on the hot path
        return self if self.resource is None else _bare_of(self.local, self.domain)

    @property
    def is_bare(self) -> bool:
        return self.resource is None

    @property
    def is_domain(self) -> bool:
        return self.local is None and self.resource is None

    def with_resource(self, resource: str | None) -> JID:
        return JID(self.local, self.domain, _prep_resource(resource) if resource else None)

    def __str__(self) -> str:
        return _to_str(self.local, self.domain, self.resource)


@functools.lru_cache(maxsize=65536)
def _bare_of(local: str | None, domain: str) -> JID:
    return JID(local, domain)


@functools.lru_cache(maxsize=65536)
def _to_str(local: str | None, domain: str, resource: str | None) -> str:
    s = domain
    if local is not None:
        s = f"{local}@{domain}"
    if resource is not None:
        s = f"{s}/{resource}"
    return s


@functools.lru_cache(maxsize=65536)
def _parse_cached(s: str) -> JID:
    if not s:
        raise JIDError("empty JID")
    rest, slash, resource = s.partition("/")
    local: str | None = None
    if "@" in rest:
        local, _, domain = rest.partition("@")
        if not local:
            raise JIDError("empty localpart")
    else:
        domain = rest
    if slash and not resource:
        raise JIDError("empty resourcepart")
    return JID(
        _prep_local(local) if local is not None else None,
        _prep_domain(domain),
        _prep_resource(resource) if slash else None,
    )
