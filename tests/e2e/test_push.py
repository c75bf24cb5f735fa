"""XEP-0357 push notifications with real clients, on the embedded default and
through a cluster: the "app server" is a second slixmpp client whose full
JID is the push service JID; it receives the publish IQ and answers it.

slixmpp 1.17 has no xep_0357 plugin, so the enable IQ is built by hand.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from slixmpp.xmlstream import ET
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from ..conftest import add_user, session_count, wait_until

PUSH = "urn:xmpp:push:0"
PUBSUB = "http://jabber.org/protocol/pubsub"
OPTIONS = "http://jabber.org/protocol/pubsub#publish-options"
DATA = "jabber:x:data"
APP = "appserver@localhost/push"
SM_PLUGINS = ("xep_0030", "xep_0199", "xep_0198")


class AppServer:
    """Collects the publish IQs a client receives; answers each with a result,
    or, once ``refuse`` is set, with an error (cancel/item-not-found)."""

    def __init__(self, c: Any) -> None:
        self.c = c
        self.got: asyncio.Queue[Any] = asyncio.Queue()
        self.refuse = False
        c.register_handler(
            Callback(
                "push publish", MatchXPath(f"{{jabber:client}}iq/{{{PUBSUB}}}pubsub"), self._on
            )
        )

    def _on(self, iq: Any) -> None:
        self.got.put_nowait(iq)
        if self.refuse:
            self.c.send_raw(
                f"<iq type='error' to='{iq['from']}' id='{iq['id']}'><error type='cancel'>"
                "<item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"
            )
        else:
            iq.reply().send()

    async def next(self, timeout: float = 10.0) -> Any:
        return await asyncio.wait_for(self.got.get(), timeout)


async def enable_push(c: Any, node: str, secret: str) -> None:
    iq = c.make_iq_set()
    iq.append(
        ET.fromstring(
            f"<enable xmlns='{PUSH}' jid='{APP}' node='{node}'>"
            f"<x xmlns='{DATA}' type='submit'>"
            f"<field var='FORM_TYPE'><value>{OPTIONS}</value></field>"
            f"<field var='secret'><value>{secret}</value></field></x></enable>"
        )
    )
    await iq.send(timeout=10)


def published(iq: Any) -> tuple[str, dict[str, str], dict[str, str]]:
    """(node, summary fields, publish options) of a publish IQ."""
    publish = iq.xml.find(f"{{{PUBSUB}}}pubsub/{{{PUBSUB}}}publish")
    assert publish is not None
    note = publish.find(f"{{{PUBSUB}}}item/{{{PUSH}}}notification/{{{DATA}}}x")
    options = iq.xml.find(f"{{{PUBSUB}}}pubsub/{{{PUBSUB}}}publish-options/{{{DATA}}}x")

    def fields(x: Any) -> dict[str, str]:
        assert x is not None
        return {f.get("var"): f.findtext(f"{{{DATA}}}value") for f in x.iter(f"{{{DATA}}}field")}

    return publish.get("node"), fields(note), fields(options)


async def test_offline_message_is_pushed_and_an_error_disables(connect: Any, server: Any) -> None:
    await add_user(server, "appserver")
    app = AppServer(await connect(APP))
    bob = await connect("bob@localhost/desk")
    alice = await connect("alice@localhost/phone")
    await enable_push(alice, "node-1", "s3cret")
    alice.disconnect()
    await wait_until(lambda: _sessions(server, 2), what="alice's session gone")

    bob.send_message(mto="alice@localhost", mbody="wherefore art thou", mtype="chat")
    iq = await app.next()
    assert iq["from"] == "alice@localhost" and iq["type"] == "set"
    node, summary, options = published(iq)
    assert node == "node-1"
    assert summary == {
        "FORM_TYPE": "urn:xmpp:push:summary",
        "message-count": "1",
        "last-message-sender": "bob@localhost/desk",
    }
    assert options == {"FORM_TYPE": OPTIONS, "secret": "s3cret"}
    # offline storage kept the message all the same
    await wait_until(lambda: _offline(server, 1), what="the message stored offline")

    # the app server refuses the next one: the registration goes (XEP-0357 7.1)
    app.refuse = True
    bob.send_message(mto="alice@localhost", mbody="second", mtype="chat")
    _, summary, _ = published(await app.next())
    assert summary["message-count"] == "2"
    await wait_until(lambda: _registrations(server, 0), what="the registration removed")
    bob.send_message(mto="alice@localhost", mbody="third", mtype="chat")
    await wait_until(lambda: _offline(server, 3), what="the third stored offline")
    with pytest.raises(TimeoutError):
        await app.next(timeout=1.0)


async def test_detached_session_is_pushed(connect: Any, server: Any) -> None:
    await add_user(server, "appserver")
    app = AppServer(await connect(APP))
    bob = await connect("bob@localhost/desk")
    alice = await connect("alice@localhost/phone", plugins=SM_PLUGINS)
    sm = alice.plugin["xep_0198"]
    await wait_until(lambda: sm.sm_id is not None and sm.enabled_in, what="SM enabled")
    await enable_push(alice, "node-sm", "k")
    disconnected: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
    alice.add_event_handler(
        "disconnected", lambda _e: disconnected.done() or disconnected.set_result(True)
    )
    resumed: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
    alice.add_event_handler(
        "session_resumed", lambda _e: resumed.done() or resumed.set_result(True)
    )
    # the network goes away: the server keeps the session for resumption
    alice.abort()
    await asyncio.wait_for(disconnected, 5)

    # a message sent before the server has noticed goes to the broken stream
    # (and into the queue when it does): keep sending until one is pushed
    sent: list[str] = []
    iq = None
    for i in range(20):
        sent.append(f"m{i}")
        bob.send_message(mto="alice@localhost", mbody=f"m{i}", mtype="chat")
        try:
            iq = await app.next(timeout=0.5)
            break
        except TimeoutError:
            continue
    assert iq is not None, "no notification for the detached session"
    assert iq["from"] == "alice@localhost"
    node, summary, options = published(iq)
    assert node == "node-sm" and options["secret"] == "k"
    assert summary["last-message-sender"] == "bob@localhost/desk"
    assert "last-message-body" not in summary
    # the session still holds them: none went to offline storage
    assert await server.store.count_offline("localhost", "alice") == 0

    # and the client, back, resumes and gets every one
    alice.connect("127.0.0.1", server.c2s_port)
    await asyncio.wait_for(resumed, 10)
    got: list[str] = []
    while sent[-1] not in got:
        m = await alice.next_message(timeout=10)
        if m["body"]:
            got.append(m["body"])
    assert got == sent


async def _sessions(server: Any, n: int) -> bool:
    return bool(await session_count(server) == n)


async def _offline(server: Any, n: int) -> bool:
    return bool(await server.store.count_offline("localhost", "alice") == n)


async def _registrations(server: Any, n: int) -> bool:
    return len(await server.store.get_push_registrations("localhost", "alice")) == n
