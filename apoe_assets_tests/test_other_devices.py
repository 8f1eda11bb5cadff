"""The Enformer tests and the ``enformer_predictions`` asset again with three host devices
(batches sharded three ways), in a fresh process: catches a test or code path that assumes one
device (batch sizes, progress steps). The instruction-set runs are in ``test_other_cpus.py``;
this one has a file of its own so that the two test workers can share the load."""

from __future__ import annotations

import pytest

from apoe_assets_tests.test_other_cpus import ASSET_TESTS, ENFORMER_TESTS, run_under

pytestmark = pytest.mark.other_cpus


def test_enformer_tests_pass_on_three_devices() -> None:
    run_under("--xla_force_host_platform_device_count=3", 3, ENFORMER_TESTS + ASSET_TESTS)
