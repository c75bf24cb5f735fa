"""XEP-0357 push notifications against a real router over SQLite.

The app server is a local session (``push@example.com/app``): the
notification IQ the feature sends with ``ctx.send`` is routed to it and
recorded by the harness edge, as any delivery is.
"""

from __future__ import annotations

from typing import Any

from lxml import etree

from services.core.feature import Feature
from services.core.routing import Envelope
from services.features import offline, push
from services.xmpp import forms, ns
from services.xmpp import stanza as st
from services.xmpp.jid import JID

from .conftest import HOST, MY_FEATURES, Harness, MakeHarness, assert_error, assert_result, el

PUSH = "urn:xmpp:push:0"
PUBSUB = "http://jabber.org/protocol/pubsub"
OPTIONS = "http://jabber.org/protocol/pubsub#publish-options"
APP = f"push@{HOST}/app"
#: push loaded before offline, as the catalog orders them
FEATURES: list[Feature] = [
    *(f for f in MY_FEATURES if f is not offline.FEATURE),
    push.FEATURE,
    offline.FEATURE,
]


async def harness(make_harness: MakeHarness, **settings: Any) -> Harness:
    return await make_harness(FEATURES, **settings)


def enable(jid: str | None = APP, node: str | None = "n1", secret: str | None = None) -> Any:
    e = etree.Element(f"{{{PUSH}}}enable", nsmap={None: PUSH})
    if jid is not None:
        e.set("jid", jid)
    if node is not None:
        e.set("node", node)
    if secret is not None:
        e.append(forms.build_form("submit", OPTIONS, [forms.Field("secret", values=[secret])]))
    return e


def disable(jid: str, node: str | None = None) -> Any:
    e = etree.Element(f"{{{PUSH}}}disable", nsmap={None: PUSH}, jid=jid)
    if node is not None:
        e.set("node", node)
    return e


async def registrations(h: Harness, user: str = "alice") -> list[tuple[str, str, str | None]]:
    out = []
    for r in await h.store.get_push_registrations(HOST, user):
        secret = None
        if r.options is not None:
            secret = forms.parse_form(etree.fromstring(r.options), OPTIONS)["secret"][0]
        out.append((r.jid, r.node, secret))
    return out


async def offline_alice(h: Harness, **enable_kw: Any) -> tuple[JID, JID, JID]:
    """alice enables push and leaves; the app server and bob are online."""
    alice = await h.login(f"alice@{HOST}/phone")
    assert_result(await h.iq(alice, "set", enable(**enable_kw)))
    await h.router.unbind(alice, "")
    app = await h.login(APP, available=True)
    bob = await h.login(f"bob@{HOST}/desk", available=True)
    return alice, app, bob


async def say(h: Harness, frm: JID, to: JID, xml: str) -> None:
    msg = el(f"<message xmlns='jabber:client' type='chat'>{xml}</message>")
    msg.set("from", str(frm))
    msg.set("to", str(to))
    await h.router.route(Envelope.of(msg, frm, to))


def notifications(h: Harness, app: JID) -> list[etree._Element]:
    return [e for e in h.delivered(app) if e.get("type") == "set"]


def summary(iq: etree._Element) -> dict[str, list[str]]:
    form = iq.find(
        f"{{{PUBSUB}}}pubsub/{{{PUBSUB}}}publish/{{{PUBSUB}}}item/{{{PUSH}}}notification"
    )
    assert form is not None, etree.tostring(iq)
    x = forms.find_form(form, push.SUMMARY)
    assert x is not None and x.get("type") == "submit"
    return forms.parse_form(x, push.SUMMARY)


# ---- enable and disable --------------------------------------------------------------


async def test_enable_replace_and_disable(make_harness: MakeHarness) -> None:
    h = await harness(make_harness)
    alice = await h.login(f"alice@{HOST}/phone")
    assert assert_result(await h.iq(alice, "set", enable(secret="s1"))) is None
    assert await registrations(h) == [(APP, "n1", "s1")]
    # the same jid and node again: its options are replaced (section 5)
    assert_result(await h.iq(alice, "set", enable(secret="s2")))
    assert await registrations(h) == [(APP, "n1", "s2")]
    assert_result(await h.iq(alice, "set", enable(node="n2")))
    assert_result(await h.iq(alice, "set", enable(jid="Push.Example", node="n3")))
    assert await registrations(h) == [
        (APP, "n1", "s2"),
        (APP, "n2", None),
        ("push.example", "n3", None),
    ]
    # one node of a jid
    assert assert_result(await h.iq(alice, "set", disable(APP, "n1"))) is None
    assert await registrations(h) == [(APP, "n2", None), ("push.example", "n3", None)]
    # every node of a jid; removing nothing is no error
    assert_result(await h.iq(alice, "set", disable(APP)))
    assert_result(await h.iq(alice, "set", disable(APP)))
    assert await registrations(h) == [("push.example", "n3", None)]


async def test_enable_errors(make_harness: MakeHarness) -> None:
    h = await harness(make_harness, push_max_registrations=2)
    alice = await h.login(f"alice@{HOST}/phone")
    assert_error(await h.iq(alice, "set", enable(jid=None)), "bad-request", "modify")
    assert_error(await h.iq(alice, "set", enable(node=None)), "bad-request", "modify")
    assert_error(await h.iq(alice, "set", enable(jid="a@b@c")), "bad-request")
    assert_error(await h.iq(alice, "set", disable("")), "bad-request")
    wrong = enable()
    wrong.append(forms.build_form("submit", "urn:example:other", []))
    assert_error(await h.iq(alice, "set", wrong), "bad-request")
    assert await registrations(h) == []
    # the per-user limit: a third is refused, replacing one at the limit is not
    assert_result(await h.iq(alice, "set", enable(node="n1")))
    assert_result(await h.iq(alice, "set", enable(node="n2")))
    assert_error(await h.iq(alice, "set", enable(node="n3")), "not-acceptable", "modify")
    assert_result(await h.iq(alice, "set", enable(node="n2", secret="again")))
    assert await registrations(h) == [(APP, "n1", None), (APP, "n2", "again")]


async def test_only_the_owner_and_advertised(make_harness: MakeHarness) -> None:
    h = await harness(make_harness)
    alice = await h.login(f"alice@{HOST}/phone")
    bob = await h.login(f"bob@{HOST}/desk")
    assert_result(await h.iq(alice, "set", enable()))
    assert_error(await h.iq(bob, "set", enable(node="evil"), to=alice.bare), "forbidden", "auth")
    assert_error(await h.iq(bob, "set", disable(APP), to=alice.bare), "forbidden", "auth")
    assert await registrations(h) == [(APP, "n1", None)]
    info = assert_result(
        await h.iq(alice, "get", el(f"<query xmlns='{ns.DISCO_INFO}'/>"), to=alice.bare)
    )
    assert info is not None
    assert PUSH in [f.get("var") for f in info.iter(f"{{{ns.DISCO_INFO}}}feature")]
    # and deleting the account deletes its registrations
    assert await h.store.delete_account(HOST, "alice")
    assert await registrations(h) == []


# ---- notifications -----------------------------------------------------------------------


async def test_offline_message_notifies_and_is_still_stored(make_harness: MakeHarness) -> None:
    h = await harness(make_harness)
    alice, app, bob = await offline_alice(h, secret="s3cret")
    await say(h, bob, alice.bare, "<body>hello</body>")
    (iq,) = notifications(h, app)
    assert iq.get("from") == str(alice.bare) and iq.get("to") == APP
    assert iq.get("id", "").startswith("push-")
    publish = iq.find(f"{{{PUBSUB}}}pubsub/{{{PUBSUB}}}publish")
    assert publish is not None and publish.get("node") == "n1"
    assert summary(iq) == {
        "FORM_TYPE": [push.SUMMARY],
        "message-count": ["1"],
        "last-message-sender": [str(bob)],
    }
    options = iq.find(f"{{{PUBSUB}}}pubsub/{{{PUBSUB}}}publish-options")
    assert options is not None
    x = forms.find_form(options, OPTIONS)
    assert x is not None and forms.parse_form(x, OPTIONS)["secret"] == ["s3cret"]
    # offline storage kept it all the same
    assert await h.store.count_offline(HOST, "alice") == 1
    # the next one counts both; a message to an absent resource is the same
    await say(h, bob, alice, "<body>again</body>")
    _, second = notifications(h, app)
    assert summary(second)["message-count"] == ["2"]
    assert await h.store.count_offline(HOST, "alice") == 2
    # disabled: nothing more
    alice = await h.login(f"alice@{HOST}/phone")
    assert_result(await h.iq(alice, "set", disable(APP)))
    await h.router.unbind(alice, "")
    await say(h, bob, alice.bare, "<body>third</body>")
    assert len(notifications(h, app)) == 2
    assert await h.store.count_offline(HOST, "alice") == 3


async def test_body_only_with_the_setting(make_harness: MakeHarness) -> None:
    h = await harness(make_harness, push_include_body=True)
    alice, app, bob = await offline_alice(h)
    await say(h, bob, alice.bare, "<body>wherefore</body>")
    (iq,) = notifications(h, app)
    assert summary(iq)["last-message-body"] == ["wherefore"]
    assert iq.find(f"{{{PUBSUB}}}pubsub/{{{PUBSUB}}}publish-options") is None


async def test_only_messages_worth_it(make_harness: MakeHarness) -> None:
    h = await harness(make_harness, push_include_body=True)
    alice, app, bob = await offline_alice(h)
    await say(h, bob, alice.bare, f"<composing xmlns='{ns.CHATSTATES}'/>")
    await say(h, bob, alice.bare, "<received xmlns='urn:xmpp:receipts' id='m1'/>")
    headline = el("<message xmlns='jabber:client' type='headline'><body>news</body></message>")
    await h.router.route(Envelope.of(headline, bob, alice.bare))
    assert notifications(h, app) == []
    # an encrypted message without a body is worth it (and has no body to show)
    await say(h, bob, alice.bare, "<encrypted xmlns='eu.siacs.conversations.axolotl'/>")
    (iq,) = notifications(h, app)
    assert "last-message-body" not in summary(iq)


async def test_no_notification_when_offline_storage_refuses(make_harness: MakeHarness) -> None:
    h = await harness(make_harness, offline_quota=1)
    alice, app, bob = await offline_alice(h)
    await say(h, bob, alice.bare, "<body>one</body>")
    await say(h, bob, alice.bare, "<body>two</body>")
    assert len(notifications(h, app)) == 1
    (bounce,) = [e for e in h.delivered(bob) if e.get("type") == "error"]
    assert bounce.find(f"{{{ns.CLIENT}}}error/{{{ns.STANZAS_ERR}}}service-unavailable") is not None


async def test_detached_delivery_hook(make_harness: MakeHarness) -> None:
    """What the edge runs when a stanza is queued for a session waiting for
    XEP-0198 resumption (the edge's side is in tests/e2e/test_push.py)."""
    h = await harness(make_harness)
    alice, app, bob = await offline_alice(h)
    features = h.router.features
    assert features.detached_delivery
    presence = st.make("presence", frm=bob, to=alice)
    await features.detached(h.router, alice, etree.tostring(presence))
    assert notifications(h, app) == []
    msg = st.make("message", frm=bob, to=alice, type_="chat")
    etree.SubElement(msg, f"{{{ns.CLIENT}}}body").text = "are you there"
    await features.detached(h.router, alice, etree.tostring(msg))
    (iq,) = notifications(h, app)
    assert summary(iq)["message-count"] == ["1"]
    assert summary(iq)["last-message-sender"] == [str(bob)]
    assert "last-message-body" not in summary(iq)
    # not stored offline: the detached session's queue has it
    assert await h.store.count_offline(HOST, "alice") == 0


def publish_error(iq: etree._Element, frm: JID, typ: str) -> Envelope:
    err = st.make("iq", frm=frm, to=iq.get("from"), type_="error", id_=iq.get("id"))
    e = etree.SubElement(err, f"{{{ns.CLIENT}}}error", type=typ)
    cond = "resource-constraint" if typ == "wait" else "item-not-found"
    etree.SubElement(e, f"{{{ns.STANZAS_ERR}}}{cond}", nsmap={None: ns.STANZAS_ERR})
    return Envelope.of(err, frm, JID.parse(iq.get("from") or ""))


async def test_publish_error_disables_the_registration(make_harness: MakeHarness) -> None:
    h = await harness(make_harness)
    alice, app, bob = await offline_alice(h)
    alice = await h.login(f"alice@{HOST}/phone")
    assert_result(await h.iq(alice, "set", enable(node="n2")))
    await h.router.unbind(alice, "")
    await say(h, bob, alice.bare, "<body>hi</body>")
    to_n1, _ = sorted(
        notifications(h, app), key=lambda iq: iq.findall(f".//{{{PUBSUB}}}publish")[0].get("node")
    )
    # from someone else, or transient (wait): nothing removed
    await h.router.route(publish_error(to_n1, bob, "cancel"))
    await h.router.route(publish_error(to_n1, app, "wait"))
    assert await registrations(h) == [(APP, "n1", None), (APP, "n2", None)]
    # the app server says no: that registration (and only it) is disabled
    await h.router.route(publish_error(to_n1, app, "cancel"))
    assert await registrations(h) == [(APP, "n2", None)]
    h.edge.sent.clear()
    await say(h, bob, alice.bare, "<body>again</body>")
    (iq,) = notifications(h, app)
    assert iq.find(f"{{{PUBSUB}}}pubsub/{{{PUBSUB}}}publish").get("node") == "n2"
