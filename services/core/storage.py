"""The storage service's contract: the records it keeps and the Protocol
every implementation answers to (the Store over SQLite or PostgreSQL, and the
typed gRPC client of the storage role). Usernames are prepared localparts;
hosts are domains."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from ..xmpp.sasl import ScramCredentials

__all__ = [
    "Account",
    "ArchivePage",
    "ArchiveQuery",
    "ArchivedMessage",
    "LastActivity",
    "OfflineMessage",
    "PubsubItem",
    "PushRegistration",
    "RosterItem",
    "ScramCredentials",
    "Storage",
]


@dataclass(frozen=True, slots=True)
class Account:
    host: str
    username: str
    created_at: float
    disabled: bool = False


@dataclass(frozen=True, slots=True)
class RosterItem:
    """One roster entry with its RFC 6121 subscription state.

    ``subscription`` is none/to/from/both; ``ask`` is True while an outbound
    subscribe is pending ("None + Pending Out" and friends);
    ``pending_in`` holds an inbound subscribe awaiting the user's answer;
    ``approved`` is a pre-approval (RFC 6121 section 3.4).
    """

    jid: str  # bare JID of the contact
    name: str | None = None
    subscription: str = "none"
    ask: bool = False
    pending_in: bool = False
    approved: bool = False
    groups: tuple[str, ...] = field(default_factory=tuple)
    #: the stanza (serialized) of a pending inbound subscribe, redelivered on login
    pending_in_stanza: bytes | None = None


@dataclass(frozen=True, slots=True)
class OfflineMessage:
    id: int
    stanza: bytes
    stamp: float


@dataclass(frozen=True, slots=True)
class ArchivedMessage:
    """One message of an archive (XEP-0313)."""

    id: str  # the XEP-0359 stanza-id given to it, unique in its archive
    stamp: float
    peer: str  # the other party's JID as it was (full or bare)
    outgoing: bool  # sent by the archive's owner
    stanza: bytes  # the message as it was routed, serialized


@dataclass(frozen=True, slots=True)
class ArchiveQuery:
    """Which messages of an archive, and which page of them (XEP-0313 4.1,
    XEP-0059). Filters: ``with_jid`` (bare: every resource; full: that one),
    ``start``/``end`` (stamps, inclusive), ``after_id``/``before_id`` (ids,
    exclusive). Paging: ``page_after``/``page_before`` (exclusive ids),
    ``last`` (the page at the end: RSM ``<before/>``), ``limit``."""

    with_jid: str | None = None
    start: float | None = None
    end: float | None = None
    after_id: str | None = None
    before_id: str | None = None
    page_after: str | None = None
    page_before: str | None = None
    last: bool = False
    limit: int = 50


@dataclass(frozen=True, slots=True)
class ArchivePage:
    messages: list[ArchivedMessage]  # oldest first
    count: int  # messages matching the filters (paging aside)
    first_index: int  # the position of messages[0] among them (0 when empty)
    complete: bool  # nothing more in the direction of paging


@dataclass(frozen=True, slots=True)
class LastActivity:
    stamp: float
    status: str | None


@dataclass(frozen=True, slots=True)
class PubsubItem:
    """One published item of a pubsub or PEP node (XEP-0060)."""

    id: str
    #: the full JID that published it (XEP-0060 7.1.2 ``publisher``)
    publisher: str
    stamp: float
    #: the ``<item/>``'s payload element, serialized (b"" for none)
    payload: bytes


@dataclass(frozen=True, slots=True)
class PushRegistration:
    """One XEP-0357 push registration of a user: where notifications go."""

    jid: str  # the app server's XMPP Push Service (normalized JID)
    node: str  # the node on that service
    #: the publish-options data form given at enable, serialized (None: none)
    options: bytes | None = None
    #: when it was first enabled (oldest first in listings)
    created: float = 0.0


class Storage(Protocol):
    # accounts
    async def create_account(
        self, host: str, username: str, creds: list[ScramCredentials]
    ) -> bool: ...  # False if it exists
    async def get_account(self, host: str, username: str) -> Account | None: ...
    async def list_accounts(
        self, host: str, search: str | None = None, limit: int = 100, offset: int = 0
    ) -> list[Account]: ...
    async def count_accounts(self, host: str) -> int: ...
    async def delete_account(self, host: str, username: str) -> bool: ...  # and all their data
    async def get_credentials(
        self, host: str, username: str, hash_name: str
    ) -> ScramCredentials | None: ...
    # what a login needs in one call: (credentials, disabled); (None, False) if no account
    async def get_login(
        self, host: str, username: str, hash_name: str
    ) -> tuple[ScramCredentials | None, bool]: ...
    async def set_credentials(
        self, host: str, username: str, creds: list[ScramCredentials]
    ) -> bool: ...
    async def set_disabled(self, host: str, username: str, disabled: bool) -> bool: ...

    # roster (RFC 6121) with versioning (XEP-0237): every change bumps the version
    async def get_roster(self, host: str, username: str) -> tuple[int, list[RosterItem]]: ...
    async def get_roster_item(self, host: str, username: str, jid: str) -> RosterItem | None: ...
    # every local roster holding ``jid``: (host, username, their item for jid,
    # their last activity), for answering a login's presence probes at once
    async def roster_entries_for(
        self, jid: str
    ) -> list[tuple[str, str, RosterItem, LastActivity | None]]: ...
    # blind writes: a read-modify-write built on these loses concurrent
    # updates (two presence replicas, the admin API); use update_roster_item
    async def put_roster_item(self, host: str, username: str, item: RosterItem) -> int: ...
    async def delete_roster_item(self, host: str, username: str, jid: str) -> int: ...
    # compare-and-set: write ``new`` (None: delete) only if the stored item for
    # ``jid`` is still ``expected`` (None: absent); the new roster version, or
    # None (nothing written, version unchanged) when it is not
    async def update_roster_item(
        self,
        host: str,
        username: str,
        jid: str,
        expected: RosterItem | None,
        new: RosterItem | None,
    ) -> int | None: ...

    # offline messages (XEP-0160). ``key`` is the caller's unique name for the
    # message (a UUID): storing the same key again stores nothing and returns
    # the first id, so a retried call cannot duplicate a message. Delivery
    # reads (oldest first) and then deletes what it delivered, so a failure
    # in between loses nothing and leaves the rest in order.
    async def store_offline(
        self, host: str, username: str, stanza: bytes, stamp: float, key: str
    ) -> int: ...
    async def count_offline(self, host: str, username: str) -> int: ...
    async def fetch_offline(self, host: str, username: str) -> list[OfflineMessage]: ...
    async def delete_offline(self, host: str, username: str, ids: list[int]) -> None: ...

    # message archives (XEP-0313), each named by its owner's JID (a user's
    # bare JID, a room's JID). Storing an id already in the archive stores
    # nothing. A query naming an id the archive does not hold answers None
    async def archive_message(self, archive: str, message: ArchivedMessage) -> None: ...
    async def query_archive(self, archive: str, query: ArchiveQuery) -> ArchivePage | None: ...
    async def delete_archive(self, archive: str) -> None: ...
    # messages stored before ``before`` (retention), in every archive; how many
    async def expire_archives(self, before: float) -> int: ...
    async def get_archive_prefs(self, archive: str) -> str | None: ...  # a JSON document
    async def set_archive_prefs(self, archive: str, prefs: str) -> None: ...

    # push registrations (XEP-0357), one per (app server jid, node) of a user.
    # put: insert, or replace the options of the same (jid, node); a new one
    # past ``limit`` registrations (limit > 0) is not stored: False
    async def put_push_registration(
        self, host: str, username: str, registration: PushRegistration, limit: int
    ) -> bool: ...
    async def get_push_registrations(
        self, host: str, username: str
    ) -> list[PushRegistration]: ...  # oldest first
    # every registration of ``jid`` (node None) or the one of (jid, node)
    async def delete_push_registrations(
        self, host: str, username: str, jid: str, node: str | None
    ) -> None: ...

    # vcard-temp (XEP-0054)
    async def get_vcard(self, host: str, username: str) -> bytes | None: ...
    async def set_vcard(self, host: str, username: str, vcard: bytes) -> None: ...

    # private XML (XEP-0049), keyed by the child's "{namespace}localname"
    async def get_private(self, host: str, username: str, key: str) -> bytes | None: ...
    async def set_private(self, host: str, username: str, key: str, data: bytes) -> None: ...

    # blocking (XEP-0191): bare or full JIDs or domains, as strings
    async def get_blocklist(self, host: str, username: str) -> list[str]: ...
    async def add_blocks(self, host: str, username: str, jids: list[str]) -> None: ...
    async def remove_blocks(self, host: str, username: str, jids: list[str] | None) -> None: ...

    # last activity (XEP-0012): set on the last session's logout
    async def set_last_activity(
        self, host: str, username: str, stamp: float, status: str | None
    ) -> None: ...
    async def get_last_activity(self, host: str, username: str) -> LastActivity | None: ...

    # group chat (XEP-0045): persistent rooms, their state a JSON document
    async def muc_rooms(self, domain: str) -> list[tuple[str, str]]: ...  # (room, state)
    async def get_muc_room(self, domain: str, room: str) -> str | None: ...
    async def put_muc_room(self, domain: str, room: str, state: str) -> None: ...
    async def delete_muc_room(self, domain: str, room: str) -> None: ...  # and its history
    async def add_muc_history(
        self, domain: str, room: str, key: str, stamp: float, stanza: bytes, keep: int
    ) -> None: ...  # keeps the last ``keep`` messages
    async def get_muc_history(self, domain: str, room: str) -> list[tuple[float, bytes]]: ...

    # publish-subscribe (XEP-0060) and PEP (XEP-0163). ``service`` is the
    # service's JID: a pubsub domain ("pubsub.example.org") or, for PEP, a
    # user's bare JID ("alice@example.org"). A node's configuration,
    # affiliations and subscriptions are one JSON document the pubsub
    # service writes whole (services/pubsub/persist.py); items are a row each.
    async def pubsub_nodes(self, service: str) -> list[tuple[str, str]]: ...  # (node, state)
    async def get_pubsub_node(self, service: str, node: str) -> str | None: ...
    async def put_pubsub_node(self, service: str, node: str, state: str) -> None: ...
    # the node and its items; False if there was none
    async def delete_pubsub_node(self, service: str, node: str) -> bool: ...
    # every node of a service and their items (an account removed: its PEP nodes)
    async def delete_pubsub_service(self, service: str) -> None: ...
    # publish: an item with the same id is replaced (and becomes the newest);
    # then only the newest ``keep`` items stay (keep <= 0: no limit). The
    # node must exist (put_pubsub_node first)
    async def put_pubsub_item(
        self, service: str, node: str, item: PubsubItem, keep: int
    ) -> None: ...
    # newest first; ``ids``: only those of them that are stored (asked in any
    # order, each answered once), ``limit``: at most that many of the newest
    async def get_pubsub_items(
        self, service: str, node: str, ids: list[str] | None = None, limit: int | None = None
    ) -> list[PubsubItem]: ...
    async def delete_pubsub_items(
        self, service: str, node: str, ids: list[str]
    ) -> list[str]: ...  # the ids that were there
    async def purge_pubsub_node(self, service: str, node: str) -> None: ...  # every item
    # items published before ``stamp`` are removed (pubsub#item_expire); how many
    async def expire_pubsub_items(self, service: str, node: str, before: float) -> int: ...
