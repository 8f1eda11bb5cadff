"""The demo study, loaded once per test process and shared with the asset tests."""

from __future__ import annotations

import pytest

from apoe_assets_tests.ml.demo import Demo, shared_demo


@pytest.fixture(scope="session")
def demo() -> Demo:
    return shared_demo()
