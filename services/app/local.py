"""``make cluster``: a local cluster as processes on this machine.

Two edges, two routers, one presence and one storage process against the
machine's PostgreSQL and Redis, started with one command and stopped cleanly
on Ctrl-C. Tests use :class:`LocalCluster` directly, with free ports, their
own database and their own Redis key prefix.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import signal
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Proc:
    role: str
    name: str
    env: dict[str, str]
    process: asyncio.subprocess.Process | None = None
    log: list[str] = field(default_factory=list)
    c2s_ports: list[int] = field(default_factory=list)
    ops_port: int = -1
    admin_port: int = -1
    component_port: int = -1  # an edge's XEP-0114 listener, when components are configured
    http_port: int = -1  # an edge's web listener (WebSocket, BOSH, host-meta)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    _pump: asyncio.Task[None] | None = None

    async def start(self, echo: bool) -> None:
        self.ready = asyncio.Event()
        self.c2s_ports = []
        self.component_port = -1
        self.http_port = -1
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.app.main", self.role,
            env=self.env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        self._pump = asyncio.get_running_loop().create_task(self._read(echo))

    async def _read(self, echo: bool) -> None:
        assert self.process is not None and self.process.stderr is not None
        async for raw in self.process.stderr:
            line = raw.decode(errors="replace").rstrip()
            self.log.append(line)
            del self.log[:-2000]
            if echo:
                print(f"[{self.name}] {line}", file=sys.stderr)
            m = re.search(r"(grpc |ops |admin API )?listening on [\d.]+:(\d+)", line)
            if m and m.group(1) == "ops ":
                self.ops_port = int(m.group(2))
            elif m and m.group(1) == "admin API ":
                self.admin_port = int(m.group(2))
            elif m and m.group(1) is None:
                self.c2s_ports.append(int(m.group(2)))
            c = re.search(r"component listener on [\d.]+:(\d+)", line)
            if c:
                self.component_port = int(c.group(1))
            w = re.search(r"web listener on [\d.]+:(\d+)", line)
            if w:
                self.http_port = int(w.group(1))
            if " ready" in line:
                self.ready.set()

    async def wait_ready(self, timeout: float = 30.0) -> None:
        try:
            await asyncio.wait_for(self.ready.wait(), timeout)
        except TimeoutError:
            raise RuntimeError(
                f"{self.name} did not start:\n" + "\n".join(self.log[-30:])
            ) from None

    def kill(self) -> None:
        """kill -9, as a crash would."""
        if self.process is not None and self.process.returncode is None:
            self.process.kill()

    async def stop(self, timeout: float = 20.0) -> int | None:
        p = self.process
        if p is None:
            return None
        if p.returncode is None:
            p.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(p.wait(), timeout)
            except TimeoutError:
                p.kill()
                await p.wait()
        if self._pump is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._pump, 2)
        return p.returncode


class LocalCluster:
    def __init__(
        self,
        data_dir: Path,
        database: str = "xmppd_cluster",
        redis_prefix: str = "xmppd:",
        edges: int = 2,
        routers: int = 2,
        storages: int = 1,
        presences: int = 1,
        mucs: int = 1,
        pubsubs: int = 1,
        admin: bool = False,
        admin_tokens: str = "",
        fixed_ports: bool = False,
        echo: bool = False,
        pg_dsn: str = "postgresql://postgres@127.0.0.1:5432",
        redis_url: str = "redis://127.0.0.1:6379/0",
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.database = database
        self.pg_dsn = pg_dsn
        self.database_url = f"{pg_dsn}/{database}"
        self.redis_url = redis_url
        self.redis_prefix = redis_prefix
        self.echo = echo
        port = (lambda fixed: fixed) if fixed_ports else (lambda _fixed: free_port())
        self.storage_addrs = [f"127.0.0.1:{port(50054 + 10 * i)}" for i in range(storages)]
        self.presence_addrs = [f"127.0.0.1:{port(50053 + 10 * i)}" for i in range(presences)]
        self.muc_addrs = [f"127.0.0.1:{port(50055 + 10 * i)}" for i in range(mucs)]
        self.pubsub_addrs = [f"127.0.0.1:{port(50056 + 10 * i)}" for i in range(pubsubs)]
        self.router_addrs = [f"127.0.0.1:{port(50052 + 10 * i)}" for i in range(routers)]
        base = {
            **os.environ,
            "XMPPD_DATA_DIR": str(data_dir),
            "XMPPD_DATABASE_URL": self.database_url,
            "XMPPD_REDIS_URL": redis_url,
            "XMPPD_REDIS_PREFIX": redis_prefix,
            "XMPPD_STORAGE_ADDRS": ",".join(self.storage_addrs),
            "XMPPD_PRESENCE_ADDRS": ",".join(self.presence_addrs),
            "XMPPD_MUC_ADDRS": ",".join(self.muc_addrs),
            "XMPPD_PUBSUB_ADDRS": ",".join(self.pubsub_addrs),
            "XMPPD_ROUTER_ADDRS": ",".join(self.router_addrs),
            "XMPPD_C2S_HOST": "127.0.0.1",
            "PYTHONUNBUFFERED": "1",
            **(extra_env or {}),
        }
        self.procs: list[Proc] = []
        for role, addrs in (
            ("storage", self.storage_addrs),
            ("presence", self.presence_addrs),
            ("muc", self.muc_addrs),
            ("pubsub", self.pubsub_addrs),
        ):
            for i, addr in enumerate(addrs):
                name = role if len(addrs) == 1 else f"{role}{i + 1}"
                self.procs.append(
                    Proc(role, name, {**base, "XMPPD_GRPC_LISTEN": addr, "XMPPD_NODE_ID": name})
                )
        for i, addr in enumerate(self.router_addrs):
            self.procs.append(
                Proc(
                    "router",
                    f"router{i + 1}",
                    {**base, "XMPPD_GRPC_LISTEN": addr, "XMPPD_NODE_ID": f"router{i + 1}"},
                )
            )
        for i in range(edges):
            c2s = 5222 + 10 * i if fixed_ports else 0
            tls = 5223 + 10 * i if fixed_ports else 0
            grpc_port = port(50051 + 10 * i)
            self.procs.append(
                Proc(
                    "edge",
                    f"edge{i + 1}",
                    {
                        **base,
                        "XMPPD_GRPC_LISTEN": f"127.0.0.1:{grpc_port}",
                        "XMPPD_NODE_ID": f"edge{i + 1}",
                        "XMPPD_C2S_PORT": str(c2s),
                        "XMPPD_C2S_DIRECT_TLS_PORT": str(tls),
                    },
                )
            )
            # the XEP-0114 listener (open only while components are configured)
            if "XMPPD_COMPONENT_PORT" not in (extra_env or {}):
                comp_port = 5347 + 10 * i if fixed_ports else 0
                self.procs[-1].env["XMPPD_COMPONENT_PORT"] = str(comp_port)
            # the web listener: WebSocket and BOSH (5280 on the first edge)
            if "XMPPD_HTTP_PORT" not in (extra_env or {}):
                self.procs[-1].env["XMPPD_HTTP_PORT"] = str(5280 + 10 * i if fixed_ports else 0)
                self.procs[-1].env.setdefault("XMPPD_HTTP_HOST", "127.0.0.1")

        if admin:
            self.procs.append(
                Proc(
                    "admin",
                    "admin",
                    {
                        **base,
                        "XMPPD_NODE_ID": "admin",
                        "XMPPD_ADMIN_HOST": "127.0.0.1",
                        "XMPPD_ADMIN_PORT": "8080" if fixed_ports else "0",
                        "XMPPD_ADMIN_TOKENS": admin_tokens,
                    },
                )
            )
        # every process serves /metrics, /healthz, /readyz on its own port
        for i, proc in enumerate(self.procs):
            if "XMPPD_OPS_PORT" not in (extra_env or {}):
                proc.env["XMPPD_OPS_PORT"] = str(9101 + i) if fixed_ports else "0"
            proc.env.setdefault("XMPPD_OPS_HOST", "127.0.0.1")

    def proc(self, name: str) -> Proc:
        return next(p for p in self.procs if p.name == name)

    @property
    def edges(self) -> list[Proc]:
        return [p for p in self.procs if p.role == "edge"]

    @property
    def routers(self) -> list[Proc]:
        return [p for p in self.procs if p.role == "router"]

    async def prepare_database(self, fresh: bool = False) -> None:
        import asyncpg

        from ..platform.db import open_database
        from ..platform.migrate import migrate

        admin = await asyncpg.connect(f"{self.pg_dsn}/postgres")
        try:
            exists = await admin.fetchval(
                "SELECT 1 FROM pg_database WHERE datname = $1", self.database
            )
            if exists and fresh:
                await admin.execute(f'DROP DATABASE "{self.database}" WITH (FORCE)')
                exists = False
            if not exists:
                await admin.execute(f'CREATE DATABASE "{self.database}"')
        finally:
            await admin.close()
        db = await open_database(self.database_url)
        try:
            await migrate(db)
        finally:
            await db.close()

    async def drop_database(self) -> None:
        import asyncpg

        admin = await asyncpg.connect(f"{self.pg_dsn}/postgres")
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
        finally:
            await admin.close()

    async def clear_redis(self) -> None:
        import redis.asyncio as aioredis

        r = aioredis.from_url(self.redis_url)
        try:
            keys = [k async for k in r.scan_iter(match=self.redis_prefix + "*", count=1000)]
            if keys:
                await r.delete(*keys)
        finally:
            await r.aclose()

    async def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        from ..platform import tls

        # one certificate for every edge, made before they start
        tls.ensure_self_signed(self.data_dir / "cert.pem", self.data_dir / "key.pem", ["localhost"])
        await self.clear_redis()
        for group in (("storage",), ("presence", "router", "muc", "pubsub"), ("edge", "admin")):
            batch = [p for p in self.procs if p.role in group]
            for p in batch:
                await p.start(self.echo)
            for p in batch:
                await p.wait_ready()

    async def stop(self) -> None:
        # edges first, so they can drain through the routers
        for group in (("edge", "admin"), ("router", "presence", "muc", "pubsub"), ("storage",)):
            await asyncio.gather(*(p.stop() for p in self.procs if p.role in group))


async def _main(args: Any) -> int:
    cluster = LocalCluster(
        Path(args.data_dir).resolve(),
        database=args.database,
        redis_prefix=args.redis_prefix,
        edges=args.edges,
        routers=args.routers,
        admin=bool(args.admin_token),
        admin_tokens=f"{args.admin_token}:admin" if args.admin_token else "",
        fixed_ports=True,
        echo=args.verbose,
    )
    await cluster.prepare_database()
    await cluster.start()
    print("xmppd cluster is up (Ctrl-C stops it):")
    for p in cluster.procs:
        extra = f"  client ports {p.c2s_ports}" if p.c2s_ports else ""
        extra += f"  components :{p.component_port}" if p.component_port > 0 else ""
        extra += (
            f"  web ws://127.0.0.1:{p.http_port}/xmpp-websocket"
            f" http://127.0.0.1:{p.http_port}/http-bind"
            if p.http_port > 0
            else ""
        )
        extra += f"  metrics :{p.ops_port}" if p.ops_port > 0 else ""
        extra += f"  REST API :{p.admin_port}" if p.admin_port > 0 else ""
        print(f"  {p.name:9} pid {p.process.pid if p.process else '-'}{extra}")
    print(f"  database {cluster.database_url}")
    print(f"  redis {cluster.redis_url} prefix {cluster.redis_prefix!r}")
    print("  add a user:")
    print(f"    XMPPD_DATABASE_URL={cluster.database_url} \\")
    print("    .venv/bin/xmppctl adduser alice@localhost")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    waiters = [loop.create_task(p.process.wait()) for p in cluster.procs if p.process]
    _done, _ = await asyncio.wait(
        [loop.create_task(stop.wait()), *waiters], return_when=asyncio.FIRST_COMPLETED
    )
    if not stop.is_set():
        dead = [p.name for p in cluster.procs if p.process and p.process.returncode is not None]
        print(f"process(es) exited: {dead}; stopping the cluster", file=sys.stderr)
    await cluster.stop()
    print("cluster stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m services.app.local")
    ap.add_argument("--data-dir", default="./data-cluster")
    ap.add_argument("--database", default="xmppd_cluster")
    ap.add_argument("--redis-prefix", default="xmppd:")
    ap.add_argument("--edges", type=int, default=2)
    ap.add_argument("--routers", type=int, default=2)
    ap.add_argument("--admin-token", default="", help="also start the REST admin API (port 8080)")
    ap.add_argument("-v", "--verbose", action="store_true", help="echo every process's log")
    return asyncio.run(_main(ap.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
