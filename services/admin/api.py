"""The REST admin API (FastAPI), versioned under ``/api/v1``.

Every operation is a command of :mod:`services.admin.commands`, the layer the
CLI and the control socket use too; this module only maps HTTP onto it:

* Authentication: ``Authorization: Bearer TOKEN`` on every request except the
  OpenAPI document (``/api/v1/openapi.json``) and its viewer (``/api/v1/docs``).
  No or an unknown token: 401 with ``WWW-Authenticate: Bearer``; a token
  without the operation's scope: 403. Scopes are in :mod:`services.admin.auth`
  (``read`` for GETs, ``write`` for changes, ``admin`` for acting as any JID).
  Authentication runs before anything reads the request, so an
  unauthenticated request never learns whether its body or path was right.
* Errors: always ``{"error": {"code": ..., "message": ..., "details": ...}}``
  with a stable ``code``: the command layer's codes
  (:data:`~services.admin.commands.ERROR_CODES`) and ``unauthorized``,
  ``forbidden``, ``bad-json`` (400, the body is not JSON),
  ``invalid-request`` (422, the request does not match the schema; ``details``
  lists where), ``not-found`` (404, also for an unknown path or a path JID
  that is malformed or not on a served domain; but a malformed pubsub service
  in ``/pubsub/{service}`` is ``bad-jid``, 422), ``method-not-allowed`` (405,
  with ``Allow``), ``body-too-large`` (413), ``internal`` (500). Each code
  always comes with the same status.
* Lists take ``limit`` (1-1000, default 100) and ``offset`` and answer with
  ``total``, ``limit`` and ``offset`` beside the page.

:func:`create_app` builds the application; :class:`ApiServer` serves it with
uvicorn as a task in the running event loop (the embedded server does this).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from starlette.convertors import PathConvertor, register_url_convertor
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..features.vcard import MAX_VCARD_BYTES
from ..platform.asgi import AsgiServer
from . import commands as cmd
from .auth import SCOPES, TokenStore
from .commands import AdminContext, CommandError

__all__ = ["API_PREFIX", "ApiServer", "create_app"]

log = logging.getLogger("xmppd.admin.api")

API_PREFIX = "/api/v1"
#: the largest request body read, bytes
MAX_BODY = 1024 * 1024
MAX_LIMIT = 1000
MAX_OFFSET = 2**31 - 1
#: longest JID string accepted (three parts of at most 1023 bytes, RFC 7622)
MAX_JID = 3071

#: HTTP status of each error code
STATUS: dict[str, int] = {
    "bad-jid": 422,
    "unknown-host": 422,
    "bad-password": 422,
    "bad-text": 422,
    "bad-xml": 422,
    "not-vcard": 422,
    "too-large": 422,
    "undeliverable": 422,
    "bad-request": 422,
    "exists": 409,
    "not-found": 404,
    "busy": 429,
    "not-running": 503,
}

# ---------------------------------------------------------------- models


class Strict(BaseModel):
    """Request bodies: no unknown fields, no type coercion (0 is not false)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class ErrorDetail(BaseModel):
    loc: list[str | int] = Field(description="where in the request: body, query, path, header")
    message: str
    type: str


class ErrorInfo(BaseModel):
    code: str = Field(description="stable machine-readable code, e.g. not-found")
    message: str = Field(description="human-readable explanation")
    details: list[ErrorDetail] | None = Field(
        default=None, description="invalid-request: each schema violation"
    )


class ErrorBody(BaseModel):
    error: ErrorInfo


class Page(BaseModel):
    total: int = Field(description="items in the whole list")
    limit: int
    offset: int


class LastActivity(BaseModel):
    stamp: float = Field(description="Unix time of the last logout")
    status: str | None


class User(BaseModel):
    jid: str
    username: str
    host: str
    disabled: bool
    created_at: float = Field(description="Unix time")


class UserDetail(User):
    online: bool
    sessions: int = Field(description="bound sessions")
    last_activity: LastActivity | None


class UserList(Page):
    users: list[User]


class UserCreate(Strict):
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={"examples": [{"jid": "alice@localhost", "password": "s3cret"}]},
    )
    jid: str = Field(
        min_length=1,
        max_length=MAX_JID,
        description="user@domain on a served domain (a bare username means the first domain)",
    )
    password: str = Field(min_length=1, max_length=1024)


class PasswordChange(Strict):
    password: str = Field(min_length=1, max_length=1024)


class UserRef(BaseModel):
    jid: str


class UserDeleted(BaseModel):
    jid: str
    disconnected: int = Field(description="sessions closed")


class UserState(BaseModel):
    jid: str
    disabled: bool
    disconnected: int = Field(description="sessions closed")


class SessionInfo(BaseModel):
    jid: str = Field(description="full JID")
    user: str = Field(description="bare JID")
    resource: str
    node: str = Field(description="the edge node holding the stream")
    ip: str
    priority: int
    available: bool = Field(description="sent available presence")
    show: str | None = Field(description="away, chat, dnd, xa, or null for online")
    status: str | None
    client: str | None = Field(description="the client's XEP-0115 caps node, if it sent one")
    started: float = Field(description="Unix time")


class SessionList(Page):
    sessions: list[SessionInfo]


class Kicked(BaseModel):
    kicked: int = Field(description="sessions disconnected")


Subscription = Literal["none", "to", "from", "both"]


class RosterItemOut(BaseModel):
    jid: str
    name: str | None
    subscription: Subscription
    ask: bool = Field(description="an outbound subscription request is pending")
    pending_in: bool = Field(description="an inbound subscription request awaits an answer")
    approved: bool = Field(description="pre-approved (RFC 6121 3.4)")
    groups: list[str]


class Roster(Page):
    jid: str
    version: int
    items: list[RosterItemOut]


class RosterItemIn(Strict):
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [
                {
                    "jid": "bob@localhost",
                    "name": "Bob",
                    "groups": ["Friends"],
                    "subscription": "both",
                }
            ]
        },
    )
    jid: str = Field(min_length=1, max_length=MAX_JID, description="the contact's bare JID")
    name: str | None = Field(default=None, max_length=1023)
    groups: list[Annotated[str, Field(min_length=1, max_length=1023)]] = Field(
        default_factory=list, max_length=cmd.MAX_GROUPS
    )
    subscription: Subscription = "none"


class RosterChange(BaseModel):
    jid: str
    version: int
    item: RosterItemOut


class RosterRemoved(BaseModel):
    jid: str
    contact: str
    version: int


class VCard(BaseModel):
    jid: str
    vcard: str | None = Field(description="the <vCard xmlns='vcard-temp'/> element, or null")


class VCardIn(Strict):
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [{"vcard": "<vCard xmlns='vcard-temp'><FN>Alice</FN></vCard>"}]
        },
    )
    vcard: str = Field(min_length=1, max_length=MAX_VCARD_BYTES)


MessageType = Literal["normal", "chat", "headline"]


class MessageIn(Strict):
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [{"to": "alice@localhost", "type": "chat", "body": "Maintenance at 22:00"}]
        },
    )
    sender: str | None = Field(
        default=None,
        alias="from",
        min_length=1,
        max_length=MAX_JID,
        description="any JID; default: the recipient's domain",
    )
    to: str = Field(min_length=1, max_length=MAX_JID)
    type: MessageType = "normal"
    subject: str | None = Field(default=None, max_length=1024)
    body: str = Field(min_length=1, max_length=65536)


class MessageSent(BaseModel):
    id: str = Field(description="the message's stanza id")
    to: str


class BroadcastIn(Strict):
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [{"subject": "Maintenance", "body": "The server restarts at 22:00"}]
        },
    )
    sender: str | None = Field(
        default=None,
        alias="from",
        min_length=1,
        max_length=MAX_JID,
        description="any JID; default: each recipient's domain",
    )
    host: str | None = Field(
        default=None, min_length=1, max_length=1023, description="only this domain's sessions"
    )
    type: MessageType = "headline"
    subject: str | None = Field(default=None, max_length=1024)
    body: str = Field(min_length=1, max_length=65536)


class Job(BaseModel):
    id: str
    kind: str
    status: Literal["running", "done", "failed", "cancelled"]
    total: int = Field(description="steps (for a broadcast: sessions)")
    done: int
    failed: int
    pending: int
    created: float
    finished: float | None
    error: str | None


class JobList(Page):
    jobs: list[Job]


class Stats(BaseModel):
    registered_users: int
    registered_users_per_host: dict[str, int]
    online_users: int | None = Field(description="distinct users with a session")
    online_sessions: int | None
    online_users_per_host: dict[str, int] | None
    sessions_per_node: dict[str, int] | None = Field(description="sessions per edge node")
    stanzas_total: int | None = Field(
        description="stanzas received from clients; null: not measured"
    )
    stanzas_per_second: float | None = Field(
        description="over the last rate_window_seconds (samples are taken on each call)"
    )
    rate_window_seconds: float | None
    uptime_seconds: float | None


class HostInfo(BaseModel):
    host: str
    registered_users: int
    online_users: int | None
    online_sessions: int | None


class HostList(Page):
    hosts: list[HostInfo]


class Room(BaseModel):
    jid: str = Field(description="the room's bare JID")
    name: str
    persistent: bool
    public: bool
    members_only: bool
    moderated: bool
    password_protected: bool
    occupants: int = Field(description="occupants now (0 for a stored room nobody is in)")
    affiliations: dict[str, str] = Field(description="bare JID -> owner, admin, member or outcast")


class RoomList(Page):
    rooms: list[Room]


class RoomCreate(Strict):
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [{"jid": "lobby@conference.localhost", "owner": "alice@localhost"}]
        },
    )
    jid: str = Field(min_length=1, max_length=MAX_JID, description="room@<a group chat domain>")
    owner: str = Field(min_length=1, max_length=MAX_JID, description="a local account")
    name: str = Field(default="", max_length=200)
    members_only: bool = False


class RoomDestroyed(BaseModel):
    jid: str
    destroyed: bool


class AffiliationChange(Strict):
    affiliation: Literal["owner", "admin", "member", "outcast", "none"]
    reason: str | None = Field(default=None, max_length=1000)


class PubsubNode(BaseModel):
    service: str = Field(description="the pubsub domain, or the account's bare JID (PEP)")
    node: str
    title: str
    node_type: Literal["leaf", "collection"]
    access_model: str = Field(description="open, presence, roster, authorize or whitelist")
    items: int = Field(description="items kept")
    subscriptions: int
    owners: list[str] = Field(description="bare JIDs")


class PubsubNodeList(Page):
    service: str
    nodes: list[PubsubNode]


class NodeDeleted(BaseModel):
    service: str
    node: str
    deleted: bool


class NodePurged(BaseModel):
    service: str
    node: str
    purged: bool


class AuthBlock(BaseModel):
    key: str = Field(description="what DELETE /auth-blocks/{key} takes")
    kind: Literal["ip", "account"] = Field(
        description="ip: an address refused (policy-violation) after failed logins;"
        " account: an account whose login attempts are delayed after failures"
    )
    subject: str = Field(description="the IP address or the account (user@host)")
    failures: int = Field(description="failed authentications counted")
    expires_in: float = Field(
        description="seconds until the block is lifted or the failures are forgotten"
    )
    delay: float = Field(description="seconds the account's next attempt waits (0 for ip)")


class AuthBlockList(Page):
    blocks: list[AuthBlock]


class Unblocked(BaseModel):
    key: str
    unblocked: bool


# ---------------------------------------------------------------- errors


class ApiError(Exception):
    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers


def _error(
    status: int,
    code: str,
    message: str,
    headers: dict[str, str] | None = None,
    details: list[dict[str, Any]] | None = None,
) -> JSONResponse:
    info: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        info["details"] = details
    return JSONResponse({"error": info}, status_code=status, headers=headers)


_DESCRIPTIONS = {
    400: "bad-json: the body is not JSON (or not UTF-8)",
    401: "unauthorized: no bearer token, or an unknown one",
    403: "forbidden: the token lacks this operation's scope",
    404: "not-found: no such account, item, job, room or node (or a path JID not served here)",
    409: "exists: the account exists already",
    405: "method-not-allowed: the path is another operation's (see Allow)",
    413: "body-too-large: the request body is larger than 1 MiB",
    422: "invalid-request (the request does not match the schema) or a command's code:"
    " bad-jid, unknown-host, bad-password, bad-text, bad-xml, not-vcard, too-large,"
    " undeliverable, bad-request",
    429: "busy: too many background jobs are running",
    503: "not-running: the server's live parts are not available",
}
_WWW_AUTH = {
    "WWW-Authenticate": {
        "description": 'Bearer realm="xmppd" (RFC 6750)',
        "schema": {"type": "string"},
    }
}


def _responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    out: dict[int | str, dict[str, Any]] = {}
    for s in sorted({401, 403, *statuses}):
        out[s] = {"model": ErrorBody, "description": _DESCRIPTIONS[s]}
        if s in (401, 403):
            out[s]["headers"] = _WWW_AUTH
    return out


def _json_error_location(loc: Iterable[Any]) -> list[str | int]:
    return [x if isinstance(x, int) else str(x) for x in loc]


# ---------------------------------------------------------------- authentication


def _bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


def _authenticate(store: TokenStore, header: str | None) -> frozenset[str]:
    token = _bearer(header)
    if token is None:
        raise ApiError(
            401,
            "unauthorized",
            "a bearer token is required",
            {"WWW-Authenticate": 'Bearer realm="xmppd"'},
        )
    scopes = store.scopes(token)
    if scopes is None:
        raise ApiError(
            401,
            "unauthorized",
            "unknown bearer token",
            {"WWW-Authenticate": 'Bearer realm="xmppd", error="invalid_token"'},
        )
    return scopes


def _authorize(scopes: frozenset[str], required: str) -> None:
    if not TokenStore.allows(scopes, required):
        raise ApiError(
            403,
            "forbidden",
            f"this token lacks the {required!r} scope",
            {
                "WWW-Authenticate": (
                    f'Bearer realm="xmppd", error="insufficient_scope", scope="{required}"'
                )
            },
        )


class _AuthFirst:
    """Authenticate, resolve the route and check its scope before the request is
    read: 401, then 404/405, then 403, then whatever the operation answers."""

    def __init__(
        self,
        app: ASGIApp,
        store: TokenStore,
        public: frozenset[str],
        routes: list[BaseRoute],
        scopes: dict[tuple[str, str], str],
    ) -> None:
        self.app = app
        self.store = store
        self.public = public
        self.routes = routes
        self.scopes = scopes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.public:
            await self.app(scope, receive, send)
            return
        try:
            granted = _authenticate(self.store, Headers(scope=scope).get("authorization"))
            allowed: set[str] = set()
            for route in self.routes:
                match, _ = route.matches(scope)
                if match == Match.FULL:
                    path = getattr(route, "path", "")
                    required = self.scopes.get((scope["method"], path))
                    if required is not None:
                        _authorize(granted, required)
                    break
                if match == Match.PARTIAL:
                    allowed |= set(getattr(route, "methods", None) or ())
            else:
                if allowed:
                    methods = ", ".join(sorted(allowed))
                    raise ApiError(
                        405,
                        "method-not-allowed",
                        f"{scope['method']} is not allowed here (allowed: {methods})",
                        {"Allow": methods},
                    )
            length = Headers(scope=scope).get("content-length")
            if length is not None and length.isdigit() and int(length) > MAX_BODY:
                raise ApiError(413, "body-too-large", f"the body is larger than {MAX_BODY} bytes")
        except ApiError as exc:
            response = _error(exc.status, exc.code, exc.message, exc.headers)
            await response(scope, receive, send)
            return
        await self.app(scope, _limited(receive), send)


def _limited(receive: Receive) -> Receive:
    """``receive`` refusing bodies past :data:`MAX_BODY` (chunked ones too)."""
    total = 0

    async def limited() -> Message:
        nonlocal total
        message = await receive()
        if message["type"] == "http.request":
            total += len(message.get("body", b""))
            if total > MAX_BODY:
                # FastAPI re-raises its HTTPException while reading a body
                raise HTTPException(413, f"the body is larger than {MAX_BODY} bytes")
        return message

    return limited


# ---------------------------------------------------------------- dependencies

_BEARER = HTTPBearer(
    auto_error=False,
    scheme_name="bearerAuth",
    description="An admin token from the admin_tokens setting",
)


def _need(required: str) -> Any:
    """The operation's scope, as a dependency (it also puts the bearer scheme with
    the scope into the OpenAPI document)."""

    async def check(
        request: Request,
        _creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)],
    ) -> None:
        # the middleware checked already; checked again here in case it is bypassed
        store: TokenStore = request.app.state.tokens
        _authorize(_authenticate(store, request.headers.get("authorization")), required)

    return Security(check, scopes=[required])


def _ctx(request: Request) -> AdminContext:
    provider: Callable[[], AdminContext] = request.app.state.ctx_provider
    return provider()


Ctx = Annotated[AdminContext, Depends(_ctx)]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="page size")]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="items to skip")]
UserJid = Annotated[
    str,
    Path(
        description="the account's bare JID (user@domain)",
        openapi_examples={"alice": {"value": "alice@localhost"}},
    ),
]
JobId = Annotated[str, Path(max_length=64, description="the job's id")]
PubsubService = Annotated[
    str,
    Path(
        description="a pubsub domain (pubsub.domain) or an account's bare JID (its PEP nodes)",
        openapi_examples={
            "domain": {"value": "pubsub.localhost"},
            "pep": {"value": "alice@localhost"},
        },
    ),
]
NodeName = Annotated[
    str,
    Path(
        min_length=1,
        description="the node's name, percent-encoded or not (PEP nodes hold slashes)",
        openapi_examples={"news": {"value": "news"}},
    ),
]


class _NodeConvertor(PathConvertor):
    """A pubsub node's name in a path: the rest of the path, slashes and all
    (PEP node names are URIs), but never one ending in ``/purge``: that path
    is ``POST .../nodes/{node}/purge``, whose ``Allow`` stays ``POST``."""

    regex = r"(?!.*/purge$).*"


register_url_convertor("pubsub_node", _NodeConvertor())


# ---------------------------------------------------------------- the app


def create_app(
    ctx_provider: Callable[[], AdminContext], tokens: TokenStore | Iterable[str]
) -> FastAPI:
    """The admin API over the command layer.

    ``ctx_provider`` returns the :class:`AdminContext` to run commands on (called
    per request, so the app may exist before the server's parts do); ``tokens``
    is a :class:`TokenStore` or ``TOKEN:scope,scope`` entries.
    """
    store = tokens if isinstance(tokens, TokenStore) else TokenStore.from_entries(tokens)
    openapi_url = f"{API_PREFIX}/openapi.json"
    docs_url = f"{API_PREFIX}/docs"
    scope_list = "\n".join(f"* `{name}`: {what}" for name, what in SCOPES.items())
    app = FastAPI(
        title="xmppd admin API",
        version="1",
        description=(
            "Manage an xmppd server: accounts, sessions, rosters, vCards, messages,"
            " broadcasts, group chat rooms, publish-subscribe nodes, statistics and"
            " virtual hosts.\n\nEvery operation needs"
            " `Authorization: Bearer TOKEN`; tokens carry scopes (`admin` implies the"
            f" others):\n\n{scope_list}\n\nErrors are always"
            ' `{"error": {"code": "...", "message": "..."}}` with a stable code.'
        ),
        openapi_url=openapi_url,
        docs_url=docs_url,
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
        redirect_slashes=False,
    )
    app.state.ctx_provider = ctx_provider
    app.state.tokens = store
    route_scopes: dict[tuple[str, str], str] = {}

    def op(
        method: str,
        path: str,
        scope: str,
        *,
        errors: tuple[int, ...] = (),
        status_code: int = 200,
        **kw: Any,
    ) -> Callable[[Callable[..., Awaitable[Any]]], Callable[..., Awaitable[Any]]]:
        full = API_PREFIX + path
        route_scopes[(method, full)] = scope
        return app.api_route(
            full,
            methods=[method],
            dependencies=[_need(scope)],
            responses=_responses(*errors),
            status_code=status_code,
            **kw,
        )

    def user_in_path(c: AdminContext, jid: str) -> str:
        """A path's account: malformed or foreign means there is no such resource."""
        try:
            return str(cmd.parse_user(c, jid))
        except CommandError as exc:
            raise CommandError("not-found", exc.message) from None

    def contact_in_path(jid: str) -> str:
        try:
            return str(cmd.parse_jid(jid, "contact JID").bare)
        except CommandError as exc:
            raise CommandError("not-found", exc.message) from None

    # ---- errors -------------------------------------------------------------

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(CommandError)
    async def _command_error(request: Request, exc: CommandError) -> JSONResponse:
        return _error(STATUS.get(exc.code, 422), exc.code, exc.message)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        if any(e.get("type") == "json_invalid" for e in errors):
            return _error(400, "bad-json", "the request body is not valid JSON")
        details = [
            {
                "loc": _json_error_location(e.get("loc", ())),
                "message": str(e.get("msg", "")),
                "type": str(e.get("type", "")),
            }
            for e in errors
        ]
        where = ", ".join(".".join(str(x) for x in d["loc"]) for d in details[:5])
        return _error(422, "invalid-request", f"invalid request: {where}", details=details)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {
            400: "bad-json",  # FastAPI: a body it could not read as JSON
            404: "not-found",
            405: "method-not-allowed",
            413: "body-too-large",
        }.get(exc.status_code, f"http-{exc.status_code}")
        message = exc.detail if isinstance(exc.detail, str) else code
        if exc.status_code == 404 and message == "Not Found":
            message = f"no such path: {request.url.path}"
        return _error(exc.status_code, code, message, dict(exc.headers or {}) or None)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        log.error("admin API: %s %s failed: %r", request.method, request.url.path, exc)
        return _error(500, "internal", "internal server error")

    # ---- users ----------------------------------------------------------------

    @op("GET", "/users", "read", errors=(422,), response_model=UserList, tags=["users"])
    async def list_users(
        c: Ctx,
        search: Annotated[
            str | None, Query(max_length=1023, description="substring of the username")
        ] = None,
        host: Annotated[str | None, Query(max_length=1023, description="only this domain")] = None,
        limit: Limit = 100,
        offset: Offset = 0,
    ) -> Any:
        """List accounts, by domain then username."""
        return await cmd.list_users(c, host=host, search=search, limit=limit, offset=offset)

    @op(
        "POST",
        "/users",
        "write",
        errors=(400, 409, 413, 422),
        status_code=201,
        response_model=UserDetail,
        tags=["users"],
    )
    async def create_user(c: Ctx, body: UserCreate) -> Any:
        """Create an account."""
        created = await cmd.add_user(c, body.jid, body.password)
        return await cmd.get_user(c, created["jid"])

    @op("GET", "/users/{jid}", "read", errors=(404, 422), response_model=UserDetail, tags=["users"])
    async def get_user(c: Ctx, jid: UserJid) -> Any:
        """An account, whether it is online, and its last activity."""
        return await cmd.get_user(c, user_in_path(c, jid))

    @op(
        "DELETE",
        "/users/{jid}",
        "write",
        errors=(404, 422),
        response_model=UserDeleted,
        tags=["users"],
    )
    async def delete_user(
        c: Ctx,
        jid: Annotated[
            str,
            Path(
                description="the account's bare JID (user@domain)",
                openapi_examples={"carol": {"value": "carol@localhost"}},
            ),
        ],
    ) -> Any:
        """Delete an account and all its data; its sessions are disconnected."""
        return await cmd.delete_user(c, user_in_path(c, jid))

    @op(
        "PUT",
        "/users/{jid}/password",
        "write",
        errors=(400, 404, 413, 422),
        response_model=UserRef,
        tags=["users"],
    )
    async def change_password(c: Ctx, jid: UserJid, body: PasswordChange) -> Any:
        """Change an account's password (sessions stay connected)."""
        return await cmd.set_password(c, user_in_path(c, jid), body.password)

    @op(
        "POST",
        "/users/{jid}/disable",
        "write",
        errors=(404, 422),
        response_model=UserState,
        tags=["users"],
    )
    async def disable_user(c: Ctx, jid: UserJid) -> Any:
        """Refuse the account's logins and disconnect its sessions."""
        return await cmd.disable_user(c, user_in_path(c, jid))

    @op(
        "POST",
        "/users/{jid}/enable",
        "write",
        errors=(404, 422),
        response_model=UserState,
        tags=["users"],
    )
    async def enable_user(c: Ctx, jid: UserJid) -> Any:
        """Allow a disabled account to log in again."""
        return await cmd.enable_user(c, user_in_path(c, jid))

    # ---- sessions ---------------------------------------------------------------

    @op(
        "GET",
        "/sessions",
        "read",
        errors=(422, 503),
        response_model=SessionList,
        tags=["sessions"],
    )
    async def list_sessions(
        c: Ctx,
        host: Annotated[str | None, Query(max_length=1023, description="only this domain")] = None,
        limit: Limit = 100,
        offset: Offset = 0,
    ) -> Any:
        """Online sessions, by JID."""
        return await cmd.list_sessions(c, host=host, limit=limit, offset=offset)

    @op(
        "GET",
        "/users/{jid}/sessions",
        "read",
        errors=(404, 422, 503),
        response_model=SessionList,
        tags=["sessions"],
    )
    async def user_sessions(c: Ctx, jid: UserJid, limit: Limit = 100, offset: Offset = 0) -> Any:
        """One account's online sessions."""
        return await cmd.list_sessions(c, jid=user_in_path(c, jid), limit=limit, offset=offset)

    @op(
        "DELETE",
        "/sessions/{jid:path}",
        "write",
        errors=(404, 422),
        response_model=Kicked,
        tags=["sessions"],
    )
    async def kick(
        c: Ctx,
        jid: Annotated[
            str,
            Path(
                description="a full JID (one session) or a bare JID (all of the user's)",
                openapi_examples={"phone": {"value": "alice@localhost/phone"}},
            ),
        ],
    ) -> Any:
        """Disconnect one session or all of a user's (stream error policy-violation)."""
        try:
            j = cmd.parse_jid(jid)
        except CommandError as exc:
            raise CommandError("not-found", exc.message) from None
        if j.local is None:
            raise CommandError("not-found", "expected user@domain[/resource]")
        return await cmd.kick_user(c, str(j))

    # ---- rosters -------------------------------------------------------------------

    @op(
        "GET",
        "/users/{jid}/roster",
        "read",
        errors=(404, 422),
        response_model=Roster,
        tags=["rosters"],
    )
    async def get_roster(c: Ctx, jid: UserJid, limit: Limit = 100, offset: Offset = 0) -> Any:
        """The account's roster with each item's subscription state."""
        return await cmd.get_roster(c, user_in_path(c, jid), limit=limit, offset=offset)

    @op(
        "POST",
        "/users/{jid}/roster",
        "write",
        errors=(400, 404, 413, 422),
        status_code=201,
        response_model=RosterChange,
        tags=["rosters"],
    )
    async def add_roster_item(c: Ctx, jid: UserJid, body: RosterItemIn) -> Any:
        """Add or replace a roster item as given (no subscription stanzas are sent);
        the user's sessions that fetched the roster get a roster push."""
        return await cmd.set_roster_item(
            c,
            user_in_path(c, jid),
            body.jid,
            name=body.name,
            groups=body.groups,
            subscription=body.subscription,
        )

    @op(
        "DELETE",
        "/users/{jid}/roster/{contact}",
        "write",
        errors=(404, 422),
        response_model=RosterRemoved,
        tags=["rosters"],
    )
    async def remove_roster_item(
        c: Ctx,
        jid: UserJid,
        contact: Annotated[
            str,
            Path(
                description="the contact's bare JID",
                openapi_examples={"bob": {"value": "bob@localhost"}},
            ),
        ],
    ) -> Any:
        """Remove a roster item and push the removal (no unsubscribe stanzas are sent)."""
        return await cmd.remove_roster_item(c, user_in_path(c, jid), contact_in_path(contact))

    # ---- vCards --------------------------------------------------------------------

    @op(
        "GET", "/users/{jid}/vcard", "read", errors=(404, 422), response_model=VCard, tags=["vcard"]
    )
    async def get_vcard(c: Ctx, jid: UserJid) -> Any:
        """The account's vCard (XEP-0054) as an XML string, or null."""
        return await cmd.get_vcard(c, user_in_path(c, jid))

    @op(
        "PUT",
        "/users/{jid}/vcard",
        "write",
        errors=(400, 404, 413, 422),
        response_model=VCard,
        tags=["vcard"],
    )
    async def set_vcard(c: Ctx, jid: UserJid, body: VCardIn) -> Any:
        """Replace the account's vCard with a <vCard xmlns='vcard-temp'/> element."""
        return await cmd.set_vcard(c, user_in_path(c, jid), body.vcard)

    # ---- messages ------------------------------------------------------------------

    @op(
        "POST",
        "/messages",
        "admin",
        errors=(400, 404, 413, 422, 503),
        status_code=202,
        response_model=MessageSent,
        tags=["messages"],
    )
    async def send_message(c: Ctx, body: MessageIn) -> Any:
        """Send a message (normal, chat or headline) as any JID; it is routed like
        one its sender sent. A local recipient must exist (404 otherwise)."""
        return await cmd.send_message(
            c, body.to, body.body, sender=body.sender, type=body.type, subject=body.subject
        )

    @op(
        "POST",
        "/broadcasts",
        "admin",
        errors=(400, 413, 422, 429, 503),
        status_code=202,
        response_model=Job,
        tags=["messages"],
    )
    async def broadcast(c: Ctx, body: BroadcastIn) -> Any:
        """Announce to every online session (of one domain, if given) as a background
        job; follow it with GET /jobs/{id}."""
        return await cmd.broadcast(
            c, body.body, subject=body.subject, sender=body.sender, host=body.host, type=body.type
        )

    # ---- jobs ----------------------------------------------------------------------

    @op("GET", "/jobs", "read", errors=(422,), response_model=JobList, tags=["jobs"])
    async def list_jobs(c: Ctx, limit: Limit = 100, offset: Offset = 0) -> Any:
        """Background jobs, newest first (the last 100 finished ones are kept)."""
        return await cmd.list_jobs(c, limit=limit, offset=offset)

    @op("GET", "/jobs/{job_id}", "read", errors=(404, 422), response_model=Job, tags=["jobs"])
    async def get_job(c: Ctx, job_id: JobId) -> Any:
        """A job's status and progress."""
        return await cmd.get_job(c, job_id)

    @op(
        "POST",
        "/jobs/{job_id}/cancel",
        "admin",
        errors=(404, 422),
        response_model=Job,
        tags=["jobs"],
    )
    async def cancel_job(c: Ctx, job_id: JobId) -> Any:
        """Stop a running job (what it did stays done)."""
        return await cmd.cancel_job(c, job_id)

    # ---- statistics and hosts --------------------------------------------------------

    @op("GET", "/stats", "read", response_model=Stats, tags=["server"])
    async def stats(c: Ctx) -> Any:
        """Registered and online users, sessions per edge node, stanzas per second."""
        return await cmd.stats(c)

    @op("GET", "/hosts", "read", errors=(422,), response_model=HostList, tags=["server"])
    async def list_hosts(c: Ctx, limit: Limit = 100, offset: Offset = 0) -> Any:
        """The served domains (virtual hosts) with their user counts."""
        return await cmd.list_hosts(c, limit=limit, offset=offset)

    # ---- group chat rooms -----------------------------------------------------------

    def room_in_path(c: AdminContext, jid: str) -> str:
        try:
            return str(cmd.parse_room(c, jid))
        except CommandError as exc:
            raise CommandError("not-found", exc.message) from None

    @op("GET", "/rooms", "read", errors=(422, 503), response_model=RoomList, tags=["rooms"])
    async def list_rooms(
        c: Ctx,
        domain: Annotated[
            str | None, Query(max_length=1023, description="only this group chat domain")
        ] = None,
        limit: Limit = 100,
        offset: Offset = 0,
    ) -> Any:
        """Group chat rooms: those in use and the stored persistent ones."""
        return await cmd.list_rooms(c, domain=domain, limit=limit, offset=offset)

    @op(
        "POST",
        "/rooms",
        "write",
        errors=(400, 409, 413, 422, 503),
        status_code=201,
        response_model=Room,
        tags=["rooms"],
    )
    async def create_room(c: Ctx, body: RoomCreate) -> Any:
        """Create a persistent room with an owner."""
        return await cmd.create_room(c, body.jid, body.owner, body.name, body.members_only)

    @op("GET", "/rooms/{jid}", "read", errors=(404, 422, 503), response_model=Room, tags=["rooms"])
    async def get_room(
        c: Ctx, jid: Annotated[str, Path(description="room@conference.domain")]
    ) -> Any:
        """A room's configuration summary, occupants count and affiliations."""
        return await cmd.get_room(c, room_in_path(c, jid))

    @op(
        "DELETE",
        "/rooms/{jid}",
        "write",
        errors=(404, 422, 503),
        response_model=RoomDestroyed,
        tags=["rooms"],
    )
    async def destroy_room(
        c: Ctx,
        jid: Annotated[str, Path(description="room@conference.domain")],
        reason: Annotated[str | None, Query(max_length=1000)] = None,
    ) -> Any:
        """Destroy a room; its occupants are told (XEP-0045 10.9)."""
        return await cmd.destroy_room(c, room_in_path(c, jid), reason=reason)

    @op(
        "PUT",
        "/rooms/{jid}/affiliations/{user}",
        "write",
        errors=(400, 404, 413, 422, 503),
        response_model=Room,
        tags=["rooms"],
    )
    async def set_room_affiliation(
        c: Ctx,
        jid: Annotated[str, Path(description="room@conference.domain")],
        user: Annotated[str, Path(description="a bare JID, local or not")],
        body: AffiliationChange,
    ) -> Any:
        """Set a JID's affiliation with the room; occupants affected are told."""
        try:
            who = str(cmd.parse_jid(user).bare)
        except CommandError as exc:
            raise CommandError("not-found", exc.message) from None
        return await cmd.set_room_affiliation(
            c, room_in_path(c, jid), who, body.affiliation, body.reason
        )

    # ---- publish-subscribe nodes ---------------------------------------------------------

    def service_in_path(c: AdminContext, service: str) -> str:
        """A path's pubsub service: malformed is 422 (bad-jid), not one here 404."""
        try:
            return str(cmd.parse_service(c, service))
        except CommandError as exc:
            if exc.code == "bad-jid":
                raise
            raise CommandError("not-found", exc.message) from None

    @op(
        "GET",
        "/pubsub/{service}/nodes",
        "read",
        errors=(404, 422, 503),
        response_model=PubsubNodeList,
        tags=["pubsub"],
    )
    async def list_nodes(
        c: Ctx, service: PubsubService, limit: Limit = 100, offset: Offset = 0
    ) -> Any:
        """The nodes of a pubsub domain or of an account's PEP service, by name."""
        return await cmd.list_nodes(c, service_in_path(c, service), limit=limit, offset=offset)

    @op(
        "DELETE",
        "/pubsub/{service}/nodes/{node:pubsub_node}",
        "write",
        errors=(404, 405, 422, 503),
        response_model=NodeDeleted,
        tags=["pubsub"],
    )
    async def delete_node(c: Ctx, service: PubsubService, node: NodeName) -> Any:
        """Delete a node and its items; its subscribers are told (XEP-0060 8.4).
        A name ending in /purge is the purge operation's path (405): delete such
        a node with xmppctl node-delete."""
        return await cmd.delete_node(c, service_in_path(c, service), node)

    @op(
        "POST",
        "/pubsub/{service}/nodes/{node:path}/purge",
        "write",
        errors=(404, 422, 503),
        response_model=NodePurged,
        tags=["pubsub"],
    )
    async def purge_node(c: Ctx, service: PubsubService, node: NodeName) -> Any:
        """Remove every item of a node; its subscribers are told (XEP-0060 8.5)."""
        return await cmd.purge_node(c, service_in_path(c, service), node)

    # ---- password-guessing blocks ------------------------------------------------------

    @op(
        "GET",
        "/auth-blocks",
        "read",
        errors=(422, 503),
        response_model=AuthBlockList,
        tags=["server"],
    )
    async def list_auth_blocks(c: Ctx, limit: Limit = 100, offset: Offset = 0) -> Any:
        """IP addresses blocked after too many failed authentications, and accounts
        whose login attempts are delayed after failures."""
        return await cmd.list_auth_blocks(c, limit=limit, offset=offset)

    @op(
        "DELETE",
        "/auth-blocks/{key}",
        "write",
        errors=(404, 422, 503),
        response_model=Unblocked,
        tags=["server"],
    )
    async def unblock_auth(
        c: Ctx,
        key: Annotated[
            str,
            Path(
                max_length=MAX_JID + 8,
                description="ip:<address> (lift the block) or account:<user@host>"
                " (forget its failures)",
                openapi_examples={"address": {"value": "ip:192.0.2.7"}},
            ),
        ],
    ) -> Any:
        """Lift a block: the address may log in again at once, or the account's
        attempts are no longer delayed."""
        return await cmd.unblock_auth(c, key)

    app.add_middleware(
        _AuthFirst,
        store=store,
        public=frozenset({openapi_url, docs_url}),
        routes=app.router.routes,
        scopes=route_scopes,
    )
    return app


# ---------------------------------------------------------------- serving


class ApiServer(AsgiServer):
    """Serves the admin API with uvicorn as a task of the running event loop."""

    def __init__(self, app: FastAPI) -> None:
        super().__init__(app, "admin API")
