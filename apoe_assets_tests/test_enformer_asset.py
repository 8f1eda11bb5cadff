"""enformer_predictions and the model assets on the demo study, materialised for real
through Dagster, the models logging to a real `mlflow server` on 127.0.0.1.

Two genes in one single-run backfill: the per-sample feature equals the planted truth (which the
simulator computed by the same path), every distinct haplotype goes through the model once,
the model is loaded once for both genes, and a failed run leaves the good output as it was.
Then the genotype models, ``gene_models``, ``multi_gene_stacking`` (genotype scores on) and
``model_comparison`` on those predictions: stored tables equal the cores on the stored inputs,
every MLflow run holds what the stored predictions say, every logged model predicts its fold's
held-out people from inputs rebuilt here, and each gene's champion is its best model.
"""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from scipy.stats import rankdata
from sklearn.metrics import r2_score
from threadpoolctl import threadpool_limits

from apoe_assets.assets.enformer import check_one_path
from apoe_assets.assets.models import ALL_MODELS
from apoe_assets.assets.models import VERSION as MODELS_VERSION
from apoe_assets.definitions import build_definitions
from apoe_assets.demo.enformer_component import FEATURE_DECIMALS
from apoe_assets.enformer.model import EnformerConfig
from apoe_assets.enformer.predictions import GenePredictions
from apoe_assets.genomics.fasta import ReferenceGenome
from apoe_assets.genomics.personal import SequenceFolder
from apoe_assets.genomics.vcf import read_genotypes
from apoe_assets.materialize import QUIET, materialize_all
from apoe_assets.ml.enformer_models import ENFORMER_MODELS, boosting_features, enformer_models
from apoe_assets.ml.gene_models import MODELS
from apoe_assets.ml.stacking import BASE_MODELS, STACK, check_no_leakage, stack_gene
from apoe_assets.ml.tracking import (
    MULTI_GENE_STACKING,
    ROLE_MODEL,
    ROLE_PARENT,
    SINGLE_GENE,
    TAG_ASSET_KEY,
    TAG_CODE_VERSION,
    TAG_DAGSTER_RUN_ID,
    TAG_DATA_VERSION,
    TAG_GENE,
    TAG_MODEL,
    TAG_PARTITION,
    TAG_ROLE,
)
from apoe_assets.resources.mlflow_tracking import MlflowTracking
from apoe_assets.stage_settings import JAX_CACHE, enformer_resource
from apoe_assets.study import load_study
from apoe_assets_tests.browser import SCREENSHOTS, chromium
from apoe_assets_tests.conftest import failure_message, snapshot
from apoe_assets_tests.float32 import recorded_tolerance
from apoe_assets_tests.mlflow_server import free_port, mlflow_server
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
    # the comparison tells people apart: most would fail it with their neighbour's feature
    neighbour = np.roll(expected[:, 2], 1)
    assert np.median(np.abs(features["feature"].to_numpy() - neighbour)) > tolerance


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


def test_a_launchpad_override_of_a_prediction_setting_is_refused(backfill: Backfill) -> None:
    """Settings that change the predictions come from the study file only: a run whose
    ``enformer`` resource overrides the weights and precision fails at once, naming both and
    what may be overridden, and leaves the stored predictions as they were; run-time overrides
    (device, batch size, cache) pass the same check. Catches two paths to one setting (stored
    outputs whose lineage names other weights than made them)."""
    study = load_study(backfill.study_file)
    runtime = enformer_resource(study).model_copy(
        update={"device": "cpu", "batch_size": 3, "compilation_cache_dir": None})
    check_one_path(study, runtime)
    before = snapshot(backfill.storage / "enformer_predictions")
    override = {"weights": str(backfill.storage / "other.safetensors"), "precision": "bfloat16"}
    config = {**QUIET, "resources": {"enformer": {"config": override}}}
    job = build_definitions(study).resolve_implicit_global_asset_job_def()
    with dg.instance_for_test() as instance:
        result = job.execute_in_process(instance=instance, asset_selection=[PREDICTIONS],
                                        partition_key=GENES[0], run_config=config,
                                        raise_on_error=False)
    assert not result.success
    message = failure_message([result])
    assert "sets weights, precision differently" in message
    assert "device, batch_size, compilation_cache_dir" in message
    assert snapshot(backfill.storage / "enformer_predictions") == before


MODEL_ASSETS = ("expression", "covariates", "cv_folds", "cis_eqtl", "prs_scores", "prs_weights",
                "prs_fold_scores", "gene_models", "multi_gene_stacking", "model_comparison",
                "truth_recovery")


@dataclass(frozen=True)
class Models:
    """The model assets materialised against a real MLflow server (stacking with the genotype
    scores on, so the per-fold scores travel through the asset too)."""

    study_file: Path
    tracking: MlflowTracking
    results: list[dg.ExecuteInProcessResult]
    logs: list[str]

    @property
    def storage(self) -> Path:
        return Path(load_study(self.study_file).storage_root)

    def table(self, gene: str) -> pd.DataFrame:
        return pd.read_parquet(self.storage / "gene_models" / f"{gene}.parquet")

    def stored(self, asset: str) -> pd.DataFrame:
        return pd.read_parquet(self.storage / f"{asset}.parquet")

    def metadata(self, asset: str, gene: str | None = None) -> dict:
        events = [e for r in self.results for e in r.get_asset_materialization_events()
                  if e.asset_key == dg.AssetKey(asset) and e.partition == gene]
        assert len(events) == 1, (asset, gene)
        return {k: getattr(v, "value", v) for k, v in events[0].materialization.metadata.items()}


@pytest.fixture(scope="module")
def models(backfill: Backfill, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Models]:
    """The genotype models, ``gene_models`` of both genes, ``multi_gene_stacking`` and
    ``model_comparison`` on the stored predictions, logged to a real `mlflow server` on
    127.0.0.1."""
    folder = tmp_path_factory.mktemp("mlflow")
    with mlflow_server(folder) as url:
        fields = yaml.safe_load(backfill.study_file.read_text())
        study_file = folder / "study.yaml"
        study_file.write_text(yaml.safe_dump({**fields, "mlflow_tracking_uri": url,
                                              "stacking": {"genotype_scores": True}},
                                             sort_keys=False))
        with dg.instance_for_test() as instance:
            results = materialize_all(build_definitions(load_study(study_file)), instance,
                                      report=lambda _: None,
                                      selection=dg.AssetSelection.assets(*MODEL_ASSETS))
            logs = [entry.user_message for r in results
                    for entry in instance.all_logs(r.run_id)]
        assert all(r.success for r in results), failure_message(results)
        yield Models(study_file, MlflowTracking(tracking_uri=url), results, logs)


@pytest.mark.parametrize("gene", GENES[:1])
def test_gene_models_stores_every_model_out_of_fold(backfill: Backfill, models: Models,
                                                    gene: str) -> None:
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
        assert models.metadata("gene_models", gene)[f"r2_{model}"] == pytest.approx(r2)


def _r2(observed: pd.Series, predicted: pd.Series) -> float:
    return float(1 - ((observed - predicted) ** 2).sum()
                 / ((observed - observed.mean()) ** 2).sum())


@pytest.mark.e2e
@pytest.mark.parametrize("gene", GENES)
def test_gene_models_fill_mlflow(models: Models, gene: str) -> None:
    """Per gene: one parent run of its Dagster run in the ``single-gene`` experiment (the run
    covers both genes; its ``partition`` tag lists them) and, under it, one FINISHED run per
    model with the five Dagster tags (the gene's own partition and data version), the pooled
    R² and the per-fold R² recomputed here from the stored out-of-fold table, the exported
    fold as a parameter, a logged model and an observed-vs-predicted plot. Catches a missing
    or mis-tagged run, a run outside its parent, and metrics that are not those of the stored
    predictions."""
    client = models.tracking.client()
    experiment = client.get_experiment_by_name(SINGLE_GENE)
    runs = client.search_runs([experiment.experiment_id], max_results=500)
    parents = [r for r in runs if r.data.tags.get(TAG_ROLE) == ROLE_PARENT
               and gene in r.data.tags[TAG_PARTITION].split(",")]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    parent = parents[0]
    children = {r.data.tags[TAG_MODEL]: r for r in runs
                if r.data.tags.get(MLFLOW_PARENT_RUN_ID) == parent.info.run_id
                and r.data.tags.get(TAG_GENE) == gene}
    assert sorted(children) == sorted(ALL_MODELS)
    table = models.table(gene)
    for model, run in children.items():
        tags = run.data.tags
        assert run.info.status == "FINISHED" and tags[TAG_GENE] == gene
        assert tags[TAG_DAGSTER_RUN_ID] == parent.data.tags[TAG_DAGSTER_RUN_ID]
        assert (tags[TAG_ASSET_KEY], tags[TAG_PARTITION], tags[TAG_CODE_VERSION]) == (
            "gene_models", gene, MODELS_VERSION)
        assert len(tags[TAG_DATA_VERSION]) == 16
        assert run.data.metrics["r2"] == pytest.approx(_r2(table["observed"], table[model]))
        history = client.get_metric_history(run.info.run_id, "fold/r2")
        expected = {int(f): _r2(g["observed"], g[model]) for f, g in table.groupby("fold")}
        assert {m.step: pytest.approx(m.value) for m in history} == expected
        assert int(run.data.params["exported_fold"]) == min(expected)
        artifacts = [a.path for a in client.list_artifacts(run.info.run_id, "plots")]
        assert artifacts == ["plots/observed_vs_predicted.png"]


@pytest.mark.e2e
def test_mlflow_server_lists_and_compares_a_genes_model_runs(models: Models) -> None:
    """`mlflow server`'s REST API (what its UI reads) returns the first gene's model runs, one
    per model, with their pooled R²; headless Chromium renders the UI's comparison of those
    runs: every run's name and the r2 metric on the page, a screenshot that is not blank
    (kept, shown in the README). Catches runs the server cannot see and a UI that does not
    render them."""
    gene = GENES[0]
    url = models.tracking.tracking_uri
    experiment = models.tracking.client().get_experiment_by_name(SINGLE_GENE).experiment_id
    query = {"experiment_ids": [experiment], "max_results": 100,
             "filter": f"tags.{TAG_GENE} = '{gene}' and tags.{TAG_ROLE} = '{ROLE_MODEL}'"}
    request = urllib.request.Request(f"{url}/api/2.0/mlflow/runs/search",
                                     data=json.dumps(query).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        runs = json.loads(response.read())["runs"]
    tags = [{t["key"]: t["value"] for t in r["data"]["tags"]} for r in runs]
    assert sorted(t[TAG_MODEL] for t in tags) == sorted(ALL_MODELS)
    assert all(any(m["key"] == "r2" for m in r["data"]["metrics"]) for r in runs)
    ids = [r["info"]["run_id"] for r in runs]
    page_url = (f"{url}/#/compare-runs?runs={urllib.parse.quote(json.dumps(ids))}"
                f"&experiments={urllib.parse.quote(json.dumps([experiment]))}")
    with chromium() as page:
        compared = page.render(page_url, SCREENSHOTS / "mlflow_compare_runs.png",
                               ready="document.body.innerText.includes('r2')",
                               size=(1600, 1200))
    for run in runs:
        assert run["info"]["run_name"] in compared.dom, run["info"]["run_name"]
    assert compared.ink() > 0.05


def _stacking_features(storage: Path, folds: pd.Series) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every gene's Enformer feature and per-fold genotype scores, read from storage and put
    together by hand (not by the asset's helper)."""
    features = pd.DataFrame({
        f"{g}:feature": GenePredictions.read(storage / "enformer_predictions"
                                             / f"{g}.predictions").features["feature"]
        for g in GENES}).loc[folds.index]
    scores = None
    for gene in GENES:
        table = pd.read_parquet(storage / "prs_fold_scores" / f"{gene}.parquet").drop(
            columns="target").rename(columns={"baseline_prs": f"{gene}:baseline_prs",
                                              "pt_prs": f"{gene}:pt_prs"})
        scores = table if scores is None else scores.merge(table, on=["fold", "sample", "role"])
    return features, scores


def _held_out_inputs(models: Models, gene: str, model: str, estimator: object, fold: int,
                     test: pd.Index) -> pd.DataFrame:
    """The inputs of ``model`` for the people of ``fold``, rebuilt from the study's files and
    the stored upstream assets (not from anything the model run logged)."""
    storage = models.storage
    if model in MODELS:  # ALT dosages of the weighted variants, from the VCF
        study = load_study(models.study_file)
        reference = ReferenceGenome(study.reference_fasta)
        chrom = study.gene_table.set_index("partition_key").loc[gene, "chrom"]
        genotypes, _ = read_genotypes(study.genotypes[chrom] if isinstance(study.genotypes, dict)
                                      else study.genotypes, chrom, reference)
        names = list(estimator.feature_names_in_)
        row_of = {v: i for i, v in enumerate(genotypes.variants["variant_id"])}
        column_of = {s: i for i, s in enumerate(genotypes.samples)}
        dosages = genotypes.dosages()[np.ix_([row_of[v] for v in names],
                                             [column_of[s] for s in test])].astype(np.float64)
        weights = pd.read_parquet(storage / "prs_weights" / f"{gene}.parquet")
        means = weights[(weights["fold"] == fold) & (weights["model"] == model)].set_index(
            "variant_id").loc[names, "mean_dosage"].to_numpy()[:, None]
        return pd.DataFrame(np.where(np.isnan(dosages), means, dosages).T, index=test,
                            columns=names)
    if model == STACK:  # the base models' stored out-of-fold predictions
        stacked = models.stored("multi_gene_stacking")
        return stacked[stacked["gene"] == gene].set_index("sample").loc[test, list(BASE_MODELS)]
    if model.startswith("stacking_"):
        features, scores = _stacking_features(storage, models.stored("cv_folds")["fold"])
        rows = scores[(scores["fold"] == fold) & (scores["role"] == "test")].set_index("sample")
        x = features.loc[test].join(rows.drop(columns=["fold", "role"]))
        return x[list(estimator.feature_names_in_)]
    predictions = GenePredictions.read(storage / "enformer_predictions" / f"{gene}.predictions")
    feature = predictions.features.loc[test, ["h1", "h2"]].mean(axis=1).rename("feature")
    if model == "enformer_linear":
        return feature.to_frame()
    if model == "combined":
        scores = pd.read_parquet(storage / "prs_fold_scores" / f"{gene}.parquet")
        scores = scores[(scores["fold"] == fold) & (scores["role"] == "test")].set_index("sample")
        return feature.to_frame().join(scores.loc[test, ["baseline_prs", "pt_prs"]])
    return boosting_features(predictions).loc[test]


def _compared(models: Models, gene: str) -> pd.DataFrame:
    """Per sample, ``fold``, ``observed`` and every model's stored out-of-fold prediction of
    ``gene``: the single-gene models and the stacking (under the comparison's names)."""
    stacked = models.stored("multi_gene_stacking")
    stacked = stacked[stacked["gene"] == gene].set_index("sample").rename(
        columns={m: f"stacking_{m}" for m in BASE_MODELS})
    table = models.table(gene)
    return table.join(stacked[[f"stacking_{m}" for m in BASE_MODELS] + [STACK]])


COMPARED = [*ALL_MODELS, *(f"stacking_{m}" for m in BASE_MODELS), STACK]


@pytest.mark.e2e
@pytest.mark.parametrize("gene", GENES)
def test_logged_models_predict_their_folds_held_out_people(
        models: Models, gene: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """With MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false every logged model of the gene, single-
    gene and stacked, loads (scikit-learn from skops, XGBoost from UBJ) and predicts, for the
    held-out people of its exported fold, from inputs rebuilt here from the VCF and the stored
    upstream tables, the stored out-of-fold predictions (float64 models to 1e-9, XGBoost's
    float32 to 1e-5 of the observed SD). Catches an exported fit that is not the fold's,
    wrong coefficients or intercepts, a pipeline without its preprocessing, and a pickled
    model."""
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
    client = models.tracking.client()
    table = _compared(models, gene)
    spread = table["observed"].std()
    experiments = [client.get_experiment_by_name(e).experiment_id
                   for e in (SINGLE_GENE, MULTI_GENE_STACKING)]
    runs = client.search_runs(experiments, filter_string=f"tags.{TAG_GENE} = '{gene}'")
    checked = []
    for run in runs:
        if run.data.tags.get(TAG_ROLE) == ROLE_PARENT:
            continue
        model = run.data.tags[TAG_MODEL]
        fold = int(run.data.params["exported_fold"])
        test = table.index[table["fold"] == fold]
        [logged] = client.search_logged_models(
            experiment_ids=[run.info.experiment_id],
            filter_string=f"source_run_id = '{run.info.run_id}'")
        estimator = models.tracking.load_model(f"models:/{logged.model_id}")
        inputs = _held_out_inputs(models, gene, model, estimator, fold, test)
        xgboost = model in ("enformer_xgboost", "stacking_xgboost", STACK)
        np.testing.assert_allclose(estimator.predict(inputs), table.loc[test, model], rtol=0,
                                   atol=(1e-5 if xgboost else 1e-9) * spread, err_msg=model)
        checked.append(model)
    assert sorted(checked) == sorted(COMPARED)


@pytest.mark.e2e
@pytest.mark.parametrize("gene", GENES)
def test_champion_is_the_best_compared_model(models: Models, gene: str,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """``<gene>-expression@champion`` is the version registered from the run of the model with
    the best R² recomputed here from the stored tables (single-gene and stacked), the run that
    reported exactly those predictions; it loads without pickle and predicts the exported
    fold's held-out people as stored (an XGBoost champion also through ``mlflow.pyfunc``).
    Catches a champion that is not the best, one registered from another run than the one
    behind the compared predictions, and an alias left on an old version."""
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", models.tracking.tracking_uri)
    client = models.tracking.client()
    table = _compared(models, gene)
    best = max(COMPARED, key=lambda m: _r2(table["observed"], table[m]))
    version = client.get_model_version_by_alias(f"{gene}-expression", "champion")
    run = client.get_run(version.run_id)
    assert run.data.tags[TAG_MODEL] == best and run.data.tags[TAG_GENE] == gene
    fold = int(run.data.params["exported_fold"])
    test = table.index[table["fold"] == fold]
    champion = models.tracking.load_model(f"models:/{gene}-expression@champion")
    inputs = _held_out_inputs(models, gene, best, champion, fold, test)
    np.testing.assert_allclose(champion.predict(inputs), table.loc[test, best], rtol=0,
                               atol=1e-5 * table["observed"].std())
    if best in ("enformer_xgboost", STACK):
        pyfunc = mlflow.pyfunc.load_model(f"models:/{gene}-expression@champion")
        np.testing.assert_allclose(np.asarray(pyfunc.predict(inputs)), table.loc[test, best],
                                   rtol=0, atol=1e-5 * table["observed"].std())
    comparison = models.stored("model_comparison")
    rows = comparison[comparison["gene"] == gene].set_index("model")
    assert rows.index[rows["champion"]].tolist() == [best]


def test_stored_stacking_equals_the_core_on_the_stored_inputs(models: Models) -> None:
    """Catches an asset that feeds the core other features (a gene's column swapped or
    missing, outer genotype scores for training rows, unadjusted targets), other folds or
    settings, or stores rows under the wrong gene."""
    table = models.stored("multi_gene_stacking")
    assert table.columns.tolist() == ["gene", "sample", "fold", "observed", *BASE_MODELS, STACK]
    assert table["gene"].unique().tolist() == GENES
    folds = models.stored("cv_folds")["fold"]
    features, scores = _stacking_features(models.storage, folds)
    study = load_study(models.study_file)
    gene = GENES[0]
    gene_id = study.gene_table.set_index("partition_key").loc[gene, "gene_id"]
    with threadpool_limits(1):
        direct = stack_gene(features, models.stored("expression").loc[gene_id], folds,
                            covariates=models.stored("covariates"), fold_features=scores,
                            gene_id=gene, n_inner_folds=study.prs.inner_folds, seed=study.seed)
    check_no_leakage(direct)
    stored = table[table["gene"] == gene].drop(columns="gene").set_index("sample")
    pd.testing.assert_frame_equal(stored, direct.predictions, check_exact=False, rtol=1e-9,
                                  atol=1e-12)
    # the stack's observed values are gene_models' (the same covariate fit per fold)
    single = models.table(gene)
    np.testing.assert_allclose(stored.loc[single.index, "observed"], single["observed"],
                               rtol=1e-9, atol=1e-12)


def test_stacking_metadata_and_progress(models: Models) -> None:
    metadata = models.metadata("multi_gene_stacking")
    assert metadata["genes_stacked"] == len(GENES) and metadata["genotype_scores"] is True
    assert metadata["features"] == len(GENES)
    assert metadata["leakage_check"].startswith("passed: ")
    assert metadata["r2_plot"].startswith("![multi-gene stacking R²](data:image/png;base64,")
    assert metadata["mlflow_failed_runs"] == 0
    table = models.stored("multi_gene_stacking")
    for gene in GENES:
        rows = table[table["gene"] == gene]
        assert metadata[f"r2_stack_{gene}"] == pytest.approx(
            r2_score(rows["observed"], rows[STACK]))
        assert any(m.startswith(f"{gene} ({GENES.index(gene) + 1}/{len(GENES)}): ")
                   and " s; R² stack " in m for m in models.logs), gene
    assert "| gene" in metadata["best_per_gene"] and metadata["seconds_per_gene"] > 0


def test_model_comparison_r2_is_recomputed_from_the_stored_tables(models: Models) -> None:
    """Every (gene, model) R² of ``model_comparison`` is scikit-learn's ``r2_score`` of the
    stored out-of-fold predictions (``gene_models``, ``multi_gene_stacking``), and each gene's
    winner is its highest R²; the heat map is in the metadata and beside the table."""
    comparison = models.stored("model_comparison")
    assert comparison["gene"].unique().tolist() == GENES
    for gene in GENES:
        rows = comparison[comparison["gene"] == gene].set_index("model")
        assert rows.index.tolist() == COMPARED
        table = _compared(models, gene)
        for model in COMPARED:
            assert rows.loc[model, "r2"] == pytest.approx(
                r2_score(table["observed"], table[model]), rel=1e-12)
        assert rows.loc[rows["winner"]].index.tolist() == [rows["r2"].idxmax()]
    metadata = models.metadata("model_comparison")
    assert "| gene" in metadata["winners"] and metadata["genes"] == len(GENES)
    plot = models.storage / "model_comparison.r2_plot.png"  # stored by the IO manager
    assert metadata["r2_plot_file"] == str(plot)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert metadata["r2_plot"].startswith("![R² by gene and model](data:image/png;base64,")


def test_truth_recovery_sets_the_planted_truth_beside_the_stored_results(models: Models
                                                                        ) -> None:
    """``truth_recovery`` (demo only) per gene: the planted shares of ``truth/genes.tsv``, the
    best genotype-model R² of the stored comparison, and the best rank of a planted causal
    variant in the stored all-samples scan, recomputed here with SciPy's ``rankdata``."""
    table = models.stored("truth_recovery").set_index("gene")
    assert table.index.tolist() == GENES
    truth = load_study(models.study_file).truth
    planted = pd.read_csv(truth / "genes.tsv", sep="\t").set_index("gene_id")
    causal = pd.read_csv(truth / "causal_variants.tsv", sep="\t")
    comparison = models.stored("model_comparison")
    for gene, row in table.iterrows():
        assert row["h2_realised"] == planted.loc[row["gene_id"], "h2_realised"]
        genotype = comparison[(comparison["gene"] == gene) & comparison["model"].isin(MODELS)]
        assert row["r2_genotype"] == genotype["r2"].max()
        scan = pd.read_parquet(models.storage / "cis_eqtl" / f"{gene}.parquet")
        scan = scan[scan["fold"].isna()]
        ranks = rankdata(scan["pval_nominal"], method="min")
        planted_here = scan["variant_id"].isin(
            causal.loc[causal["gene_id"] == row["gene_id"], "variant_id"]).to_numpy()
        assert planted_here.any()  # the demo plants SNPs in APOE and APOC1
        assert row["best_causal_rank"] == ranks[planted_here].min()
    assert models.metadata("truth_recovery")["recovery_plot"].startswith("![planted vs")


@pytest.mark.e2e
def test_unreachable_mlflow_fails_gene_models_before_fitting(backfill: Backfill, models: Models,
                                                             tmp_path: Path) -> None:
    """An MLflow store that does not answer fails ``gene_models`` at once, naming the URI, and
    leaves the stored table as it was."""
    uri = f"http://127.0.0.1:{free_port()}"
    fields = yaml.safe_load(models.study_file.read_text())
    study_file = tmp_path / "study.yaml"
    study_file.write_text(yaml.safe_dump({**fields, "mlflow_tracking_uri": uri}))
    before = snapshot(models.storage / "gene_models")
    job = build_definitions(load_study(study_file)).resolve_implicit_global_asset_job_def()
    with dg.instance_for_test() as instance:
        result = job.execute_in_process(instance=instance, partition_key=GENES[0],
                                        asset_selection=[dg.AssetKey("gene_models")],
                                        run_config=QUIET, raise_on_error=False)
    assert not result.success
    message = failure_message([result])
    assert f"MLflow tracking store {uri} is unreachable" in message
    assert snapshot(models.storage / "gene_models") == before
