"""The storage service over gRPC: :class:`StorageClient`, the typed client of
the :class:`~services.core.storage.Storage` contract other roles use, and
:class:`StorageServicer`, which serves a Storage (the Store over PostgreSQL)
in the storage role."""

from __future__ import annotations

from ..core.storage import (
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
    Storage,
)
from .rpc import CallServicer, ContractClient

__all__ = ["STORAGE_IDEMPOTENT", "StorageClient", "StorageServicer"]

# Which storage methods a client may send twice (a retry after a timeout, or
# on another replica): those that leave the same state and give the same answer
# when run again. Every method is listed with a decision (ContractClient
# refuses to start otherwise), so a new one cannot be retried by default
# without anyone deciding it.
STORAGE_IDEMPOTENT: dict[str, bool] = {
    # reads
    "get_account": True,
    "list_accounts": True,
    "count_accounts": True,
    "get_credentials": True,
    "get_login": True,
    "get_roster": True,
    "get_roster_item": True,
    "roster_entries_for": True,
    "count_offline": True,
    "fetch_offline": True,
    "get_vcard": True,
    "get_private": True,
    "get_blocklist": True,
    "get_last_activity": True,
    # writes of a value, or of set membership: twice is once
    "set_credentials": True,
    "set_disabled": True,
    "store_offline": True,  # the caller's key: a second copy stores nothing
    "delete_offline": True,  # by id
    "set_vcard": True,
    "set_private": True,
    # group chat: whole-document upserts, keyed history, deletes
    "muc_rooms": True,
    "get_muc_room": True,
    "put_muc_room": True,
    "delete_muc_room": True,
    "add_muc_history": True,
    "get_muc_history": True,
    "add_blocks": True,
    "remove_blocks": True,
    "set_last_activity": True,
    # archives: keyed inserts, reads, whole-document upserts, deletes
    "archive_message": True,  # by stanza-id: a second copy stores nothing
    "query_archive": True,
    "delete_archive": True,
    "get_archive_prefs": True,
    "set_archive_prefs": True,
    # push registrations (XEP-0357): a keyed upsert (a second copy replaces
    # the options with the same ones and answers True again: the row is
    # there), a read, a keyed delete that answers nothing
    "put_push_registration": True,
    "get_push_registrations": True,
    "delete_push_registrations": True,
    # publish-subscribe: reads, whole-document upserts, deletes that answer nothing
    "pubsub_nodes": True,
    "get_pubsub_node": True,
    "get_pubsub_items": True,
    "put_pubsub_node": True,
    "delete_pubsub_service": True,
    "purge_pubsub_node": True,
    # replaces the item of that id and trims to ``keep``: a second copy leaves
    # the same items, this one still the newest. Like any blind write it may
    # undo a newer publish landing between the copies (with keep=1, replace
    # it); the pubsub service awaits each write of a node before the next
    "put_pubsub_item": True,
    # the second copy answers differently: no node (False), no ids (so the
    # caller would answer item-not-found for a retraction it made), 0 expired;
    # failing instead is safe, the next expiry sweep finishes the work
    "delete_pubsub_node": False,
    "delete_pubsub_items": False,
    "expire_pubsub_items": False,
    "expire_archives": False,
    # the second copy answers differently ("exists", "not found", a conflict
    # with the first copy's own write), or bumps the roster version again
    "create_account": False,
    "delete_account": False,
    "put_roster_item": False,
    "delete_roster_item": False,
    "update_roster_item": False,
}


class StorageServicer(CallServicer):
    """``Storage.Call``: every method of the Storage contract, on ``impl``."""

    def __init__(self, impl: Storage) -> None:
        super().__init__(Storage, impl)


class StorageClient(ContractClient):
    """The Storage contract on the storage role's replicas.

    Sequences come back as lists (the codec has no tuple): a tuple answer
    unpacks the same."""

    SERVICE = "Storage"
    CONTRACT = Storage
    IDEMPOTENT = STORAGE_IDEMPOTENT

    # accounts
    async def create_account(self, host: str, username: str, creds: list[ScramCredentials]) -> bool:
        return await self._call(Storage.create_account, host, username, creds)

    async def get_account(self, host: str, username: str) -> Account | None:
        return await self._call(Storage.get_account, host, username)

    async def list_accounts(
        self, host: str, search: str | None = None, limit: int = 100, offset: int = 0
    ) -> list[Account]:
        return await self._call(Storage.list_accounts, host, search, limit, offset)

    async def count_accounts(self, host: str) -> int:
        return await self._call(Storage.count_accounts, host)

    async def delete_account(self, host: str, username: str) -> bool:
        return await self._call(Storage.delete_account, host, username)

    async def get_credentials(
        self, host: str, username: str, hash_name: str
    ) -> ScramCredentials | None:
        return await self._call(Storage.get_credentials, host, username, hash_name)

    async def get_login(
        self, host: str, username: str, hash_name: str
    ) -> tuple[ScramCredentials | None, bool]:
        return await self._call(Storage.get_login, host, username, hash_name)

    async def set_credentials(
        self, host: str, username: str, creds: list[ScramCredentials]
    ) -> bool:
        return await self._call(Storage.set_credentials, host, username, creds)

    async def set_disabled(self, host: str, username: str, disabled: bool) -> bool:
        return await self._call(Storage.set_disabled, host, username, disabled)

    # roster
    async def get_roster(self, host: str, username: str) -> tuple[int, list[RosterItem]]:
        return await self._call(Storage.get_roster, host, username)

    async def get_roster_item(self, host: str, username: str, jid: str) -> RosterItem | None:
        return await self._call(Storage.get_roster_item, host, username, jid)

    async def roster_entries_for(
        self, jid: str
    ) -> list[tuple[str, str, RosterItem, LastActivity | None]]:
        return await self._call(Storage.roster_entries_for, jid)

    async def put_roster_item(self, host: str, username: str, item: RosterItem) -> int:
        return await self._call(Storage.put_roster_item, host, username, item)

    async def delete_roster_item(self, host: str, username: str, jid: str) -> int:
        return await self._call(Storage.delete_roster_item, host, username, jid)

    async def update_roster_item(
        self,
        host: str,
        username: str,
        jid: str,
        expected: RosterItem | None,
        new: RosterItem | None,
    ) -> int | None:
        return await self._call(Storage.update_roster_item, host, username, jid, expected, new)

    # offline messages
    async def store_offline(
        self, host: str, username: str, stanza: bytes, stamp: float, key: str
    ) -> int:
        return await self._call(Storage.store_offline, host, username, stanza, stamp, key)

    async def count_offline(self, host: str, username: str) -> int:
        return await self._call(Storage.count_offline, host, username)

    async def fetch_offline(self, host: str, username: str) -> list[OfflineMessage]:
        return await self._call(Storage.fetch_offline, host, username)

    async def delete_offline(self, host: str, username: str, ids: list[int]) -> None:
        return await self._call(Storage.delete_offline, host, username, ids)

    # vcard-temp, private XML
    # message archives
    async def archive_message(self, archive: str, message: ArchivedMessage) -> None:
        return await self._call(Storage.archive_message, archive, message)

    async def query_archive(self, archive: str, query: ArchiveQuery) -> ArchivePage | None:
        return await self._call(Storage.query_archive, archive, query)

    async def delete_archive(self, archive: str) -> None:
        return await self._call(Storage.delete_archive, archive)

    async def expire_archives(self, before: float) -> int:
        return await self._call(Storage.expire_archives, before)

    async def get_archive_prefs(self, archive: str) -> str | None:
        return await self._call(Storage.get_archive_prefs, archive)

    async def set_archive_prefs(self, archive: str, prefs: str) -> None:
        return await self._call(Storage.set_archive_prefs, archive, prefs)

    # push registrations
    async def put_push_registration(
        self, host: str, username: str, registration: PushRegistration, limit: int
    ) -> bool:
        return await self._call(Storage.put_push_registration, host, username, registration, limit)

    async def get_push_registrations(self, host: str, username: str) -> list[PushRegistration]:
        return await self._call(Storage.get_push_registrations, host, username)

    async def delete_push_registrations(
        self, host: str, username: str, jid: str, node: str | None
    ) -> None:
        return await self._call(Storage.delete_push_registrations, host, username, jid, node)

    async def get_vcard(self, host: str, username: str) -> bytes | None:
        return await self._call(Storage.get_vcard, host, username)

    async def set_vcard(self, host: str, username: str, vcard: bytes) -> None:
        return await self._call(Storage.set_vcard, host, username, vcard)

    async def get_private(self, host: str, username: str, key: str) -> bytes | None:
        return await self._call(Storage.get_private, host, username, key)

    async def set_private(self, host: str, username: str, key: str, data: bytes) -> None:
        return await self._call(Storage.set_private, host, username, key, data)

    async def muc_rooms(self, domain: str) -> list[tuple[str, str]]:
        rows = await self._call(Storage.muc_rooms, domain)
        return [(str(r[0]), str(r[1])) for r in rows]

    async def get_muc_room(self, domain: str, room: str) -> str | None:
        return await self._call(Storage.get_muc_room, domain, room)

    async def put_muc_room(self, domain: str, room: str, state: str) -> None:
        return await self._call(Storage.put_muc_room, domain, room, state)

    async def delete_muc_room(self, domain: str, room: str) -> None:
        return await self._call(Storage.delete_muc_room, domain, room)

    async def add_muc_history(
        self, domain: str, room: str, key: str, stamp: float, stanza: bytes, keep: int
    ) -> None:
        return await self._call(Storage.add_muc_history, domain, room, key, stamp, stanza, keep)

    async def get_muc_history(self, domain: str, room: str) -> list[tuple[float, bytes]]:
        rows = await self._call(Storage.get_muc_history, domain, room)
        return [(float(r[0]), bytes(r[1])) for r in rows]

    # publish-subscribe
    async def pubsub_nodes(self, service: str) -> list[tuple[str, str]]:
        rows = await self._call(Storage.pubsub_nodes, service)
        return [(str(r[0]), str(r[1])) for r in rows]

    async def get_pubsub_node(self, service: str, node: str) -> str | None:
        return await self._call(Storage.get_pubsub_node, service, node)

    async def put_pubsub_node(self, service: str, node: str, state: str) -> None:
        return await self._call(Storage.put_pubsub_node, service, node, state)

    async def delete_pubsub_node(self, service: str, node: str) -> bool:
        return await self._call(Storage.delete_pubsub_node, service, node)

    async def delete_pubsub_service(self, service: str) -> None:
        return await self._call(Storage.delete_pubsub_service, service)

    async def put_pubsub_item(self, service: str, node: str, item: PubsubItem, keep: int) -> None:
        return await self._call(Storage.put_pubsub_item, service, node, item, keep)

    async def get_pubsub_items(
        self, service: str, node: str, ids: list[str] | None = None, limit: int | None = None
    ) -> list[PubsubItem]:
        return await self._call(Storage.get_pubsub_items, service, node, ids, limit)

    async def delete_pubsub_items(self, service: str, node: str, ids: list[str]) -> list[str]:
        return await self._call(Storage.delete_pubsub_items, service, node, ids)

    async def purge_pubsub_node(self, service: str, node: str) -> None:
        return await self._call(Storage.purge_pubsub_node, service, node)

    async def expire_pubsub_items(self, service: str, node: str, before: float) -> int:
        return await self._call(Storage.expire_pubsub_items, service, node, before)

    # blocking
    async def get_blocklist(self, host: str, username: str) -> list[str]:
        return await self._call(Storage.get_blocklist, host, username)

    async def add_blocks(self, host: str, username: str, jids: list[str]) -> None:
        return await self._call(Storage.add_blocks, host, username, jids)

    async def remove_blocks(self, host: str, username: str, jids: list[str] | None) -> None:
        return await self._call(Storage.remove_blocks, host, username, jids)

    # last activity
    async def set_last_activity(
        self, host: str, username: str, stamp: float, status: str | None
    ) -> None:
        return await self._call(Storage.set_last_activity, host, username, stamp, status)

    async def get_last_activity(self, host: str, username: str) -> LastActivity | None:
        return await self._call(Storage.get_last_activity, host, username)


#: mypy proves the client implements the contract, method for method
_client: type[Storage] = StorageClient
