"""The authentication throttle in Redis, so that every edge of a cluster counts
the same failures and honours the same blocks (the rules are in
:mod:`services.security.throttle`).

Keys (all under the configured prefix ``P``), each expiring by itself:

- ``P:auth:fail:ip:<ip>``: failed authentications from an address, expiring
  ``failure_window`` after the first
- ``P:auth:block:ip:<ip>``: a blocked address (value: the failures that
  blocked it), expiring after ``block_time``
- ``P:auth:fail:account:<user@host>``: an account's consecutive failures,
  expiring ``failure_window`` after the last
- ``P:auth:reg:<ip>``: registrations from an address, expiring an hour after
  the first

Updates that read and write several keys are Lua scripts, so two edges
counting failures of one address at once cannot both miss the threshold.
"""

from __future__ import annotations

from typing import Any

from ..security.throttle import HOUR, Block, Limits, Verdict, account_key, ip_key

__all__ = ["RedisThrottle"]

# KEYS: account failures, address failures, address block
# ARGV: failure window (ms), max failures, block time (ms)
_FAIL = """
redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[1])
local limit = tonumber(ARGV[2])
if limit <= 0 then return {0, 0, 0, 0} end
local blocked = redis.call('GET', KEYS[3])
if blocked then return {1, redis.call('PTTL', KEYS[3]), tonumber(blocked), 0} end
redis.call('SET', KEYS[2], 0, 'PX', ARGV[1], 'NX')
local n = redis.call('INCR', KEYS[2])
if n < limit then return {0, 0, n, 0} end
redis.call('DEL', KEYS[2])
redis.call('SET', KEYS[3], n, 'PX', ARGV[3])
return {1, tonumber(ARGV[3]), n, 1}
"""

# KEYS: registrations from the address; ARGV: limit, window (ms)
_RESERVE = """
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
if n >= tonumber(ARGV[1]) then return 0 end
redis.call('INCR', KEYS[1])
if redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 1
"""

_RELEASE = """
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
if n > 0 then redis.call('DECR', KEYS[1]) end
return n
"""


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def _int(raw: Any) -> int:
    return int(raw) if raw is not None else 0


class RedisThrottle:
    """An :class:`~services.security.throttle.AuthThrottle` shared through Redis."""

    def __init__(self, redis: Any, prefix: str, limits: Limits) -> None:
        self.redis = redis
        self.limits = limits
        self.p = prefix + "auth:"

    def _fail(self, key: str) -> str:
        return f"{self.p}fail:{key}"

    def _block(self, ip: str) -> str:
        return f"{self.p}block:{ip_key(ip)}"

    async def check(self, ip: str, account: str) -> Verdict:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.get(self._block(ip))
            pipe.pttl(self._block(ip))
            pipe.get(self._fail(account_key(account)))
            blocked, ttl, failures = await pipe.execute()
        delay = self.limits.delay_after(_int(failures))
        if blocked is None or ttl < 0:
            return Verdict(delay=delay)
        return Verdict(True, ttl / 1000, _int(blocked), delay)

    async def record_failure(self, ip: str, account: str) -> Verdict:
        lim = self.limits
        keys = [self._fail(account_key(account)), self._fail(ip_key(ip)), self._block(ip)]
        args = [_ms(lim.failure_window), lim.max_failures, _ms(lim.block_time)]
        blocked, ttl, n, started = await self.redis.eval(_FAIL, len(keys), *keys, *args)
        if not blocked:
            return Verdict()
        return Verdict(True, max(0, int(ttl)) / 1000, int(n), started=bool(started))

    async def record_success(self, ip: str, account: str) -> None:
        await self.redis.delete(self._fail(account_key(account)))

    async def reserve_registration(self, ip: str) -> bool:
        limit = self.limits.registrations_per_hour
        if limit <= 0:
            return True
        return bool(await self.redis.eval(_RESERVE, 1, f"{self.p}reg:{ip}", limit, _ms(HOUR)))

    async def release_registration(self, ip: str) -> None:
        await self.redis.eval(_RELEASE, 1, f"{self.p}reg:{ip}")

    async def list_blocks(self) -> list[Block]:
        keys: list[tuple[str, str]] = []  # (redis key, throttle key)
        for pattern in (f"{self.p}block:ip:*", f"{self.p}fail:account:*"):
            async for raw in self.redis.scan_iter(match=pattern, count=500):
                name = raw.decode() if isinstance(raw, bytes) else str(raw)
                keys.append((name, _strip(name, self.p)))
        if not keys:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for name, _ in keys:
                pipe.get(name)
                pipe.pttl(name)
            replies = await pipe.execute()
        out = []
        for i, (_, key) in enumerate(keys):
            value, ttl = replies[2 * i], replies[2 * i + 1]
            if value is None or ttl < 0:
                continue  # expired between the scan and the read
            n = _int(value)
            kind, _, subject = key.partition(":")
            if kind == "ip":
                out.append(Block(key, "ip", subject, n, ttl / 1000, 0.0))
            else:
                out.append(
                    Block(key, "account", subject, n, ttl / 1000, self.limits.delay_after(n))
                )
        return sorted(out, key=lambda b: b.key)

    async def unblock(self, key: str) -> bool:
        kind, _, subject = key.partition(":")
        if kind == "ip":
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.delete(self._block(subject))
                pipe.delete(self._fail(key))
                blocks, _ = await pipe.execute()
            return bool(blocks)
        if kind == "account":
            return bool(await self.redis.delete(self._fail(key)))
        return False


def _strip(name: str, prefix: str) -> str:
    """``P:auth:block:ip:<ip>`` -> ``ip:<ip>``; ``P:auth:fail:account:<a>`` -> ``account:<a>``."""
    rest = name[len(prefix) :]
    return rest.split(":", 1)[1]
