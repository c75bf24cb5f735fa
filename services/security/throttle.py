"""Slowing password guessing and mass registration, per IP address and per account.

What the edge asks of an :class:`AuthThrottle` (the in-memory one here for the
embedded default, ``services.cluster.redis_throttle`` so that every edge of a
cluster sees the same counts):

* Per IP address, like ejabberd's mod_fail2ban: ``max_failures`` failed
  authentications within ``failure_window`` seconds (counted from the first)
  block the address for ``block_time`` seconds; the edge then closes its
  streams with ``policy-violation`` (RFC 6120 6.4.5 names that condition for
  too many retries) as soon as they ask to authenticate. A success does not
  reset the count: an attacker with one valid account must not be able to
  wipe it between guesses.
* Per account: after ``k`` consecutive failures (each within
  ``failure_window`` seconds of the last) the answer to the next attempt on
  the account waits ``delay * 2 ** (k - 1)`` seconds, at most ``delay_max``,
  whatever its password and from whichever address: guessing one account from
  many addresses is slowed, and the answer time does not tell a right
  password from a wrong one. A success resets it.
* Registrations (XEP-0077): at most ``registrations_per_hour`` accounts
  created from one address per hour (counted from the first).

A failed authentication is an attempt whose credentials were checked (the
edge asked for them): a malformed request or an unknown mechanism never
reaches a password. Accounts are named by the caller as ``user@host``.

What it leaves open: the in-memory counts are bounded (:data:`MAX_ENTRIES`
per table, expired entries dropped first, then the oldest), so an attacker
spraying that many distinct addresses or usernames may push older counts
out; and the per-account delay slows each attempt, not attempts made in
parallel on many connections.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from ..platform.config import Settings

__all__ = [
    "MAX_ENTRIES",
    "AuthThrottle",
    "Block",
    "Limits",
    "MemoryThrottle",
    "Verdict",
    "account_key",
    "ip_key",
]

#: most entries the in-memory throttle keeps per table
MAX_ENTRIES = 100_000
HOUR = 3600.0


@dataclass(frozen=True, slots=True)
class Limits:
    """The thresholds, from the ``auth_*`` settings and ``registration_limit_per_hour`` settings."""

    #: failures from one IP address that block it (0: never blocked)
    max_failures: int = 10
    #: seconds failures are counted over
    failure_window: float = 600.0
    #: seconds an IP address stays blocked
    block_time: float = 600.0
    #: seconds of the first per-account delay (0: none)
    delay: float = 0.5
    #: longest per-account delay, seconds
    delay_max: float = 8.0
    #: registrations from one IP address per hour (0: unlimited)
    registrations_per_hour: int = 5

    def __post_init__(self) -> None:
        if self.max_failures < 0 or self.registrations_per_hour < 0:
            raise ValueError("limits are counts of zero or more")
        if min(self.failure_window, self.block_time) <= 0:
            raise ValueError("failure_window and block_time are positive seconds")
        if self.delay < 0 or self.delay_max < self.delay:
            raise ValueError("0 <= delay <= delay_max")

    @classmethod
    def from_settings(cls, s: Settings) -> Limits:
        return cls(
            max_failures=s.auth_ip_max_failures,
            failure_window=s.auth_failure_window,
            block_time=s.auth_ip_block_time,
            delay=s.auth_account_delay,
            delay_max=s.auth_account_delay_max,
            registrations_per_hour=s.registration_limit_per_hour,
        )

    def delay_after(self, failures: int) -> float:
        """Seconds the next attempt on an account waits after ``failures`` failures."""
        if failures <= 0 or self.delay <= 0:
            return 0.0
        return min(self.delay_max, self.delay * 2.0 ** min(failures - 1, 64))


@dataclass(frozen=True, slots=True)
class Verdict:
    """What to do with an authentication attempt."""

    #: the address is blocked: close the stream
    blocked: bool = False
    #: seconds the block still lasts
    retry_after: float = 0.0
    #: failures that caused the block
    failures: int = 0
    #: seconds to wait before answering (the account's recent failures)
    delay: float = 0.0
    #: this failure blocked the address (:meth:`AuthThrottle.record_failure`)
    started: bool = False


@dataclass(frozen=True, slots=True)
class Block:
    """An IP address blocked, or an account whose attempts are delayed."""

    #: what :meth:`AuthThrottle.unblock` takes: ``ip:<address>`` or ``account:<user@host>``
    key: str
    kind: Literal["ip", "account"]
    #: the IP address or the account
    subject: str
    failures: int
    #: seconds until the block is lifted or the account's failures are forgotten
    expires_in: float
    #: seconds the account's next attempt waits (0 for an address)
    delay: float


def ip_key(ip: str) -> str:
    return f"ip:{ip}"


def account_key(account: str) -> str:
    return f"account:{account}"


class AuthThrottle(Protocol):
    """Counts failed authentications and registrations; every method may do I/O."""

    limits: Limits

    async def check(self, ip: str, account: str) -> Verdict:
        """Before checking ``account``'s credentials for a client at ``ip``."""
        ...

    async def record_failure(self, ip: str, account: str) -> Verdict:
        """A failed authentication; ``blocked`` when ``ip`` is blocked (``started``:
        by this failure)."""
        ...

    async def record_success(self, ip: str, account: str) -> None:
        """A successful authentication: the account's delay is reset."""
        ...

    async def reserve_registration(self, ip: str) -> bool:
        """Count a registration from ``ip``; False (nothing counted) past the limit."""
        ...

    async def release_registration(self, ip: str) -> None:
        """A reserved registration did not happen after all."""
        ...

    async def list_blocks(self) -> list[Block]:
        """Blocked addresses and delayed accounts, by key."""
        ...

    async def unblock(self, key: str) -> bool:
        """Lift a block or forget an account's failures; False if there was none."""
        ...


class _Table:
    """key -> (count, expiry on the throttle's clock), bounded."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.rows: dict[str, tuple[int, float]] = {}

    def get(self, key: str) -> tuple[int, float] | None:
        row = self.rows.get(key)
        if row is not None and row[1] <= self.clock():
            del self.rows[key]
            return None
        return row

    def put(self, key: str, count: int, expires: float) -> None:
        rows = self.rows
        rows.pop(key, None)  # re-inserted last: the newest
        if len(rows) >= MAX_ENTRIES:
            now = self.clock()
            for k in [k for k, (_, exp) in rows.items() if exp <= now]:
                del rows[k]
            while len(rows) >= MAX_ENTRIES:
                del rows[next(iter(rows))]
        rows[key] = (count, expires)

    def pop(self, key: str) -> bool:
        return self.get(key) is not None and self.rows.pop(key, None) is not None

    def live(self) -> list[tuple[str, int, float]]:
        now = self.clock()
        return [(k, n, exp - now) for k, (n, exp) in list(self.rows.items()) if exp > now]


class MemoryThrottle:
    """The throttle of one process (the embedded default); ``clock`` in seconds."""

    def __init__(self, limits: Limits, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self.clock = clock
        self._ip_failures = _Table(clock)
        self._blocks = _Table(clock)
        self._accounts = _Table(clock)
        self._registrations = _Table(clock)

    async def check(self, ip: str, account: str) -> Verdict:
        block = self._blocks.get(ip)
        acct = self._accounts.get(account)
        delay = self.limits.delay_after(acct[0] if acct else 0)
        if block is None:
            return Verdict(delay=delay)
        return Verdict(True, block[1] - self.clock(), block[0], delay)

    async def record_failure(self, ip: str, account: str) -> Verdict:
        lim, now = self.limits, self.clock()
        acct = self._accounts.get(account)
        self._accounts.put(account, (acct[0] if acct else 0) + 1, now + lim.failure_window)
        if lim.max_failures <= 0:
            return Verdict()
        block = self._blocks.get(ip)
        if block is not None:
            return Verdict(True, block[1] - now, block[0])
        row = self._ip_failures.get(ip)
        count, expires = (row[0] + 1, row[1]) if row else (1, now + lim.failure_window)
        if count < lim.max_failures:
            self._ip_failures.put(ip, count, expires)
            return Verdict()
        self._ip_failures.pop(ip)
        self._blocks.put(ip, count, now + lim.block_time)
        return Verdict(True, lim.block_time, count, started=True)

    async def record_success(self, ip: str, account: str) -> None:
        self._accounts.pop(account)

    async def reserve_registration(self, ip: str) -> bool:
        limit = self.limits.registrations_per_hour
        if limit <= 0:
            return True
        row = self._registrations.get(ip)
        count, expires = (row[0], row[1]) if row else (0, self.clock() + HOUR)
        if count >= limit:
            return False
        self._registrations.put(ip, count + 1, expires)
        return True

    async def release_registration(self, ip: str) -> None:
        row = self._registrations.get(ip)
        if row is not None and row[0] > 0:
            self._registrations.put(ip, row[0] - 1, row[1])

    async def list_blocks(self) -> list[Block]:
        out = [Block(ip_key(ip), "ip", ip, n, left, 0.0) for ip, n, left in self._blocks.live()]
        out += [
            Block(account_key(a), "account", a, n, left, self.limits.delay_after(n))
            for a, n, left in self._accounts.live()
        ]
        return sorted(out, key=lambda b: b.key)

    async def unblock(self, key: str) -> bool:
        kind, _, subject = key.partition(":")
        if kind == "ip":
            self._ip_failures.pop(subject)
            return self._blocks.pop(subject)
        if kind == "account":
            return self._accounts.pop(subject)
        return False
