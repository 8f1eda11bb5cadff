"""The real Dagster webserver and daemon on 127.0.0.1: the UI's view of partitions and lineage,
and a partition backfill carried out by the daemon."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from apoe_assets_tests.conftest import materialise
from apoe_assets_tests.studies import TinyStudy, write_tiny_study

pytestmark = pytest.mark.e2e
PROJECT = Path(__file__).resolve().parents[2]
STARTUP_SECONDS = 180
BACKFILL_SECONDS = 300


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _graphql(port: int, query: str, variables: dict | None = None) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        payload = json.loads(response.read())
    assert "errors" not in payload, payload
    return payload["data"]


ASSET_NODES = """{ assetNodes { assetKey { path } partitionKeys dependencyKeys { path } } }"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[tuple[int, TinyStudy, Path]]:
    """`dagster dev` (webserver + daemon) for a tiny two-chromosome study: its port, the study
    and the instance's DAGSTER_HOME."""
    root = tmp_path_factory.mktemp("e2e")
    tiny = write_tiny_study(root / "study", second_chromosome=True)
    home = root / "dagster_home"
    home.mkdir()
    shutil.copy(PROJECT / "dagster.yaml", home / "dagster.yaml")
    port = _free_port()
    env = {**os.environ, "DAGSTER_HOME": str(home), "APOE_STUDY": str(tiny.study)}
    dagster = Path(sys.executable).with_name("dagster")
    log = (root / "dagster.log").open("w")
    process = subprocess.Popen(
        [str(dagster), "dev", "-h", "127.0.0.1", "-p", str(port), "-w", "workspace.yaml"],
        cwd=PROJECT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            assert process.poll() is None, (root / "dagster.log").read_text()[-3000:]
            try:
                if _graphql(port, ASSET_NODES)["assetNodes"]:
                    break
            except (OSError, AssertionError, KeyError):
                pass
            assert time.monotonic() < deadline, (root / "dagster.log").read_text()[-3000:]
            time.sleep(2)
        yield port, tiny, home
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
        log.close()


def test_ui_shows_partitions_and_lineage(server: tuple[int, TinyStudy, Path]) -> None:
    port, _, _ = server
    nodes = {"/".join(n["assetKey"]["path"]): n for n in _graphql(port, ASSET_NODES)["assetNodes"]}
    assert nodes["genotypes"]["partitionKeys"] == ["chr1", "chr2"]
    assert nodes["gene_locus"]["partitionKeys"] == ["GENE_A", "GENE_B", "GENE_C"]
    parents = {"/".join(d["path"]) for d in nodes["gene_locus"]["dependencyKeys"]}
    assert parents == {"gene_annotation", "genotypes", "expression"}
    assert {"/".join(d["path"]) for d in nodes["genotypes"]["dependencyKeys"]} == {
        "gene_annotation", "genotype_file"}  # lineage starts at the VCF (a source asset)
    assert nodes["genotype_file"]["partitionKeys"] == ["chr1", "chr2"]


LAUNCH = """mutation($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message } } }"""
STATUS = """query($id: String!) { partitionBackfillOrError(backfillId: $id) {
  ... on PartitionBackfill { status } } }"""
STATS = """query($key: AssetKeyInput!) { assetNodeOrError(assetKey: $key) {
  ... on AssetNode { partitionStats { numMaterialized numFailed } } } }"""


def test_daemon_runs_a_backfill_of_every_partition(server: tuple[int, TinyStudy, Path]
                                                   ) -> None:
    """The study's unpartitioned inputs are materialised into the server's instance first (so
    the backfill needs fewer of the daemon's 30-s ticks); then one backfill of every chromosome
    and every gene partition, which the daemon must run in dependency order."""
    port, tiny, home = server
    inputs = dg.AssetSelection.assets("expression", "covariates").upstream()
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert all(r.success for r in materialise(tiny.study, instance, inputs))
    ranges = {"genotypes": ("chr1", "chr2"), "gene_locus": ("GENE_A", "GENE_C")}
    by_asset = [{"assetKey": {"path": [a]},
                 "partitions": {"range": {"start": start, "end": end}}}
                for a, (start, end) in ranges.items()]
    launched = _graphql(port, LAUNCH, {"params": {"partitionsByAssets": by_asset}})
    result = launched["launchPartitionBackfill"]
    assert result["__typename"] == "LaunchBackfillSuccess", result
    deadline = time.monotonic() + BACKFILL_SECONDS
    status = None
    while time.monotonic() < deadline:
        status = _graphql(port, STATUS, {"id": result["backfillId"]})[
            "partitionBackfillOrError"]["status"]
        if status in {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED",
                      "CANCELED"}:
            break
        time.sleep(3)
    assert status in {"COMPLETED", "COMPLETED_SUCCESS"}, status
    stats = _graphql(port, STATS, {"key": {"path": ["gene_locus"]}})["assetNodeOrError"]
    assert stats["partitionStats"] == {"numMaterialized": 3, "numFailed": 0}
    assert sorted(p.name for p in (tiny.storage / "gene_locus").iterdir()) == [
        "GENE_A.parquet", "GENE_B.parquet", "GENE_C.parquet"]
