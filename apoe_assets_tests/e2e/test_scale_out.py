"""The deployment of README "Scaling out", run for real on loopback: PostgreSQL for the Dagster
instance (``deploy/dagster.yaml``) and for MLflow (``deploy/mlflow-server.sh``), Redis as
Celery's broker and result backend, ``dagster-daemon`` and ``dagster-webserver``, and two Celery
workers, one on the queue ``dagster`` and one on ``gpu``, every server on 127.0.0.1 with a
password made for the run and passed only through the environment.

Two of the demo's gene partitions go through every gene asset with ``APOE_EXECUTOR=celery``
(their chromosome and the unpartitioned inputs are built first, in-process, into the same
Postgres instance; the demo's permutations and indel scoring are turned down, see
:data:`LIGHTER`). Then the genotype-model step of a second run is killed with SIGKILL while
it computes: Celery puts it back on its queue, a worker process runs it again and the run
completes, and until then the partitions' earlier files stay as they were.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import dagster as dg
import pytest

from apoe_assets.definitions import build_definitions
from apoe_assets.materialize import materialize_all
from apoe_assets.orchestration.automation import LOCUS_JOB, RANGE_END, RANGE_START
from apoe_assets.orchestration.executors import GPU_QUEUE
from apoe_assets.study import load_study
from apoe_assets_tests.conftest import snapshot
from apoe_assets_tests.mlflow_server import free_port
from apoe_assets_tests.processes import stop_group
from apoe_assets_tests.requirements import ENABLE_DEBIAN_PEERS, not_compared
from apoe_assets_tests.servers import Postgres, missing_servers, postgres_server, redis_server
from apoe_assets_tests.studies import demo_copy

pytestmark = [pytest.mark.e2e, pytest.mark.scale]
T = TypeVar("T")
PROJECT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
STARTUP_SECONDS = 180
RUN_SECONDS = 600
GPU_STEPS = {"enformer_predictions", "snp_effects"}
LOCATION = {"repositoryLocationName": "apoe_assets.definitions",
            "repositoryName": "__repository__"}
LAUNCH_RUN = """mutation($params: ExecutionParams!) { launchRun(executionParams: $params) {
  __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message }
  ... on RunConfigValidationInvalid { errors { message } } } }"""
RUN_STATUS = """query($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }"""


@dataclass
class Deployment:
    """The running servers, the instance folder, the study, the logs and the environment."""

    root: Path
    env: dict[str, str]
    postgres: Postgres
    mlflow_url: str
    webserver_port: int
    workers: dict[str, subprocess.Popen]
    genes: list[str]

    @property
    def storage(self) -> Path:
        return self.root / "storage"

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-2500:]}"
                         for p in sorted(self.root.glob("*.log")))

    def graphql(self, query: str, variables: dict) -> dict:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.webserver_port}/graphql",
            data=json.dumps({"query": query, "variables": variables}).encode(),
            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            payload = json.loads(response.read())
        assert "errors" not in payload, payload
        return payload["data"]

    def launch(self, assets: list[str] | None = None) -> str:
        """A run of the ``locus`` job (or of ``assets`` of it) over the two genes, launched
        as the UI launches it: queued, then started by the daemon."""
        selector = {**LOCATION, "jobName": LOCUS_JOB}
        if assets:
            selector["assetSelection"] = [{"path": [a]} for a in assets]
        tags = [{"key": RANGE_START, "value": self.genes[0]},
                {"key": RANGE_END, "value": self.genes[-1]}]
        launched = self.graphql(LAUNCH_RUN, {"params": {
            "selector": selector, "runConfigData": {}, "executionMetadata": {"tags": tags}}})
        result = launched["launchRun"]
        assert result["__typename"] == "LaunchRunSuccess", result
        return result["run"]["runId"]

    def status(self, run_id: str) -> str:
        return self.graphql(RUN_STATUS, {"id": run_id})["runOrError"]["status"]

    def wait(self, done: Callable[[], bool], what: str, seconds: float = RUN_SECONDS) -> None:
        deadline = time.monotonic() + seconds
        while not done():
            assert time.monotonic() < deadline, f"timed out waiting for {what}\n{self.logs()}"
            time.sleep(1)

    def finish(self, run_id: str) -> str:
        final = {"SUCCESS", "FAILURE", "CANCELED"}
        self.wait(lambda: self.status(run_id) in final, f"run {run_id}")
        return self.status(run_id)

    def instance(self) -> dg.DagsterInstance:
        """The Postgres instance, as the servers see it (the environment set while open)."""
        return _with_env(self.env, lambda: dg.DagsterInstance.from_config(
            str(self.root / "dagster_home")))

    def celery_placements(self, run_id: str) -> list[tuple[str, str]]:
        """(step, Celery worker) for each time a worker started one of the run's steps."""
        with self.instance() as instance:
            logs = instance.all_logs(run_id)
        placed = []
        for entry in logs:
            event = entry.dagster_event
            if event and event.event_type_value == "ENGINE_EVENT" and (
                    "in celery worker" in (event.message or "")):
                placed.append((event.step_key,
                               event.engine_event_data.metadata["Celery worker"].value))
        return placed


def _with_env(env: dict[str, str], make: Callable[[], T]) -> T:
    """``make()`` with ``env`` set in this process (the instance file's ``env:`` settings)."""
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        return make()


LIGHTER = {"eqtl": {"permutations": 0}, "overlap": {"permutations": 100},
           "snp_effects": {"tracks": ["CHIP:H3K27me3"], "indels": False}}
"""The demo's settings that only cost time here: no gene-level eQTL permutations, 100 circular
shifts for the overlap, SNVs only for the SNP effects (scored incrementally)."""


def _start(stack: ExitStack, root: Path, name: str, command: list[str],
           env: dict[str, str]) -> subprocess.Popen:
    log = stack.enter_context((root / f"{name}.log").open("w"))
    process = subprocess.Popen(command, cwd=PROJECT, env=env, stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)

    stack.callback(stop_group, process, 20)
    return process


def _wait_for(process: subprocess.Popen, done: Callable[[], bool], what: str,
              logs: Callable[[], str]) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while True:
        assert process.poll() is None, f"{what} exited\n{logs()}"
        try:
            if done():
                return
        except OSError:
            pass
        assert time.monotonic() < deadline, f"{what} did not start\n{logs()}"
        time.sleep(1)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    missing = missing_servers()
    if missing:
        not_compared(f"the scale-out deployment (needs Debian's {', '.join(missing)})",
                     ENABLE_DEBIAN_PEERS)
    root = tmp_path_factory.mktemp("scale")
    home = root / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((PROJECT / "deploy" / "dagster.yaml").read_text())
    with ExitStack() as stack:
        postgres = stack.enter_context(postgres_server())
        for database in ("dagster", "mlflow"):
            postgres.create_database(database)
        broker = stack.enter_context(redis_server(root))
        base = {**{k: v for k, v in os.environ.items() if not k.startswith(("APOE_", "MLFLOW_"))},
                "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}  # `celery`, `mlflow`
        mlflow_port = free_port()
        mlflow_url = f"http://127.0.0.1:{mlflow_port}"
        mlflow_env = {**base, "MLFLOW_PG_HOST": postgres.host,
                      "MLFLOW_PG_PORT": str(postgres.port), "MLFLOW_PG_DB": "mlflow",
                      "MLFLOW_PG_USER": postgres.user, "MLFLOW_PG_PASSWORD": postgres.password,
                      "MLFLOW_ARTIFACTS": str(root / "artifacts"),
                      "MLFLOW_PORT": str(mlflow_port),
                      "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no job runner
        mlflow = _start(stack, root, "mlflow", [
            str(PROJECT / "deploy" / "mlflow-server.sh"), "--workers", "1"], mlflow_env)
        env = {**base, "DAGSTER_HOME": str(home),
               "APOE_STUDY": str(demo_copy(root, mlflow_tracking_uri=mlflow_url, truth=None,
                                           **LIGHTER)),
               "APOE_EXECUTOR": "celery",
               "APOE_CELERY_BROKER": broker, "APOE_CELERY_BACKEND": broker,
               "DAGSTER_PG_HOST": postgres.host, "DAGSTER_PG_PORT": str(postgres.port),
               "DAGSTER_PG_DB": "dagster", "DAGSTER_PG_USER": postgres.user,
               "DAGSTER_PG_PASSWORD": postgres.password,
               "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        study = load_study(env["APOE_STUDY"])
        locus = build_definitions(study).resolve_job_def(LOCUS_JOB)
        gene_keys = locus.partitions_def.get_partition_keys()[:2]
        # the chromosome and the unpartitioned inputs first, in this process, same instance
        gene_assets = dg.AssetSelection.assets(*locus.asset_layer.executable_asset_keys)
        upstream = gene_assets.upstream() - gene_assets
        with _with_env(env, lambda: dg.DagsterInstance.from_config(str(home))) as instance:
            results = _with_env(env, lambda: materialize_all(
                build_definitions(study), instance, report=lambda _: None, selection=upstream))
            assert all(r.success for r in results)
        celery = [str(BIN / "dagster-celery"), "worker", "start", "-A",
                  "apoe_assets.orchestration.celery_worker"]
        workers = {
            "dagster": _start(stack, root, "worker-default", [
                *celery, "-q", "dagster", "-n", "default", "--", "-c", "2"], env),
            GPU_QUEUE: _start(stack, root, "worker-gpu", [
                *celery, "-q", GPU_QUEUE, "-n", GPU_QUEUE, "--", "-c", "1"], env)}
        daemon = _start(stack, root, "daemon", [
            str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"], env)
        port = free_port()
        webserver = _start(stack, root, "webserver", [
            str(BIN / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(port), "-w",
            "workspace.yaml"], env)
        running = Deployment(root, env, postgres, mlflow_url, port, workers, gene_keys)
        for queue, name in ((GPU_QUEUE, "worker-gpu"), ("dagster", "worker-default")):
            _wait_for(workers[queue], lambda n=name: " ready." in (root / f"{n}.log").read_text(),
                      name, running.logs)
        _wait_for(mlflow, lambda: _get(f"{mlflow_url}/health") == "OK", "mlflow server",
                  running.logs)
        _wait_for(webserver, lambda: "dagster_webserver_version" in _get(
            f"http://127.0.0.1:{port}/server_info"), "dagster-webserver", running.logs)
        assert daemon.poll() is None, running.logs()
        yield running


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode()


@pytest.fixture(scope="module")
def first_run(deployment: Deployment) -> str:
    """Every gene asset of the two genes, in one run on the Celery workers."""
    run_id = deployment.launch()
    assert deployment.finish(run_id) == "SUCCESS", deployment.logs()
    return run_id


def test_every_step_ran_on_its_queue(deployment: Deployment, first_run: str) -> None:
    """Each planned step succeeded, the Enformer steps on the gpu worker and every other step
    on the default worker (the worker that ran it, as it reported itself)."""
    placements = deployment.celery_placements(first_run)
    with deployment.instance() as instance:
        stats = instance.get_run_step_stats(first_run)
    assert stats and {s.status.value for s in stats} == {"SUCCESS"}, stats
    assert {s.step_key for s in stats} == {step for step, _ in placements}
    assert len(placements) == len(stats)  # each step ran once
    for step, worker in placements:
        expected = GPU_QUEUE if step in GPU_STEPS else "default"
        assert worker.startswith(f"{expected}@"), (step, worker)
    assert {step for step, _ in placements} >= GPU_STEPS


def test_runs_and_events_are_in_postgres(deployment: Deployment, first_run: str) -> None:
    """The instance wrote the run and its events to Postgres (read with SQL, not Dagster)."""
    db = deployment.postgres
    assert db.query("dagster", "SELECT status FROM runs WHERE run_id = %s",
                    (first_run,)) == [("SUCCESS",)]
    [(materialised,)] = db.query(
        "dagster", "SELECT count(*) FROM event_logs WHERE run_id = %s AND "
        "dagster_event_type = 'ASSET_MATERIALIZATION'", (first_run,))
    gene_assets = len(build_definitions(load_study(deployment.env["APOE_STUDY"]))
                      .resolve_job_def(LOCUS_JOB).asset_layer.executable_asset_keys)
    assert materialised == gene_assets * len(deployment.genes)


def test_mlflow_runs_are_in_the_postgres_backed_server(deployment: Deployment,
                                                       first_run: str) -> None:
    """`gene_models` logged through the tracking server: its REST API finds the runs of this
    Dagster run, and the server's Postgres database holds them."""
    request = urllib.request.Request(
        f"{deployment.mlflow_url}/api/2.0/mlflow/experiments/search",
        data=json.dumps({"max_results": 100}).encode(),
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        experiments = [e["experiment_id"] for e in json.loads(response.read())["experiments"]]
    request = urllib.request.Request(
        f"{deployment.mlflow_url}/api/2.0/mlflow/runs/search",
        data=json.dumps({"experiment_ids": experiments, "max_results": 1000,
                         "filter": f"tags.`dagster.run_id` = '{first_run}'"}).encode(),
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        runs = json.loads(response.read()).get("runs", [])
    tags = [{t["key"]: t["value"] for t in r["data"]["tags"]} for r in runs]
    genes = {t["gene"] for t in tags if "gene" in t}
    assert genes == set(deployment.genes)
    stored = {row[0] for row in deployment.postgres.query("mlflow", "SELECT run_uuid FROM runs")}
    assert {r["info"]["run_id"] for r in runs} <= stored


def _stored(folder: Path) -> dict[str, str]:
    """Digest of each stored file (a write's hidden scratch files left out)."""
    return {name: digest for name, digest in snapshot(folder).items()
            if not name.startswith(".")}


def _pool_processes(worker: subprocess.Popen) -> list[int]:
    """A worker's pool processes: `dagster-celery` → `celery` → its pool."""
    celery = Path(f"/proc/{worker.pid}/task/{worker.pid}/children").read_text().split()
    return [int(child) for pid in celery
            for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


KILLED_STEP = "prs_models"
KILLED_ASSETS = ["prs_scores", "prs_weights", "prs_fold_scores"]


def test_a_killed_step_runs_again_and_the_run_completes(deployment: Deployment,
                                                        first_run: str) -> None:
    """SIGKILL to the worker process running `prs_models` (as the kernel's out-of-memory
    killer would), found by the process ID its STEP_START event reports: the partitions' files
    of the first run stay byte for byte, Celery hands the step back to its queue, the default
    worker runs it again in another process, and the run completes with both partitions
    materialised by it."""
    folders = [deployment.storage / asset for asset in KILLED_ASSETS]
    before = [_stored(folder) for folder in folders]
    assert all(len(stored) == len(deployment.genes) for stored in before)
    run_id = deployment.launch(KILLED_ASSETS)

    def started() -> list[int]:
        with deployment.instance() as instance:
            return [entry.dagster_event.pid for entry in instance.all_logs(
                run_id, of_type=dg.DagsterEventType.STEP_START)
                if entry.step_key == KILLED_STEP]

    deployment.wait(lambda: bool(started()), f"{KILLED_STEP} to start")
    [pid] = started()
    assert pid in _pool_processes(deployment.workers["dagster"])
    time.sleep(1)  # into its fits (about 6 s a gene)
    os.kill(pid, signal.SIGKILL)
    assert deployment.status(run_id) == "STARTED"
    assert [_stored(folder) for folder in folders] == before
    assert deployment.finish(run_id) == "SUCCESS", deployment.logs()
    placements = deployment.celery_placements(run_id)
    assert [step for step, _ in placements] == [KILLED_STEP] * 2
    assert all(worker.startswith("default@") for _, worker in placements)
    [_, again] = started()
    assert again != pid and again in _pool_processes(deployment.workers["dagster"])
    with deployment.instance() as instance:
        for asset in KILLED_ASSETS:
            records = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset),
                                      asset_partitions=deployment.genes), limit=10).records
            assert sorted(r.partition_key for r in records if r.run_id == run_id) == sorted(
                deployment.genes), asset
