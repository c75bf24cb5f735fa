"""Cross-node events over Redis pub/sub: cache invalidation and the like.

Messages name themselves: ``{"t": <type>, "from": <node>, ...}``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger("xmppd.cluster.events")

Handler = Callable[[dict[str, Any]], Awaitable[None] | None]


class EventBus:
    def __init__(self, redis: Any, prefix: str, node: str) -> None:
        self.redis = redis
        self.channel = prefix + "events"
        self.node = node
        self.handlers: dict[str, list[Handler]] = {}
        self._task: asyncio.Task[None] | None = None

    def on(self, kind: str, handler: Handler) -> None:
        self.handlers.setdefault(kind, []).append(handler)

    async def publish(self, kind: str, **fields: Any) -> None:
        await self.redis.publish(self.channel, json.dumps({"t": kind, "from": self.node, **fields}))

    async def start(self) -> None:
        pubsub = self.redis.pubsub()
        await pubsub.subscribe(self.channel)
        self._task = asyncio.get_running_loop().create_task(self._run(pubsub))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _run(self, pubsub: Any) -> None:
        async for msg in pubsub.listen():
            if msg.get("type") != "message":
                continue
            try:
                event = json.loads(msg["data"])
                for h in self.handlers.get(event.get("t", ""), []):
                    r = h(event)
                    if r is not None:
                        await r
            except Exception:
                log.exception("bad event %r", msg.get("data"))
