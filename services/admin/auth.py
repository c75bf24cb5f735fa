"""Bearer tokens and scopes of the REST admin API.

Tokens come from the ``admin_tokens`` setting (``TOKEN:scope,scope``) and the
``admin_tokens_file`` setting (one such entry a line, ``#`` comments; meant for
a mounted Kubernetes secret). In the ``XMPPD_ADMIN_TOKENS`` variable lists are
comma separated, so ``a1:read,write,b2:admin`` reads as two tokens: an entry
without ``:`` is one more scope of the token before it.

Scopes:

``read``
    every ``GET``: users, sessions, rosters, vCards, statistics, hosts, jobs.
``write``
    changes to accounts and their data: create, delete, password,
    disable/enable, roster items, vCards, kicking sessions.
``admin``
    everything above, plus acting as any JID: sending messages and
    broadcasting announcements. Only ``admin`` implies other scopes; give a
    provisioning robot ``read,write``.

Only SHA-256 digests of the tokens are kept in memory.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from ..platform.config import ConfigError

if TYPE_CHECKING:
    from ..platform.config import Settings

__all__ = ["SCOPES", "TokenError", "TokenStore", "load_tokens", "parse_tokens"]

#: the scopes, with what they grant
SCOPES: dict[str, str] = {
    "read": "read accounts, sessions, rosters, vCards, statistics, hosts and jobs",
    "write": "change accounts and their data, kick sessions",
    "admin": "everything, including sending messages and broadcasts as any JID",
}


class TokenError(ConfigError):
    """A malformed token entry (empty token, unknown scope)."""


def parse_tokens(entries: Iterable[str]) -> dict[str, frozenset[str]]:
    """``["TOKEN:scope,scope", ...]`` to ``{token: scopes}``.

    An entry without ``:`` adds a scope to the token before it (how a comma
    separated environment variable arrives). Scopes may also be separated by
    ``+`` or spaces. A token given twice gets the union of its scopes.
    """
    out: dict[str, set[str]] = {}
    last: str | None = None
    for raw in entries:
        entry = raw.strip()
        if not entry:
            continue
        if ":" in entry:
            token, _, scopes_text = entry.partition(":")
            token = token.strip()
            if not token:
                raise TokenError("admin token entry with an empty token")
            last = token
        elif last is not None:
            token, scopes_text = last, entry
        else:
            raise TokenError(f"admin token entry {_redact(entry)!r} has no ':scope'")
        scopes = {s for s in scopes_text.replace("+", ",").replace(" ", ",").split(",") if s}
        if not scopes:
            raise TokenError(f"admin token {_redact(token)!r} has no scope")
        unknown = scopes - SCOPES.keys()
        if unknown:
            raise TokenError(
                f"admin token {_redact(token)!r}: unknown scope(s) {', '.join(sorted(unknown))}"
                f" (known: {', '.join(SCOPES)})"
            )
        out.setdefault(token, set()).update(scopes)
    return {t: frozenset(s) for t, s in out.items()}


def _redact(token: str) -> str:
    return token[:3] + "..." if len(token) > 3 else "..."


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


class TokenStore:
    """Answers which scopes a presented bearer token has."""

    def __init__(self, tokens: Mapping[str, Iterable[str]] | None = None) -> None:
        self._by_digest: dict[bytes, frozenset[str]] = {}
        for token, scopes in (tokens or {}).items():
            self._by_digest[_digest(token)] = frozenset(scopes)

    @classmethod
    def from_entries(cls, entries: Iterable[str]) -> TokenStore:
        return cls(parse_tokens(entries))

    def __len__(self) -> int:
        return len(self._by_digest)

    def scopes(self, token: str) -> frozenset[str] | None:
        """The token's scopes, or None for an unknown token."""
        return self._by_digest.get(_digest(token))

    @staticmethod
    def allows(scopes: frozenset[str], required: str) -> bool:
        return required in scopes or "admin" in scopes


def load_tokens(settings: Settings) -> TokenStore:
    """The tokens of ``admin_tokens`` and of the ``admin_tokens_file``."""
    entries = list(settings.admin_tokens)
    if settings.admin_tokens_file:
        path = Path(settings.admin_tokens_file)
        try:
            text = path.read_text()
        except OSError as exc:
            raise TokenError(f"admin_tokens_file {path}: {exc.strerror}") from None
        for line in text.splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                if ":" not in line:
                    raise TokenError(f"admin_tokens_file {path}: a line without ':scope'")
                entries.append(line)
    return TokenStore.from_entries(entries)
