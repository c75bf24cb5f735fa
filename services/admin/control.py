"""The control socket: a UNIX socket in the data folder speaking JSON lines,
so ``xmppctl`` can run commands inside a running embedded server."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

from .commands import COMMANDS, AdminContext, CommandError

log = logging.getLogger("xmppd.control")


def socket_path(data_dir: str) -> Path:
    return Path(data_dir) / "xmppd.sock"


async def serve(ctx: AdminContext, path: Path) -> asyncio.AbstractServer:
    path.unlink(missing_ok=True)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await reader.readline()
            writer.write((json.dumps(await _run(ctx, line)) + "\n").encode())
            await writer.drain()
        finally:
            writer.close()

    server = await asyncio.start_unix_server(handle, path=str(path))
    path.chmod(0o600)
    return server


async def _run(ctx: AdminContext, line: bytes) -> dict[str, Any]:
    try:
        req = json.loads(line)
        fn = COMMANDS[req["command"]]
        result = await fn(ctx, **req.get("args", {}))  # type: ignore[operator]
        return {"ok": True, "result": result}
    except CommandError as exc:
        return {"ok": False, "code": exc.code, "message": exc.message}
    except (KeyError, TypeError, ValueError) as exc:
        return {"ok": False, "code": "bad-request", "message": str(exc)}


async def call(path: Path, command: str, **args: Any) -> dict[str, Any]:
    reader, writer = await asyncio.open_unix_connection(str(path))
    writer.write((json.dumps({"command": command, "args": args}) + "\n").encode())
    await writer.drain()
    line = await reader.readline()
    writer.close()
    out: dict[str, Any] = json.loads(line)
    return out
