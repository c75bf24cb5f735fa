"""``xmppd``: start the server (embedded default)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Coroutine
from typing import Any

from ..platform import logs
from ..platform.config import ConfigError, Settings, StartupError


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="xmppd", description="XMPP server")
    ap.add_argument(
        "mode",
        nargs="?",
        default="embedded",
        choices=["embedded", "edge", "router", "presence", "muc", "pubsub", "storage", "admin"],
        help="embedded (default): every service in one process; otherwise one cluster role",
    )
    ap.add_argument("--config", help="TOML settings file (or XMPPD_CONFIG)")
    args = ap.parse_args(argv)
    try:
        settings = Settings.load(args.config)
    except ConfigError as exc:
        print(f"xmppd: {exc}", file=sys.stderr)
        return 2
    logs.setup(settings.log_level, settings.log_json)
    from ..platform.gctune import tune

    coro: Coroutine[Any, Any, None]
    if args.mode == "embedded":
        from ..app.embedded import EmbeddedServer

        coro = EmbeddedServer(settings).serve_forever()
    else:
        from ..app.roles import ROLES

        coro = ROLES[args.mode](settings)
    tune(settings.gc_threshold)
    try:
        try:
            import uvloop
        except ImportError:
            asyncio.run(coro)
        else:
            uvloop.run(coro)
    except StartupError as exc:
        print(f"xmppd: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
