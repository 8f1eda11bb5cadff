"""Throttled progress lines: the first, then one per interval, and always the last."""

from __future__ import annotations

import pytest

from apoe_assets.assets import progress as progress_module
from apoe_assets.assets.progress import throttled


def test_progress_logs_the_first_the_last_and_one_per_interval(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Forty batches 1 s apart under a 10-s interval: lines for batches 1, 11, 21, 31 (the
    first, then each 10 s after the last line) and 40 (the last), with their arguments.
    Catches a throttle that drops the final line (a finished loop would look unfinished),
    logs every batch, or passes the wrong arguments through."""
    clock = iter(range(100))
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: float(next(clock)))
    lines: list[tuple] = []
    report = throttled(lambda done, total, rate: lines.append((done, total, rate)), 10.0)
    for done in range(1, 41):
        report(done, 40, done * 0.5)
    assert lines == [(d, 40, d * 0.5) for d in (1, 11, 21, 31, 40)]
