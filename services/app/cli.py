"""``xmppctl``: manage users and look at a running server.

User commands go through the running server's control socket when there is
one (so deleting a user also disconnects them) and straight to the database
otherwise, like prosodyctl and ejabberdctl.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import sys
from typing import Any

from ..admin import commands, control
from ..platform.config import ConfigError, Settings, StartupError


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="xmppctl", description="Manage an xmppd server")
    ap.add_argument("--config", help="TOML settings file (or XMPPD_CONFIG)")
    ap.add_argument("--json", action="store_true", help="print JSON")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("adduser", help="create an account")
    p.add_argument("jid")
    p.add_argument("--password", help="password (asked for when omitted)")
    p = sub.add_parser("deluser", help="delete an account and all its data")
    p.add_argument("jid")
    p = sub.add_parser("passwd", help="change an account's password")
    p.add_argument("jid")
    p.add_argument("--password")
    p = sub.add_parser("users", help="list accounts")
    p.add_argument("--search")
    sub.add_parser("sessions", help="list online sessions (server must run)")
    p = sub.add_parser("kick", help="disconnect a user's sessions (server must run)")
    p.add_argument("jid")
    p = sub.add_parser("rooms", help="list group chat rooms (server must run)")
    p.add_argument("--domain", help="only this group chat domain")
    p = sub.add_parser("room-create", help="create a persistent room (server must run)")
    p.add_argument("jid", help="room@conference.domain")
    p.add_argument("owner", help="a local account")
    p.add_argument("--name", default="")
    p.add_argument("--members-only", action="store_true")
    p = sub.add_parser("room-destroy", help="destroy a room (server must run)")
    p.add_argument("jid")
    p.add_argument("--reason")
    p = sub.add_parser("room-affiliation", help="set a JID's affiliation with a room")
    p.add_argument("jid", help="room@conference.domain")
    p.add_argument("user", help="a bare JID")
    p.add_argument("affiliation", choices=["owner", "admin", "member", "outcast", "none"])
    p = sub.add_parser("nodes", help="list a pubsub service's nodes (server must run)")
    p.add_argument("service", help="pubsub.domain, or user@domain for the account's PEP nodes")
    p = sub.add_parser("node-delete", help="delete a pubsub node (server must run)")
    p.add_argument("service", help="pubsub.domain or user@domain")
    p.add_argument("node")
    p = sub.add_parser("node-purge", help="remove every item of a pubsub node (server must run)")
    p.add_argument("service", help="pubsub.domain or user@domain")
    p.add_argument("node")
    sub.add_parser("migrate", help="apply database migrations")
    sub.add_parser("config-doc", help="print the settings table (Markdown)")
    sub.add_parser("features", help="print the implemented XEPs (Markdown)")
    return ap


def _password(args: argparse.Namespace) -> str:
    if args.password:
        return str(args.password)
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Again: ") != first:
        raise commands.CommandError("bad-password", "passwords do not match")
    return first


async def _run(settings: Settings, command: str, args: dict[str, Any]) -> dict[str, Any]:
    sock = control.socket_path(settings.data_dir)
    if sock.exists():
        try:
            return await control.call(sock, command, **args)
        except (ConnectionError, FileNotFoundError):
            pass  # stale socket: the server is gone
    from ..app.startup import open_configured_database
    from ..platform.migrate import migrate
    from ..storage.store import Store

    db = await open_configured_database(settings)
    try:
        await migrate(db)
        ctx = commands.AdminContext(storage=Store(db), hosts=settings.hosts)
        try:
            result = await commands.COMMANDS[command](ctx, **args)  # type: ignore[operator]
            return {"ok": True, "result": result}
        except commands.CommandError as exc:
            return {"ok": False, "code": exc.code, "message": exc.message}
    finally:
        await db.close()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = Settings.load(args.config)
    except ConfigError as exc:
        print(f"xmppctl: {exc}", file=sys.stderr)
        return 2
    if args.cmd == "config-doc":
        from ..platform.config import settings_table

        print(settings_table())
        return 0
    if args.cmd == "features":
        from ..features.catalog import features_markdown, load_features

        print(features_markdown(load_features()))
        return 0
    try:
        if args.cmd == "migrate":
            return asyncio.run(_migrate(settings))
        return _command(args, settings)
    except StartupError as exc:
        print(f"xmppctl: {exc}", file=sys.stderr)
        return 1


def _command(args: argparse.Namespace, settings: Settings) -> int:
    try:
        call: tuple[str, dict[str, Any]]
        if args.cmd == "adduser":
            call = ("add_user", {"jid": args.jid, "password": _password(args)})
        elif args.cmd == "passwd":
            call = ("set_password", {"jid": args.jid, "password": _password(args)})
        elif args.cmd == "deluser":
            call = ("delete_user", {"jid": args.jid})
        elif args.cmd == "users":
            call = ("list_users", {"search": args.search})
        elif args.cmd == "sessions":
            call = ("list_sessions", {})
        elif args.cmd == "rooms":
            call = ("list_rooms", {"domain": args.domain})
        elif args.cmd == "room-create":
            call = (
                "create_room",
                {"jid": args.jid, "owner": args.owner, "name": args.name,
                 "members_only": args.members_only},
            )  # fmt: skip
        elif args.cmd == "room-destroy":
            call = ("destroy_room", {"jid": args.jid, "reason": args.reason})
        elif args.cmd == "room-affiliation":
            call = (
                "set_room_affiliation",
                {"jid": args.jid, "user": args.user, "affiliation": args.affiliation},
            )
        elif args.cmd == "nodes":
            call = ("list_nodes", {"service": args.service})
        elif args.cmd == "node-delete":
            call = ("delete_node", {"service": args.service, "node": args.node})
        elif args.cmd == "node-purge":
            call = ("purge_node", {"service": args.service, "node": args.node})
        else:
            call = ("kick_user", {"jid": args.jid})
    except commands.CommandError as exc:
        print(f"xmppctl: {exc.message}", file=sys.stderr)
        return 1
    out = asyncio.run(_run(settings, *call))
    if not out.get("ok"):
        print(f"xmppctl: {out.get('message')}", file=sys.stderr)
        return 1
    result = out["result"]
    if args.json:
        print(json.dumps(result, indent=2))
    elif "sessions" in result:
        for s in result["sessions"]:
            state = "available" if s["available"] else "connected"
            print(f"{s['jid']}\t{s['ip']}\t{s['node']}\tprio={s['priority']}\t{state}")
    elif "users" in result:
        for u in result["users"]:
            print(u["jid"] + ("\t(disabled)" if u["disabled"] else ""))
    elif "rooms" in result:
        for r in result["rooms"]:
            kind = "persistent" if r["persistent"] else "temporary"
            print(f"{r['jid']}\t{r['name']}\t{kind}\toccupants={r['occupants']}")
    elif "nodes" in result:
        for n in result["nodes"]:
            print(
                f"{n['node']}\t{n['title']}\t{n['node_type']}\titems={n['items']}"
                f"\tsubscriptions={n['subscriptions']}"
            )
    elif "deleted" in result or "purged" in result:
        verb = "deleted" if "deleted" in result else "purged"
        print(f"{verb}: {result['node']} on {result['service']}")
    elif "kicked" in result:
        print(f"kicked {result['kicked']} session(s)")
    else:
        print(f"ok: {result.get('jid', '')}")
    return 0


async def _migrate(settings: Settings) -> int:
    from ..app.startup import open_configured_database
    from ..platform.migrate import migrate

    db = await open_configured_database(settings)
    try:
        applied = await migrate(db)
    finally:
        await db.close()
    print("applied: " + (", ".join(applied) if applied else "nothing (up to date)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
