"""enformer_predictions on the demo study, materialised for real through Dagster.

Two genes in one single-run backfill: the per-sample feature equals the planted truth (which the
simulator computed by the same path), every distinct haplotype goes through the model once,
the model is loaded once for both genes, and a failed run leaves the good output as it was.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import yaml

from apoe_assets.definitions import JAX_CACHE, build_definitions
from apoe_assets.demo.enformer_component import FEATURE_DECIMALS
from apoe_assets.enformer.model import EnformerConfig
from apoe_assets.enformer.predictions import GenePredictions
from apoe_assets.genomics.personal import SequenceFolder
from apoe_assets.materialize import QUIET, materialize_all
from apoe_assets.ml.enformer_models import ENFORMER_MODELS, boosting_features, enformer_models
from apoe_assets.study import load_study
from apoe_assets_tests.conftest import failure_message, snapshot
from apoe_assets_tests.float32 import recorded_tolerance
from apoe_assets_tests.studies import demo_copy

GENES = ["APOE", "APOC1"]
"""Two of the demo's Enformer genes, consecutive in the study file (one partition range)."""
UPSTREAM = dg.AssetSelection.assets("personal_sequences").upstream()
PREDICTIONS = dg.AssetKey("enformer_predictions")
RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"


@dataclass(frozen=True)
class Backfill:
    """The demo copy and what the one enformer_predictions run over both genes produced."""

    study_file: Path
    storage: Path
    result: dg.ExecuteInProcessResult
    logs: list[str]

    def predictions(self, gene: str) -> GenePredictions:
        return GenePredictions.read(self.storage / "enformer_predictions"
                                    / f"{gene}.predictions")

    def manifest(self, gene: str) -> pd.DataFrame:
        return SequenceFolder(self.storage / "personal_sequences"
                              / f"{gene}.sequences").manifest()


def _predict(study_file: Path, instance: dg.DagsterInstance, genes: list[str]
             ) -> dg.ExecuteInProcessResult:
    """One run of enformer_predictions over ``genes`` (a partition key range)."""
    job = build_definitions(load_study(study_file)).resolve_implicit_global_asset_job_def()
    return job.execute_in_process(instance=instance, asset_selection=[PREDICTIONS],
                                  tags={RANGE_START: genes[0], RANGE_END: genes[-1]},
                                  run_config=QUIET, raise_on_error=False)


def _truth(study_file: Path, gene: str) -> pd.DataFrame:
    """The planted haplotype features of ``gene``, by sample (the expressed samples)."""
    table = pd.read_csv(load_study(study_file).truth / "enformer_features.tsv", sep="\t")
    return table[table["symbol"] == gene].set_index("sample")


@pytest.fixture(scope="module")
def backfill(tmp_path_factory: pytest.TempPathFactory) -> Backfill:
    """The demo restricted to the samples the simulator predicted (those with expression)."""
    samples = _truth(demo_copy(tmp_path_factory.mktemp("demo")), GENES[0]).index.tolist()
    study_file = demo_copy(tmp_path_factory.mktemp("enformer"), genes=GENES, samples=samples)
    with dg.instance_for_test() as instance:
        upstream = materialize_all(build_definitions(load_study(study_file)), instance,
                                   report=lambda _: None, selection=UPSTREAM)
        assert all(r.success for r in upstream)
        result = _predict(study_file, instance, GENES)
        logs = [entry.user_message for entry in instance.all_logs(result.run_id)]
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    return Backfill(study_file, Path(load_study(study_file).storage_root), result, logs)


def _metadata(backfill: Backfill) -> dict:
    events = backfill.result.get_asset_materialization_events()
    return {k: getattr(v, "value", v) for k, v in events[0].materialization.metadata.items()}


def test_one_run_materialises_both_genes_with_one_model_load(backfill: Backfill) -> None:
    events = backfill.result.get_asset_materialization_events()
    assert sorted(e.partition for e in events) == sorted(GENES)
    assert {e.asset_key for e in events} == {PREDICTIONS}
    assert sum("loaded Enformer weights" in message for message in backfill.logs) == 1
    metadata = _metadata(backfill)
    assert metadata["model_loads"] == 1 and metadata["genes"] == len(GENES)
    assert all((backfill.storage / "enformer_predictions" / f"{g}.predictions").is_dir()
               for g in GENES)
    # JAX's persistent compilation cache lives under the storage root and was filled
    assert any((backfill.storage / JAX_CACHE).iterdir())


@pytest.mark.parametrize("gene", GENES)
def test_feature_equals_the_planted_truth(backfill: Backfill, gene: str) -> None:
    """The demo planted its component from these weights' TSS feature; the asset recomputes
    it from the personal sequences for every sample."""
    truth = _truth(backfill.study_file, gene)
    features = backfill.predictions(gene).features
    assert features.index.tolist() == truth.index.tolist()
    expected = truth[["haplotype_1", "haplotype_2", "feature"]].to_numpy()
    got = features[["h1", "h2", "feature"]].to_numpy()
    # computed on another CPU (the demo's): equal up to the network's float32 tolerance
    tolerance = recorded_tolerance(EnformerConfig.small(), expected, FEATURE_DECIMALS)
    assert np.abs(got - expected).max() <= tolerance
    assert features["feature"].std() > 10 * tolerance  # the variation across people is checked


@pytest.mark.parametrize("gene", GENES)
def test_each_distinct_haplotype_is_predicted_once(backfill: Backfill, gene: str) -> None:
    """One prediction per distinct model input: the simulator's count of distinct TSS-centred
    haplotypes. The manifest's hashes cover the flanks too, so they split a few more."""
    manifest = backfill.manifest(gene)
    recorded = json.loads((load_study(backfill.study_file).truth / "simulation.json")
                          .read_text())["enformer"]["genes"][gene]["distinct_haplotypes"]
    predictions = backfill.predictions(gene)
    rows = predictions.haplotypes.set_index("record")["row"]
    assert len(predictions.values) == rows.nunique() == recorded
    assert recorded <= manifest["hash"].nunique() < len(manifest) == len(rows)
    # records with equal hashes share a row (a hash is never predicted twice)
    hashes = manifest.set_index("record")["hash"].loc[rows.index].to_numpy()
    assert (rows.groupby(hashes).nunique() == 1).all()
    metadata = _metadata(backfill)
    total = sum(len(backfill.predictions(g).values) for g in GENES)
    assert metadata["sequences_computed"] == metadata["distinct_sequences"] == total


def test_metadata_has_rate_and_track_plot(backfill: Backfill) -> None:
    metadata = _metadata(backfill)
    assert metadata["sequences_per_second"] > 0
    assert metadata["tracks_plot"].startswith(f"![{GENES[0]}: predicted tracks]"
                                              "(data:image/png;base64,")
    assert metadata["tracks"] == "CAGE:brain, adult, demo"
    assert any("distinct sequences (" in m and "sequences/s)" in m for m in backfill.logs)


def _changed_study(backfill: Backfill, folder: Path, **enformer: object) -> Path:
    """The backfill's study (same storage) with some ``enformer:`` settings changed."""
    fields = yaml.safe_load(backfill.study_file.read_text())
    fields["enformer"] = {**fields["enformer"], **enformer}
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(fields, sort_keys=False))
    return path


@pytest.mark.parametrize(("change", "advice"), [
    ({"tracks": ["CAGE:cerebellum"]}, "no track description matches 'CAGE:cerebellum'"),
    ({"weights": None}, "python -m apoe_assets.enformer.convert"),
    ({"weights": "absent.safetensors"}, "EleutherAI/enformer-official-rough"),
])
def test_failed_run_leaves_the_good_output(backfill: Backfill, tmp_path: Path, change: dict,
                                           advice: str) -> None:
    """A configuration error fails the step at once (no retry), says what to change, and
    leaves the stored predictions byte for byte as they were."""
    before = snapshot(backfill.storage / "enformer_predictions")
    study_file = _changed_study(backfill, tmp_path, **change)
    with dg.instance_for_test() as instance:
        result = _predict(study_file, instance, GENES[:1])
        retries = [e for e in result.all_events
                   if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY]
    assert not result.success and not retries
    message = failure_message([result])
    assert advice in message and "enformer." in message
    assert snapshot(backfill.storage / "enformer_predictions") == before


MODEL_ASSETS = ("expression", "covariates", "cv_folds", "cis_eqtl", "prs_scores", "prs_weights",
                "prs_fold_scores", "gene_models")


@pytest.fixture(scope="module")
def models(backfill: Backfill) -> dict[str, dict]:
    """The genotype models and ``gene_models`` of both genes, on the stored predictions."""
    with dg.instance_for_test() as instance:
        results = materialize_all(build_definitions(load_study(backfill.study_file)), instance,
                                  report=lambda _: None,
                                  selection=dg.AssetSelection.assets(*MODEL_ASSETS))
    assert all(r.success for r in results), failure_message(results)
    return {e.partition: e.materialization.metadata for r in results
            for e in r.get_asset_materialization_events()
            if e.asset_key == dg.AssetKey("gene_models")}


@pytest.mark.parametrize("gene", GENES[:1])
def test_gene_models_stores_every_model_out_of_fold(backfill: Backfill, models, gene: str
                                                    ) -> None:
    """``gene_models`` holds, per sample, the genotype models' stored out-of-fold predictions
    and the Enformer models' computed by the core from the stored predictions, fold scores,
    expression and covariates; its metadata's R² are those of the stored table."""
    storage = backfill.storage
    table = pd.read_parquet(storage / "gene_models" / f"{gene}.parquet")
    scores = pd.read_parquet(storage / "prs_scores" / f"{gene}.parquet")
    pd.testing.assert_frame_equal(table[scores.columns], scores)
    study = load_study(backfill.study_file)
    gene_id = study.gene_table.set_index("partition_key").loc[gene, "gene_id"]
    folds = pd.read_parquet(storage / "cv_folds.parquet")["fold"]
    direct = enformer_models(
        boosting_features(backfill.predictions(gene)),
        pd.read_parquet(storage / "prs_fold_scores" / f"{gene}.parquet"),
        pd.read_parquet(storage / "expression.parquet").loc[gene_id],
        pd.read_parquet(storage / "covariates.parquet"), folds, gene_id,
        n_inner_folds=study.prs.inner_folds, seed=study.seed)
    pd.testing.assert_frame_equal(table[list(ENFORMER_MODELS)],
                                  direct.predictions[list(ENFORMER_MODELS)])
    for model in ENFORMER_MODELS:
        r2 = 1 - ((table["observed"] - table[model]) ** 2).sum() / (
            (table["observed"] - table["observed"].mean()) ** 2).sum()
        assert models[gene][f"r2_{model}"].value == pytest.approx(r2)
