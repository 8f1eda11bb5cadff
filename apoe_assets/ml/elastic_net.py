"""PrediXcan-style elastic net on cis dosages: α (l1_ratio) 0.5, λ chosen by inner CV.

The pipeline imputes missing dosages with the training means and standardises (as glmnet
does) before the elastic net; the fitted model is then re-expressed on the raw dosage scale,
so its prediction is an intercept plus a :func:`~apoe_assets.stats.prs.score` with the
training means — the same arithmetic as the PRS models, and weights one can compare.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.impute import SimpleImputer
from sklearn.linear_model import ElasticNetCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from apoe_assets.stats.prs import score

L1_RATIO = 0.5
N_LAMBDAS = 50
"""λ values on glmnet's log grid (λ_max × 10⁻³ … λ_max)."""
MAX_ITER = 5000

Split = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class ElasticNetFit:
    """A fitted elastic net on the raw dosage scale."""

    intercept: float
    weights: np.ndarray
    means: np.ndarray
    alpha: float
    notes: tuple[str, ...] = ()

    @property
    def n_nonzero(self) -> int:
        return int(np.count_nonzero(self.weights))

    def predict(self, dosages: np.ndarray) -> np.ndarray:
        """Predictions for ``dosages`` ``[variants, samples]`` (NaN → training mean)."""
        if not len(self.weights):
            return np.full(dosages.shape[1], self.intercept)
        return self.intercept + score(dosages, self.weights, self.means)


def elastic_net_pipeline(splits: Sequence[Split], l1_ratio: float = L1_RATIO,
                         n_lambdas: int = N_LAMBDAS, seed: int = 0) -> Pipeline:
    """Mean imputation → standardisation → ``ElasticNetCV`` over the given inner splits."""
    return Pipeline([
        ("impute", SimpleImputer(strategy="mean", keep_empty_features=True)),
        ("scale", StandardScaler()),
        ("model", ElasticNetCV(l1_ratio=l1_ratio, alphas=n_lambdas, cv=list(splits),
                               max_iter=MAX_ITER, random_state=seed)),
    ])


def fit_elastic_net(dosages: np.ndarray, target: np.ndarray, splits: Sequence[Split], *,
                    l1_ratio: float = L1_RATIO, n_lambdas: int = N_LAMBDAS, seed: int = 0
                    ) -> ElasticNetFit:
    """Fit on training ``dosages`` ``[variants, samples]`` and ``target``; λ by the inner
    ``splits`` (index arrays into the training samples)."""
    target = np.asarray(target, dtype=np.float64)
    if dosages.shape[0] == 0:
        return ElasticNetFit(float(target.mean()), np.zeros(0), np.zeros(0), float("nan"),
                             ("no variants: the elastic net predicts the training mean",))
    pipeline = elastic_net_pipeline(splits, l1_ratio, n_lambdas, seed)
    notes: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        pipeline.fit(dosages.T, target)
    if any(issubclass(w.category, ConvergenceWarning) for w in caught):
        notes.append("elastic net: coordinate descent did not fully converge for some λ")
    imputer, scaler, model = (pipeline.named_steps[k] for k in ("impute", "scale", "model"))
    weights = model.coef_ / scaler.scale_
    means = imputer.statistics_.astype(np.float64)
    intercept = float(model.intercept_ - weights @ scaler.mean_)
    return ElasticNetFit(intercept, weights, means, float(model.alpha_), tuple(notes))
