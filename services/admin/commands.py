"""The operator command layer.

Each command is a coroutine taking an :class:`AdminContext` (the live objects
it needs) and plain arguments, and returning a JSON-ready dict (``xmppctl``
prints results by their keys: ``users``, ``sessions``, ``kicked``, ``jid``). The same
command serves the REST admin API (:mod:`services.admin.api`), the CLI
``xmppctl`` over the control socket when a server runs (so effects such as
kicking sessions happen), or directly on the database when none does.

Failures are :class:`CommandError` with a stable ``code`` (see
:data:`ERROR_CODES`); each transport maps the code to its own form (the REST
API to an HTTP status).
"""

from __future__ import annotations

import collections
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

from lxml import etree

from ..core.muc import AFFILIATIONS, Muc, RoomSummary
from ..core.pubsub import NodeSummary, Pubsub
from ..core.routing import Edges, Session, SessionRegistry
from ..core.storage import RosterItem, Storage
from ..features.vcard import MAX_VCARD_BYTES, PHOTO_CACHE
from ..security.throttle import AuthThrottle, Block
from ..xmpp import ns
from ..xmpp import stanza as st
from ..xmpp.errors import SaslFailure, StanzaError
from ..xmpp.jid import JID
from ..xmpp.sasl import derive_credentials
from ..xmpp.tree import parse_element
from .jobs import Job, JobManager, JobsBusy, for_each

if TYPE_CHECKING:
    from ..core.feature import Context

log = logging.getLogger("xmppd.admin")

#: every CommandError code, with what it means
ERROR_CODES: dict[str, str] = {
    "bad-jid": "not a valid JID of the expected kind",
    "unknown-host": "the domain is not served here",
    "bad-password": "empty password, or not a valid PRECIS OpaqueString",
    "bad-text": "text with characters XML cannot carry",
    "bad-xml": "not well-formed XML, or XML with a DTD",
    "not-vcard": "the XML is not a <vCard xmlns='vcard-temp'/> element",
    "too-large": "larger than the server accepts",
    "exists": "the account exists already",
    "not-found": "no such account, roster item, job, room or pubsub node",
    "undeliverable": "the stanza could not be routed",
    "busy": "too many background jobs are running",
    "not-running": "the server is not running (needs live sessions or its login counts)",
    "bad-request": "a malformed command (control socket), or one the service refuses",
}

#: most sessions one broadcast job delivers to at once
BROADCAST_CONCURRENCY = 32
#: the window of the stanzas-per-second figure, seconds
RATE_WINDOW = 60.0
#: longest roster item name or group (UTF-8 bytes) and most groups, as for the roster IQ
MAX_NAME_BYTES = 1023
MAX_GROUPS = 100

_CAPS = ns.q(ns.CAPS, "c")
_SHOW = ns.q(ns.CLIENT, "show")
_STATUS = ns.q(ns.CLIENT, "status")
_VCARD = ns.q(ns.VCARD, "vCard")


class CommandError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class AdminContext:
    """What commands work on. Only ``storage`` and ``hosts`` are always there;
    the rest exists while a server runs (the CLI without one has neither)."""

    storage: Storage
    hosts: list[str]
    sessions: SessionRegistry | None = None
    edges: Edges | None = None
    #: the router (send, deliver, roster pushes); None without a running server
    router: Context | None = None
    #: a monotonic count of stanzas (the embedded server reads its metrics'
    #: xmppd_stanzas_in_total) for the stanzas/s statistic; None: not measured
    stanza_count: Callable[[], int] | None = None
    #: the edges' failed-login and registration counts (blocked addresses); None: not running
    throttle: AuthThrottle | None = None
    #: the group chat service (in-process or the muc role) and its domains
    muc: Muc | None = None
    muc_domains: list[str] = field(default_factory=list)
    #: the publish-subscribe service (in-process or the pubsub role) and its domains
    pubsub: Pubsub | None = None
    pubsub_domains: list[str] = field(default_factory=list)
    jobs: JobManager = field(default_factory=JobManager)
    clock: Callable[[], float] = time.monotonic
    _samples: collections.deque[tuple[float, int]] = field(
        default_factory=lambda: collections.deque(maxlen=4096), init=False, repr=False
    )

    def __post_init__(self) -> None:
        if self.router is not None:
            if self.sessions is None:
                self.sessions = self.router.sessions
        if self.stanza_count is not None:
            self._samples.append((self.clock(), self.stanza_count()))

    def stanza_rate(self) -> tuple[int, float, float] | None:
        """(total, stanzas per second, window seconds), averaged over about the
        last :data:`RATE_WINDOW` seconds (from the samples taken on each call,
        the first when the context was made); None when not measured."""
        if self.stanza_count is None:
            return None
        now, total = self.clock(), self.stanza_count()
        samples = self._samples
        samples.append((now, total))
        # keep the newest sample at least RATE_WINDOW old as the baseline
        while len(samples) > 2 and samples[1][0] <= now - RATE_WINDOW:
            samples.popleft()
        t0, n0 = samples[0]
        window = now - t0
        rate = (total - n0) / window if window > 0 else 0.0
        return total, max(0.0, rate), window


# ---------------------------------------------------------------- arguments


def parse_user(ctx: AdminContext, jid: str) -> JID:
    """An account's bare JID (``user`` alone means ``user@<first host>``)."""
    try:
        j = JID.parse(jid if "@" in jid else f"{jid}@{ctx.hosts[0]}")
    except StanzaError as exc:
        raise CommandError("bad-jid", f"invalid JID {jid!r}: {exc.text}") from None
    if j.local is None or j.resource is not None:
        raise CommandError("bad-jid", "expected user@domain")
    if j.domain not in ctx.hosts:
        raise CommandError("unknown-host", f"{j.domain} is not served here")
    return j


def parse_jid(jid: str, what: str = "JID") -> JID:
    try:
        j = JID.parse(jid)
    except StanzaError as exc:
        raise CommandError("bad-jid", f"invalid {what} {jid!r}: {exc.text}") from None
    if not _xml_chars(jid):  # JID.parse lets a domain through with control characters
        raise CommandError("bad-jid", f"invalid {what} {jid!r}: a character XML cannot carry")
    return j


def _local(j: JID) -> str:
    assert j.local is not None
    return j.local


def credentials(password: str) -> list[Any]:
    if not password:
        raise CommandError("bad-password", "empty password")
    try:
        return [derive_credentials(password, "SHA-1"), derive_credentials(password, "SHA-256")]
    except SaslFailure:
        raise CommandError("bad-password", "not a valid password (PRECIS OpaqueString)") from None


def _xml_chars(value: str) -> bool:
    """Whether XML can carry every character of ``value`` (XML 1.0 Char production)."""
    for ch in value:
        c = ord(ch)
        if (c < 0x20 and ch not in "\t\n\r") or 0xD800 <= c <= 0xDFFF or c in (0xFFFE, 0xFFFF):
            return False
    return True


def _text(value: str, what: str) -> str:
    """Text an XML element can carry."""
    if not _xml_chars(value):
        raise CommandError("bad-text", f"{what} holds a character XML cannot carry")
    return value


def _page(rows: Sequence[Any], limit: int | None, offset: int) -> list[Any]:
    offset = max(0, offset)
    return list(rows[offset:] if limit is None else rows[offset : offset + max(0, limit)])


def _need_router(ctx: AdminContext) -> Context:
    if ctx.router is None:
        raise CommandError("not-running", "the server is not running")
    return ctx.router


async def _require_account(ctx: AdminContext, j: JID) -> None:
    if await ctx.storage.get_account(j.domain, _local(j)) is None:
        raise CommandError("not-found", f"{j} does not exist")


# ---------------------------------------------------------------- users


async def add_user(ctx: AdminContext, jid: str, password: str) -> dict[str, Any]:
    j = parse_user(ctx, jid)
    creds = credentials(password)
    if not await ctx.storage.create_account(j.domain, _local(j), creds):
        raise CommandError("exists", f"{j} already exists")
    return {"jid": str(j)}


async def get_user(ctx: AdminContext, jid: str) -> dict[str, Any]:
    j = parse_user(ctx, jid)
    acct = await ctx.storage.get_account(j.domain, _local(j))
    if acct is None:
        raise CommandError("not-found", f"{j} does not exist")
    sessions = await ctx.sessions.resources(j) if ctx.sessions is not None else []
    last = await ctx.storage.get_last_activity(j.domain, _local(j))
    return {
        "jid": str(j),
        "username": acct.username,
        "host": acct.host,
        "disabled": acct.disabled,
        "created_at": acct.created_at,
        "online": bool(sessions),
        "sessions": len(sessions),
        "last_activity": None if last is None else {"stamp": last.stamp, "status": last.status},
    }


async def delete_user(ctx: AdminContext, jid: str) -> dict[str, Any]:
    j = parse_user(ctx, jid)
    closed = (await kick_user(ctx, str(j)))["kicked"]
    if not await ctx.storage.delete_account(j.domain, _local(j)):
        raise CommandError("not-found", f"{j} does not exist")
    if ctx.router is not None:  # the features drop what they keep for the account
        await ctx.router.features.remove_account(ctx.router, j)
    return {"jid": str(j), "disconnected": closed}


async def set_password(ctx: AdminContext, jid: str, password: str) -> dict[str, Any]:
    j = parse_user(ctx, jid)
    creds = credentials(password)
    if not await ctx.storage.set_credentials(j.domain, _local(j), creds):
        raise CommandError("not-found", f"{j} does not exist")
    return {"jid": str(j)}


async def _set_disabled(ctx: AdminContext, jid: str, disabled: bool) -> dict[str, Any]:
    j = parse_user(ctx, jid)
    if not await ctx.storage.set_disabled(j.domain, _local(j), disabled):
        raise CommandError("not-found", f"{j} does not exist")
    closed = 0
    if disabled:  # logins are refused from now on; end the sessions there are
        closed = (await kick_user(ctx, str(j), "account disabled by an administrator"))["kicked"]
    return {"jid": str(j), "disabled": disabled, "disconnected": closed}


async def disable_user(ctx: AdminContext, jid: str) -> dict[str, Any]:
    """Refuse the account's logins and disconnect its sessions."""
    return await _set_disabled(ctx, jid, True)


async def enable_user(ctx: AdminContext, jid: str) -> dict[str, Any]:
    return await _set_disabled(ctx, jid, False)


async def _count_accounts(ctx: AdminContext, host: str, search: str | None) -> int:
    if not search:
        return await ctx.storage.count_accounts(host)
    n, batch = 0, 1000
    while True:
        rows = await ctx.storage.list_accounts(host, search, limit=batch, offset=n)
        n += len(rows)
        if len(rows) < batch:
            return n


async def list_users(
    ctx: AdminContext,
    host: str | None = None,
    search: str | None = None,
    limit: int | None = None,
    offset: int = 0,
) -> dict[str, Any]:
    """Accounts by host then username; ``search`` is a case-insensitive substring
    of the username. A host not served here lists nothing. ``limit`` None: all."""
    hosts = [h for h in ctx.hosts if host is None or h == host.strip().lower()]
    offset = max(0, offset)
    out: list[dict[str, Any]] = []
    total = 0
    skip = offset
    for h in hosts:
        count = await _count_accounts(ctx, h, search)
        total += count
        want = None if limit is None else limit - len(out)
        if skip >= count:
            skip -= count
            continue
        if want is not None and want <= 0:
            skip = 0
            continue
        take = count - skip if want is None else min(want, count - skip)
        for a in await ctx.storage.list_accounts(h, search, limit=take, offset=skip):
            out.append(
                {
                    "jid": f"{a.username}@{a.host}",
                    "username": a.username,
                    "host": a.host,
                    "disabled": a.disabled,
                    "created_at": a.created_at,
                }
            )
        skip = 0
    return {"users": out, "total": total, "limit": limit, "offset": offset}


# ---------------------------------------------------------------- sessions


def _session_row(s: Session) -> dict[str, Any]:
    show = status = client = None
    if s.presence is not None:
        try:
            el = parse_element(s.presence)
        except etree.XMLSyntaxError:
            el = None
        if el is not None:
            show = el.findtext(_SHOW) or None
            status = el.findtext(_STATUS) or None
            caps = el.find(_CAPS)
            client = caps.get("node") if caps is not None else None
    d = asdict(s)
    return {
        "jid": str(s.jid),
        "user": str(s.jid.bare),
        "resource": s.jid.resource or "",
        "node": s.node,
        "ip": s.ip,
        "priority": s.priority,
        "available": s.available,
        "show": show,
        "status": status,
        "client": client,
        "started": d["started"],
    }


async def list_sessions(
    ctx: AdminContext,
    jid: str | None = None,
    host: str | None = None,
    limit: int | None = None,
    offset: int = 0,
) -> dict[str, Any]:
    """Online sessions (all, one user's, or one host's), sorted by JID."""
    if ctx.sessions is None:
        raise CommandError("not-running", "the server is not running")
    if jid is not None:
        j = parse_user(ctx, jid)
        sessions = await ctx.sessions.resources(j)
    else:
        sessions = await ctx.sessions.all()
        if host is not None:
            sessions = [s for s in sessions if s.jid.domain == host.strip().lower()]
    rows = sorted((_session_row(s) for s in sessions), key=lambda r: str(r["jid"]))
    return {
        "sessions": _page(rows, limit, offset),
        "total": len(rows),
        "limit": limit,
        "offset": max(0, offset),
    }


async def kick_user(
    ctx: AdminContext, jid: str, reason: str = "kicked by an administrator"
) -> dict[str, Any]:
    """Disconnect one session (full JID) or all of a user's (bare JID)."""
    j = parse_jid(jid if "@" in jid else f"{jid}@{ctx.hosts[0]}")
    if j.local is None:
        raise CommandError("bad-jid", "expected user@domain or user@domain/resource")
    if ctx.sessions is None or ctx.edges is None:
        return {"kicked": 0}
    targets = [await ctx.sessions.get(j)] if j.resource else await ctx.sessions.resources(j.bare)
    n = 0
    for s in targets:
        edge = ctx.edges.get(s.node) if s is not None else None
        if s is not None and edge is not None:
            if await edge.close_session(s.jid, "policy-violation", reason):
                n += 1
    return {"kicked": n}


# ---------------------------------------------------------------- rosters


def _item_row(item: RosterItem) -> dict[str, Any]:
    return {
        "jid": item.jid,
        "name": item.name,
        "subscription": item.subscription,
        "ask": item.ask,
        "pending_in": item.pending_in,
        "approved": item.approved,
        "groups": list(item.groups),
    }


def _contact(user: JID, contact: str) -> JID:
    c = parse_jid(contact, "contact JID")
    if c.resource is not None or c == user:
        raise CommandError("bad-jid", "a contact is a bare JID other than the user's own")
    return c


async def get_roster(
    ctx: AdminContext, jid: str, limit: int | None = None, offset: int = 0
) -> dict[str, Any]:
    j = parse_user(ctx, jid)
    await _require_account(ctx, j)
    ver, items = await ctx.storage.get_roster(j.domain, _local(j))
    rows = [_item_row(i) for i in items]
    return {
        "jid": str(j),
        "version": ver,
        "items": _page(rows, limit, offset),
        "total": len(rows),
        "limit": limit,
        "offset": max(0, offset),
    }


async def set_roster_item(
    ctx: AdminContext,
    jid: str,
    contact: str,
    name: str | None = None,
    groups: Sequence[str] = (),
    subscription: str = "none",
) -> dict[str, Any]:
    """Add or replace an item as given (an administrative override: no
    subscription stanzas are exchanged), then push it to the user's
    sessions that asked for the roster."""
    j = parse_user(ctx, jid)
    c = _contact(j, contact)
    if subscription not in ("none", "to", "from", "both"):
        raise CommandError("bad-request", "subscription is none, to, from or both")
    if name is not None:
        _text(name, "the name")
    if len(groups) > MAX_GROUPS:
        raise CommandError("too-large", f"more than {MAX_GROUPS} groups")
    for g in groups:
        if not g:
            raise CommandError("bad-request", "empty group name")
        _text(g, "a group name")
    for t in [name or "", *groups]:
        if len(t.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
            raise CommandError("too-large", f"a name or group longer than {MAX_NAME_BYTES} bytes")
    await _require_account(ctx, j)
    from ..features.roster import push_roster
    from ..presence.service import change_roster_item

    uniq = tuple(dict.fromkeys(groups))

    def decide(old: RosterItem | None) -> tuple[bool, RosterItem | None, None]:
        base = old if old is not None else RosterItem(jid=str(c))
        item = replace(base, name=name or None, groups=uniq, subscription=subscription)
        if subscription in ("to", "both"):  # a pending outbound request is answered now
            item = replace(item, ask=False)
        if subscription in ("from", "both"):  # and so is a pending inbound one
            item = replace(item, pending_in=False, pending_in_stanza=None, approved=False)
        return True, item, None

    # compare-and-set, as the presence service writes: a subscription change
    # racing this one (in any presence replica) is neither lost nor reverted
    change = await change_roster_item(ctx.storage, j, str(c), decide)
    item, ver = change.new, change.version
    assert item is not None and ver is not None
    if ctx.router is not None:
        await push_roster(ctx.router, j, item, ver)
    return {"jid": str(j), "version": ver, "item": _item_row(item)}


async def remove_roster_item(ctx: AdminContext, jid: str, contact: str) -> dict[str, Any]:
    """Remove an item and push the removal (no unsubscribe stanzas are sent)."""
    j = parse_user(ctx, jid)
    c = _contact(j, contact)
    await _require_account(ctx, j)
    from ..features.roster import push_roster
    from ..presence.service import change_roster_item

    def decide(old: RosterItem | None) -> tuple[bool, RosterItem | None, None]:
        return old is not None, None, None

    # compare-and-set: the item removed is the one last read, never a newer one
    change = await change_roster_item(ctx.storage, j, str(c), decide)
    item, ver = change.old, change.version
    if item is None or ver is None:
        raise CommandError("not-found", f"{c} is not in the roster of {j}")
    if ctx.router is not None:
        await push_roster(ctx.router, j, item, ver, remove=True)
    return {"jid": str(j), "contact": item.jid, "version": ver}


# ---------------------------------------------------------------- vCards


async def get_vcard(ctx: AdminContext, jid: str) -> dict[str, Any]:
    j = parse_user(ctx, jid)
    await _require_account(ctx, j)
    data = await ctx.storage.get_vcard(j.domain, _local(j))
    return {"jid": str(j), "vcard": None if data is None else data.decode("utf-8", "replace")}


async def set_vcard(ctx: AdminContext, jid: str, vcard: str) -> dict[str, Any]:
    """Store a ``<vCard xmlns='vcard-temp'>`` element given as an XML string."""
    j = parse_user(ctx, jid)
    raw = vcard.encode("utf-8", "surrogatepass")
    if len(raw) > MAX_VCARD_BYTES:
        raise CommandError("too-large", f"vCard larger than {MAX_VCARD_BYTES} bytes")
    try:
        el = parse_element(raw)
    except (etree.XMLSyntaxError, ValueError) as exc:
        raise CommandError("bad-xml", f"not well-formed XML: {exc}") from None
    if el.getroottree().docinfo.doctype:
        raise CommandError("bad-xml", "a DTD is not allowed")
    if el.tag != _VCARD:
        raise CommandError("not-vcard", "expected <vCard xmlns='vcard-temp'>")
    el.tail = None
    etree.cleanup_namespaces(el)
    data = etree.tostring(el, encoding="utf-8", with_tail=False)
    if len(data) > MAX_VCARD_BYTES:
        raise CommandError("too-large", f"vCard larger than {MAX_VCARD_BYTES} bytes")
    await _require_account(ctx, j)
    await ctx.storage.set_vcard(j.domain, _local(j), data)
    if ctx.router is not None:  # the hash in the user's presence (XEP-0153)
        ctx.router.cache(PHOTO_CACHE).invalidate(j)
    if ctx.pubsub is not None:  # and the PEP avatar (XEP-0398)
        await ctx.pubsub.vcard_changed(j, data)
    return {"jid": str(j), "vcard": data.decode()}


# ---------------------------------------------------------------- messages


def _message(
    frm: JID, to: JID, typ: str, body: str, subject: str | None, id_: str
) -> etree._Element:
    el = st.make("message", to=to, frm=frm, type_=typ, id_=id_)
    if subject:
        etree.SubElement(el, ns.q(ns.CLIENT, "subject")).text = subject
    etree.SubElement(el, ns.q(ns.CLIENT, "body")).text = body
    return el


def _message_type(typ: str) -> str:
    if typ not in ("normal", "chat", "headline"):
        raise CommandError("bad-request", "type is normal, chat or headline")
    return typ


async def send_message(
    ctx: AdminContext,
    to: str,
    body: str,
    sender: str | None = None,
    type: str = "normal",
    subject: str | None = None,
) -> dict[str, Any]:
    """Route a message from any JID (default: the recipient's domain, or the
    first host) as if that entity had sent it. A local recipient must exist."""
    router = _need_router(ctx)
    to_j = parse_jid(to, "recipient")
    frm = parse_jid(sender, "sender") if sender else None
    typ = _message_type(type)
    _text(body, "the body")
    if subject is not None:
        _text(subject, "the subject")
    local = to_j.domain in ctx.hosts
    if local and to_j.local is not None and not await router.user_exists(to_j.bare):
        raise CommandError("not-found", f"{to_j.bare} does not exist")
    if frm is None:
        frm = JID.parse(to_j.domain if local else ctx.hosts[0])
    msg_id = uuid.uuid4().hex
    try:
        await router.send(_message(frm, to_j, typ, body, subject, msg_id))
    except StanzaError as exc:
        raise CommandError("undeliverable", f"cannot route to {to_j}: {exc}") from None
    return {"id": msg_id, "from": str(frm), "to": str(to_j)}


async def broadcast(
    ctx: AdminContext,
    body: str,
    subject: str | None = None,
    sender: str | None = None,
    host: str | None = None,
    type: str = "headline",
) -> dict[str, Any]:
    """Send an announcement to every online session (of one host, if given) as a
    background job; returns the job (see :func:`get_job` for its progress)."""
    router = _need_router(ctx)
    frm = parse_jid(sender, "sender") if sender else None
    typ = _message_type(type)
    _text(body, "the body")
    if subject is not None:
        _text(subject, "the subject")
    if host is not None and host.strip().lower() not in ctx.hosts:
        raise CommandError("unknown-host", f"{host} is not served here")
    sessions = await router.sessions.all()
    if host is not None:
        sessions = [s for s in sessions if s.jid.domain == host.strip().lower()]
    targets = [s.jid for s in sessions]
    batch = uuid.uuid4().hex

    async def deliver(to: JID) -> bool:
        src = frm if frm is not None else JID.parse(to.domain)
        el = _message(src, to, typ, body, subject, f"{batch}-{to}")
        return await router.deliver(to, etree.tostring(el, with_tail=False))

    async def work(job: Job) -> None:
        await for_each(job, targets, deliver, BROADCAST_CONCURRENCY)

    try:
        job = ctx.jobs.submit("broadcast", work, total=len(targets))
    except JobsBusy as exc:
        raise CommandError("busy", str(exc)) from None
    return job.as_dict()


# ---------------------------------------------------------------- jobs


async def get_job(ctx: AdminContext, id: str) -> dict[str, Any]:
    job = ctx.jobs.get(id)
    if job is None:
        raise CommandError("not-found", f"no job {id!r}")
    return job.as_dict()


async def list_jobs(ctx: AdminContext, limit: int | None = None, offset: int = 0) -> dict[str, Any]:
    rows = [j.as_dict() for j in ctx.jobs.list()]
    return {
        "jobs": _page(rows, limit, offset),
        "total": len(rows),
        "limit": limit,
        "offset": max(0, offset),
    }


async def cancel_job(ctx: AdminContext, id: str) -> dict[str, Any]:
    job = ctx.jobs.cancel(id)
    if job is None:
        raise CommandError("not-found", f"no job {id!r}")
    return job.as_dict()


# ---------------------------------------------------------------- login blocks


def _need_throttle(ctx: AdminContext) -> AuthThrottle:
    if ctx.throttle is None:
        raise CommandError("not-running", "the server is not running")
    return ctx.throttle


def _block_row(b: Block) -> dict[str, Any]:
    return {
        "key": b.key,
        "kind": b.kind,
        "subject": b.subject,
        "failures": b.failures,
        "expires_in": round(b.expires_in, 3),
        "delay": b.delay,
    }


async def list_auth_blocks(
    ctx: AdminContext, limit: int | None = None, offset: int = 0
) -> dict[str, Any]:
    """IP addresses blocked after failed authentications, and accounts whose
    attempts are delayed after failures, by key."""
    rows = [_block_row(b) for b in await _need_throttle(ctx).list_blocks()]
    return {
        "blocks": _page(rows, limit, offset),
        "total": len(rows),
        "limit": limit,
        "offset": max(0, offset),
    }


async def unblock_auth(ctx: AdminContext, key: str) -> dict[str, Any]:
    """Lift an address's block (``ip:<address>``) or forget an account's failures
    (``account:<user@host>``)."""
    if not await _need_throttle(ctx).unblock(key):
        raise CommandError("not-found", f"no block {key!r}")
    return {"key": key, "unblocked": True}


# ---------------------------------------------------------------- statistics


async def stats(ctx: AdminContext) -> dict[str, Any]:
    """Registered users per host, online users and sessions (per host and per
    edge node), stanzas routed and stanzas per second (when measured)."""
    registered = {h: await ctx.storage.count_accounts(h) for h in ctx.hosts}
    out: dict[str, Any] = {
        "registered_users": sum(registered.values()),
        "registered_users_per_host": registered,
        "online_users": None,
        "online_sessions": None,
        "online_users_per_host": None,
        "sessions_per_node": None,
        "stanzas_total": None,
        "stanzas_per_second": None,
        "rate_window_seconds": None,
        "uptime_seconds": None,
    }
    if ctx.sessions is not None:
        sessions = await ctx.sessions.all()
        users = {s.jid.bare for s in sessions}
        per_node: dict[str, int] = {n: 0 for n in (ctx.edges or {})}
        for s in sessions:
            per_node[s.node] = per_node.get(s.node, 0) + 1
        per_host = {h: 0 for h in ctx.hosts}
        for u in users:
            per_host[u.domain] = per_host.get(u.domain, 0) + 1
        out.update(
            online_users=len(users),
            online_sessions=len(sessions),
            online_users_per_host=per_host,
            sessions_per_node=per_node,
        )
    rate = ctx.stanza_rate()
    if rate is not None:
        out.update(
            stanzas_total=rate[0], stanzas_per_second=round(rate[1], 3), rate_window_seconds=rate[2]
        )
    if ctx.router is not None:
        out["uptime_seconds"] = max(0.0, time.time() - ctx.router.started_at)
    return out


async def list_hosts(
    ctx: AdminContext, limit: int | None = None, offset: int = 0
) -> dict[str, Any]:
    """The served domains (virtual hosts) with their user counts."""
    sessions = await ctx.sessions.all() if ctx.sessions is not None else None
    rows = []
    for h in ctx.hosts:
        row: dict[str, Any] = {
            "host": h,
            "registered_users": await ctx.storage.count_accounts(h),
            "online_users": None,
            "online_sessions": None,
        }
        if sessions is not None:
            mine = [s for s in sessions if s.jid.domain == h]
            row["online_users"] = len({s.jid.bare for s in mine})
            row["online_sessions"] = len(mine)
        rows.append(row)
    return {
        "hosts": _page(rows, limit, offset),
        "total": len(rows),
        "limit": limit,
        "offset": max(0, offset),
    }


# ---- group chat rooms (XEP-0045) ---------------------------------------------------


def _muc(ctx: AdminContext) -> Muc:
    if ctx.muc is None:
        raise CommandError("not-running", "the group chat service is not running")
    return ctx.muc


def parse_room(ctx: AdminContext, jid: str) -> JID:
    """A room's bare JID on one of this server's group chat domains."""
    j = parse_jid(jid, "room JID")
    if j.local is None or j.resource is not None:
        raise CommandError("bad-jid", "expected room@conference.domain")
    if j.domain not in ctx.muc_domains:
        raise CommandError("unknown-host", f"{j.domain} is not a group chat service here")
    return j


def _room_row(r: RoomSummary) -> dict[str, Any]:
    return {
        "jid": str(r.jid),
        "name": r.name,
        "persistent": r.persistent,
        "public": r.public,
        "members_only": r.members_only,
        "moderated": r.moderated,
        "password_protected": r.password_protected,
        "occupants": r.occupants,
        "affiliations": dict(r.affiliations),
    }


async def list_rooms(
    ctx: AdminContext, domain: str | None = None, limit: int | None = None, offset: int = 0
) -> dict[str, Any]:
    """Group chat rooms (in memory, and the stored persistent ones), by JID."""
    muc = _muc(ctx)
    domains = ctx.muc_domains
    if domain is not None:
        if domain.strip().lower() not in ctx.muc_domains:
            raise CommandError("unknown-host", f"{domain} is not a group chat service here")
        domains = [domain.strip().lower()]
    rows = [_room_row(r) for d in domains for r in await muc.rooms(d)]
    rows.sort(key=lambda r: str(r["jid"]))
    return {"rooms": _page(rows, limit, offset), "total": len(rows), "limit": limit,
            "offset": max(0, offset)}  # fmt: skip


async def get_room(ctx: AdminContext, jid: str) -> dict[str, Any]:
    room = parse_room(ctx, jid)
    summary = await _muc(ctx).room(room)
    if summary is None:
        raise CommandError("not-found", f"no room {room}")
    return _room_row(summary)


async def create_room(
    ctx: AdminContext, jid: str, owner: str, name: str = "", members_only: bool = False
) -> dict[str, Any]:
    """Create a persistent room owned by a local user."""
    room = parse_room(ctx, jid)
    who = parse_user(ctx, owner)
    if len(name) > 200:
        raise CommandError("bad-text", "a room name is at most 200 characters")
    if not await _muc(ctx).create_room(room, who, name, members_only):
        raise CommandError("exists", f"{room} exists")
    return await get_room(ctx, str(room))


async def destroy_room(
    ctx: AdminContext, jid: str, reason: str | None = None, alternate: str | None = None
) -> dict[str, Any]:
    """Destroy a room; its occupants are told (with the alternate venue, if any)."""
    room = parse_room(ctx, jid)
    alt = parse_jid(alternate, "alternate room") if alternate else None
    if not await _muc(ctx).destroy_room(room, reason, alt):
        raise CommandError("not-found", f"no room {room}")
    return {"jid": str(room), "destroyed": True}


async def set_room_affiliation(
    ctx: AdminContext, jid: str, user: str, affiliation: str, reason: str | None = None
) -> dict[str, Any]:
    """Set a JID's affiliation with a room (owner, admin, member, outcast, none)."""
    room = parse_room(ctx, jid)
    who = parse_jid(user, "JID").bare
    if affiliation not in AFFILIATIONS:
        raise CommandError("bad-request", f"affiliation is one of {', '.join(AFFILIATIONS)}")
    try:
        done = await _muc(ctx).set_affiliation(room, who, affiliation, reason)
    except StanzaError as exc:
        raise CommandError("bad-request", exc.text or exc.condition.value) from None
    if not done:
        raise CommandError("not-found", f"no room {room}")
    return await get_room(ctx, str(room))


# ---- publish-subscribe nodes (XEP-0060, PEP XEP-0163) -------------------------------


def _pubsub(ctx: AdminContext) -> Pubsub:
    if ctx.pubsub is None:
        raise CommandError("not-running", "the publish-subscribe service is not running")
    return ctx.pubsub


def parse_service(ctx: AdminContext, service: str) -> JID:
    """A pubsub service here: one of the pubsub domains, or an account's bare
    JID (its PEP service; whether the account exists is checked apart)."""
    j = parse_jid(service, "pubsub service")
    if j.resource is not None:
        raise CommandError("bad-jid", "expected pubsub.domain or user@domain")
    if j.local is None:
        if j.domain not in ctx.pubsub_domains:
            raise CommandError("unknown-host", f"{j.domain} is not a pubsub service here")
    elif j.domain not in ctx.hosts:
        raise CommandError("unknown-host", f"{j.domain} is not served here")
    return j


async def _service(ctx: AdminContext, service: str) -> tuple[Pubsub, JID]:
    """The pubsub service and the JID of one that exists (a PEP service's account)."""
    ps = _pubsub(ctx)  # first: without a server there are no pubsub domains to know
    j = parse_service(ctx, service)
    if j.local is not None:
        await _require_account(ctx, j)
    return ps, j


def _node_name(node: str) -> str:
    if not node:
        raise CommandError("bad-text", "the node name is empty")
    return _text(node, "the node name")


def _node_row(n: NodeSummary) -> dict[str, Any]:
    return {
        "service": str(n.service),
        "node": n.node,
        "title": n.title,
        "node_type": n.node_type,
        "access_model": n.access_model,
        "items": n.items,
        "subscriptions": n.subscriptions,
        "owners": list(n.owners),
    }


async def list_nodes(
    ctx: AdminContext, service: str, limit: int | None = None, offset: int = 0
) -> dict[str, Any]:
    """The nodes of a pubsub domain or of an account's PEP service, by name."""
    ps, j = await _service(ctx, service)
    rows = sorted((_node_row(n) for n in await ps.nodes(j)), key=lambda r: str(r["node"]))
    return {"service": str(j), "nodes": _page(rows, limit, offset), "total": len(rows),
            "limit": limit, "offset": max(0, offset)}  # fmt: skip


async def delete_node(ctx: AdminContext, service: str, node: str) -> dict[str, Any]:
    """Delete a node as its owner would: its subscribers are told (XEP-0060 8.4)."""
    ps, j = await _service(ctx, service)
    name = _node_name(node)
    try:
        done = await ps.delete_node(j, name)
    except StanzaError as exc:
        raise CommandError("bad-request", exc.text or exc.condition.value) from None
    if not done:
        raise CommandError("not-found", f"no node {name!r} on {j}")
    return {"service": str(j), "node": name, "deleted": True}


async def purge_node(ctx: AdminContext, service: str, node: str) -> dict[str, Any]:
    """Remove every item of a node; subscribers are told (XEP-0060 8.5)."""
    ps, j = await _service(ctx, service)
    name = _node_name(node)
    try:
        done = await ps.purge_node(j, name)
    except StanzaError as exc:  # a collection, or a node that keeps no items
        raise CommandError("bad-request", exc.text or exc.condition.value) from None
    if not done:
        raise CommandError("not-found", f"no node {name!r} on {j}")
    return {"service": str(j), "node": name, "purged": True}


COMMANDS = {
    "list_nodes": list_nodes,
    "delete_node": delete_node,
    "purge_node": purge_node,
    "list_rooms": list_rooms,
    "get_room": get_room,
    "create_room": create_room,
    "destroy_room": destroy_room,
    "set_room_affiliation": set_room_affiliation,
    "add_user": add_user,
    "get_user": get_user,
    "delete_user": delete_user,
    "set_password": set_password,
    "disable_user": disable_user,
    "enable_user": enable_user,
    "list_users": list_users,
    "list_sessions": list_sessions,
    "kick_user": kick_user,
    "get_roster": get_roster,
    "set_roster_item": set_roster_item,
    "remove_roster_item": remove_roster_item,
    "get_vcard": get_vcard,
    "set_vcard": set_vcard,
    "send_message": send_message,
    "broadcast": broadcast,
    "get_job": get_job,
    "list_jobs": list_jobs,
    "cancel_job": cancel_job,
    "stats": stats,
    "list_hosts": list_hosts,
    "list_auth_blocks": list_auth_blocks,
    "unblock_auth": unblock_auth,
}
