"""A feature written once runs the same on the embedded server, through a
router and on the direct edge-to-edge path: tests/core/spam_filter, a folder
and its declaration, loaded with ``features_extra`` and nothing else."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from ..conftest import add_user
from ..core.spam_filter import GREETING

EXTRA = {"features_extra": ["tests.core.spam_filter"]}


async def test_a_filter_and_a_session_hook_from_a_loaded_feature(
    server_factory: Any, connect: Any, mode: str
) -> None:
    srv = await server_factory(**EXTRA)
    for name in ("alice", "bob"):
        await add_user(srv, name)
    # in a cluster, each on its own edge: the message goes edge to edge directly
    edge2 = SimpleNamespace(c2s_port=srv.ct.edge_port(1)) if mode == "cluster" else srv
    alice = await connect("alice@localhost/r", srv=srv)
    bob = await connect("bob@localhost/r", srv=edge2)
    for c in (alice, bob):
        greeting = await c.next_message(10)
        assert greeting["type"] == "headline" and greeting["body"] == GREETING
    alice.send_message(mto="bob@localhost/r", mbody="spam", mtype="chat")
    err = await alice.next_message(10)
    assert err["type"] == "error" and err["error"]["condition"] == "not-acceptable"
    alice.send_message(mto="bob@localhost/r", mbody="ham", mtype="chat")
    got = await bob.next_message(10)
    # the refused one never arrived: the next bob sees is the good one
    assert got["body"] == "ham"
