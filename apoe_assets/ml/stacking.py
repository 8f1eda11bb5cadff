"""Multi-gene stacking: one gene's expression from every gene's features, every prediction out
of fold, with the samples behind each prediction recorded and checked.

API
---
``stack_gene(features, target, folds, *, covariates=None, fold_features=None, gene_id=None,
n_inner_folds=5, seed=0, models=BASE_MODELS, grids=GRIDS) -> StackResult``

- ``features``: samples × columns (e.g. ``APOE:feature``, ``APOC1:feature``, …), the same
  values in every outer fold;
- ``fold_features`` (optional): per-fold columns in the long layout of
  :meth:`~apoe_assets.ml.gene_models.GeneModels.stacking_scores` — ``fold``, ``sample``,
  ``role`` ("train"/"test") and one column per feature (e.g. ``APOE:pt_prs``), every other
  column a feature. For an outer fold, its "train" rows give the training samples' values
  (inner out-of-fold scores made inside that training set) and its "test" rows the test
  samples' values; all columns are then treated alike. A ``target``/``observed`` column is
  refused (drop it: it is not a feature);
- ``target``: sample → expression of the gene predicted. With ``covariates`` (covariates ×
  samples) it is adjusted for ``[1, covariates]`` per fit exactly as the genotype models do
  (outer: the training samples' fit, applied to the test samples, so ``observed`` equals
  their ``observed``; inner: each inner training set's own fit,
  :func:`~apoe_assets.ml.inner_cv.inner_splits`). Without, it is used as given;
- ``folds``: sample → outer fold (:func:`~apoe_assets.ml.folds.assign_folds`); inner folds are
  :func:`~apoe_assets.ml.folds.inner_folds` of each outer fold with ``seed``.

One outer fold alone: :func:`fold_inputs` then :func:`fit_stack_fold` (what ``stack_gene``
runs per fold; a caller may run folds in parallel and concatenate ``StackFold.predicted``).

Per outer fold, from its training samples only:

1. preprocessing ``QuantileTransformer(output_distribution="normal", n_quantiles=min(1000,
   n))`` then ``StandardScaler``, fitted on the samples of each fit (inner fits on their own
   inner training samples; one fit per sample set, shared by the models, which is what a
   ``Pipeline`` per model would compute);
2. each base model of :data:`BASE_MODELS` tuned on the inner folds (grid :data:`GRIDS`, the
   smallest mean inner MSE, ties to the first grid point), then refit on the whole training
   set: a fitted ``Pipeline`` (preprocessing + model) that predicts the test samples;
3. the meta-learner, XGBoost (:data:`META_PARAMS`, fixed, monotone non-decreasing in every
   base prediction), trained on the *inner out-of-fold* predictions of the chosen base models
   (each training sample predicted by the inner fit that held it out — what
   ``cross_val_predict`` with the inner splits returns, ``StackingRegressor`` semantics)
   against each sample's held-out target; it combines the refit base models' test
   predictions into ``stack``.

The inner fits that feed the meta-learner use the hyper-parameters chosen on the whole outer
training set (as ``cross_val_predict`` of the tuned estimator does); choosing them again
inside every inner training set would cost the grid five times more. This touches only how
well the meta-learner is fitted, never the outer predictions: no sample of an outer test fold
enters any fit, tuning or covariate adjustment of that fold (:func:`leaks` checks it).
Likewise ``fold_features`` are out of fold for the outer fold only: a training sample's score
came from the caller's inner model that held that sample out, but not necessarily the other
samples of this module's inner test fold (the genotype models make no inner-inner scores).

Result: :class:`StackResult` — ``predictions`` (sample × ``fold``, ``observed``, each base
model, ``stack``), :meth:`~StackResult.metrics` (per model: MSE, R² by
``sklearn.metrics.r2_score``, Pearson r and p, Spearman ρ, fold mean and SE of R²),
:meth:`~StackResult.fold_metrics`, :meth:`~StackResult.provenance_table`, ``folds`` (per outer
fold the fitted base pipelines, chosen hyper-parameters, inner MSE grid, the meta-learner with
its training rows, and :class:`FoldProvenance`), ``fitted`` (fold → model → fitted estimator,
for logging), ``notes``.

Leakage proof: every fit records the samples it was trained on, those whose inner scores
chose its hyper-parameters, the samples it predicted and the fits whose predictions were its
features. :func:`leaks` lists every prediction of a sample by a model whose training or tuning
set, at any level (base, inner, meta), contained it, and every meta-learner training row that
was not inner out of fold; :func:`check_no_leakage` raises :class:`LeakageError` on any.

Bad input: NaN in a feature column or the target is an error naming column and sample;
samples of the folds without features or target are named; too few samples for the folds is
a :class:`~apoe_assets.ml.folds.FoldError` with the counts; a constant target (after the
covariates) is skipped with a note and NaN metrics; a feature constant in a training set is
fitted as any other (it carries nothing there) and named in a note. Same inputs and seed →
bit-identical predictions (every estimator single-threaded and seeded from ``seed``, the fold
and the model only).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from apoe_assets.ml.folds import FOLD, FoldError, fold_ids, inner_folds, split
from apoe_assets.ml.inner_cv import InnerSplit, held_out_targets, inner_splits
from apoe_assets.ml.metrics import model_metrics
from apoe_assets.stats.residualise import adjust_for_covariates, explained_entirely

# scikit-learn and XGBoost are heavy: imported on first use (by the functions that build or fit
# models), so that loading the code location stays fast
if TYPE_CHECKING:
    from sklearn.base import BaseEstimator
    from sklearn.pipeline import Pipeline
    from xgboost import XGBRegressor

BASE_MODELS = ("ridge", "polynomial", "random_forest", "elastic_net", "xgboost")
STACKING_VERSION = "1"
"""Code version of ``multi_gene_stacking``: bump it when :func:`stack_gene`'s results change."""
STACK = "stack"
PREPROCESSING = "preprocessing"
SEED_NAMES = (*BASE_MODELS, STACK, PREPROCESSING)
"""What :func:`model_seed` derives a seed for (the position is part of the seed)."""
MAX_QUANTILES = 1000
"""``n_quantiles`` of the quantile normalisation is ``min(MAX_QUANTILES, samples in the fit)``."""
MIN_FIT_SAMPLES = 4
"""The fewest samples an inner training set may hold."""
GRIDS: Mapping[str, Mapping[str, Sequence]] = {
    "ridge": {"alpha": (1.0, 10.0, 100.0, 1000.0)},
    "polynomial": {"alpha": (10.0, 100.0, 1000.0, 10000.0)},
    "random_forest": {"min_samples_leaf": (5, 20)},
    "elastic_net": {"alpha": (0.01, 0.03, 0.1, 0.3)},
    "xgboost": {"max_depth": (1, 2)},
}
"""Hyper-parameter grid of each base model (every combination scored by inner CV). Features
are z-scored quantile-normal; the elastic net sees a z-scored target, so its α is relative."""
FIXED: Mapping[str, Mapping[str, object]] = {
    "random_forest": {"n_estimators": 50, "max_features": 0.5},
    "elastic_net": {"l1_ratio": 0.5},
    "xgboost": {"n_estimators": 50, "learning_rate": 0.1, "min_child_weight": 5},
}
"""Hyper-parameters of the base models that are not tuned."""
META_PARAMS: Mapping[str, object] = {"n_estimators": 100, "max_depth": 2, "learning_rate": 0.05,
                                     "min_child_weight": 10}
"""The meta-learner's hyper-parameters (fixed: tuning it by CV on inner out-of-fold rows would
score rows whose features were fitted on the rows it is scored against)."""
FEATURE_KEYS = (FOLD, "sample", "role")
"""Key columns of ``fold_features``; every other column is a feature."""
NOT_FEATURES = ("target", "observed")
"""Columns refused in ``fold_features``: targets are never features."""


class StackingInputError(ValueError):
    """Features, target or covariates that cannot be used: NaN, absent samples, clashes."""


class LeakageError(AssertionError):
    """A prediction came from a model whose training set, at some level, held its sample."""


# ---------------------------------------------------------------------------- metrics


# ---------------------------------------------------------------------------- models


def model_seed(seed: int, fold: int, model: str) -> int:
    """The seed of one model of one outer fold: from ``seed``, the fold and the model only
    (never the data), so the held-out fold's values cannot change a fit."""
    index = SEED_NAMES.index(model)
    return int(np.random.SeedSequence([seed, fold + 1, index + 1]).generate_state(1)[0]) % 2**31


def preprocessing(n_fit: int, seed: int) -> list[tuple[str, BaseEstimator]]:
    """Unfitted quantile normalisation (to a normal) then z-scoring, for a fit of ``n_fit``
    samples."""
    from sklearn.preprocessing import QuantileTransformer, StandardScaler

    return [("quantiles", QuantileTransformer(output_distribution="normal",
                                              n_quantiles=min(MAX_QUANTILES, n_fit),
                                              random_state=seed)),
            ("scale", StandardScaler())]


def model_steps(model: str, params: Mapping[str, object], seed: int
                ) -> list[tuple[str, BaseEstimator]]:
    """The unfitted steps of base ``model`` after the preprocessing, with ``params`` (one grid
    point) and :data:`FIXED`."""
    from sklearn.compose import TransformedTargetRegressor
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.linear_model import ElasticNet, Ridge
    from sklearn.preprocessing import PolynomialFeatures, StandardScaler
    from xgboost import XGBRegressor

    params = {**FIXED.get(model, {}), **params}
    if model == "ridge":
        return [("model", Ridge(**params))]
    if model == "polynomial":
        return [("poly", PolynomialFeatures(degree=2, include_bias=False)),
                ("poly_scale", StandardScaler()), ("model", Ridge(**params))]
    if model == "random_forest":
        return [("model", RandomForestRegressor(**params, random_state=seed, n_jobs=1))]
    if model == "elastic_net":
        return [("model", TransformedTargetRegressor(
            regressor=ElasticNet(**params, max_iter=10_000), transformer=StandardScaler()))]
    if model == "xgboost":
        return [("model", XGBRegressor(**params, random_state=seed, n_jobs=1,
                                       tree_method="hist"))]
    raise ValueError(f"unknown base model {model!r}; known: {', '.join(BASE_MODELS)}")


def meta_learner(n_models: int, seed: int) -> XGBRegressor:
    """The unfitted meta-learner over ``n_models`` base predictions."""
    from xgboost import XGBRegressor

    return XGBRegressor(**META_PARAMS, monotone_constraints=(1,) * n_models, random_state=seed,
                        n_jobs=1, tree_method="hist")


def _grid_points(grid: Mapping[str, Sequence]) -> list[dict]:
    names = list(grid)
    return [dict(zip(names, values, strict=True))
            for values in itertools.product(*(grid[n] for n in names))]


@dataclass(frozen=True)
class _Prepared:
    """One sample set's fitted preprocessing and its transformed fit and predicted rows."""

    steps: list[tuple[str, BaseEstimator]]
    fit: np.ndarray
    held: np.ndarray


def _prepare(x_fit: pd.DataFrame, x_held: pd.DataFrame, seed: int) -> _Prepared:
    steps = preprocessing(len(x_fit), seed)
    values = x_fit
    for _, step in steps:
        values = step.fit_transform(values)
    held = x_held
    for _, step in steps:
        held = step.transform(held)
    return _Prepared(steps, np.asarray(values, np.float64), np.asarray(held, np.float64))


# ---------------------------------------------------------------------------- provenance


@dataclass(frozen=True)
class Fit:
    """One fitted model and the samples behind it."""

    level: str
    """"base" (refit on the outer training set), "inner" (fitted on an inner training set;
    its predictions are meta-learner training rows) or "meta"."""
    model: str
    trained_on: frozenset[str]
    """The samples whose features and targets it was fitted on."""
    tuned_on: frozenset[str]
    """The samples whose inner-CV scores chose its hyper-parameters (empty: fixed)."""
    predicted: tuple[str, ...]
    """The samples it predicted."""
    inputs: tuple[str, ...] = ()
    """Keys of the fits whose predictions were its features (for the meta-learner: the inner
    fits for its training rows, the base fits for the samples it predicts)."""


@dataclass(frozen=True)
class FoldProvenance:
    """Every fit of one outer fold, keyed ``<model>/base``, ``<model>/inner <j>``,
    ``stack/meta``."""

    fold: int
    test: tuple[str, ...]
    fits: Mapping[str, Fit]

    @staticmethod
    def producer(model: str) -> str:
        """Key of the fit whose predictions are ``model``'s out-of-fold column."""
        return f"{STACK}/meta" if model == STACK else f"{model}/base"

    def ancestry(self, key: str) -> list[tuple[str, Fit]]:
        """The fit ``key`` and, recursively, every fit whose predictions were its features."""
        seen: dict[str, Fit] = {}
        pending = [key]
        while pending:
            k = pending.pop()
            if k in seen:
                continue
            seen[k] = self.fits[k]
            pending.extend(seen[k].inputs)
        return list(seen.items())

    def training_sets(self, model: str) -> dict[str, frozenset[str]]:
        """Readable summary: every training and tuning set behind ``model``'s predictions."""
        sets = {}
        for key, fit in self.ancestry(self.producer(model)):
            sets[f"{key} trained_on"] = fit.trained_on
            if fit.tuned_on:
                sets[f"{key} tuned_on"] = fit.tuned_on
        return sets


def fold_leaks(fold: StackFold) -> list[str]:
    """Every leak in one outer fold's records (empty when there is none):

    - a ``fold.predicted`` column not made, sample for sample, by its producing fit;
    - a predicted sample inside a training or tuning set of any fit in its ancestry;
    - a meta-learner training row that is not inner out of fold: for a base model among its
      features, predicted by an inner fit trained on it, or by no inner fit (or more than
      one) that the meta-learner records as an input.
    """
    prov, problems = fold.provenance, []
    rows = tuple(fold.predicted.index)
    for model in fold.predicted.columns:
        key = prov.producer(model)
        if key not in prov.fits:
            problems.append(f"fold {prov.fold}: no record of the fit behind {model}")
            continue
        if prov.fits[key].predicted != rows:
            problems.append(f"fold {prov.fold}: {model}'s predictions are not those of {key}")
        predicted = set(prov.fits[key].predicted)
        for ancestor, fit in prov.ancestry(key):
            for what, samples in (("trained on", fit.trained_on), ("tuned on", fit.tuned_on)):
                for s in sorted(predicted & samples):
                    problems.append(f"fold {prov.fold}: {model} prediction for {s} came from "
                                    f"{ancestor}, {what} a set that contains {s}")
    meta = prov.fits.get(prov.producer(STACK))
    if meta is not None:
        for model in fold.meta_train.columns:
            counts: dict[str, int] = {}
            for key, fit in prov.fits.items():
                if fit.level != "inner" or fit.model != model or key not in meta.inputs:
                    continue
                for s in sorted(set(fit.predicted) & fit.trained_on):
                    problems.append(f"fold {prov.fold}: meta-learner row {s} is in-sample: "
                                    f"{key} was trained on it")
                for s in fit.predicted:
                    counts[s] = counts.get(s, 0) + 1
            for s in sorted(meta.trained_on):
                if counts.get(s, 0) != 1:
                    problems.append(f"fold {prov.fold}: meta-learner row {s} has "
                                    f"{counts.get(s, 0)} inner predictions from {model} "
                                    "(want exactly 1)")
    return problems


def leaks(result: StackResult) -> list[str]:
    """:func:`fold_leaks` of every fold, plus any sample of ``result.predictions`` whose
    values are not its outer fold's recorded predictions."""
    problems = []
    for fold in result.folds:
        problems.extend(fold_leaks(fold))
        rows = result.predictions[result.predictions[FOLD] == fold.fold]
        recorded = fold.predicted
        if (sorted(rows.index) != sorted(recorded.index)
                or not rows.loc[recorded.index, recorded.columns].equals(recorded)):
            problems.append(f"fold {fold.fold}: the predictions table differs from the fold's "
                            "recorded predictions")
    return problems


def check_no_leakage(result: StackResult) -> None:
    """Raise :class:`LeakageError` listing every problem :func:`leaks` finds."""
    problems = leaks(result)
    if problems:
        shown = "\n  ".join(problems[:20])
        raise LeakageError(f"{len(problems)} leakage problem(s):\n  {shown}")


# ---------------------------------------------------------------------------- one fold


@dataclass(frozen=True)
class StackFold:
    """The models of one outer fold, fitted on its training samples only."""

    fold: int
    base: dict[str, Pipeline]
    """Per base model, preprocessing + model refit on the whole training set."""
    params: dict[str, dict]
    """Per base model, the hyper-parameters chosen by inner CV."""
    inner_mse: dict[str, dict[str, float]]
    """Per base model, every grid point's mean inner MSE (grid point as text)."""
    meta: XGBRegressor
    meta_train: pd.DataFrame
    """The meta-learner's training rows: training samples × base models, inner out of fold."""
    meta_target: np.ndarray
    """Each training sample's target from the inner fold that held it out."""
    predicted: pd.DataFrame
    """Test samples × base models and ``stack``."""
    provenance: FoldProvenance

    @property
    def train(self) -> list[str]:
        return self.meta_train.index.tolist()

    @property
    def test(self) -> list[str]:
        return self.predicted.index.tolist()


def _tune(model: str, grid: Mapping[str, Sequence], prepared: Sequence[_Prepared],
          splits: Sequence[InnerSplit], n_train: int, seed: int
          ) -> tuple[dict, dict[str, float], np.ndarray]:
    """The grid point with the smallest mean inner MSE (ties: the first), every point's mean
    inner MSE, and the chosen point's inner out-of-fold predictions (training order)."""
    from sklearn.pipeline import Pipeline

    best, best_mse, best_oof, scores = None, math.inf, None, {}
    for params in _grid_points(grid):
        errors, oof = [], np.full(n_train, np.nan)
        for prep, s in zip(prepared, splits, strict=True):
            fitted = Pipeline(model_steps(model, params, seed)).fit(prep.fit, s.train_target)
            predicted = np.asarray(fitted.predict(prep.held), dtype=np.float64)
            oof[s.test] = predicted
            errors.append(float(np.mean((s.test_target - predicted) ** 2)))
        scores[repr(params)] = float(np.mean(errors))
        if scores[repr(params)] < best_mse:
            best, best_mse, best_oof = params, scores[repr(params)], oof
    return dict(best), scores, best_oof


def fit_stack_fold(x_train: pd.DataFrame, y_train: np.ndarray, x_test: pd.DataFrame,
                   splits: Sequence[InnerSplit], *, fold: int, seed: int = 0,
                   models: Sequence[str] = BASE_MODELS,
                   grids: Mapping[str, Mapping[str, Sequence]] = GRIDS) -> StackFold:
    """Base models and meta-learner from the training rows ``x_train`` (index: sample IDs)
    and targets ``y_train``; predictions of ``x_test``.

    ``splits`` are the inner folds as positions into ``x_train`` with their targets (nested
    covariate fits, or ``y_train`` itself). Everything recorded in the provenance is read from
    the rows actually passed to each fit, so a caller who passes overlapping sets gets records
    that :func:`fold_leaks` flags.
    """
    from sklearn.pipeline import Pipeline

    names = np.asarray(x_train.index, dtype=object)
    train_set = frozenset(names.tolist())
    test = tuple(x_test.index)
    tuned_on = frozenset(names[np.concatenate([np.concatenate([s.train, s.test])
                                               for s in splits])].tolist())
    pre_seed = model_seed(seed, fold, PREPROCESSING)
    prepared = [_prepare(x_train.iloc[s.train], x_train.iloc[s.test], pre_seed) for s in splits]
    outer = _prepare(x_train, x_test, pre_seed)
    fits: dict[str, Fit] = {}
    base, params, inner_mse, oof, predicted = {}, {}, {}, {}, {}
    for model in models:
        model_rng = model_seed(seed, fold, model)
        params[model], inner_mse[model], oof[model] = _tune(
            model, grids[model], prepared, splits, len(names), model_rng)
        for j, s in enumerate(splits):
            fits[f"{model}/inner {j}"] = Fit("inner", model, frozenset(names[s.train].tolist()),
                                             tuned_on, tuple(names[s.test].tolist()))
        fitted = Pipeline(model_steps(model, params[model], model_rng)).fit(outer.fit, y_train)
        base[model] = Pipeline([*outer.steps, *fitted.steps])
        predicted[model] = np.asarray(base[model].predict(x_test), dtype=np.float64)
        fits[f"{model}/base"] = Fit("base", model, train_set, tuned_on, test)
    meta_train = pd.DataFrame(oof, index=pd.Index(names.tolist(), name="sample"))[list(models)]
    meta_target = held_out_targets(splits, len(names))
    meta = meta_learner(len(models), model_seed(seed, fold, STACK)).fit(meta_train, meta_target)
    base_test = pd.DataFrame(predicted, index=pd.Index(list(test), name="sample"))[list(models)]
    stacked = np.asarray(meta.predict(base_test), dtype=np.float64)
    fits[f"{STACK}/meta"] = Fit(
        "meta", STACK, frozenset(meta_train.index), frozenset(), test,
        tuple(k for k, f in fits.items() if f.level in ("inner", "base")))
    return StackFold(fold, base, params, inner_mse, meta, meta_train, meta_target,
                     base_test.assign(**{STACK: stacked}), FoldProvenance(fold, test, fits))


# ---------------------------------------------------------------------------- one gene


@dataclass(frozen=True)
class StackResult:
    """One target gene's stacking, every prediction out of fold."""

    gene_id: str
    models: tuple[str, ...]
    """The base models, in column order (``stack`` follows them)."""
    predictions: pd.DataFrame
    """Per sample (folds order): ``fold``, ``observed`` and one out-of-fold column per model."""
    folds: list[StackFold]
    notes: tuple[str, ...] = field(default_factory=tuple)
    scored: bool = True
    """False when the target is constant (after the covariates): nothing fitted, metrics NaN."""

    @property
    def columns(self) -> list[str]:
        return [*self.models, STACK]

    @property
    def fitted(self) -> dict[int, dict[str, object]]:
        """Per outer fold, model → fitted estimator (base pipelines, ``stack``: the
        meta-learner, which takes the base predictions as features named by model)."""
        return {f.fold: {**f.base, STACK: f.meta} for f in self.folds}

    @property
    def provenance(self) -> dict[int, FoldProvenance]:
        return {f.fold: f.provenance for f in self.folds}

    def provenance_table(self) -> pd.DataFrame:
        """Every fit of every fold, one row each (``fold``, ``fit``, ``level``, ``model``, and
        sorted sample lists ``trained_on``, ``tuned_on``, ``predicted``, with ``inputs``): the
        provenance in a form a table store (Parquet) keeps."""
        rows = [{FOLD: prov.fold, "fit": key, "level": fit.level, "model": fit.model,
                 "trained_on": sorted(fit.trained_on), "tuned_on": sorted(fit.tuned_on),
                 "predicted": list(fit.predicted), "inputs": list(fit.inputs)}
                for prov in self.provenance.values() for key, fit in prov.fits.items()]
        return pd.DataFrame(rows, columns=[FOLD, "fit", "level", "model", "trained_on",
                                           "tuned_on", "predicted", "inputs"])

    def metrics(self) -> pd.DataFrame:
        """Per model: pooled :func:`~apoe_assets.ml.metrics.model_metrics`, the fold mean and
        standard error of R², and ``n``."""
        per_fold = self.fold_metrics()
        rows = []
        for model in self.columns:
            pooled = model_metrics(self.predictions["observed"], self.predictions[model])
            r2 = per_fold.xs(model, level="model")["r2"].to_numpy()
            rows.append({"model": model, **pooled, "fold_r2_mean": float(np.mean(r2)),
                         "fold_r2_se": float(np.std(r2, ddof=1) / np.sqrt(len(r2)))
                         if len(r2) > 1 else math.nan,
                         "n": len(self.predictions)})
        return pd.DataFrame(rows).set_index("model")

    def fold_metrics(self) -> pd.DataFrame:
        """Per (fold, model): :func:`~apoe_assets.ml.metrics.model_metrics` of the fold's test
        samples, ``n``."""
        rows = []
        for fold, group in self.predictions.groupby(FOLD, sort=True):
            for model in self.columns:
                rows.append({FOLD: int(fold), "model": model,
                             **model_metrics(group["observed"], group[model]),
                             "n": len(group)})
        return pd.DataFrame(rows).set_index([FOLD, "model"])


def _require_samples(table: pd.DataFrame | pd.Series, samples: Sequence[str], what: str
                     ) -> None:
    absent = [s for s in samples if s not in table.index]
    if absent:
        raise StackingInputError(f"{len(absent)} fold sample(s) have no {what}, e.g. "
                                 f"{', '.join(map(str, absent[:3]))}")


def _require_finite(table: pd.DataFrame, what: str) -> None:
    """Raise naming the first column and sample (rows) of a NaN/inf cell."""
    values = table.to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise StackingInputError(
            f"{what} {table.columns[col]!s} is missing or non-finite for sample "
            f"{table.index[row]!s} ({int(bad.sum())} such cell(s)); impute or drop it first")


def _fold_feature_rows(fold_features: pd.DataFrame, fold: int, role: str,
                       samples: Sequence[str]) -> pd.DataFrame:
    rows = fold_features[(fold_features[FOLD] == fold) & (fold_features["role"] == role)]
    rows = rows.set_index("sample").drop(columns=[FOLD, "role"])
    absent = [s for s in samples if s not in rows.index]
    if absent:
        raise StackingInputError(f"fold_features: outer fold {fold} has no {role!r} row for "
                                 f"{len(absent)} sample(s), e.g. "
                                 f"{', '.join(map(str, absent[:3]))}")
    return rows.loc[list(samples)]


def _check_inputs(features: pd.DataFrame, target: pd.Series, folds: pd.Series,
                  covariates: pd.DataFrame | None, fold_features: pd.DataFrame | None,
                  n_inner_folds: int, models: Sequence[str],
                  grids: Mapping[str, Mapping[str, Sequence]]) -> None:
    samples = folds.index.tolist()
    if not models:
        raise ValueError("stacking needs at least one base model")
    unknown = [m for m in models if m not in BASE_MODELS or m not in grids]
    if unknown:
        raise ValueError(f"unknown base model(s) or no grid: {', '.join(unknown)}; known: "
                         f"{', '.join(BASE_MODELS)}")
    _require_samples(features, samples, "features")
    _require_samples(target, samples, "target")
    _require_finite(features.loc[samples], "feature column")
    _require_finite(target.loc[samples].to_frame(target.name or "target"), "target")
    if covariates is not None:
        _require_samples(covariates.T, samples, "covariates")
        _require_finite(covariates.loc[:, samples].T, "covariate")
    if fold_features is not None:
        missing = [c for c in FEATURE_KEYS if c not in fold_features.columns]
        refused = [c for c in NOT_FEATURES if c in fold_features.columns]
        if missing or refused:
            raise StackingInputError(
                f"fold_features needs columns {', '.join(FEATURE_KEYS)} (missing: "
                f"{', '.join(missing) or 'none'}) and must not hold "
                f"{', '.join(refused) or 'targets'} (drop it: targets are not features)")
        clash = sorted(set(features.columns) & set(fold_features.columns))
        if clash:
            raise StackingInputError(f"columns in both features and fold_features: "
                                     f"{', '.join(map(str, clash))}")
    k = 0 if covariates is None else covariates.shape[0]
    need = max(MIN_FIT_SAMPLES, k + 2)
    for fold in fold_ids(folds):
        train, test = split(folds, fold)
        if fold_features is not None:
            for role, what, rows in (("train", "training", train), ("test", "test", test)):
                _require_finite(_fold_feature_rows(fold_features, fold, role, rows),
                                f"fold {fold} {what} feature column")
        if len(train) < n_inner_folds:
            raise FoldError(f"{len(samples)} samples in {len(fold_ids(folds))} outer folds: "
                            f"outer fold {fold} leaves {len(train)} training samples, too few "
                            f"for {n_inner_folds} inner folds")
        smallest = len(train) - math.ceil(len(train) / n_inner_folds)
        if smallest < need:
            raise FoldError(f"{len(samples)} samples in {len(fold_ids(folds))} outer × "
                            f"{n_inner_folds} inner folds leave inner training sets of "
                            f"{smallest} samples; each needs at least {need}"
                            + (f" ({k} covariates + 2)" if need > MIN_FIT_SAMPLES else "")
                            + "; use fewer folds or more samples")


def _constant(target: pd.Series, covariates: pd.DataFrame | None) -> bool:
    values = target.to_numpy(np.float64)
    if covariates is None:
        return bool(np.ptp(values) == 0)
    design = covariates.loc[:, target.index].to_numpy(np.float64).T
    residuals, _ = adjust_for_covariates(values, design, values[:0], design[:0])
    return explained_entirely(values, residuals)


def _fold_targets(target: pd.Series, covariates: pd.DataFrame | None, train: list[str],
                  test: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(training targets, test observed): adjusted by the training samples' covariate fit."""
    y_train = target.loc[train].to_numpy(np.float64)
    y_test = target.loc[test].to_numpy(np.float64)
    if covariates is None:
        return y_train, y_test
    return adjust_for_covariates(y_train, covariates.loc[:, train].to_numpy(np.float64).T,
                                 y_test, covariates.loc[:, test].to_numpy(np.float64).T)


def fold_inputs(features: pd.DataFrame, target: pd.Series, folds: pd.Series, fold: int, *,
                covariates: pd.DataFrame | None = None,
                fold_features: pd.DataFrame | None = None, n_inner_folds: int = 5,
                seed: int = 0
                ) -> tuple[pd.DataFrame, np.ndarray, pd.DataFrame, np.ndarray,
                           list[InnerSplit]]:
    """What outer fold ``fold`` is fitted from: training features, training targets, test
    features, test observed values, and the inner splits (nested targets with covariates).
    Inputs as :func:`stack_gene` has checked them (NaN is not looked for here)."""
    train, test = split(folds, fold)
    x_train, x_test = features.loc[train], features.loc[test]
    if fold_features is not None:
        x_train = x_train.join(_fold_feature_rows(fold_features, fold, "train", train))
        x_test = x_test.join(_fold_feature_rows(fold_features, fold, "test", test))
    x_train = x_train.astype(np.float64).rename_axis("sample")
    x_test = x_test.astype(np.float64).rename_axis("sample")
    y_train, observed = _fold_targets(target, covariates, train, test)
    inner = inner_folds(folds, fold, n_inner_folds, seed)
    if covariates is not None:
        splits = inner_splits(train, inner, target, covariates)
    else:
        position = {s: i for i, s in enumerate(train)}
        splits = []
        for inner_fold in fold_ids(inner):
            held = inner.to_numpy() == inner_fold
            fit = np.array([position[s] for s in inner.index[~held]], dtype=np.int64)
            out = np.array([position[s] for s in inner.index[held]], dtype=np.int64)
            splits.append(InnerSplit(fit, out, y_train[fit], y_train[out]))
    return x_train, y_train, x_test, observed, splits


def stack_gene(features: pd.DataFrame, target: pd.Series, folds: pd.Series, *,
               covariates: pd.DataFrame | None = None,
               fold_features: pd.DataFrame | None = None, gene_id: str | None = None,
               n_inner_folds: int = 5, seed: int = 0, models: Sequence[str] = BASE_MODELS,
               grids: Mapping[str, Mapping[str, Sequence]] = GRIDS) -> StackResult:
    """Out-of-fold predictions of one gene's expression by every base model and the stack,
    for every sample of ``folds`` (see the module docstring for the arguments)."""
    gene_id = str(gene_id if gene_id is not None else target.name)
    models = tuple(models)
    _check_inputs(features, target, folds, covariates, fold_features, n_inner_folds, models,
                  grids)
    samples = folds.index.tolist()
    index = pd.Index(samples, name="sample")
    if _constant(target.loc[samples], covariates):
        observed = pd.Series(np.nan, index=index)
        for fold in fold_ids(folds):
            train, test = split(folds, fold)
            observed.loc[test] = _fold_targets(target, covariates, train, test)[1]
        predictions = pd.DataFrame({FOLD: folds.to_numpy(), "observed": observed.to_numpy()},
                                   index=index)
        predictions = predictions.assign(**dict.fromkeys([*models, STACK], np.nan))
        what = "constant" if covariates is None else "constant after removing the covariates"
        return StackResult(gene_id, models, predictions, [],
                           (f"{gene_id}: expression is {what}; stacking skipped, metrics NaN",),
                           scored=False)
    fitted, frames, notes = [], [], []
    for fold in fold_ids(folds):
        x_train, y_train, x_test, observed, splits = fold_inputs(
            features, target, folds, fold, covariates=covariates, fold_features=fold_features,
            n_inner_folds=n_inner_folds, seed=seed)
        constant = [str(c) for c in x_train.columns[x_train.nunique().to_numpy() == 1]]
        if constant:
            notes.append(f"fold {fold}: {len(constant)} feature(s) constant in the training "
                         f"samples (they carry nothing there): {', '.join(constant[:5])}"
                         + (" …" if len(constant) > 5 else ""))
        one = fit_stack_fold(x_train, y_train, x_test, splits, fold=fold, seed=seed,
                             models=models, grids=grids)
        fitted.append(one)
        frames.append(pd.DataFrame({FOLD: fold, "observed": observed}, index=x_test.index)
                      .join(one.predicted))
    predictions = pd.concat(frames).loc[samples]
    predictions.index.name = "sample"
    return StackResult(gene_id, models, predictions, fitted, tuple(notes))
