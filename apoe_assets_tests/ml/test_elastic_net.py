"""The screened elastic net (sequential strong rules + KKT check) computes what coordinate
descent on every variant computes: scikit-learn's ``ElasticNet`` walked down the same λ grid on
each inner fold's nested targets gives the same inner curve, early stop and λ, and on the whole
training set the same weights; and the returned weights satisfy the elastic net's KKT
conditions for every variant, including one the strong rule discards wrongly."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import ElasticNet
from threadpoolctl import threadpool_limits

from apoe_assets.ml import elastic_net
from apoe_assets.ml.elastic_net import (
    L1_RATIO,
    LAMBDA_MIN_RATIO,
    MAX_ITER,
    N_LAMBDAS,
    PATIENCE,
    ElasticNetFit,
    fit_elastic_net,
    preprocessing,
)
from apoe_assets.ml.folds import assign_folds
from apoe_assets.ml.inner_cv import InnerSplit, inner_splits

N_SAMPLES = 200
N_VARIANTS = 400
N_COVARIATES = 3
N_INNER = 5
LD = 0.95
"""Correlation of neighbouring variants' latent haplotype values (AR(1) along the window)."""
MISSING = 0.01
N_CAUSAL = 8
EFFECT_SD = 0.3
SEEDS = (3, 11)
CURVE_RTOL = 1e-6
"""Both sides run the same coordinate descent on the same numbers: the curves agree to about
1e-15; a variant wrongly left out at one λ moves that λ's error by far more."""
WEIGHT_TOLERANCE = 1e-3
"""Weights relative to the largest, predictions relative to their spread: two runs stopped at
the same duality-gap tolerance agree to about this."""
KKT_TOLERANCE = 1e-3
"""Relative to l1_ratio·λ: the converged solutions here meet their KKT conditions to 3e-5."""

N_DRIVERS = 6
HUB_LOADING = 0.3
"""The hub variant's correlation with each driver: its correlation with the residual then
changes about 6 × 0.3 = 1.8 times as fast as λ, where the strong rule assumes at most once."""
STEP = 0.55
"""The two-point grid (λ_max, 0.55·λ_max): the strong rule keeps variants whose correlation at
λ_max is at least l1_ratio·(2·0.55 − 1)·λ_max, which the hub's (0) is not."""
SIGNAL_SCALE = 0.2
NOISE_SD = 0.1


def _names(n: int) -> list[str]:
    return [f"s{i:03d}" for i in range(n)]


def _splits(target: np.ndarray, covariates: np.ndarray, seed: int) -> list[InnerSplit]:
    """Inner folds with nested targets, as the gene models build them."""
    names = _names(len(target))
    return inner_splits(names, assign_folds(names, N_INNER, seed), pd.Series(target, index=names),
                        pd.DataFrame(covariates, columns=names))


def _adjusted(expression: np.ndarray, covariates: np.ndarray) -> np.ndarray:
    design = np.column_stack([np.ones(len(expression)), covariates.T])
    return expression - design @ np.linalg.lstsq(design, expression, rcond=None)[0]


def ld_gene(seed: int) -> tuple[np.ndarray, np.ndarray, list[InnerSplit]]:
    """Dosages ``[variants, samples]`` in LD blocks (two AR(1) haplotypes thresholded at each
    variant's allele frequency), 1% missing; expression from a few causal variants plus
    covariates and noise. Returns dosages, the covariate-adjusted target and the inner folds."""
    rng = np.random.default_rng(seed)

    def haplotype() -> np.ndarray:
        latent = np.empty((N_VARIANTS, N_SAMPLES))
        latent[0] = rng.normal(size=N_SAMPLES)
        for j in range(1, N_VARIANTS):
            latent[j] = LD * latent[j - 1] + np.sqrt(1 - LD**2) * rng.normal(size=N_SAMPLES)
        return latent

    cut = norm.ppf(1 - rng.uniform(0.05, 0.5, size=N_VARIANTS))[:, None]
    dosages = (haplotype() > cut).astype(float) + (haplotype() > cut).astype(float)
    causal = rng.choice(N_VARIANTS, N_CAUSAL, replace=False)
    covariates = rng.normal(size=(N_COVARIATES, N_SAMPLES))
    genetic = rng.normal(scale=EFFECT_SD, size=N_CAUSAL) @ dosages[causal]
    expression = (genetic + rng.normal(size=N_COVARIATES) @ covariates
                  + rng.normal(size=N_SAMPLES))
    dosages[rng.random(dosages.shape) < MISSING] = np.nan
    return dosages, _adjusted(expression, covariates), _splits(expression, covariates, seed)


def hub_gene(seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[InnerSplit]]:
    """A counterexample to the strong rule: :func:`ld_gene`'s dosages with their last
    variants replaced by six continuous (imputed-dosage-like) drivers of equal effect,
    orthogonal so they enter together at λ_max, and a hub correlated with every driver but, in
    the training set, exactly uncorrelated with the adjusted target. As the drivers' weights
    grow, the hub's correlation with the residual grows about 1.8 times as fast as λ falls, and
    at 0.55·λ_max the hub must enter though the strong rule discards it there."""
    dosages, _, _ = ld_gene(seed)
    rng = np.random.default_rng(seed + 1)
    centred = rng.normal(size=(N_SAMPLES, N_DRIVERS + 1))
    basis = np.linalg.qr(centred - centred.mean(axis=0))[0] * np.sqrt(N_SAMPLES)
    drivers, other = basis[:, :N_DRIVERS], basis[:, N_DRIVERS]  # orthogonal, unit variance
    other_loading = np.sqrt(1 - N_DRIVERS * HUB_LOADING**2)
    hub = HUB_LOADING * drivers.sum(axis=1) + other_loading * other
    signal = drivers.sum(axis=1) - N_DRIVERS * HUB_LOADING / other_loading * other  # ⟂ hub
    covariates = rng.normal(size=(N_COVARIATES, N_SAMPLES))
    expression = SIGNAL_SCALE * signal + rng.normal(scale=NOISE_SD, size=N_SAMPLES)
    q = np.linalg.qr(np.column_stack([np.ones(N_SAMPLES), covariates.T, hub]))[0]
    target = expression - q @ (q.T @ expression)  # adjusted for covariates, exactly ⟂ hub
    expression = target + rng.normal(size=N_COVARIATES) @ covariates
    dosages = np.vstack([dosages[:N_VARIANTS - N_DRIVERS - 1], drivers.T, hub[None, :]])
    return dosages, target, _splits(expression, covariates, seed)


def _standardised(dosages: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pipeline = preprocessing()
    x = pipeline.fit_transform(dosages.T)
    return x, pipeline.named_steps["scale"].scale_


def _reference_curve(x: np.ndarray, splits, lambdas: np.ndarray) -> np.ndarray:
    """The inner curve from scikit-learn's ``ElasticNet`` on every variant, warm-started down
    the grid per inner fold, with the same early stop."""
    models = [ElasticNet(l1_ratio=L1_RATIO, warm_start=True, max_iter=MAX_ITER)
              for _ in splits]
    curve = np.full(len(lambdas), np.nan)
    for k, lam in enumerate(lambdas):
        errors = []
        for model, s in zip(models, splits, strict=True):
            model.set_params(alpha=lam).fit(x[s.train], s.train_target)
            errors.append(np.mean((s.test_target - model.predict(x[s.test])) ** 2))
        curve[k] = np.mean(errors)
        if k - int(np.nanargmin(curve)) >= PATIENCE:
            break
    return curve


def _reference_fit(x: np.ndarray, target: np.ndarray, lambdas: np.ndarray) -> ElasticNet:
    """``ElasticNet`` on every variant of the whole training set, warm-started down to the
    last of ``lambdas``."""
    model = ElasticNet(l1_ratio=L1_RATIO, warm_start=True, max_iter=MAX_ITER)
    for lam in lambdas:
        model.set_params(alpha=lam).fit(x, target)
    return model


def _kkt_excess(fit: ElasticNetFit, dosages: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Each variant's violation of the elastic net's optimality conditions at the returned
    weights, relative to l1_ratio·λ: with ``c_j = x_jᵀr/n`` (standardised, centred ``x``,
    residual ``r``) and standardised weight ``w_j``, ``|c_j| ≤ l1_ratio·λ`` where ``w_j = 0``,
    and ``c_j − (1 − l1_ratio)·λ·w_j = l1_ratio·λ·sign(w_j)`` elsewhere."""
    x, scale = _standardised(dosages)
    x = x - x.mean(axis=0)
    w = fit.weights * scale
    residual = target - target.mean() - x @ w
    c = x.T @ residual / len(target)
    bound = fit.l1_ratio * fit.alpha
    excess = np.where(w == 0, np.abs(c) - bound,
                      np.abs(c - (1 - fit.l1_ratio) * fit.alpha * w - bound * np.sign(w)))
    return excess / bound


@pytest.fixture(scope="module", params=[*(f"ld-{s}" for s in SEEDS), "hub"])
def case(request) -> tuple[np.ndarray, np.ndarray, list[InnerSplit], dict]:
    if request.param == "hub":
        dosages, target, splits = hub_gene()
        grid = {"n_lambdas": 2, "lambda_min_ratio": STEP}
    else:
        dosages, target, splits = ld_gene(int(request.param.split("-")[1]))
        grid = {}
    return dosages, target, splits, grid


def test_same_curve_lambda_and_weights_as_elastic_net_on_every_variant(case) -> None:
    """The inner curve (to 1e-6), where it stops, the chosen λ and the final weights are those
    of scikit-learn's ``ElasticNet`` fitted on all variants, walked down glmnet's grid on each
    inner fold's nested targets. Catches a screened-out variant that belonged in the model
    (without the KKT re-check the hub case's inner curve moves by 3e-3 and its final weights
    by far more than solver tolerance), a wrong grid, centring or early stop."""
    dosages, target, splits, grid = case
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        net = fit_elastic_net(dosages, target, splits, **grid)
        x, scale = _standardised(dosages)
        top = np.abs(x.T @ (target - target.mean())).max() / (len(target) * L1_RATIO)
        np.testing.assert_allclose(
            net.lambdas, np.geomspace(top, top * grid.get("lambda_min_ratio", LAMBDA_MIN_RATIO),
                                      grid.get("n_lambdas", N_LAMBDAS)), rtol=1e-12)
        curve = _reference_curve(x, splits, net.lambdas)
        np.testing.assert_array_equal(np.isnan(net.cv_mse), np.isnan(curve))
        np.testing.assert_allclose(net.cv_mse, curve, rtol=CURVE_RTOL)
        best = int(np.nanargmin(curve))
        assert net.alpha == net.lambdas[best]
        reference = _reference_fit(x, target, net.lambdas[:best + 1])
    theirs = reference.coef_ / scale
    assert net.n_nonzero > 0
    np.testing.assert_allclose(net.weights, theirs, rtol=0,
                               atol=WEIGHT_TOLERANCE * np.abs(theirs).max())
    ours, expected = net.predict(dosages), reference.predict(x)
    assert np.abs(ours - expected).max() <= WEIGHT_TOLERANCE * expected.std()
    assert net.notes == ()


def test_kkt_conditions_hold_for_every_variant(case) -> None:
    """At the returned λ and weights every variant meets the elastic net's optimality
    conditions, the screened-out ones included. In the hub case the strong rule discards a
    variant that the full solution needs (both checked here, independently of the fit); catches
    a solver that trusts the screen without the KKT check (the hub's |x_jᵀr|/n is then 13%
    above l1_ratio·λ; a correct solve is within 1e-4)."""
    dosages, target, splits, grid = case
    net = fit_elastic_net(dosages, target, splits, **grid)
    if grid:  # the counterexample works as intended
        assert net.alpha == net.lambdas[1]
        x, _ = _standardised(dosages)
        at_max = np.abs((x - x.mean(axis=0)).T @ (target - target.mean())) / len(target)
        assert at_max[-1] < L1_RATIO * (2 * net.lambdas[1] - net.lambdas[0])  # discarded
        with threadpool_limits(1):
            assert _reference_fit(x, target, net.lambdas).coef_[-1] != 0  # yet needed
    excess = _kkt_excess(net, dosages, target)
    assert excess.max() <= KKT_TOLERANCE, (int(np.argmax(excess)), float(excess.max()))


def test_non_convergence_is_noted(monkeypatch) -> None:
    """Coordinate descent stopped by the iteration cap leaves a note instead of a warning:
    catches the convergence bookkeeping lost in the per-λ, per-fold solves."""
    dosages, target, splits = ld_gene(SEEDS[0])
    monkeypatch.setattr(elastic_net, "MAX_ITER", 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        net = fit_elastic_net(dosages, target, splits)
    assert net.notes == ("elastic net: coordinate descent did not fully converge for some λ",)
