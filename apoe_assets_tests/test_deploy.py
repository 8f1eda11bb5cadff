"""The deployment beyond one machine, without servers: the Postgres instance file, the executor
chosen by ``APOE_EXECUTOR``, and the Celery settings shared by executor and workers.
(``e2e/test_scale_out.py`` runs the same files against real servers.)"""

from __future__ import annotations

import importlib
import shutil
import sys
from pathlib import Path

import pytest
from dagster._config import process_config, validate_config
from dagster._core.execution.retries import RetryMode
from dagster._core.instance.config import dagster_instance_config
from dagster_celery import celery_executor
from dagster_celery.executor import CeleryExecutor
from dagster_celery.make_app import make_app

from apoe_assets.definitions import build_definitions
from apoe_assets.orchestration import executors
from apoe_assets.study import DEMO_STUDY, load_study

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
BROKER = "redis://127.0.0.1:6390/0"


def test_instance_file_is_valid_and_takes_every_credential_from_the_environment(
        tmp_path: Path) -> None:
    """``deploy/dagster.yaml`` passes Dagster's own instance schema (which refuses, say, a
    ``run_queue`` beside ``concurrency.runs``), stores runs, events and schedules in Postgres
    through psycopg2, and every connection setting is an ``env:`` reference."""
    shutil.copy(DEPLOY / "dagster.yaml", tmp_path / "dagster.yaml")
    config, _ = dagster_instance_config(str(tmp_path))
    postgres = config["storage"]["postgres"]["postgres_db"]
    assert postgres.pop("scheme") == "postgresql+psycopg2"
    assert set(postgres) >= {"hostname", "port", "db_name", "username", "password"}
    assert all(isinstance(v, dict) and set(v) == {"env"} for v in postgres.values()), postgres
    assert config["run_monitoring"]["enabled"]
    assert config["concurrency"]["pools"]["default_limit"] == 1


def test_executor_is_chosen_by_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same definitions get the executor ``APOE_EXECUTOR`` names (the multiprocess one when
    unset); an unknown name fails, naming the variable and the choices."""
    study = load_study(DEMO_STUDY)
    monkeypatch.delenv(executors.EXECUTOR_ENV, raising=False)
    assert build_definitions(study).resolve_implicit_global_asset_job_def(
    ).executor_def is executors.LOCAL_EXECUTOR
    for name in ("celery", "k8s"):
        monkeypatch.setenv(executors.EXECUTOR_ENV, name)
        job = build_definitions(study).resolve_implicit_global_asset_job_def()
        assert job.executor_def.name == name
    monkeypatch.setenv(executors.EXECUTOR_ENV, "kubernetes")
    with pytest.raises(ValueError, match=r"APOE_EXECUTOR='kubernetes'.*multiprocess, celery, k8s"):
        build_definitions(study)


def test_only_the_enformer_steps_go_to_the_gpu_queue() -> None:
    """Celery reads a step's queue from its op tag: the two Enformer steps carry ``gpu``, no
    other step carries a queue (so it goes to the default queue, ``dagster``)."""
    job = build_definitions(load_study(DEMO_STUDY)).resolve_implicit_global_asset_job_def()
    queues = {node.name: node.definition.tags.get("dagster-celery/queue")
              for node in job.graph.nodes}
    assert {step for step, queue in queues.items() if queue} == {
        "enformer_predictions", "snp_effects"}
    assert {queues["enformer_predictions"], queues["snp_effects"]} == {executors.GPU_QUEUE}


def test_workers_and_executor_build_the_same_celery_app(monkeypatch: pytest.MonkeyPatch) -> None:
    """The executor's configuration passes dagster-celery's schema with the broker and backend
    taken from the environment, and the workers' app (``celery_worker``) ends up with the same
    broker and the same settings: a step's message acknowledged when it ends, handed back when
    its process dies, and a visibility timeout longer than a day's step."""
    monkeypatch.setenv(executors.BROKER_ENV, BROKER)
    monkeypatch.setenv(executors.BACKEND_ENV, BROKER)
    schema = celery_executor.config_schema.config_type
    assert validate_config(schema, executors.celery_config()).success
    resolved = process_config(schema, executors.celery_config()).value
    executor_app = make_app(CeleryExecutor(
        retries=RetryMode.ENABLED, broker=resolved["broker"], backend=resolved["backend"],
        config_source=resolved["config_source"]).app_args())
    sys.modules.pop("apoe_assets.orchestration.celery_worker", None)
    worker_app = importlib.import_module("apoe_assets.orchestration.celery_worker").app
    for app in (executor_app, worker_app):
        assert app.conf.broker_url == BROKER
        assert app.conf.task_acks_late is True
        assert app.conf.task_reject_on_worker_lost is True
        assert app.conf.worker_prefetch_multiplier == 1
        assert app.conf.broker_transport_options["visibility_timeout"] >= 24 * 3600
        assert app.conf.task_default_queue == executors.DEFAULT_QUEUE


def test_a_worker_without_a_broker_says_which_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker started without ``APOE_CELERY_BROKER`` stops at once, naming it (Celery would
    otherwise try its default AMQP broker and retry forever)."""
    monkeypatch.delenv(executors.BROKER_ENV, raising=False)
    sys.modules.pop("apoe_assets.orchestration.celery_worker", None)
    with pytest.raises(RuntimeError, match="APOE_CELERY_BROKER"):
        importlib.import_module("apoe_assets.orchestration.celery_worker")
    sys.modules.pop("apoe_assets.orchestration.celery_worker", None)


def test_mlflow_server_script_passes_the_store_through_the_environment() -> None:
    """``deploy/mlflow-server.sh`` builds the Postgres URI from variables and hands it to
    ``mlflow server`` as ``MLFLOW_BACKEND_STORE_URI`` (never as an argument, where ``ps``
    would show the password), listening on 127.0.0.1 unless told otherwise."""
    script = (DEPLOY / "mlflow-server.sh").read_text()
    assert "export MLFLOW_BACKEND_STORE_URI" in script
    assert "--backend-store-uri" not in script.split("exec mlflow server", 1)[1]
    assert '"${MLFLOW_HOST:-127.0.0.1}"' in script
