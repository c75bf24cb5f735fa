"""XEP-0198 Stream Management (``urn:xmpp:sm:3``), sans-IO: the counters and
the queue of one stream management session, and the nonzas it speaks.

:class:`StreamManagement` is what survives a broken connection when the
session is resumable: the client stream machine (``c2s.py``) counts the
stanzas it receives into it, the edge counts and queues what it writes to
the client, and a ``<resume/>`` on a new stream carries the same object on.
The rules chosen:

- **Counters** (section 4): ``inbound`` is the client's stanzas handled
  (message, presence, iq; never nonzas), counted from ``<enable/>``;
  ``outbound`` the stanzas written to the client, counted from
  ``<enabled/>``. Both wrap from 2^32-1 to 0, and every comparison is made
  modulo 2^32.
- **Unacknowledged queue**: each stanza written is kept, serialized, with
  its sequence number, until an ``<a h/>`` (or the ``h`` of ``<resume/>``)
  covers it. An ``h`` acknowledging more than was sent is a stream error,
  ``undefined-condition`` with ``<handled-count-too-high/>`` (section 5,
  :class:`HandledCountTooHigh`). An ``h`` *behind* the last one (within
  2^31 of it) acknowledges nothing new and is ignored: acks are cumulative,
  and a stale one must not count as a very large one.
- **Bound**: ``max_unacked`` stanzas. :meth:`StreamManagement.stanza_out`
  still queues past it (nothing written may be forgotten) and says so; the
  owner then closes the stream (``policy-violation``), see
  ``services/edge/session.py``.
- **Acknowledgement requests**: the owner asks for an ``<a/>`` (sends
  ``<r/>``) once ``request_every`` stanzas were written since its last
  request (:meth:`StreamManagement.want_request`), and at its own pace for
  fewer.
- **Resumption** (section 5): the id is random and unguessable
  (``secrets.token_urlsafe``), and stays the session's for its life: a
  session resumed once can be resumed again after its next break, under the
  same id, as clients do. ``max`` is the resumption time granted, seconds.
"""

from __future__ import annotations

import collections
import secrets
from typing import Final

from lxml import etree

from . import ns
from .errors import StanzaCondition, StreamCondition, StreamError

__all__ = [
    "FEATURE",
    "MOD",
    "NS",
    "REQUEST",
    "HandledCountTooHigh",
    "StreamManagement",
    "failed",
    "parse_h",
]

NS: Final = "urn:xmpp:sm:3"
#: the stream feature, advertised after authentication (section 2)
FEATURE: Final = b"<sm xmlns='urn:xmpp:sm:3'/>"
#: the counters' modulus (section 4: h wraps from 2^32-1 back to 0)
MOD: Final = 2**32
#: a request for acknowledgement
REQUEST: Final = b"<r xmlns='urn:xmpp:sm:3'/>"


def parse_h(value: str | None) -> int:
    """An ``h`` attribute (xs:unsignedInt); ValueError if it is not one."""
    if value is None:
        raise ValueError("no h")
    v = value.strip()
    if not v.isdigit() or len(v) > 10:  # isdigit: no sign, no spaces inside
        raise ValueError(f"bad h {value!r}")
    h = int(v)
    if h >= MOD:
        raise ValueError(f"h out of range: {h}")
    return h


def failed(condition: StanzaCondition, h: int | None = None) -> bytes:
    """``<failed/>`` with a stanza error condition (section 6), and the
    inbound count when the server wants to tell it (section 5)."""
    attr = f" h='{h}'" if h is not None else ""
    return (
        f"<failed xmlns='{NS}'{attr}><{condition.value} xmlns='{ns.STANZAS_ERR}'/></failed>"
    ).encode()


class HandledCountTooHigh(StreamError):
    """The client acknowledged stanzas never sent to it (section 6):
    ``undefined-condition`` with the XEP's application condition."""

    def __init__(self, h: int, send_count: int) -> None:
        super().__init__(
            StreamCondition.UNDEFINED_CONDITION,
            f"You acknowledged {h} stanzas, but I only sent you {send_count} so far",
        )
        self.h = h
        self.send_count = send_count

    def _app(self) -> str:
        return f"<handled-count-too-high xmlns='{NS}' h='{self.h}' send-count='{self.send_count}'/>"

    def to_element(self) -> etree._Element:
        err = super().to_element()
        # RFC 6120 4.9.4: the application condition follows <text/>
        err.append(etree.fromstring(self._app()))
        return err

    def to_bytes(self) -> bytes:
        cond = self.condition.value
        inner = f"<{cond} xmlns='{ns.STREAMS_ERR}'/>"
        if self.text:
            inner += f"<text xmlns='{ns.STREAMS_ERR}'>{_escape(self.text)}</text>"
        return f"<stream:error>{inner}{self._app()}</stream:error>".encode()


def _escape(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class StreamManagement:
    """One stream management session: counters, unacknowledged stanzas,
    resumption id and time. No I/O; see the module docstring for the rules."""

    __slots__ = (
        "_queue",
        "acked",
        "id",
        "inbound",
        "max",
        "max_unacked",
        "outbound",
        "request_every",
        "resumable",
        "since_request",
    )

    def __init__(
        self,
        *,
        resumable: bool = False,
        max_seconds: int = 0,
        max_unacked: int = 1000,
        request_every: int = 5,
        id: str | None = None,
    ) -> None:
        self.resumable = resumable
        #: the resumption id (an SM-ID, section 5); None when not resumable
        self.id: str | None = (id or secrets.token_urlsafe(24)) if resumable else None
        #: resumption time granted, seconds
        self.max = max_seconds
        self.max_unacked = max_unacked
        self.request_every = request_every
        #: stanzas received from the client and handled, mod 2^32 (its 'h')
        self.inbound = 0
        #: stanzas sent to the client, mod 2^32
        self.outbound = 0
        #: the client's last 'h': stanzas it has acknowledged, mod 2^32
        self.acked = 0
        #: stanzas sent since the last <r/>
        self.since_request = 0
        #: (sequence number, serialized stanza), oldest first
        self._queue: collections.deque[tuple[int, bytes]] = collections.deque()

    # ---- counting ---------------------------------------------------------------

    def stanza_in(self) -> None:
        """A stanza from the client was handled."""
        self.inbound = (self.inbound + 1) % MOD

    def stanza_out(self, data: bytes) -> bool:
        """``data`` is written to the client: count and keep it. False when
        the queue is now over its bound (the stanza is kept all the same)."""
        self.outbound = (self.outbound + 1) % MOD
        self._queue.append((self.outbound, data))
        self.since_request += 1
        return len(self._queue) <= self.max_unacked

    def ack(self, h: int) -> int:
        """The client has handled stanzas up to ``h``: forget those; how many
        were newly acknowledged. Raises :class:`HandledCountTooHigh`, and
        changes nothing, when ``h`` covers stanzas never sent."""
        n = (h - self.acked) % MOD
        q = self._queue
        if n > len(q):
            if n >= MOD // 2:
                return 0  # behind the last ack: nothing new (see the module docstring)
            raise HandledCountTooHigh(h, self.outbound)
        for _ in range(n):
            q.popleft()
        self.acked = h
        return n

    def resume_from(self, h: int) -> list[bytes]:
        """The ``h`` of ``<resume/>``: acknowledge up to it, then what must be
        sent again, oldest first (the stanzas stay queued until acknowledged)."""
        self.ack(h)
        return self.unacked()

    def unacked(self) -> list[bytes]:
        """Stanzas sent and not acknowledged, oldest first."""
        return [data for _, data in self._queue]

    def unacked_seqs(self) -> list[int]:
        """Their sequence numbers, in the same order."""
        return [seq for seq, _ in self._queue]

    @property
    def pending(self) -> int:
        """How many stanzas are unacknowledged."""
        return len(self._queue)

    def take_unacked(self) -> list[bytes]:
        """The session is over: everything unacknowledged, the queue emptied."""
        out = self.unacked()
        self._queue.clear()
        return out

    # ---- requests and nonzas --------------------------------------------------------

    def want_request(self) -> bool:
        """Enough stanzas were sent since the last ``<r/>`` to ask again."""
        return 0 < self.request_every <= self.since_request

    def request(self) -> bytes:
        """An ``<r/>`` to send now."""
        self.since_request = 0
        return REQUEST

    def ack_nonza(self) -> bytes:
        """The answer to the client's ``<r/>``."""
        return f"<a xmlns='{NS}' h='{self.inbound}'/>".encode()

    def enabled_nonza(self) -> bytes:
        if not self.resumable:
            return f"<enabled xmlns='{NS}'/>".encode()
        return f"<enabled xmlns='{NS}' id='{self.id}' resume='true' max='{self.max}'/>".encode()

    def resumed_nonza(self) -> bytes:
        return f"<resumed xmlns='{NS}' previd='{self.id}' h='{self.inbound}'/>".encode()
