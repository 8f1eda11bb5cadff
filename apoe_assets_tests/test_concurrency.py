"""Four gene partitions materialised at the same time, as four runs launched the way Dagster's
daemon launches them, against one SQLite-backed instance (the project's ``dagster.yaml`` in a
temporary ``DAGSTER_HOME``).

The code location is served by a real code server (``dagster api grpc``, started from the
project's ``workspace.yaml`` as ``dagster dev`` starts it); each run is created for the ``locus``
job with one gene's partition tag (``gene_locus`` and ``personal_sequences``, which both read
only the unpartitioned inputs and the gene's chromosome, materialised in process first),
submitted to the instance's run coordinator (the run queue), and launched, all four at once,
with ``DagsterInstance.launch_run``: what the daemon's queue does on dequeue. The
``DefaultRunLauncher`` asks the code server to start each run in a process of its own, and the
run executes its steps with the executor of the project's Definitions, no run config needed
(``executors.LOCAL_EXECUTOR``: multiprocess, forkserver), each step in a process of its own. Twelve
processes (four runs, eight steps) then write to one SQLite run storage and event log at once.

Catches: SQLite locking under concurrent runs ("database is locked" in any run's events, compute
logs or process output, or a run that fails or hangs); the IO manager or an asset writing one
gene's output under another's partition, twice, or leaving temporary files beside it; a
materialisation event missing, duplicated or carrying another gene's metadata; concurrent
runs computing anything different from the same partitions computed one at a time in process
(a shared temporary folder, module state, a race on a shared file). The runs must overlap in
time (each started before any finished, from the instance's run records), so the test cannot
pass by running them one after another.

Its time is almost all imports: the code server, each run's process and each run's forkserver
import the code location (``apoe_assets.definitions``, about 3-5 CPU-seconds here), nine
times in all; the steps themselves take well under a second each.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
import yaml
from dagster._core.definitions.selector import JobSubsetSelector
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import WorkspaceFileTarget

from apoe_assets.genomics.bgzf import write_bgzf
from apoe_assets.orchestration.automation import LOCUS_JOB
from apoe_assets_tests.conftest import materialise, snapshot
from apoe_assets_tests.studies import (
    Record,
    TinyStudy,
    default_records,
    reference_sequence,
    write_tiny_study,
)

pytestmark = pytest.mark.e2e
PROJECT = Path(__file__).resolve().parents[1]
GENE_D = ("ENSG00000000004", "GENE_D", 9_000, 10_000, "-", "chr1")
"""A fourth gene (TSS at 10,000 on the minus strand), beside the tiny study's GENE_A and
GENE_B on chr1 and GENE_C on chr2."""
GENE_D_RECORDS = [
    Record(9_800, ["*"], ["0|1", "0|0", "1|1", "0|0", "1|0", "0|1"]),
    Record(10_100, ["*"], ["1|0", "0|1", "0|0", "1|1", "0|0", "0|1"]),
]
GENES = ["GENE_A", "GENE_B", "GENE_C", "GENE_D"]
TSS0 = {"GENE_A": 4_999, "GENE_B": 13_999, "GENE_C": 7_999, "GENE_D": 9_999}
"""0-based TSS of each gene (its start on +, its end on -)."""
PER_GENE = ["gene_locus", "personal_sequences"]
UPSTREAM = dg.AssetSelection.assets(*PER_GENE).upstream() - dg.AssetSelection.assets(*PER_GENE)
RUN_SECONDS = 360
"""Longest wait for the four runs (about 130 s measured here with the machine busy)."""
LOCKED = "database is locked"
PARTITION = "dagster/partition"


def four_gene_study(folder: Path) -> TinyStudy:
    """The tiny two-chromosome study with a fourth gene, GENE_D on chr1, and two variants in
    its window (its annotation and expression rows written here, in position order); one gene
    a run, so that materialising it in process computes the genes one at a time."""
    records = sorted([*default_records(reference_sequence()), *GENE_D_RECORDS],
                     key=lambda r: r.pos)
    tiny = write_tiny_study(folder, records=records, second_chromosome=True, genes_per_run=1)
    gene_id, symbol, start, end, strand, chrom = GENE_D
    with (folder / "genes.tsv").open("a") as annotation:
        annotation.write(f"{gene_id}\t{symbol}\t{chrom}\t{start}\t{end}\t{strand}\n")
    header, *rows = gzip.decompress((folder / "expression.bed.gz").read_bytes()).decode(
        ).splitlines()
    values = np.random.default_rng(4).normal(size=len(header.split("\t")) - 4)
    rows.append("\t".join([chrom, str(end - 1), str(end), gene_id,
                           *(f"{v:.4f}" for v in values)]))
    rows.sort(key=lambda row: (row.split("\t")[0], int(row.split("\t")[1])))
    write_bgzf(folder / "expression.bed.gz", "\n".join([header, *rows, ""]).encode())
    fields = yaml.safe_load(tiny.study.read_text())
    fields["genes"] = [*fields["genes"], symbol]
    tiny.study.write_text(yaml.safe_dump(fields, sort_keys=False))
    return tiny


def _run_factory(instance: dg.DagsterInstance, location) -> Callable[[str], str]:
    """Creates runs of the ``locus`` job for one gene's partition of :data:`PER_GENE` (their
    checks left out: each check step is one more process), from the code server's snapshot of
    the job, as the daemon creates a sensor's or schedule's run; returns the run id."""
    repository = next(iter(location.get_repositories().values()))
    assets = frozenset(dg.AssetKey(a) for a in PER_GENE)
    job = location.get_job(JobSubsetSelector(
        location_name=location.name, repository_name=repository.name, job_name=LOCUS_JOB,
        op_selection=None, asset_selection=assets, asset_check_selection=frozenset()))
    plan = location.get_execution_plan(job, {}, step_keys_to_execute=None, known_state=None,
                                       instance=instance)

    def create(gene: str) -> str:
        return instance.create_run(
            job_name=LOCUS_JOB, run_id=None, run_config={},
            resolved_op_selection=job.resolved_op_selection, step_keys_to_execute=None,
            status=dg.DagsterRunStatus.NOT_STARTED, op_selection=None, root_run_id=None,
            parent_run_id=None, tags={**(job.run_tags or {}), PARTITION: gene},
            job_snapshot=job.job_snapshot, execution_plan_snapshot=plan.execution_plan_snapshot,
            parent_job_snapshot=job.parent_job_snapshot,
            remote_job_origin=job.get_remote_origin(), job_code_origin=job.get_python_origin(),
            asset_selection=assets, asset_check_selection=frozenset(),
            asset_graph=repository.asset_graph).run_id

    return create


def _wait(instance: dg.DagsterInstance, run_ids: list[str]) -> list[dg.DagsterRun]:
    deadline = time.monotonic() + RUN_SECONDS
    while True:
        runs = [instance.get_run_by_id(r) for r in run_ids]
        if all(r.is_finished for r in runs):
            return runs
        assert time.monotonic() < deadline, [(r.tags[PARTITION], r.status) for r in runs]
        time.sleep(0.5)


@contextmanager
def _output_to(path: Path) -> Iterator[None]:
    """Standard output and error of this process, and so of every process it starts (the code
    server, the runs and their steps inherit them), appended to ``path``."""
    saved = os.dup(1), os.dup(2)
    target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        os.dup2(target, 1)
        os.dup2(target, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, target):
            os.close(fd)


@pytest.fixture(scope="module")
def concurrent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """The four gene runs in one instance, launched together and left to run together: the
    instance, the finished runs, the study, DAGSTER_HOME and everything the processes printed."""
    root = tmp_path_factory.mktemp("concurrency")
    tiny = four_gene_study(root / "study")
    home = root / "dagster_home"
    home.mkdir()
    shutil.copy(PROJECT / "dagster.yaml", home / "dagster.yaml")
    output = root / "processes.log"
    with pytest.MonkeyPatch.context() as env, dg.DagsterInstance.from_config(
            str(home)) as instance:
        env.setenv("DAGSTER_HOME", str(home))
        env.setenv("APOE_STUDY", str(tiny.study))
        assert all(r.success for r in materialise(tiny.study, instance, UPSTREAM))
        with _output_to(output), WorkspaceProcessContext(
                instance, WorkspaceFileTarget([str(PROJECT / "workspace.yaml")])) as process:
            workspace = process.create_request_context()
            location = workspace.get_code_location(
                next(iter(workspace.get_code_location_entries())))
            create_run = _run_factory(instance, location)
            run_ids = [create_run(gene) for gene in GENES]
            for run_id in run_ids:
                instance.submit_run(run_id, workspace)  # queued, as the UI submits a run
            # what the daemon does on dequeue, all four at once (its threaded dequeue)
            with ThreadPoolExecutor(len(run_ids)) as pool:
                list(pool.map(lambda run_id: instance.launch_run(run_id, workspace), run_ids))
            runs = _wait(instance, run_ids)
        yield {"instance": instance, "runs": runs, "study": tiny, "home": home,
               "output": output}


def _events(instance: dg.DagsterInstance, run: dg.DagsterRun) -> list[dg.EventLogEntry]:
    return list(instance.all_logs(run.run_id))


def test_every_run_succeeds_without_locking_errors(concurrent: dict) -> None:
    """Each run succeeded; no process reported SQLite locking (events, their errors, the
    captured compute logs, and the output of the code server and the run processes)."""
    instance, runs = concurrent["instance"], concurrent["runs"]
    failures = {r.tags[PARTITION]: [e.message for e in _events(instance, r)
                                    if e.dagster_event and e.dagster_event.is_failure]
                for r in runs if r.status != dg.DagsterRunStatus.SUCCESS}
    assert not failures, failures
    texts = {r.run_id: json.dumps([e.to_json() for e in _events(instance, r)]) for r in runs}
    texts |= {str(p): p.read_text(errors="replace")
              for p in (concurrent["home"] / "storage").rglob("*") if p.is_file()}
    texts["processes"] = concurrent["output"].read_text(errors="replace")
    assert [name for name, text in texts.items() if LOCKED in text.lower()] == []


def test_runs_overlapped_in_time(concurrent: dict) -> None:
    """Every run started before any run finished (run records of the instance)."""
    instance = concurrent["instance"]
    records = [instance.get_run_record_by_id(r.run_id) for r in concurrent["runs"]]
    first = min(r.start_time for r in records)
    spans = {r.dagster_run.tags[PARTITION]: (round(r.start_time - first, 1),
                                             round(r.end_time - first, 1)) for r in records}
    assert max(start for start, _ in spans.values()) < min(end for _, end in spans.values()), (
        f"runs did not overlap (seconds from the first start to each start, end): {spans}")


def test_each_run_in_its_own_process_with_multiprocess_steps(concurrent: dict) -> None:
    """Each run ran in a process of its own (not the test's), and its steps ran through the
    project's multiprocess executor, each step in a process other than the run's."""
    instance, runs = concurrent["instance"], concurrent["runs"]
    run_pids = {}
    for run in runs:
        events = _events(instance, run)
        messages = [e.message for e in events]
        started = [m for m in messages if m.startswith("Started process for run (pid: ")]
        assert len(started) == 1, messages
        run_pids[run.run_id] = int(started[0].split("pid: ")[1].rstrip(")."))
        assert any(m.startswith("Executing steps using multiprocess executor") for m in messages)
        step_pids = {e.dagster_event.pid for e in events if e.dagster_event
                     and e.dagster_event.event_type == dg.DagsterEventType.STEP_START}
        assert step_pids and run_pids[run.run_id] not in step_pids
    assert len(set(run_pids.values())) == len(runs)
    assert os.getpid() not in run_pids.values()


def test_each_partition_stored_once_by_its_own_run(concurrent: dict) -> None:
    """One materialisation per asset and gene in the whole instance, made by that gene's run,
    with that gene's metadata; one stored partition per gene, and nothing else beside them."""
    instance, runs, tiny = concurrent["instance"], concurrent["runs"], concurrent["study"]
    gene_of_run = {r.run_id: r.tags[PARTITION] for r in runs}
    for asset in PER_GENE:
        records = instance.fetch_materializations(dg.AssetKey(asset), limit=100).records
        made = sorted((r.partition_key, gene_of_run.get(r.run_id)) for r in records)
        assert made == [(g, g) for g in GENES], f"{asset}: (partition, gene of its run)"
    suffix = {"gene_locus": ".parquet", "personal_sequences": ".sequences"}
    for asset in PER_GENE:
        for record in instance.fetch_materializations(dg.AssetKey(asset), limit=100).records:
            metadata = record.asset_materialization.metadata
            gene = record.partition_key
            assert metadata["path"].value == str(tiny.storage / asset / f"{gene}{suffix[asset]}")
            if asset == "gene_locus":
                assert (metadata["symbol"].value, metadata["tss"].value) == (gene, TSS0[gene])
    for asset in PER_GENE:
        assert sorted(p.name for p in (tiny.storage / asset).iterdir()) == [
            f"{g}{suffix[asset]}" for g in GENES]


def test_outputs_equal_one_at_a_time(concurrent: dict, tmp_path: Path) -> None:
    """The concurrent runs stored exactly what the same partitions store when materialised one
    after another in process, into an instance of their own, from a copy of the study and of
    its upstream outputs (made before the concurrent runs, in process)."""
    together = concurrent["study"]
    alone = tmp_path / "study"
    shutil.copytree(together.folder, alone, ignore=lambda folder, names: [
        n for n in names if Path(folder) == together.storage and n in PER_GENE])
    with dg.instance_for_test() as instance:
        results = materialise(alone / "study.yaml", instance, dg.AssetSelection.assets(*PER_GENE))
    assert [r.success for r in results] == [True] * len(GENES)
    for asset in PER_GENE:
        stored = snapshot(together.storage / asset)
        assert len(stored) >= len(GENES)
        assert stored == snapshot(alone / "storage" / asset), asset
