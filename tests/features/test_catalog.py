from __future__ import annotations

import pytest

from services.core.feature import Feature, FeatureSet
from services.features import catalog, disco, ping

# everything but the roster and what needs it
MINE = [
    m
    for m in catalog.FEATURE_MODULES
    if m not in ("services.features.roster", "services.features.presence")
]


def test_module_list() -> None:
    assert "services.features.roster" in catalog.FEATURE_MODULES
    assert len(set(catalog.FEATURE_MODULES)) == len(catalog.FEATURE_MODULES)
    for name in ("disco", "session", "register", "version", "ping", "time", "last"):
        assert f"services.features.{name}" in catalog.FEATURE_MODULES
    for name in ("vcard", "private", "blocking"):
        assert f"services.features.{name}" in catalog.FEATURE_MODULES


def test_load_selected() -> None:
    got = catalog.load_features(MINE)
    assert all(isinstance(f, Feature) for f in got)
    assert [f.name for f in got] == [m.rsplit(".", 1)[-1] for m in MINE]
    assert catalog.load_features(["disco", "services.features.ping", "disco"]) == [
        disco.FEATURE,
        ping.FEATURE,
    ]
    # the handlers of different modules do not collide
    fs = FeatureSet(got)
    assert len(fs.server_iq) == sum(len(f.server_iq) for f in got)
    assert len(fs.account_iq) == sum(len(f.account_iq) for f in got)


def test_load_unknown() -> None:
    with pytest.raises(ValueError):
        catalog.load_features(["nope"])


def test_load_all() -> None:
    got = catalog.load_features()
    assert len(got) == len(catalog.FEATURE_MODULES)


def test_markdown() -> None:
    md = catalog.features_markdown(catalog.load_features(MINE))
    lines = md.splitlines()
    assert lines[0] == "| XEP | title | module |"
    assert lines[1] == "|---|---|---|"
    rows = lines[2:]
    xeps = [r.split("|")[1].strip() for r in rows]
    numbers = [x.split("]")[0].lstrip("[") for x in xeps]
    xep_numbers = [n for n in numbers if n.startswith("XEP-")]
    assert xep_numbers == sorted(xep_numbers)
    assert numbers[: len(xep_numbers)] == xep_numbers  # RFCs come after the XEPs
    assert len(numbers) == len(set(numbers))
    for x in ("XEP-0030", "XEP-0049", "XEP-0048", "XEP-0077", "XEP-0191", "XEP-0199"):
        assert x in numbers
    row = next(r for r in rows if "XEP-0030]" in r)
    assert "(https://xmpp.org/extensions/xep-0030.html)" in row
    assert "Service Discovery" in row and "`disco`" in row
    shared = next(r for r in rows if "XEP-0004]" in r)
    assert "`disco`" in shared and "`register`" in shared


def test_markdown_unknown_and_non_xep_entries() -> None:
    md = catalog.features_markdown(
        [Feature("a", xeps=("XEP-9999",)), Feature("b", xeps=("RFC 6121", "XEP-0001"))]
    )
    rows = md.splitlines()[2:]
    assert rows[0].startswith("| [XEP-0001]")
    assert rows[1].startswith("| [XEP-9999]") and "`a`" in rows[1]
    assert rows[2].startswith("| RFC 6121 |")
