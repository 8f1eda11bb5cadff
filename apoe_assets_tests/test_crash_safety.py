"""A run killed with SIGKILL while it writes a partition: the partition's earlier
materialisation is intact, and a re-run completes.

What this catches: a write that opens the stored file in place (a kill would leave it
truncated), a swap that is not one rename, and a half-written scratch file that a later load or
run trips over. The run is a real process on a persistent instance, killed from outside at the
moment its bytes are half written (the test's own hook truncates what the run wrote and holds
it there).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pysam

from apoe_assets.definitions import build_definitions
from apoe_assets.study import load_study
from apoe_assets_tests.studies import demo_copy

PROJECT = Path(__file__).resolve().parents[1]
GENE = "APOE"
LOCUS = dg.AssetKey("gene_locus")
WAIT_SECONDS = 120
RUN_IN_A_PROCESS = r"""
import contextlib, sys, time
from pathlib import Path
import dagster as dg
from apoe_assets.definitions import build_definitions
from apoe_assets.resources import formats
from apoe_assets.study import load_study

study_file, marker, partition = sys.argv[1:4]
written = formats.atomic_target

@contextlib.contextmanager
def held(target):
    with written(target) as scratch:
        yield scratch
        data = Path(scratch).read_bytes()
        Path(scratch).write_bytes(data[:len(data) // 2])  # as if killed halfway through
        Path(marker).write_text(str(scratch))
        time.sleep(600)

formats.atomic_target = held
job = build_definitions(load_study(study_file)).resolve_implicit_global_asset_job_def()
with dg.DagsterInstance.get() as instance:
    job.execute_in_process(instance=instance, asset_selection=[dg.AssetKey("gene_locus")],
                           partition_key=partition)
"""


def _materialise(study_file: Path, instance: dg.DagsterInstance, keys: list[str],
                 partition: str | None = None) -> None:
    job = build_definitions(load_study(study_file)).resolve_implicit_global_asset_job_def()
    result = job.execute_in_process(instance=instance, partition_key=partition,
                                    asset_selection=[dg.AssetKey(k) for k in keys],
                                    raise_on_error=False)
    assert result.success, [e.message for e in result.all_events if e.is_failure]


def test_a_killed_write_leaves_the_earlier_partition_and_a_rerun_completes(tmp_path: Path
                                                                            ) -> None:
    with pysam.VariantFile(str(load_study().genotype_file("chr19"))) as vcf:
        samples = list(vcf.header.samples)[:24]
    study_file = demo_copy(tmp_path / "study", genes=[GENE], samples=samples)
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(PROJECT / "dagster.yaml", home / "dagster.yaml")
    stored = Path(load_study(study_file).storage_root) / "gene_locus" / f"{GENE}.parquet"
    with dg.DagsterInstance.from_config(str(home)) as instance:
        _materialise(study_file, instance, ["reference_genome", "gene_annotation", "expression"])
        _materialise(study_file, instance, ["genotypes"], "chr19")
        _materialise(study_file, instance, ["gene_locus"], GENE)
    before = stored.read_bytes()

    marker = tmp_path / "written"
    process = subprocess.Popen(
        [sys.executable, "-c", RUN_IN_A_PROCESS, str(study_file), str(marker), GENE],
        cwd=PROJECT, env={**os.environ, "DAGSTER_HOME": str(home)}, start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + WAIT_SECONDS
        while not marker.exists():
            assert process.poll() is None, process.stdout.read().decode()[-3000:]
            assert time.monotonic() < deadline, "the run never reached its write"
            time.sleep(0.2)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    scratch = Path(marker.read_text())
    assert scratch.exists()  # killed with its half-written bytes
    assert stored.read_bytes() == before

    with dg.DagsterInstance.from_config(str(home)) as instance:
        _materialise(study_file, instance, ["gene_locus"], GENE)
        events = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=LOCUS, asset_partitions=[GENE]), limit=10).records
    assert len(events) == 2  # the first run and the re-run; the killed one recorded none
    assert stored.read_bytes() == before  # the same inputs give the same bytes
