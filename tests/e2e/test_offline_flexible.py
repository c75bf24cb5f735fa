"""Flexible offline message retrieval (XEP-0013) with real clients, on the
embedded default and through the cluster: a client that reads the message
list is not flooded at its initial presence, views, fetches, removes and
purges by node, and nobody else may."""

from __future__ import annotations

from typing import Any

import pytest
from slixmpp.exceptions import IqError
from slixmpp.xmlstream import ET

from ..conftest import add_user, send_initial_presence, wait_until

OFF = "http://jabber.org/protocol/offline"
INFO = "http://jabber.org/protocol/disco#info"
ITEMS = "http://jabber.org/protocol/disco#items"


async def _stored(server: Any, user: str, n: int) -> None:
    async def count() -> bool:
        return await server.store.count_offline("localhost", user) == n

    await wait_until(count, what=f"{n} offline messages for {user}")


async def _iq(c: Any, typ: str, xml: str) -> Any:
    iq = c.make_iq_get() if typ == "get" else c.make_iq_set()
    iq.append(ET.fromstring(xml))
    return await iq.send(timeout=10)


def _nodes(items: Any) -> list[str]:
    return [i.get("node") for i in items.xml.iter(f"{{{ITEMS}}}item")]


async def test_headers_then_view_remove_without_a_flood(connect: Any, server: Any) -> None:
    await add_user(server, "carol")
    bob = await connect("bob@localhost/b")
    for body in ("one", "two", "three"):
        bob.send_message(mto="carol@localhost", mbody=body, mtype="chat")
    await _stored(server, "carol", 3)
    carol = await connect("carol@localhost/c", presence=False)
    info = await _iq(carol, "get", f"<query xmlns='{INFO}' node='{OFF}'/>")
    values = [v.text for v in info.xml.iter("{jabber:x:data}value")]
    assert values == [OFF, "3"]
    items = await _iq(carol, "get", f"<query xmlns='{ITEMS}' node='{OFF}'/>")
    nodes = _nodes(items)
    assert len(nodes) == 3 and nodes == sorted(nodes)
    assert {i.get("name") for i in items.xml.iter(f"{{{ITEMS}}}item")} == {"bob@localhost/b"}
    # initial presence: no flood (2.2)
    await send_initial_presence(carol)
    with pytest.raises(TimeoutError):
        await carol.next_message(1.0)
    # view one: it comes marked with its node, and stays stored
    await _iq(
        carol, "get", f"<offline xmlns='{OFF}'><item action='view' node='{nodes[1]}'/></offline>"
    )
    m = await carol.next_message()
    assert m["body"] == "two"
    assert m.xml.find(f"{{{OFF}}}offline/{{{OFF}}}item").get("node") == nodes[1]
    assert await server.store.count_offline("localhost", "carol") == 3
    # remove two, then fetch the rest
    await _iq(
        carol,
        "set",
        f"<offline xmlns='{OFF}'><item action='remove' node='{nodes[0]}'/>"
        f"<item action='remove' node='{nodes[1]}'/></offline>",
    )
    assert await server.store.count_offline("localhost", "carol") == 1
    await _iq(carol, "get", f"<offline xmlns='{OFF}'><fetch/></offline>")
    assert (await carol.next_message())["body"] == "three"
    # a node no longer stored: item-not-found
    with pytest.raises(IqError) as exc:
        await _iq(
            carol,
            "get",
            f"<offline xmlns='{OFF}'><item action='view' node='{nodes[0]}'/></offline>",
        )
    assert exc.value.condition == "item-not-found"
    await _iq(carol, "set", f"<offline xmlns='{OFF}'><purge/></offline>")
    assert await server.store.count_offline("localhost", "carol") == 0


async def test_a_second_resource_is_not_flooded_either(connect: Any, server: Any) -> None:
    await add_user(server, "dave")
    bob = await connect("bob@localhost/b")
    bob.send_message(mto="dave@localhost", mbody="kept", mtype="chat")
    await _stored(server, "dave", 1)
    reader = await connect("dave@localhost/reader", presence=False)
    await _iq(reader, "get", f"<query xmlns='{ITEMS}' node='{OFF}'/>")
    other = await connect("dave@localhost/other")  # initial presence sent
    with pytest.raises(TimeoutError):
        await other.next_message(1.0)
    assert await server.store.count_offline("localhost", "dave") == 1


async def test_without_the_list_the_flood_is_as_before(connect: Any, server: Any) -> None:
    await add_user(server, "erin")
    bob = await connect("bob@localhost/b")
    bob.send_message(mto="erin@localhost", mbody="flood", mtype="chat")
    await _stored(server, "erin", 1)
    erin = await connect("erin@localhost/e")
    assert (await erin.next_message())["body"] == "flood"


async def test_only_the_owner(connect: Any, server: Any) -> None:
    await add_user(server, "frank")
    bob = await connect("bob@localhost/b")
    for xml, typ in (
        (f"<query xmlns='{ITEMS}' node='{OFF}'/>", "get"),
        (f"<offline xmlns='{OFF}'><fetch/></offline>", "get"),
        (f"<offline xmlns='{OFF}'><purge/></offline>", "set"),
    ):
        iq = (
            bob.make_iq_get(ito="frank@localhost")
            if typ == "get"
            else bob.make_iq_set(ito="frank@localhost")
        )
        iq.append(ET.fromstring(xml))
        with pytest.raises(IqError) as exc:
            await iq.send(timeout=10)
        assert exc.value.condition == "forbidden"
    # an unknown node of an account
    with pytest.raises(IqError) as exc:
        await _iq(bob, "get", f"<query xmlns='{INFO}' node='urn:example:none'/>")
    assert exc.value.condition == "item-not-found"
