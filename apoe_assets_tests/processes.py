"""Stopping the servers and browsers the tests start, each the leader of its own process group
(``subprocess.Popen(..., start_new_session=True)``)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from contextlib import suppress
from pathlib import Path

GONE_SECONDS = 10
"""Longest wait, after SIGKILL, for the group's last processes to be gone."""


def running_members(group: int) -> list[int]:
    """PIDs of the processes of process group ``group`` that are still running (zombies,
    which no longer run and hold no files, left out)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == group and fields[0] != "Z":
                members.append(int(stat.parent.name))
    return members


def stop_group(process: subprocess.Popen, seconds: float) -> None:
    """SIGTERM to ``process``'s whole group, up to ``seconds`` for ``process`` to exit, then
    SIGKILL to whatever of the group is left; returns once none of it runs, so that nothing
    writes into the folders its caller removes next."""
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with suppress(subprocess.TimeoutExpired):
        process.wait(timeout=seconds)
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    deadline = time.monotonic() + GONE_SECONDS
    while running_members(process.pid):
        assert time.monotonic() < deadline, (
            f"processes {running_members(process.pid)} of group {process.pid} outlived SIGKILL")
        time.sleep(0.1)
