"""The Enformer tests again with three host devices (batches sharded three ways) and XLA
limited to AVX2, in a fresh process: catches a test or code path that assumes one device
(batch sizes, progress steps), and a tolerance that holds only for this CPU's kernels. The two
are independent, so one run covers both (the suite's time); the single-device SSE4.2 run is in
``test_other_cpus.py``, in a file of its own so that the two test workers can share the load.
The ``enformer_predictions`` asset is not rerun here (its fixture alone takes about a minute):
it predicts through the same ``Predictor`` whose sharded batches ``test_inference`` checks."""

from __future__ import annotations

import pytest

from apoe_assets_tests.test_other_cpus import ENFORMER_TESTS, run_under

pytestmark = pytest.mark.other_cpus


def test_enformer_tests_pass_on_three_devices_with_avx2() -> None:
    run_under("--xla_cpu_max_isa=AVX2 --xla_force_host_platform_device_count=3", 3,
              ENFORMER_TESTS)
