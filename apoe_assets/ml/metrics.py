"""Out-of-fold prediction metrics."""

from __future__ import annotations

import numpy as np


def r2_score(observed: np.ndarray, predicted: np.ndarray) -> float:
    """Coefficient of determination 1 − SS_res/SS_tot (negative when worse than the mean)."""
    observed = np.asarray(observed, dtype=np.float64)
    predicted = np.asarray(predicted, dtype=np.float64)
    total = float(((observed - observed.mean()) ** 2).sum())
    if total == 0.0:
        return float("nan")
    return 1.0 - float(((observed - predicted) ** 2).sum()) / total


def pearson_r(observed: np.ndarray, predicted: np.ndarray) -> float:
    """Pearson correlation; 0 when the prediction is constant (it carries no ranking)."""
    x = np.asarray(observed, dtype=np.float64) - np.mean(observed)
    y = np.asarray(predicted, dtype=np.float64) - np.mean(predicted)
    denominator = float(np.sqrt((x @ x) * (y @ y)))
    return float(x @ y) / denominator if denominator > 0 else 0.0


def r2_standard_error(r2: float, n: int) -> float:
    """Large-sample standard error of a squared correlation, √(4ρ²(1−ρ²)²/n) (delta method,
    bivariate normal)."""
    r2 = min(max(r2, 0.0), 1.0)
    return float(np.sqrt(4.0 * r2 * (1.0 - r2) ** 2 / n))


METRICS = ("mse", "r2", "pearson_r", "pearson_p", "spearman_rho")
"""What :func:`model_metrics` reports."""


def model_metrics(observed: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """MSE, R² (scikit-learn's ``r2_score``), Pearson r with its two-sided p-value and
    Spearman ρ of out-of-fold predictions; NaN throughout for no or NaN predictions (a skipped
    model), correlations NaN when either side is constant."""
    import scipy.stats  # heavy: imported on first use, so the code location loads fast
    import sklearn.metrics

    observed = np.asarray(observed, dtype=np.float64)
    predicted = np.asarray(predicted, dtype=np.float64)
    if len(observed) == 0 or not np.isfinite(predicted).all():
        return dict.fromkeys(METRICS, float("nan"))
    constant = np.ptp(predicted) == 0 or np.ptp(observed) == 0
    pearson = (np.nan, np.nan) if constant else scipy.stats.pearsonr(observed, predicted)
    spearman = np.nan if constant else scipy.stats.spearmanr(observed, predicted).statistic
    return {"mse": float(np.mean((observed - predicted) ** 2)),
            "r2": float(sklearn.metrics.r2_score(observed, predicted)),
            "pearson_r": float(pearson[0]), "pearson_p": float(pearson[1]),
            "spearman_rho": float(spearman)}
