"""Publish-subscribe over two pubsub replicas: kill -9 of the replica that
is handling a node's publishes loses nothing it acknowledged. Nodes live in
PostgreSQL and a replica keeps nothing between requests, so the other
replica serves the node at once; a publish the killed replica was handling
gets an error or no answer, never a false success."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from slixmpp.exceptions import IqError, IqTimeout
from slixmpp.xmlstream import ET
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from services.app.local import LocalCluster
from services.cluster.redis_muc import rendezvous
from services.core.pubsub import node_key
from services.xmpp.jid import JID

from .conftest import CLUSTER_MARKS, running_cluster

pytestmark = CLUSTER_MARKS

SERVICE = "pubsub.localhost"
PLUGINS = ("xep_0030", "xep_0004", "xep_0060")
PUBSUB = "http://jabber.org/protocol/pubsub"
EVENT = PUBSUB + "#event"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LocalCluster]:
    async with running_cluster(Path(tmp_path_factory.mktemp("pubsub")), pubsubs=2) as c:
        yield c


async def test_kill_the_replica_handling_a_node(
    cluster: LocalCluster, users: Any, login: Any
) -> None:
    a, b = await users("pub", "sub")
    publisher = await login(a, edge=0, plugins=PLUGINS)
    subscriber = await login(b, edge=1, plugins=PLUGINS)
    node = f"feed-{a.split('@')[0]}"
    form = publisher.plugin["xep_0004"].make_form(ftype="submit")
    form.add_field(var="FORM_TYPE", ftype="hidden", value=f"{PUBSUB}#node_config")
    form.add_field(var="pubsub#max_items", value="max")
    await publisher.plugin["xep_0060"].create_node(SERVICE, node, config=form, timeout=5)
    await subscriber.plugin["xep_0060"].subscribe(SERVICE, node, timeout=5)
    heard: set[str] = set()

    def on_message(m: Any) -> None:
        for item in m.xml.iterfind(f"{{{EVENT}}}event/{{{EVENT}}}items/{{{EVENT}}}item"):
            heard.add(item.get("id"))

    # every <message/>: slixmpp's pubsub plugin raises its own events for these
    subscriber.register_handler(
        Callback("notifications", MatchXPath("{jabber:client}message"), on_message)
    )
    # the replica the node's requests go to first (rendezvous over both)
    first = rendezvous(node_key(JID.parse(SERVICE), node), ["pubsub1", "pubsub2"])[0]
    acked: list[str] = []
    failed: list[str] = []
    stop = asyncio.Event()

    async def publish() -> None:
        n = 0
        while not stop.is_set():
            item = f"i{n}"
            n += 1
            payload = ET.Element("{urn:test}n")
            payload.text = item
            try:
                await publisher.plugin["xep_0060"].publish(
                    SERVICE, node, id=item, payload=payload, timeout=5
                )
                acked.append(item)
            except (IqError, IqTimeout):
                failed.append(item)

    task = asyncio.create_task(publish())
    await asyncio.sleep(1.5)
    before = len(acked)
    assert before >= 5, f"only {before} publishes answered before the kill"
    killed_at = time.monotonic()
    cluster.proc(first).kill()
    # publishing goes on through the other replica
    resumed = asyncio.Event()
    while len(acked) < before + 10 and time.monotonic() - killed_at < 30:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(resumed.wait(), 0.1)
    back = time.monotonic() - killed_at
    stop.set()
    await task
    assert len(acked) >= before + 10, f"publishing did not resume: {len(acked)} after {before}"
    # every acknowledged item is stored and was notified
    got = await subscriber.plugin["xep_0060"].get_items(SERVICE, node, timeout=10)
    stored = {i.get("id") for i in got.xml.iter(f"{{{PUBSUB}}}item")}
    lost = [i for i in acked if i not in stored]
    for _ in range(50):
        if set(acked) <= heard:
            break
        await asyncio.sleep(0.1)
    unheard = [i for i in acked if i not in heard]
    print(
        f"\npubsub failover: {len(acked)} publishes acknowledged ({before} before kill -9 of "
        f"{first}), {len(failed)} refused or unanswered, lost {len(lost)}, not notified "
        f"{len(unheard)}; publishing answered again {back:.2f} s after the kill"
    )
    assert not lost, lost[:5]
    assert not unheard, unheard[:5]
    await cluster.proc(first).start(echo=False)
    await cluster.proc(first).wait_ready()
