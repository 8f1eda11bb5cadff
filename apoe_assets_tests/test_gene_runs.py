"""Many genes in one run: ``cis_eqtl`` and ``prs_scores``/``prs_weights`` over a range of gene
partitions, as a backfill with ``genes_per_run`` > 1 launches them, materialised for real.

Every gene is stored through the IO manager as its own partition, equal to what the core
computes for that gene alone; each gene's metadata is its own; the chromosome is loaded once
per run; and the study setting reaches Dagster's backfill policy.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from apoe_assets.definitions import build_definitions
from apoe_assets.materialize import QUIET, materialize_all
from apoe_assets.ml.fold_scans import fingerprint_digest
from apoe_assets.study import load_study
from apoe_assets_tests.ml.demo import Demo, shared_demo
from apoe_assets_tests.studies import demo_copy

GENES = ["BCAM", "NECTIN2", "RELB"]
"""In the study's partition order (by position), so the range BCAM … RELB is these three."""
GENE_ASSETS = ["cis_eqtl", "prs_scores", "prs_weights", "prs_fold_scores"]
RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory
        ) -> tuple[Path, dg.ExecuteInProcessResult, list]:
    study_file = demo_copy(tmp_path_factory.mktemp("runs"), genes=GENES,
                           eqtl={"permutations": 20}, genes_per_run=len(GENES))
    defs = build_definitions(load_study(study_file))
    with dg.instance_for_test() as instance:
        upstream = dg.AssetSelection.assets(*GENE_ASSETS).upstream() - dg.AssetSelection.assets(
            *GENE_ASSETS)
        assert all(r.success for r in materialize_all(defs, instance, report=lambda _: None,
                                                      selection=upstream))
        job = defs.resolve_implicit_global_asset_job_def()
        result = job.execute_in_process(
            instance=instance, asset_selection=[dg.AssetKey(a) for a in GENE_ASSETS],
            tags={RANGE_START: GENES[0], RANGE_END: GENES[-1]}, run_config=QUIET,
            raise_on_error=False)
        events = list(instance.all_logs(result.run_id))
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    return study_file, result, events


@pytest.fixture(scope="module")
def demo() -> Demo:
    return shared_demo()


def _stored(study_file: Path, asset: str, gene: str) -> pd.DataFrame:
    return pd.read_parquet(Path(load_study(study_file).storage_root) / asset / f"{gene}.parquet")


def test_every_gene_is_its_own_stored_partition(run, demo: Demo) -> None:
    """Each gene of the range is stored at its own partition path, equal to the core's models
    of that gene alone (so no gene got another's window, expression or scans). Catches an IO
    manager that writes one file for the range, or an asset that keys genes wrongly."""
    study_file, result, _ = run
    made = {(e.asset_key.to_user_string(), e.partition)
            for e in result.get_asset_materialization_events()}
    assert made == {(a, g) for a in GENE_ASSETS for g in GENES}
    for gene in GENES:
        direct = demo.models(gene)
        pd.testing.assert_frame_equal(_stored(study_file, "prs_scores", gene), direct.predictions)
        pd.testing.assert_frame_equal(_stored(study_file, "prs_weights", gene),
                                      direct.weight_table())
        scans = _stored(study_file, "cis_eqtl", gene)
        pd.testing.assert_frame_equal(scans[scans["fold"].isna()].drop(columns="fold")
                                      .reset_index(drop=True), direct.eqtl.table)


def test_each_gene_carries_its_own_metadata(run, demo: Demo) -> None:
    """A run over several genes shares one output, but each gene's materialisation carries its
    own figures: R² of its models, its fingerprint digest, its plots."""
    study_file, result, _ = run
    for event in result.get_asset_materialization_events():
        gene, metadata = event.partition, event.materialization.metadata
        if event.asset_key == dg.AssetKey("prs_scores"):
            r2 = demo.models(gene).metrics()["r2"]
            assert metadata["r2_pt_prs"].value == pytest.approx(r2["pt_prs"])
            assert metadata["prediction_plot"].value.startswith("![")
        elif event.asset_key == dg.AssetKey("cis_eqtl"):
            digest = fingerprint_digest(_stored(study_file, "cis_eqtl", gene))
            assert metadata["fingerprint_digest"].value == digest
    digests = {e.materialization.metadata["fingerprint_digest"].value
               for e in result.get_asset_materialization_events()
               if e.asset_key == dg.AssetKey("cis_eqtl")}
    assert len(digests) == len(GENES)


def test_the_chromosome_is_loaded_once_per_step(run) -> None:
    """Both steps (cis_eqtl, then the PRS models) load the chromosome, expression and
    covariates once for all genes of the range, not once per gene."""
    _, _, events = run
    loaded = [e.dagster_event.event_specific_data.input_name for e in events
              if e.dagster_event and e.dagster_event.event_type_value == "LOADED_INPUT"]
    for name in ("genotypes", "expression", "covariates"):
        assert loaded.count(name) == 2, (name, loaded)


def test_genes_per_run_sets_the_backfill_policy(run) -> None:
    """``genes_per_run`` from the study file becomes the per-gene models' backfill policy."""
    study_file = run[0]
    graph = build_definitions(load_study(study_file)).resolve_asset_graph()
    for asset in (*GENE_ASSETS, "enformer_predictions"):
        policy = graph.get(dg.AssetKey(asset)).backfill_policy
        assert policy.max_partitions_per_run == len(GENES), asset
