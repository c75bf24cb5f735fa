"""A real browser client: Converse.js in headless Chromium chats with a
slixmpp user over the server's WebSocket (RFC 7395) and BOSH (XEP-0206)
endpoints. The screenshots stay in tests/web/screenshots/ for a look."""

from __future__ import annotations

import asyncio
import secrets
import struct
from typing import Any

import pytest

from ..conftest import PASSWORD
from .converse import SCREENSHOTS, run_converse

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

CONVERSE_TIMEOUT_S = 90


def endpoint(srv: Any, transport: str) -> str:
    port = srv.http_port
    assert isinstance(port, int) and port > 0, f"no HTTP listener: http_port={port!r}"
    if transport == "websocket":
        return f"ws://127.0.0.1:{port}/xmpp-websocket"
    return f"http://127.0.0.1:{port}/http-bind"


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@pytest.mark.parametrize("transport", ["websocket", "bosh"])
async def test_converse_chats_with_slixmpp(
    transport: str, mode: str, server: Any, connect: Any
) -> None:
    bob = await connect("bob@localhost/slixmpp")
    tag = secrets.token_hex(3)
    message = f"Hello Bob, this is Converse over {transport} ({tag})"
    reply = f"Hi Alice, slixmpp got it ({tag})"
    shot = SCREENSHOTS / f"{transport}-{mode}.png"
    shot.unlink(missing_ok=True)

    browser = asyncio.create_task(
        asyncio.to_thread(
            run_converse,
            transport=transport,
            url=endpoint(server, transport),
            jid="alice@localhost",
            password=PASSWORD,
            peer="bob@localhost",
            message=message,
            expect_reply=reply,
            screenshot=str(shot),
            timeout_s=CONVERSE_TIMEOUT_S,
        )
    )
    try:
        # Bob waits for the message with a body (Converse first sends a
        # chat-state notification without one); a browser failure ends the wait
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CONVERSE_TIMEOUT_S + 30
        got = None
        while got is None:
            nxt = asyncio.ensure_future(bob.messages.get())
            done, _ = await asyncio.wait(
                {nxt, browser},
                timeout=max(0.1, deadline - loop.time()),
                return_when=asyncio.FIRST_COMPLETED,
            )
            if nxt not in done:
                nxt.cancel()
                if browser in done:
                    await browser  # fails the test with Converse's log
                    pytest.fail("Converse finished without Bob receiving its message")
                pytest.fail("Bob received no message from Converse")
            m = nxt.result()
            if m["body"]:
                got = m
        assert got["body"] == message
        assert got["type"] == "chat"
        assert got["from"].bare == "alice@localhost"
        bob.send_message(mto=got["from"], mbody=reply, mtype="chat")

        result = await browser
    finally:
        if not browser.done():
            await asyncio.wait({browser})  # the script stops itself within its timeout

    assert result["ok"] is True
    assert result["jid"].startswith("alice@localhost/")
    assert result["jid"] == str(got["from"])
    assert result["reply"]["body"] == reply
    assert result["reply"]["from"] == "bob@localhost/slixmpp"
    assert shot.is_file(), f"no screenshot at {shot}"
    data = shot.read_bytes()
    width, height = png_size(data)
    assert width >= 800 and height >= 600, (width, height)
    assert len(data) > 10_000, f"screenshot {shot} is only {len(data)} bytes"
