"""The pubsub service of a domain (``pubsub.localhost``, XEP-0060) with
slixmpp clients, on the embedded default and through the cluster: node life
cycle, subscriptions and notifications, and the refusals of XEP-0060's
affiliation table."""

from __future__ import annotations

import secrets
from typing import Any

import pytest
from slixmpp.exceptions import IqError
from slixmpp.xmlstream import ET

SERVICE = "pubsub.localhost"
PLUGINS = ("xep_0030", "xep_0199", "xep_0004", "xep_0059", "xep_0060")
PUBSUB = "http://jabber.org/protocol/pubsub"
EVENT = PUBSUB + "#event"
ERRORS = PUBSUB + "#errors"


def _entry(text: str) -> Any:
    el = ET.Element("{http://www.w3.org/2005/Atom}entry")
    ET.SubElement(el, "{http://www.w3.org/2005/Atom}title").text = text
    return el


async def _event(c: Any, node: str, kind: str = "items", timeout: float = 5.0) -> Any:
    while True:
        m = await c.next_message(timeout)
        ev = m.xml.find(f"{{{EVENT}}}event/{{{EVENT}}}{kind}")
        if ev is not None and ev.get("node") == node:
            return m


def _app(exc: IqError) -> set[str]:
    err = exc.iq.xml.find("{jabber:client}error")
    return {c.tag.rpartition("}")[2] for c in err if c.tag.startswith(f"{{{ERRORS}}}")}


@pytest.fixture
def node() -> str:
    return f"news-{secrets.token_hex(4)}"


async def test_node_life_cycle(connect: Any, node: str) -> None:
    alice = await connect("alice@localhost/a", plugins=PLUGINS)
    bob = await connect("bob@localhost/b", plugins=PLUGINS)
    ps_a, ps_b = alice.plugin["xep_0060"], bob.plugin["xep_0060"]
    await ps_a.create_node(SERVICE, node, timeout=5)
    # the node is listed on the service and has the leaf identity
    items = await alice.plugin["xep_0030"].get_items(jid=SERVICE, timeout=5)
    assert node in {i[1] for i in items["disco_items"]["items"]}
    info = await bob.plugin["xep_0030"].get_info(jid=SERVICE, node=node, timeout=5)
    assert ("pubsub", "leaf") in {(i[0], i[1]) for i in info["disco_info"]["identities"]}
    # bob subscribes; alice publishes twice: bob is notified of both, payloads included
    sub = await ps_b.subscribe(SERVICE, node, timeout=5)
    assert sub.xml.find(f".//{{{PUBSUB}}}subscription").get("subscription") == "subscribed"
    await ps_a.publish(SERVICE, node, id="first", payload=_entry("one"), timeout=5)
    m = await _event(bob, node)
    assert m.xml.find(f".//{{{EVENT}}}item").get("id") == "first"
    assert m.xml.findtext(".//{http://www.w3.org/2005/Atom}title") == "one"
    await ps_a.publish(SERVICE, node, id="second", payload=_entry("two"), timeout=5)
    await _event(bob, node)
    got = await ps_b.get_items(SERVICE, node, timeout=5)
    assert [i.get("id") for i in got.xml.iter(f"{{{PUBSUB}}}item")] == ["second", "first"]
    # retract with notify
    await ps_a.retract(SERVICE, node, "first", notify=True, timeout=5)
    m = await _event(bob, node)
    assert m.xml.find(f".//{{{EVENT}}}retract").get("id") == "first"
    # purge, then delete: the subscriber hears both
    await ps_a.purge(SERVICE, node, timeout=5)
    await _event(bob, node, "purge")
    got = await ps_b.get_items(SERVICE, node, timeout=5)
    assert list(got.xml.iter(f"{{{PUBSUB}}}item")) == []
    await ps_a.delete_node(SERVICE, node, timeout=5)
    await _event(bob, node, "delete")
    with pytest.raises(IqError) as exc:
        await ps_b.get_items(SERVICE, node, timeout=5)
    assert exc.value.condition == "item-not-found"


async def test_refusals(connect: Any, node: str) -> None:
    alice = await connect("alice@localhost/a", plugins=PLUGINS)
    bob = await connect("bob@localhost/b", plugins=PLUGINS)
    carol = await connect("carol@localhost/c", plugins=PLUGINS)
    ps_a, ps_b, ps_c = (c.plugin["xep_0060"] for c in (alice, bob, carol))
    await ps_a.create_node(SERVICE, node, timeout=5)
    with pytest.raises(IqError) as exc:
        await ps_b.create_node(SERVICE, node, timeout=5)
    assert exc.value.condition == "conflict"
    # a publisher may publish but not delete the node
    await ps_a.modify_affiliations(SERVICE, node, [("bob@localhost", "publisher")], timeout=5)
    await ps_b.publish(SERVICE, node, payload=_entry("from bob"), timeout=5)
    with pytest.raises(IqError) as exc:
        await ps_b.delete_node(SERVICE, node, timeout=5)
    assert exc.value.condition == "forbidden"
    # someone with no affiliation may not publish (publish_model publishers)
    with pytest.raises(IqError) as exc:
        await ps_c.publish(SERVICE, node, payload=_entry("from carol"), timeout=5)
    assert exc.value.condition == "forbidden"
    # an outcast cannot subscribe
    await ps_a.modify_affiliations(SERVICE, node, [("carol@localhost", "outcast")], timeout=5)
    with pytest.raises(IqError) as exc:
        await ps_c.subscribe(SERVICE, node, timeout=5)
    assert exc.value.condition == "forbidden"
    # a subscription for someone else's JID
    with pytest.raises(IqError) as exc:
        await ps_b.subscribe(SERVICE, node, subscribee="dave@localhost", timeout=5)
    assert exc.value.condition == "bad-request" and "invalid-jid" in _app(exc.value)
    # a missing node
    with pytest.raises(IqError) as exc:
        await ps_b.get_items(SERVICE, node + "-nope", timeout=5)
    assert exc.value.condition == "item-not-found"


async def test_whitelist_node_refuses_a_stranger(connect: Any, node: str) -> None:
    alice = await connect("alice@localhost/a", plugins=PLUGINS)
    bob = await connect("bob@localhost/b", plugins=PLUGINS)
    form = alice.plugin["xep_0004"].make_form(ftype="submit")
    form.add_field(var="FORM_TYPE", ftype="hidden", value=f"{PUBSUB}#node_config")
    form.add_field(var="pubsub#access_model", value="whitelist")
    await alice.plugin["xep_0060"].create_node(SERVICE, node, config=form, timeout=5)
    with pytest.raises(IqError) as exc:
        await bob.plugin["xep_0060"].subscribe(SERVICE, node, timeout=5)
    assert exc.value.condition == "not-allowed" and "closed-node" in _app(exc.value)
    await alice.plugin["xep_0060"].modify_affiliations(
        SERVICE, node, [("bob@localhost", "member")], timeout=5
    )
    await bob.plugin["xep_0060"].subscribe(SERVICE, node, timeout=5)


async def test_collection_passes_on_its_leaves_notifications(connect: Any, node: str) -> None:
    alice = await connect("alice@localhost/a", plugins=PLUGINS)
    bob = await connect("bob@localhost/b", plugins=PLUGINS)
    ps_a = alice.plugin["xep_0060"]
    col = node + "-all"
    form = alice.plugin["xep_0004"].make_form(ftype="submit")
    form.add_field(var="FORM_TYPE", ftype="hidden", value=f"{PUBSUB}#node_config")
    form.add_field(var="pubsub#node_type", value="collection")
    await ps_a.create_node(SERVICE, col, config=form, timeout=5)
    leaf = alice.plugin["xep_0004"].make_form(ftype="submit")
    leaf.add_field(var="FORM_TYPE", ftype="hidden", value=f"{PUBSUB}#node_config")
    leaf.add_field(var="pubsub#collection", value=col)
    await ps_a.create_node(SERVICE, node, config=leaf, timeout=5)
    await bob.plugin["xep_0060"].subscribe(SERVICE, col, timeout=5)
    children = await bob.plugin["xep_0030"].get_items(jid=SERVICE, node=col, timeout=5)
    assert node in {i[1] for i in children["disco_items"]["items"]}
    await ps_a.publish(SERVICE, node, id="x", payload=_entry("leaf"), timeout=5)
    m = await _event(bob, node)
    assert m.xml.find(f".//{{{EVENT}}}item").get("id") == "x"


async def test_items_with_result_set_management(connect: Any, node: str) -> None:
    alice = await connect("alice@localhost/a", plugins=PLUGINS)
    ps = alice.plugin["xep_0060"]
    await ps.create_node(SERVICE, node, timeout=5)
    for i in range(5):
        await ps.publish(SERVICE, node, id=f"i{i}", payload=_entry(str(i)), timeout=5)
    got = await ps.get_items(SERVICE, node, max_items=2, timeout=5)
    assert [i.get("id") for i in got.xml.iter(f"{{{PUBSUB}}}item")] == ["i4", "i3"]
    iq = alice.make_iq_get(ito=SERVICE)
    iq.append(
        ET.fromstring(
            f"<pubsub xmlns='{PUBSUB}'><items node='{node}'/>"
            "<set xmlns='http://jabber.org/protocol/rsm'><max>2</max></set></pubsub>"
        )
    )
    page = await iq.send(timeout=5)
    ids = [i.get("id") for i in page.xml.iter(f"{{{PUBSUB}}}item")]
    assert len(ids) == 2
    rsm = page.xml.find(".//{http://jabber.org/protocol/rsm}set")
    assert rsm is not None and rsm.findtext("{http://jabber.org/protocol/rsm}count") == "5"


async def test_node_limit_is_per_user_on_a_domain(server_factory: Any, connect: Any) -> None:
    """``pubsub_max_nodes`` on a pubsub domain counts the nodes each user
    owns: one user at the limit does not stop another."""
    from tests.conftest import add_user

    srv = await server_factory(pubsub_max_nodes=2)
    for name in ("alice", "bob"):
        await add_user(srv, name)
    alice = await connect("alice@localhost/a", plugins=PLUGINS, srv=srv)
    bob = await connect("bob@localhost/b", plugins=PLUGINS, srv=srv)
    tag = secrets.token_hex(3)
    for i in range(2):
        await alice.plugin["xep_0060"].create_node(SERVICE, f"a{i}-{tag}", timeout=5)
    with pytest.raises(IqError) as exc:
        await alice.plugin["xep_0060"].create_node(SERVICE, f"a2-{tag}", timeout=5)
    assert exc.value.condition == "not-allowed" and "max-nodes-exceeded" in _app(exc.value)
    await bob.plugin["xep_0060"].create_node(SERVICE, f"b0-{tag}", timeout=5)


async def test_authorize_model_waits_for_the_owner(connect: Any, node: str) -> None:
    """XEP-0060 6.1.4 and 8.6: on an authorize node a subscription is
    pending until the owner approves it with the form the service sent."""
    alice = await connect("alice@localhost/a", plugins=PLUGINS)
    bob = await connect("bob@localhost/b", plugins=PLUGINS)
    form = alice.plugin["xep_0004"].make_form(ftype="submit")
    form.add_field(var="FORM_TYPE", ftype="hidden", value=f"{PUBSUB}#node_config")
    form.add_field(var="pubsub#access_model", value="authorize")
    await alice.plugin["xep_0060"].create_node(SERVICE, node, config=form, timeout=5)
    sub = await bob.plugin["xep_0060"].subscribe(SERVICE, node, timeout=5)
    assert sub.xml.find(f".//{{{PUBSUB}}}subscription").get("subscription") == "pending"
    # the owner gets the authorization request (a message with a form)
    while True:
        m = await alice.next_message(5)
        x = m.xml.find("{jabber:x:data}x")
        if x is not None:
            break
    fields = {f.get("var"): f for f in x.iter("{jabber:x:data}field")}
    assert (
        fields["FORM_TYPE"].findtext("{jabber:x:data}value") == f"{PUBSUB}#subscribe_authorization"
    )
    assert (
        fields["pubsub#subscriber_jid"].findtext("{jabber:x:data}value").startswith("bob@localhost")
    )
    # alice allows it: bob is told he is subscribed, and gets the next item
    answer = alice.Message()
    answer["to"] = SERVICE
    reply = ET.Element("{jabber:x:data}x", type="submit")
    for var in ("FORM_TYPE", "pubsub#node", "pubsub#subscriber_jid", "pubsub#subid"):
        if var in fields:
            f = ET.SubElement(reply, "{jabber:x:data}field", var=var)
            ET.SubElement(f, "{jabber:x:data}value").text = fields[var].findtext(
                "{jabber:x:data}value"
            )
    f = ET.SubElement(reply, "{jabber:x:data}field", var="pubsub#allow")
    ET.SubElement(f, "{jabber:x:data}value").text = "true"
    answer.append(reply)
    answer.send()
    while True:
        m = await bob.next_message(5)
        s = m.xml.find(f"{{{EVENT}}}event/{{{EVENT}}}subscription")
        if s is not None:
            assert s.get("subscription") == "subscribed"
            break
    await alice.plugin["xep_0060"].publish(SERVICE, node, id="x", payload=_entry("hi"), timeout=5)
    got = await _event(bob, node)
    assert got.xml.find(f".//{{{EVENT}}}item").get("id") == "x"
