"""XEP-0352 client state indication with slixmpp's xep_0352 plugin, on the
embedded server and on a cluster (whose edge holds the client session the
same way).

Bob has a phone (it goes inactive) and a desktop (it stays active and shows
what was sent and when it has arrived): what the phone is spared shows in
what it gets, and when, compared with the desktop.
"""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from typing import Any

from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from ..conftest import Client, wait_until

CHATSTATES = "http://jabber.org/protocol/chatstates"
CSI_PLUGINS = ("xep_0030", "xep_0199", "xep_0352")
PHONE = "bob@localhost/phone"


async def _subscribe_both(alice: Client, bob: Client) -> None:
    for c in (alice, bob):
        c.roster.auto_authorize = True
        c.roster.auto_subscribe = True
    await alice.get_roster()
    await bob.get_roster()
    alice.send_presence_subscription(pto="bob@localhost", ptype="subscribe")
    await wait_until(
        lambda: (
            alice.client_roster["bob@localhost"]["subscription"]
            == bob.client_roster["alice@localhost"]["subscription"]
            == "both"
        ),
        what="mutual subscription",
    )


def _record(c: Client) -> list[ET.Element]:
    """Every message and presence ``c`` gets from now on, in arrival order."""
    log: list[ET.Element] = []
    for kind in ("message", "presence"):
        c.register_handler(
            Callback(
                f"csi log {kind}",
                MatchXPath(f"{{jabber:client}}{kind}"),
                lambda s: log.append(s.xml),
            )
        )
    return log


def _from_alice(log: list[ET.Element]) -> list[ET.Element]:
    return [x for x in log if x.get("from", "").startswith("alice@localhost/")]


def _chat_state(alice: Client, to: str, state: str) -> None:
    m = alice.make_message(mto=to, mtype="chat")
    m.xml.append(ET.Element(f"{{{CHATSTATES}}}{state}"))
    m.send()


async def _setup(connect: Any) -> tuple[Client, Client, Client]:
    alice = await connect("alice@localhost/a")
    phone = await connect(PHONE, plugins=CSI_PLUGINS)
    desk = await connect("bob@localhost/desk")
    # the server advertised CSI after authentication: the plugin enabled it
    assert phone.plugin["xep_0352"].enabled
    await _subscribe_both(alice, phone)
    # what the subscription set off (presence the clients send on their
    # own) is over once a marker presence, sent after it, has arrived
    alice.send_presence(pstatus="ready")
    for c in (phone, desk):
        await c.next_presence(
            timeout=10, pred=lambda p: p["from"] == alice.boundjid and p["status"] == "ready"
        )
    return alice, phone, desk


async def _go_inactive(phone: Client) -> None:
    phone.plugin["xep_0352"].send_inactive()
    # the server handles a stream's input in order: once this ping is
    # answered, <inactive/> has been taken
    await phone.plugin["xep_0199"].ping("localhost", timeout=10)


async def test_inactive_phone_gets_only_the_latest_before_a_message(connect: Any) -> None:
    alice, phone, desk = await _setup(connect)
    await _go_inactive(phone)
    log, desk_log = _record(phone), _record(desk)
    for status in ("one", "two", "three"):
        alice.send_presence(pstatus=status)
    for state in ("composing", "paused"):
        for to in (PHONE, "bob@localhost/desk"):
            _chat_state(alice, to, state)
    # the desktop got it all (and the phone's copies were sent before)
    await wait_until(
        lambda: any(x.find(f"{{{CHATSTATES}}}paused") is not None for x in desk_log),
        what="the desktop got alice's last chat state",
    )
    assert [x.findtext("{jabber:client}status") for x in _from_alice(desk_log)] == [
        "one",
        "two",
        "three",
        None,
        None,
    ]
    await asyncio.sleep(0.3)  # anything on its way to the phone would be there now
    assert _from_alice(log) == []
    alice.send_message(mto=PHONE, mbody="are you there?", mtype="chat")
    await wait_until(lambda: any(x.findtext("{jabber:client}body") for x in log), what="body")
    got = _from_alice(log)
    assert [x.tag for x in got] == [
        "{jabber:client}presence",
        "{jabber:client}message",
        "{jabber:client}message",
    ]
    assert got[0].findtext("{jabber:client}status") == "three"
    assert got[1].find(f"{{{CHATSTATES}}}paused") is not None
    assert got[2].findtext("{jabber:client}body") == "are you there?"


async def test_active_flushes_and_ends_holding(connect: Any) -> None:
    alice, phone, desk = await _setup(connect)
    await _go_inactive(phone)
    log, desk_log = _record(phone), _record(desk)
    alice.send_presence(pstatus="away 1", pshow="away")
    alice.send_presence(pstatus="away 2", pshow="away")
    await wait_until(
        lambda: any(x.findtext("{jabber:client}status") == "away 2" for x in desk_log),
        what="the desktop got alice's presence",
    )
    await asyncio.sleep(0.3)
    assert _from_alice(log) == []
    phone.plugin["xep_0352"].send_active()
    await wait_until(lambda: _from_alice(log), what="the held presence")
    # XEP-0352 5.1: what <active/> releases comes before the answer to
    # what the client sent after it
    await phone.plugin["xep_0199"].ping("localhost", timeout=10)
    assert [x.findtext("{jabber:client}status") for x in _from_alice(log)] == ["away 2"]
    # active again: presence comes at once
    alice.send_presence(pstatus="back")
    await wait_until(
        lambda: (
            [x.findtext("{jabber:client}status") for x in _from_alice(log)] == ["away 2", "back"]
        ),
        what="presence while active",
    )
