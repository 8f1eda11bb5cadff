"""PrediXcan-style elastic net on cis dosages: α (l1_ratio) 0.5, λ chosen by inner CV.

Dosages are mean-imputed with the training means and standardised (as glmnet does) by a
scikit-learn ``Pipeline``; λ runs down glmnet's log grid (λ_max … λ_max × 0.01, its default when
variants outnumber samples), each inner fold's coordinate descent warm-started from the previous
λ (scikit-learn's ``enet_path``), and the λ with the smallest mean inner mean squared error is
chosen, as ``ElasticNetCV`` chooses it. Unlike ``ElasticNetCV``, each inner fold is fitted and
scored on its own nested targets (expression adjusted by the inner training samples' covariate
fit, :mod:`~apoe_assets.ml.inner_cv`; the imputation means, standardisation and λ grid come from
the outer training set, as ``ElasticNetCV`` takes them), and the inner folds walk the grid in
lockstep and stop once the mean inner error has not improved for :data:`PATIENCE` consecutive λ:
the small-λ end, where hundreds of correlated variants enter and coordinate descent needs
hundreds of sweeps, costs most and, with variants outnumbering samples, only overfits (glmnet
also truncates its path). The fitted model is re-expressed on the raw dosage scale, so its
prediction is an intercept plus a :func:`~apoe_assets.stats.prs.score` with the training means —
the same arithmetic as the PRS models, and weights one can compare.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.impute import SimpleImputer
from sklearn.linear_model import enet_path
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from apoe_assets.ml.inner_cv import InnerSplit
from apoe_assets.stats.prs import score

L1_RATIO = 0.5
N_LAMBDAS = 50
LAMBDA_MIN_RATIO = 0.01
"""Smallest λ of the grid relative to λ_max (glmnet's ``lambda.min.ratio`` for n < p)."""
PATIENCE = 10
"""Grid steps past the best mean inner error after which the path stops (a factor
0.01^(10/49) ≈ 2.6 in λ)."""
MAX_ITER = 5000
TOLERANCE = 1e-4
"""Coordinate-descent duality-gap tolerance (scikit-learn's default)."""
BLAS_THREADS = 1
"""Coordinate descent is a stream of short vector operations: BLAS threads only add
synchronisation (measured 3× slower with 2 threads on 2 busy cores)."""

@dataclass(frozen=True)
class ElasticNetFit:
    """A fitted elastic net on the raw dosage scale, with the inner-CV curve behind its λ."""

    intercept: float
    weights: np.ndarray
    means: np.ndarray
    alpha: float
    """The chosen λ (NaN when there was nothing to fit)."""
    l1_ratio: float = L1_RATIO
    lambdas: np.ndarray = field(default_factory=lambda: np.zeros(0))
    """The λ grid, largest first."""
    cv_mse: np.ndarray = field(default_factory=lambda: np.zeros(0))
    """Mean inner-fold mean squared error per grid λ (NaN past the early stop)."""
    notes: tuple[str, ...] = ()

    @property
    def n_nonzero(self) -> int:
        return int(np.count_nonzero(self.weights))

    def predict(self, dosages: np.ndarray) -> np.ndarray:
        """Predictions for ``dosages`` ``[variants, samples]`` (NaN → training mean)."""
        if not len(self.weights):
            return np.full(dosages.shape[1], self.intercept)
        return self.intercept + score(dosages, self.weights, self.means)


def preprocessing() -> Pipeline:
    """Mean imputation → standardisation (features in columns)."""
    return Pipeline([("impute", SimpleImputer(strategy="mean", keep_empty_features=True)),
                     ("scale", StandardScaler())])


def lambda_grid(x: np.ndarray, y: np.ndarray, l1_ratio: float, n_lambdas: int,
                min_ratio: float) -> np.ndarray:
    """glmnet's (and ``ElasticNetCV``'s) grid: from the smallest λ that keeps every weight at 0,
    ``max|xᵀ(y − ȳ)| / (n·l1_ratio)`` for centred ``x``, down by ``min_ratio`` on a log scale."""
    top = float(np.abs(x.T @ (y - y.mean())).max(initial=0.0)) / (len(y) * l1_ratio)
    if top <= np.finfo(np.float64).resolution:
        return np.zeros(0)
    return np.geomspace(top, top * min_ratio, n_lambdas)


def _descend(x: np.ndarray, y: np.ndarray, lambdas: np.ndarray, coef: np.ndarray,
             l1_ratio: float) -> np.ndarray:
    """Weights ``[features, len(lambdas)]`` of centred ``x``, ``y`` from warm-started
    coordinate descent along ``lambdas``."""
    _, coefs, _ = enet_path(x, y, l1_ratio=l1_ratio, alphas=lambdas, coef_init=coef,
                            max_iter=MAX_ITER, tol=TOLERANCE, precompute=False,
                            check_input=False)
    return coefs


def _centred(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = x.mean(axis=0)
    return np.asfortranarray(x - mean), mean


def inner_cv_curve(x: np.ndarray, splits: Sequence[InnerSplit], lambdas: np.ndarray,
                   l1_ratio: float, patience: int = PATIENCE) -> np.ndarray:
    """Mean inner mean squared error at each λ of ``lambdas`` (NaN past the early stop), each
    inner fold fitted and scored on its own nested targets."""
    folds = []
    for split in splits:
        x_train, x_mean = _centred(x[split.train])
        y_mean = float(split.train_target.mean())
        folds.append((x_train, split.train_target - y_mean, x[split.test] - x_mean,
                      split.test_target - y_mean, np.zeros(x.shape[1])))
    curve = np.full(len(lambdas), np.nan)
    for k in range(len(lambdas)):
        errors = []
        for i, (x_train, y_train, x_test, y_test, coef) in enumerate(folds):
            coef = _descend(x_train, y_train, lambdas[k:k + 1], coef, l1_ratio)[:, 0]
            folds[i] = (x_train, y_train, x_test, y_test, coef)
            errors.append(float(np.mean((y_test - x_test @ coef) ** 2)))
        curve[k] = np.mean(errors)
        if k - int(np.nanargmin(curve)) >= patience:
            break
    return curve


def fit_elastic_net(dosages: np.ndarray, target: np.ndarray, splits: Sequence[InnerSplit], *,
                    l1_ratio: float = L1_RATIO, n_lambdas: int = N_LAMBDAS,
                    lambda_min_ratio: float = LAMBDA_MIN_RATIO, patience: int = PATIENCE
                    ) -> ElasticNetFit:
    """Fit on training ``dosages`` ``[variants, samples]`` and ``target``; λ by the inner
    ``splits`` (index arrays into the training samples, with their nested targets)."""
    target = np.asarray(target, dtype=np.float64)
    mean_only = float(target.mean())
    if dosages.shape[0] == 0:
        return ElasticNetFit(mean_only, np.zeros(0), np.zeros(0), float("nan"), l1_ratio,
                             notes=("no variants: the elastic net predicts the training mean",))
    pipeline = preprocessing()
    x = pipeline.fit_transform(np.asarray(dosages, dtype=np.float64).T)
    imputer, scaler = pipeline.named_steps["impute"], pipeline.named_steps["scale"]
    means = imputer.statistics_.astype(np.float64)
    lambdas = lambda_grid(x, target, l1_ratio, n_lambdas, lambda_min_ratio)
    if not len(lambdas):
        return ElasticNetFit(mean_only, np.zeros(len(means)), means, float("nan"), l1_ratio,
                             notes=("the target is constant or uncorrelated with every "
                                    "variant: the elastic net predicts the training mean",))
    notes: list[str] = []
    with warnings.catch_warnings(record=True) as caught, threadpool_limits(BLAS_THREADS):
        warnings.simplefilter("always", ConvergenceWarning)
        curve = inner_cv_curve(x, splits, lambdas, l1_ratio, patience)
        best = int(np.nanargmin(curve))
        x_all, x_mean = _centred(x)
        coef = _descend(x_all, target - mean_only, lambdas[:best + 1], np.zeros(x.shape[1]),
                        l1_ratio)[:, -1]
    if any(issubclass(w.category, ConvergenceWarning) for w in caught):
        notes.append("elastic net: coordinate descent did not fully converge for some λ")
    weights = coef / scaler.scale_
    intercept = float(mean_only - coef @ x_mean - weights @ scaler.mean_)
    return ElasticNetFit(intercept, weights, means, float(lambdas[best]), l1_ratio, lambdas,
                         curve, tuple(notes))
