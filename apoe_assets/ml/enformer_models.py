"""Single-gene expression models on Enformer features, beside the genotype models and on the
same outer folds, every prediction out of fold.

- ``enformer_linear``: a + b·feature (the study's track(s) at the TSS bins, haplotypes
  combined), least squares on the training samples;
- ``enformer_xgboost``: XGBoost on the tracks at the TSS bins and a few flanking bins of each
  haplotype, plus ``h1``, ``h2``, their mean and absolute difference; its hyper-parameters
  chosen on the outer training samples' nested inner folds (:mod:`~apoe_assets.ml.inner_cv`);
- ``combined``: least squares on the Enformer feature and the genotype scores (baseline and P+T
  PRS). **Leakage rule:** a training sample's genotype scores are its *inner* out-of-fold
  scores from the fold's own inner models (:meth:`GeneModels.stacking_scores` "train" rows);
  its outer out-of-fold score was fitted on folds holding this fold's test samples and is never
  a training feature. Test samples get the fold's outer scores.

The target is the genotype models' covariate-adjusted expression of the same fold (training
fit of ``[1, covariates]``), so every model's R² is on the same scale.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from apoe_assets.enformer.predictions import GenePredictions
from apoe_assets.ml.folds import FOLD, fold_ids, inner_folds, split
from apoe_assets.ml.gene_models import SCORES
from apoe_assets.ml.inner_cv import InnerSplit, inner_splits
from apoe_assets.ml.metrics import model_metrics
from apoe_assets.stats.residualise import Residualiser, explained_entirely

# XGBoost is heavy: imported on first use, so that loading the code location stays fast
if TYPE_CHECKING:
    from xgboost import XGBRegressor

ENFORMER_MODELS = ("enformer_linear", "enformer_xgboost", "combined")
FLANK_BINS = 2
"""Output bins kept on each side of the TSS bins for the boosting features."""
XGB_GRID: Mapping[str, Sequence] = {"max_depth": (2, 4), "n_estimators": (50, 200),
                                    "learning_rate": (0.05,), "min_child_weight": (5,)}
"""Hyper-parameter grid of the boosting model (every combination scored by inner CV)."""
XGB_DEFAULT_TREES = 100
"""XGBoost's ``n_estimators`` when a grid leaves it out."""


def boosting_features(predictions: GenePredictions, flank_bins: int = FLANK_BINS,
                      log1p: bool = False) -> pd.DataFrame:
    """Per sample: each track at the TSS bins ± ``flank_bins`` (those predicted) for each
    haplotype (``h1:<track>:<bin>``, ``h2:…``), then ``h1``, ``h2``, ``mean`` and ``absdiff``
    of the expression feature; ``log1p`` transforms the track values first."""
    bins = predictions.bins.tolist()
    tss = [bins.index(b) for b in predictions.tss_bins]
    kept = [i for i in range(min(tss) - flank_bins, max(tss) + flank_bins + 1)
            if 0 <= i < len(bins)]
    values = predictions.per_haplotype()[:, kept, :].astype(np.float64)
    if log1p:
        values = np.log1p(np.clip(values, 0.0, None))
    table = predictions.haplotypes[["sample", "haplotype"]].reset_index(drop=True)
    columns = {}
    for haplotype in (1, 2):
        rows = np.flatnonzero(table["haplotype"].to_numpy() == haplotype)
        samples = table["sample"].to_numpy()[rows]
        for t, track in enumerate(predictions.tracks["index"]):
            for k, b in enumerate(kept):
                columns[f"h{haplotype}:{track}:{bins[b]}"] = pd.Series(values[rows, k, t],
                                                                         index=samples)
    frame = pd.DataFrame(columns)
    feature = predictions.features
    frame = frame.loc[feature.index]
    return frame.assign(h1=feature["h1"], h2=feature["h2"],
                        mean=(feature["h1"] + feature["h2"]) / 2,
                        absdiff=(feature["h1"] - feature["h2"]).abs())


@dataclass(frozen=True)
class EnformerFold:
    """The Enformer models of one outer fold, fitted on its training samples only."""

    fold: int
    train: list[str]
    test: list[str]
    linear: np.ndarray | None
    """Intercept and slope of ``enformer_linear`` (None: its fit failed, see ``failed``)."""
    boosting: XGBRegressor | None
    boosting_params: dict
    inner_mse: dict[str, float]
    """Mean inner-fold MSE of each grid point (its parameters as text)."""
    combined: np.ndarray | None
    """Intercept and coefficients (feature, then :data:`SCORES`) of ``combined``."""
    combined_train: pd.DataFrame
    """The rows ``combined`` was fitted on: feature and the training samples' inner scores."""
    observed: np.ndarray
    predicted: pd.DataFrame
    """Per test sample, each model's prediction (NaN for a model whose fit failed)."""
    failed: dict[str, str] = field(default_factory=dict)
    """Model → the error its fit raised in this fold."""


@dataclass(frozen=True)
class EnformerModels:
    """One gene's Enformer models: per fold, and the pooled out-of-fold predictions."""

    gene_id: str
    folds: list[EnformerFold]
    predictions: pd.DataFrame
    """Per sample: ``fold``, ``observed`` and one out-of-fold column per model."""
    notes: tuple[str, ...] = field(default_factory=tuple)
    scored: bool = True
    """False when the covariates explain the expression entirely: no model is scored."""
    failed: dict[str, str] = field(default_factory=dict)
    """Model → the errors of its failed fits (its predictions are NaN in every fold)."""

    def metrics(self, models: Sequence[str] = ENFORMER_MODELS) -> pd.DataFrame:
        """Per model: pooled MSE, R², Pearson r and p, Spearman ρ, and the fold mean and
        standard error of R² (NaN for a gene whose expression the covariates explain)."""
        return metrics_table(self.predictions, models)


def metrics_table(predictions: pd.DataFrame, models: Sequence[str]) -> pd.DataFrame:
    """:func:`~apoe_assets.ml.metrics.model_metrics` of each model column of out-of-fold
    ``predictions`` (with ``fold`` and ``observed``), pooled, plus R²'s fold mean and SE; a
    model whose predictions are NaN (skipped) has NaN metrics."""
    rows = []
    for model in models:
        pooled = model_metrics(predictions["observed"], predictions[model])
        per_fold = [model_metrics(g["observed"], g[model])["r2"]
                    for _, g in predictions.groupby(FOLD)]
        rows.append({"model": model, **pooled, "fold_r2_mean": float(np.mean(per_fold)),
                     "fold_r2_se": float(np.std(per_fold, ddof=1) / np.sqrt(len(per_fold)))})
    return pd.DataFrame(rows).set_index("model")


def _least_squares(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    design = np.column_stack([np.ones(len(y)), x])
    return np.linalg.lstsq(design, y, rcond=None)[0]


def _apply(beta: np.ndarray, x: np.ndarray) -> np.ndarray:
    return beta[0] + np.asarray(x, dtype=np.float64) @ beta[1:]


def _boosting(params: Mapping, seed: int) -> XGBRegressor:
    from xgboost import XGBRegressor

    return XGBRegressor(**params, random_state=seed, n_jobs=1, tree_method="hist")


def tune_boosting(x: pd.DataFrame, splits: Sequence[InnerSplit], seed: int,
                  grid: Mapping[str, Sequence] = XGB_GRID) -> tuple[dict, dict[str, float]]:
    """The grid point with the smallest mean inner MSE over the nested ``splits`` (ties: the
    first), and every point's mean inner MSE.

    Grid points that differ only in ``n_estimators`` share one fit of the most trees: the
    first n trees of a deterministic booster (no subsampling) are the trees an n-tree fit
    grows, so its prediction over those trees is that fit's prediction."""
    names = list(grid)
    points = [dict(zip(names, values, strict=True))
              for values in itertools.product(*(grid[n] for n in names))]
    most: dict[tuple, int] = {}
    for params in points:
        most[_others(params)] = max(most.get(_others(params), 0), _trees(params))
    features = x.to_numpy(np.float64)  # unnamed: XGBoost then skips name checks every round
    errors: dict[str, list[float]] = {repr(params): [] for params in points}
    for s in splits:
        fitted: dict[tuple, XGBRegressor] = {}
        for params in points:
            shared = _others(params)
            if shared not in fitted:
                fitted[shared] = _boosting({**params, "n_estimators": most[shared]}, seed).fit(
                    features[s.train], s.train_target)
            predicted = fitted[shared].predict(features[s.test],
                                               iteration_range=(0, _trees(params)))
            errors[repr(params)].append(float(np.mean((s.test_target - predicted) ** 2)))
    scores = {key: float(np.mean(values)) for key, values in errors.items()}
    best = min(points, key=lambda params: scores[repr(params)])  # ties: the first
    return dict(best), scores


def _trees(params: Mapping) -> int:
    return int(params.get("n_estimators", XGB_DEFAULT_TREES))


def _others(params: Mapping) -> tuple:
    """A grid point's parameters other than its tree count."""
    return tuple((k, v) for k, v in params.items() if k != "n_estimators")


def fit_enformer_fold(features: pd.DataFrame, stacking: pd.DataFrame, expression: pd.Series,
                      covariates: pd.DataFrame, folds: pd.Series, fold: int, *,
                      n_inner_folds: int, seed: int,
                      grid: Mapping[str, Sequence] = XGB_GRID) -> EnformerFold:
    """The three Enformer models of outer fold ``fold`` from its training samples.

    ``features`` are :func:`boosting_features` (``mean`` is the linear model's feature);
    ``stacking`` is :meth:`GeneModels.stacking_scores` of the same gene and folds.
    """
    train, test = split(folds, fold)
    rows = stacking[stacking[FOLD] == fold].set_index("sample")
    train_rows = rows[rows["role"] == "train"].loc[train]
    test_rows = rows[rows["role"] == "test"].loc[test]
    target = train_rows["target"].to_numpy(np.float64)
    feature = features["mean"]
    failed: dict[str, str] = {}
    predicted = pd.DataFrame(np.nan, index=pd.Index(test, name="sample"),
                             columns=list(ENFORMER_MODELS))

    def attempt(model: str, fit: Callable[[], tuple]) -> tuple:
        """Fit one model; a failure is recorded for it alone (the others still fit)."""
        try:
            fitted, prediction = fit()
        except Exception as exc:
            failed[model] = f"{type(exc).__name__}: {exc}"
            return None, None
        predicted[model] = prediction
        return fitted, prediction

    def fit_linear() -> tuple:
        beta = _least_squares(feature.loc[train].to_numpy()[:, None], target)
        return beta, _apply(beta, feature.loc[test].to_numpy()[:, None])

    tuning: dict = {"params": {}, "inner_mse": {}}

    def fit_boosting() -> tuple:
        splits = inner_splits(train, inner_folds(folds, fold, n_inner_folds, seed), expression,
                              covariates)
        tuning["params"], tuning["inner_mse"] = tune_boosting(features.loc[train], splits, seed,
                                                              grid)
        model = _boosting(tuning["params"], seed).fit(features.loc[train], target)
        return model, model.predict(features.loc[test]).astype(np.float64)

    combined_train = train_rows[list(SCORES)].assign(feature=feature.loc[train])[
        ["feature", *SCORES]]
    combined_test = test_rows[list(SCORES)].assign(feature=feature.loc[test])[
        ["feature", *SCORES]]

    def fit_combined() -> tuple:
        beta = _least_squares(combined_train.to_numpy(np.float64), target)
        return beta, _apply(beta, combined_test.to_numpy(np.float64))

    linear, _ = attempt("enformer_linear", fit_linear)
    boosting, _ = attempt("enformer_xgboost", fit_boosting)
    combined, _ = attempt("combined", fit_combined)
    return EnformerFold(fold, train, test, linear, boosting, tuning["params"],
                        tuning["inner_mse"], combined, combined_train,
                        test_rows["target"].to_numpy(np.float64), predicted, failed)


NO_PREDICTIONS = ("no Enformer predictions for this gene: the Enformer models are skipped "
                  "(predictions and metrics NaN); the genotype models stand")


def _skipped(stacking: pd.DataFrame, samples: Sequence[str], gene_id: str, note: str,
             scored: bool) -> EnformerModels:
    predictions = stacking[stacking["role"] == "test"].set_index("sample").loc[samples]
    predictions = predictions[[FOLD]].assign(observed=predictions["target"],
                                            **dict.fromkeys(ENFORMER_MODELS, np.nan))
    return EnformerModels(gene_id, [], predictions, (note,), scored=scored)


def enformer_models(features: pd.DataFrame | None, stacking: pd.DataFrame,
                    expression: pd.Series, covariates: pd.DataFrame, folds: pd.Series,
                    gene_id: str, *, n_inner_folds: int = 5, seed: int = 0,
                    grid: Mapping[str, Sequence] = XGB_GRID) -> EnformerModels:
    """Out-of-fold predictions of the Enformer models of one gene for every fold sample.

    A fold sample without Enformer features is an error naming it (the features must cover
    every sample with genotypes and expression). No features at all (``None``: the gene has no
    Enformer predictions) skips the Enformer models with a note; a gene whose expression the
    covariates explain entirely is not scored at all.
    """
    samples = folds.index.tolist()
    values = expression.loc[samples].to_numpy(np.float64)
    if explained_entirely(values, Residualiser.fit(covariates, samples).transform(values)):
        return _skipped(stacking, samples, gene_id,
                        "expression is constant after removing the covariates: the Enformer "
                        "models are skipped (predictions and metrics NaN)", scored=False)
    if features is None:
        return _skipped(stacking, samples, gene_id, NO_PREDICTIONS, scored=True)
    absent = [s for s in folds.index if s not in features.index]
    if absent:
        raise ValueError(f"{gene_id}: {len(absent)} fold sample(s) have no Enformer features, "
                         f"e.g. {', '.join(map(str, absent[:3]))}; re-materialise "
                         "enformer_predictions for this gene")
    fitted = [fit_enformer_fold(features, stacking, expression, covariates, folds, fold,
                                n_inner_folds=n_inner_folds, seed=seed, grid=grid)
              for fold in fold_ids(folds)]
    frames = [pd.DataFrame({FOLD: f.fold, "observed": f.observed}, index=f.predicted.index)
              .join(f.predicted) for f in fitted]
    predictions = pd.concat(frames).loc[folds.index]
    failed = {model: "; ".join(f"fold {f.fold}: {f.failed[model]}" for f in fitted
                               if model in f.failed)
              for model in ENFORMER_MODELS if any(model in f.failed for f in fitted)}
    predictions[list(failed)] = np.nan  # a model missing some folds has no pooled figures
    notes = tuple(f"{model} failed to fit ({error}): its predictions and metrics are NaN"
                  for model, error in failed.items())
    return EnformerModels(gene_id, fitted, predictions, notes, failed=failed)
