"""The garbage-collector settings applied at process start."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from services.platform.config import Settings
from services.platform.gctune import tune


@pytest.fixture
def restore_gc() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


def test_tune_freezes_startup_objects_and_raises_the_threshold(restore_gc: None) -> None:
    gc.unfreeze()
    _, g1, g2 = gc.get_threshold()
    tune(12345)
    assert gc.get_threshold() == (12345, g1, g2)
    assert gc.get_freeze_count() > 1000  # the modules loaded so far, at least


def test_zero_keeps_pythons_threshold(restore_gc: None) -> None:
    before = gc.get_threshold()
    tune(0)
    assert gc.get_threshold() == before


def test_the_default_setting_raises_it() -> None:
    assert Settings().gc_threshold > gc.get_threshold()[0]
