"""What a feature module declares, and the context its handlers get."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from lxml import etree

from ..router.interface import EdgeLink, Envelope, SessionRegistry
from ..storage.interface import Storage
from ..xmpp.jid import JID

if TYPE_CHECKING:
    from ..platform.config import Settings


class BlockInvalidator(Protocol):
    def invalidate(self, user: JID) -> None: ...


class Context(Protocol):
    """The server as feature handlers see it (the router implements it)."""

    settings: Settings
    storage: Storage
    sessions: SessionRegistry
    started_at: float
    features: FeatureSet
    edges: dict[str, EdgeLink]

    @property
    def blocks(self) -> BlockInvalidator: ...

    async def send(self, el: etree._Element) -> None:
        """Route a server-generated stanza (``from`` and ``to`` already set)."""
        ...

    async def deliver(self, jid: JID, data: bytes) -> bool:
        """Write bytes to one bound session, if it is there."""
        ...

    async def user_exists(self, jid: JID) -> bool: ...

    def is_local(self, domain: str) -> bool: ...


#: An IQ handler returns the payload of the result (or None for an empty
#: result), or raises StanzaError. Returning NO_REPLY means it answered itself.
IQHandler = Callable[[Context, Envelope, etree._Element], Awaitable[etree._Element | None]]


NO_REPLY = etree.Element("no-reply")

#: hooks on session life: (ctx, full jid) -> None
SessionHook = Callable[[Context, JID], Awaitable[None]]


@dataclass
class Feature:
    name: str
    xeps: tuple[str, ...] = ()
    #: features advertised in the server's disco#info
    disco_features: tuple[str, ...] = ()
    #: features advertised in an account's (bare JID's) disco#info
    account_disco_features: tuple[str, ...] = ()
    #: IQs addressed to the server domain: (payload tag, iq type) -> handler
    server_iq: dict[tuple[str, str], IQHandler] = field(default_factory=dict)
    #: IQs addressed to a local bare JID (own account or another's)
    account_iq: dict[tuple[str, str], IQHandler] = field(default_factory=dict)
    #: stream features advertised after authentication (serialized)
    stream_features: tuple[bytes, ...] = ()


@dataclass
class FeatureSet:
    features: list[Feature]

    def __post_init__(self) -> None:
        self.server_iq: dict[tuple[str, str], IQHandler] = {}
        self.account_iq: dict[tuple[str, str], IQHandler] = {}
        for f in self.features:
            self.server_iq.update(f.server_iq)
            self.account_iq.update(f.account_iq)

    def disco_features(self) -> list[str]:
        return sorted({x for f in self.features for x in f.disco_features})

    def account_disco_features(self) -> list[str]:
        return sorted({x for f in self.features for x in f.account_disco_features})

    def stream_features(self) -> list[bytes]:
        return [x for f in self.features for x in f.stream_features]
