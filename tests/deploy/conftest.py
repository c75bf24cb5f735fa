"""Fixtures for the deployment checks: the kustomize builds of every overlay
and a Node.js workspace for the JavaScript validators."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from .tooling import OVERLAYS, ROOT, kubectl, load_yaml_all, node_workspace, run


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # These drive external tools that `make tools` installs; `make test` runs
    # them, `make test-fast` (no tools step) leaves them out.
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def built() -> dict[str, list[dict[str, Any]]]:
    """overlay name -> the objects `kubectl kustomize k8s/overlays/<name>` renders."""
    out: dict[str, list[dict[str, Any]]] = {}
    for overlay in OVERLAYS:
        res = run([kubectl(), "kustomize", ROOT / "k8s" / "overlays" / overlay])
        assert res.returncode == 0, res.output
        out[overlay] = load_yaml_all(res.stdout)
        assert out[overlay], f"overlay {overlay} renders nothing"
    return out


@pytest.fixture(scope="session")
def node_ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return node_workspace(tmp_path_factory.mktemp("node-ws"))
