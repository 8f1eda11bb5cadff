"""MLflow logging shared by the model assets: one child run per (gene, model) under the
asset's parent run, each tagged with the digest of the predictions it reports; and the
champions, registered by ``model_comparison`` from those digests."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd

from apoe_assets.assets.plots import png, prediction_figure, r2_figure
from apoe_assets.ml.exported_models import ExportedModel
from apoe_assets.ml.folds import FOLD
from apoe_assets.ml.metrics import model_metrics
from apoe_assets.ml.tracking import TAG_PREDICTIONS, TrackingPayloadError, predictions_digest
from apoe_assets.resources.mlflow_tracking import MlflowTracking, ParentRun

EXAMPLE_ROWS = 5
"""Rows of a logged model's input example (its signature is inferred from them)."""


@dataclass(frozen=True)
class GenePlots:
    """One gene's PNGs for MLflow: per model with finite predictions, observed against
    out-of-fold predicted; and the pooled R² by model."""

    observed_vs_predicted: Mapping[str, bytes]
    r2_by_model: bytes


def logged_model_names(predictions: pd.DataFrame, metrics: pd.DataFrame) -> list[str]:
    """The models of ``metrics`` (index) whose predictions are all finite: those that get a
    run (a model skipped for a gene has NaN predictions)."""
    return [m for m in metrics.index
            if np.isfinite(predictions[m].to_numpy(np.float64)).all()]


def gene_plots(gene: str, predictions: pd.DataFrame, metrics: pd.DataFrame) -> GenePlots:
    """:class:`GenePlots` of one gene's out-of-fold ``predictions`` (with ``observed``) and
    ``metrics``. Rendering takes a tenth of a second a plot, so the model assets call it
    where the gene was fitted (a worker process), not in the process that logs."""
    observed = predictions["observed"].to_numpy()
    return GenePlots(
        {model: png(prediction_figure(observed, {model: predictions[model].to_numpy()},
                                      {model: float(metrics.loc[model, "r2"])},
                                      f"{gene}: observed vs out-of-fold prediction"))
         for model in logged_model_names(predictions, metrics)},
        png(r2_figure(metrics, gene)))


@dataclass(frozen=True)
class GeneModels:
    """One gene's fitted models, ready to log: out-of-fold ``predictions`` indexed by sample
    (with ``fold`` and ``observed``), ``metrics`` per model, per model its ``params`` and its
    ``exported`` fit, the gene's :func:`gene_plots` and, for fits that raised, the error
    (``failed``)."""

    gene: str
    predictions: pd.DataFrame
    metrics: pd.DataFrame
    params: Mapping[str, Mapping[str, Any]]
    exported: Mapping[str, ExportedModel]
    plots: GenePlots
    failed: Mapping[str, str] = field(default_factory=dict)


@dataclass
class LoggedGene:
    """What one gene's logging left in MLflow."""

    runs: dict[str, str] = field(default_factory=dict)
    """Model → run ID of each finished run."""
    failed: dict[str, str] = field(default_factory=dict)
    """Model → error of each run that ended FAILED."""


def fold_metric_table(predictions: pd.DataFrame, model: str) -> pd.DataFrame:
    """Per fold (index), :func:`~apoe_assets.ml.metrics.model_metrics` of ``model``'s
    out-of-fold predictions."""
    return pd.DataFrame.from_dict(
        {int(fold): model_metrics(group["observed"], group[model])
         for fold, group in predictions.groupby(FOLD)}, orient="index")


def log_gene(parent: ParentRun, gene: str, predictions: pd.DataFrame, metrics: pd.DataFrame,
             params: Mapping[str, Mapping[str, Any]], exported: Mapping[str, ExportedModel],
             plots: GenePlots, failed: Mapping[str, str] | None = None,
             tags: Mapping[str, Any] | None = None) -> LoggedGene:
    """A run per model of ``metrics`` (index) whose predictions are finite: params, per-fold
    and pooled metrics, the exported fit (when there is one) and its observed-vs-predicted
    plot (of ``plots``, the gene's :func:`gene_plots`). A model whose fit failed
    (``failed``: model → error) gets a FAILED run carrying the error; a run that fails while
    logging is ended FAILED too; the others are logged. ``tags`` (the gene's own
    ``partition`` and ``data_version``) override the parent run's."""
    logged = LoggedGene()
    tags = dict(tags or {})
    for model, error in (failed or {}).items():
        parent.log_failed_model_run(gene, model, error, params=params.get(model, {}),
                                    tags=tags)
        logged.failed[model] = error
    for model in logged_model_names(predictions, metrics):
        export = exported.get(model)
        try:
            logged.runs[model] = parent.log_model_run(
                gene, model, params={**params.get(model, {}),
                                     "exported_fold": None if export is None else export.fold},
                fold_metrics=fold_metric_table(predictions, model),
                pooled_metrics=metrics.loc[model].astype(float).to_dict(),
                model=None if export is None else export.estimator,
                input_example=None if export is None else export.inputs.head(EXAMPLE_ROWS),
                plots={"observed_vs_predicted": plots.observed_vs_predicted[model]},
                tags={**tags, TAG_PREDICTIONS: predictions_digest(
                    predictions.index, predictions["observed"], predictions[model])})
        except Exception as exc:  # one model's failure must not lose the others' runs
            if isinstance(exc, TrackingPayloadError):  # refused before its run existed
                parent.log_failed_model_run(gene, model, exc, params=params.get(model, {}),
                                            tags=tags)
            logged.failed[model] = f"{type(exc).__name__}: {exc}"
    return logged


def log_models(tracking: MlflowTracking, context: dg.AssetExecutionContext, experiment: str,
               data_versions: Mapping[str, str], models: Iterable[GeneModels],
               code_version: str) -> dict[str, LoggedGene]:
    """Log every gene's models under one parent run of this Dagster run and asset in
    ``experiment``. ``data_versions``: gene → digest of its inputs, for every gene of the run
    in order; ``models`` is consumed one gene at a time as the runs are logged, so a generator
    that fits the genes lets worker processes fit the next genes meanwhile
    (``model_comparison`` registers the champions)."""
    genes = list(data_versions)
    asset = context.assets_def.key.to_user_string() if context.has_assets_def else "asset"
    partition = ",".join(genes) if len(genes) <= 3 else f"{genes[0]}…{genes[-1]}"
    data_version = data_versions[genes[0]] if len(genes) == 1 else "multiple"
    results: dict[str, LoggedGene] = {}
    r2_plots: dict[str, bytes] = {}
    with tracking.parent_run(experiment, context.run.run_id, asset, tags={
            "partition": partition, "code_version": code_version,
            "data_version": data_version}) as parent:
        for gene_models in models:
            gene = gene_models.gene
            logged = log_gene(parent, gene, gene_models.predictions, gene_models.metrics,
                              gene_models.params, gene_models.exported, gene_models.plots,
                              gene_models.failed,
                              tags={"partition": gene, "data_version": data_versions[gene]})
            results[gene], r2_plots[gene] = logged, gene_models.plots.r2_by_model
            context.log.info(f"{gene}: {len(logged.runs)} MLflow run(s)"
                             + (f", FAILED: {', '.join(logged.failed)}" if logged.failed else ""))
        parent.log_plots({f"r2_by_model_{gene}": image for gene, image in r2_plots.items()})
    return results


def tracking_metadata(tracking: MlflowTracking, results: Mapping[str, LoggedGene]
                      ) -> dict[str, Any]:
    """What the asset's metadata shows about MLflow: runs, failures, links."""
    rows = []
    for gene, logged in results.items():
        for model, run_id in logged.runs.items():
            url = tracking.run_url(run_id)
            rows.append({"gene": gene, "model": model, "status": "FINISHED",
                         "run": f"[{run_id[:8]}]({url})" if url else run_id})
        rows += [{"gene": gene, "model": model, "status": "FAILED", "run": error[:120]}
                 for model, error in logged.failed.items()]
    return {"mlflow_tracking_uri": tracking.tracking_uri,
            "mlflow_runs": dg.MetadataValue.md(pd.DataFrame(rows).to_markdown(index=False)
                                               if rows else "none"),
            "mlflow_failed_runs": sum(len(r.failed) for r in results.values())}


def register_champions(tracking: MlflowTracking, predictions: pd.DataFrame,
                       metrics: pd.DataFrame) -> pd.DataFrame:
    """Per gene, register as ``<gene>-expression@champion`` the best model (pooled R² of
    ``metrics``, index gene × model) whose MLflow run reported exactly the predictions
    compared here (``predictions``: the comparison's long table); a better model without such
    a run (never logged, or logged from other predictions) is passed over and named. A gene
    where no model beats the mean (R² ≤ 0) gets no champion."""
    rows = []
    for gene in dict.fromkeys(metrics.index.get_level_values("gene")):
        ranked = metrics.loc[gene, "r2"].dropna().sort_values(ascending=False, kind="stable")
        ranked = ranked[ranked > 0]  # a model no better than the mean is nobody's champion
        passed: list[str] = []
        for model, r2 in ranked.items():
            rows_of = predictions[(predictions["gene"] == gene) & (predictions["model"] == model)]
            digest = predictions_digest(rows_of["sample"], rows_of["observed"],
                                        rows_of["predicted"])
            run_id = tracking.find_model_run(str(gene), str(model), digest)
            if run_id is None:
                passed.append(str(model))
                continue
            version = tracking.register_champion(str(gene), run_id)
            rows.append({"gene": gene, "champion": model, "r2": r2, "run_id": run_id,
                         "version": version, "passed_over": ", ".join(passed)})
            break
        else:  # an earlier champion must not outlive the comparison that dropped it
            tracking.clear_champion(str(gene))
            rows.append({"gene": gene, "champion": None, "r2": np.nan, "run_id": None,
                         "version": None, "passed_over": ", ".join(passed)})
    return pd.DataFrame(rows).set_index("gene")
