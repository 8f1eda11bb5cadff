"""Polygenic scores: PLINK's ``--score … sum``, centred scores, and pruning + thresholding on
clumped variants.

A score is Σ dosage × weight over the variants with a weight. A missing dosage counts as the
variant's mean dosage (PLINK: twice the allele frequency of the samples in the fileset; pass
``means`` to use other samples' means, e.g. the training samples'). The models use the centred
score, Σ (dosage − mean) × weight with the training means of the model that made the weights:
it averages 0 over those training samples whatever the weights, so scores of models fitted on
different samples (inner folds) share one origin. P+T keeps the index variants of an LD
clumping whose p-value is at most a threshold, each weighted by its slope.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

P_THRESHOLDS: tuple[float, ...] = (5e-8, 1e-5, 1e-3, 0.01, 0.05, 0.1, 0.2, 0.5, 1.0)
"""The default P+T grid of p-value thresholds."""


def score(dosages: np.ndarray, weights: np.ndarray, means: np.ndarray | None = None
          ) -> np.ndarray:
    """Σ dosage × weight per sample (``dosages`` ``[variants, samples]``, NaN missing).

    Missing dosages take ``means`` (default: each variant's mean over these samples, as PLINK's
    mean imputation); a variant with no calls and no given mean contributes nothing.
    """
    dosages = np.asarray(dosages, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    if dosages.shape[0] != len(weights):
        raise ValueError(f"{len(weights)} weights for {dosages.shape[0]} variants")
    missing = np.isnan(dosages)
    if means is None:
        called = (~missing).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            means = np.where(called > 0, np.nansum(dosages, axis=1) / called, 0.0)
    means = np.asarray(means, dtype=np.float64)
    totals = weights @ np.where(missing, 0.0, dosages)
    if missing.any():
        totals += (weights * means) @ missing
    return totals


def centred_score(dosages: np.ndarray, weights: np.ndarray, means: np.ndarray) -> np.ndarray:
    """Σ (dosage − mean) × weight per sample, a missing dosage counting as its mean (adding 0):
    :func:`score` with the same ``means``, less the constant Σ mean × weight."""
    offset = float(np.asarray(weights, dtype=np.float64) @ np.asarray(means, dtype=np.float64))
    return score(dosages, weights, means) - offset


def threshold_weights(slopes: np.ndarray, pvalues: np.ndarray, index: np.ndarray,
                      thresholds: Sequence[float]) -> np.ndarray:
    """P+T weights ``[thresholds, variants]``: the slope of each index variant (bool mask
    ``index``) whose p-value is ≤ the threshold, 0 elsewhere."""
    slopes = np.asarray(slopes, dtype=np.float64)
    pvalues = np.asarray(pvalues, dtype=np.float64)
    keep = index[None, :] & (pvalues[None, :] <= np.asarray(thresholds, dtype=np.float64)[:, None])
    return np.where(keep, slopes[None, :], 0.0)
