"""The node's configuration and its forms (XEP-0060 8.2, 7.1.5, 6.3, 5.4)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from lxml import etree

from services.pubsub.node import (
    NODE_CONFIG,
    PUBLISH_OPTIONS,
    SUBSCRIBE_OPTIONS,
    Limits,
    Node,
    NodeConfig,
    Subscription,
    apply_form,
    check_preconditions,
    config_form,
    default_config,
    meta_form,
    options_form,
    parse_options,
)
from services.xmpp import forms
from services.xmpp.errors import StanzaError

LIMITS = Limits(max_items=50, max_payload=4096)


def submit(form_type: str | None, **fields: str | list[str]) -> etree._Element:
    out = [] if form_type is None else [forms.Field("FORM_TYPE", "hidden", values=[form_type])]
    for var, value in fields.items():
        values = value if isinstance(value, list) else [value]
        out.append(forms.Field(f"pubsub#{var}", values=values))
    return forms.build_form("submit", None, out)


def refusal(fn: Callable[[], object]) -> tuple[str, str | None]:
    with pytest.raises(StanzaError) as info:
        fn()
    app = info.value.app_condition
    return info.value.condition.value, etree.QName(app).localname if app is not None else None


def test_pep_defaults_follow_xep_0163() -> None:
    c = default_config(True, LIMITS)
    assert c.access_model == "presence"
    assert c.max_items == 1
    assert c.send_last_published_item == "on_sub_and_presence"
    assert c.presence_based_delivery
    assert c.deliver_notifications and c.deliver_payloads and c.persist_items


def test_generic_defaults() -> None:
    c = default_config(False, LIMITS)
    assert (c.access_model, c.publish_model, c.node_type) == ("open", "publishers", "leaf")
    assert c.max_items == 10
    assert c.max_payload_size == LIMITS.max_payload
    assert default_config(False, Limits(max_items=3)).max_items == 3
    coll = default_config(False, LIMITS, "collection")
    assert coll.node_type == "collection" and not coll.persist_items


def test_config_form_round_trips() -> None:
    c = default_config(False, LIMITS)
    c.title, c.roster_groups_allowed, c.access_model = "News", ["Friends", "Family"], "roster"
    shown = config_form(c, LIMITS)
    assert forms.form_type(shown) == NODE_CONFIG
    values = forms.parse_form(shown)
    assert values["pubsub#title"] == ["News"]
    assert values["pubsub#access_model"] == ["roster"]
    submitted = forms.build_form(
        "submit",
        NODE_CONFIG,
        [forms.Field(k, values=v) for k, v in values.items() if k != "FORM_TYPE"],
    )
    again = NodeConfig()
    apply_form(again, submitted, LIMITS)
    assert again == c


def test_apply_form_reads_values() -> None:
    c = default_config(False, LIMITS)
    apply_form(
        c,
        submit(
            NODE_CONFIG,
            title="T",
            max_items="max",
            persist_items="false",
            notify_retract="1",
            item_expire="60",
            send_last_published_item="never",
            roster_groups_allowed=["a", "b", "a"],
        ),
        LIMITS,
    )
    assert c.title == "T"
    assert c.max_items == LIMITS.max_items  # "max" is the server's limit
    assert not c.persist_items and c.notify_retract
    assert c.item_expire == 60 and c.send_last_published_item == "never"
    assert c.roster_groups_allowed == ["a", "b"]


def test_apply_form_without_form_type_is_taken() -> None:
    c = default_config(False, LIMITS)
    apply_form(c, submit(None, title="x"), LIMITS)
    assert c.title == "x"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_items", "0"),
        ("max_items", "51"),
        ("max_items", "many"),
        ("max_payload_size", "5000"),
        ("item_expire", "-1"),
        ("persist_items", "yes"),
        ("publish_model", "anyone"),
        ("send_last_published_item", "always"),
        ("node_type", "tree"),
        ("title", "x" * 2000),
    ],
)
def test_apply_form_refuses_bad_values_and_changes_nothing(field: str, value: str) -> None:
    c = default_config(False, LIMITS)
    before = NodeConfig(**{f: getattr(c, f) for f in c.__slots__})
    form = submit(NODE_CONFIG, **{"description": "changed", field: value})
    assert refusal(lambda: apply_form(c, form, LIMITS)) == ("not-acceptable", None)
    assert c == before


def test_unknown_access_model_names_it() -> None:
    c = default_config(False, LIMITS)
    form = submit(NODE_CONFIG, access_model="friends-only")
    assert refusal(lambda: apply_form(c, form, LIMITS)) == (
        "not-acceptable",
        "unsupported-access-model",
    )


def test_one_parent_only() -> None:
    c = default_config(False, LIMITS)
    form = submit(NODE_CONFIG, collection=["a", "b"])
    assert refusal(lambda: apply_form(c, form, LIMITS)) == (
        "feature-not-implemented",
        "unsupported",
    )


def test_wrong_form_type_is_bad_request() -> None:
    c = default_config(False, LIMITS)
    form = submit(SUBSCRIBE_OPTIONS, title="x")
    assert refusal(lambda: apply_form(c, form, LIMITS)) == ("bad-request", None)


def test_preconditions() -> None:
    c = default_config(True, LIMITS)
    check_preconditions(
        c, submit(PUBLISH_OPTIONS, access_model="presence", persist_items="1"), LIMITS
    )
    # booleans compare as values, lists as sets
    c.roster_groups_allowed = ["a", "b"]
    check_preconditions(
        c, submit(PUBLISH_OPTIONS, persist_items="true", roster_groups_allowed=["b", "a"]), LIMITS
    )
    for form in (
        submit(PUBLISH_OPTIONS, access_model="whitelist"),
        submit(PUBLISH_OPTIONS, max_items="max"),
        submit(PUBLISH_OPTIONS, **{"x-unknown": "1"}),
        submit(PUBLISH_OPTIONS, max_items="100000"),  # never acceptable: never met
    ):
        assert refusal(lambda form=form: check_preconditions(c, form, LIMITS)) == (
            "conflict",
            "precondition-not-met",
        )
    # publish-options must say so (7.1.5)
    assert refusal(
        lambda: check_preconditions(c, submit(None, access_model="presence"), LIMITS)
    ) == (
        "bad-request",
        None,
    )


def test_subscription_options() -> None:
    opts = parse_options(
        forms.build_form(
            "submit", SUBSCRIBE_OPTIONS, [forms.Field("pubsub#deliver", values=["false"])]
        )
    )
    assert opts == {"pubsub#deliver": ["0"]}
    assert not Subscription("a@b", "1", "subscribed", opts).deliver
    form = options_form(opts, collection=True, type_="form")
    values = forms.parse_form(form, SUBSCRIBE_OPTIONS)
    assert values["pubsub#deliver"] == ["0"]
    assert values["pubsub#subscription_type"] == ["items"]
    assert values["pubsub#subscription_depth"] == ["all"]
    assert "pubsub#subscription_type" not in forms.parse_form(options_form({}, False, "form"))
    for bad in (
        [forms.Field("pubsub#deliver", values=["maybe"])],
        [forms.Field("pubsub#subscription_depth", values=["-2"])],
        [forms.Field("pubsub#include_body", values=["1"])],  # not offered
    ):
        form = forms.build_form("submit", SUBSCRIBE_OPTIONS, bad)
        assert refusal(lambda form=form: parse_options(form)) == ("bad-request", "invalid-options")


def test_subscription_depth_and_type() -> None:
    s = Subscription(
        "a@b",
        "1",
        "subscribed",
        {"pubsub#subscription_depth": ["1"], "pubsub#subscription_type": ["nodes"]},
    )
    assert (s.depth, s.subscription_type) == (1, "nodes")
    assert Subscription("a@b", "1", "pending").active is False
    assert Subscription("a@b", "1", "unconfigured").active is True


def test_meta_form() -> None:
    node = Node(
        "n", default_config(False, LIMITS), {"b@x": "publisher"}, creator="a@x", created=86400.0
    )
    node.config.title = "Title"
    node.subscriptions.append(Subscription("c@x", "1", "subscribed"))
    node.subscriptions.append(Subscription("d@x", "2", "pending"))
    values = forms.parse_form(meta_form(node, LIMITS, ["a@x"]))
    assert values["FORM_TYPE"] == ["http://jabber.org/protocol/pubsub#meta-data"]
    assert values["pubsub#title"] == ["Title"]
    assert values["pubsub#owner"] == ["a@x"]
    assert values["pubsub#publisher"] == ["b@x"]
    assert values["pubsub#num_subscribers"] == ["1"]
    assert values["pubsub#creation_date"] == ["1970-01-02T00:00:00Z"]
