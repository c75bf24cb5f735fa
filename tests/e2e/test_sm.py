"""XEP-0198 stream management with slixmpp's xep_0198 plugin: a client whose
connection is cut while messages arrive reconnects, resumes its session on
the same edge, and gets every message exactly once.

Resumption is kept on the edge that held the session; on a cluster the
client reconnects to that same edge, which is what this test does there too
(resuming on another edge, after the first died, is not done yet).
"""

from __future__ import annotations

import asyncio
from typing import Any

from ..conftest import Client, wait_until

SM_PLUGINS = ("xep_0030", "xep_0199", "xep_0198")
PHONE = "bob@localhost/phone"


async def _bodies_until(c: Client, last: str, got: list[str]) -> None:
    while last not in got:
        m = await c.next_message(timeout=10)
        if m["body"]:
            got.append(m["body"])


async def test_resume_after_abort_gets_every_message_once(connect: Any, server: Any) -> None:
    alice = await connect("alice@localhost/a")
    bob = await connect(PHONE, plugins=SM_PLUGINS)
    sm = bob.plugin["xep_0198"]
    await wait_until(lambda: sm.sm_id is not None and sm.enabled_in, what="SM enabled")
    resumed: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
    bob.add_event_handler("session_resumed", lambda _e: resumed.done() or resumed.set_result(True))
    disconnected: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
    bob.add_event_handler(
        "disconnected", lambda _e: disconnected.done() or disconnected.set_result(True)
    )

    got: list[str] = []
    for i in range(5):
        alice.send_message(mto=PHONE, mbody=f"m{i}", mtype="chat")
    await _bodies_until(bob, "m2", got)
    # the network goes away while m3 and m4 may still be on their way
    bob.abort()
    await asyncio.wait_for(disconnected, 5)
    for i in range(5, 10):
        alice.send_message(mto=PHONE, mbody=f"m{i}", mtype="chat")
    # what the server has of alice's stanzas has been routed once it answers
    await alice.plugin["xep_0199"].ping(jid="localhost", timeout=5)

    bob.connect("127.0.0.1", server.c2s_port)
    await asyncio.wait_for(resumed, 10)
    assert sm.sm_id is not None
    await _bodies_until(bob, "m9", got)
    # nothing sent again that had arrived: a ping round trip later, still nothing more
    await bob.plugin["xep_0199"].ping(jid="localhost", timeout=5)
    while not bob.messages.empty():
        m = bob.messages.get_nowait()
        if m["body"]:
            got.append(m["body"])
    assert got == [f"m{i}" for i in range(10)]
    # the session is the one bound before: the resumed stream sends as bob/phone
    bob.send_message(mto="alice@localhost/a", mbody="back", mtype="chat")
    while True:
        m = await alice.next_message(timeout=5)
        if m["body"] == "back":
            assert str(m["from"]) == PHONE
            break
