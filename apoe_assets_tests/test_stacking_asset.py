"""multi_gene_stacking and model_comparison on a two-gene demo copy, materialised for real
through Dagster (with ``stacking.genotype_scores`` on, so the per-fold genotype scores travel
through the asset too).

The per-gene inputs run as one backfill over both genes (Enformer loaded and compiled once,
the chromosome read once); then ``gene_models`` per gene and the two all-genes assets. The
stored stacking predictions must equal the core's :func:`stack_gene` on the stored inputs,
assembled here by hand (not by the asset's helper); ``model_comparison``'s R² must equal
scikit-learn's ``r2_score`` of the stored out-of-fold tables.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import r2_score
from threadpoolctl import threadpool_limits

from apoe_assets.definitions import build_definitions
from apoe_assets.enformer.predictions import GenePredictions
from apoe_assets.materialize import QUIET, materialize_all
from apoe_assets.ml.stacking import BASE_MODELS, STACK, check_no_leakage, stack_gene
from apoe_assets.study import DEMO_STUDY, Study, load_study
from apoe_assets_tests.conftest import failure_message
from apoe_assets_tests.studies import demo_copy

GENES = ["APOE", "APOC1"]
"""Two of the demo's Enformer genes, consecutive in the study file (one partition range)."""
SAMPLES = 120
"""The first demo samples with expression: enough for 5 outer × 5 inner folds with the
covariates, few enough to keep the whole module near a minute."""
PER_GENE = ["cis_eqtl", "prs_scores", "prs_weights", "prs_fold_scores", "enformer_predictions"]
MODELLED = GENES[0]
"""The gene whose ``gene_models`` is materialised; the other's is not, so the comparison
shows it with the stacking models alone and a note (and the test saves its fit)."""
ALL_GENES = ["multi_gene_stacking", "model_comparison"]
RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"


@dataclass(frozen=True)
class Run:
    study: Study
    storage: Path
    results: list[dg.ExecuteInProcessResult]
    logs: list[str]
    seconds: float

    def stored(self, asset: str, gene: str | None = None) -> pd.DataFrame:
        return pd.read_parquet(self.storage / asset / f"{gene}.parquet" if gene
                               else self.storage / f"{asset}.parquet")

    def metadata(self, asset: str) -> dict:
        events = [e for r in self.results for e in r.get_asset_materialization_events()
                  if e.asset_key == dg.AssetKey(asset)]
        assert len(events) == 1, asset
        return {k: getattr(v, "value", v) for k, v in events[0].materialization.metadata.items()}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    started = time.perf_counter()
    folder = tmp_path_factory.mktemp("stacking")
    samples = pd.read_csv(load_study(DEMO_STUDY).expression, sep="\t", nrows=0
                          ).columns[4:][:SAMPLES].tolist()
    study_file = demo_copy(folder, genes=GENES, samples=samples, eqtl={"permutations": 20},
                           genes_per_run=len(GENES), stacking={"genotype_scores": True})
    study = load_study(study_file)
    defs = build_definitions(study)
    job = defs.resolve_implicit_global_asset_job_def()
    per_gene = dg.AssetSelection.assets(*PER_GENE)
    with dg.instance_for_test() as instance:
        results = materialize_all(defs, instance, report=lambda _: None,
                                  selection=per_gene.upstream() - per_gene)
        assert all(r.success for r in results), failure_message(results)
        results.append(job.execute_in_process(
            instance=instance, asset_selection=[dg.AssetKey(a) for a in PER_GENE],
            tags={RANGE_START: GENES[0], RANGE_END: GENES[-1]}, run_config=QUIET,
            raise_on_error=False))
        assert results[-1].success, failure_message(results)
        results.append(job.execute_in_process(
            instance=instance, asset_selection=[dg.AssetKey("gene_models")],
            partition_key=MODELLED, run_config=QUIET, raise_on_error=False))
        results += materialize_all(defs, instance, report=lambda _: None,
                                   selection=dg.AssetSelection.assets(*ALL_GENES))
        assert all(r.success for r in results), failure_message(results)
        logs = [entry.user_message for r in results for entry in instance.all_logs(r.run_id)]
    return Run(study, Path(study.storage_root), results, logs, time.perf_counter() - started)


def _stored_inputs(run: Run) -> tuple[pd.DataFrame, pd.DataFrame, pd.Series, pd.DataFrame]:
    """Features, per-fold genotype scores, folds and covariates, read from storage and put
    together by hand."""
    folds = run.stored("cv_folds")["fold"]
    features = pd.DataFrame({
        f"{g}:feature": GenePredictions.read(run.storage / "enformer_predictions"
                                             / f"{g}.predictions").features["feature"]
        for g in GENES}).loc[folds.index]
    scores = None
    for gene in GENES:
        table = run.stored("prs_fold_scores", gene).drop(columns="target").rename(
            columns={"baseline_prs": f"{gene}:baseline_prs", "pt_prs": f"{gene}:pt_prs"})
        scores = table if scores is None else scores.merge(table, on=["fold", "sample", "role"])
    return features, scores, folds, run.stored("covariates")


def test_stored_stacking_equals_the_core_on_the_stored_inputs(run: Run) -> None:
    """Catches an asset that feeds the core other features (a gene's column swapped or
    missing, outer genotype scores for training rows, unadjusted targets), other folds or
    settings, or stores rows under the wrong gene."""
    table = run.stored("multi_gene_stacking")
    assert table.columns.tolist() == ["gene", "sample", "fold", "observed", *BASE_MODELS, STACK]
    assert table["gene"].unique().tolist() == GENES
    features, scores, folds, covariates = _stored_inputs(run)
    gene = GENES[0]
    gene_id = run.study.gene_table.set_index("partition_key").loc[gene, "gene_id"]
    with threadpool_limits(1):
        direct = stack_gene(features, run.stored("expression").loc[gene_id], folds,
                            covariates=covariates, fold_features=scores, gene_id=gene,
                            n_inner_folds=run.study.prs.inner_folds, seed=run.study.seed)
    check_no_leakage(direct)
    stored = table[table["gene"] == gene].drop(columns="gene").set_index("sample")
    pd.testing.assert_frame_equal(stored, direct.predictions, check_exact=False, rtol=1e-9,
                                  atol=1e-12)
    # the stack's observed values are gene_models' (the same covariate fit per fold)
    rows = table[table["gene"] == MODELLED].set_index("sample")
    single = run.stored("gene_models", MODELLED)
    np.testing.assert_allclose(rows.loc[single.index, "observed"], single["observed"],
                               rtol=1e-9, atol=1e-12)


def test_stacking_metadata_and_progress(run: Run) -> None:
    metadata = run.metadata("multi_gene_stacking")
    assert metadata["genes_stacked"] == len(GENES) and metadata["genotype_scores"] is True
    assert metadata["features"] == len(GENES)
    assert metadata["leakage_check"].startswith("passed: ")
    assert metadata["r2_plot"].startswith("![multi-gene stacking R²](data:image/png;base64,")
    table = run.stored("multi_gene_stacking")
    for gene in GENES:
        rows = table[table["gene"] == gene]
        assert metadata[f"r2_stack_{gene}"] == pytest.approx(
            r2_score(rows["observed"], rows[STACK]))
        assert any(m.startswith(f"{gene} ({GENES.index(gene) + 1}/{len(GENES)}): ")
                   and " s; R² stack " in m for m in run.logs), gene
    assert "| gene" in metadata["best_per_gene"] and metadata["seconds_per_gene"] > 0


def test_model_comparison_r2_is_recomputed_from_the_stored_tables(run: Run) -> None:
    """Every (gene, model) R² of ``model_comparison`` is scikit-learn's ``r2_score`` of the
    stored out-of-fold predictions (``gene_models`` of the modelled gene,
    ``multi_gene_stacking``), and each gene's winner is its highest R²; the gene without
    ``gene_models`` is compared on its stacking models alone, with a note."""
    comparison = run.stored("model_comparison")
    stacked = run.stored("multi_gene_stacking")
    single_models = ["baseline_prs", "pt_prs", "elastic_net", "enformer_linear",
                     "enformer_xgboost", "combined"]
    stacking_models = [*(f"stacking_{m}" for m in BASE_MODELS), STACK]
    assert comparison["gene"].unique().tolist() == GENES
    for gene in GENES:
        rows = comparison[comparison["gene"] == gene].set_index("model")
        if gene == MODELLED:
            assert rows.index.tolist() == [*single_models, *stacking_models]
            single = run.stored("gene_models", gene)
            for model in single_models:
                assert rows.loc[model, "r2"] == pytest.approx(
                    r2_score(single["observed"], single[model]), rel=1e-12)
        else:
            assert rows.index.tolist() == stacking_models
        mine = stacked[stacked["gene"] == gene]
        for model in [*BASE_MODELS, STACK]:
            name = model if model == STACK else f"stacking_{model}"
            assert rows.loc[name, "r2"] == pytest.approx(
                r2_score(mine["observed"], mine[model]), rel=1e-12)
        assert rows.loc[rows["winner"]].index.tolist() == [rows["r2"].idxmax()]
    metadata = run.metadata("model_comparison")
    assert "| gene" in metadata["winners"] and metadata["genes"] == len(GENES)
    assert f"{GENES[1]}: gene_models not materialised" in metadata["notes"]
    plot = run.storage / "model_comparison.png"
    assert metadata["plot_file"] == str(plot)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert metadata["r2_plot"].startswith("![R² by gene and model](data:image/png;base64,")


def test_module_time(run: Run) -> None:
    """The whole materialisation stays near a minute (the suite's budget); printed for the
    record."""
    print(f"stacking asset module: {run.seconds:.1f} s to materialise")
    assert run.seconds < 240
