"""Where the steps run, chosen by configuration (``APOE_EXECUTOR``), never by editing assets.

- ``multiprocess`` (the default): each step in a process of its own on this machine, forked
  from a server that imported the code location once.
- ``celery``: each step a Celery task (``dagster-celery``) on workers that share the Dagster
  instance (Postgres) and the storage root. The broker and result backend come from
  ``APOE_CELERY_BROKER`` and ``APOE_CELERY_BACKEND`` (a Redis URL each), read when a run
  starts. Enformer steps go to the queue ``gpu``, every other step to ``dagster``.
- ``k8s``: each step a Kubernetes Job (``dagster-k8s``); the Enformer steps ask for one
  ``nvidia.com/gpu`` on a GPU node.

The Enformer steps carry :data:`ACCELERATOR_TAGS` whatever the executor: the queue tag is read
only by Celery, the ``dagster-k8s/config`` tag only by Kubernetes. The ``accelerator`` pool
limits concurrent Enformer steps under every executor (Dagster's instance-wide slots).
"""

from __future__ import annotations

import os

import dagster as dg

EXECUTOR_ENV = "APOE_EXECUTOR"
BROKER_ENV = "APOE_CELERY_BROKER"
BACKEND_ENV = "APOE_CELERY_BACKEND"
GPU_QUEUE = "gpu"
DEFAULT_QUEUE = "dagster"
"""dagster-celery's own default queue: the steps without a queue tag go there."""
GPU_NODE_LABEL = {"nvidia.com/gpu.present": "true"}
"""The label NVIDIA's GPU feature discovery puts on GPU nodes."""

ACCELERATOR_TAGS: dict[str, object] = {
    "dagster-celery/queue": GPU_QUEUE,
    "dagster-k8s/config": {
        "container_config": {"resources": {"limits": {"nvidia.com/gpu": 1}}},
        "pod_spec_config": {
            "node_selector": GPU_NODE_LABEL,
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists",
                             "effect": "NoSchedule"}],
        },
    },
}
"""Op tags of the steps that run Enformer (``enformer_predictions``, ``snp_effects``)."""

CELERY_SETTINGS: dict[str, object] = {
    # A task's message is acknowledged when the step ends, not when a worker takes it, so a
    # step whose process was killed (out of memory, a lost node) goes back on its queue and
    # runs again on a surviving worker process instead of leaving the run waiting forever.
    "task_acks_late": True,
    "task_reject_on_worker_lost": True,
    "worker_prefetch_multiplier": 1,
    "broker_transport_options": {
        "max_retries": 3, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5,
        # Redis hands an unacknowledged task to another worker after this long: it must
        # exceed the longest step (an Enformer range of ``genes_per_run`` genes).
        "visibility_timeout": 24 * 3600,
    },
}
"""Celery settings shared by the executor and the workers (:mod:`.celery_worker`)."""

STEP_PRELOAD = ["apoe_assets.definitions", "matplotlib.pyplot", "scipy.stats"]
"""What the server that forks the step processes imports once: the code location, and the
plotting and statistics modules most steps use, which the code location itself leaves to
first use (the code server, the daemon and each run's own process draw and test nothing)."""

LOCAL_EXECUTOR = dg.multiprocess_executor.configured(
    {"start_method": {"forkserver": {"preload_modules": STEP_PRELOAD}}})
"""Each step in its own process, forked from a server that imported :data:`STEP_PRELOAD`
once (a step then starts in well under a second instead of re-importing Dagster, pandas,
SciPy and matplotlib, about 6 s). The code location imports no JAX, scikit-learn, MLflow,
SciPy or matplotlib (the test ``test_import_weight`` holds it to that): a step imports JAX,
scikit-learn and MLflow on first use, so the steps that need none of them never pay for
them."""

EXECUTORS = ("multiprocess", "celery", "k8s")


def celery_config() -> dict[str, object]:
    """The Celery executor's configuration: broker and backend by environment variable."""
    return {"broker": {"env": BROKER_ENV}, "backend": {"env": BACKEND_ENV},
            "config_source": CELERY_SETTINGS}


def step_executor(name: str | None = None) -> dg.ExecutorDefinition:
    """The executor named by ``name``, else by ``APOE_EXECUTOR`` (default ``multiprocess``)."""
    name = name or os.environ.get(EXECUTOR_ENV) or "multiprocess"
    if name == "multiprocess":
        return LOCAL_EXECUTOR
    if name not in EXECUTORS:
        raise ValueError(f"{EXECUTOR_ENV}={name!r}: expected one of {', '.join(EXECUTORS)}")
    try:
        if name == "celery":
            from dagster_celery import celery_executor

            return celery_executor.configured(celery_config())
        from dagster_k8s import k8s_job_executor

        return k8s_job_executor
    except ImportError as error:
        raise ImportError(f"{EXECUTOR_ENV}={name} needs the scale-out packages: "
                          "pip install '.[scale]'") from error
