"""One outer fold's single-gene models as standalone estimators, for MLflow to log and serve.

Each model of ``gene_models`` is fitted once per outer fold; the estimator exported here is
the fit of one fold (:func:`export_fold`, the first), trained on the other folds' samples, with
the inputs of that fold's held-out samples. Its predictions for them are therefore out of
sample and equal the stored out-of-fold predictions (:func:`check_exported`), which is what
makes a logged model checkable.

- Genotype models (``baseline_prs``, ``pt_prs``, ``elastic_net``): a scikit-learn
  ``LinearRegression`` holding ``intercept + scale × Σ weight × dosage`` from ``prs_weights``;
  its inputs are ALT dosages (0–2) named by variant ID, a missing call given as the training
  mean dosage (``mean_dosage`` in ``prs_weights``). A model with no non-zero weight predicts a
  constant and exports nothing.
- ``enformer_linear``: ``LinearRegression`` on the Enformer ``feature`` (haplotype mean).
- ``enformer_xgboost``: the fold's ``XGBRegressor`` on :func:`boosting_features` columns.
- ``combined``: ``LinearRegression`` on ``feature``, ``baseline_prs``, ``pt_prs``; a new
  person's genotype scores are those of the same fold's genotype models.
- Multi-gene stacking (:func:`stacking_exports`): each base model as its fitted scikit-learn
  ``Pipeline`` (quantile normalisation, z-scoring, model) on every gene's features; ``stack``
  as the XGBoost meta-learner on the base models' predictions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from apoe_assets.ml.enformer_models import EnformerModels
from apoe_assets.ml.folds import FOLD, fold_ids
from apoe_assets.ml.gene_models import SCORES
from apoe_assets.ml.stacking import STACK, StackResult
from apoe_assets.stats.eqtl import CisWindow

# scikit-learn is heavy: imported on first use, so that loading the code location stays fast
if TYPE_CHECKING:
    from sklearn.linear_model import LinearRegression

EXPORT_TOLERANCE = 1e-6
"""Largest |exported − stored| prediction, relative to the observed spread, that
:func:`check_exported` accepts (float64 sums in another order; XGBoost predicts in float32)."""


@dataclass(frozen=True)
class ExportedModel:
    """A fitted estimator of one outer fold and the inputs of that fold's test samples."""

    model: str
    fold: int
    estimator: object
    inputs: pd.DataFrame
    """Test samples × the estimator's input columns."""

    def predict(self) -> np.ndarray:
        return np.asarray(self.estimator.predict(self.inputs), dtype=np.float64)


def export_fold(folds: pd.Series) -> int:
    """The outer fold whose fits are exported: the first."""
    return fold_ids(folds)[0]


def linear_estimator(intercept: float, coefficients: Sequence[float], names: Sequence[str]
                     ) -> LinearRegression:
    """A fitted ``LinearRegression`` that predicts ``intercept + x @ coefficients`` from the
    columns ``names`` (the fit itself was made elsewhere)."""
    from sklearn.linear_model import LinearRegression

    estimator = LinearRegression()
    estimator.coef_ = np.asarray(coefficients, dtype=np.float64)
    estimator.intercept_ = float(intercept)
    estimator.n_features_in_ = len(names)
    estimator.feature_names_in_ = np.asarray(names, dtype=object)
    return estimator


def genotype_export(weights: pd.DataFrame, window: CisWindow, model: str, fold: int,
                    test: Sequence[str]) -> ExportedModel | None:
    """``model``'s fit of ``fold`` from its ``prs_weights`` rows, with the test samples'
    dosages (a missing call as the training mean); None when it has no non-zero weight."""
    rows = weights[(weights[FOLD] == fold) & (weights["model"] == model)]
    if rows.empty:
        raise ValueError(f"prs_weights holds no row for {model} in fold {fold}")
    rows = rows[rows["weight"] != 0]
    if rows.empty:
        return None
    ids = rows["variant_id"].astype(str).tolist()
    position = {v: i for i, v in enumerate(window.variants["variant_id"].astype(str))}
    absent = [v for v in ids if v not in position]
    if absent:
        raise ValueError(f"{model} fold {fold}: {len(absent)} weighted variant(s) are not in "
                         f"the genotypes' cis window, e.g. {absent[0]}; re-materialise "
                         "prs_scores for this gene")
    dosages = window.dosages[np.ix_([position[v] for v in ids], window.columns(test))]
    means = rows["mean_dosage"].to_numpy(np.float64)[:, None]
    inputs = pd.DataFrame(np.where(np.isnan(dosages), means, dosages).T, columns=ids,
                          index=pd.Index(list(test), name="sample"))
    scale = float(rows["scale"].iloc[0])
    estimator = linear_estimator(float(rows["intercept"].iloc[0]),
                                 scale * rows["weight"].to_numpy(np.float64), ids)
    return ExportedModel(model, fold, estimator, inputs)


def enformer_exports(result: EnformerModels, features: pd.DataFrame | None,
                     stacking: pd.DataFrame, fold: int) -> list[ExportedModel]:
    """The Enformer models of ``fold`` (none when they were skipped; a model whose fit
    failed in any fold is left out)."""
    fitted = {f.fold: f for f in result.folds}
    if fold not in fitted or features is None:
        return []
    f = fitted[fold]
    test = pd.Index(f.test, name="sample")
    rows = stacking[(stacking[FOLD] == fold) & (stacking["role"] == "test")].set_index(
        "sample").loc[test]
    feature = features.loc[test, ["mean"]].set_axis(["feature"], axis=1)
    combined = feature.join(rows[list(SCORES)])
    exports = []
    if f.linear is not None:
        exports.append(ExportedModel("enformer_linear", fold, linear_estimator(
            f.linear[0], f.linear[1:], ["feature"]), feature))
    if f.boosting is not None:
        exports.append(ExportedModel("enformer_xgboost", fold, f.boosting, features.loc[test]))
    if f.combined is not None:
        exports.append(ExportedModel("combined", fold, linear_estimator(
            f.combined[0], f.combined[1:], list(combined.columns)), combined))
    return [e for e in exports if e.model not in result.failed]


def check_exported(exported: ExportedModel, stored: pd.DataFrame) -> None:
    """Raise unless the exported estimator reproduces the stored out-of-fold predictions of
    its fold's test samples (``stored``: the ``gene_models`` table)."""
    expected = stored.loc[exported.inputs.index, exported.model].to_numpy(np.float64)
    spread = float(np.std(stored["observed"])) or 1.0
    worst = float(np.max(np.abs(exported.predict() - expected), initial=0.0)) / spread
    if not worst <= EXPORT_TOLERANCE:
        raise AssertionError(f"{exported.model} fold {exported.fold}: the exported estimator "
                             f"predicts up to {worst:.3g} (× observed SD) away from the stored "
                             "out-of-fold predictions")


def stacking_exports(result: StackResult, x_test: pd.DataFrame, fold: int,
                     names: Callable[[str], str] = str) -> dict[str, ExportedModel]:
    """One gene's multi-gene stacking models of ``fold``: each base pipeline (preprocessing
    and model) on ``x_test``, the fold's test features (:func:`~apoe_assets.ml.stacking.
    fold_inputs`), and the meta-learner on the base models' predictions for them (columns
    named by base model). ``names`` maps a column to the model's logged name."""
    fitted = {f.fold: f for f in result.folds}
    if fold not in fitted:
        return {}
    f = fitted[fold]
    base = pd.DataFrame({m: np.asarray(f.base[m].predict(x_test), dtype=np.float64)
                         for m in result.models}, index=x_test.index)
    exports = {names(m): ExportedModel(names(m), fold, f.base[m], x_test)
               for m in result.models}
    exports[names(STACK)] = ExportedModel(names(STACK), fold, f.meta, base)
    return exports
