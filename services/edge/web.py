"""The edge's web listener (port 5280): an ASGI application uvicorn serves.

* ``/xmpp-websocket``: XMPP over WebSocket (RFC 7395), :mod:`.websocket`
* ``/http-bind``: BOSH (XEP-0124, XEP-0206), :mod:`.bosh`; CORS for pages
  of other origins (``http_cors_origins``)
* ``/.well-known/host-meta`` and ``host-meta.json``: XEP-0156 discovery of
  both, at the URL the browser used (or ``http_public_url``)

Plain ASGI rather than a framework: three routes, and the body of a BOSH
request must be read with a limit that depends on its session.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
from typing import TYPE_CHECKING, Any

from ..platform.asgi import AsgiServer
from ..xmpp.framing import quote_attr
from . import websocket
from .bosh import BODY_SLACK, BoshManager

if TYPE_CHECKING:
    from .server import EdgeServer

log = logging.getLogger("xmppd.edge")

WEBSOCKET_PATH = "/xmpp-websocket"
BOSH_PATH = "/http-bind"
HOST_META = "/.well-known/host-meta"
HOST_META_JSON = "/.well-known/host-meta.json"
_SID = re.compile(rb"""\ssid\s*=\s*(?:'([^']*)'|"([^"]*)")""")
_BODY_START_MAX = 4096  # a <body ...> start tag longer than this is not a client's


def is_secure(mode: str, scope: dict[str, Any]) -> bool:
    """Does this request count as secure (``http_secure``)?"""
    if scope.get("scheme") in ("https", "wss") or mode == "always":
        return True
    if mode == "loopback":
        client = scope.get("client")
        try:
            return client is not None and ipaddress.ip_address(client[0]).is_loopback
        except ValueError:
            return False
    return False


class WebApp:
    def __init__(self, edge: EdgeServer) -> None:
        self.edge = edge
        self.bosh = BoshManager(edge)
        s = edge.settings
        self._cors = s.http_cors_origins

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        kind = scope["type"]
        path = scope.get("path", "")
        if kind == "websocket":
            if path == WEBSOCKET_PATH:
                secure = is_secure(self.edge.settings.http_secure, scope)
                await websocket.serve(self.edge, scope, receive, send, secure)
            else:
                await receive()
                await send({"type": "websocket.close", "code": 1008})
            return
        if kind != "http":
            return
        method = scope.get("method", "GET")
        if path == BOSH_PATH:
            if method == "POST":
                await self._bosh(scope, receive, send)
            elif method == "OPTIONS":
                await self._respond(scope, send, 200, b"", "text/plain")
            elif method == "GET":
                page = b"<html><body><p>XMPP over BOSH (XEP-0206) is served here.</p></body></html>"
                await self._respond(scope, send, 200, page, "text/html; charset=utf-8")
            else:
                await self._respond(scope, send, 405, b"", "text/plain")
        elif path in (HOST_META, HOST_META_JSON) and method in ("GET", "HEAD"):
            body, ctype = self._host_meta(scope, json_form=path == HOST_META_JSON)
            await self._respond(scope, send, 200, body, ctype)
        elif path == WEBSOCKET_PATH:
            await self._respond(scope, send, 426, b"WebSocket only\n", "text/plain")
        else:
            await self._respond(scope, send, 404, b"not found\n", "text/plain")

    # ---- BOSH ------------------------------------------------------------------------

    async def _bosh(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        ip = (scope.get("client") or ("", 0))[0]
        data = await self._read_body(scope, receive)
        if data is None:
            from ..xmpp import bosh

            body = bosh.terminate_body(bosh.Condition.POLICY_VIOLATION)
            await self._respond(scope, send, 413, body, "text/xml; charset=utf-8")
            return
        secure = is_secure(self.edge.settings.http_secure, scope)
        reply = await self.bosh.handle(data, ip, secure)
        await self._respond(scope, send, reply.status, reply.body, "text/xml; charset=utf-8")

    async def _read_body(self, scope: dict[str, Any], receive: Any) -> bytes | None:
        """The request body, or None past its limit: the limit is known once
        the ``<body ...>`` start tag names its session, so nothing larger
        than a pre-authentication request is read for a session not yet
        authenticated (or for no session)."""
        s = self.edge.settings
        most = s.max_stanza_size + BODY_SLACK
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    if int(value) > most:
                        return None
                except ValueError:
                    return None
        chunks: list[bytes] = []
        size = 0
        limit: int | None = None
        more = True
        while more:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return b""
            chunk = msg.get("body", b"")
            more = msg.get("more_body", False)
            chunks.append(chunk)
            size += len(chunk)
            if limit is None:
                head = b"".join(chunks)
                end = head.find(b">")
                if end != -1 or size > _BODY_START_MAX or not more:
                    m = _SID.search(head[: end if end != -1 else _BODY_START_MAX])
                    sid = (m.group(1) or m.group(2)).decode("ascii", "replace") if m else None
                    limit = self.bosh.body_limit(sid)
            if size > (limit if limit is not None else most):
                return None
        return b"".join(chunks)

    # ---- host-meta (XEP-0156) ----------------------------------------------------

    def _urls(self, scope: dict[str, Any]) -> tuple[str, str]:
        s = self.edge.settings
        if s.http_public_url:
            base = s.http_public_url.rstrip("/")
        else:
            host = ""
            for name, value in scope.get("headers", ()):
                if name == b"host":
                    host = value.decode("latin-1")
            if not host or not re.fullmatch(r"[A-Za-z0-9.\-:\[\]]+", host):
                server = scope.get("server") or ("localhost", s.http_port)
                host = f"{server[0]}:{server[1]}"
            secure = scope.get("scheme") == "https" or s.http_secure == "always"
            base = ("https://" if secure else "http://") + host
        ws = "wss://" + base[8:] if base.startswith("https://") else "ws://" + base[7:]
        return ws + WEBSOCKET_PATH, base + BOSH_PATH

    def _host_meta(self, scope: dict[str, Any], json_form: bool) -> tuple[bytes, str]:
        ws, http = self._urls(scope)
        if json_form:
            doc = {
                "links": [
                    {"rel": "urn:xmpp:alt-connections:websocket", "href": ws},
                    {"rel": "urn:xmpp:alt-connections:xbosh", "href": http},
                ]
            }
            return json.dumps(doc).encode(), "application/json"
        xrd = (
            "<?xml version='1.0' encoding='utf-8'?>\n"
            "<XRD xmlns='http://docs.oasis-open.org/ns/xri/xrd-1.0'>\n"
            f"  <Link rel='urn:xmpp:alt-connections:websocket' href='{quote_attr(ws)}'/>\n"
            f"  <Link rel='urn:xmpp:alt-connections:xbosh' href='{quote_attr(http)}'/>\n"
            "</XRD>\n"
        )
        return xrd.encode(), "application/xrd+xml"

    # ---- responses -------------------------------------------------------------------

    async def _respond(
        self, scope: dict[str, Any], send: Any, status: int, body: bytes, ctype: str
    ) -> None:
        headers = [
            (b"content-type", ctype.encode()),
            (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-store"),
        ]
        origin = self._allowed_origin(scope)
        if origin is not None:
            headers += [
                (b"access-control-allow-origin", origin.encode()),
                (b"access-control-allow-methods", b"GET, POST, OPTIONS"),
                (b"access-control-allow-headers", b"Content-Type"),
                (b"access-control-max-age", b"86400"),
            ]
            if origin != "*":
                headers.append((b"vary", b"Origin"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send(
            {"type": "http.response.body", "body": b"" if scope.get("method") == "HEAD" else body}
        )

    def _allowed_origin(self, scope: dict[str, Any]) -> str | None:
        if "*" in self._cors:
            return "*"
        for name, value in scope.get("headers", ()):
            if name == b"origin":
                origin = value.decode("latin-1")
                return origin if origin in self._cors else None
        return None


def web_server(edge: EdgeServer) -> AsgiServer:
    s = edge.settings
    return AsgiServer(
        WebApp(edge),
        "web listener",
        # the largest message uvicorn buffers; before login each connection is
        # held to far less (websocket._set_message_limit)
        ws_max_size=s.max_stanza_size + websocket.FRAME_SLACK,
        ws_per_message_deflate=False,
        ws="websockets-sansio",
        # behind an Ingress every request comes from the proxy: believe its
        # X-Forwarded-For (the client's address for per-IP limits and the
        # login throttle) and X-Forwarded-Proto (https counts as secure)
        proxy_headers=bool(s.http_trusted_proxies),
        forwarded_allow_ips=",".join(s.http_trusted_proxies) or None,
        h11_max_incomplete_event_size=16 * 1024,
    )
