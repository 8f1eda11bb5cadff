"""MLflow logging shared by the model assets: one child run per (gene, model) under the
asset's parent run, and the gene's champion registered as ``<gene>-expression@champion``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd

from apoe_assets.assets.plots import png, prediction_figure, r2_figure
from apoe_assets.ml.exported_models import ExportedModel
from apoe_assets.ml.folds import FOLD
from apoe_assets.ml.metrics import model_metrics
from apoe_assets.ml.tracking import TrackingPayloadError
from apoe_assets.resources.mlflow_tracking import MlflowTracking, ParentRun

EXAMPLE_ROWS = 5
"""Rows of a logged model's input example (its signature is inferred from them)."""


@dataclass
class LoggedGene:
    """What one gene's logging left in MLflow."""

    runs: dict[str, str] = field(default_factory=dict)
    """Model → run ID of each finished run."""
    failed: dict[str, str] = field(default_factory=dict)
    """Model → error of each run that ended FAILED."""
    champion: str | None = None
    champion_version: str | None = None


def fold_metric_table(predictions: pd.DataFrame, model: str) -> pd.DataFrame:
    """Per fold (index), :func:`~apoe_assets.ml.metrics.model_metrics` of ``model``'s
    out-of-fold predictions."""
    return pd.DataFrame.from_dict(
        {int(fold): model_metrics(group["observed"], group[model])
         for fold, group in predictions.groupby(FOLD)}, orient="index")


def log_gene(parent: ParentRun, gene: str, predictions: pd.DataFrame, metrics: pd.DataFrame,
             params: Mapping[str, Mapping[str, Any]], exported: Mapping[str, ExportedModel],
             failed: Mapping[str, str] | None = None) -> LoggedGene:
    """A run per model of ``metrics`` (index) whose predictions are finite: params, per-fold
    and pooled metrics, the exported fit (when there is one) and its observed-vs-predicted
    plot. A model whose fit failed (``failed``: model → error) gets a FAILED run carrying the
    error; a run that fails while logging is ended FAILED too; the others are logged."""
    logged = LoggedGene()
    for model, error in (failed or {}).items():
        parent.log_failed_model_run(gene, model, error, params=params.get(model, {}))
        logged.failed[model] = error
    for model in metrics.index:
        if not np.isfinite(predictions[model].to_numpy(np.float64)).all():
            continue
        export = exported.get(model)
        r2 = float(metrics.loc[model, "r2"])
        figure = prediction_figure(predictions["observed"].to_numpy(),
                                   {model: predictions[model].to_numpy()}, {model: r2},
                                   f"{gene}: observed vs out-of-fold prediction")
        try:
            logged.runs[model] = parent.log_model_run(
                gene, model, params={**params.get(model, {}),
                                     "exported_fold": None if export is None else export.fold},
                fold_metrics=fold_metric_table(predictions, model),
                pooled_metrics=metrics.loc[model].astype(float).to_dict(),
                model=None if export is None else export.estimator,
                input_example=None if export is None else export.inputs.head(EXAMPLE_ROWS),
                plots={"observed_vs_predicted": png(figure)})
        except Exception as exc:  # one model's failure must not lose the others' runs
            if isinstance(exc, TrackingPayloadError):  # refused before its run existed
                parent.log_failed_model_run(gene, model, exc, params=params.get(model, {}))
            logged.failed[model] = f"{type(exc).__name__}: {exc}"
    return logged


def champion(metrics: pd.DataFrame, logged: LoggedGene,
             exported: Mapping[str, ExportedModel]) -> str | None:
    """The model with the best pooled R² among those logged with a fitted model."""
    candidates = [m for m in logged.runs if m in exported and np.isfinite(metrics.loc[m, "r2"])]
    return max(candidates, key=lambda m: metrics.loc[m, "r2"]) if candidates else None


def log_models(tracking: MlflowTracking, context: dg.AssetExecutionContext, experiment: str,
               genes: Sequence[str], tables: Mapping[str, tuple[pd.DataFrame, pd.DataFrame]],
               params: Mapping[str, Mapping[str, Mapping[str, Any]]],
               exported: Mapping[str, Mapping[str, ExportedModel]], code_version: str,
               data_versions: Mapping[str, str],
               failed: Mapping[str, Mapping[str, str]] | None = None) -> dict[str, LoggedGene]:
    """Log every gene's models under one parent run of this Dagster run and asset in
    ``experiment`` and register each gene's champion. ``tables``: gene → (out-of-fold
    predictions, metrics per model); ``params``, ``exported`` and ``failed`` (fits that
    raised): gene → model → …"""
    asset = context.assets_def.key.to_user_string() if context.has_assets_def else "asset"
    partition = ",".join(genes) if len(genes) <= 3 else f"{genes[0]}…{genes[-1]}"
    data_version = data_versions[genes[0]] if len(genes) == 1 else "multiple"
    results: dict[str, LoggedGene] = {}
    with tracking.parent_run(experiment, context.run.run_id, asset, tags={
            "partition": partition, "code_version": code_version,
            "data_version": data_version}) as parent:
        for gene in genes:
            predictions, metrics = tables[gene]
            logged = log_gene(parent, gene, predictions, metrics, params.get(gene, {}),
                              exported.get(gene, {}), (failed or {}).get(gene))
            best = champion(metrics, logged, exported.get(gene, {}))
            if best is not None:
                logged.champion = best
                logged.champion_version = tracking.register_champion(gene, logged.runs[best])
            results[gene] = logged
            context.log.info(f"{gene}: {len(logged.runs)} MLflow run(s), champion {best}"
                             + (f", FAILED: {', '.join(logged.failed)}" if logged.failed else ""))
        parent.log_plots({f"r2_by_model_{gene}": png(r2_figure(tables[gene][1], gene))
                          for gene in genes})
    return results


def tracking_metadata(tracking: MlflowTracking, results: Mapping[str, LoggedGene]
                      ) -> dict[str, Any]:
    """What the asset's metadata shows about MLflow: runs, failures, champions, links."""
    rows = []
    for gene, logged in results.items():
        for model, run_id in logged.runs.items():
            url = tracking.run_url(run_id)
            rows.append({"gene": gene, "model": model, "status": "FINISHED",
                         "champion": "yes" if model == logged.champion else "",
                         "run": f"[{run_id[:8]}]({url})" if url else run_id})
        rows += [{"gene": gene, "model": model, "status": "FAILED", "champion": "",
                  "run": error[:120]} for model, error in logged.failed.items()]
    failed = sum(len(r.failed) for r in results.values())
    return {"mlflow_tracking_uri": tracking.tracking_uri,
            "mlflow_runs": dg.MetadataValue.md(pd.DataFrame(rows).to_markdown(index=False)
                                               if rows else "none"),
            "mlflow_failed_runs": failed,
            "champions": ", ".join(f"{g}: {r.champion} (v{r.champion_version})"
                                   for g, r in results.items() if r.champion) or "none"}
