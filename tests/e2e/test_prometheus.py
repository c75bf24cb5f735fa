"""The real Prometheus (Debian's package) scraping a running embedded server.

Prometheus runs as a plain process on a loopback port with its own storage
folder and a generated scrape config (1 s interval) pointing at the server's
ops port; the test then asks its HTTP API whether the target is up and the
series exist and move while clients send messages. Also ``promtool check
metrics`` on what ``/metrics`` serves. Missing binaries fail the test (``make
system-deps`` installs them): they are part of what ``make test`` proves.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import shutil
import socket
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from services.app.embedded import EmbeddedServer

from ..conftest import Client

# the embedded default; the cluster processes get their own scrape test with the cluster
pytestmark = [pytest.mark.slow, pytest.mark.embedded_only]

#: the first samples take ~5-7 s to show up in the API
API_TIMEOUT = 60.0


def tool(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/bin:/usr/sbin")
    if path is None:
        pytest.fail(f"{name} is missing: install Debian's prometheus package (make system-deps)")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


async def http_get(url: str) -> tuple[int, bytes]:
    # in a thread: the server under test runs in this event loop and must keep serving
    return await asyncio.to_thread(_get, url)


class Prometheus:
    def __init__(self, base: str) -> None:
        self.base = base

    async def query(self, promql: str) -> list[dict[str, Any]]:
        status, body = await http_get(
            f"{self.base}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        )
        assert status == 200, body
        data = json.loads(body)
        assert data["status"] == "success", data
        result: list[dict[str, Any]] = data["data"]["result"]
        return result

    async def value(self, promql: str) -> float | None:
        """The single value of an instant query, None while it has no result."""
        result = await self.query(promql)
        if not result:
            return None
        assert len(result) == 1, result
        return float(result[0]["value"][1])

    async def wait_for(
        self, promql: str, pred: Callable[[float], bool], timeout: float = API_TIMEOUT
    ) -> float:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        last: float | None = None
        while True:
            last = await self.value(promql)
            if last is not None and pred(last):
                return last
            if loop.time() > deadline:
                raise AssertionError(f"{promql}: last value {last} after {timeout} s")
            await asyncio.sleep(0.5)

    async def series_names(self) -> set[str]:
        status, body = await http_get(f"{self.base}/api/v1/label/__name__/values")
        assert status == 200, body
        return set(json.loads(body)["data"])


@contextlib.asynccontextmanager
async def run_prometheus(folder: Path, targets: list[tuple[int, str]]) -> AsyncIterator[Prometheus]:
    """Debian's Prometheus on a loopback port scraping ``(port, role)`` targets every second."""
    binary = tool("prometheus")
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "prometheus.yml"
    static = "".join(
        f"      - targets: ['127.0.0.1:{port}']\n        labels:\n          role: {role}\n"
        for port, role in targets
    )
    config.write_text(
        "global:\n"
        "  scrape_interval: 1s\n"
        "  scrape_timeout: 1s\n"
        "  evaluation_interval: 1s\n"
        "scrape_configs:\n"
        "  - job_name: xmppd\n"
        "    static_configs:\n" + static
    )
    port = free_port()
    log = (folder / "prometheus.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={folder / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
        stdout=log,
        stderr=log,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while True:
            if proc.returncode is not None:
                raise AssertionError(
                    f"prometheus exited: {(folder / 'prometheus.log').read_text()[-2000:]}"
                )
            with contextlib.suppress(OSError):
                status, _ = await http_get(f"{base}/-/ready")
                if status == 200:
                    break
            if loop.time() > deadline:
                raise AssertionError("prometheus did not become ready")
            await asyncio.sleep(0.2)
        yield Prometheus(base)
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        log.close()


@pytest.fixture
async def prometheus(server: EmbeddedServer, tmp_path: Path) -> AsyncIterator[Prometheus]:
    assert server.ops_port > 0
    async with run_prometheus(tmp_path / "prometheus", [(server.ops_port, "embedded")]) as prom:
        yield prom


async def test_prometheus_scrapes_the_server(
    server: EmbeddedServer,
    prometheus: Prometheus,
    connect: Callable[..., Awaitable[Client]],
) -> None:
    alice = await connect("alice@localhost/a")
    bob = await connect("bob@localhost/b")
    carol = await connect("carol@localhost/c", direct_tls=True)
    received = 0

    async def chatter() -> None:
        nonlocal received
        i = 0
        while True:
            alice.send_message(mto="bob@localhost/b", mbody=f"m{i}", mtype="chat")
            carol.send_message(mto="bob@localhost", mbody=f"c{i}", mtype="chat")
            i += 1
            await asyncio.sleep(0.1)

    async def drain() -> None:
        nonlocal received
        while True:
            await bob.messages.get()
            received += 1

    tasks = [asyncio.create_task(chatter()), asyncio.create_task(drain())]
    try:
        await prometheus.wait_for('up{job="xmppd",role="embedded"}', lambda v: v == 1)

        # every family the embedded server feeds has series
        want = {
            "xmppd_connections",
            "xmppd_auth_total",
            "xmppd_stanzas_in_total",
            "xmppd_stanzas_out_total",
            "xmppd_routing_latency_seconds_bucket",
            "xmppd_routing_latency_seconds_count",
            "xmppd_db_latency_seconds_bucket",
            "xmppd_offline_messages_stored_total",
            "xmppd_offline_queue_messages",
            "xmppd_registered_users",
            "xmppd_online_users",
            "xmppd_sessions",
            "xmppd_edge_up",
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "python_info",
            "python_gc_collections_total",
        }
        names = await prometheus.series_names()
        assert want <= names, want - names

        # and they move while messages flow
        q_in = 'xmppd_stanzas_in_total{job="xmppd",kind="message"}'
        q_out = 'sum(xmppd_stanzas_out_total{job="xmppd",kind="message"})'
        q_lat = 'xmppd_routing_latency_seconds_count{job="xmppd"}'
        first = [await prometheus.wait_for(q, lambda v: v > 0) for q in (q_in, q_out, q_lat)]
        for q, v0 in zip((q_in, q_out, q_lat), first, strict=True):
            await prometheus.wait_for(q, lambda v, v0=v0: v > v0 + 5)
        rate = await prometheus.wait_for(
            f"rate({q_in}[5s])", lambda v: v > 1
        )  # ~20 messages a second
        assert rate < 1000

        await prometheus.wait_for('xmppd_connections{transport="tcp"}', lambda v: v == 2)
        await prometheus.wait_for('xmppd_connections{transport="tls"}', lambda v: v == 1)
        await prometheus.wait_for('sum(xmppd_auth_total{outcome="success"})', lambda v: v == 3)
        await prometheus.wait_for("xmppd_online_users", lambda v: v == 3)
        await prometheus.wait_for('xmppd_registered_users{host="localhost"}', lambda v: v == 4)
        assert server.edge is not None
        node = server.edge.node_id
        await prometheus.wait_for(f'xmppd_sessions{{node="{node}"}}', lambda v: v == 3)
        await prometheus.wait_for(f'xmppd_edge_up{{node="{node}"}}', lambda v: v == 1)
        p99 = await prometheus.wait_for(
            "histogram_quantile(0.99, rate(xmppd_routing_latency_seconds_bucket[10s]))",
            lambda v: v == v,  # not NaN
        )
        # a real quantile; how small it is is for make bench, not make test
        assert 0 < p99 < math.inf
        assert received > 0
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_promtool_check_metrics(
    server: EmbeddedServer, connect: Callable[..., Awaitable[Client]]
) -> None:
    tool("promtool")
    tool("curl")
    alice = await connect("alice@localhost/a")
    bob = await connect("bob@localhost/b")
    alice.send_message(mto="bob@localhost/b", mbody="hi", mtype="chat")
    await bob.next_message()
    proc = await asyncio.create_subprocess_shell(
        f"set -o pipefail; curl -sSf http://127.0.0.1:{server.ops_port}/metrics"
        " | promtool check metrics",
        executable="/bin/bash",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, out.decode()
