"""Publish-subscribe runs against every mode, as the server-core suite does."""

from __future__ import annotations

import pytest

from ..e2e import conftest as e2e_conftest


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    e2e_conftest.pytest_generate_tests(metafunc)
