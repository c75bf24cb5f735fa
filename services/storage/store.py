"""The :class:`Store`: the :class:`~services.core.storage.Storage` Protocol on a database.

The same class and the same SQL serve SQLite (embedded) and PostgreSQL
(cluster), through :mod:`services.platform.db`. The schema is in
``migrations/`` (``0001_initial.sql`` and the ones after it).

Behaviour the Protocol leaves open:

* Writes that create per-user data (roster, offline messages, vCard, private
  XML, blocks, last activity) need the account to exist, and raise
  :class:`UnknownAccountError` when it does not; so do roster deletions, which
  must return a version. Other deletions of nothing are no-ops, and reads for
  an unknown account return nothing (``get_roster`` returns ``(0, [])``).
* ``set_credentials`` replaces all the account's credentials by the given ones.
* Every ``put_roster_item`` and ``delete_roster_item`` bumps the roster
  version (XEP-0237), even when deleting an item that was not there;
  ``update_roster_item`` bumps it only when it writes.
* ``update_roster_item`` bumps the version first, in the same transaction as
  its read and write: on PostgreSQL that UPDATE locks the user's ``accounts``
  row until commit, so concurrent roster writers for one user (any process)
  run one after another and the read sees the previous writer's commit;
  SQLite has one writer (``BEGIN IMMEDIATE``).
* ``store_offline`` with a key already stored for the user returns the first
  row's id and stores nothing; ``delete_offline`` ignores ids that are gone.
* Lists come back in code point order (``list_accounts`` by username,
  ``get_roster`` by jid, ``get_blocklist`` by jid, ``pubsub_nodes`` by node),
  the same on both engines.
* ``delete_account`` also deletes the account's PEP service (the pubsub nodes
  and items of the service ``f"{username}@{host}"``) and its message archive
  and archiving preferences, in the same transaction.
* ``query_archive`` tells a bare ``with_jid`` from a full one by its ``/``;
  ``limit`` <= 0 answers the count and no messages.
* ``put_push_registration`` for an unknown account raises
  :class:`UnknownAccountError`. It first locks the account's row (an UPDATE
  that changes nothing): on PostgreSQL two enables of one user run one after
  another, so they cannot both pass the limit. Replacing a registration
  keeps its ``created``. ``delete_push_registrations`` of nothing is a no-op.
* ``put_pubsub_item`` on a node that does not exist raises
  :class:`UnknownPubsubNodeError` (a ``LookupError``, as
  :class:`UnknownAccountError`) and writes nothing. It first locks the node's
  row (an UPDATE that changes nothing): on PostgreSQL publishers to one node
  then run one after another, so the newest item (the highest row id) is the
  last committed, two publishes of one item id cannot collide on the unique
  index, and the node cannot be deleted half-way; SQLite has one writer.
  Items are trimmed only when one is published: lowering a node's
  ``keep`` trims nothing until the next publish.
* ``get_pubsub_items`` with ``ids`` ignores the ids not stored, answers each
  once, newest first (``ids=[]``: no items); ``limit`` <= 0 gives no items;
  with both, the newest ``limit`` of those ids. ``delete_pubsub_items``
  answers the ids it deleted in the order asked, each once.
* The other pubsub reads and deletions of an unknown node or service are
  no-ops and answer nothing (``delete_pubsub_node``: False, reads: None, [],
  0). ``expire_pubsub_items`` removes the items with a stamp strictly before
  ``before``.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from services.core.storage import (
    Account,
    ArchivedMessage,
    ArchivePage,
    ArchiveQuery,
    LastActivity,
    OfflineMessage,
    PubsubItem,
    PushRegistration,
    RosterItem,
    ScramCredentials,
)
from services.platform.db import Connection, Database, IntegrityError, open_database
from services.platform.migrate import migrate

if TYPE_CHECKING:
    from services.core.storage import Storage

__all__ = ["Store", "UnknownAccountError", "UnknownPubsubNodeError"]

#: the tables holding per-user rows, emptied by delete_account (accounts last)
_USER_TABLES = (
    "scram_credentials",
    "roster_items",
    "offline_messages",
    "vcards",
    "private_xml",
    "blocklist",
    "last_activity",
    "push_registrations",
)

_ROSTER_COLUMNS = (
    "jid, name, subscription, ask, pending_in, approved, groups_json, pending_in_stanza"
)


class UnknownAccountError(LookupError):
    """A write for per-user data named an account that does not exist."""

    def __init__(self, host: str, username: str) -> None:
        super().__init__(f"no account {username}@{host}")
        self.host = host
        self.username = username


class UnknownPubsubNodeError(LookupError):
    """An item was written to a pubsub node that does not exist (or no longer does)."""

    def __init__(self, service: str, node: str) -> None:
        super().__init__(f"no pubsub node {node!r} at {service}")
        self.service = service
        self.node = node


class _RosterConflict(Exception):
    """Raised inside update_roster_item's transaction to roll it back."""


def _like_pattern(search: str) -> str:
    """A LIKE pattern (escape character ``\\``) matching ``search`` as a substring."""
    escaped = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _account(row: tuple[Any, ...]) -> Account:
    host, username, created_at, disabled = row
    return Account(
        host=host, username=username, created_at=float(created_at), disabled=bool(disabled)
    )


def _scram_credentials(row: tuple[Any, ...]) -> ScramCredentials:
    name, salt, iterations, stored_key, server_key = row
    return ScramCredentials(
        hash_name=name,
        salt=bytes(salt),
        iterations=int(iterations),
        stored_key=bytes(stored_key),
        server_key=bytes(server_key),
    )


def _roster_item(row: tuple[Any, ...]) -> RosterItem:
    jid, name, subscription, ask, pending_in, approved, groups_json, stanza = row
    return RosterItem(
        jid=jid,
        name=name,
        subscription=subscription,
        ask=bool(ask),
        pending_in=bool(pending_in),
        approved=bool(approved),
        groups=tuple(json.loads(groups_json)),
        pending_in_stanza=None if stanza is None else bytes(stanza),
    )


def _pubsub_item(row: tuple[Any, ...]) -> PubsubItem:
    item_id, publisher, stamp, payload = row
    return PubsubItem(
        id=str(item_id), publisher=str(publisher), stamp=float(stamp), payload=bytes(payload)
    )


def _unique_credentials(creds: Iterable[ScramCredentials]) -> list[ScramCredentials]:
    """One credential per hash name (the last given wins)."""
    return list({c.hash_name: c for c in creds}.values())


class Store:
    """Implements :class:`~services.core.storage.Storage` with SQL over a :class:`Database`."""

    def __init__(self, db: Database) -> None:
        self.db = db
        # code point order for ORDER BY on PostgreSQL, whatever the database's locale
        self._collate = ' COLLATE "C"' if db.dialect == "postgres" else ""

    @classmethod
    async def open(cls, url: str) -> Store:
        """Open the database at ``url``, bring its schema up to date, return a Store on it."""
        db = await open_database(url)
        try:
            await migrate(db)
        except BaseException:
            await db.close()
            raise
        return cls(db)

    async def close(self) -> None:
        await self.db.close()

    @asynccontextmanager
    async def _owner_required(self, host: str, username: str) -> AsyncIterator[None]:
        """Turn the foreign key violation of a write for an unknown account into an error."""
        try:
            yield
        except IntegrityError as e:
            if await self._account_exists(self.db, host, username):
                raise
            raise UnknownAccountError(host, username) from e

    @staticmethod
    async def _account_exists(conn: Connection, host: str, username: str) -> bool:
        row = await conn.fetchrow(
            "SELECT 1 FROM accounts WHERE host = $1 AND username = $2", host, username
        )
        return row is not None

    # ------------------------------------------------------------------ accounts

    @staticmethod
    async def _insert_credentials(
        tx: Connection, host: str, username: str, creds: list[ScramCredentials]
    ) -> None:
        for c in _unique_credentials(creds):
            await tx.execute(
                "INSERT INTO scram_credentials"
                " (host, username, hash_name, salt, iterations, stored_key, server_key)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7)",
                host,
                username,
                c.hash_name,
                bytes(c.salt),
                int(c.iterations),
                bytes(c.stored_key),
                bytes(c.server_key),
            )

    async def create_account(self, host: str, username: str, creds: list[ScramCredentials]) -> bool:
        async with self.db.transaction() as tx:
            inserted = await tx.execute(
                "INSERT INTO accounts (host, username, created_at, disabled, roster_version)"
                " VALUES ($1, $2, $3, FALSE, 0)"
                " ON CONFLICT (host, username) DO NOTHING",
                host,
                username,
                time.time(),
            )
            if not inserted:
                return False
            await self._insert_credentials(tx, host, username, creds)
        return True

    async def get_account(self, host: str, username: str) -> Account | None:
        row = await self.db.fetchrow(
            "SELECT host, username, created_at, disabled FROM accounts"
            " WHERE host = $1 AND username = $2",
            host,
            username,
        )
        return None if row is None else _account(row)

    async def list_accounts(
        self, host: str, search: str | None = None, limit: int = 100, offset: int = 0
    ) -> list[Account]:
        columns = "SELECT host, username, created_at, disabled FROM accounts"
        order = f" ORDER BY username{self._collate}"
        if search:
            rows = await self.db.fetch(
                f"{columns} WHERE host = $1 AND LOWER(username) LIKE $2 ESCAPE '\\'"
                f"{order} LIMIT $3 OFFSET $4",
                host,
                _like_pattern(search.lower()),
                max(int(limit), 0),
                max(int(offset), 0),
            )
        else:
            rows = await self.db.fetch(
                f"{columns} WHERE host = $1{order} LIMIT $2 OFFSET $3",
                host,
                max(int(limit), 0),
                max(int(offset), 0),
            )
        return [_account(r) for r in rows]

    async def count_accounts(self, host: str) -> int:
        n = await self.db.fetchval("SELECT COUNT(*) FROM accounts WHERE host = $1", host)
        return int(n)

    async def delete_account(self, host: str, username: str) -> bool:
        async with self.db.transaction() as tx:
            for table in _USER_TABLES:
                await tx.execute(
                    f"DELETE FROM {table} WHERE host = $1 AND username = $2", host, username
                )
            # the account's PEP service (XEP-0163), named by its bare JID
            await self._delete_pubsub_service(tx, f"{username}@{host}")
            # and its message archive (XEP-0313)
            for table in ("archive_messages", "archive_prefs"):
                await tx.execute(f"DELETE FROM {table} WHERE archive = $1", f"{username}@{host}")
            deleted = await tx.execute(
                "DELETE FROM accounts WHERE host = $1 AND username = $2", host, username
            )
        return deleted > 0

    async def get_credentials(
        self, host: str, username: str, hash_name: str
    ) -> ScramCredentials | None:
        row = await self.db.fetchrow(
            "SELECT hash_name, salt, iterations, stored_key, server_key FROM scram_credentials"
            " WHERE host = $1 AND username = $2 AND hash_name = $3",
            host,
            username,
            hash_name,
        )
        return None if row is None else _scram_credentials(row)

    async def get_login(
        self, host: str, username: str, hash_name: str
    ) -> tuple[ScramCredentials | None, bool]:
        """The account's credentials for one hash and whether it is disabled, in
        one query: a login over gRPC made two storage calls for this."""
        row = await self.db.fetchrow(
            "SELECT a.disabled, c.hash_name, c.salt, c.iterations, c.stored_key, c.server_key"
            " FROM accounts a LEFT JOIN scram_credentials c"
            " ON c.host = a.host AND c.username = a.username AND c.hash_name = $3"
            " WHERE a.host = $1 AND a.username = $2",
            host,
            username,
            hash_name,
        )
        if row is None:
            return None, False
        disabled, *creds = row
        if creds[0] is None:  # the account has no credentials for this hash
            return None, bool(disabled)
        return _scram_credentials(tuple(creds)), bool(disabled)

    async def set_credentials(
        self, host: str, username: str, creds: list[ScramCredentials]
    ) -> bool:
        try:
            async with self.db.transaction() as tx:
                if not await self._account_exists(tx, host, username):
                    return False
                await tx.execute(
                    "DELETE FROM scram_credentials WHERE host = $1 AND username = $2",
                    host,
                    username,
                )
                await self._insert_credentials(tx, host, username, creds)
        except IntegrityError:
            # the account was deleted meanwhile (PostgreSQL)
            if await self._account_exists(self.db, host, username):
                raise
            return False
        return True

    async def set_disabled(self, host: str, username: str, disabled: bool) -> bool:
        updated = await self.db.execute(
            "UPDATE accounts SET disabled = $3 WHERE host = $1 AND username = $2",
            host,
            username,
            bool(disabled),
        )
        return updated > 0

    # -------------------------------------------------------------------- roster

    @staticmethod
    async def _bump_roster_version(tx: Connection, host: str, username: str) -> int:
        version = await tx.fetchval(
            "UPDATE accounts SET roster_version = roster_version + 1"
            " WHERE host = $1 AND username = $2 RETURNING roster_version",
            host,
            username,
        )
        if version is None:
            raise UnknownAccountError(host, username)
        return int(version)

    async def get_roster(self, host: str, username: str) -> tuple[int, list[RosterItem]]:
        # one statement, so the version and the items come from one snapshot
        rows = await self.db.fetch(
            "SELECT a.roster_version, r.jid, r.name, r.subscription, r.ask, r.pending_in,"
            " r.approved, r.groups_json, r.pending_in_stanza"
            " FROM accounts a LEFT JOIN roster_items r"
            " ON r.host = a.host AND r.username = a.username"
            " WHERE a.host = $1 AND a.username = $2",
            host,
            username,
        )
        if not rows:
            return 0, []
        version = int(rows[0][0])
        items = [_roster_item(r[1:]) for r in rows if r[1] is not None]
        items.sort(key=lambda item: item.jid)
        return version, items

    async def get_roster_item(self, host: str, username: str, jid: str) -> RosterItem | None:
        row = await self.db.fetchrow(
            f"SELECT {_ROSTER_COLUMNS} FROM roster_items"
            " WHERE host = $1 AND username = $2 AND jid = $3",
            host,
            username,
            jid,
        )
        return None if row is None else _roster_item(row)

    async def roster_entries_for(
        self, jid: str
    ) -> list[tuple[str, str, RosterItem, LastActivity | None]]:
        cols = ", ".join(f"r.{c.strip()}" for c in _ROSTER_COLUMNS.split(","))
        rows = await self.db.fetch(
            f"SELECT r.host, r.username, {cols}, la.stamp, la.status FROM roster_items r"
            " LEFT JOIN last_activity la ON la.host = r.host AND la.username = r.username"
            " WHERE r.jid = $1",
            jid,
        )
        out = []
        for row in rows:
            host, username, *item, stamp, status = row
            last = None if stamp is None else LastActivity(stamp=float(stamp), status=status)
            out.append((host, username, _roster_item(tuple(item)), last))
        return out

    @staticmethod
    async def _write_roster_item(
        tx: Connection, host: str, username: str, item: RosterItem
    ) -> None:
        await tx.execute(
            f"INSERT INTO roster_items (host, username, {_ROSTER_COLUMNS})"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
            " ON CONFLICT (host, username, jid) DO UPDATE SET"
            " name = excluded.name, subscription = excluded.subscription,"
            " ask = excluded.ask, pending_in = excluded.pending_in,"
            " approved = excluded.approved, groups_json = excluded.groups_json,"
            " pending_in_stanza = excluded.pending_in_stanza",
            host,
            username,
            item.jid,
            item.name,
            item.subscription,
            bool(item.ask),
            bool(item.pending_in),
            bool(item.approved),
            json.dumps(list(item.groups), ensure_ascii=False),
            None if item.pending_in_stanza is None else bytes(item.pending_in_stanza),
        )

    @staticmethod
    async def _remove_roster_item(tx: Connection, host: str, username: str, jid: str) -> None:
        await tx.execute(
            "DELETE FROM roster_items WHERE host = $1 AND username = $2 AND jid = $3",
            host,
            username,
            jid,
        )

    async def put_roster_item(self, host: str, username: str, item: RosterItem) -> int:
        async with self.db.transaction() as tx:
            version = await self._bump_roster_version(tx, host, username)
            await self._write_roster_item(tx, host, username, item)
        return version

    async def delete_roster_item(self, host: str, username: str, jid: str) -> int:
        async with self.db.transaction() as tx:
            version = await self._bump_roster_version(tx, host, username)
            await self._remove_roster_item(tx, host, username, jid)
        return version

    async def update_roster_item(
        self,
        host: str,
        username: str,
        jid: str,
        expected: RosterItem | None,
        new: RosterItem | None,
    ) -> int | None:
        if new is not None and new.jid != jid:
            raise ValueError(f"item for {new.jid!r} written as {jid!r}")
        try:
            async with self.db.transaction() as tx:
                # the bump comes first: it is what serialises writers (see the top)
                version = await self._bump_roster_version(tx, host, username)
                row = await tx.fetchrow(
                    f"SELECT {_ROSTER_COLUMNS} FROM roster_items"
                    " WHERE host = $1 AND username = $2 AND jid = $3",
                    host,
                    username,
                    jid,
                )
                current = None if row is None else _roster_item(row)
                if current != expected:
                    raise _RosterConflict  # rolls the bump back
                if new is None:
                    await self._remove_roster_item(tx, host, username, jid)
                else:
                    await self._write_roster_item(tx, host, username, new)
        except _RosterConflict:
            return None
        return version

    # ---------------------------------------------------------- message archives

    async def archive_message(self, archive: str, message: ArchivedMessage) -> None:
        peer_bare = message.peer.split("/", 1)[0]
        await self.db.execute(
            "INSERT INTO archive_messages"
            " (archive, stanza_id, stamp, peer, peer_bare, outgoing, stanza)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7)"
            " ON CONFLICT (archive, stanza_id) DO NOTHING",
            archive,
            message.id,
            float(message.stamp),
            message.peer,
            peer_bare,
            bool(message.outgoing),
            bytes(message.stanza),
        )

    async def _archive_row(self, archive: str, stanza_id: str) -> int | None:
        row = await self.db.fetchval(
            "SELECT id FROM archive_messages WHERE archive = $1 AND stanza_id = $2",
            archive,
            stanza_id,
        )
        return None if row is None else int(row)

    async def query_archive(self, archive: str, query: ArchiveQuery) -> ArchivePage | None:
        args: list[Any] = [archive]

        def arg(value: Any) -> str:
            args.append(value)
            return f"${len(args)}"

        where = ["archive = $1"]
        if query.with_jid is not None:
            column = "peer" if "/" in query.with_jid else "peer_bare"
            where.append(f"{column} = {arg(query.with_jid)}")
        if query.start is not None:
            where.append(f"stamp >= {arg(float(query.start))}")
        if query.end is not None:
            where.append(f"stamp <= {arg(float(query.end))}")
        bounds: list[tuple[str, str, bool]] = []  # (stanza id, operator, a filter?)
        if query.after_id is not None:
            bounds.append((query.after_id, ">", True))
        if query.before_id is not None:
            bounds.append((query.before_id, "<", True))
        if query.page_after is not None:
            bounds.append((query.page_after, ">", False))
        if query.page_before is not None:
            bounds.append((query.page_before, "<", False))
        rows_of: list[tuple[int, str, bool]] = []
        for sid, op, is_filter in bounds:
            row = await self._archive_row(archive, sid)
            if row is None:
                return None
            rows_of.append((row, op, is_filter))
        for row, op, is_filter in rows_of:
            if is_filter:
                where.append(f"id {op} {arg(row)}")
        filters = " AND ".join(where)
        filter_args = list(args)
        paging = [f"id {op} {arg(row)}" for row, op, is_filter in rows_of if not is_filter]
        count = int(
            await self.db.fetchval(
                f"SELECT COUNT(*) FROM archive_messages WHERE {filters}", *filter_args
            )
        )
        limit = int(query.limit)
        if limit <= 0:
            return ArchivePage([], count, 0, count == 0)
        backward = query.last or query.page_before is not None
        scope = " AND ".join([filters, *paging])
        rows = await self.db.fetch(
            "SELECT id, stanza_id, stamp, peer, outgoing, stanza FROM archive_messages"
            f" WHERE {scope} ORDER BY id {'DESC' if backward else 'ASC'}"
            f" LIMIT {arg(limit + 1)}",
            *args,
        )
        more = len(rows) > limit
        rows = list(rows[:limit])
        if backward:
            rows.reverse()
        first_index = 0
        if rows:
            first_index = int(
                await self.db.fetchval(
                    f"SELECT COUNT(*) FROM archive_messages WHERE {filters}"
                    f" AND id < ${len(filter_args) + 1}",
                    *filter_args,
                    int(rows[0][0]),
                )
            )
        messages = [
            ArchivedMessage(str(sid), float(stamp), str(peer), bool(out), bytes(stanza))
            for _, sid, stamp, peer, out, stanza in rows
        ]
        return ArchivePage(messages, count, first_index, not more)

    async def delete_archive(self, archive: str) -> None:
        async with self.db.transaction() as tx:
            await tx.execute("DELETE FROM archive_messages WHERE archive = $1", archive)
            await tx.execute("DELETE FROM archive_prefs WHERE archive = $1", archive)

    async def expire_archives(self, before: float) -> int:
        return await self.db.execute("DELETE FROM archive_messages WHERE stamp < $1", float(before))

    async def get_archive_prefs(self, archive: str) -> str | None:
        row = await self.db.fetchval("SELECT prefs FROM archive_prefs WHERE archive = $1", archive)
        return None if row is None else str(row)

    async def set_archive_prefs(self, archive: str, prefs: str) -> None:
        await self.db.execute(
            "INSERT INTO archive_prefs (archive, prefs) VALUES ($1, $2)"
            " ON CONFLICT (archive) DO UPDATE SET prefs = excluded.prefs",
            archive,
            prefs,
        )

    # ---------------------------------------------------------- offline messages

    async def store_offline(
        self, host: str, username: str, stanza: bytes, stamp: float, key: str
    ) -> int:
        async with self._owner_required(host, username):
            msg_id = await self.db.fetchval(
                "INSERT INTO offline_messages (host, username, stanza, stamp, msg_key)"
                " VALUES ($1, $2, $3, $4, $5)"
                " ON CONFLICT (host, username, msg_key) DO NOTHING RETURNING id",
                host,
                username,
                bytes(stanza),
                float(stamp),
                key,
            )
        if msg_id is None:  # the key is stored already: a retry of the same message
            msg_id = await self.db.fetchval(
                "SELECT id FROM offline_messages"
                " WHERE host = $1 AND username = $2 AND msg_key = $3",
                host,
                username,
                key,
            )
        # 0: it was stored, and delivered and deleted before this retry
        return 0 if msg_id is None else int(msg_id)

    async def count_offline(self, host: str, username: str) -> int:
        n = await self.db.fetchval(
            "SELECT COUNT(*) FROM offline_messages WHERE host = $1 AND username = $2",
            host,
            username,
        )
        return int(n)

    async def fetch_offline(self, host: str, username: str) -> list[OfflineMessage]:
        rows = await self.db.fetch(
            "SELECT id, stanza, stamp FROM offline_messages"
            " WHERE host = $1 AND username = $2 ORDER BY id",
            host,
            username,
        )
        return [OfflineMessage(int(i), bytes(s), float(t)) for i, s, t in rows]

    #: ids per statement (IN lists), well under both engines' bound-parameter limits
    _DELETE_CHUNK = 500

    async def delete_offline(self, host: str, username: str, ids: list[int]) -> None:
        unique = sorted({int(i) for i in ids})
        if not unique:
            return
        async with self.db.transaction() as tx:
            for start in range(0, len(unique), self._DELETE_CHUNK):
                chunk = unique[start : start + self._DELETE_CHUNK]
                marks = ", ".join(f"${n}" for n in range(3, 3 + len(chunk)))
                await tx.execute(
                    "DELETE FROM offline_messages WHERE host = $1 AND username = $2"
                    f" AND id IN ({marks})",
                    host,
                    username,
                    *chunk,
                )

    # ---------------------------------------------------------- push registrations

    async def put_push_registration(
        self, host: str, username: str, registration: PushRegistration, limit: int
    ) -> bool:
        r = registration
        options = None if r.options is None else bytes(r.options)
        async with self.db.transaction() as tx:
            # lock the account row first (see the top): the count below holds
            # until this commits
            locked = await tx.execute(
                "UPDATE accounts SET disabled = disabled WHERE host = $1 AND username = $2",
                host,
                username,
            )
            if not locked:
                raise UnknownAccountError(host, username)
            replaced = await tx.execute(
                "UPDATE push_registrations SET options = $5"
                " WHERE host = $1 AND username = $2 AND jid = $3 AND node = $4",
                host,
                username,
                r.jid,
                r.node,
                options,
            )
            if replaced:
                return True
            if limit > 0:
                n = await tx.fetchval(
                    "SELECT COUNT(*) FROM push_registrations WHERE host = $1 AND username = $2",
                    host,
                    username,
                )
                if int(n) >= limit:
                    return False
            await tx.execute(
                "INSERT INTO push_registrations (host, username, jid, node, options, created)"
                " VALUES ($1, $2, $3, $4, $5, $6)",
                host,
                username,
                r.jid,
                r.node,
                options,
                float(r.created),
            )
        return True

    async def get_push_registrations(self, host: str, username: str) -> list[PushRegistration]:
        rows = await self.db.fetch(
            "SELECT jid, node, options, created FROM push_registrations"
            f" WHERE host = $1 AND username = $2 ORDER BY created, jid{self._collate},"
            f" node{self._collate}",
            host,
            username,
        )
        return [
            PushRegistration(
                jid=str(j), node=str(n), options=None if o is None else bytes(o), created=float(c)
            )
            for j, n, o, c in rows
        ]

    async def delete_push_registrations(
        self, host: str, username: str, jid: str, node: str | None
    ) -> None:
        if node is None:
            await self.db.execute(
                "DELETE FROM push_registrations WHERE host = $1 AND username = $2 AND jid = $3",
                host,
                username,
                jid,
            )
            return
        await self.db.execute(
            "DELETE FROM push_registrations"
            " WHERE host = $1 AND username = $2 AND jid = $3 AND node = $4",
            host,
            username,
            jid,
            node,
        )

    # ------------------------------------------------------------------ vcard-temp

    async def get_vcard(self, host: str, username: str) -> bytes | None:
        data = await self.db.fetchval(
            "SELECT data FROM vcards WHERE host = $1 AND username = $2", host, username
        )
        return None if data is None else bytes(data)

    async def set_vcard(self, host: str, username: str, vcard: bytes) -> None:
        async with self._owner_required(host, username):
            await self.db.execute(
                "INSERT INTO vcards (host, username, data) VALUES ($1, $2, $3)"
                " ON CONFLICT (host, username) DO UPDATE SET data = excluded.data",
                host,
                username,
                bytes(vcard),
            )

    # ----------------------------------------------------------------- private XML

    async def get_private(self, host: str, username: str, key: str) -> bytes | None:
        data = await self.db.fetchval(
            "SELECT data FROM private_xml WHERE host = $1 AND username = $2 AND xml_key = $3",
            host,
            username,
            key,
        )
        return None if data is None else bytes(data)

    async def set_private(self, host: str, username: str, key: str, data: bytes) -> None:
        async with self._owner_required(host, username):
            await self.db.execute(
                "INSERT INTO private_xml (host, username, xml_key, data) VALUES ($1, $2, $3, $4)"
                " ON CONFLICT (host, username, xml_key) DO UPDATE SET data = excluded.data",
                host,
                username,
                key,
                bytes(data),
            )

    # -------------------------------------------------------------------- group chat

    async def muc_rooms(self, domain: str) -> list[tuple[str, str]]:
        rows = await self.db.fetch(
            "SELECT room, state FROM muc_rooms WHERE domain = $1 ORDER BY room", domain
        )
        return [(str(r[0]), str(r[1])) for r in rows]

    async def get_muc_room(self, domain: str, room: str) -> str | None:
        state = await self.db.fetchval(
            "SELECT state FROM muc_rooms WHERE domain = $1 AND room = $2", domain, room
        )
        return None if state is None else str(state)

    async def put_muc_room(self, domain: str, room: str, state: str) -> None:
        await self.db.execute(
            "INSERT INTO muc_rooms (domain, room, state) VALUES ($1, $2, $3)"
            " ON CONFLICT (domain, room) DO UPDATE SET state = excluded.state",
            domain,
            room,
            state,
        )

    async def delete_muc_room(self, domain: str, room: str) -> None:
        async with self.db.transaction() as tx:
            await tx.execute(
                "DELETE FROM muc_history WHERE domain = $1 AND room = $2", domain, room
            )
            await tx.execute("DELETE FROM muc_rooms WHERE domain = $1 AND room = $2", domain, room)

    async def add_muc_history(
        self, domain: str, room: str, key: str, stamp: float, stanza: bytes, keep: int
    ) -> None:
        async with self.db.transaction() as tx:
            await tx.execute(
                "INSERT INTO muc_history (domain, room, msg_key, stamp, stanza)"
                " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (domain, room, msg_key) DO NOTHING",
                domain,
                room,
                key,
                stamp,
                bytes(stanza),
            )
            # the room's last ``keep`` messages stay
            await tx.execute(
                "DELETE FROM muc_history WHERE domain = $1 AND room = $2 AND id NOT IN"
                " (SELECT id FROM muc_history WHERE domain = $1 AND room = $2"
                " ORDER BY id DESC LIMIT $3)",
                domain,
                room,
                max(keep, 0),
            )

    async def get_muc_history(self, domain: str, room: str) -> list[tuple[float, bytes]]:
        rows = await self.db.fetch(
            "SELECT stamp, stanza FROM muc_history WHERE domain = $1 AND room = $2 ORDER BY id",
            domain,
            room,
        )
        return [(float(r[0]), bytes(r[1])) for r in rows]

    # ------------------------------------------------------------ publish-subscribe

    _PUBSUB_ITEM_COLUMNS = "item_id, publisher, stamp, payload"

    async def pubsub_nodes(self, service: str) -> list[tuple[str, str]]:
        rows = await self.db.fetch(
            f"SELECT node, state FROM pubsub_nodes WHERE service = $1 ORDER BY node{self._collate}",
            service,
        )
        return [(str(r[0]), str(r[1])) for r in rows]

    async def get_pubsub_node(self, service: str, node: str) -> str | None:
        state = await self.db.fetchval(
            "SELECT state FROM pubsub_nodes WHERE service = $1 AND node = $2", service, node
        )
        return None if state is None else str(state)

    async def put_pubsub_node(self, service: str, node: str, state: str) -> None:
        await self.db.execute(
            "INSERT INTO pubsub_nodes (service, node, state) VALUES ($1, $2, $3)"
            " ON CONFLICT (service, node) DO UPDATE SET state = excluded.state",
            service,
            node,
            state,
        )

    async def delete_pubsub_node(self, service: str, node: str) -> bool:
        async with self.db.transaction() as tx:
            await tx.execute(
                "DELETE FROM pubsub_items WHERE service = $1 AND node = $2", service, node
            )
            deleted = await tx.execute(
                "DELETE FROM pubsub_nodes WHERE service = $1 AND node = $2", service, node
            )
        return deleted > 0

    @staticmethod
    async def _delete_pubsub_service(tx: Connection, service: str) -> None:
        await tx.execute("DELETE FROM pubsub_items WHERE service = $1", service)
        await tx.execute("DELETE FROM pubsub_nodes WHERE service = $1", service)

    async def delete_pubsub_service(self, service: str) -> None:
        async with self.db.transaction() as tx:
            await self._delete_pubsub_service(tx, service)

    async def put_pubsub_item(self, service: str, node: str, item: PubsubItem, keep: int) -> None:
        async with self.db.transaction() as tx:
            # lock the node row first (see the top): publishers to one node run
            # one after another, and the node cannot go before this commits
            locked = await tx.execute(
                "UPDATE pubsub_nodes SET state = state WHERE service = $1 AND node = $2",
                service,
                node,
            )
            if not locked:
                raise UnknownPubsubNodeError(service, node)
            # a new row even for a known id: it becomes the newest
            await tx.execute(
                "DELETE FROM pubsub_items WHERE service = $1 AND node = $2 AND item_id = $3",
                service,
                node,
                item.id,
            )
            await tx.execute(
                f"INSERT INTO pubsub_items (service, node, {self._PUBSUB_ITEM_COLUMNS})"
                " VALUES ($1, $2, $3, $4, $5, $6)",
                service,
                node,
                item.id,
                item.publisher,
                float(item.stamp),
                bytes(item.payload),
            )
            if keep > 0:  # the node's newest ``keep`` items stay
                await tx.execute(
                    "DELETE FROM pubsub_items WHERE service = $1 AND node = $2 AND id NOT IN"
                    " (SELECT id FROM pubsub_items WHERE service = $1 AND node = $2"
                    " ORDER BY id DESC LIMIT $3)",
                    service,
                    node,
                    int(keep),
                )

    async def get_pubsub_items(
        self, service: str, node: str, ids: list[str] | None = None, limit: int | None = None
    ) -> list[PubsubItem]:
        columns = f"SELECT id, {self._PUBSUB_ITEM_COLUMNS} FROM pubsub_items"
        if ids is None:
            if limit is None:
                rows = await self.db.fetch(
                    f"{columns} WHERE service = $1 AND node = $2 ORDER BY id DESC", service, node
                )
            else:
                rows = await self.db.fetch(
                    f"{columns} WHERE service = $1 AND node = $2 ORDER BY id DESC LIMIT $3",
                    service,
                    node,
                    max(int(limit), 0),
                )
        else:
            wanted = list(dict.fromkeys(ids))
            rows = []
            for start in range(0, len(wanted), self._DELETE_CHUNK):
                chunk = wanted[start : start + self._DELETE_CHUNK]
                marks = ", ".join(f"${n}" for n in range(3, 3 + len(chunk)))
                rows += await self.db.fetch(
                    f"{columns} WHERE service = $1 AND node = $2 AND item_id IN ({marks})",
                    service,
                    node,
                    *chunk,
                )
            rows.sort(key=lambda r: int(r[0]), reverse=True)
            if limit is not None:
                rows = rows[: max(int(limit), 0)]
        return [_pubsub_item(tuple(r[1:])) for r in rows]

    async def delete_pubsub_items(self, service: str, node: str, ids: list[str]) -> list[str]:
        wanted = list(dict.fromkeys(ids))
        deleted: set[str] = set()
        if not wanted:
            return []
        async with self.db.transaction() as tx:
            for start in range(0, len(wanted), self._DELETE_CHUNK):
                chunk = wanted[start : start + self._DELETE_CHUNK]
                marks = ", ".join(f"${n}" for n in range(3, 3 + len(chunk)))
                rows = await tx.fetch(
                    "DELETE FROM pubsub_items WHERE service = $1 AND node = $2"
                    f" AND item_id IN ({marks}) RETURNING item_id",
                    service,
                    node,
                    *chunk,
                )
                deleted.update(str(r[0]) for r in rows)
        return [i for i in wanted if i in deleted]

    async def purge_pubsub_node(self, service: str, node: str) -> None:
        await self.db.execute(
            "DELETE FROM pubsub_items WHERE service = $1 AND node = $2", service, node
        )

    async def expire_pubsub_items(self, service: str, node: str, before: float) -> int:
        return await self.db.execute(
            "DELETE FROM pubsub_items WHERE service = $1 AND node = $2 AND stamp < $3",
            service,
            node,
            float(before),
        )

    # -------------------------------------------------------------------- blocking

    async def get_blocklist(self, host: str, username: str) -> list[str]:
        rows = await self.db.fetch(
            "SELECT jid FROM blocklist WHERE host = $1 AND username = $2", host, username
        )
        return sorted(str(r[0]) for r in rows)

    async def add_blocks(self, host: str, username: str, jids: list[str]) -> None:
        if not jids:
            return
        async with self._owner_required(host, username), self.db.transaction() as tx:
            for jid in dict.fromkeys(jids):
                await tx.execute(
                    "INSERT INTO blocklist (host, username, jid) VALUES ($1, $2, $3)"
                    " ON CONFLICT (host, username, jid) DO NOTHING",
                    host,
                    username,
                    jid,
                )

    async def remove_blocks(self, host: str, username: str, jids: list[str] | None) -> None:
        if jids is None:
            await self.db.execute(
                "DELETE FROM blocklist WHERE host = $1 AND username = $2", host, username
            )
            return
        if not jids:
            return
        async with self.db.transaction() as tx:
            for jid in dict.fromkeys(jids):
                await tx.execute(
                    "DELETE FROM blocklist WHERE host = $1 AND username = $2 AND jid = $3",
                    host,
                    username,
                    jid,
                )

    # --------------------------------------------------------------- last activity

    async def set_last_activity(
        self, host: str, username: str, stamp: float, status: str | None
    ) -> None:
        async with self._owner_required(host, username):
            await self.db.execute(
                "INSERT INTO last_activity (host, username, stamp, status)"
                " VALUES ($1, $2, $3, $4)"
                " ON CONFLICT (host, username) DO UPDATE SET"
                " stamp = excluded.stamp, status = excluded.status",
                host,
                username,
                float(stamp),
                status,
            )

    async def get_last_activity(self, host: str, username: str) -> LastActivity | None:
        row = await self.db.fetchrow(
            "SELECT stamp, status FROM last_activity WHERE host = $1 AND username = $2",
            host,
            username,
        )
        return None if row is None else LastActivity(stamp=float(row[0]), status=row[1])


if TYPE_CHECKING:

    def _implements_storage(db: Database) -> Storage:
        return Store(db)
