"""Publish-subscribe nodes in the REST admin API (and xmppctl): against a real
embedded server with slixmpp clients making the nodes and seeing the effects,
and once through a real cluster's admin process (the pubsub role over gRPC)."""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import pytest_asyncio
from slixmpp.exceptions import IqError
from slixmpp.xmlstream import ET

from services.admin import commands as cmd
from services.admin.commands import AdminContext, CommandError
from services.app.local import LocalCluster
from services.cluster import codec
from services.core.pubsub import NodeSummary
from services.xmpp.jid import JID

from ..cluster.conftest import login, running_cluster, users
from .conftest import READ, WRITE, bearer, error_code

__all__ = ["login", "users"]  # the cluster fixtures, for the cluster test

SERVICE = "pubsub.localhost"
PLUGINS = ("xep_0030", "xep_0199", "xep_0004", "xep_0059", "xep_0060")
PUBSUB = "http://jabber.org/protocol/pubsub"
EVENT = PUBSUB + "#event"
NICK = "http://jabber.org/protocol/nick"


def _entry(text: str) -> Any:
    el = ET.Element("{http://www.w3.org/2005/Atom}entry")
    ET.SubElement(el, "{http://www.w3.org/2005/Atom}title").text = text
    return el


def _nick(text: str) -> Any:
    el = ET.Element(f"{{{NICK}}}nick")
    el.text = text
    return el


async def _event(c: Any, node: str, kind: str, timeout: float = 5.0) -> Any:
    """The next pubsub event of ``node`` with a ``kind`` child (items, purge, delete)."""
    while True:
        m = await c.next_message(timeout)
        ev = m.xml.find(f"{{{EVENT}}}event/{{{EVENT}}}{kind}")
        if ev is not None and ev.get("node") == node:
            return m


async def _item_ids(c: Any, service: str, node: str) -> list[str]:
    got = await c.plugin["xep_0060"].get_items(service, node, timeout=5)
    return [i.get("id") for i in got.xml.iter(f"{{{PUBSUB}}}item")]


async def _gone(c: Any, service: str, node: str) -> None:
    with pytest.raises(IqError) as exc:
        await c.plugin["xep_0060"].get_items(service, node, timeout=5)
    assert exc.value.condition == "item-not-found"


@pytest.fixture
def node() -> str:
    return f"news-{secrets.token_hex(4)}"


async def _news(connect: Any, node: str) -> tuple[Any, Any]:
    """alice's node on the pubsub domain with two items; bob subscribed to it."""
    alice = await connect("alice@localhost/a", plugins=PLUGINS)
    bob = await connect("bob@localhost/b", plugins=PLUGINS)
    ps_a = alice.plugin["xep_0060"]
    await ps_a.create_node(SERVICE, node, timeout=5)
    await bob.plugin["xep_0060"].subscribe(SERVICE, node, timeout=5)
    for n in ("one", "two"):
        await ps_a.publish(SERVICE, node, id=n, payload=_entry(n), timeout=5)
        await _event(bob, node, "items")
    return alice, bob


async def test_list_purge_and_delete_on_a_pubsub_domain(
    api: httpx.AsyncClient, connect: Any, node: str
) -> None:
    empty = await api.get(f"/pubsub/{SERVICE}/nodes")
    assert empty.status_code == 200, empty.text
    assert empty.json() == {"service": SERVICE, "nodes": [], "total": 0, "limit": 100, "offset": 0}
    alice, bob = await _news(connect, node)

    r = await api.get(f"/pubsub/{SERVICE}/nodes")
    assert r.status_code == 200, r.text
    listed = r.json()
    assert listed["total"] == 1 and listed["service"] == SERVICE
    assert listed["nodes"] == [
        {
            "service": SERVICE,
            "node": node,
            "title": "",
            "node_type": "leaf",
            "access_model": "open",
            "items": 2,
            "subscriptions": 1,
            "owners": ["alice@localhost"],
        }
    ]

    # purge: the items go, the subscriber hears one <purge/>
    r = await api.post(f"/pubsub/{SERVICE}/nodes/{node}/purge")
    assert r.status_code == 200, r.text
    assert r.json() == {"service": SERVICE, "node": node, "purged": True}
    await _event(bob, node, "purge")
    assert await _item_ids(bob, SERVICE, node) == []
    assert (await api.get(f"/pubsub/{SERVICE}/nodes")).json()["nodes"][0]["items"] == 0

    # delete: the subscriber hears <delete/>, the node is no more
    r = await api.delete(f"/pubsub/{SERVICE}/nodes/{node}")
    assert r.status_code == 200, r.text
    assert r.json() == {"service": SERVICE, "node": node, "deleted": True}
    await _event(bob, node, "delete")
    await _gone(bob, SERVICE, node)
    await _gone(alice, SERVICE, node)
    assert (await api.get(f"/pubsub/{SERVICE}/nodes")).json()["total"] == 0
    again = await api.delete(f"/pubsub/{SERVICE}/nodes/{node}")
    assert again.status_code == 404 and error_code(again) == "not-found"
    again = await api.post(f"/pubsub/{SERVICE}/nodes/{node}/purge")
    assert again.status_code == 404 and error_code(again) == "not-found"


async def test_pages(api: httpx.AsyncClient, connect: Any) -> None:
    alice = await connect("alice@localhost/a", plugins=PLUGINS)
    names = [f"n{i}-{secrets.token_hex(2)}" for i in range(5)]
    for name in names:
        await alice.plugin["xep_0060"].create_node(SERVICE, name, timeout=5)
    r = await api.get(f"/pubsub/{SERVICE}/nodes", params={"limit": 2, "offset": 1})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["total"] == 5 and body["limit"] == 2 and body["offset"] == 1
    assert [n["node"] for n in body["nodes"]] == sorted(names)[1:3]


async def test_pep_nodes_of_an_account(api: httpx.AsyncClient, connect: Any) -> None:
    alice = await connect("alice@localhost/a", plugins=PLUGINS)
    me = "alice@localhost"
    assert (await api.get(f"/pubsub/{me}/nodes")).json()["total"] == 0
    await alice.plugin["xep_0060"].publish(me, NICK, id="current", payload=_nick("Al"), timeout=5)

    r = await api.get(f"/pubsub/{me}/nodes")
    assert r.status_code == 200, r.text
    (row,) = r.json()["nodes"]
    assert row["service"] == me and row["node"] == NICK
    assert row["items"] == 1 and row["access_model"] == "presence"
    # another account's PEP service is its own
    assert (await api.get("/pubsub/bob@localhost/nodes")).json()["total"] == 0

    # the node's name holds slashes: percent-encoded, or as they are
    r = await api.post(f"/pubsub/{me}/nodes/{quote(NICK, safe='')}/purge")
    assert r.status_code == 200, r.text
    assert r.json() == {"service": me, "node": NICK, "purged": True}
    assert await _item_ids(alice, me, NICK) == []
    r = await api.delete(f"/pubsub/{me}/nodes/{NICK}")
    assert r.status_code == 200, r.text
    assert r.json() == {"service": me, "node": NICK, "deleted": True}
    await _gone(alice, me, NICK)
    assert (await api.get(f"/pubsub/{me}/nodes")).json()["total"] == 0


async def test_purging_a_collection_is_refused(api: httpx.AsyncClient, connect: Any) -> None:
    alice = await connect("alice@localhost/a", plugins=PLUGINS)
    col = f"all-{secrets.token_hex(4)}"
    form = alice.plugin["xep_0004"].make_form(ftype="submit")
    form.add_field(var="FORM_TYPE", ftype="hidden", value=f"{PUBSUB}#node_config")
    form.add_field(var="pubsub#node_type", value="collection")
    await alice.plugin["xep_0060"].create_node(SERVICE, col, config=form, timeout=5)
    (row,) = (await api.get(f"/pubsub/{SERVICE}/nodes")).json()["nodes"]
    assert row["node_type"] == "collection"
    r = await api.post(f"/pubsub/{SERVICE}/nodes/{col}/purge")
    assert r.status_code == 422 and error_code(r) == "bad-request", r.text
    assert (await api.delete(f"/pubsub/{SERVICE}/nodes/{col}")).status_code == 200


async def test_errors(api: httpx.AsyncClient) -> None:
    cases = [
        # not a pubsub service here: 404
        (await api.get("/pubsub/elsewhere.example/nodes"), 404, "not-found"),
        (await api.get("/pubsub/localhost/nodes"), 404, "not-found"),
        (await api.get("/pubsub/conference.localhost/nodes"), 404, "not-found"),
        (await api.get("/pubsub/nobody@localhost/nodes"), 404, "not-found"),
        (await api.get("/pubsub/alice@elsewhere.example/nodes"), 404, "not-found"),
        (await api.delete("/pubsub/nobody@localhost/nodes/x"), 404, "not-found"),
        (await api.post("/pubsub/elsewhere.example/nodes/x/purge"), 404, "not-found"),
        # no such node: 404
        (await api.delete(f"/pubsub/{SERVICE}/nodes/nothing"), 404, "not-found"),
        (await api.post(f"/pubsub/{SERVICE}/nodes/nothing/purge"), 404, "not-found"),
        (await api.delete("/pubsub/alice@localhost/nodes/nothing"), 404, "not-found"),
        # a service with a resource is no path here
        (await api.get("/pubsub/alice@localhost%2Fr/nodes"), 404, "not-found"),
        # a malformed JID: 422
        (await api.get("/pubsub/a b@localhost/nodes"), 422, "bad-jid"),
        (await api.get("/pubsub/@localhost/nodes"), 422, "bad-jid"),
        (await api.delete("/pubsub/@localhost/nodes/x"), 422, "bad-jid"),
        (await api.post("/pubsub/a b@localhost/nodes/x/purge"), 422, "bad-jid"),
        # a node name XML cannot carry, or none
        (await api.delete(f"/pubsub/{SERVICE}/nodes/a%01b"), 422, "bad-text"),
        (await api.delete(f"/pubsub/{SERVICE}/nodes/"), 422, "invalid-request"),
        (await api.get(f"/pubsub/{SERVICE}/nodes", params={"limit": 0}), 422, "invalid-request"),
        (await api.post(f"/pubsub/{SERVICE}/nodes/x"), 405, "method-not-allowed"),
    ]
    for r, status, code in cases:
        assert (r.status_code, error_code(r)) == (status, code), (r.request.url, r.text)
    # .../nodes/{node}/purge is the purge operation's path, not a node ending in /purge
    r = await api.delete(f"/pubsub/{SERVICE}/nodes/x/purge")
    assert r.status_code == 405 and r.headers["allow"] == "POST", r.text
    r = await api.options(f"/pubsub/{SERVICE}/nodes/x/purge")
    assert r.status_code == 405 and r.headers["allow"] == "POST", r.text


async def test_scopes(anon: httpx.AsyncClient) -> None:
    listed = await anon.get(f"/pubsub/{SERVICE}/nodes", headers=bearer(READ))
    assert listed.status_code == 200, listed.text
    for method, path in (
        ("DELETE", f"/pubsub/{SERVICE}/nodes/x"),
        ("POST", f"/pubsub/{SERVICE}/nodes/x/purge"),
    ):
        r = await anon.request(method, path, headers=bearer(READ))
        assert r.status_code == 403 and error_code(r) == "forbidden", r.text
        r = await anon.request(method, path, headers=bearer(WRITE))
        assert r.status_code == 404 and error_code(r) == "not-found", r.text
        r = await anon.request(method, path)
        assert r.status_code == 401 and error_code(r) == "unauthorized", r.text
    r = await anon.get(f"/pubsub/{SERVICE}/nodes")
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")


async def test_xmppctl_nodes(server: Any, connect: Any, node: str) -> None:
    env = {"XMPPD_DATA_DIR": server.settings.data_dir, "PATH": "/usr/bin:/bin"}

    def ctl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "services.app.cli", *args],
            env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    alice, bob = await _news(connect, node)
    listed = await asyncio.to_thread(ctl, "nodes", SERVICE)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout == f"{node}\t\tleaf\titems=2\tsubscriptions=1\n"
    purged = await asyncio.to_thread(ctl, "node-purge", SERVICE, node)
    assert purged.returncode == 0 and purged.stdout == f"purged: {node} on {SERVICE}\n"
    await _event(bob, node, "purge")
    assert await _item_ids(bob, SERVICE, node) == []
    deleted = await asyncio.to_thread(ctl, "node-delete", SERVICE, node)
    assert deleted.returncode == 0 and deleted.stdout == f"deleted: {node} on {SERVICE}\n"
    await _event(bob, node, "delete")
    await _gone(bob, SERVICE, node)
    missing = await asyncio.to_thread(ctl, "node-delete", SERVICE, node)
    assert missing.returncode == 1 and "no node" in missing.stderr
    nobody = await asyncio.to_thread(ctl, "nodes", "nobody@localhost")
    assert nobody.returncode == 1 and "does not exist" in nobody.stderr

    await alice.plugin["xep_0060"].publish("alice@localhost", NICK, payload=_nick("Al"), timeout=5)
    pep = await asyncio.to_thread(ctl, "--json", "nodes", "alice@localhost")
    assert pep.returncode == 0, pep.stderr
    assert '"node": "http://jabber.org/protocol/nick"' in pep.stdout


# ---- the command layer alone --------------------------------------------------------


async def test_without_a_pubsub_service_is_not_running() -> None:
    storage: Any = None  # never reached: the service is checked first
    ctx = AdminContext(storage=storage, hosts=["localhost"], pubsub_domains=[SERVICE])
    for call in (
        cmd.list_nodes(ctx, SERVICE),
        cmd.delete_node(ctx, SERVICE, "x"),
        cmd.purge_node(ctx, SERVICE, "x"),
    ):
        with pytest.raises(CommandError) as exc:
            await call
        assert exc.value.code == "not-running"
    with pytest.raises(CommandError) as exc:
        cmd.parse_service(ctx, "alice@localhost/phone")
    assert exc.value.code == "bad-jid"


def test_node_summary_crosses_the_codec() -> None:
    summary = NodeSummary(
        service=JID.parse(SERVICE), node="news", title="News", items=3, owners=("a@localhost",)
    )
    back = codec.loads(codec.dumps([summary]))[0]
    assert isinstance(back, NodeSummary)
    assert cmd._node_row(back) == cmd._node_row(summary)


# ---- through a cluster: the admin role, the pubsub role over gRPC ---------------------

TOKEN = "cluster-nodes-token"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LocalCluster]:
    async with running_cluster(
        Path(tmp_path_factory.mktemp("nodes")), admin=True, admin_tokens=f"{TOKEN}:admin"
    ) as c:
        yield c


@pytest.mark.slow  # as tests/cluster's CLUSTER_MARKS
@pytest.mark.asyncio(loop_scope="module")
async def test_nodes_through_the_cluster(cluster: LocalCluster, users: Any, login: Any) -> None:
    a, b = await users("alice", "bob")
    alice = await login(a, plugins=PLUGINS)
    bob = await login(b, edge=1, plugins=PLUGINS)
    node = f"news-{secrets.token_hex(4)}"
    await alice.plugin["xep_0060"].create_node(SERVICE, node, timeout=15)
    await bob.plugin["xep_0060"].subscribe(SERVICE, node, timeout=15)
    await alice.plugin["xep_0060"].publish(SERVICE, node, id="x", payload=_entry("x"), timeout=15)
    await _event(bob, node, "items", timeout=15)
    await alice.plugin["xep_0060"].publish(a, NICK, payload=_nick("Al"), timeout=15)

    base = f"http://127.0.0.1:{cluster.proc('admin').admin_port}/api/v1"
    async with httpx.AsyncClient(base_url=base, headers=bearer(TOKEN), timeout=15) as http:
        r = await http.get(f"/pubsub/{SERVICE}/nodes")
        assert r.status_code == 200, r.text
        (row,) = [n for n in r.json()["nodes"] if n["node"] == node]
        assert row["items"] == 1 and row["subscriptions"] == 1 and row["owners"] == [a]
        r = await http.get(f"/pubsub/{a}/nodes")
        assert r.status_code == 200 and [n["node"] for n in r.json()["nodes"]] == [NICK], r.text
        assert (await http.get(f"/pubsub/{b}/nodes")).json()["total"] == 0
        assert (await http.get("/pubsub/nobody@localhost/nodes")).status_code == 404

        r = await http.post(f"/pubsub/{SERVICE}/nodes/{node}/purge")
        assert r.status_code == 200, r.text
        await _event(bob, node, "purge", timeout=15)
        assert await _item_ids(bob, SERVICE, node) == []
        r = await http.delete(f"/pubsub/{SERVICE}/nodes/{node}")
        assert r.status_code == 200, r.text
        await _event(bob, node, "delete", timeout=15)
        await _gone(bob, SERVICE, node)
        assert (await http.delete(f"/pubsub/{SERVICE}/nodes/{node}")).status_code == 404
        r = await http.delete(f"/pubsub/{a}/nodes/{quote(NICK, safe='')}")
        assert r.status_code == 200, r.text
        await _gone(alice, a, NICK)
