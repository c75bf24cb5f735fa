"""``xmppd``: start the server (embedded default)."""

from __future__ import annotations

import argparse
import asyncio
import sys

from . import logs
from .config import ConfigError, Settings


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="xmppd", description="XMPP server")
    ap.add_argument("mode", nargs="?", default="embedded", choices=["embedded"])
    ap.add_argument("--config", help="TOML settings file (or XMPPD_CONFIG)")
    args = ap.parse_args(argv)
    try:
        settings = Settings.load(args.config)
    except ConfigError as exc:
        print(f"xmppd: {exc}", file=sys.stderr)
        return 2
    logs.setup(settings.log_level, settings.log_json)
    from .embedded import EmbeddedServer

    server = EmbeddedServer(settings)
    try:
        import uvloop
    except ImportError:
        asyncio.run(server.serve_forever())
    else:
        uvloop.run(server.serve_forever())
    return 0


if __name__ == "__main__":
    sys.exit(main())
