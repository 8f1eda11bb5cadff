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

Each λ is solved as glmnet solves it, with sequential strong rules and a KKT check (Tibshirani,
Bien, Friedman, Hastie, Simon, Taylor & Tibshirani 2012, "Strong rules for discarding predictors
in lasso-type problems", J. R. Stat. Soc. B 74:245–266): coordinate descent runs only on the
ever-active variants and those whose correlation with the residual at the previous λ is at
least ``l1_ratio·(2λ_k − λ_{k−1})`` (λ_{−1} = λ_0; at GTEx size a median of ~80 and at most
~650 of ~7,200 variants), warm-started; then every variant left out must satisfy the KKT
condition ``|x_jᵀr|/n ≤ l1_ratio·λ_k`` (no tolerance), and while some violate it they join and
that λ is solved again from the same warm start. So the answer is the full problem's to the
solver's tolerance, and since the variants left out are ones that full coordinate descent keeps
at 0, it takes the same steps on the rest: the inner curve and weights agree with solving
every λ on all variants to rounding (1e-15 at GTEx size). One matrix product per λ gives every
variant's correlation for all inner folds at once; only candidate columns are ever copied.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from threadpoolctl import threadpool_limits

from apoe_assets.ml.inner_cv import InnerSplit
from apoe_assets.stats.prs import score

# scikit-learn is heavy: imported on first use, so that loading the code location stays fast
if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

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
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

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


def _descend(x: np.ndarray, y: np.ndarray, lam: float, coef: np.ndarray, l1_ratio: float
             ) -> tuple[np.ndarray, bool]:
    """Weights of Fortran-ordered, centred ``x`` and centred ``y`` at ``lam`` by coordinate
    descent from ``coef`` (scikit-learn's ``enet_path``), and whether it converged."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import enet_path

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        _, coefs, _ = enet_path(x, y, l1_ratio=l1_ratio, alphas=np.array([lam]), coef_init=coef,
                                max_iter=MAX_ITER, tol=TOLERANCE, precompute=False,
                                check_input=False)
    for w in caught:
        if not issubclass(w.category, ConvergenceWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return coefs[:, 0], not any(issubclass(w.category, ConvergenceWarning) for w in caught)


@dataclass
class _Problem:
    """One elastic net on the samples ``rows`` of the standardised features, centred on those
    samples, walked down the λ grid from all-zero weights."""

    rows: np.ndarray
    mean: np.ndarray
    """Feature means over ``rows`` (the centring)."""
    y: np.ndarray
    """The target over ``rows``, centred."""
    coef: np.ndarray
    residual: np.ndarray
    """``y − x_c @ coef`` (``x_c``: the features of ``rows`` centred on ``mean``)."""
    correlation: np.ndarray
    """``x_cᵀ residual`` for every feature (not divided by n)."""
    ever_active: np.ndarray
    converged: bool = True
    """Whether coordinate descent converged at the last λ."""

    def columns(self, xt: np.ndarray, features: np.ndarray, rows: np.ndarray | None = None
                ) -> np.ndarray:
        """``x[rows, features]`` centred on ``mean``, Fortran order (``xt`` is ``xᵀ``, C order):
        a copy of those columns only."""
        rows = self.rows if rows is None else rows
        return (xt[np.ix_(features, rows)] - self.mean[features, None]).T

    def solve(self, xt: np.ndarray, keep: np.ndarray, start: np.ndarray, lam: float,
              l1_ratio: float) -> None:
        """Coordinate descent at ``lam`` on the features ``keep`` (mask) from ``start``; the
        others stay 0."""
        features = np.flatnonzero(keep)
        self.coef = np.zeros(len(start))
        self.residual, self.converged = self.y, True
        if len(features):
            x = self.columns(xt, features)
            self.coef[features], self.converged = _descend(x, self.y, lam, start[features],
                                                           l1_ratio)
            self.residual = self.y - x @ self.coef[features]


def _problems(xt: np.ndarray, rows: Sequence[np.ndarray], targets: Sequence[np.ndarray]
              ) -> list[_Problem]:
    """One problem per (``rows``, ``targets``) at weights 0; all means and correlations from
    one pass over ``xt``."""
    n_features, n_samples = xt.shape
    member = np.zeros((n_samples, len(rows)))
    for i, r in enumerate(rows):
        member[r, i] = 1.0
    means = (xt @ member) / member.sum(axis=0)
    problems = []
    for i, (r, target) in enumerate(zip(rows, targets, strict=True)):
        y = np.asarray(target, dtype=np.float64)
        y = y - float(y.mean())
        problems.append(_Problem(r, means[:, i], y, np.zeros(n_features), y,
                                 np.zeros(n_features), np.zeros(n_features, dtype=bool)))
    _correlate(xt, problems)
    return problems


def _correlate(xt: np.ndarray, problems: Sequence[_Problem]) -> None:
    """Every feature's ``x_cᵀ residual`` for each problem, in one pass over ``xt``
    (``x_cᵀr = x[rows]ᵀr − mean·Σr``)."""
    residuals = np.zeros((xt.shape[1], len(problems)))
    for i, p in enumerate(problems):
        residuals[p.rows, i] = p.residual
    products = xt @ residuals
    for i, p in enumerate(problems):
        p.correlation = products[:, i] - p.mean * residuals[:, i].sum()


def _step(xt: np.ndarray, problems: Sequence[_Problem], lam: float, lam_before: float,
          l1_ratio: float) -> None:
    """Move each problem from its solution at ``lam_before`` to its solution at ``lam``:
    coordinate descent on the ever-active features and those the sequential strong rule keeps,
    warm-started; then the KKT check on every feature, and while some zero weight violates it,
    the violators join and that problem is solved again from the same warm start."""
    starts = [p.coef for p in problems]
    keep = [p.ever_active | (np.abs(p.correlation)
                             >= l1_ratio * (2 * lam - lam_before) * len(p.rows))
            for p in problems]
    pending = list(range(len(problems)))
    while pending:
        for i in pending:
            problems[i].solve(xt, keep[i], starts[i], lam, l1_ratio)
        _correlate(xt, [problems[i] for i in pending])
        violated = []
        for i in pending:
            p = problems[i]
            # no tolerance: a left-out variant above the bound would also change the duality
            # gap (its max |x_jᵀr|) that decides when full coordinate descent stops
            violators = ~keep[i] & (np.abs(p.correlation) > lam * l1_ratio * len(p.rows))
            if violators.any():
                keep[i] = keep[i] | violators
                violated.append(i)
            else:
                p.ever_active = p.ever_active | (p.coef != 0)
        pending = violated


def inner_cv_curve(x: np.ndarray, splits: Sequence[InnerSplit], lambdas: np.ndarray,
                   l1_ratio: float, patience: int = PATIENCE) -> tuple[np.ndarray, bool]:
    """Mean inner mean squared error at each λ of ``lambdas`` (NaN past the early stop), each
    inner fold fitted and scored on its own nested targets; and whether every fit converged.
    ``x`` is the standardised features ``[samples, features]`` (Fortran order spares a copy)."""
    xt = np.ascontiguousarray(x.T)
    problems = _problems(xt, [s.train for s in splits], [s.train_target for s in splits])
    curve = np.full(len(lambdas), np.nan)
    converged = True
    for k in range(len(lambdas)):
        _step(xt, problems, lambdas[k], lambdas[max(k - 1, 0)], l1_ratio)
        errors = []
        for p, split in zip(problems, splits, strict=True):
            converged &= p.converged
            active = np.flatnonzero(p.coef)
            predicted = p.columns(xt, active, split.test) @ p.coef[active]
            y_test = split.test_target - float(split.train_target.mean())
            errors.append(float(np.mean((y_test - predicted) ** 2)))
        curve[k] = np.mean(errors)
        if k - int(np.nanargmin(curve)) >= patience:
            break
    return curve, converged


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
    with threadpool_limits(BLAS_THREADS):
        curve, converged = inner_cv_curve(x, splits, lambdas, l1_ratio, patience)
        best = int(np.nanargmin(curve))
        xt = np.ascontiguousarray(x.T)
        (final,) = _problems(xt, [np.arange(x.shape[0])], [target])
        for k in range(best + 1):
            _step(xt, [final], lambdas[k], lambdas[max(k - 1, 0)], l1_ratio)
            converged &= final.converged
    notes = () if converged else (
        "elastic net: coordinate descent did not fully converge for some λ",)
    weights = final.coef / scaler.scale_
    intercept = float(mean_only - final.coef @ final.mean - weights @ scaler.mean_)
    return ElasticNetFit(intercept, weights, means, float(lambdas[best]), l1_ratio, lambdas,
                         curve, notes)
