"""Every model of every gene compared on its out-of-fold predictions: pooled R², Pearson r and
MSE, the fold mean and standard error of R², and the winner per gene with how clearly it won.

- :func:`long_predictions`: the single-gene models' tables (per gene: ``fold``, ``observed``,
  one column per model) and the multi-gene stacking table (``gene``, ``sample``, ``fold``,
  ``observed``, base models, ``stack``) as one long table ``gene``, ``model``, ``sample``,
  ``fold``, ``observed``, ``predicted``. The stacking base models are renamed
  ``stacking_<model>`` (its ``elastic_net`` is not the genotype elastic net), ``stack`` stays.
  Both sources must agree on each gene's samples, folds and observed (covariate-adjusted)
  values, else their R² would not be comparable: :class:`ComparisonError` naming the gene.
- :func:`model_table`: per (gene, model) :func:`~apoe_assets.ml.metrics.model_metrics` of the
  pooled predictions (``r2`` is scikit-learn's ``r2_score``), ``fold_r2_mean`` and
  ``fold_r2_se`` (sample SD of the per-fold R² over √K), ``n``. Everything is computed from
  the predictions, never taken from another asset's metadata.
- :func:`winners`: per gene, the model of highest pooled R² and the runner-up, the margin
  ``r2 − runner_up_r2`` and its fold SE: the standard error over the K folds of the paired
  per-fold difference of their R² (both models are scored on the same folds, so the paired
  SE is the one that measures the difference). ``clear`` is False, with a note, when the
  margin is not larger than one such SE.

A skipped model (NaN predictions) has NaN metrics and never wins.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from apoe_assets.ml.folds import FOLD
from apoe_assets.ml.metrics import model_metrics
from apoe_assets.ml.stacking import BASE_MODELS, STACK

COMPARISON_VERSION = "1"
"""Code version of ``model_comparison``: bump it when its results change."""
STACKING_PREFIX = "stacking_"
"""Prefix of the multi-gene stacking base models in the comparison."""
METRIC_COLUMNS = ("r2", "pearson_r", "mse", "fold_r2_mean", "fold_r2_se", "fold_pearson_r_se",
                  "fold_mse_se", "n")
LONG_COLUMNS = ("gene", "model", "sample", FOLD, "observed", "predicted")
WINNER_COLUMNS = ("winner", "r2", "runner_up", "runner_up_r2", "margin", "margin_se", "clear",
                  "note")
RELATIVE_TOLERANCE = 1e-9
"""Two sources' observed values of a sample agree within this (relative to the gene's SD)."""


class ComparisonError(ValueError):
    """Predictions that cannot be compared: other samples, folds or targets for one gene."""


def stacking_model_name(model: str) -> str:
    """The comparison's name of a multi-gene stacking column."""
    return model if model == STACK else f"{STACKING_PREFIX}{model}"


def _melt(gene: str, table: pd.DataFrame, models: Sequence[str]) -> pd.DataFrame:
    absent = [c for c in (FOLD, "observed", *models) if c not in table.columns]
    if absent:
        raise ComparisonError(f"{gene}: predictions lack column(s) {', '.join(absent)}")
    frame = table[[FOLD, "observed", *models]].rename_axis("sample").reset_index()
    long = frame.melt(id_vars=["sample", FOLD, "observed"], value_vars=list(models),
                      var_name="model", value_name="predicted")
    return long.assign(gene=gene)[list(LONG_COLUMNS)]


def _check_same_target(gene: str, first: pd.DataFrame, second: pd.DataFrame) -> None:
    a, b = first.set_index("sample"), second.set_index("sample")
    if sorted(a.index) != sorted(b.index):
        only = sorted(set(a.index) ^ set(b.index))
        raise ComparisonError(f"{gene}: the single-gene and stacking predictions cover other "
                              f"samples ({len(only)} in one only, e.g. {', '.join(only[:3])})")
    b = b.loc[a.index]
    if not (a[FOLD].to_numpy() == b[FOLD].to_numpy()).all():
        raise ComparisonError(f"{gene}: the single-gene and stacking predictions use other "
                              "folds; re-materialise the older one")
    x, y = a["observed"].to_numpy(np.float64), b["observed"].to_numpy(np.float64)
    scale = max(float(np.nanstd(x)), 1e-300)
    off = np.abs(x - y) > RELATIVE_TOLERANCE * scale
    if off.any():
        sample = a.index[np.flatnonzero(off)[0]]
        raise ComparisonError(f"{gene}: observed values differ between the single-gene and "
                              f"stacking predictions (first: sample {sample}); they were made "
                              "from other expression or covariates: re-materialise the older "
                              "one")


def long_predictions(single: Mapping[str, pd.DataFrame], models: Sequence[str],
                     stacked: pd.DataFrame | None = None,
                     stacked_models: Sequence[str] = (*BASE_MODELS, STACK)) -> pd.DataFrame:
    """One long table (:data:`LONG_COLUMNS`) of every gene's out-of-fold predictions: from
    ``single`` (gene → per-sample table with ``fold``, ``observed`` and ``models``) and from
    ``stacked`` (the long stacking table), stacking columns renamed by
    :func:`stacking_model_name`. Genes in ``single`` order, then stacking-only genes."""
    frames: dict[str, list[pd.DataFrame]] = {gene: [_melt(gene, table, models)]
                                             for gene, table in single.items()}
    if stacked is not None and len(stacked):
        for gene, group in stacked.groupby("gene", sort=False):
            table = group.drop(columns="gene").set_index("sample").rename(
                columns={m: stacking_model_name(m) for m in stacked_models})
            melted = _melt(str(gene), table, [stacking_model_name(m) for m in stacked_models])
            if gene in frames:
                first = frames[gene][0]
                _check_same_target(str(gene), first[first["model"] == models[0]], melted[
                    melted["model"] == stacking_model_name(stacked_models[0])])
            frames.setdefault(str(gene), []).append(melted)
    if not frames:
        raise ComparisonError("no predictions to compare")
    return pd.concat([f for parts in frames.values() for f in parts], ignore_index=True)


def _fold_r2(group: pd.DataFrame) -> pd.Series:
    """Per fold: R² of one (gene, model)'s test samples."""
    return group.groupby(FOLD, sort=True).apply(
        lambda g: model_metrics(g["observed"], g["predicted"])["r2"], include_groups=False)


def _se(values: np.ndarray) -> float:
    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2 or not np.isfinite(values).all():
        return math.nan
    return float(np.std(values, ddof=1) / np.sqrt(len(values)))


def model_table(predictions: pd.DataFrame) -> pd.DataFrame:
    """Per (gene, model), in the long table's order: :data:`METRIC_COLUMNS` — pooled R²,
    Pearson r and MSE, R²'s fold mean, and the standard error over folds (SD/√K) of R², r and
    MSE."""
    rows = []
    for (gene, model), group in predictions.groupby(["gene", "model"], sort=False):
        pooled = model_metrics(group["observed"], group["predicted"])
        folds = pd.DataFrame([model_metrics(g["observed"], g["predicted"])
                              for _, g in group.groupby(FOLD, sort=True)])
        per_fold = folds["r2"].to_numpy()
        rows.append({"gene": gene, "model": model, "r2": pooled["r2"],
                     "pearson_r": pooled["pearson_r"], "mse": pooled["mse"],
                     "fold_r2_mean": float(np.mean(per_fold)), "fold_r2_se": _se(per_fold),
                     "fold_pearson_r_se": _se(folds["pearson_r"].to_numpy()),
                     "fold_mse_se": _se(folds["mse"].to_numpy()),
                     "n": len(group)})
    return pd.DataFrame(rows).set_index(["gene", "model"])[list(METRIC_COLUMNS)]


def r2_matrix(metrics: pd.DataFrame) -> pd.DataFrame:
    """Genes × models of pooled R² (models in first-seen order), for plots."""
    models = list(dict.fromkeys(metrics.index.get_level_values("model")))
    genes = list(dict.fromkeys(metrics.index.get_level_values("gene")))
    return metrics["r2"].unstack("model").reindex(index=genes, columns=models)


def _winner_row(gene: str, r2: pd.Series, predictions: pd.DataFrame) -> dict:
    ranked = r2.dropna().sort_values(ascending=False, kind="stable")
    if ranked.empty:
        return {"winner": "none", "r2": math.nan, "runner_up": "", "runner_up_r2": math.nan,
                "margin": math.nan, "margin_se": math.nan, "clear": False,
                "note": f"{gene}: no model scored"}
    winner = str(ranked.index[0])
    if len(ranked) == 1:
        return {"winner": winner, "r2": float(ranked.iloc[0]), "runner_up": "",
                "runner_up_r2": math.nan, "margin": math.nan, "margin_se": math.nan,
                "clear": False, "note": f"{gene}: only {winner} scored; no runner-up"}
    runner = str(ranked.index[1])
    mine = predictions[predictions["gene"] == gene]
    difference = (_fold_r2(mine[mine["model"] == winner])
                  - _fold_r2(mine[mine["model"] == runner])).to_numpy()
    margin = float(ranked.iloc[0] - ranked.iloc[1])
    margin_se = _se(difference)
    clear = bool(margin > margin_se) if np.isfinite(margin_se) else False
    note = "" if clear else (f"{gene}: {winner} is not better than {runner} beyond 1 fold-SE "
                             f"(ΔR² {margin:.4f}, SE {margin_se:.4f})")
    return {"winner": winner, "r2": float(ranked.iloc[0]), "runner_up": runner,
            "runner_up_r2": float(ranked.iloc[1]), "margin": margin, "margin_se": margin_se,
            "clear": clear, "note": note}


def winners(predictions: pd.DataFrame, metrics: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per gene (index ``gene``): :data:`WINNER_COLUMNS` — highest pooled R² and runner-up,
    the margin and its paired fold SE, ``clear`` (margin > SE) and a note when not clear."""
    metrics = model_table(predictions) if metrics is None else metrics
    rows = {}
    for gene in dict.fromkeys(metrics.index.get_level_values("gene")):
        rows[gene] = _winner_row(str(gene), metrics.loc[gene, "r2"], predictions)
    table = pd.DataFrame.from_dict(rows, orient="index")[list(WINNER_COLUMNS)]
    return table.rename_axis("gene")
