"""The self-describing control-plane call, served and called over gRPC.

Every service's contract is a ``Protocol`` (``services/core/``): a
:class:`CallServicer` subclass serves the contract's methods of an
implementation typed as that Protocol, and a :class:`ContractClient`
subclass implements the Protocol method for method, each a ``Call`` on one
of several replicas, failing over to the next when one is unavailable.
Stanza and stream errors cross as values and are raised again.

A call that failed after it was sent may have run on the server (a timeout
says nothing about that), so only methods declared idempotent are sent again;
the others go to a replica only once its channel is connected, and fail over
only while nothing was sent.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import zlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Concatenate, ParamSpec, TypeVar, cast

import grpc
from lxml import etree

from ..storage.store import UnknownAccountError
from ..xmpp.errors import (
    ErrorType,
    StanzaCondition,
    StanzaError,
    StreamCondition,
    StreamError,
)
from ..xmpp.jid import JID
from ..xmpp.tree import parse_element
from . import codec
from .protogen import load

if TYPE_CHECKING:
    from ..platform.metrics import Metrics

pb2, pb2_grpc = load()
P = ParamSpec("P")
R = TypeVar("R")
log = logging.getLogger("xmppd.rpc")

#: gRPC channel options: keepalives set explicitly so a dead peer is noticed
CHANNEL_OPTIONS = [
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
    ("grpc.max_send_message_length", 16 * 1024 * 1024),
    # a replica that restarts is back within seconds: reconnect within 2 s,
    # not gRPC's default backoff of up to two minutes, in which a channel
    # that once failed is skipped as dead
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2_000),
]
SERVER_OPTIONS = [
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
    ("grpc.max_send_message_length", 16 * 1024 * 1024),
]
#: failures after which an idempotent call is sent to the next replica
RETRYABLE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED,
}


class RemoteError(RuntimeError):
    pass


def idempotent_methods(table: Mapping[str, bool]) -> frozenset[str]:
    """The names a ``{method: idempotent?}`` table marks idempotent."""
    return frozenset(name for name, ok in table.items() if ok)


#: a served method: one bound coroutine method of the implementation
Handler = Callable[..., Awaitable[Any]]


def contract_methods(contract: type) -> tuple[str, ...]:
    """The public async methods of a service contract (a ``Protocol`` class),
    sorted: the names a typed client implements and a servicer exposes."""
    return tuple(
        name
        for name, _ in inspect.getmembers(contract, inspect.iscoroutinefunction)
        if not name.startswith("_")
    )


async def serve_call(handlers: Mapping[str, Handler], request: Any) -> Any:
    """Run one Call with ``handlers`` and build the reply message."""
    try:
        handler = handlers.get(request.method)
        if handler is None:
            raise RemoteError(f"no such method {request.method!r}")
        payload = codec.loads(request.args) or {}
        result = await handler(*payload.get("args", []), **payload.get("kwargs", {}))
        return pb2.CallReply(result=codec.dumps(result))
    except StanzaError as err:
        # the application condition too (XEP-0060's pubsub#errors, ...): it
        # is what a client tells refusals of the same condition apart by
        app = b"" if err.app_condition is None else etree.tostring(err.app_condition)
        return pb2.CallReply(
            error="stanza",
            condition=err.condition.value,
            text=err.text or "",
            app_condition=app,
            type=err.type.value,
        )
    except StreamError as err:
        return pb2.CallReply(error="stream", condition=err.condition.value, text=err.text or "")
    except UnknownAccountError as err:
        return pb2.CallReply(error="lookup", text=f"{err.host}\n{err.username}")
    except Exception as err:
        log.exception("call %s failed", request.method)
        return pb2.CallReply(error="internal", text=f"{type(err).__name__}: {err}")


def raise_reply_error(reply: Any) -> None:
    if reply.error == "stanza":
        raise StanzaError(
            StanzaCondition(reply.condition),
            reply.text or None,
            ErrorType(reply.type) if reply.type else None,
            parse_element(reply.app_condition) if reply.app_condition else None,
        )
    if reply.error == "stream":
        raise StreamError(StreamCondition(reply.condition), reply.text or None)
    if reply.error == "lookup":
        host, _, username = reply.text.partition("\n")
        raise UnknownAccountError(host, username)
    raise RemoteError(reply.text)


class CallServicer:
    """The ``Call`` RPC of one service contract: the methods the ``contract``
    Protocol names, bound on ``impl``. Subclasses take ``impl`` typed as the
    contract (``StorageServicer(impl: Storage)``), so mypy checks that what
    is served implements it; the table is built here, once, and a missing
    method fails at construction."""

    def __init__(self, contract: type, impl: object) -> None:
        self.handlers: dict[str, Handler] = {
            name: getattr(impl, name) for name in contract_methods(contract)
        }
        self.methods = frozenset(self.handlers)

    async def Call(self, request: Any, context: Any) -> Any:
        return await serve_call(self.handlers, request)


class Channels:
    """One channel per peer address, reused; carries the process's metrics."""

    def __init__(self, metrics: Metrics | None = None) -> None:
        self._channels: dict[str, grpc.aio.Channel] = {}
        self.metrics = metrics

    def get(self, addr: str) -> grpc.aio.Channel:
        ch = self._channels.get(addr)
        if ch is None:
            ch = grpc.aio.insecure_channel(addr, options=CHANNEL_OPTIONS)
            self._channels[addr] = ch
        return ch

    async def close(self) -> None:
        for ch in self._channels.values():
            await ch.close()
        self._channels.clear()


def affinity(args: tuple[Any, ...], replicas: int) -> int:
    """The replica index for a call's arguments: by the user it is about (a
    Session's or Envelope's JID, a JID, or leading strings such as host and
    username), the same for the same user."""
    if replicas <= 1 or not args:
        return 0
    first = args[0]
    jid = getattr(first, "jid", None) or getattr(first, "frm", None) or first
    if isinstance(jid, JID):
        key = str(jid.bare)
    else:
        key = "/".join(a for a in args[:2] if isinstance(a, str))
    return zlib.crc32(key.encode()) % replicas


@dataclass(frozen=True, slots=True)
class CallTimes:
    """How long a control-plane call may take."""

    #: one attempt on one replica
    timeout: float = 10.0
    #: trying the other replicas, in all
    failover_for: float = 15.0
    #: waiting for a channel to connect before a non-idempotent call
    connect_timeout: float = 1.0


class ContractClient:
    """The base of the typed clients (``StorageClient``, ``PresenceClient``,
    ...): a subclass names its gRPC ``SERVICE``, its ``CONTRACT`` (the
    Protocol it implements, method for method, each a one-line :meth:`_call`
    of the Protocol's own function) and its ``IDEMPOTENT`` table, which must
    classify every method of the contract.

    A call goes to any of the service's replicas, with failover. The first
    argument picks the preferred replica (:func:`affinity`): the user a call
    is about, so calls about one user land on one replica, in order, and
    different users spread over all of them. The others are tried in order
    when it is down.

    Methods the table marks idempotent may run twice with the same effect and
    answer: those are sent again to the next replica on ``UNAVAILABLE``,
    ``DEADLINE_EXCEEDED`` or ``CANCELLED``. Any other call is sent only on a
    channel that is connected (READY, after up to ``connect_timeout`` of
    connecting; a replica that is not is skipped, the call certainly not sent
    there), and never sent again: a failure after sending raises
    :class:`RemoteError`, since the server may have run it.
    """

    SERVICE: ClassVar[str]
    CONTRACT: ClassVar[type]
    IDEMPOTENT: ClassVar[Mapping[str, bool]]

    def __init__(
        self, addresses: Sequence[str], channels: Channels, times: CallTimes = CallTimes()
    ) -> None:
        unclassified = set(contract_methods(self.CONTRACT)) ^ set(self.IDEMPOTENT)
        if unclassified:
            raise TypeError(f"{self.SERVICE}: retry rule missing or stale: {sorted(unclassified)}")
        self._service = self.SERVICE
        self._addresses = list(addresses)
        self._channels = channels
        self._timeout = times.timeout
        self._failover_for = times.failover_for
        self._idempotent = idempotent_methods(self.IDEMPOTENT)
        self._connect_timeout = times.connect_timeout
        self._stub_cls = getattr(pb2_grpc, f"{self.SERVICE}Stub")

    async def _call(
        self,
        method: Callable[Concatenate[Any, P], Awaitable[R]],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> R:
        """Call the contract's ``method`` (``Storage.get_account``) remotely:
        mypy checks the arguments against it and types the answer; the
        name sent is its name."""
        return cast(R, await self._send(method.__name__, args, kwargs))

    async def _send(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        req = pb2.CallRequest(
            method=method, args=codec.dumps({"args": list(args), "kwargs": kwargs}), version=1
        )
        deadline = time.monotonic() + self._failover_for
        addresses = await self._candidates(args)
        if not addresses:
            raise RemoteError(f"{self._service}.{method}: no replica is alive")
        attempt = 0
        idempotent = method in self._idempotent
        while True:
            addr = addresses[attempt % len(addresses)]
            channel = self._channels.get(addr)
            m = self._channels.metrics
            if not idempotent and not await self._connected(channel):
                # nothing was sent there, so the next replica may have it
                if time.monotonic() > deadline:
                    raise RemoteError(f"{self._service}.{method}: no replica connected")
                attempt += 1
                if attempt % len(addresses) == 0:
                    await asyncio.sleep(0.2)
                continue
            stub = self._stub_cls(channel)
            started = time.perf_counter()
            try:
                reply = await stub.Call(req, timeout=self._timeout)
            except grpc.aio.AioRpcError as err:
                if m is not None:
                    m.grpc_errors.labels(f"{self._service}.{method}", err.code().name).inc()
                if not idempotent or err.code() not in RETRYABLE or time.monotonic() > deadline:
                    raise RemoteError(
                        f"{self._service}.{method} at {addr}: {err.code().name}"
                    ) from None
                attempt += 1
                if attempt % len(addresses) == 0:
                    await asyncio.sleep(0.2)
                continue
            if m is not None:
                m.grpc_call.labels(f"{self._service}.{method}").observe(
                    time.perf_counter() - started
                )
            if reply.error:
                raise_reply_error(reply)
            return codec.loads(reply.result)

    async def _candidates(self, args: tuple[Any, ...]) -> list[str]:
        """The replicas to try for a call, best first: by default the
        configured addresses, starting at the call's affinity."""
        i = affinity(args, len(self._addresses))
        return self._addresses[i:] + self._addresses[:i]

    async def _connected(self, channel: grpc.aio.Channel) -> bool:
        """Is ``channel`` connected, so that a call on it goes out on a live
        connection? A channel known to be failing is not waited for: a call
        would fail at once without being sent, and the next replica may be up."""
        state = channel.get_state(try_to_connect=True)
        if state == grpc.ChannelConnectivity.READY:
            return True
        if state in (
            grpc.ChannelConnectivity.TRANSIENT_FAILURE,
            grpc.ChannelConnectivity.SHUTDOWN,
        ):
            return False
        try:  # IDLE or CONNECTING: a first call, or a reconnection under way
            await asyncio.wait_for(channel.channel_ready(), self._connect_timeout)
        except (TimeoutError, grpc.aio.AioRpcError):
            return False
        return True
