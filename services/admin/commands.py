"""The operator command layer.

Each command is a coroutine taking the live objects it needs. The CLI calls
them over the control socket when a server runs (so effects such as kicking
sessions happen), or directly on the database when none does.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ..router.interface import EdgeLink, SessionRegistry
from ..storage.interface import Storage
from ..xmpp.errors import StanzaError
from ..xmpp.jid import JID
from ..xmpp.sasl import derive_credentials


class CommandError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class AdminContext:
    storage: Storage
    hosts: list[str]
    sessions: SessionRegistry | None = None
    edges: dict[str, EdgeLink] | None = None


def parse_user(ctx: AdminContext, jid: str) -> JID:
    try:
        j = JID.parse(jid if "@" in jid else f"{jid}@{ctx.hosts[0]}")
    except StanzaError as exc:
        raise CommandError("bad-jid", f"invalid JID {jid!r}: {exc.text}") from None
    if j.local is None or j.resource is not None:
        raise CommandError("bad-jid", "expected user@domain")
    if j.domain not in ctx.hosts:
        raise CommandError("unknown-host", f"{j.domain} is not served here")
    return j


def credentials(password: str) -> list[Any]:
    if not password:
        raise CommandError("bad-password", "empty password")
    return [derive_credentials(password, "SHA-1"), derive_credentials(password, "SHA-256")]


async def add_user(ctx: AdminContext, jid: str, password: str) -> dict[str, Any]:
    j = parse_user(ctx, jid)
    assert j.local is not None
    if not await ctx.storage.create_account(j.domain, j.local, credentials(password)):
        raise CommandError("exists", f"{j} already exists")
    return {"jid": str(j)}


async def delete_user(ctx: AdminContext, jid: str) -> dict[str, Any]:
    j = parse_user(ctx, jid)
    assert j.local is not None
    await kick_user(ctx, str(j))
    if not await ctx.storage.delete_account(j.domain, j.local):
        raise CommandError("not-found", f"{j} does not exist")
    return {"jid": str(j)}


async def set_password(ctx: AdminContext, jid: str, password: str) -> dict[str, Any]:
    j = parse_user(ctx, jid)
    assert j.local is not None
    if not await ctx.storage.set_credentials(j.domain, j.local, credentials(password)):
        raise CommandError("not-found", f"{j} does not exist")
    return {"jid": str(j)}


async def list_users(
    ctx: AdminContext, host: str | None = None, search: str | None = None
) -> dict[str, Any]:
    out = []
    for h in [host] if host else ctx.hosts:
        for a in await ctx.storage.list_accounts(h, search, limit=10000):
            out.append({"jid": f"{a.username}@{a.host}", "disabled": a.disabled})
    return {"users": out}


async def list_sessions(ctx: AdminContext) -> dict[str, Any]:
    if ctx.sessions is None:
        raise CommandError("not-running", "the server is not running")
    rows = []
    for s in await ctx.sessions.all():
        d = asdict(s)
        rows.append(
            {
                "jid": str(s.jid),
                "node": s.node,
                "ip": s.ip,
                "priority": s.priority,
                "available": s.available,
                "started": d["started"],
            }
        )
    rows.sort(key=lambda r: r["jid"])
    return {"sessions": rows}


async def kick_user(ctx: AdminContext, jid: str) -> dict[str, Any]:
    if ctx.sessions is None or ctx.edges is None:
        return {"kicked": 0}
    j = JID.parse(jid)
    targets = [await ctx.sessions.get(j)] if j.resource else await ctx.sessions.resources(j.bare)
    n = 0
    for s in targets:
        if s is not None and s.node in ctx.edges:
            if await ctx.edges[s.node].close_session(
                s.jid, "policy-violation", "kicked by an administrator"
            ):
                n += 1
    return {"kicked": n}


COMMANDS = {
    "add_user": add_user,
    "delete_user": delete_user,
    "set_password": set_password,
    "list_users": list_users,
    "list_sessions": list_sessions,
    "kick_user": kick_user,
}
