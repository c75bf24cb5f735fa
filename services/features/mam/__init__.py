"""Message archives (XEP-0313) with unique stanza ids (XEP-0359).

On the hook chain:

* ``message_arrive`` (a message to a local user, before it is delivered or
  kept): a message worth archiving (``protocol.worth_archiving``) that the
  user's preferences keep, for an account that exists, is written to the
  archive and gets ``<stanza-id by=user id=.../>``; any such element a
  sender put there is removed first. Every copy (each resource, offline
  storage, carbons) then carries the same id, and a client asking the
  archive right after a message arrived finds it there.
* ``message_out`` (a local user sends): written to the sender's archive
  under a fresh id.
* IQs to the account: ``<query/>`` (get: the form; set: the results as
  messages, then ``<fin/>``), ``<prefs/>`` (get, set), and XEP-0136's
  ``<list/>`` and ``<retrieve/>`` over the same rows (``legacy.py``). Only
  the owner may ask (forbidden otherwise).

Preferences are cached per user (``Context.cache``, ``mam-prefs``); the
default is the ``mam_default`` setting. Retention (``mam_retention_days``)
is applied by each process at most once an hour, in the background, when
it archives. A failed archive write is logged and the message still goes:
the archive is a copy, delivery is the promise.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets
import time

from lxml import etree

from ...core.feature import Context, Feature
from ...core.routing import Envelope
from ...core.storage import ArchivedMessage, ArchivePage, ArchiveQuery
from ...xmpp import ns
from ...xmpp.errors import StanzaCondition, StanzaError
from ...xmpp.jid import JID
from ...xmpp.parser import serialize
from . import legacy
from . import protocol as p

__all__ = ["FEATURE", "PREFS_CACHE"]

log = logging.getLogger("xmppd.features.mam")

PREFS_CACHE = "mam-prefs"
_QUERY = ns.q(p.MAM, "query")
_PREFS = ns.q(p.MAM, "prefs")
#: seconds between two retention sweeps of one process
_SWEEP_EVERY = 3600.0
_last_sweep: dict[int, float] = {}
_sweeps: set[asyncio.Task[None]] = set()


def _new_id() -> str:
    # unguessable (XEP-0359 section 4 asks ids not to reveal anything), and
    # URL-safe so clients can put it in RSM and forms as it is
    return secrets.token_urlsafe(12)


async def _prefs(ctx: Context, user: JID) -> p.Prefs:
    async def load() -> str | None:
        return await ctx.storage.get_archive_prefs(str(user))

    doc = await ctx.cache(PREFS_CACHE).get(user, load)
    return _parsed(doc, ctx.settings.mam_default)


@functools.lru_cache(maxsize=4096)
def _parsed(doc: str | None, default: str) -> p.Prefs:
    # asked for each message both ways: the same few documents, parsed once
    return p.Prefs(default) if doc is None else p.Prefs.from_json(doc)


async def _keeps(ctx: Context, user: JID, peer: JID) -> bool:
    decided = (await _prefs(ctx, user)).decide(peer)
    if decided is not None:
        return decided
    assert user.local is not None
    item = await ctx.storage.get_roster_item(user.domain, user.local, str(peer.bare))
    return item is not None


def _sweep(ctx: Context) -> None:
    days = ctx.settings.mam_retention_days
    if days <= 0:
        return
    now = time.monotonic()
    key = id(ctx.storage)
    if now - _last_sweep.get(key, -_SWEEP_EVERY) < _SWEEP_EVERY:
        return
    _last_sweep[key] = now

    async def run() -> None:
        try:
            n = await ctx.storage.expire_archives(time.time() - days * 86400)
            if n:
                log.info("archive retention removed %d messages", n)
        except Exception:
            log.exception("archive retention sweep failed")

    task = asyncio.get_running_loop().create_task(run())
    _sweeps.add(task)
    task.add_done_callback(_sweeps.discard)


async def _write(ctx: Context, archive: JID, m: ArchivedMessage) -> None:
    try:
        await ctx.storage.archive_message(str(archive), m)
    except Exception:
        log.exception("could not archive a message for %s", archive)
        return
    _sweep(ctx)


# the bytes every archived, stamped or spoofed message has: a message
# without them is passed over unparsed
def _maybe_content(data: bytes) -> bool:
    return b"body" in data or b"urn:xmpp:hints" in data or b"encrypted" in data


async def _archived(ctx: Context, user: JID, sid: str) -> bool:
    return (
        await ctx.storage.query_archive(str(user), ArchiveQuery(after_id=sid, limit=0)) is not None
    )


async def _arrive(ctx: Context, env: Envelope) -> None:
    to = env.to.bare
    if to.local is None:
        return
    data = env.data
    spoofed = p.SID.encode() in data
    # decided on the bytes and the cached preferences first: a message not
    # archived and carrying no stanza-id is passed over unparsed
    keep = _maybe_content(data) and await _keeps(ctx, to, env.frm)
    if not keep and not spoofed:
        return
    el = env.tree()
    if spoofed:
        sid = p.stanza_id_of(el, str(to))
        if sid is not None and await _archived(ctx, to, sid):
            # ours: a message routed again (stream management gave up on a
            # session that had not acknowledged it): archived already
            return
    changed = p.strip_stanza_ids(el, str(to))
    # written before delivery: a client that queries right after a message
    # arrived finds it there (in a cluster the query may beat a later write)
    if keep and p.worth_archiving(el) and await ctx.user_exists(to):
        sid = _new_id()
        p.stamp_stanza_id(el, str(to), sid)
        # serialized once: the archive keeps the bytes every copy carries
        env.data = serialize(el)
        await _write(ctx, to, ArchivedMessage(sid, time.time(), str(env.frm), False, env.data))
    elif changed:
        env.data = serialize(el)


async def _sent(ctx: Context, env: Envelope) -> None:
    frm = env.frm.bare
    if frm.local is None or not _maybe_content(env.data):
        return
    if not await _keeps(ctx, frm, env.to) or not p.worth_archiving(env.tree()):
        return
    await _write(ctx, frm, ArchivedMessage(_new_id(), time.time(), str(env.to), True, env.data))


def _owner(env: Envelope) -> JID:
    owner = env.to.bare
    if env.frm.bare != owner:
        raise StanzaError(StanzaCondition.FORBIDDEN, "only the owner may use an archive")
    return owner


async def _query_form(ctx: Context, env: Envelope, q: etree._Element) -> etree._Element:
    _owner(env)
    return p.query_form()


async def _query(ctx: Context, env: Envelope, q: etree._Element) -> etree._Element:
    owner = _owner(env)
    query = p.parse_query(q, ctx.settings.mam_max_page)
    page = await ctx.storage.query_archive(str(owner), query.query)
    if page is None:
        raise StanzaError(StanzaCondition.ITEM_NOT_FOUND, "no such message in the archive")
    messages = list(reversed(page.messages)) if query.flip else page.messages
    session = await ctx.sessions.get(env.frm)
    edge = await ctx.edge(session.node) if session is not None else None
    if edge is not None and messages:
        # all at once: an edge takes deliveries in the order of the calls
        # (EdgeLink), and one gRPC round trip per result made a page of 250
        # take over a second in a cluster; the IQ result (fin) goes after
        # them, as 4.3 wants
        await asyncio.gather(
            *(
                edge.deliver(
                    env.frm,
                    etree.tostring(
                        p.result_message(str(owner), str(env.frm), query.queryid, m),
                        with_tail=False,
                    ),
                )
                for m in messages
            )
        )
    asked = query.query
    return p.fin(page, query.flip, backward=asked.last or asked.page_before is not None)


async def _prefs_get(ctx: Context, env: Envelope, el: etree._Element) -> etree._Element:
    return p.prefs_element(await _prefs(ctx, _owner(env)))


async def _prefs_set(ctx: Context, env: Envelope, el: etree._Element) -> etree._Element:
    owner = _owner(env)
    prefs = p.parse_prefs(el)
    await ctx.storage.set_archive_prefs(str(owner), prefs.to_json())
    ctx.cache(PREFS_CACHE).invalidate(owner)
    return p.prefs_element(prefs)


def _reader(ctx: Context, owner: JID) -> legacy.Query:
    async def query(q: ArchiveQuery) -> ArchivePage | None:
        return await ctx.storage.query_archive(str(owner), q)

    return query


async def _list(ctx: Context, env: Envelope, el: etree._Element) -> etree._Element:
    owner = _owner(env)
    return await legacy.list_collections(_reader(ctx, owner), el, ctx.settings.mam_max_page)


async def _retrieve(ctx: Context, env: Envelope, el: etree._Element) -> etree._Element:
    owner = _owner(env)
    return await legacy.retrieve(_reader(ctx, owner), el, ctx.settings.mam_max_page)


async def _read_only(ctx: Context, env: Envelope, el: etree._Element) -> None:
    _owner(env)
    raise StanzaError(
        StanzaCondition.FEATURE_NOT_IMPLEMENTED, "this archive is written by the server (XEP-0313)"
    )


async def _removed(ctx: Context, user: JID) -> None:
    # the rows go with the account (Store.delete_account); the cached prefs here
    ctx.cache(PREFS_CACHE).invalidate(user)


FEATURE = Feature(
    name="mam",
    xeps=("XEP-0136", "XEP-0313", "XEP-0359"),
    storage=("archive_messages", "archive_prefs"),
    disco_features=(p.SID,),
    account_disco_features=(p.MAM, p.SID, legacy.MANAGE),
    account_iq={
        (_QUERY, "get"): _query_form,
        (_QUERY, "set"): _query,
        (_PREFS, "get"): _prefs_get,
        (_PREFS, "set"): _prefs_set,
        # XEP-0136, read-only
        (ns.q(legacy.ARCHIVE, "list"), "get"): _list,
        (ns.q(legacy.ARCHIVE, "retrieve"), "get"): _retrieve,
        **{
            (ns.q(legacy.ARCHIVE, name), "set"): _read_only
            for name in ("save", "remove", "modified", "pref", "auto", "itemremove")
        },
    },
    message_arrive=(_arrive,),
    message_out=(_sent,),
    account_removed=(_removed,),
)
