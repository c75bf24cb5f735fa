"""XEP-0030 disco, XEP-0128/0157 server info, XEP-0115 caps."""

from __future__ import annotations

from lxml import etree

from services.features import disco
from services.features.disco import CAPS_NODE, Identity
from services.xmpp import forms, ns

from .conftest import HOST, Harness, MakeHarness, assert_error, assert_result, el

INFO = f"{{{ns.DISCO_INFO}}}"
ITEMS = f"{{{ns.DISCO_ITEMS}}}"
X = f"{{{ns.DATA_FORMS}}}"


def info(node: str | None = None) -> etree._Element:
    q = el(f"<query xmlns='{ns.DISCO_INFO}'/>")
    if node is not None:
        q.set("node", node)
    return q


def items(node: str | None = None) -> etree._Element:
    q = el(f"<query xmlns='{ns.DISCO_ITEMS}'/>")
    if node is not None:
        q.set("node", node)
    return q


def features_of(q: etree._Element) -> list[str]:
    return [f.get("var") or "" for f in q.findall(INFO + "feature")]


def identities_of(q: etree._Element) -> list[tuple[str | None, ...]]:
    return [(i.get("category"), i.get("type"), i.get("name")) for i in q.findall(INFO + "identity")]


async def test_server_info(make_harness: MakeHarness) -> None:
    h = await make_harness(
        contact_addresses=["xmpp:admin@example.com", "mailto:admin@example.com"],
        server_name="xmppd-test",
    )
    me = await h.login("juliet")
    reply = await h.iq(me, "get", info(), to=HOST)
    assert reply.get("from") == HOST
    q = assert_result(reply)
    assert q is not None and q.tag == INFO + "query"
    assert q.get("node") is None
    assert identities_of(q) == [("server", "im", "xmppd-test")]
    feats = features_of(q)
    assert feats == sorted(set(feats))
    for expected in (
        ns.DISCO_INFO,
        ns.DISCO_ITEMS,
        ns.PING,
        ns.VERSION,
        ns.TIME,
        ns.LAST,
        ns.VCARD,
        ns.PRIVATE,
        ns.BLOCKING,
        ns.REGISTER,
    ):
        assert expected in feats
    assert set(feats) == {*h.router.features.disco_features(), ns.DISCO_INFO, ns.DISCO_ITEMS}
    x = q.find(X + "x")
    assert x is not None and x.get("type") == "result"
    values = forms.parse_form(x)
    assert values["FORM_TYPE"] == [ns.SERVERINFO]
    assert values["admin-addresses"] == ["xmpp:admin@example.com", "mailto:admin@example.com"]


async def test_server_info_without_contact_addresses(make_harness: MakeHarness) -> None:
    h = await make_harness(contact_addresses=[])
    me = await h.login("juliet")
    q = assert_result(await h.iq(me, "get", info(), to=HOST))
    assert q is not None
    x = q.find(X + "x")
    assert x is not None
    assert forms.parse_form(x) == {"FORM_TYPE": [ns.SERVERINFO]}


async def test_server_features_follow_feature_set(make_harness: MakeHarness) -> None:
    h = await make_harness(features=[disco.FEATURE])
    me = await h.login("juliet")
    q = assert_result(await h.iq(me, "get", info(), to=HOST))
    assert q is not None
    assert features_of(q) == sorted([ns.DISCO_INFO, ns.DISCO_ITEMS])


async def test_server_info_unknown_node(h: Harness) -> None:
    me = await h.login("juliet")
    assert_error(await h.iq(me, "get", info("urn:nope"), to=HOST), "item-not-found", "cancel")
    # a stale caps node is unknown too
    assert_error(await h.iq(me, "get", info(f"{CAPS_NODE}#stale"), to=HOST), "item-not-found")


async def test_server_info_caps_node(h: Harness) -> None:
    me = await h.login("juliet")
    node = f"{CAPS_NODE}#{disco.caps_ver(h.router)}"
    q = assert_result(await h.iq(me, "get", info(node), to=HOST))
    assert q is not None
    assert q.get("node") == node
    plain = assert_result(await h.iq(me, "get", info(), to=HOST))
    assert plain is not None
    assert features_of(q) == features_of(plain)


async def test_server_items(h: Harness) -> None:
    me = await h.login("juliet")
    q = assert_result(await h.iq(me, "get", items(), to=HOST))
    assert q is not None and q.tag == ITEMS + "query"
    assert len(q) == 0
    assert_error(await h.iq(me, "get", items("urn:nope"), to=HOST), "item-not-found")


async def test_server_items_list_the_components(make_harness: MakeHarness) -> None:
    h = await make_harness(components=["b.component.test:s1", "a.component.test:s2"])
    me = await h.login("juliet")
    q = assert_result(await h.iq(me, "get", items(), to=HOST))
    assert q is not None
    got = [(i.tag, i.get("jid"), i.get("name")) for i in q]
    assert got == [
        (ITEMS + "item", "a.component.test", "a.component.test"),
        (ITEMS + "item", "b.component.test", "b.component.test"),
    ]
    # an account's items stay empty
    q = assert_result(await h.iq(me, "get", items()))
    assert q is not None and len(q) == 0


async def test_disco_set_is_not_handled(h: Harness) -> None:
    me = await h.login("juliet")
    assert_error(await h.iq(me, "set", info(), to=HOST), "service-unavailable")


async def test_account_info_owner(h: Harness) -> None:
    me = await h.login("juliet")
    for to in (None, str(me.bare)):
        reply = await h.iq(me, "get", info(), to=to)
        assert reply.get("from") == str(me.bare)
        q = assert_result(reply)
        assert q is not None
        assert identities_of(q) == [("account", "registered", None)]
        feats = features_of(q)
        assert {ns.DISCO_INFO, ns.DISCO_ITEMS, ns.BLOCKING, ns.PRIVATE, ns.VCARD} <= set(feats)
        assert set(feats) == {
            *h.router.features.account_disco_features(),
            ns.DISCO_INFO,
            ns.DISCO_ITEMS,
        }


async def test_account_info_other(h: Harness) -> None:
    me = await h.login("juliet")
    romeo = await h.account("romeo")
    q = assert_result(await h.iq(me, "get", info(), to=romeo))
    assert q is not None
    assert identities_of(q) == [("account", "registered", None)]
    assert features_of(q) == []


async def test_account_info_unknown_account(h: Harness) -> None:
    me = await h.login("juliet")
    assert_error(await h.iq(me, "get", info(), to=f"nobody@{HOST}"), "service-unavailable")


async def test_account_node_and_items(h: Harness) -> None:
    me = await h.login("juliet")
    assert_error(await h.iq(me, "get", info("urn:x")), "item-not-found")
    q = assert_result(await h.iq(me, "get", items()))
    assert q is not None and len(q) == 0
    assert_error(await h.iq(me, "get", items("urn:x")), "item-not-found")


# ---------------------------------------------------------------- XEP-0115


XEP_0115_SIMPLE = """
<query xmlns='http://jabber.org/protocol/disco#info'
       node='http://code.google.com/p/exodus#QgayPKawpkPSDYmwT/WM94uAlu0='>
  <identity category='client' name='Exodus 0.9.1' type='pc'/>
  <feature var='http://jabber.org/protocol/caps'/>
  <feature var='http://jabber.org/protocol/disco#info'/>
  <feature var='http://jabber.org/protocol/disco#items'/>
  <feature var='http://jabber.org/protocol/muc'/>
</query>
"""

XEP_0115_COMPLEX = """
<query xmlns='http://jabber.org/protocol/disco#info'
       node='http://psi-im.org#q07IKJEyjvHSyhy//CH0CxmKi8w='>
  <identity xml:lang='en' category='client' name='Psi 0.11' type='pc'/>
  <identity xml:lang='el' category='client' name='\u03a8 0.11' type='pc'/>
  <feature var='http://jabber.org/protocol/caps'/>
  <feature var='http://jabber.org/protocol/disco#info'/>
  <feature var='http://jabber.org/protocol/disco#items'/>
  <feature var='http://jabber.org/protocol/muc'/>
  <x xmlns='jabber:x:data' type='result'>
    <field var='FORM_TYPE' type='hidden'>
      <value>urn:xmpp:dataforms:softwareinfo</value>
    </field>
    <field var='ip_version'>
      <value>ipv4</value>
      <value>ipv6</value>
    </field>
    <field var='os'>
      <value>Mac</value>
    </field>
    <field var='os_version'>
      <value>10.5.1</value>
    </field>
    <field var='software'>
      <value>Psi</value>
    </field>
    <field var='software_version'>
      <value>0.11</value>
    </field>
  </x>
</query>
"""


def test_caps_ver_simple_example() -> None:
    """XEP-0115 section 5.2."""
    assert disco.ver_of_info(etree.fromstring(XEP_0115_SIMPLE)) == "QgayPKawpkPSDYmwT/WM94uAlu0="


def test_caps_ver_simple_example_from_parts() -> None:
    ver = disco.verification_string(
        [Identity("client", "pc", "Exodus 0.9.1")],
        [
            "http://jabber.org/protocol/muc",
            "http://jabber.org/protocol/disco#info",
            "http://jabber.org/protocol/caps",
            "http://jabber.org/protocol/disco#items",
        ],
    )
    assert ver == "QgayPKawpkPSDYmwT/WM94uAlu0="


def test_caps_ver_complex_example() -> None:
    """XEP-0115 section 5.3 (identities in two languages, an extended form)."""
    assert (
        disco.ver_of_info(etree.fromstring(XEP_0115_COMPLEX.encode()))
        == "q07IKJEyjvHSyhy//CH0CxmKi8w="
    )


def test_caps_ignores_forms_without_form_type() -> None:
    q = etree.fromstring(XEP_0115_SIMPLE)
    q.append(forms.build_form("result", None, [forms.Field("a", values=["b"])]))
    assert disco.ver_of_info(q) == "QgayPKawpkPSDYmwT/WM94uAlu0="


async def test_caps_ver_matches_disco_info(make_harness: MakeHarness) -> None:
    h = await make_harness(contact_addresses=["mailto:a@example.com", "xmpp:b@example.com"])
    me = await h.login("juliet")
    q = assert_result(await h.iq(me, "get", info(), to=HOST))
    assert q is not None
    ver = disco.caps_ver(h.router)
    assert disco.ver_of_info(q) == ver
    c = etree.fromstring(disco.caps_feature(h.router))
    assert c.tag == f"{{{ns.CAPS}}}c"
    assert c.get("hash") == "sha-1"
    assert c.get("node") == CAPS_NODE
    assert c.get("ver") == ver


async def test_caps_ver_changes_with_features(make_harness: MakeHarness) -> None:
    a = await make_harness()
    b = await make_harness(features=[disco.FEATURE])
    assert disco.caps_ver(a.router) != disco.caps_ver(b.router)
