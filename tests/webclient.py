"""Raw clients of the web listener for tests: XMPP over WebSocket (the
``websockets`` package) and BOSH (httpx), speaking the wire format by hand so
framing cases no client library sends can be tested."""

from __future__ import annotations

import asyncio
import base64
import re
from typing import Any

import httpx
import websockets

from tests.conftest import PASSWORD

FRAMING = "urn:ietf:params:xml:ns:xmpp-framing"
OPEN = f"<open xmlns='{FRAMING}' to='localhost' version='1.0'/>"
CLOSE = f"<close xmlns='{FRAMING}'/>"
HTTPBIND = "http://jabber.org/protocol/httpbind"


def plain(user: str, password: str = PASSWORD) -> str:
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


def auth(user: str, password: str = PASSWORD) -> str:
    return (
        f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>"
        f"{plain(user, password)}</auth>"
    )


BIND = (
    "<iq xmlns='jabber:client' type='set' id='bind'>"
    "<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>"
)


class WsClient:
    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.jid = ""

    @classmethod
    async def open(cls, port: int, subprotocols: list[str] | None = None) -> WsClient:
        # [] sends no Sec-WebSocket-Protocol header at all
        protocols = ["xmpp"] if subprotocols is None else (subprotocols or None)
        ws = await websockets.connect(
            f"ws://127.0.0.1:{port}/xmpp-websocket",
            subprotocols=protocols,  # type: ignore[arg-type]
            max_size=None,
        )
        return cls(ws)

    async def send(self, frame: str) -> None:
        await self.ws.send(frame)

    async def recv(self, timeout: float = 5.0) -> str:
        data = await asyncio.wait_for(self.ws.recv(), timeout)
        return data if isinstance(data, str) else data.decode()

    async def expect(self, pattern: str, timeout: float = 5.0) -> str:
        """Frames until one matches ``pattern``; return it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        seen: list[str] = []
        while True:
            left = deadline - loop.time()
            if left <= 0:
                raise TimeoutError(f"no {pattern!r} in {seen[-5:]!r}")
            frame = await self.recv(left)
            seen.append(frame)
            if re.search(pattern, frame, re.S):
                return frame

    async def frames_until_closed(self, timeout: float = 5.0) -> list[str]:
        """Everything the server sends until it closes the WebSocket."""
        out: list[str] = []
        try:
            while True:
                out.append(await self.recv(timeout))
        except websockets.ConnectionClosed:
            return out

    async def login(self, user: str, password: str = PASSWORD, resource: str = "") -> str:
        await self.send(OPEN)
        await self.expect("<open ")
        await self.expect("<stream:features")
        await self.send(auth(user, password))
        await self.expect("<success")
        await self.send(OPEN)
        await self.expect("<open ")
        await self.expect("<bind ")
        bind = BIND
        if resource:
            bind = bind.replace("/></iq>", f"><resource>{resource}</resource></bind></iq>").replace(
                "xmpp-bind'/>", "xmpp-bind'>"
            )
        await self.send(bind)
        frame = await self.expect("<jid>")
        m = re.search(r"<jid>([^<]+)</jid>", frame)
        assert m is not None
        self.jid = m.group(1)
        return self.jid

    async def close(self) -> None:
        await self.ws.close()


class BoshClient:
    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}/http-bind"
        self.http = httpx.AsyncClient(timeout=90)
        self.rid = 1000
        self.sid = ""
        self.jid = ""

    async def post_raw(self, data: str | bytes, **headers: str) -> httpx.Response:
        return await self.http.post(self.url, content=data, headers=headers)

    async def post(self, children: str = "", rid: int | None = None, **attrs: str) -> str:
        """One request of the session (the next rid unless given); the response body."""
        if rid is None:
            self.rid += 1
            rid = self.rid
        extra = "".join(f" {k.replace('__', ':')}='{v}'" for k, v in attrs.items())
        sid = f" sid='{self.sid}'" if self.sid else ""
        body = f"<body xmlns='{HTTPBIND}' xmlns:xmpp='urn:xmpp:xbosh' rid='{rid}'{sid}{extra}" + (
            f">{children}</body>" if children else "/>"
        )
        r = await self.post_raw(body)
        return r.text

    async def create(self, **attrs: str) -> str:
        base = {"to": "localhost", "wait": "3", "hold": "1", "ver": "1.6", "xmpp__version": "1.0"}
        base.update(attrs)
        text = await self.post(rid=self.rid, **base)
        m = re.search(r"sid='([^']+)'", text)
        if m:
            self.sid = m.group(1)
        return text

    async def login(self, user: str, password: str = PASSWORD) -> str:
        text = await self.create()
        assert "<mechanisms" in text, text
        text = await self.post(auth(user, password))
        assert "<success" in text, text
        text = await self.post(xmpp__restart="true", to="localhost")
        assert "<bind " in text, text
        text = await self.post(BIND)
        m = re.search(r"<jid>([^<]+)</jid>", text)
        assert m is not None, text
        self.jid = m.group(1)
        return self.jid

    async def close(self) -> None:
        await self.http.aclose()
