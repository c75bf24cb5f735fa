"""Holding keys one replica at a time: the leases of :class:`MucDirectory`
(Redis) with the gRPC peers that hold the keys this replica does not. The
group chat role holds rooms this way, the pubsub role nodes and PEP
services."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from ..xmpp.jid import JID
from .rpc import CallTimes, Channels, ContractClient

if TYPE_CHECKING:
    from .redis_muc import MucDirectory

__all__ = ["KeyedClient", "Leases"]

P = TypeVar("P")


class Leases(Generic[P]):
    """Keys held by leases in Redis; ``client(addresses, channels, times)``
    makes the typed client of the replica holding a key."""

    def __init__(
        self,
        directory: MucDirectory,
        node: str,
        channels: Channels,
        client: Callable[[list[str], Channels, CallTimes], P],
    ) -> None:
        self.directory = directory
        self.node = node
        self.channels = channels
        self._client = client
        self._peers: dict[str, P] = {}

    async def elsewhere(self, key: str) -> P | None:
        """None when this replica holds ``key`` (taken or kept); else the
        client of the replica that does."""
        holder = await self.directory.claim(key, self.node)
        if holder == self.node:
            return None
        address = await self.directory.address(holder)
        if address is None:
            return None  # not a replica any more: unreachable, so the key is ours to take
        peer = self._peers.get(address)
        if peer is None:
            # one replica and no other to fail over to: a dead holder fails the
            # call at once, and the caller takes the key (see MucHost.route)
            peer = self._peers[address] = self._client(
                [address], self.channels, CallTimes(failover_for=0.5, connect_timeout=0.5)
            )
        return peer

    async def renew(self, keys: list[str]) -> list[str]:
        """Keep holding ``keys``; those another replica holds now."""
        return await self.directory.renew(keys, self.node)

    async def release(self, key: str) -> None:
        await self.directory.release(key, self.node)


class KeyedClient(ContractClient):
    """A contract client whose calls go first to the replica a call's key
    prefers: rendezvous hashing over the live replicas in Redis, so every
    caller picks the holder of a key while they see the same replicas.
    Without a directory, the configured addresses."""

    def __init__(
        self,
        addresses: Sequence[str],
        channels: Channels,
        times: CallTimes = CallTimes(),
        directory: MucDirectory | None = None,
    ) -> None:
        super().__init__(addresses, channels, times)
        self.directory = directory

    def _key(self, args: tuple[Any, ...]) -> str | None:
        """A call's key: by default its first argument, a bare JID."""
        if not args:
            return None
        return str(args[0].bare) if isinstance(args[0], JID) else str(args[0])

    async def _candidates(self, args: tuple[Any, ...]) -> list[str]:
        key = self._key(args)
        if self.directory is not None and key is not None:
            live = await self.directory.order(key)
            if live:
                return live
        return await super()._candidates(args)
