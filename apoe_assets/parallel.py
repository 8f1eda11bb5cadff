"""Process pools for CPU-bound work on every core (multi-gene stacking fits its genes in one)."""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor

SINGLE_THREAD = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def process_pool(processes: int) -> ProcessPoolExecutor:
    """A pool of ``processes`` fresh interpreters (``spawn``: a forked copy of a process that
    holds JAX's or BLAS's threads can deadlock), each with one BLAS/OpenMP thread: the
    workers already fill the cores, and a worker's idle BLAS threads would spin on the
    others' cores."""
    return ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_one_blas_thread)


def _one_blas_thread() -> None:
    from threadpoolctl import threadpool_limits

    for name in SINGLE_THREAD:  # the libraries loaded from here on
        os.environ[name] = "1"
    threadpool_limits(1)  # those already loaded
