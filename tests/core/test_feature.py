"""The feature declaration and its hook chain (services/core/feature.py): what
fails at start, and the order and effect of each chain."""

from __future__ import annotations

import pytest
from lxml import etree

from services.core.feature import DROP, Feature, FeatureError, FeatureSet
from services.core.routing import Envelope
from services.features import catalog
from services.xmpp.jid import JID


async def _handler(ctx, env, payload):  # pragma: no cover - never called
    return None


def test_two_features_claiming_one_iq_fail_at_start() -> None:
    a = Feature("a", server_iq={("{urn:x}q", "get"): _handler})
    b = Feature("b", server_iq={("{urn:x}q", "get"): _handler})
    with pytest.raises(FeatureError, match="claimed by both 'a' and 'b'"):
        FeatureSet([a, b])
    # the same payload in another table, or another type, is no clash
    c = Feature("c", account_iq={("{urn:x}q", "get"): _handler})
    d = Feature("d", server_iq={("{urn:x}q", "set"): _handler})
    FeatureSet([a, c, d])


def test_edge_iq_hooks_clash_too() -> None:
    def hook(ctx, env):
        return None

    with pytest.raises(FeatureError):
        FeatureSet(
            [
                Feature("a", edge_iq={("{urn:x}q", "set"): hook}),
                Feature("b", edge_iq={("{urn:x}q", "set"): hook}),
            ]
        )


def test_a_missing_dependency_or_a_feature_loaded_twice_fail_at_start() -> None:
    with pytest.raises(FeatureError, match="needs \\['roster'\\]"):
        FeatureSet([Feature("presence", depends=("roster",))])
    with pytest.raises(FeatureError, match="loaded twice"):
        FeatureSet([Feature("x"), Feature("x")])


def test_the_shipped_features_load_together() -> None:
    fs = FeatureSet(catalog.load_features())
    assert "offline_messages" in fs.storage_needs()
    assert fs.filters and fs.presence_out and fs.presence_in and fs.undelivered
    assert fs.session_available


def _env() -> Envelope:
    el = etree.fromstring("<message xmlns='jabber:client' to='b@x'><body>hi</body></message>")
    return Envelope.of(el, JID.parse("a@x/r"), JID.parse("b@x"))


async def test_chains_run_in_load_order_and_stop_where_they_say() -> None:
    seen: list[str] = []

    def filt(name, verdict):
        async def f(ctx, env):
            seen.append(name)
            return verdict

        return f

    def handler(name, done):
        async def h(ctx, env):
            seen.append(name)
            return done

        return h

    fs = FeatureSet(
        [
            Feature("a", filters=(filt("fa", None),), undelivered=(handler("ua", False),)),
            Feature("b", filters=(filt("fb", DROP),), undelivered=(handler("ub", True),)),
            Feature("c", filters=(filt("fc", None),), undelivered=(handler("uc", True),)),
        ]
    )
    ctx = object()
    assert await fs.filter(ctx, _env()) is False  # type: ignore[arg-type]
    assert seen == ["fa", "fb"]  # a DROP ends the chain
    seen.clear()
    assert await fs.handle(fs.undelivered, ctx, _env()) is True  # type: ignore[arg-type]
    assert seen == ["ua", "ub"]  # the first that handles it ends the chain


def test_the_storage_each_feature_declares_exists_in_the_schema() -> None:
    """A feature's storage needs name tables the migrations create."""
    import re
    from importlib.resources import files

    sql = "".join(f.read_text() for f in files("services.storage").joinpath("migrations").iterdir())
    tables = set(re.findall(r"CREATE TABLE (\w+)", sql))
    for f in catalog.load_features():
        missing = set(f.storage) - tables
        assert not missing, f"{f.name} needs {missing}, which no migration creates"
