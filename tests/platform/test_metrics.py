"""services.platform.metrics: the exported names, the hot-path helpers, the DB
timing wrapper, and the figures moving on a real embedded server."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from services.app.embedded import EmbeddedServer
from services.platform.db import SQL_OPS, open_database, sql_op, timed_database
from services.platform.metrics import AUTH_MECHANISMS, Metrics, ServerStats, mechanism_label
from services.router.registry import LocalRegistry

from ..conftest import PASSWORD, Client

CONTRACT = Path(__file__).parent.parent.parent / "deploy" / "metrics.txt"


def value(m: Metrics, name: str, **labels: str) -> float:
    v = m.registry.get_sample_value(name, labels)
    return 0.0 if v is None else v


def total(m: Metrics, name: str, label: str, val: str) -> float:
    """Sum of a family's samples with one label fixed (e.g. every mechanism's successes)."""
    return sum(
        s.value
        for fam in m.registry.collect()
        for s in fam.samples
        if s.name == name and s.labels.get(label) == val
    )


async def eventually(pred: Callable[[], bool], timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


# ---- the contract --------------------------------------------------------------


def read_contract() -> dict[str, tuple[str, frozenset[str]]]:
    out: dict[str, tuple[str, frozenset[str]]] = {}
    for line in CONTRACT.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        labels = frozenset(parts[2].split(",")) if len(parts) > 2 else frozenset()
        out[parts[0]] = (parts[1], labels)
    return out


class _Storage:
    async def count_accounts(self, host: str) -> int:
        return 3


def exported() -> dict[str, tuple[str, frozenset[str]]]:
    """What a full embedded registry exports: exposition name → (type, labels)."""
    m = Metrics(CollectorRegistry())
    ServerStats(m, storage=_Storage(), hosts=["localhost"], sessions=LocalRegistry())  # type: ignore[arg-type]
    # label children for the families the embedded default never touches (cluster only)
    m.grpc_call.labels("Route").observe(0.001)
    m.grpc_errors.labels("Route", "UNAVAILABLE").inc()
    m.redis_latency.labels("get").observe(0.001)
    m.sessions.labels("n1").set(0)
    m.edge_up.labels("n1").set(1)
    # and those of the group chat service, which the muc role and the embedded server touch
    m.muc_rooms.labels("conference.localhost").set(0)
    m.muc_occupants.labels("conference.localhost").set(0)
    m.muc_messages.labels("conference.localhost").inc()
    m.muc_fanout.labels("conference.localhost").inc()
    out: dict[str, tuple[str, frozenset[str]]] = {}
    for fam in m.registry.collect():
        name = fam.name + "_total" if fam.type == "counter" else fam.name
        labels = frozenset(k for s in fam.samples for k in s.labels if k != "le")
        out[name] = (fam.type, labels)
    return out


def test_exports_exactly_the_contract() -> None:
    contract = read_contract()
    got = exported()
    assert got == contract


def test_every_name_is_prefixed_or_a_default_collector() -> None:
    for name in exported():
        assert name.startswith(("xmppd_", "process_", "python_")), name


def test_separate_registries_do_not_clash() -> None:
    a, b = Metrics(CollectorRegistry()), Metrics(CollectorRegistry())
    a.in_message.inc()
    assert value(a, "xmppd_stanzas_in_total", kind="message") == 1
    assert value(b, "xmppd_stanzas_in_total", kind="message") == 0
    Metrics()  # the no-op default: a private registry, never the global one
    Metrics()


def test_exposition_is_text_format() -> None:
    text = generate_latest(Metrics(CollectorRegistry()).registry).decode()
    assert "# TYPE xmppd_stanzas_in_total counter" in text
    assert 'xmppd_connections{transport="websocket"} 0.0' in text
    assert "process_cpu_seconds_total" in text


# ---- hot-path helpers ---------------------------------------------------------------


def test_mechanism_label_is_bounded() -> None:
    assert mechanism_label("SCRAM-SHA-256") == "SCRAM-SHA-256"
    assert mechanism_label("X-EVIL-" + "A" * 100) == "other"
    assert mechanism_label("") == "other"
    m = Metrics()
    m.auth_result("whatever-the-client-sent", False)
    m.auth_result("PLAIN", True)
    assert value(m, "xmppd_auth_total", mechanism="other", outcome="failure") == 1
    assert value(m, "xmppd_auth_total", mechanism="PLAIN", outcome="success") == 1
    assert "other" in AUTH_MECHANISMS


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b'<message xmlns="jabber:client" to="a@b"><body>x</body></message>', "message"),
        (b'<presence xmlns="jabber:client"/>', "presence"),
        (b"<presence/>", "presence"),
        (b'<iq xmlns="jabber:client" type="result" id="1"/>', "iq"),
        (b'<cl:message xmlns:cl="jabber:client"><cl:body>x</cl:body></cl:message>', "message"),
        (b'<c:iq xmlns:c="jabber:client" type="get"/>', "iq"),
        (b'<message type="error" to="a@b"><error type="cancel"/></message>', "error"),
        (b'<iq type="error" id="x"/>', "error"),
        (b"<message id=\"x type='error'\"/>", "message"),
        # "error" in the body or in a child's type is not an error stanza
        (b'<message to="a@b"><body> type="error"</body></message>', "message"),
        (b'<message to="a@b" xtype="error"/>', "message"),
    ],
)
def test_stanza_out_kind(data: bytes, kind: str) -> None:
    m = Metrics()
    m.stanza_out(data)
    assert value(m, "xmppd_stanzas_out_total", kind=kind) == 1
    assert (
        sum(
            value(m, "xmppd_stanzas_out_total", kind=k)
            for k in ("message", "presence", "iq", "error")
        )
        == 1
    )


def test_stanza_out_ignores_non_stanzas() -> None:
    m = Metrics()
    m.stanza_out(b"<stream:error/>")
    m.stanza_out(b"")
    m.stanza_out(b" ")
    assert total(m, "xmppd_stanzas_out_total", "kind", "message") == 0


def test_stanza_in_kind() -> None:
    m = Metrics()
    m.stanza_in("{jabber:client}message", "chat")
    m.stanza_in("{jabber:client}presence", None)
    m.stanza_in("{jabber:client}iq", "get")
    m.stanza_in("{jabber:client}iq", "error")
    m.stanza_in("{urn:other}thing", None)
    for kind in ("message", "presence", "iq", "error"):
        assert value(m, "xmppd_stanzas_in_total", kind=kind) == 1, kind


def test_routed_observes_stamped_envelopes_only() -> None:
    m = Metrics()
    m.routed(0.0)  # made by the server itself: not stamped
    assert value(m, "xmppd_routing_latency_seconds_count") == 0
    m.routed(m.stamp() - 0.002)
    assert value(m, "xmppd_routing_latency_seconds_count") == 1
    # at least the 2 ms; the upper bound only catches nonsense (a unit error), not slowness
    assert 0.002 <= value(m, "xmppd_routing_latency_seconds_sum") < 60


def test_routed_wall_clock_nanoseconds() -> None:
    m = Metrics(wall_clock=True)
    t0 = m.stamp()
    assert t0 > 1e18  # time.time_ns()
    m.routed(t0 - 5_000_000)  # 5 ms earlier
    # at least the 5 ms; the upper bound only catches nonsense (ns read as s), not slowness
    assert 0.005 <= value(m, "xmppd_routing_latency_seconds_sum") < 60


async def test_recount_offline_yields_to_concurrent_changes() -> None:
    m = Metrics()
    await m.recount_offline(_const(7))
    assert value(m, "xmppd_offline_queue_messages") == 7

    async def racing() -> int:
        m.offline_added()  # a message stored while the count ran
        return 100

    await m.recount_offline(racing)
    assert value(m, "xmppd_offline_queue_messages") == 8
    m.offline_removed(8)
    m.offline_added(new=False)
    assert value(m, "xmppd_offline_queue_messages") == 1
    assert value(m, "xmppd_offline_messages_stored_total") == 1


def _const(n: int) -> Callable[[], Awaitable[int]]:
    async def count() -> int:
        return n

    return count


# ---- the database wrapper -----------------------------------------------------------------


def test_sql_op() -> None:
    assert sql_op("SELECT 1") == "select"
    assert sql_op("  select x FROM t") == "select"
    assert sql_op("\n INSERT INTO t VALUES ($1)") == "insert"
    assert sql_op("UPDATE t SET a = 1") == "update"
    assert sql_op("DELETE FROM t RETURNING id") == "delete"
    assert sql_op("CREATE TABLE t (a INT)") == "other"
    assert sql_op("WITH x AS (SELECT 1) SELECT * FROM x") == "other"
    assert sql_op("") == "other"
    assert set(SQL_OPS) == {"select", "insert", "update", "delete", "other"}


async def test_timed_database(tmp_path: Path) -> None:
    m = Metrics()
    db = timed_database(await open_database(f"sqlite:///{tmp_path / 't.db'}"), m.db_timers)
    try:
        assert db.dialect == "sqlite"
        await db.execute("CREATE TABLE t (k TEXT PRIMARY KEY, n INT)")
        await db.execute("INSERT INTO t VALUES ($1, $2)", "a", 1)
        async with db.transaction() as tx:
            await tx.execute("UPDATE t SET n = n + 1 WHERE k = $1", "a")
            assert await tx.fetchval("SELECT n FROM t WHERE k = $1", "a") == 2
        assert await db.fetchrow("SELECT k, n FROM t") == ("a", 2)
        assert await db.fetch("SELECT k FROM t") == [("a",)]
        assert await db.execute("DELETE FROM t") == 1
        with pytest.raises(Exception, match="no such table"):
            await db.fetch("SELECT * FROM missing")
    finally:
        await db.close()
    count = {op: value(m, "xmppd_db_latency_seconds_count", op=op) for op in SQL_OPS}
    # the failed SELECT is timed too
    assert count == {"select": 4, "insert": 1, "update": 1, "delete": 1, "other": 1}


# ---- a real server -------------------------------------------------------------------------


def met(srv: EmbeddedServer) -> Metrics:
    assert srv.metrics is not None
    return srv.metrics


async def test_servers_in_one_process_have_their_own_registry(server_factory: Any) -> None:
    a = await server_factory()
    b = await server_factory()
    assert met(a).registry is not met(b).registry
    assert a.ops_port > 0 and b.ops_port > 0 and a.ops_port != b.ops_port


async def test_figures_move_with_traffic(
    server: EmbeddedServer, connect: Callable[..., Awaitable[Client]]
) -> None:
    m = met(server)
    assert server.edge is not None and server.stats is not None
    node = server.edge.node_id
    assert value(m, "xmppd_edge_up", node=node) == 1
    assert value(m, "xmppd_registered_users", host="localhost") == 0  # counted at start
    await server.stats.refresh()  # the fixture added four users since
    assert value(m, "xmppd_registered_users", host="localhost") == 4

    alice = await connect("alice@localhost/a")
    bob = await connect("bob@localhost/b")
    carol = await connect("carol@localhost/c", direct_tls=True)
    assert value(m, "xmppd_connections", transport="tcp") == 2
    assert value(m, "xmppd_connections", transport="tls") == 1
    assert total(m, "xmppd_auth_total", "outcome", "success") == 3
    assert value(m, "xmppd_sessions", node=node) == 3
    await server.stats.refresh()
    assert value(m, "xmppd_online_users") == 3

    in0 = value(m, "xmppd_stanzas_in_total", kind="message")
    out0 = value(m, "xmppd_stanzas_out_total", kind="message")
    lat0 = value(m, "xmppd_routing_latency_seconds_count")
    for i in range(5):
        alice.send_message(mto="bob@localhost/b", mbody=f"hi {i}", mtype="chat")
        await bob.next_message()
    alice.send_message(mto="bob@localhost", mbody="to bare", mtype="chat")
    await bob.next_message()
    assert value(m, "xmppd_stanzas_in_total", kind="message") == in0 + 6
    assert value(m, "xmppd_stanzas_out_total", kind="message") == out0 + 6
    assert value(m, "xmppd_routing_latency_seconds_count") == lat0 + 6
    assert 0 < value(m, "xmppd_routing_latency_seconds_sum") < 6.0
    assert value(m, "xmppd_stanzas_in_total", kind="presence") >= 3
    assert value(m, "xmppd_stanzas_out_total", kind="presence") >= 1
    iq_in, iq_out = (value(m, f"xmppd_stanzas_{d}_total", kind="iq") for d in ("in", "out"))
    await alice.get_roster()
    assert value(m, "xmppd_stanzas_in_total", kind="iq") == iq_in + 1
    assert value(m, "xmppd_stanzas_out_total", kind="iq") == iq_out + 1

    # an error bounce: message to an account that does not exist
    err0 = value(m, "xmppd_stanzas_out_total", kind="error")
    alice.send_message(mto="nobody@localhost", mbody="?", mtype="chat")
    got = await alice.next_message()
    assert got["type"] == "error"
    assert value(m, "xmppd_stanzas_out_total", kind="error") == err0 + 1

    # offline storage: dave is not online
    alice.send_message(mto="dave@localhost", mbody="later", mtype="chat")
    await eventually(lambda: value(m, "xmppd_offline_messages_stored_total") == 1)
    assert value(m, "xmppd_offline_queue_messages") == 1
    assert value(m, "xmppd_db_latency_seconds_count", op="insert") >= 1
    assert value(m, "xmppd_db_latency_seconds_count", op="select") >= 1
    dave = await connect("dave@localhost/d")
    assert (await dave.next_message())["body"] == "later"
    await eventually(lambda: value(m, "xmppd_offline_queue_messages") == 0)
    assert value(m, "xmppd_db_latency_seconds_count", op="delete") >= 1

    # a failed login
    with pytest.raises(PermissionError):
        await connect("bob@localhost/x", "wrong-" + PASSWORD)
    assert total(m, "xmppd_auth_total", "outcome", "failure") >= 1

    for c in (alice, bob, carol, dave):
        c.disconnect()
    await eventually(
        lambda: (
            value(m, "xmppd_connections", transport="tcp") == 0
            and value(m, "xmppd_connections", transport="tls") == 0
            and value(m, "xmppd_sessions", node=node) == 0
        )
    )
    await server.stats.refresh()
    assert value(m, "xmppd_online_users") == 0


async def test_offline_queue_counted_at_start(tmp_path: Path, server_factory: Any) -> None:
    from ..conftest import add_user, make_settings

    srv = EmbeddedServer(make_settings(tmp_path))
    await srv.start()
    try:
        await add_user(srv, "zed")
        assert srv.store is not None
        for i in range(3):
            await srv.store.store_offline(
                "localhost", "zed", f"<message><body>{i}</body></message>".encode(), 0.0, f"m{i}"
            )
    finally:
        await srv.stop()
    # a server started later on the same data counts them
    again = await server_factory()
    assert value(met(again), "xmppd_offline_queue_messages") == 3
    assert value(met(again), "xmppd_offline_messages_stored_total") == 0


async def test_edge_up_drops_when_listeners_stop(server_factory: Any) -> None:
    srv = await server_factory()
    assert srv.edge is not None
    node = srv.edge.node_id
    assert value(met(srv), "xmppd_edge_up", node=node) == 1
    await srv.edge.stop()
    assert value(met(srv), "xmppd_edge_up", node=node) == 0


async def test_services_default_to_a_private_registry(tmp_path: Path) -> None:
    from services.core.feature import FeatureSet
    from services.router.service import RouterService
    from services.storage.store import Store

    from ..conftest import make_settings

    store = await Store.open(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        r1 = RouterService(make_settings(tmp_path), store, LocalRegistry(), FeatureSet([]))
        r2 = RouterService(make_settings(tmp_path), store, LocalRegistry(), FeatureSet([]))
        assert r1.metrics.registry is not r2.metrics.registry
    finally:
        await store.close()
