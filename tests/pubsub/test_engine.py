"""The sans-IO pubsub service (XEP-0060, XEP-0248, XEP-0059, XEP-0163):
each use case, each refusal with its condition and pubsub#errors condition,
without a server."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from lxml import etree

from services.pubsub.engine import Effects, Notification, PubsubService, Viewer
from services.pubsub.node import (
    NODE_CONFIG,
    PUBLISH_OPTIONS,
    PUBSUB,
    PUBSUB_EVENT,
    PUBSUB_OWNER,
    RSM,
    SHIM,
    SUBSCRIBE_AUTHORIZATION,
    SUBSCRIBE_OPTIONS,
    Item,
    Limits,
    q,
)
from services.xmpp import forms, ns
from services.xmpp.errors import StanzaError
from services.xmpp.jid import JID

SERVICE = JID.parse("pubsub.localhost")
ALICE = JID.parse("alice@localhost")
A, B, C = (JID.parse(f"{n}@localhost/r") for n in ("alice", "bob", "carol"))
BOB, CAROL = B.bare, C.bare
NOBODY = Viewer()
CONTACT = Viewer(subscribed=True)
E = f"{{{PUBSUB_EVENT}}}"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def generic(**kw: object) -> PubsubService:
    limits = kw.pop("limits", Limits())
    assert isinstance(limits, Limits)
    return PubsubService(SERVICE, pep=False, limits=limits, clock=kw.pop("clock", Clock()), **kw)  # type: ignore[arg-type]


def pep(**kw: object) -> PubsubService:
    return PubsubService(ALICE, pep=True, limits=Limits(), clock=Clock(), **kw)  # type: ignore[arg-type]


def ps(inner: str, owner: bool = False) -> etree._Element:
    return etree.fromstring(f"<pubsub xmlns='{PUBSUB_OWNER if owner else PUBSUB}'>{inner}</pubsub>")


def get(s: PubsubService, frm: JID, inner: str, viewer: Viewer = NOBODY) -> Effects:
    return s.handle_iq(frm, "get", ps(inner), viewer)


def set_(s: PubsubService, frm: JID, inner: str, viewer: Viewer = NOBODY) -> Effects:
    return s.handle_iq(frm, "set", ps(inner), viewer)


def oget(s: PubsubService, frm: JID, inner: str) -> Effects:
    return s.handle_iq(frm, "get", ps(inner, owner=True), NOBODY)


def oset(s: PubsubService, frm: JID, inner: str) -> Effects:
    return s.handle_iq(frm, "set", ps(inner, owner=True), NOBODY)


def refusal(fn: Callable[[], object]) -> tuple[str, str | None]:
    """(condition, pubsub#errors condition) of the StanzaError ``fn`` raises."""
    with pytest.raises(StanzaError) as info:
        fn()
    app = info.value.app_condition
    if app is not None:
        assert etree.QName(app).namespace == "http://jabber.org/protocol/pubsub#errors"
    return info.value.condition.value, etree.QName(app).localname if app is not None else None


def feature_of(fn: Callable[[], object]) -> str | None:
    with pytest.raises(StanzaError) as info:
        fn()
    app = info.value.app_condition
    assert info.value.condition.value == "feature-not-implemented"
    assert app is not None and etree.QName(app).localname == "unsupported"
    return app.get("feature")


def form(form_type: str, **fields: str | list[str]) -> str:
    out = [forms.Field("FORM_TYPE", "hidden", values=[form_type])]
    for var, value in fields.items():
        out.append(
            forms.Field(f"pubsub#{var}", values=value if isinstance(value, list) else [value])
        )
    return etree.tostring(forms.build_form("submit", None, out)).decode()


def create(s: PubsubService, frm: JID, name: str, **config: str | list[str]) -> Effects:
    conf = f"<configure>{form(NODE_CONFIG, **config)}</configure>" if config else ""
    return set_(s, frm, f"<create node='{name}'/>{conf}")


def publish(
    s: PubsubService,
    frm: JID,
    node: str,
    item_id: str | None = "i1",
    payload: str = "<entry xmlns='urn:x'>hi</entry>",
    options: str = "",
) -> Effects:
    attr = f" id='{item_id}'" if item_id is not None else ""
    opts = f"<publish-options>{options}</publish-options>" if options else ""
    return set_(s, frm, f"<publish node='{node}'><item{attr}>{payload}</item></publish>{opts}")


def subscribe(
    s: PubsubService,
    frm: JID,
    node: str,
    jid: JID | None = None,
    viewer: Viewer = NOBODY,
    options: str = "",
) -> Effects:
    opts = f"<options>{options}</options>" if options else ""
    return set_(s, frm, f"<subscribe node='{node}' jid='{jid or frm.bare}'/>{opts}", viewer)


def recipients(eff: Effects) -> list[str]:
    return [str(j) for n in eff.notifications for j in n.to]


def events(eff: Effects, kind: str) -> list[Notification]:
    return [n for n in eff.notifications if n.message.find(f"{E}event/{E}{kind}") is not None]


def item_ids(result: etree._Element | None) -> list[str]:
    assert result is not None
    return [el.get("id") or "" for el in result.iter(q(PUBSUB, "item"))]


def open_node(s: PubsubService, name: str = "news", **config: str | list[str]) -> None:
    create(s, A, name, **config)


# ---- discovery ------------------------------------------------------------------------------


def test_disco_info_of_the_service() -> None:
    info = generic().disco_info(None, NOBODY)
    ident = info.find(q(ns.DISCO_INFO, "identity"))
    assert ident is not None and (ident.get("category"), ident.get("type")) == ("pubsub", "service")
    features = {f.get("var") for f in info.iter(q(ns.DISCO_INFO, "feature"))}
    for name in ("publish", "publish-options", "rsm", "collections", "create-nodes", "subscribe"):
        assert f"{PUBSUB}#{name}" in features
    assert f"{PUBSUB}#access-open" in features
    assert f"{PUBSUB}#auto-create" not in features
    pep_features = {
        f.get("var") for f in pep().disco_info(None, NOBODY).iter(q(ns.DISCO_INFO, "feature"))
    }
    for name in ("auto-create", "last-published", "access-presence", "filtered-notifications"):
        assert f"{PUBSUB}#{name}" in pep_features
    pep_ident = pep().disco_info(None, NOBODY).find(q(ns.DISCO_INFO, "identity"))
    assert pep_ident is not None and pep_ident.get("type") == "pep"


def test_disco_info_of_a_node_has_its_meta_data() -> None:
    s = generic()
    open_node(s, title="News")
    info = s.disco_info("news", NOBODY, B)
    assert info.get("node") == "news"
    ident = info.find(q(ns.DISCO_INFO, "identity"))
    assert ident is not None and ident.get("type") == "leaf"
    meta = forms.parse_form(info.find(q(ns.DATA_FORMS, "x")))  # type: ignore[arg-type]
    assert meta["FORM_TYPE"] == ["http://jabber.org/protocol/pubsub#meta-data"]
    assert meta["pubsub#title"] == ["News"]
    assert meta["pubsub#owner"] == ["alice@localhost"]
    assert refusal(lambda: s.disco_info("nope", NOBODY)) == ("item-not-found", None)
    create(s, A, "secret", access_model="whitelist")
    # a node one may not see is not there
    assert refusal(lambda: s.disco_info("secret", NOBODY, B)) == ("item-not-found", None)
    assert s.disco_info("secret", NOBODY, A).get("node") == "secret"


def test_disco_items_lists_what_the_requester_may_see() -> None:
    s = generic()
    open_node(s, "news", title="News")
    create(s, A, "secret", access_model="whitelist")
    create(s, A, "blogs", node_type="collection")
    create(s, A, "blog1", collection="blogs")
    root = s.disco_items(None, B, NOBODY)
    assert [(i.get("node"), i.get("name")) for i in root] == [("blogs", None), ("news", "News")]
    assert {i.get("node") for i in s.disco_items(None, A, NOBODY)} == {"blogs", "news", "secret"}
    children = s.disco_items("blogs", B, NOBODY)
    assert [i.get("node") for i in children] == ["blog1"]
    publish(s, A, "news", "x1")
    items = s.disco_items("news", B, NOBODY)
    # 5.5: items are named by their id and have no node attribute
    assert [(i.get("name"), i.get("node"), i.get("jid")) for i in items] == [
        ("x1", None, str(SERVICE))
    ]
    assert refusal(lambda: s.disco_items("secret", B, NOBODY)) == ("item-not-found", None)


# ---- subscribing (6.1, 6.2) -------------------------------------------------------------------


def test_subscribe_to_an_open_node() -> None:
    s = generic()
    open_node(s)
    eff = subscribe(s, B, "news")
    assert eff.result is not None
    sub = eff.result.find(q(PUBSUB, "subscription"))
    assert sub is not None
    assert (sub.get("node"), sub.get("jid"), sub.get("subscription")) == (
        "news",
        "bob@localhost",
        "subscribed",
    )
    assert sub.get("subid")
    assert eff.changed == {"news"}
    assert [x.jid for x in s.nodes["news"].subscriptions] == ["bob@localhost"]


def test_subscribe_with_a_full_jid() -> None:
    s = generic()
    open_node(s)
    subscribe(s, B, "news", jid=B)
    eff = publish(s, A, "news")
    assert recipients(eff) == ["bob@localhost/r"]


def test_subscribe_refusals() -> None:
    s = generic()
    open_node(s)
    assert refusal(lambda: subscribe(s, B, "news", jid=C)) == ("bad-request", "invalid-jid")
    assert refusal(lambda: subscribe(s, B, "nope")) == ("item-not-found", None)
    assert refusal(lambda: set_(s, B, "<subscribe jid='bob@localhost'/>")) == (
        "bad-request",
        "nodeid-required",
    )
    assert refusal(lambda: set_(s, B, "<subscribe node='news'/>")) == (
        "bad-request",
        "jid-required",
    )
    assert refusal(lambda: set_(s, B, "<subscribe node='news' jid='@@'/>")) == (
        "bad-request",
        "invalid-jid",
    )
    # the options of a subscribe-and-configure name neither node nor jid (6.3.7)
    assert refusal(
        lambda: set_(s, B, "<subscribe node='news' jid='bob@localhost'/><options node='news'/>")
    ) == ("bad-request", None)
    oset(s, A, "<configure node='news'>" + form(NODE_CONFIG, subscribe="0") + "</configure>")
    assert feature_of(lambda: subscribe(s, B, "news")) == "subscribe"


def test_an_owner_may_subscribe_someone_else() -> None:
    s = generic()
    open_node(s, access_model="whitelist")
    eff = subscribe(s, A, "news", jid=BOB)
    assert eff.result is not None
    assert s.nodes["news"].subscription("bob@localhost") is not None


def test_access_models_on_subscribe() -> None:
    s = generic()
    create(s, A, "pres", access_model="presence")
    create(s, A, "rost", access_model="roster", roster_groups_allowed=["Friends"])
    create(s, A, "white", access_model="whitelist")
    assert refusal(lambda: subscribe(s, B, "pres")) == (
        "not-authorized",
        "presence-subscription-required",
    )
    subscribe(s, B, "pres", viewer=CONTACT)
    assert refusal(lambda: subscribe(s, B, "rost", viewer=CONTACT)) == (
        "not-authorized",
        "not-in-roster-group",
    )
    subscribe(s, B, "rost", viewer=Viewer(True, frozenset({"Friends"})))
    assert refusal(lambda: subscribe(s, B, "white")) == ("not-allowed", "closed-node")
    oset(
        s,
        A,
        "<affiliations node='white'><affiliation jid='bob@localhost' affiliation='member'/></affiliations>",
    )
    subscribe(s, B, "white")


def test_outcasts_and_publish_only_may_not_subscribe() -> None:
    s = generic()
    open_node(s)
    oset(
        s,
        A,
        "<affiliations node='news'><affiliation jid='bob@localhost' affiliation='outcast'/>"
        "<affiliation jid='carol@localhost' affiliation='publish-only'/></affiliations>",
    )
    assert refusal(lambda: subscribe(s, B, "news")) == ("forbidden", None)
    assert refusal(lambda: subscribe(s, C, "news")) == ("forbidden", None)


def test_authorize_model_pending_then_approved_by_the_owner() -> None:
    s = generic()
    open_node(s, access_model="authorize")
    publish(s, A, "news", "first")
    eff = subscribe(s, B, "news")
    assert eff.result is not None
    sub = eff.result.find(q(PUBSUB, "subscription"))
    assert sub is not None and sub.get("subscription") == "pending"
    # the owners are asked (8.6), with the subscribe_authorization form
    asks = [n for n in eff.notifications if n.message.find(q(ns.DATA_FORMS, "x")) is not None]
    assert [str(j) for j in asks[0].to] == ["alice@localhost"]
    values = forms.parse_form(asks[0].message.find(q(ns.DATA_FORMS, "x")), SUBSCRIBE_AUTHORIZATION)  # type: ignore[arg-type]
    assert values["pubsub#subscriber_jid"] == ["bob@localhost"]
    assert refusal(lambda: subscribe(s, B, "news")) == ("not-authorized", "pending-subscription")
    assert refusal(lambda: get(s, B, "<items node='news'/>")) == (
        "not-authorized",
        "not-subscribed",
    )
    # 8.8: the owner approves
    eff = oset(
        s,
        A,
        "<subscriptions node='news'><subscription jid='bob@localhost' subscription='subscribed'/></subscriptions>",
    )
    changes = events(eff, "subscription")
    assert changes[0].message.find(f"{E}event/{E}subscription").get("subscription") == "subscribed"  # type: ignore[union-attr]
    assert [str(j) for j in changes[0].to] == ["bob@localhost"]
    # the new subscriber gets the last item
    assert item_ids_of_event(events(eff, "items")[0]) == ["first"]
    assert item_ids(get(s, B, "<items node='news'/>").result) == ["first"]


def item_ids_of_event(n: Notification) -> list[str]:
    return [el.get("id") or "" for el in n.message.iter(f"{E}item")]


def test_authorization_form_allows_or_denies() -> None:
    s = generic()
    open_node(s, access_model="authorize")
    subscribe(s, B, "news")
    subscribe(s, C, "news")

    def answer(jid: str, allow: str) -> etree._Element:
        return forms.build_form(
            "submit",
            SUBSCRIBE_AUTHORIZATION,
            [
                forms.Field("pubsub#node", values=["news"]),
                forms.Field("pubsub#subscriber_jid", values=[jid]),
                forms.Field("pubsub#allow", values=[allow]),
            ],
        )

    assert refusal(lambda: s.authorize(B, answer("carol@localhost", "1"))) == ("forbidden", None)
    eff = s.authorize(A, answer("bob@localhost", "true"))
    assert s.nodes["news"].subscription("bob@localhost").state == "subscribed"  # type: ignore[union-attr]
    assert eff.changed == {"news"}
    s.authorize(A, answer("carol@localhost", "0"))
    assert s.nodes["news"].subscription("carol@localhost") is None
    assert refusal(lambda: s.authorize(A, answer("carol@localhost", "1"))) == (
        "item-not-found",
        None,
    )
    assert s.authorize(A, forms.build_form("cancel")).changed == set()
    assert s.wants(answer("bob@localhost", "1")) == ["news"]


def test_subscribing_twice_answers_the_subscription_there_is() -> None:
    s = generic()
    open_node(s)
    first = subscribe(s, B, "news").result
    again = subscribe(s, B, "news")
    assert first is not None and again.result is not None
    subid = first.find(q(PUBSUB, "subscription")).get("subid")  # type: ignore[union-attr]
    assert again.result.find(q(PUBSUB, "subscription")).get("subid") == subid  # type: ignore[union-attr]
    assert len(s.nodes["news"].subscriptions) == 1


def test_too_many_subscriptions() -> None:
    s = generic(limits=Limits(max_subscriptions_per_node=1))
    open_node(s)
    subscribe(s, B, "news")
    with pytest.raises(StanzaError) as info:
        subscribe(s, C, "news")
    assert info.value.condition.value == "policy-violation"
    assert info.value.type.value == "wait"
    assert etree.QName(info.value.app_condition).localname == "too-many-subscriptions"  # type: ignore[arg-type]


def test_a_new_subscriber_gets_the_last_item_delayed() -> None:
    clock = Clock()
    s = generic(clock=clock)
    open_node(s)
    publish(s, A, "news", "old")
    clock.now = 2000.0
    publish(s, A, "news", "new")
    eff = subscribe(s, B, "news")
    last = events(eff, "items")
    assert len(last) == 1 and [str(j) for j in last[0].to] == ["bob@localhost"]
    assert item_ids_of_event(last[0]) == ["new"]
    delay = last[0].message.find(q(ns.DELAY, "delay"))
    assert delay is not None and delay.get("stamp") == "1970-01-01T00:33:20Z"
    oset(
        s,
        A,
        "<configure node='news'>"
        + form(NODE_CONFIG, send_last_published_item="never")
        + "</configure>",
    )
    assert events(subscribe(s, C, "news"), "items") == []


def test_subscribe_and_configure() -> None:
    s = generic()
    open_node(s)
    eff = subscribe(s, B, "news", options=form(SUBSCRIBE_OPTIONS, deliver="0"))
    assert eff.result is not None
    opts = eff.result.find(f"{q(PUBSUB, 'options')}/{q(ns.DATA_FORMS, 'x')}")
    assert opts is not None and opts.get("type") == "result"
    subscribe(s, C, "news")
    # deliver off: bob is subscribed and hears nothing
    assert recipients(publish(s, A, "news")) == ["carol@localhost"]


def test_unsubscribe() -> None:
    s = generic()
    open_node(s)
    subid = subscribe(s, B, "news").result.find(q(PUBSUB, "subscription")).get("subid")  # type: ignore[union-attr]
    assert refusal(lambda: set_(s, C, "<unsubscribe node='news' jid='bob@localhost'/>")) == (
        "forbidden",
        None,
    )
    assert refusal(
        lambda: set_(s, B, "<unsubscribe node='news' jid='bob@localhost' subid='zz'/>")
    ) == (
        "not-acceptable",
        "invalid-subid",
    )
    eff = set_(s, B, f"<unsubscribe node='news' jid='bob@localhost' subid='{subid}'/>")
    sub = eff.result.find(q(PUBSUB, "subscription"))  # type: ignore[union-attr]
    assert sub is not None and sub.get("subscription") == "none"
    assert s.nodes["news"].subscriptions == []
    with pytest.raises(StanzaError) as info:
        set_(s, B, "<unsubscribe node='news' jid='bob@localhost'/>")
    assert info.value.condition.value == "unexpected-request"
    assert etree.QName(info.value.app_condition).localname == "not-subscribed"  # type: ignore[arg-type]
    assert refusal(lambda: set_(s, B, "<unsubscribe node='nope' jid='bob@localhost'/>")) == (
        "item-not-found",
        None,
    )
    # an owner may unsubscribe anyone
    subscribe(s, C, "news")
    set_(s, A, "<unsubscribe node='news' jid='carol@localhost'/>")
    assert s.nodes["news"].subscriptions == []


def test_notify_sub_tells_the_owners() -> None:
    s = generic()
    open_node(s, notify_sub="1")
    eff = subscribe(s, B, "news")
    told = events(eff, "subscription")
    assert [str(j) for j in told[0].to] == ["alice@localhost"]
    eff = set_(s, B, "<unsubscribe node='news' jid='bob@localhost'/>")
    assert (
        events(eff, "subscription")[0].message.find(f"{E}event/{E}subscription").get("subscription")
        == "none"
    )  # type: ignore[union-attr]


# ---- subscription options (6.3, 6.4) -----------------------------------------------------------


def test_options_get_and_set() -> None:
    s = generic()
    open_node(s)
    subscribe(s, B, "news")
    eff = get(s, B, "<options node='news' jid='bob@localhost'/>")
    x = eff.result.find(f"{q(PUBSUB, 'options')}/{q(ns.DATA_FORMS, 'x')}")  # type: ignore[union-attr]
    assert forms.parse_form(x, SUBSCRIBE_OPTIONS)["pubsub#deliver"] == ["1"]  # type: ignore[arg-type]
    eff = set_(
        s,
        B,
        f"<options node='news' jid='bob@localhost'>{form(SUBSCRIBE_OPTIONS, deliver='0')}</options>",
    )
    assert eff.result is None and eff.changed == {"news"}
    assert s.nodes["news"].subscriptions[0].options == {"pubsub#deliver": ["0"]}


def test_options_refusals() -> None:
    s = generic()
    open_node(s)
    subscribe(s, B, "news")
    assert refusal(lambda: get(s, B, "<options node='news'/>")) == ("bad-request", "jid-required")
    assert refusal(lambda: get(s, B, "<options jid='bob@localhost'/>")) == (
        "bad-request",
        "nodeid-required",
    )
    assert refusal(lambda: get(s, C, "<options node='news' jid='bob@localhost'/>")) == (
        "forbidden",
        None,
    )
    assert refusal(lambda: get(s, C, "<options node='news' jid='carol@localhost'/>")) == (
        "unexpected-request",
        "not-subscribed",
    )
    assert refusal(lambda: get(s, B, "<options node='nope' jid='bob@localhost'/>")) == (
        "item-not-found",
        None,
    )
    assert refusal(lambda: get(s, B, "<options node='news' jid='bob@localhost' subid='x'/>")) == (
        "not-acceptable",
        "invalid-subid",
    )
    bad = form(SUBSCRIBE_OPTIONS, deliver="perhaps")
    assert refusal(
        lambda: set_(s, B, f"<options node='news' jid='bob@localhost'>{bad}</options>")
    ) == (
        "bad-request",
        "invalid-options",
    )


def test_default_subscription_options() -> None:
    s = generic()
    open_node(s)
    eff = get(s, B, "<default node='news'/>")
    x = eff.result.find(f"{q(PUBSUB, 'default')}/{q(ns.DATA_FORMS, 'x')}")  # type: ignore[union-attr]
    assert x is not None and forms.form_type(x) == SUBSCRIBE_OPTIONS
    assert get(s, B, "<default/>").result is not None
    assert refusal(lambda: get(s, B, "<default node='nope'/>")) == ("item-not-found", None)


# ---- one's subscriptions and affiliations (5.6, 5.7) ---------------------------------------------


def test_retrieve_subscriptions() -> None:
    s = generic()
    open_node(s, "n1")
    open_node(s, "n2")
    subscribe(s, B, "n1")
    subscribe(s, B, "n2", jid=B)
    subscribe(s, C, "n2")
    subs = get(s, B, "<subscriptions/>").result.find(q(PUBSUB, "subscriptions"))  # type: ignore[union-attr]
    assert [(x.get("node"), x.get("jid")) for x in subs] == [
        ("n1", "bob@localhost"),
        ("n2", "bob@localhost/r"),
    ]  # type: ignore[union-attr]
    subs = get(s, B, "<subscriptions node='n2'/>").result.find(q(PUBSUB, "subscriptions"))  # type: ignore[union-attr]
    assert subs.get("node") == "n2" and len(subs) == 1  # type: ignore[union-attr, arg-type]
    empty = get(s, A, "<subscriptions/>").result.find(q(PUBSUB, "subscriptions"))  # type: ignore[union-attr]
    assert empty is not None and len(empty) == 0


def test_retrieve_affiliations() -> None:
    s = generic()
    open_node(s, "n1")
    create(s, B, "n2")
    oset(
        s,
        B,
        "<affiliations node='n2'><affiliation jid='alice@localhost' affiliation='publisher'/></affiliations>",
    )
    affs = get(s, A, "<affiliations/>").result.find(q(PUBSUB, "affiliations"))  # type: ignore[union-attr]
    assert [(x.get("node"), x.get("affiliation")) for x in affs] == [
        ("n1", "owner"),
        ("n2", "publisher"),
    ]  # type: ignore[union-attr]
    assert len(get(s, C, "<affiliations/>").result.find(q(PUBSUB, "affiliations"))) == 0  # type: ignore[union-attr, arg-type]


# ---- retrieving items (6.5, XEP-0059) ---------------------------------------------------------------


def five(s: PubsubService) -> None:
    open_node(s, max_items="10")
    for i in range(5):
        publish(s, A, "news", f"i{i}")


def test_retrieve_items() -> None:
    s = generic()
    five(s)
    # newest first, the one order for every form of retrieval
    assert item_ids(get(s, B, "<items node='news'/>").result) == ["i4", "i3", "i2", "i1", "i0"]
    assert item_ids(get(s, B, "<items node='news' max_items='2'/>").result) == ["i4", "i3"]
    assert item_ids(
        get(s, B, "<items node='news'><item id='i1'/><item id='i3'/><item id='zz'/></items>").result
    ) == ["i3", "i1"]
    assert item_ids(get(s, B, "<items node='news'><item id='zz'/></items>").result) == []
    payload = get(s, B, "<items node='news' max_items='1'/>").result.find(".//{urn:x}entry")  # type: ignore[union-attr]
    assert payload is not None and payload.text == "hi"
    assert refusal(lambda: get(s, B, "<items node='news' max_items='-1'/>")) == (
        "bad-request",
        None,
    )
    assert refusal(lambda: get(s, B, "<items/>")) == ("bad-request", "nodeid-required")
    assert refusal(lambda: get(s, B, "<items node='nope'/>")) == ("item-not-found", None)


def test_retrieve_items_access() -> None:
    s = generic()
    create(s, A, "pres", access_model="presence")
    create(s, A, "rost", access_model="roster", roster_groups_allowed=["G"])
    create(s, A, "white", access_model="whitelist")
    assert refusal(lambda: get(s, B, "<items node='pres'/>")) == (
        "not-authorized",
        "presence-subscription-required",
    )
    get(s, B, "<items node='pres'/>", CONTACT)
    assert refusal(lambda: get(s, B, "<items node='rost'/>", CONTACT)) == (
        "not-authorized",
        "not-in-roster-group",
    )
    get(s, B, "<items node='rost'/>", Viewer(True, frozenset({"G"})))
    assert refusal(lambda: get(s, B, "<items node='white'/>")) == ("not-allowed", "closed-node")
    # the owner reads whatever the model
    get(s, A, "<items node='white'/>")
    oset(
        s,
        A,
        "<affiliations node='pres'><affiliation jid='bob@localhost' affiliation='outcast'/></affiliations>",
    )
    assert refusal(lambda: get(s, B, "<items node='pres'/>", CONTACT)) == ("forbidden", None)


def test_retrieve_items_not_from_collections_or_transient_nodes() -> None:
    s = generic()
    create(s, A, "coll", node_type="collection")
    create(s, A, "flash", persist_items="0")
    assert feature_of(lambda: get(s, B, "<items node='coll'/>")) == "retrieve-items"
    assert feature_of(lambda: get(s, B, "<items node='flash'/>")) == "persistent-items"


def rsm(s: PubsubService, inner: str) -> tuple[list[str], etree._Element]:
    eff = get(s, B, f"<items node='news'/><set xmlns='{RSM}'>{inner}</set>")
    assert eff.result is not None
    set_el = eff.result.find(q(RSM, "set"))
    assert set_el is not None
    return item_ids(eff.result), set_el


def test_result_set_management() -> None:
    s = generic()
    five(s)
    ids, page = rsm(s, "<max>2</max>")
    assert ids == ["i4", "i3"]
    assert page.findtext(q(RSM, "first")) == "i4" and page.find(q(RSM, "first")).get("index") == "0"  # type: ignore[union-attr]
    assert page.findtext(q(RSM, "last")) == "i3" and page.findtext(q(RSM, "count")) == "5"
    ids, page = rsm(s, "<max>2</max><after>i3</after>")
    assert ids == ["i2", "i1"] and page.find(q(RSM, "first")).get("index") == "2"  # type: ignore[union-attr]
    ids, _ = rsm(s, "<max>2</max><before>i1</before>")
    assert ids == ["i3", "i2"]
    ids, page = rsm(s, "<max>2</max><before/>")
    assert ids == ["i1", "i0"] and page.find(q(RSM, "first")).get("index") == "3"  # type: ignore[union-attr]
    ids, _ = rsm(s, "<max>3</max><index>4</index>")
    assert ids == ["i0"]
    # the count alone
    ids, page = rsm(s, "<max>0</max>")
    assert (
        ids == [] and page.find(q(RSM, "first")) is None and page.findtext(q(RSM, "count")) == "5"
    )
    ids, page = rsm(s, "<max>2</max><index>9</index>")
    assert ids == [] and page.findtext(q(RSM, "count")) == "5"
    assert refusal(lambda: rsm(s, "<max>2</max><after>gone</after>")) == ("item-not-found", None)
    assert refusal(lambda: rsm(s, "<max>lots</max>")) == ("bad-request", None)


def test_expired_items_are_not_returned_and_expire_removes_them() -> None:
    clock = Clock()
    s = generic(clock=clock)
    open_node(s, item_expire="60", notify_retract="1")
    subscribe(s, B, "news")
    publish(s, A, "news", "old")
    clock.now += 50
    publish(s, A, "news", "new")
    clock.now += 20
    assert item_ids(get(s, B, "<items node='news'/>").result) == ["new"]
    eff = s.expire(clock.now)
    assert eff.items_retracted == [("news", ["old"])]
    assert [r.get("id") for r in eff.notifications[0].message.iter(f"{E}retract")] == ["old"]
    assert [i.id for i in s.nodes["news"].items] == ["new"]


# ---- publishing (7.1) ---------------------------------------------------------------------------


def test_publish_notifies_subscribers_with_the_payload() -> None:
    s = generic()
    open_node(s)
    subscribe(s, B, "news")
    subscribe(s, C, "news", jid=C)
    eff = publish(s, A, "news", "i1")
    assert eff.result is not None
    pub = eff.result.find(q(PUBSUB, "publish"))
    assert pub is not None and pub.get("node") == "news"
    assert [(n, i.id) for n, i in eff.items_put] == [("news", "i1")]
    assert eff.items_put[0][1].publisher == "alice@localhost/r"
    (note,) = eff.notifications
    assert [str(j) for j in note.to] == ["bob@localhost", "carol@localhost/r"]
    assert not note.pep
    m = note.message
    assert m.get("from") == str(SERVICE) and m.get("to") is None and m.get("type") == "headline"
    assert m.get("id")
    items = m.find(f"{E}event/{E}items")
    assert items is not None and items.get("node") == "news"
    assert items.find(f"{E}item/{{urn:x}}entry") is not None
    # 7.1.2.3: no publisher attribute unless the node says so
    assert items.find(f"{E}item").get("publisher") is None  # type: ignore[union-attr]


def test_publish_without_an_id_gets_one() -> None:
    s = generic()
    open_node(s)
    eff = publish(s, A, "news", None)
    item = eff.result.find(f"{q(PUBSUB, 'publish')}/{q(PUBSUB, 'item')}")  # type: ignore[union-attr]
    assert item is not None and item.get("id")
    assert s.nodes["news"].items[0].id == item.get("id")


def test_publishing_an_id_again_replaces_the_item() -> None:
    s = generic()
    open_node(s)
    publish(s, A, "news", "a")
    publish(s, A, "news", "b")
    publish(s, A, "news", "a", "<entry xmlns='urn:x'>new</entry>")
    assert [i.id for i in s.nodes["news"].items] == ["a", "b"]
    assert s.nodes["news"].items[0].payload.text == "new"  # type: ignore[union-attr]


def test_max_items_drops_the_oldest() -> None:
    s = generic()
    open_node(s, max_items="2", notify_retract="1")
    subscribe(s, B, "news")
    publish(s, A, "news", "a")
    publish(s, A, "news", "b")
    eff = publish(s, A, "news", "c")
    assert [i.id for i in s.nodes["news"].items] == ["c", "b"]
    assert eff.items_retracted == [("news", ["a"])]
    # retract-oldest: subscribers see the oldest go, after the new one came
    assert [n.message.find(f"{E}event/{E}items/*").tag for n in eff.notifications] == [
        f"{E}item",
        f"{E}retract",
    ]  # type: ignore[union-attr]
    oset(
        s,
        A,
        "<configure node='news'>"
        + form(NODE_CONFIG, publish_node_full="discard-oldest")
        + "</configure>",
    )
    eff = publish(s, A, "news", "d")
    assert len(eff.notifications) == 1 and eff.items_retracted == [("news", ["b"])]


def test_a_full_node_may_refuse() -> None:
    s = generic()
    open_node(s, max_items="1", publish_node_full="reject")
    publish(s, A, "news", "a")
    assert refusal(lambda: publish(s, A, "news", "b")) == ("conflict", "node-full")
    publish(s, A, "news", "a")  # replacing is no new item


def test_who_may_publish() -> None:
    s = generic()
    open_node(s)
    assert refusal(lambda: publish(s, B, "news")) == ("forbidden", None)
    oset(
        s,
        A,
        "<affiliations node='news'><affiliation jid='bob@localhost' affiliation='publish-only'/></affiliations>",
    )
    publish(s, B, "news")
    oset(
        s,
        A,
        "<configure node='news'>" + form(NODE_CONFIG, publish_model="subscribers") + "</configure>",
    )
    assert refusal(lambda: publish(s, C, "news")) == ("forbidden", None)
    subscribe(s, C, "news")
    publish(s, C, "news")
    oset(s, A, "<configure node='news'>" + form(NODE_CONFIG, publish_model="open") + "</configure>")
    publish(s, JID.parse("dave@localhost/x"), "news")
    oset(
        s,
        A,
        "<affiliations node='news'><affiliation jid='dave@localhost' affiliation='outcast'/></affiliations>",
    )
    assert refusal(lambda: publish(s, JID.parse("dave@localhost/x"), "news")) == ("forbidden", None)


def test_publish_refusals() -> None:
    s = generic(limits=Limits(max_payload=100))
    open_node(s)
    assert refusal(
        lambda: publish(s, A, "news", payload="<big xmlns='urn:x'>" + "x" * 200 + "</big>")
    ) == (
        "not-acceptable",
        "payload-too-big",
    )
    assert refusal(
        lambda: publish(s, A, "news", payload="<a xmlns='urn:x'/><b xmlns='urn:x'/>")
    ) == (
        "bad-request",
        "invalid-payload",
    )
    assert refusal(lambda: set_(s, A, "<publish node='news'/>")) == ("bad-request", "item-required")
    assert refusal(lambda: publish(s, A, "news", payload="")) == ("bad-request", "payload-required")
    assert refusal(lambda: set_(s, A, "<publish node='news'><item/><item/></publish>")) == (
        "bad-request",
        None,
    )
    assert refusal(lambda: set_(s, A, "<publish><item/></publish>")) == (
        "bad-request",
        "nodeid-required",
    )
    assert refusal(lambda: publish(s, A, "nope")) == ("item-not-found", None)
    oset(s, A, "<configure node='news'>" + form(NODE_CONFIG, type="urn:y") + "</configure>")
    assert refusal(lambda: publish(s, A, "news")) == ("bad-request", "invalid-payload")
    publish(s, A, "news", payload="<ok xmlns='urn:y'/>")
    # a node's own smaller limit holds too
    oset(
        s, A, "<configure node='news'>" + form(NODE_CONFIG, max_payload_size="10") + "</configure>"
    )
    assert refusal(lambda: publish(s, A, "news", payload="<ok xmlns='urn:y'>0123456789</ok>")) == (
        "not-acceptable",
        "payload-too-big",
    )


def test_publish_to_a_collection_is_not_supported() -> None:
    s = generic()
    create(s, A, "coll", node_type="collection")
    assert feature_of(lambda: publish(s, A, "coll")) == "publish"


def test_transient_nodes_notify_and_keep_nothing() -> None:
    s = generic()
    open_node(s, persist_items="0")
    subscribe(s, B, "news")
    eff = publish(s, A, "news", "t1")
    assert eff.items_put == [] and s.nodes["news"].items == []
    assert recipients(eff) == ["bob@localhost"]
    assert (
        eff.notifications[0].message.find(f"{E}event/{E}items/{E}item/{{urn:x}}entry") is not None
    )
    # a transient notification-only node takes no item at all (4.3)
    oset(s, A, "<configure node='news'>" + form(NODE_CONFIG, deliver_payloads="0") + "</configure>")
    assert refusal(lambda: publish(s, A, "news")) == ("bad-request", "item-forbidden")
    eff = set_(s, A, "<publish node='news'/>")
    items = eff.notifications[0].message.find(f"{E}event/{E}items")
    assert items is not None and len(items) == 0


def test_notification_only_nodes_leave_the_payload_out() -> None:
    s = generic()
    open_node(s, deliver_payloads="0")
    subscribe(s, B, "news")
    eff = publish(s, A, "news", "i1")
    item = eff.notifications[0].message.find(f"{E}event/{E}items/{E}item")
    assert item is not None and item.get("id") == "i1" and len(item) == 0
    # the payload is kept: retrieval has it
    assert get(s, B, "<items node='news'/>").result.find(".//{urn:x}entry") is not None  # type: ignore[union-attr]
    publish(s, A, "news", "i2", payload="")  # an empty item is fine here


def test_itemreply_publisher_stamps_the_publisher() -> None:
    s = generic()
    open_node(s, itemreply="publisher")
    subscribe(s, B, "news")
    eff = publish(s, A, "news", "i1")
    assert (
        eff.notifications[0].message.find(f"{E}event/{E}items/{E}item").get("publisher")
        == "alice@localhost/r"
    )  # type: ignore[union-attr]
    got = get(s, B, "<items node='news'/>").result.find(f".//{q(PUBSUB, 'item')}")  # type: ignore[union-attr]
    assert got is not None and got.get("publisher") == "alice@localhost/r"


def test_notifications_off() -> None:
    s = generic()
    open_node(s, deliver_notifications="0")
    subscribe(s, B, "news")
    assert publish(s, A, "news").notifications == []


def test_publish_options_are_preconditions() -> None:
    s = generic()
    open_node(s)
    publish(s, A, "news", options=form(PUBLISH_OPTIONS, access_model="open", persist_items="true"))
    assert refusal(
        lambda: publish(s, A, "news", options=form(PUBLISH_OPTIONS, access_model="whitelist"))
    ) == (
        "conflict",
        "precondition-not-met",
    )
    assert refusal(
        lambda: publish(s, A, "news", options=form(PUBLISH_OPTIONS, **{"x-odd": "1"}))
    ) == (
        "conflict",
        "precondition-not-met",
    )
    # nothing was published by the refused requests
    assert [i.id for i in s.nodes["news"].items] == ["i1"]
    assert refusal(
        lambda: publish(s, A, "news", options=form(NODE_CONFIG, access_model="open"))
    ) == (
        "bad-request",
        None,
    )


def test_auto_create_on_a_generic_service() -> None:
    s = generic(auto_create=True)
    eff = publish(s, B, "fresh")
    assert eff.created == {"fresh"} and "fresh" in eff.changed
    assert s.nodes["fresh"].affiliations == {"bob@localhost": "owner"}
    assert [n for n, _ in eff.items_put] == ["fresh"]


# ---- retracting (7.2) -------------------------------------------------------------------------------


def test_retract() -> None:
    s = generic()
    open_node(s)
    subscribe(s, B, "news")
    publish(s, A, "news", "a")
    publish(s, A, "news", "b")
    eff = set_(s, A, "<retract node='news' notify='true'><item id='a'/></retract>")
    assert eff.result is None
    assert eff.items_retracted == [("news", ["a"])]
    (note,) = eff.notifications
    assert [r.get("id") for r in note.message.iter(f"{E}retract")] == ["a"]
    assert recipients(eff) == ["bob@localhost"]
    eff = set_(s, A, "<retract node='news' notify='false'><item id='b'/></retract>")
    assert eff.notifications == [] and s.nodes["news"].items == []
    # without the attribute, the node's notify_retract decides (on by default)
    publish(s, A, "news", "c")
    assert len(set_(s, A, "<retract node='news'><item id='c'/></retract>").notifications) == 1
    oset(s, A, "<configure node='news'>" + form(NODE_CONFIG, notify_retract="0") + "</configure>")
    publish(s, A, "news", "d")
    assert set_(s, A, "<retract node='news'><item id='d'/></retract>").notifications == []


def test_retract_refusals() -> None:
    s = generic()
    open_node(s)
    publish(s, A, "news", "a")
    assert refusal(lambda: set_(s, A, "<retract><item id='a'/></retract>")) == (
        "bad-request",
        "nodeid-required",
    )
    assert refusal(lambda: set_(s, A, "<retract node='news'/>")) == ("bad-request", "item-required")
    assert refusal(lambda: set_(s, A, "<retract node='news'><item/></retract>")) == (
        "bad-request",
        "item-required",
    )
    assert refusal(lambda: set_(s, A, "<retract node='news'><item id='zz'/></retract>")) == (
        "item-not-found",
        None,
    )
    assert refusal(lambda: set_(s, A, "<retract node='nope'><item id='a'/></retract>")) == (
        "item-not-found",
        None,
    )
    assert refusal(lambda: set_(s, B, "<retract node='news'><item id='a'/></retract>")) == (
        "forbidden",
        None,
    )
    create(s, A, "flash", persist_items="0")
    assert (
        feature_of(lambda: set_(s, A, "<retract node='flash'><item id='a'/></retract>"))
        == "persistent-items"
    )


def test_publish_only_retracts_its_own_items() -> None:
    s = generic()
    open_node(s)
    oset(
        s,
        A,
        "<affiliations node='news'><affiliation jid='bob@localhost' affiliation='publish-only'/>"
        "<affiliation jid='carol@localhost' affiliation='publisher'/></affiliations>",
    )
    publish(s, A, "news", "alices")
    publish(s, B, "news", "bobs")
    assert refusal(lambda: set_(s, B, "<retract node='news'><item id='alices'/></retract>")) == (
        "forbidden",
        None,
    )
    set_(s, B, "<retract node='news'><item id='bobs'/></retract>")
    # a publisher may retract any item (4.1)
    set_(s, C, "<retract node='news'><item id='alices'/></retract>")


# ---- creating, configuring, deleting, purging (8.1 - 8.5) --------------------------------------------


def test_create() -> None:
    s = generic()
    eff = create(s, A, "news")
    assert eff.created == {"news"} and eff.changed == {"news"}
    assert eff.result.find(q(PUBSUB, "create")).get("node") == "news"  # type: ignore[union-attr]
    node = s.nodes["news"]
    assert node.affiliations == {"alice@localhost": "owner"}
    assert (node.creator, node.created) == ("alice@localhost", 1000.0)
    assert refusal(lambda: create(s, B, "news")) == ("conflict", None)


def test_instant_node() -> None:
    s = generic()
    eff = set_(s, A, "<create/>")
    name = eff.result.find(q(PUBSUB, "create")).get("node")  # type: ignore[union-attr]
    assert name and name in s.nodes


def test_create_and_configure() -> None:
    s = generic()
    create(s, A, "private", access_model="whitelist", max_items="5", title="Mine")
    c = s.nodes["private"].config
    assert (c.access_model, c.max_items, c.title) == ("whitelist", 5, "Mine")
    assert refusal(lambda: create(s, A, "odd", access_model="secret")) == (
        "not-acceptable",
        "unsupported-access-model",
    )
    assert refusal(lambda: create(s, A, "odd", max_items="-3")) == ("not-acceptable", None)
    assert "odd" not in s.nodes
    conf = f"<configure node='x'>{form(NODE_CONFIG, title='t')}</configure>"
    assert refusal(lambda: set_(s, A, f"<create node='y'/>{conf}")) == ("bad-request", None)


def test_max_nodes() -> None:
    s = generic(limits=Limits(max_nodes=2))
    create(s, A, "a")
    create(s, A, "b")
    assert refusal(lambda: create(s, A, "c")) == ("not-allowed", "max-nodes-exceeded")
    # what storage has counts when the caller loaded only some nodes
    s2 = generic(limits=Limits(max_nodes=2), node_count=2)
    assert refusal(lambda: create(s2, A, "c")) == ("not-allowed", "max-nodes-exceeded")
    s3 = pep()
    s3.limits.max_nodes = 0
    assert refusal(lambda: publish(s3, A, "urn:x")) == ("not-allowed", "max-nodes-exceeded")


def test_configure_get_and_set() -> None:
    s = generic()
    open_node(s)
    eff = oget(s, A, "<configure node='news'/>")
    x = eff.result.find(f"{q(PUBSUB_OWNER, 'configure')}/{q(ns.DATA_FORMS, 'x')}")  # type: ignore[union-attr]
    assert x is not None and forms.parse_form(x, NODE_CONFIG)["pubsub#access_model"] == ["open"]
    eff = oset(
        s,
        A,
        "<configure node='news'>"
        + form(NODE_CONFIG, title="New", access_model="presence")
        + "</configure>",
    )
    assert eff.changed == {"news"} and eff.result is None
    assert (s.nodes["news"].config.title, s.nodes["news"].config.access_model) == (
        "New",
        "presence",
    )
    cancelled = etree.tostring(forms.build_form("cancel")).decode()
    assert oset(s, A, f"<configure node='news'>{cancelled}</configure>").changed == set()


def test_configure_refusals() -> None:
    s = generic()
    open_node(s)
    seq = s.nodes["news"].state_seq
    assert refusal(lambda: oget(s, B, "<configure node='news'/>")) == ("forbidden", None)
    assert refusal(lambda: oget(s, A, "<configure/>")) == ("bad-request", "nodeid-required")
    assert refusal(lambda: oget(s, A, "<configure node='nope'/>")) == ("item-not-found", None)
    assert refusal(lambda: oset(s, A, "<configure node='news'/>")) == ("bad-request", None)
    bad = form(NODE_CONFIG, title="changed", max_items="lots")
    assert refusal(lambda: oset(s, A, f"<configure node='news'>{bad}</configure>")) == (
        "not-acceptable",
        None,
    )
    assert s.nodes["news"].config.title == "" and s.nodes["news"].state_seq == seq


def test_notify_config() -> None:
    s = generic()
    open_node(s, notify_config="1")
    subscribe(s, B, "news")
    eff = oset(s, A, "<configure node='news'>" + form(NODE_CONFIG, title="T") + "</configure>")
    (note,) = eff.notifications
    conf = note.message.find(f"{E}event/{E}configuration")
    assert conf is not None and conf.get("node") == "news"
    x = conf.find(q(ns.DATA_FORMS, "x"))
    assert x is not None and x.get("type") == "result"
    assert forms.parse_form(x)["pubsub#title"] == ["T"]


def test_lowering_max_items_drops_items() -> None:
    s = generic()
    five(s)
    eff = oset(s, A, "<configure node='news'>" + form(NODE_CONFIG, max_items="2") + "</configure>")
    assert eff.items_retracted == [("news", ["i2", "i1", "i0"])]
    assert [i.id for i in s.nodes["news"].items] == ["i4", "i3"]
    eff = oset(
        s, A, "<configure node='news'>" + form(NODE_CONFIG, persist_items="0") + "</configure>"
    )
    assert eff.purged == ["news"] and s.nodes["news"].items == []


def test_default_node_configuration() -> None:
    eff = oget(generic(), A, "<default/>")
    x = eff.result.find(f"{q(PUBSUB_OWNER, 'default')}/{q(ns.DATA_FORMS, 'x')}")  # type: ignore[union-attr]
    assert x is not None and forms.parse_form(x)["pubsub#access_model"] == ["open"]
    eff = oget(pep(), A, "<default type='collection'/>")
    values = forms.parse_form(eff.result.find(f".//{q(ns.DATA_FORMS, 'x')}"))  # type: ignore[arg-type, union-attr]
    assert values["pubsub#access_model"] == ["presence"] and values["pubsub#node_type"] == [
        "collection"
    ]
    assert refusal(lambda: oget(generic(), A, "<default type='tree'/>")) == ("bad-request", None)


def test_delete_with_redirect() -> None:
    s = generic()
    open_node(s, access_model="authorize")
    subscribe(s, A, "news", jid=BOB)
    subscribe(s, C, "news")  # pending: told too (8.4.2)
    assert refusal(lambda: oset(s, B, "<delete node='news'/>")) == ("forbidden", None)
    eff = oset(
        s, A, "<delete node='news'><redirect uri='xmpp:pubsub.localhost?;node=new'/></delete>"
    )
    assert eff.deleted == ["news"] and "news" not in s.nodes
    (note,) = eff.notifications
    assert [str(j) for j in note.to] == ["bob@localhost", "carol@localhost"]
    redirect = note.message.find(f"{E}event/{E}delete/{E}redirect")
    assert redirect is not None and redirect.get("uri") == "xmpp:pubsub.localhost?;node=new"
    assert refusal(lambda: oset(s, A, "<delete node='news'/>")) == ("item-not-found", None)
    assert refusal(lambda: oset(s, A, "<delete/>")) == ("bad-request", "nodeid-required")


def test_purge() -> None:
    s = generic()
    five(s)
    subscribe(s, B, "news")
    oset(
        s,
        A,
        "<affiliations node='news'><affiliation jid='carol@localhost' affiliation='member'/></affiliations>",
    )
    assert refusal(lambda: oset(s, C, "<purge node='news'/>")) == ("forbidden", None)
    eff = oset(s, A, "<purge node='news'/>")
    assert eff.purged == ["news"] and s.nodes["news"].items == []
    # 8.5.2: one <purge/>, no retraction per item
    (note,) = eff.notifications
    assert note.message.find(f"{E}event/{E}purge").get("node") == "news"  # type: ignore[union-attr]
    assert recipients(eff) == ["bob@localhost"]
    oset(s, A, "<configure node='news'>" + form(NODE_CONFIG, notify_retract="0") + "</configure>")
    assert oset(s, A, "<purge node='news'/>").notifications == []
    create(s, A, "coll", node_type="collection")
    assert feature_of(lambda: oset(s, A, "<purge node='coll'/>")) == "persistent-items"


def test_manage_subscriptions() -> None:
    s = generic()
    open_node(s, access_model="authorize")
    subscribe(s, B, "news")  # pending
    subscribe(s, A, "news", jid=CAROL)  # the owner's: subscribed
    subs = oget(s, A, "<subscriptions node='news'/>").result.find(q(PUBSUB_OWNER, "subscriptions"))  # type: ignore[union-attr]
    # 8.8.1.2: not the pending ones
    assert [(x.get("jid"), x.get("subscription")) for x in subs] == [
        ("carol@localhost", "subscribed")
    ]  # type: ignore[union-attr]
    assert refusal(lambda: oget(s, B, "<subscriptions node='news'/>")) == ("forbidden", None)
    eff = oset(
        s,
        A,
        "<subscriptions node='news'><subscription jid='carol@localhost' subscription='none'/>"
        "<subscription jid='dave@localhost' subscription='subscribed'/></subscriptions>",
    )
    assert sorted(x.jid for x in s.nodes["news"].subscriptions) == [
        "bob@localhost",
        "dave@localhost",
    ]
    told = {
        str(n.to[0]): n.message.find(f"{E}event/{E}subscription").get("subscription")
        for n in events(eff, "subscription")
    }  # type: ignore[union-attr]
    assert told == {"carol@localhost": "none", "dave@localhost": "subscribed"}
    bad = "<subscriptions node='news'><subscription jid='eve@localhost' subscription='maybe'/></subscriptions>"
    assert refusal(lambda: oset(s, A, bad)) == ("not-acceptable", None)
    nojid = "<subscriptions node='news'><subscription subscription='none'/></subscriptions>"
    assert refusal(lambda: oset(s, A, nojid)) == ("bad-request", "jid-required")


def test_manage_affiliations() -> None:
    s = generic()
    open_node(s)
    subscribe(s, B, "news")
    affs = oget(s, A, "<affiliations node='news'/>").result.find(q(PUBSUB_OWNER, "affiliations"))  # type: ignore[union-attr]
    assert [(x.get("jid"), x.get("affiliation")) for x in affs] == [("alice@localhost", "owner")]  # type: ignore[union-attr]
    assert refusal(lambda: oget(s, B, "<affiliations node='news'/>")) == ("forbidden", None)
    eff = oset(
        s,
        A,
        "<affiliations node='news'><affiliation jid='bob@localhost' affiliation='outcast'/>"
        "<affiliation jid='carol@localhost' affiliation='publisher'/></affiliations>",
    )
    assert s.nodes["news"].affiliations == {
        "alice@localhost": "owner",
        "bob@localhost": "outcast",
        "carol@localhost": "publisher",
    }
    # the outcast's subscription goes, and it is told
    assert s.nodes["news"].subscriptions == []
    assert [str(n.to[0]) for n in events(eff, "subscription")] == ["bob@localhost"]
    oset(
        s,
        A,
        "<affiliations node='news'><affiliation jid='bob@localhost' affiliation='none'/></affiliations>",
    )
    assert "bob@localhost" not in s.nodes["news"].affiliations


def test_manage_affiliations_refusals() -> None:
    s = generic()
    open_node(s)
    seq = s.nodes["news"].state_seq
    last_owner = "<affiliations node='news'><affiliation jid='alice@localhost' affiliation='none'/></affiliations>"
    assert refusal(lambda: oset(s, A, last_owner)) == ("not-acceptable", None)
    twice = (
        "<affiliations node='news'><affiliation jid='bob@localhost' affiliation='member'/>"
        "<affiliation jid='bob@localhost/x' affiliation='outcast'/></affiliations>"
    )
    assert refusal(lambda: oset(s, A, twice)) == ("bad-request", None)
    odd = "<affiliations node='news'><affiliation jid='bob@localhost' affiliation='king'/></affiliations>"
    assert refusal(lambda: oset(s, A, odd)) == ("bad-request", None)
    assert s.nodes["news"].state_seq == seq
    # with another owner, one may step down
    oset(
        s,
        A,
        "<affiliations node='news'><affiliation jid='bob@localhost' affiliation='owner'/></affiliations>",
    )
    oset(s, A, last_owner)
    assert s.nodes["news"].affiliations == {"bob@localhost": "owner"}


def test_whitelist_members_leaving_lose_their_subscription() -> None:
    s = generic()
    open_node(s, access_model="whitelist")
    oset(
        s,
        A,
        "<affiliations node='news'><affiliation jid='bob@localhost' affiliation='member'/></affiliations>",
    )
    subscribe(s, B, "news")
    oset(
        s,
        A,
        "<affiliations node='news'><affiliation jid='bob@localhost' affiliation='none'/></affiliations>",
    )
    assert s.nodes["news"].subscriptions == []


def test_a_publisher_affiliation_approves_a_pending_subscription() -> None:
    s = generic()
    open_node(s, access_model="authorize")
    subscribe(s, B, "news")
    oset(
        s,
        A,
        "<affiliations node='news'><affiliation jid='bob@localhost' affiliation='publisher'/></affiliations>",
    )
    assert s.nodes["news"].subscription("bob@localhost").state == "subscribed"  # type: ignore[union-attr]


def test_requests_that_are_not_there() -> None:
    s = generic()
    assert refusal(lambda: set_(s, A, "<items node='x'/>")) == ("bad-request", None)
    assert refusal(lambda: get(s, A, "<frobnicate/>")) == ("feature-not-implemented", None)
    assert refusal(lambda: get(s, A, "")) == ("bad-request", None)
    assert refusal(lambda: oset(s, A, "<publish node='x'/>")) == ("feature-not-implemented", None)


# ---- PEP (XEP-0163, 0222, 0223) ----------------------------------------------------------------------


TUNE = "http://jabber.org/protocol/tune"


def test_pep_publish_creates_the_node_with_pep_defaults() -> None:
    s = pep()
    eff = publish(s, A, TUNE, "t1", f"<tune xmlns='{TUNE}'/>")
    assert eff.created == {TUNE}
    c = s.nodes[TUNE].config
    assert (c.access_model, c.max_items, c.send_last_published_item) == (
        "presence",
        1,
        "on_sub_and_presence",
    )
    # the account owns every node; nothing needs storing for it
    assert s.nodes[TUNE].affiliations == {}
    assert s.affiliation(s.nodes[TUNE], A) == "owner"
    (note,) = eff.notifications
    # no explicit subscriber: the caller fans it out to the owner and contacts
    assert note.pep and note.to == [] and note.presence_based
    assert note.message.get("from") == "alice@localhost"
    # one item: the next replaces it
    eff = publish(s, A, TUNE, "t2", f"<tune xmlns='{TUNE}'/>")
    assert [i.id for i in s.nodes[TUNE].items] == ["t2"] and eff.items_retracted == [(TUNE, ["t1"])]


def test_pep_only_the_account_publishes_and_creates() -> None:
    s = pep()
    assert refusal(lambda: publish(s, B, TUNE)) == ("item-not-found", None)
    assert refusal(lambda: create(s, B, "x")) == ("forbidden", None)
    publish(s, A, TUNE)
    assert refusal(lambda: publish(s, B, TUNE)) == ("forbidden", None)
    assert refusal(lambda: oget(s, B, f"<configure node='{TUNE}'/>")) == ("forbidden", None)


def test_pep_publish_options_create_the_node_so() -> None:
    s = pep()
    # XEP-0223: private data
    opts = form(PUBLISH_OPTIONS, persist_items="true", access_model="whitelist")
    publish(s, A, "storage:bookmarks", options=opts)
    assert s.nodes["storage:bookmarks"].config.access_model == "whitelist"
    assert refusal(lambda: get(s, B, "<items node='storage:bookmarks'/>", CONTACT)) == (
        "not-allowed",
        "closed-node",
    )
    # the same options again are met
    publish(s, A, "storage:bookmarks", "i2", options=opts)
    # XEP-0222: semi-public data for a roster group
    opts = form(
        PUBLISH_OPTIONS,
        persist_items="true",
        send_last_published_item="never",
        access_model="roster",
        roster_groups_allowed="Friends",
    )
    publish(s, A, "urn:xmpp:tmp:pubkey", options=opts)
    c = s.nodes["urn:xmpp:tmp:pubkey"].config
    assert (c.send_last_published_item, c.roster_groups_allowed) == ("never", ["Friends"])
    # a node whose configuration differs refuses (the client then reconfigures)
    assert refusal(
        lambda: publish(
            s, A, "storage:bookmarks", options=form(PUBLISH_OPTIONS, access_model="open")
        )
    ) == ("conflict", "precondition-not-met")
    bad = form(PUBLISH_OPTIONS, **{"x-unknown": "1"})
    assert refusal(lambda: publish(s, A, "fresh", options=bad)) == (
        "conflict",
        "precondition-not-met",
    )
    assert "fresh" not in s.nodes


def test_pep_contacts_read_per_access_model() -> None:
    s = pep()
    publish(s, A, TUNE, "t1", f"<tune xmlns='{TUNE}'/>")
    assert refusal(lambda: get(s, B, f"<items node='{TUNE}'/>")) == (
        "not-authorized",
        "presence-subscription-required",
    )
    assert item_ids(get(s, B, f"<items node='{TUNE}'/>", CONTACT).result) == ["t1"]
    node = s.nodes[TUNE]
    assert s.may_see(node, B, CONTACT) and not s.may_see(node, B, NOBODY)
    assert s.may_see(node, A, NOBODY)  # the account
    # disco#items lists what the contact may subscribe to or read (XEP-0163 7.2)
    assert [i.get("node") for i in s.disco_items(None, B, CONTACT)] == [TUNE]
    assert list(s.disco_items(None, B, NOBODY)) == []


def test_pep_last_item_on_presence() -> None:
    s = pep()
    publish(s, A, TUNE, "t1", f"<tune xmlns='{TUNE}'/>")
    (m,) = s.last_items(TUNE, B, CONTACT)
    assert m.get("to") is None and m.get("from") == "alice@localhost"
    assert m.find(f"{E}event/{E}items/{E}item").get("id") == "t1"  # type: ignore[union-attr]
    assert m.find(q(ns.DELAY, "delay")) is not None
    assert s.last_items(TUNE, B, NOBODY) == []
    assert s.last_items("nope", B, CONTACT) == []
    assert len(s.last_items(TUNE, A, NOBODY)) == 1  # the account's own resources too
    oset(
        s,
        A,
        f"<configure node='{TUNE}'>"
        + form(NODE_CONFIG, send_last_published_item="never")
        + "</configure>",
    )
    assert s.last_items(TUNE, B, CONTACT) == []


def test_pep_explicit_subscription_and_ownership() -> None:
    s = pep()
    publish(s, A, TUNE)
    eff = subscribe(s, B, TUNE, viewer=CONTACT)
    assert events(eff, "items")  # the last item on subscription
    eff = publish(s, A, TUNE, "t2")
    assert eff.notifications[0].pep and recipients(eff) == ["bob@localhost"]
    assert refusal(
        lambda: oset(
            s,
            A,
            f"<affiliations node='{TUNE}'><affiliation jid='alice@localhost' affiliation='none'/></affiliations>",
        )
    ) == ("not-acceptable", None)
    assert refusal(
        lambda: oset(
            s,
            A,
            f"<affiliations node='{TUNE}'><affiliation jid='bob@localhost' affiliation='owner'/></affiliations>",
        )
    ) == ("not-acceptable", None)
    affs = oget(s, A, f"<affiliations node='{TUNE}'/>").result.find(q(PUBSUB_OWNER, "affiliations"))  # type: ignore[union-attr]
    assert [(x.get("jid"), x.get("affiliation")) for x in affs] == [("alice@localhost", "owner")]  # type: ignore[union-attr]


def test_access_changed_cancels_subscriptions() -> None:
    s = pep()
    publish(s, A, TUNE)
    subscribe(s, B, TUNE, viewer=CONTACT)
    assert s.access_changed(B, CONTACT).changed == set()
    eff = s.access_changed(B, NOBODY)
    assert s.nodes[TUNE].subscriptions == [] and eff.changed == {TUNE}
    assert [str(n.to[0]) for n in events(eff, "subscription")] == ["bob@localhost"]


def test_purge_offline() -> None:
    s = generic()
    open_node(s, purge_offline="1")
    publish(s, A, "news", "a")
    publish(s, JID.parse("alice@localhost/other"), "news", "b")
    eff = s.publisher_gone(A)
    assert eff.items_retracted == [("news", ["a"])]
    assert [i.id for i in s.nodes["news"].items] == ["b"]


# ---- collections (XEP-0248) -------------------------------------------------------------------------


def tree(s: PubsubService) -> None:
    create(s, A, "blogs", node_type="collection")
    create(s, A, "poets", node_type="collection", collection="blogs")
    create(s, A, "hamlet", collection="poets")


def test_publishing_in_a_leaf_reaches_its_collections() -> None:
    s = generic()
    tree(s)
    subscribe(s, B, "blogs")  # items, all levels: the default
    subscribe(s, C, "poets")
    subscribe(s, JID.parse("dave@localhost"), "hamlet")
    subscribe(
        s,
        JID.parse("erin@localhost"),
        "blogs",
        options=form(SUBSCRIBE_OPTIONS, subscription_depth="1"),
    )
    subscribe(
        s,
        JID.parse("fred@localhost"),
        "blogs",
        options=form(SUBSCRIBE_OPTIONS, subscription_type="nodes"),
    )
    eff = publish(s, A, "hamlet", "h1")
    by_to = {str(j): n for n in eff.notifications for j in n.to}
    assert set(by_to) == {"dave@localhost", "carol@localhost", "bob@localhost"}
    # the event names the leaf; a SHIM header the collection it came through
    for who, coll in (("carol@localhost", "poets"), ("bob@localhost", "blogs")):
        m = by_to[who].message
        assert m.find(f"{E}event/{E}items").get("node") == "hamlet"  # type: ignore[union-attr]
        header = m.find(f"{q(SHIM, 'headers')}/{q(SHIM, 'header')}")
        assert header is not None and (header.get("name"), header.text) == ("Collection", coll)
    assert by_to["dave@localhost"].message.find(q(SHIM, "headers")) is None


def test_one_notification_per_subscriber_through_collections() -> None:
    s = generic()
    tree(s)
    subscribe(s, B, "blogs")
    subscribe(s, B, "hamlet")
    assert recipients(publish(s, A, "hamlet")) == ["bob@localhost"]


def test_collection_subscribers_do_not_get_what_the_leaf_does_not_show_them() -> None:
    s = generic()
    tree(s)
    subscribe(s, B, "blogs")
    oset(
        s,
        A,
        "<configure node='hamlet'>" + form(NODE_CONFIG, access_model="whitelist") + "</configure>",
    )
    assert recipients(publish(s, A, "hamlet")) == []


def test_collection_nodes_subscribers_hear_of_children() -> None:
    s = generic()
    create(s, A, "blogs", node_type="collection")
    subscribe(s, B, "blogs", options=form(SUBSCRIBE_OPTIONS, subscription_type="nodes"))
    eff = create(s, A, "new", collection="blogs")
    (note,) = eff.notifications
    assoc = note.message.find(f"{E}event/{E}collection/{E}associate")
    assert assoc is not None and assoc.get("node") == "new"
    assert [str(j) for j in note.to] == ["bob@localhost"]


def test_collection_rules() -> None:
    s = generic()
    create(s, A, "leaf")
    create(s, A, "coll", node_type="collection")
    create(s, B, "bobs", node_type="collection")
    assert refusal(lambda: create(s, A, "x", collection="leaf")) == (
        "not-allowed",
        "invalid-options",
    )
    assert refusal(lambda: create(s, A, "x", collection="nope")) == ("item-not-found", None)
    assert refusal(lambda: create(s, A, "x", collection="bobs")) == ("forbidden", None)
    create(s, A, "sub", node_type="collection", collection="coll")
    # a cycle
    cycle = "<configure node='coll'>" + form(NODE_CONFIG, collection="sub") + "</configure>"
    assert refusal(lambda: oset(s, A, cycle)) == ("not-allowed", "invalid-options")
    # a collection does not turn back into a leaf
    back = "<configure node='coll'>" + form(NODE_CONFIG, node_type="leaf") + "</configure>"
    assert refusal(lambda: oset(s, A, back)) == ("not-allowed", "invalid-options")


def test_a_leaf_turned_collection_loses_its_items() -> None:
    s = generic()
    five(s)
    eff = oset(
        s, A, "<configure node='news'>" + form(NODE_CONFIG, node_type="collection") + "</configure>"
    )
    assert eff.purged == ["news"] and s.nodes["news"].items == []
    assert not s.nodes["news"].config.persist_items


def test_deleting_a_collection_leaves_its_children_at_the_top() -> None:
    s = generic()
    tree(s)
    eff = oset(s, A, "<delete node='poets'/>")
    assert eff.deleted == ["poets"] and "hamlet" in eff.changed
    assert s.nodes["hamlet"].config.collection == ""
    assert "hamlet" in [i.get("node") for i in s.disco_items(None, B, NOBODY)]


def test_associate_and_dissociate() -> None:
    s = generic()
    create(s, A, "coll", node_type="collection")
    create(s, A, "leaf")
    eff = oset(s, A, "<collection node='coll'><associate node='leaf'/></collection>")
    assert eff.changed == {"leaf"} and s.nodes["leaf"].config.collection == "coll"
    assert [i.get("node") for i in s.disco_items("coll", B, NOBODY)] == ["leaf"]
    create(s, A, "other", node_type="collection")
    assert (
        feature_of(
            lambda: oset(s, A, "<collection node='other'><associate node='leaf'/></collection>")
        )
        == "multi-collection"
    )
    assert refusal(
        lambda: oset(s, A, "<collection node='other'><dissociate node='leaf'/></collection>")
    ) == ("bad-request", None)
    oset(s, A, "<collection node='coll'><dissociate node='leaf'/></collection>")
    assert s.nodes["leaf"].config.collection == ""
    create(s, B, "bobs")
    assert refusal(
        lambda: oset(s, A, "<collection node='coll'><associate node='bobs'/></collection>")
    ) == ("forbidden", None)


# ---- what a request needs loaded -----------------------------------------------------------------------


def test_wants() -> None:
    s = generic()
    assert s.wants(ps("<items node='n'/>")) == ["n"]
    assert s.wants(ps("<subscriptions/>")) is None
    assert s.wants(ps("<affiliations/>")) is None
    assert s.wants(ps("<subscriptions node='n'/>")) == ["n"]
    assert s.wants(ps("<delete node='n'/>", owner=True)) is None
    assert s.wants(
        ps(f"<create node='n'/><configure>{form(NODE_CONFIG, collection='p')}</configure>")
    ) == ["n", "p"]
    assert (
        s.wants(
            ps(f"<configure node='n'>{form(NODE_CONFIG, collection='p')}</configure>", owner=True)
        )
        is None
    )
    assert s.wants(
        ps(
            f"<publish node='n'/><publish-options>{form(PUBLISH_OPTIONS, collection='p')}</publish-options>"
        )
    ) == ["n", "p"]
    assert s.wants(ps("<collection node='c'><associate node='l'/></collection>", owner=True)) == [
        "c",
        "l",
    ]
    assert s.wants(ps("<default/>", owner=True)) == []
    assert s.wants(etree.fromstring(f"<query xmlns='{ns.DISCO_ITEMS}'/>")) is None
    assert s.wants(etree.fromstring(f"<query xmlns='{ns.DISCO_INFO}' node='n'/>")) == ["n"]
    assert s.wants(etree.fromstring(f"<query xmlns='{ns.DISCO_INFO}'/>")) == []


def test_a_refused_request_changes_nothing() -> None:
    s = pep()
    big = "<x xmlns='urn:x'>" + "y" * 70000 + "</x>"
    assert refusal(lambda: publish(s, A, TUNE, payload=big)) == (
        "not-acceptable",
        "payload-too-big",
    )
    # the auto-created node was not kept
    assert s.nodes == {}


def test_items_keep_their_own_payload_copy() -> None:
    s = generic()
    open_node(s)
    request = ps(
        "<publish node='news'><item id='a'><entry xmlns='urn:x'>hi</entry></item></publish>"
    )
    s.handle_iq(A, "set", request, NOBODY)
    request.find(".//{urn:x}entry").text = "changed"  # type: ignore[union-attr]
    stored = s.nodes["news"].items[0]
    assert isinstance(stored, Item) and stored.payload is not None and stored.payload.text == "hi"
