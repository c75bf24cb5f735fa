"""The server-core suite runs against every mode: the embedded default and a
real cluster of processes (set XMPPD_TEST_MODES=embedded to skip the latter
in a quick loop; `make test` runs both)."""

from __future__ import annotations

import os

import pytest

MODES = [
    m.strip()
    for m in os.environ.get("XMPPD_TEST_MODES", "embedded,cluster").split(",")
    if m.strip()
]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "mode" not in metafunc.fixturenames:
        return
    if metafunc.definition.get_closest_marker("embedded_only"):
        modes = ["embedded"]
    elif metafunc.definition.get_closest_marker("cluster_only"):
        modes = ["cluster"]  # about the cluster itself: never "skipped" in embedded mode
    else:
        modes = MODES
    metafunc.parametrize("mode", modes, indirect=True)
