"""The README's generated tables must match the code they describe."""

from __future__ import annotations

from pathlib import Path

from services.features.catalog import features_markdown, load_features
from services.platform.config import settings_table

README = (Path(__file__).parent.parent / "README.md").read_text()


def test_settings_table_is_current():
    assert settings_table() in README, "run `xmppctl config-doc` and paste it into README.md"


def test_feature_table_is_current():
    assert features_markdown(load_features()) in README, "run `xmppctl features` into README.md"


def test_two_commands_come_first():
    head = README[:800]
    assert "make run" in head and "make test" in head
