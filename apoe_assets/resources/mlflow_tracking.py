"""MLflow tracking as a Dagster resource: experiments, parent and model runs, champions.

The model assets call it like this (the payloads are built by :mod:`apoe_assets.ml.tracking`)::

    tracking = MlflowTracking.from_study(study)          # or MlflowTracking(tracking_uri=…)
    with tracking.parent_run("single-gene", context.run_id, "gene_models",
                             tags={"partition": "APOE", "code_version": "1",
                                   "data_version": digest}) as parent:
        run_id = parent.log_model_run(
            "APOE", "elastic_net", params={"alpha": 0.5}, fold_metrics=per_fold,  # fold × metric
            pooled_metrics={"r2": 0.21, "mse": 0.8}, model=fitted, input_example=x.head(5),
            plots={"observed_vs_predicted": figure}, tags={"partition": "APOE", …})
        parent.log_failed_model_run("APOE", "xgboost", error, tags={…})
    tracking.register_champion("APOE", run_id)          # APOE-expression@champion
    model = tracking.load_model("models:/APOE-expression@champion")   # no pickle

* ``parent_run(experiment, dagster_run_id, asset_key, tags)`` opens (and on exit closes,
  FINISHED, or FAILED with the error when the block raises) one parent run per Dagster run,
  asset and experiment (``experiment_prefix`` + ``single-gene`` / ``multi-gene-stacking``). A
  second call with the same Dagster run ID and asset (a retried step) reopens that parent; a
  new Dagster run makes a new parent, so re-materialising adds runs and never edits old ones.
* ``ParentRun.log_model_run(gene, model_name, *, params, fold_metrics, pooled_metrics, model,
  input_example, plots, tags) -> run_id``: a child run with the params, per-fold metrics
  (``fold/<metric>``, step = fold), their mean and SE (``fold_mean/``, ``fold_se/``), the
  pooled metrics (under their own names, also linked to the logged model), the model in its
  flavour with a signature inferred from ``input_example`` (the example is not stored;
  scikit-learn: ``skops``; XGBoost: UBJ), and ``plots`` (name → matplotlib Figure or PNG
  bytes) under ``plots/``. Should any of it fail, the run ends FAILED with the error and the
  error is raised.
* ``ParentRun.log_failed_model_run(gene, model_name, error, *, params, tags) -> run_id``: a
  child run that ends FAILED, the error as tag ``error`` and its traceback as ``error.txt``.
* Tags on every run: ``dagster.run_id``, ``dagster.asset_key``, ``dagster.partition``,
  ``dagster.code_version``, ``dagster.data_version`` (the caller gives ``partition``,
  ``code_version`` and ``data_version``; a model run inherits the parent's and may override),
  plus ``gene`` and ``model`` on model runs.
* ``register_champion(gene, run_id, artifact_path="model") -> version``: a new version of
  ``<gene>-expression`` from that run's model, linked to the run, with alias ``champion``
  (MLflow 3 aliases; stages are deprecated). Refused before anything is registered when the
  run did not finish or holds no such model.
* ``load_model(model_uri)``: a logged or registered model back, never unpickled (below).

**Tracking store.** ``tracking_uri`` comes from the study file (``mlflow_tracking_uri``,
default ``sqlite:///.apoe/mlflow.db`` beside the study, resolved by :mod:`apoe_assets.study`).
For a SQLite store, new experiments keep their artifacts in ``mlflow-artifacts/<experiment>``
beside the database, where ``make ui`` (``--default-artifact-root .apoe/mlflow-artifacts``)
also puts its own; an ``http(s)://`` tracking server decides its own artifact store. Each
``parent_run`` and ``register_champion`` first checks the store (one request, no retries,
:data:`CHECK_TIMEOUT_S`) and raises :class:`TrackingUnavailable` naming the URI, so an
unreachable or unwritable store fails before any run or registration exists.

**No pickle.** scikit-learn models are written with ``skops``; XGBoost models as UBJ. MLflow
3.17's own scikit-learn loader refuses *every* format, skops included, when
``MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false``, because it reads skops's trusted-types list from
the artifact's ``MLmodel``. :meth:`MlflowTracking.load_model` loads skops files with this
module's :data:`SKOPS_TRUSTED_TYPES` instead (the artifact's list is ignored) and refuses
pickle and cloudpickle; it works with that setting false. XGBoost models also load through
``mlflow.pyfunc.load_model`` with it false. The trusted list is the four types that the
project's planned models need beyond skops's defaults, each reviewed: scikit-learn's tree
storage (``sklearn.tree._tree.Tree``, random forests: skops warns that a crafted file could
make ``predict`` read out of bounds; these files are written by this project), scikit-learn's
``Bunch`` (a dict, in ``StackingRegressor``) and XGBoost's ``XGBRegressor``/``Booster`` (a
stacking model with an XGBoost meta-learner; their state is XGBoost's own buffer). A model that
needs any other type fails when it is logged, with MLflow's message naming the type.

MLflow's fluent state (tracking URI, active run) is global to the process: the resource sets
it for the length of a call and restores it, so use one thread per process (Dagster's
executors do). On a fresh SQLite store, parallel processes can race on the schema migration
and on experiment creation; the first ``parent_run`` of a store creates both, so let one
step log first, or log through ``mlflow server``.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
import traceback
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg
import pandas as pd
from pydantic import Field

from apoe_assets.ml.tracking import (
    CHAMPION_ALIAS,
    MODEL_ARTIFACT,
    PLOTS_ARTIFACT,
    ROLE_MODEL,
    ROLE_PARENT,
    TAG_ASSET_KEY,
    TAG_DAGSTER_RUN_ID,
    TAG_ERROR,
    TAG_GENE,
    TAG_MODEL,
    TAG_PREDICTIONS,
    TAG_ROLE,
    TrackingPayloadError,
    error_text,
    fold_metric_steps,
    model_run_name,
    param_values,
    parent_run_name,
    pooled_metric_values,
    registered_model_name,
    run_tags,
)
from apoe_assets.study import Study

# MLflow (and scikit-learn, XGBoost, skops) are heavy: each method imports what it uses on first
# call, so that loading the code location stays fast
if TYPE_CHECKING:
    from mlflow import MlflowClient

CHECK_TIMEOUT_S = 5
LOCAL_UI = "http://127.0.0.1:5000"
"""Where ``make ui`` serves MLflow for the project's SQLite store (its default port)."""
"""Seconds the store check waits for an HTTP tracking server (one try, no retries)."""
SQLITE_ARTIFACTS = "mlflow-artifacts"
"""Folder beside a SQLite store that holds its experiments' artifacts (as ``make ui``)."""
SKOPS_TRUSTED_TYPES = (
    "sklearn.tree._tree.Tree",
    "sklearn.utils._bunch.Bunch",
    "xgboost.core.Booster",
    "xgboost.sklearn.XGBRegressor",
)
"""Types trusted beyond skops's defaults when a scikit-learn model is saved and loaded."""
XGBOOST_FORMATS = ("ubj", "json")
XGBOOST_CLASSES = ("xgboost.sklearn.XGBRegressor", "xgboost.core.Booster")
ERROR_ARTIFACT = "error.txt"
_TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
_PNG = b"\x89PNG\r\n\x1a\n"
_PLOT_NAME = re.compile(r"^[\w.\-]+$")


class TrackingUnavailable(RuntimeError):
    """The MLflow tracking store cannot be reached or written."""


class UnsafeModelFormat(ValueError):
    """A logged model stored in a format that would need unpickling, or of a foreign flavour."""


class MlflowTracking(dg.ConfigurableResource):
    """MLflow experiments, runs and registered champions of the expression models (see the
    module docstring for the API)."""

    tracking_uri: str = Field(
        description="MLflow tracking store: the study's mlflow_tracking_uri (a sqlite:/// "
        "file, artifacts beside it, or an http(s):// tracking server)")
    experiment_prefix: str = Field(
        "", description="prepended to every experiment name (e.g. 'gtex-v8/')")
    ui_url: str | None = Field(
        None, description="MLflow UI that shows this store, for run links (default: the "
        "tracking URI when it is http(s); none for a SQLite store unless given)")

    @classmethod
    def from_study(cls, study: Study, **fields: Any) -> MlflowTracking:
        """The resource for a study's ``mlflow_tracking_uri``; a SQLite store links its runs
        to the UI ``make ui`` starts on it (:data:`LOCAL_UI`) unless ``ui_url`` is given."""
        if _sqlite_path(study.mlflow_tracking_uri) is not None:
            fields.setdefault("ui_url", LOCAL_UI)
        return cls(tracking_uri=study.mlflow_tracking_uri, **fields)

    def experiment_name(self, experiment: str) -> str:
        return f"{self.experiment_prefix}{experiment}"

    def client(self) -> MlflowClient:
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.tracking_uri)

    def check_reachable(self) -> None:
        """Raise :class:`TrackingUnavailable` naming the URI unless the store answers (one
        try, :data:`CHECK_TIMEOUT_S`) and, for SQLite, its folder can be written."""
        uri = self.tracking_uri
        try:
            database = _sqlite_path(uri)
            if database is not None:
                database.parent.mkdir(parents=True, exist_ok=True)
                if not os.access(database.parent, os.W_OK):
                    raise PermissionError(f"{database.parent} is not writable")
            with _one_quick_try():
                self.client().search_experiments(max_results=1)
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise TrackingUnavailable(
                f"MLflow tracking store {uri} is unreachable: {type(exc).__name__}: "
                f"{first[:400]}") from exc

    def experiment_id(self, experiment: str) -> str:
        """The ID of ``experiment_prefix + experiment``, created when missing."""
        from mlflow.exceptions import MlflowException

        client = self.client()
        name = self.experiment_name(experiment)
        found = client.get_experiment_by_name(name)
        if found is None:
            try:
                return client.create_experiment(name, artifact_location=self._artifacts(name))
            except MlflowException:  # another process created it meanwhile
                found = client.get_experiment_by_name(name)
                if found is None:
                    raise
        if found.lifecycle_stage != "active":
            raise TrackingUnavailable(
                f"MLflow experiment {name!r} in {self.tracking_uri} is deleted; restore it "
                f"(`mlflow experiments restore --experiment-id {found.experiment_id}`) or "
                "set another experiment_prefix")
        return found.experiment_id

    def _artifacts(self, experiment_name: str) -> str | None:
        database = _sqlite_path(self.tracking_uri)
        if database is None:
            return None
        return (database.parent / SQLITE_ARTIFACTS / experiment_name).resolve().as_uri()

    @contextmanager
    def parent_run(self, experiment: str, dagster_run_id: str, asset_key: str,
                   tags: Mapping[str, Any] | None = None) -> Iterator[ParentRun]:
        """The parent run of this Dagster run and asset in ``experiment``; model runs are
        logged through the :class:`ParentRun` it yields."""
        caller_tags = dict(tags or {})
        all_tags = run_tags(dagster_run_id, asset_key, caller_tags)
        self.check_reachable()
        client = self.client()
        experiment_id = self.experiment_id(experiment)
        existing = client.search_runs(
            [experiment_id], max_results=1,
            filter_string=(f"tags.`{TAG_DAGSTER_RUN_ID}` = '{dagster_run_id}' AND "
                           f"tags.`{TAG_ASSET_KEY}` = '{asset_key}' AND "
                           f"tags.`{TAG_ROLE}` = '{ROLE_PARENT}'"))
        if existing:
            run_id = existing[0].info.run_id
            client.update_run(run_id, status="RUNNING")
        else:
            run_id = client.create_run(
                experiment_id, run_name=parent_run_name(asset_key, dagster_run_id),
                tags={**all_tags, TAG_ROLE: ROLE_PARENT}).info.run_id
        parent = ParentRun(self, experiment_id, run_id, dagster_run_id, asset_key, caller_tags)
        try:
            yield parent
        except BaseException as exc:
            _end_failed(client, run_id, exc)
            raise
        client.set_terminated(run_id, "FINISHED")

    def register_champion(self, gene: str, run_id: str,
                          artifact_path: str = MODEL_ARTIFACT) -> str:
        """Register the model of ``run_id`` as a new version of ``<gene>-expression`` and
        point its ``champion`` alias at it; returns the version."""
        import mlflow
        from mlflow.entities import LoggedModelStatus

        self.check_reachable()
        client = self.client()
        run = client.get_run(run_id)
        if run.info.status != "FINISHED":
            raise ValueError(f"run {run_id} ({run.data.tags.get(TAG_MODEL)}) is "
                             f"{run.info.status}: only a finished run's model can be champion")
        models = [m for m in client.search_logged_models(
            experiment_ids=[run.info.experiment_id],
            filter_string=f"source_run_id = '{run_id}' AND name = '{artifact_path}'")
            if m.status == LoggedModelStatus.READY]
        if not models:
            raise ValueError(f"run {run_id} logged no model named {artifact_path!r}")
        name = registered_model_name(gene)
        with _fluent_uri(self.tracking_uri):
            # MLflow 3 keeps a model beside, not inside, its run's artifacts: register the
            # logged model itself (the version still records the run)
            version = mlflow.register_model(
                f"models:/{models[0].model_id}", name,
                tags={TAG_GENE: gene, TAG_MODEL: run.data.tags.get(TAG_MODEL, "")})
        client.set_registered_model_alias(name, CHAMPION_ALIAS, version.version)
        return version.version

    def clear_champion(self, gene: str) -> bool:
        """Remove the ``champion`` alias of ``<gene>-expression`` (its versions stay); whether
        there was one."""
        from mlflow.exceptions import MlflowException

        self.check_reachable()
        client = self.client()
        name = registered_model_name(gene)
        try:
            client.get_model_version_by_alias(name, CHAMPION_ALIAS)
        except MlflowException:
            return False
        client.delete_registered_model_alias(name, CHAMPION_ALIAS)
        return True

    def find_model_run(self, gene: str, model_name: str, digest: str) -> str | None:
        """The latest FINISHED run, in any of the project's experiments, of ``model_name`` for
        ``gene`` that reported exactly the predictions of ``digest`` and logged a model."""
        client = self.client()
        ids = [e.experiment_id for e in client.search_experiments(
            filter_string=f"name LIKE '{self.experiment_prefix}%'")]
        if not ids:
            return None
        runs = client.search_runs(ids, order_by=["attributes.start_time DESC"], filter_string=(
            f"tags.`{TAG_GENE}` = '{gene}' AND tags.`{TAG_MODEL}` = '{model_name}' AND "
            f"tags.`{TAG_PREDICTIONS}` = '{digest}' AND attributes.status = 'FINISHED'"))
        for run in runs:
            if client.search_logged_models(
                    experiment_ids=[run.info.experiment_id],
                    filter_string=f"source_run_id = '{run.info.run_id}' AND "
                                  f"name = '{MODEL_ARTIFACT}'"):
                return run.info.run_id
        return None

    def load_model(self, model_uri: str) -> Any:
        """A logged or registered model (``models:/<gene>-expression@champion``,
        ``runs:/<run>/model``) as its estimator, loaded without unpickling anything."""
        import mlflow.artifacts
        import mlflow.xgboost
        from mlflow.models import Model

        with tempfile.TemporaryDirectory() as folder, _fluent_uri(self.tracking_uri):
            # models:/ URIs resolve through the global registry URI, whatever is passed here
            local = Path(mlflow.artifacts.download_artifacts(
                artifact_uri=model_uri, dst_path=folder, tracking_uri=self.tracking_uri))
            flavors = Model.load(local).flavors
            if "xgboost" in flavors:
                conf = flavors["xgboost"]
                if (conf.get("model_format") not in XGBOOST_FORMATS
                        or conf.get("model_class") not in XGBOOST_CLASSES):
                    raise UnsafeModelFormat(
                        f"{model_uri}: XGBoost {conf.get('model_class')} in format "
                        f"{conf.get('model_format')!r}; expected {XGBOOST_FORMATS}")
                return mlflow.xgboost.load_model(str(local))
            if "sklearn" in flavors:
                conf = flavors["sklearn"]
                if conf.get("serialization_format") != "skops":
                    raise UnsafeModelFormat(
                        f"{model_uri}: scikit-learn model serialised as "
                        f"{conf.get('serialization_format')!r}, not skops; refusing to unpickle")
                import skops.io

                return skops.io.load(local / conf["pickled_model"],
                                     trusted=list(SKOPS_TRUSTED_TYPES))
            raise UnsafeModelFormat(f"{model_uri}: flavours {sorted(flavors)}; expected "
                                    "sklearn (skops) or xgboost")

    def run_url(self, run_id: str, experiment_id: str | None = None) -> str | None:
        """The run's page in the MLflow UI, when a UI is known (``ui_url`` or an http(s)
        tracking URI)."""
        base = self.ui_url or (self.tracking_uri
                               if self.tracking_uri.startswith(("http://", "https://")) else None)
        if base is None:
            return None
        if experiment_id is None:
            experiment_id = self.client().get_run(run_id).info.experiment_id
        return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


class ParentRun:
    """An open parent run: log model runs under it."""

    def __init__(self, tracking: MlflowTracking, experiment_id: str, run_id: str,
                 dagster_run_id: str, asset_key: str, tags: Mapping[str, Any]) -> None:
        self.tracking = tracking
        self.experiment_id = experiment_id
        self.run_id = run_id
        self.dagster_run_id = dagster_run_id
        self.asset_key = asset_key
        self._tags = dict(tags)
        self.model_runs: list[dict[str, str]] = []
        """One entry per model run logged here: gene, model, run_id, status."""

    def url(self, run_id: str | None = None) -> str | None:
        return self.tracking.run_url(run_id or self.run_id, self.experiment_id)

    def log_model_run(self, gene: str, model_name: str, *, params: Mapping[str, Any],
                      fold_metrics: pd.DataFrame, pooled_metrics: Mapping[str, float],
                      model: Any = None, input_example: pd.DataFrame | None = None,
                      plots: Mapping[str, Any] | None = None,
                      tags: Mapping[str, Any] | None = None) -> str:
        """A model run (FINISHED) with everything given; see the module docstring."""
        from mlflow.entities import Metric, Param

        flat_params = param_values(params)
        pooled = pooled_metric_values(pooled_metrics)
        series = fold_metric_steps(fold_metrics)
        if model is not None and input_example is None:
            raise TrackingPayloadError(f"{gene}/{model_name}: a logged model needs an "
                                       "input_example (its signature is inferred from it)")
        for name in plots or {}:
            if not _PLOT_NAME.match(name):
                raise TrackingPayloadError(f"plot name {name!r}: use letters, digits, _ - .")
        run_id = self._create(gene, model_name, tags)
        client = self.tracking.client()
        with _fluent_uri(self.tracking.tracking_uri), _active(client, run_id):
            client.log_batch(run_id, params=[Param(k, v) for k, v in flat_params.items()])
            model_id = None if model is None else _log_model(model, input_example)
            now = int(time.time() * 1000)
            metrics = [Metric(k, v, now, 0, model_id=model_id) for k, v in pooled.items()]
            metrics += [Metric(k, v, now, step) for k, v, step in series]
            client.log_batch(run_id, metrics=metrics)
            if plots:
                _log_plots(client, run_id, plots)
        self.model_runs.append({"gene": gene, "model": model_name, "run_id": run_id,
                                "status": "FINISHED"})
        return run_id

    def log_failed_model_run(self, gene: str, model_name: str, error: BaseException | str, *,
                             params: Mapping[str, Any] | None = None,
                             tags: Mapping[str, Any] | None = None) -> str:
        """A model run that ends FAILED, carrying ``error`` (tag ``error`` and
        ``error.txt``) and whatever ``params`` the fit was given."""
        from mlflow.entities import Param
        from mlflow.exceptions import MlflowException

        flat_params = param_values(params or {})
        run_id = self._create(gene, model_name, tags)
        client = self.tracking.client()
        if flat_params:
            with suppress(MlflowException):
                client.log_batch(run_id, params=[Param(k, v) for k, v in flat_params.items()])
        _end_failed(client, run_id, error)
        self.model_runs.append({"gene": gene, "model": model_name, "run_id": run_id,
                                "status": "FAILED"})
        return run_id

    def log_plots(self, plots: Mapping[str, Any]) -> None:
        """Plots of the whole run (e.g. R² by model), under ``plots/`` of the parent run."""
        for name in plots:
            if not _PLOT_NAME.match(name):
                raise TrackingPayloadError(f"plot name {name!r}: use letters, digits, _ - .")
        _log_plots(self.tracking.client(), self.run_id, plots)

    def _create(self, gene: str, model_name: str, tags: Mapping[str, Any] | None) -> str:
        from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

        all_tags = run_tags(self.dagster_run_id, self.asset_key, {**self._tags, **(tags or {})})
        all_tags |= {MLFLOW_PARENT_RUN_ID: self.run_id, TAG_GENE: gene, TAG_MODEL: model_name,
                     TAG_ROLE: ROLE_MODEL}
        return self.tracking.client().create_run(
            self.experiment_id, run_name=model_run_name(gene, model_name),
            tags=all_tags).info.run_id


def _log_model(model: Any, input_example: pd.DataFrame) -> str:
    """Log ``model`` to the active run in its flavour, without pickle; its logged-model ID."""
    import mlflow.sklearn
    import mlflow.xgboost
    import xgboost
    from mlflow.models import infer_signature
    from sklearn.base import BaseEstimator

    # The signature only, not the example: with an example MLflow reloads the model it just
    # wrote and predicts it, about a third of the logging time, and only warns on failure.
    # The exported fit was checked against the stored predictions before (check_exported),
    # and the tests load logged models back.
    signature = infer_signature(input_example, model.predict(input_example))
    common = {"name": MODEL_ARTIFACT, "signature": signature}
    if isinstance(model, xgboost.XGBModel | xgboost.Booster):
        info = mlflow.xgboost.log_model(
            model, model_format="ubj",
            pip_requirements=mlflow.xgboost.get_default_pip_requirements(), **common)
    elif isinstance(model, BaseEstimator):
        info = mlflow.sklearn.log_model(
            model, serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_SKOPS,
            skops_trusted_types=list(SKOPS_TRUSTED_TYPES),
            pip_requirements=mlflow.sklearn.get_default_pip_requirements(include_skops=True),
            **common)
    else:
        raise TypeError(f"cannot log a {type(model).__name__}: expected a scikit-learn "
                        "estimator or an XGBoost model")
    return info.model_id


def _log_plots(client: MlflowClient, run_id: str, plots: Mapping[str, Any]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        for name, plot in plots.items():
            path = Path(folder) / f"{name}.png"
            if isinstance(plot, bytes | bytearray):
                if not bytes(plot[:8]) == _PNG:
                    raise TrackingPayloadError(f"plot {name!r}: bytes are not a PNG")
                path.write_bytes(plot)
            elif hasattr(plot, "savefig"):
                plot.savefig(path, format="png")
            else:
                raise TrackingPayloadError(f"plot {name!r}: a {type(plot).__name__}; expected "
                                           "a matplotlib Figure or PNG bytes")
        client.log_artifacts(run_id, folder, PLOTS_ARTIFACT)


def _end_failed(client: MlflowClient, run_id: str, error: BaseException | str) -> None:
    """End a run FAILED (KILLED for an interrupt) with the error as tag and artifact, never
    raising: the caller is already handling an error."""
    from mlflow.entities import RunTag

    status = "FAILED" if not isinstance(error, BaseException) or isinstance(
        error, Exception) else "KILLED"
    with suppress(Exception):
        client.log_batch(run_id, tags=[RunTag(TAG_ERROR, error_text(error))])
        text = ("".join(traceback.format_exception(error))
                if isinstance(error, BaseException) else str(error))
        client.log_text(run_id, text, ERROR_ARTIFACT)
    with suppress(Exception):
        client.set_terminated(run_id, status)


@contextmanager
def _active(client: MlflowClient, run_id: str) -> Iterator[None]:
    """``run_id`` as MLflow's active run for the block (a model logged without an active run
    lands in the Default experiment in MLflow 3.17), then ended FINISHED, or FAILED with the
    error when the block raises."""
    import mlflow

    mlflow.start_run(run_id=run_id)
    try:
        yield
    except BaseException as exc:
        with suppress(Exception):
            mlflow.end_run("FAILED")  # pops the active run before it calls the store
        _end_failed(client, run_id, exc)
        raise
    mlflow.end_run("FINISHED")


@contextmanager
def _fluent_uri(uri: str) -> Iterator[None]:
    """MLflow's process-wide tracking URI set to ``uri`` for the block, then restored exactly:
    unset stays unset (``mlflow.set_tracking_uri`` also writes ``MLFLOW_TRACKING_URI``, and
    restoring the *resolved* URI would pin it and hide later changes of that variable)."""
    import mlflow
    from mlflow.tracking._tracking_service import utils

    previous = getattr(utils, "_tracking_uri", None)
    environment = os.environ.get(_TRACKING_URI_ENV)
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)
        if environment is None:
            os.environ.pop(_TRACKING_URI_ENV, None)
        else:
            os.environ[_TRACKING_URI_ENV] = environment


@contextmanager
def _one_quick_try() -> Iterator[None]:
    """MLflow's HTTP client: one try of at most :data:`CHECK_TIMEOUT_S` within the block."""
    saved = {k: os.environ.get(k) for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES",
                                            "MLFLOW_HTTP_REQUEST_TIMEOUT")}
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(CHECK_TIMEOUT_S)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _sqlite_path(uri: str) -> Path | None:
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri.removeprefix("sqlite:///"))


__all__ = ["SKOPS_TRUSTED_TYPES", "MlflowTracking", "ParentRun", "TrackingUnavailable",
           "UnsafeModelFormat"]
