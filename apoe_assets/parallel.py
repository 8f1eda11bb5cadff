"""Process pools for CPU-bound work on every core: the per-gene fits of a range of genes
(genotype models, Enformer models, multi-gene stacking) in one spawned worker per core, the
workers kept for the process's next stage."""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.util import Finalize
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

SINGLE_THREAD = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
"""cgroup v2's CPU limit of this container or Kubernetes pod: ``<quota> <period>`` or
``max <period>``."""


def available_cores(cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """CPU cores this process may use: its affinity mask (where the OS has one), capped by a
    cgroup CPU limit (a pod limited to 2 CPUs on a 64-core node gets 2, not 64)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1)
    try:
        quota, period = cpu_max.read_text().split()
        if quota != "max":
            cores = min(cores, max(1, int(quota) // int(period)))
    except (OSError, ValueError):
        pass  # no cgroup v2 limit here
    return cores


LIGHT_JOBS_FOR_WORKERS = 4
"""Fewest jobs of a light step (about a second each, such as one gene's eQTL scan) that are
handed to worker processes: starting the workers costs about 3 s of both cores, which a
process pays once (the pool is kept), but every step process of Dagster's multiprocess
executor pays again."""


def processes_for(jobs: int, minimum: int = 1) -> int:
    """Worker processes for ``jobs`` jobs: one per available core, at most one a job, and
    none (1: in this process) below ``minimum`` jobs."""
    return min(available_cores(), jobs) if jobs >= minimum else 1


def process_pool(processes: int) -> ProcessPoolExecutor:
    """A pool of ``processes`` fresh interpreters (``spawn``: a forked copy of a process that
    holds JAX's or BLAS's threads can deadlock), each with one BLAS/OpenMP thread: the
    workers already fill the cores, and a worker's idle BLAS threads would spin on the
    others' cores."""
    return ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_one_blas_thread)


_BEFORE_QUEUES = 20
"""Exit priority of a kept pool's shutdown: above the 10 of ``multiprocessing`` queues' own
finalisers, which stop the thread that would feed the workers their stop signal."""

_SHARED_POOLS: dict[tuple[int, int], tuple[ProcessPoolExecutor, Finalize]] = {}
"""The kept pools by (owning process ID, workers), each with the finaliser that shuts it
down."""


def shared_pool(processes: int) -> ProcessPoolExecutor:
    """This process's :func:`process_pool` of ``processes`` workers, started on first use and
    kept until the process exits or a worker dies: the stages of a run executed in one
    process (``make demo``'s genotype models, Enformer models and stacking) reuse its
    workers, where each fresh spawned interpreter would first import the code location
    (about 3 s of both cores).

    The pool is shut down by a ``multiprocessing`` finaliser that runs before a child process
    joins its children at exit, and before its queues close (otherwise a Dagster step
    process holding the pool would wait for its idle workers forever)."""
    key = (os.getpid(), processes)  # a forked child never uses its parent's pool
    if key not in _SHARED_POOLS:
        pool = process_pool(processes)
        _SHARED_POOLS[key] = pool, Finalize(None, pool.shutdown, exitpriority=_BEFORE_QUEUES)
    return _SHARED_POOLS[key][0]


def _drop_shared_pool(pool: ProcessPoolExecutor) -> None:
    """Shut ``pool`` down and forget it, so that the next map starts fresh workers."""
    for key, (kept, finalizer) in list(_SHARED_POOLS.items()):
        if kept is pool:
            del _SHARED_POOLS[key]
            finalizer()  # shuts it down now, and no more at exit


def _one_blas_thread() -> None:
    from threadpoolctl import threadpool_limits

    for name in SINGLE_THREAD:  # the libraries loaded from here on
        os.environ[name] = "1"
    threadpool_limits(1)  # those already loaded


def ordered_map(function: Callable[..., T], jobs: Iterable[tuple], processes: int
                ) -> Iterator[T]:
    """``function(*job)`` for each job, in the jobs' order: in this process when ``processes``
    is 1, else in the :func:`shared_pool` of that many workers with at most two jobs a worker
    in flight (so a long range of genes never holds all their inputs at once). ``function``
    and the jobs must pickle; a job's error is raised when its turn comes, and the jobs not
    yet started are then cancelled. A worker that dies fails the map and the pool, and the
    next map starts fresh workers. A daemonic process
    (a Celery worker's pool process) may have no children: there the jobs run in it, and the
    Celery workers spread the steps instead."""
    if processes <= 1 or multiprocessing.current_process().daemon:
        for job in jobs:
            yield function(*job)
        return
    pool = shared_pool(processes)
    pending: deque[Future] = deque()
    try:
        for job in jobs:
            pending.append(pool.submit(function, *job))
            if len(pending) >= 2 * processes:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    except BrokenProcessPool:
        _drop_shared_pool(pool)
        raise
    finally:
        for future in pending:
            future.cancel()
