"""The MLflow tracking resource against a real `mlflow server` on 127.0.0.1 (SQLite backend and
artifact root in a temporary folder, one server for the module), read back with
``MlflowClient``: runs, metrics, params, tags, failed fits, champions loaded without pickle,
re-materialisation, and an unreachable store. Models are fitted on seeded synthetic data."""

import hashlib
import io
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import matplotlib
import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from sklearn.linear_model import ElasticNet, Ridge
from sklearn.model_selection import KFold
from xgboost import XGBRegressor

from apoe_assets.ml.metrics import model_metrics
from apoe_assets.ml.tracking import SINGLE_GENE, TrackingPayloadError, param_values, run_tags
from apoe_assets.resources.mlflow_tracking import MlflowTracking, TrackingUnavailable
from apoe_assets.study import load_study
from apoe_assets_tests.mlflow_server import free_port, mlflow_server
from apoe_assets_tests.studies import write_tiny_study

matplotlib.use("Agg")
import matplotlib.pyplot as plt

SEED = 11
PREFIX = "test/"
ASSET = "toy_gene_models"
CODE_VERSION = "7"
FOLDS = 3
N_TRAIN, N_HELD_OUT, N_FEATURES = 90, 30, 4
PARENT_PARTITION = "GENE_A...GENE_B"


@pytest.fixture(scope="module", autouse=True)
def no_stray_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """MLflow's process-wide default store pointed at a scratch file that must stay unwritten:
    the resource uses its own URI for every call (MLflow otherwise resolves some, such as
    `models:/` downloads, against the default store, `./mlflow.db`)."""
    stray = tmp_path_factory.mktemp("stray") / "mlflow.db"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{stray}")
        yield
    assert not stray.exists(), "an MLflow call went to the process-wide default store"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`mlflow server` on a free port, its store in a temporary folder."""
    with mlflow_server(tmp_path_factory.mktemp("mlflow_server")) as url:
        yield url


# --- what the toy asset fits ------------------------------------------------------------------

def _data() -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(SEED)
    x = pd.DataFrame(rng.normal(size=(N_TRAIN + N_HELD_OUT, N_FEATURES)),
                     columns=[f"feature_{i}" for i in range(N_FEATURES)])
    y = pd.Series(1.5 * x["feature_0"] - x["feature_1"] ** 2 + rng.normal(size=len(x)),
                  name="expression")
    return x, y


DATA_VERSION = hashlib.sha256(
    pd.util.hash_pandas_object(pd.concat(_data(), axis=1)).to_numpy().tobytes()).hexdigest()[:16]
"""A hash of the inputs, as a model asset would tag its runs with."""


def _models() -> dict[tuple[str, str], object]:
    return {("GENE_A", "xgboost"): XGBRegressor(n_estimators=30, max_depth=2, learning_rate=0.3,
                                                 random_state=SEED, n_jobs=1),
            ("GENE_B", "ridge"): Ridge(alpha=1.0),
            ("GENE_B", "elastic_net"): ElasticNet(alpha=-1.0)}  # refused by scikit-learn


def _fold_metrics(model: object, x: pd.DataFrame, y: pd.Series
                  ) -> tuple[pd.DataFrame, dict[str, float], np.ndarray]:
    """Per-fold and pooled out-of-fold metrics of ``model`` on (x, y), and its OOF predictions."""
    from sklearn.base import clone

    predicted = np.empty(len(y))
    rows = {}
    for fold, (train, test) in enumerate(KFold(FOLDS, shuffle=True,
                                               random_state=SEED).split(x)):
        fitted = clone(model).fit(x.iloc[train], y.iloc[train])
        predicted[test] = fitted.predict(x.iloc[test])
        rows[fold] = model_metrics(y.iloc[test].to_numpy(), predicted[test])
    return pd.DataFrame.from_dict(rows, orient="index"), model_metrics(y.to_numpy(),
                                                                       predicted), predicted


def _plot(observed: pd.Series, predicted: np.ndarray) -> plt.Figure:
    figure, axes = plt.subplots(figsize=(3, 3))
    axes.scatter(observed, predicted, s=4)
    axes.set_xlabel("observed")
    axes.set_ylabel("out-of-fold predicted")
    return figure


@dg.asset(name=ASSET, code_version=CODE_VERSION)
def toy_gene_models(context: dg.AssetExecutionContext,
                    mlflow_tracking: MlflowTracking) -> dg.MaterializeResult:
    """What a model asset does: fit per gene, log each fit (or its failure) under one parent."""
    x, y = _data()
    train_x, train_y = x.iloc[:N_TRAIN], y.iloc[:N_TRAIN]
    with mlflow_tracking.parent_run(
            SINGLE_GENE, context.run.run_id, context.asset_key.to_user_string(),
            tags={"partition": PARENT_PARTITION, "code_version": CODE_VERSION,
                  "data_version": DATA_VERSION}) as parent:
        for (gene, name), model in _models().items():
            tags = {"partition": gene}
            params = {"estimator": type(model).__name__, **model.get_params()}
            try:
                per_fold, pooled, predicted = _fold_metrics(model, train_x, train_y)
                model.fit(train_x, train_y)
            except Exception as error:
                parent.log_failed_model_run(gene, name, error, params=params, tags=tags)
                continue
            figure = _plot(train_y, predicted)
            if gene == "GENE_B":  # PNG bytes, the other form a plot may take
                buffer = io.BytesIO()
                figure.savefig(buffer, format="png")
                plot: object = buffer.getvalue()
            else:
                plot = figure
            parent.log_model_run(gene, name, params=params, fold_metrics=per_fold,
                                 pooled_metrics=pooled, model=model,
                                 input_example=train_x.head(5),
                                 plots={"observed_vs_predicted": plot}, tags=tags)
            plt.close(figure)
    return dg.MaterializeResult(metadata={"parent": parent.run_id,
                                          "runs": dg.MetadataValue.json(parent.model_runs)})


def _materialise(tracking: MlflowTracking) -> tuple[str, str, dict[tuple[str, str], str]]:
    """Materialise the toy asset: (Dagster run ID, parent run ID, (gene, model) → run ID)."""
    result = dg.materialize([toy_gene_models], resources={"mlflow_tracking": tracking},
                            instance=dg.DagsterInstance.ephemeral())
    assert result.success
    metadata = result.asset_materializations_for_node(ASSET)[0].metadata
    runs = {(r["gene"], r["model"]): r["run_id"] for r in metadata["runs"].value}
    return result.run_id, metadata["parent"].value, runs


@dataclass
class Logged:
    tracking: MlflowTracking
    client: MlflowClient
    experiment_id: str
    dagster_run_id: str
    parent_id: str
    runs: dict[tuple[str, str], str]


@pytest.fixture(scope="module")
def logged(server: str) -> Logged:
    tracking = MlflowTracking(tracking_uri=server, experiment_prefix=PREFIX)
    dagster_run_id, parent_id, runs = _materialise(tracking)
    client = MlflowClient(server)
    experiment = client.get_experiment_by_name(f"{PREFIX}{SINGLE_GENE}")
    assert experiment is not None
    return Logged(tracking, client, experiment.experiment_id, dagster_run_id, parent_id, runs)


# --- the tests --------------------------------------------------------------------------------

@pytest.mark.e2e
def test_runs_hold_params_metrics_tags_and_plots(logged: Logged, tmp_path: Path) -> None:
    """One parent run per Dagster run with a nested run per (gene, model); every run carries
    the Dagster run ID, asset key, partition, code version and data version; a model run holds
    its params, each fold's metrics at step = fold, their mean and SE, the pooled metrics and
    its plot. Catches lost tags, a child not nested under the parent, folds logged at the
    wrong step, and a metric or param that does not arrive as given."""
    client = logged.client
    runs = client.search_runs([logged.experiment_id],
                              f"tags.`dagster.run_id` = '{logged.dagster_run_id}'")
    assert {r.info.run_id for r in runs} == {logged.parent_id, *logged.runs.values()}
    x, y = _data()
    for run in runs:
        tags = run.data.tags
        is_parent = run.info.run_id == logged.parent_id
        assert tags["dagster.run_id"] == logged.dagster_run_id
        assert tags["dagster.asset_key"] == ASSET
        assert tags["dagster.code_version"] == CODE_VERSION
        assert tags["dagster.data_version"] == DATA_VERSION
        assert tags["dagster.partition"] == (PARENT_PARTITION if is_parent else tags["gene"])
        assert is_parent or tags["mlflow.parentRunId"] == logged.parent_id
        assert run.info.status == "FINISHED" or tags.get("model") == "elastic_net"
    for (gene, name), run_id in logged.runs.items():
        if name == "elastic_net":
            continue
        model = _models()[gene, name]
        per_fold, pooled, _ = _fold_metrics(model, x.iloc[:N_TRAIN], y.iloc[:N_TRAIN])
        run = client.get_run(run_id)
        assert run.data.params["estimator"] == type(model).__name__
        assert run.data.params["random_state" if name == "xgboost" else "alpha"] == str(
            model.get_params()["random_state" if name == "xgboost" else "alpha"])
        assert {k: run.data.metrics[k] for k in pooled} == pytest.approx(pooled, nan_ok=True)
        for metric in per_fold.columns:
            history = sorted((m.step, m.value) for m in
                             client.get_metric_history(run_id, f"fold/{metric}"))
            assert [step for step, _ in history] == list(range(FOLDS))
            assert [value for _, value in history] == pytest.approx(list(per_fold[metric]))
            assert run.data.metrics[f"fold_mean/{metric}"] == pytest.approx(per_fold[metric].mean())
            assert run.data.metrics[f"fold_se/{metric}"] == pytest.approx(
                per_fold[metric].std(ddof=1) / np.sqrt(FOLDS))
        plot = Path(mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path="plots/observed_vs_predicted.png",
            dst_path=tmp_path / run_id, tracking_uri=logged.tracking.tracking_uri))
        assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.e2e
def test_champion_loads_without_pickle_and_predicts_as_fitted(
        logged: Logged, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """`register_champion` makes `<gene>-expression` versions linked to their runs, aliased
    `champion`; with MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false the XGBoost champion loads
    through `mlflow.pyfunc` and both champions through `MlflowTracking.load_model`, predicting
    for held-out rows what the fitted estimators predict (XGBoost: float32, equal to 1e-6
    relative; ridge: float64, 1e-12). No stored file is a pickle. Catches a cloudpickled model,
    a version not linked to its run, and an alias left on another version."""
    x, y = _data()
    held_out = x.iloc[N_TRAIN:]
    fitted = {key: model.fit(x.iloc[:N_TRAIN], y.iloc[:N_TRAIN])
              for key, model in _models().items() if key[1] != "elastic_net"}
    client, tracking = logged.client, logged.tracking
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking.tracking_uri)  # for models:/ downloads
    for gene, name in fitted:
        version = tracking.register_champion(gene, logged.runs[gene, name])
        champion = client.get_model_version_by_alias(f"{gene}-expression", "champion")
        assert champion.version == version
        assert champion.run_id == logged.runs[gene, name]
        model_dir = Path(mlflow.artifacts.download_artifacts(
            champion.source, dst_path=tmp_path / gene, tracking_uri=tracking.tracking_uri))
        assert not [p for p in model_dir.rglob("*") if p.suffix in {".pkl", ".pickle"}]
        flavors = yaml.safe_load((model_dir / "MLmodel").read_text())["flavors"]
        assert (flavors["xgboost"]["model_format"] == "ubj" if name == "xgboost"
                else flavors["sklearn"]["serialization_format"] == "skops")
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
    xgb = fitted["GENE_A", "xgboost"]
    pyfunc = mlflow.pyfunc.load_model("models:/GENE_A-expression@champion")
    np.testing.assert_allclose(np.asarray(pyfunc.predict(held_out)), xgb.predict(held_out),
                               rtol=1e-6)
    np.testing.assert_allclose(
        tracking.load_model("models:/GENE_A-expression@champion").predict(held_out),
        xgb.predict(held_out), rtol=1e-6)
    np.testing.assert_allclose(
        tracking.load_model("models:/GENE_B-expression@champion").predict(held_out),
        fitted["GENE_B", "ridge"].predict(held_out), rtol=1e-12)


@pytest.mark.e2e
def test_failed_fit_ends_failed_and_is_never_champion(logged: Logged, tmp_path: Path) -> None:
    """A fit that raised is a FAILED run with the error as tag and traceback artifact, beside
    FINISHED siblings and parent; registering it as champion is refused before anything is
    registered. Catches a failed fit logged as FINISHED (or left RUNNING) and a half-made
    registered model."""
    client = logged.client
    failed = client.get_run(logged.runs["GENE_B", "elastic_net"])
    assert failed.info.status == "FAILED"
    assert failed.data.tags["error"].startswith("InvalidParameterError")
    assert failed.data.params["alpha"] == "-1.0"
    error = Path(mlflow.artifacts.download_artifacts(
        run_id=failed.info.run_id, artifact_path="error.txt", dst_path=tmp_path,
        tracking_uri=logged.tracking.tracking_uri)).read_text()
    assert "Traceback" in error and "alpha" in error
    others = [r for k, r in logged.runs.items() if k[1] != "elastic_net"]
    assert {client.get_run(r).info.status for r in [logged.parent_id, *others]} == {"FINISHED"}
    with pytest.raises(ValueError, match="FAILED"):
        logged.tracking.register_champion("GENE_C", failed.info.run_id)
    assert not client.search_registered_models("name = 'GENE_C-expression'")


@pytest.mark.e2e
def test_rematerialising_adds_runs_and_leaves_old_ones(logged: Logged) -> None:
    """A second materialisation (a new Dagster run) makes a new parent and new model runs;
    every earlier run keeps its status, times, params, metrics and tags. Catches a parent
    reused across Dagster runs and runs overwritten in place."""
    client = logged.client

    def snapshot() -> dict[str, tuple]:
        runs = client.search_runs([logged.experiment_id], max_results=1000)
        return {r.info.run_id: (r.info.status, r.info.start_time, r.info.end_time,
                                r.data.params, r.data.metrics, r.data.tags,
                                [(m.step, m.value) for m in
                                 client.get_metric_history(r.info.run_id, "fold/r2")])
                for r in runs}

    before = snapshot()
    dagster_run_id, parent_id, runs = _materialise(logged.tracking)
    after = snapshot()
    assert dagster_run_id != logged.dagster_run_id
    assert parent_id not in before and not set(runs.values()) & set(before)
    assert set(after) == set(before) | {parent_id, *runs.values()}
    assert {k: after[k] for k in before} == before


@pytest.mark.e2e
def test_a_retried_step_logs_under_the_same_parent(logged: Logged) -> None:
    """Two `parent_run` calls with one Dagster run ID and asset (a step retried within its run)
    share one parent run, which ends FINISHED. Catches a second parent for one Dagster run."""
    tracking = logged.tracking
    tags = {"partition": "GENE_A", "code_version": CODE_VERSION, "data_version": DATA_VERSION}
    parents, children = [], []
    for attempt in range(2):
        with tracking.parent_run(SINGLE_GENE, "retried-run", ASSET, tags) as parent:
            parents.append(parent.run_id)
            children.append(parent.log_model_run(
                "GENE_A", "ridge", params={"attempt": attempt}, fold_metrics=pd.DataFrame(),
                pooled_metrics={"r2": 0.0}, tags={}))
    assert parents[0] == parents[1]
    for child in children:
        assert logged.client.get_run(child).data.tags["mlflow.parentRunId"] == parents[0]
    assert logged.client.get_run(parents[0]).info.status == "FINISHED"


class RidgeOfItsOwn(Ridge):
    """A scikit-learn model of a type skops does not trust (defined here, not in sklearn)."""


@pytest.mark.e2e
def test_a_model_that_would_need_pickle_fails_its_run(logged: Logged) -> None:
    """A model skops cannot store without trusting a foreign type is not logged at all: the
    error is raised and its run ends FAILED with the error, no finished model under it. Catches a
    fallback to pickle and a run left RUNNING when logging breaks halfway."""
    x, y = _data()
    tags = {"partition": "GENE_A", "code_version": CODE_VERSION, "data_version": DATA_VERSION}
    with (logged.tracking.parent_run(SINGLE_GENE, "untrusted-run", ASSET, tags) as parent,
          pytest.raises(MlflowException, match="untrusted types")):
        parent.log_model_run("GENE_A", "own_ridge", params={}, fold_metrics=pd.DataFrame(),
                             pooled_metrics={}, model=RidgeOfItsOwn().fit(x, y),
                             input_example=x.head(3))
    run = logged.client.search_runs([logged.experiment_id],
                                    "tags.`dagster.run_id` = 'untrusted-run' AND "
                                    "tags.model = 'own_ridge'")[0]
    assert run.info.status == "FAILED"
    assert "untrusted types" in run.data.tags["error"]
    models = logged.client.search_logged_models([logged.experiment_id],
                                                f"source_run_id = '{run.info.run_id}'")
    assert {str(m.status) for m in models} <= {"FAILED"}  # MLflow keeps a FAILED record


def test_run_tags_need_all_five_and_params_stay_within_mlflow() -> None:
    """Without MLflow: a run's tags must name the Dagster run, asset, partition, code version
    and data version (the error lists what is missing), and params are flattened to strings
    MLflow stores, a value too long for it refused up front rather than cut. Catches a run
    logged without its data version and a param MLflow would reject mid-run."""
    with pytest.raises(TrackingPayloadError, match=re.escape("dagster.data_version")):
        run_tags("run", ASSET, {"partition": "GENE_A", "code_version": "1"})
    assert run_tags("run", ASSET, {"partition": "GENE_A", "code_version": "1",
                                   "data_version": "d", "extra": 3})["extra"] == "3"
    assert param_values({"model": {"alpha": np.float64(0.5), "grid": np.array([1, 2])},
                         "seed": 3}) == {"model.alpha": "0.5", "model.grid": "[1, 2]",
                                         "seed": "3"}
    with pytest.raises(TrackingPayloadError, match="too_long"):
        param_values({"too_long": "x" * 6001})


@pytest.mark.parametrize("store", ["closed port", "file as folder"])
def test_unreachable_store_fails_fast_naming_the_uri(store: str, tmp_path: Path) -> None:
    """A tracking server nobody listens on, or a SQLite file under a regular file, stops
    `parent_run` and `register_champion` within seconds with an error naming the URI, before
    any run or registration exists. Catches MLflow's default of retrying for minutes and an
    error that does not say which store."""
    if store == "closed port":
        uri = f"http://127.0.0.1:{free_port()}"
    else:
        (tmp_path / "not_a_folder").write_text("")
        uri = f"sqlite:///{tmp_path / 'not_a_folder' / 'mlflow.db'}"
    tracking = MlflowTracking(tracking_uri=uri)
    started = time.monotonic()
    with pytest.raises(TrackingUnavailable, match=re.escape(uri)), tracking.parent_run(
            SINGLE_GENE, "unreachable", ASSET,
            {"partition": "GENE_A", "code_version": "1", "data_version": "x"}):
        pytest.fail("entered a parent run on an unreachable store")
    with pytest.raises(TrackingUnavailable, match=re.escape(uri)):
        tracking.register_champion("GENE_A", "0" * 32)
    assert time.monotonic() - started < 20
    if store == "file as folder":
        assert [p.name for p in tmp_path.iterdir()] == ["not_a_folder"]


def test_sqlite_store_keeps_artifacts_beside_the_database(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The default kind of store: the study's `sqlite:///mlflow.db` (resolved against the study
    file) with the model's skops file under `mlflow-artifacts/` beside the database, nothing in
    the working directory, and the model loads back. Catches artifacts left to MLflow's
    default (./mlruns or ./mlartifacts in whatever folder the process runs in)."""
    tiny = write_tiny_study(tmp_path / "study")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    tracking = MlflowTracking.from_study(load_study(tiny.study))
    assert tracking.tracking_uri == f"sqlite:///{(tmp_path / 'study' / 'mlflow.db').resolve()}"
    x, y = _data()
    model = Ridge(alpha=1.0).fit(x, y)
    tags = {"partition": "GENE_A", "code_version": "1", "data_version": DATA_VERSION}
    with tracking.parent_run(SINGLE_GENE, "sqlite-run", ASSET, tags) as parent:
        run_id = parent.log_model_run("GENE_A", "ridge", params={"alpha": 1.0},
                                      fold_metrics=pd.DataFrame(), pooled_metrics={},
                                      model=model, input_example=x.head(3))
    artifacts = tmp_path / "study" / "mlflow-artifacts" / SINGLE_GENE
    assert len(list(artifacts.rglob("model.skops"))) == 1
    assert not list(work.iterdir())
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
    np.testing.assert_array_equal(tracking.load_model(f"runs:/{run_id}/model").predict(x),
                                  model.predict(x))


@pytest.mark.e2e
def test_clear_champion_removes_the_alias_and_keeps_the_versions(logged: Logged) -> None:
    """When a comparison finds no champion for a gene, the old alias must not outlive it:
    ``clear_champion`` deletes the alias (the registered versions stay), and says whether
    there was one. Catches an alias left pointing at a model the comparison dropped."""
    tracking, client = logged.tracking, logged.client
    gene = "GENE_C"
    run_id = logged.runs["GENE_B", "ridge"]
    version = tracking.register_champion(gene, run_id)
    assert client.get_model_version_by_alias(f"{gene}-expression", "champion").version == version
    assert tracking.clear_champion(gene) is True
    with pytest.raises(MlflowException):
        client.get_model_version_by_alias(f"{gene}-expression", "champion")
    assert client.get_model_version(f"{gene}-expression", version).run_id == run_id
    assert tracking.clear_champion(gene) is False
    assert tracking.clear_champion("NEVER_REGISTERED") is False
