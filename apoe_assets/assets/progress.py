"""Progress lines for long loops, throttled: each line is an event in the run's log storage
(about 6 ms on the SQLite instance), so a line per batch would cost a long step seconds and
bury the UI's log."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

PROGRESS_SECONDS = 10.0
"""Least time between two progress lines of one loop."""


def throttled(report: Callable[..., None], seconds: float = PROGRESS_SECONDS
              ) -> Callable[..., None]:
    """``report(done, total, …)`` for the first call, then at most once every ``seconds``, and
    always when ``done`` reaches ``total``."""
    last = -math.inf

    def call(done: int, total: int, *rest: object) -> None:
        nonlocal last
        now = time.monotonic()
        if done >= total or now - last >= seconds:
            last = now
            report(done, total, *rest)

    return call
