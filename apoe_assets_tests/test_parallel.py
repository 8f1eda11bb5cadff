"""``ordered_map``: results in the jobs' order whatever order the workers finish in, a job's
error raised at its turn, and only a few jobs a worker in flight; ``available_cores`` within
a container's CPU limit."""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path

import pytest

from apoe_assets.parallel import available_cores, ordered_map


def slow_square(value: int, delay: float) -> int:
    """``value``², after ``delay`` seconds (a worker's task)."""
    time.sleep(delay)
    if value < 0:
        raise ValueError(f"negative: {value}")
    return value * value


@pytest.mark.parametrize("processes", [1, 2])
def test_results_come_in_the_jobs_order(processes: int) -> None:
    """Early jobs sleep longest, so two workers finish them out of order; the results still
    follow the jobs (catches a map that yields in completion order)."""
    jobs = [(v, 0.3 - 0.05 * v) for v in range(6)]
    assert list(ordered_map(slow_square, jobs, processes)) == [v * v for v in range(6)]


def test_a_jobs_error_is_raised_at_its_turn() -> None:
    results = ordered_map(slow_square, [(2, 0.0), (-1, 0.0), (3, 0.0)], 2)
    assert next(results) == 4
    with pytest.raises(ValueError, match="negative: -1"):
        next(results)


def test_at_most_two_jobs_a_worker_are_taken_ahead() -> None:
    """When the first result arrives, the job generator has been read no further than two
    jobs a worker (catches a pool that takes every gene's inputs at once)."""
    taken = []

    def jobs():
        for v in range(20):
            taken.append(v)
            yield v, 0.0

    results = ordered_map(slow_square, jobs(), 2)
    assert next(results) == 0
    assert len(taken) == 4
    assert list(results) == [v * v for v in range(1, 20)]


def _map_in_a_daemon(queue: multiprocessing.Queue) -> None:
    try:
        queue.put(list(ordered_map(slow_square, [(v, 0.0) for v in range(4)], 2)))
    except Exception as error:  # the parent reports it
        queue.put(repr(error))


def test_a_daemonic_process_maps_in_itself() -> None:
    """In a daemonic process (a Celery worker's pool process), which may not start children,
    the jobs run in the process itself (catches "daemonic processes are not allowed to have
    children", which failed `prs_models` on the Celery workers)."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    daemon = context.Process(target=_map_in_a_daemon, args=(queue,), daemon=True)
    daemon.start()
    assert queue.get(timeout=60) == [0, 1, 4, 9]
    daemon.join(timeout=10)


@pytest.mark.parametrize(("limit", "expected"), [
    ("150000 100000", 1),     # 1.5 CPUs: one whole core
    ("50000 100000", 1),      # under one CPU: still one worker
    ("max 100000", None),     # no limit: the affinity mask
    ("6400000 100000", None),  # 64 CPUs on a smaller machine: the affinity mask
    ("garbled", None),
])
def test_cores_stay_within_the_containers_cpu_limit(tmp_path: Path, limit: str,
                                                    expected: int | None) -> None:
    """A cgroup v2 ``cpu.max`` caps the cores a pool uses (catches a pod on a big node that
    starts one worker per node core); no limit, or an unreadable one, leaves the affinity
    mask."""
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text(limit + "\n")
    mask = len(os.sched_getaffinity(0))
    assert available_cores(cpu_max) == (min(expected, mask) if expected else mask)
    assert available_cores(tmp_path / "absent") == mask
