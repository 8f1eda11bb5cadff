"""``ordered_map``: results in the jobs' order whatever order the workers finish in, a job's
error raised at its turn, only a few jobs a worker in flight, and workers kept for the
process's next map without keeping a process from exiting; ``available_cores`` within a
container's CPU limit."""

from __future__ import annotations

import multiprocessing
import os
import time
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import pytest

from apoe_assets.parallel import available_cores, ordered_map, processes_for


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


def worker_pid(_: int) -> int:
    """The worker's process ID, after a moment, so that both workers take jobs."""
    time.sleep(0.2)
    return os.getpid()


def die(_: int) -> None:
    """A worker killed mid-job, as the OOM killer would."""
    os._exit(1)


def test_the_workers_are_kept_for_the_next_map() -> None:
    """A second map in the same process runs in the same worker processes (catches a pool
    started fresh each time: each new interpreter imports the code location, about 3 s of
    both cores, once per stage of ``make demo``)."""
    first = set(ordered_map(worker_pid, [(v,) for v in range(4)], 2))
    second = set(ordered_map(worker_pid, [(v,) for v in range(4)], 2))
    assert len(first) == 2 and first == second
    assert os.getpid() not in first


def test_a_dead_worker_fails_its_map_and_the_next_map_starts_fresh_ones() -> None:
    """A worker that dies breaks the pool: its map raises, and the next one gets new
    workers instead of the broken pool."""
    before = set(ordered_map(worker_pid, [(v,) for v in range(4)], 2))
    with pytest.raises(BrokenProcessPool):
        list(ordered_map(die, [(0,), (1,)], 2))
    after = set(ordered_map(worker_pid, [(v,) for v in range(4)], 2))
    assert len(after) == 2 and not before & after


def _map_and_return(queue: multiprocessing.Queue) -> None:
    queue.put(sorted(set(ordered_map(worker_pid, [(v,) for v in range(4)], 2))))


def test_a_child_process_holding_the_kept_workers_exits() -> None:
    """A spawned process (as a Dagster step process is) that mapped and returned exits,
    and takes its kept workers with it (catches the kept pool left running: at exit a
    ``multiprocessing`` child joins its children, and idle workers never end)."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=_map_and_return, args=(queue,))
    child.start()
    workers = queue.get(timeout=60)
    child.join(timeout=30)
    stuck = child.is_alive()
    if stuck:
        child.kill()
    assert not stuck, "the child process waited on its kept workers at exit"
    assert child.exitcode == 0
    for pid in workers:  # the workers are gone too, not orphaned
        assert not Path(f"/proc/{pid}").exists() or _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] == "Z"
    except OSError:
        return True


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


def test_light_steps_keep_few_jobs_in_process() -> None:
    """One worker per core, at most one a job, and none below the minimum: three genes of a
    light step stay in the step's process (starting workers would cost more than they save),
    twelve go to every core. Catches a minimum that is ignored or a pool wider than the jobs."""
    cores = available_cores()
    assert processes_for(3, minimum=4) == 1
    assert processes_for(12, minimum=4) == min(cores, 12)
    assert processes_for(1) == 1
    assert processes_for(2) == min(cores, 2)
