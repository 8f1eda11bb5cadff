"""PRS models fitted on one outer fold's training samples: baseline and P+T.

Both are scores of the fold's training eQTL slopes, centred on the dosage means of the samples
that fitted the slopes (inner-training means inside inner CV, outer-training means for the
outer model; a missing dosage takes that mean), so every inner model's scores share the origin
0 and pooling them adds no fold-to-fold offset. Because raw scores have no natural scale
(the baseline sums the marginal slopes of many correlated variants), each is calibrated,
prediction = a + b·score, with a and b fitted on *inner* out-of-fold scores of the training
samples against their nested inner targets (expression adjusted by the inner training samples'
covariate fit, :mod:`~apoe_assets.ml.inner_cv`); P+T's p-value threshold is chosen on the same
inner out-of-fold scores (largest squared correlation with those targets). Nothing here sees
the outer fold's test samples.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from apoe_assets.ml.inner_cv import InnerSplit
from apoe_assets.ml.metrics import pearson_r
from apoe_assets.stats.eqtl import CisWindow, EqtlResult
from apoe_assets.stats.ld import clump
from apoe_assets.stats.prs import centred_score, threshold_weights


@dataclass(frozen=True)
class Calibration:
    """prediction = intercept + slope × score (least squares on inner out-of-fold scores)."""

    intercept: float
    slope: float

    @classmethod
    def fit(cls, scores: np.ndarray, target: np.ndarray) -> Calibration:
        scores = np.asarray(scores, dtype=np.float64)
        target = np.asarray(target, dtype=np.float64)
        centred = scores - scores.mean()
        ss = float(centred @ centred)
        if ss <= 1e-24 * max(len(scores), 1):
            return cls(float(target.mean()), 0.0)
        slope = float(centred @ (target - target.mean())) / ss
        return cls(float(target.mean() - slope * scores.mean()), slope)

    def apply(self, scores: np.ndarray) -> np.ndarray:
        return self.intercept + self.slope * np.asarray(scores, dtype=np.float64)


@dataclass(frozen=True)
class PrsFit:
    """A calibrated score: weights over the fold's tested variants (window ``rows``)."""

    rows: np.ndarray
    variant_ids: np.ndarray
    weights: np.ndarray
    means: np.ndarray
    calibration: Calibration
    threshold: float | None = None
    n_index: int | None = None
    inner_r2: dict[float, float] = field(default_factory=dict)

    @property
    def n_variants(self) -> int:
        return int(np.count_nonzero(self.weights))

    @property
    def offset(self) -> float:
        """Σ weight × training mean: the uncentred score (PLINK's sum) less the centred one."""
        return float(self.weights @ self.means) if len(self.weights) else 0.0

    def raw_score(self, window: CisWindow, samples: Sequence[str]) -> np.ndarray:
        """The centred score, before calibration."""
        if not len(self.rows):
            return np.zeros(len(samples))
        return centred_score(dosage_block(window, self.rows, samples), self.weights,
                             self.means)

    def predict(self, window: CisWindow, samples: Sequence[str]) -> np.ndarray:
        return self.calibration.apply(self.raw_score(window, samples))


@dataclass(frozen=True)
class InnerScores:
    """Inner out-of-fold raw scores of the training samples (in training order)."""

    baseline: np.ndarray
    pt: np.ndarray
    """``[thresholds, training samples]``."""


def dosage_block(window: CisWindow, rows: np.ndarray, samples: Sequence[str]) -> np.ndarray:
    """Dosages ``[rows, samples]`` of the window, copied once (not all rows, then some)."""
    return window.dosages[np.ix_(np.asarray(rows, dtype=np.int64), window.columns(samples))]


def _means(dosages: np.ndarray) -> np.ndarray:
    called = ~np.isnan(dosages)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(called.any(axis=1), np.nansum(dosages, axis=1) / called.sum(axis=1), 0.0)


def _clump_index(codes: np.ndarray, window: CisWindow, eqtl: EqtlResult, *, r2: float,
                 kb: float, p1: float) -> np.ndarray:
    """Bool mask over ``eqtl``'s rows: index variants of a clumping on ``codes`` (its
    samples' genotype codes, all window rows)."""
    if not len(eqtl.rows):
        return np.zeros(0, dtype=bool)
    result = clump(codes[eqtl.rows], window.variants["pos"].to_numpy()[eqtl.rows],
                   eqtl.table["pval_nominal"].to_numpy(), p1=p1, r2=r2, kb=kb)
    mask = np.zeros(len(eqtl.rows), dtype=bool)
    mask[result.index] = True
    return mask


def inner_scores(window: CisWindow, codes: np.ndarray, train: Sequence[str],
                 splits: Sequence[InnerSplit], scan: Callable[[Sequence[str]], EqtlResult], *,
                 thresholds: Sequence[float], r2: float, kb: float, p1: float) -> InnerScores:
    """Baseline and P+T raw scores of every training sample from models fitted without it.

    ``codes`` are the window's genotype codes for the window's samples; ``scan`` maps samples
    to their eQTL result; ``splits`` are the inner folds of the training samples.
    """
    train = list(train)
    column = {s: i for i, s in enumerate(window.samples)}
    baseline = np.zeros(len(train))
    pt = np.zeros((len(thresholds), len(train)))
    for split in splits:
        inner_train = [train[i] for i in split.train]
        inner_test = [train[i] for i in split.test]
        eqtl = scan(inner_train)
        if not len(eqtl.rows):
            continue
        fit_dosages = dosage_block(window, eqtl.rows, inner_train)
        means = _means(fit_dosages)
        test_dosages = dosage_block(window, eqtl.rows, inner_test)
        centred = np.where(np.isnan(test_dosages), 0.0, test_dosages - means[:, None])
        slopes = eqtl.table["slope"].to_numpy()
        baseline[split.test] = slopes @ centred
        index = _clump_index(codes[:, [column[s] for s in inner_train]], window, eqtl,
                             r2=r2, kb=kb, p1=p1)
        weights = threshold_weights(slopes, eqtl.table["pval_nominal"].to_numpy(), index,
                                    thresholds)
        pt[:, split.test] = weights @ centred
    return InnerScores(baseline, pt)


def _training_mean(eqtl: EqtlResult) -> PrsFit:
    """No variant tested: no weights, no threshold, and the training mean of the covariate-
    adjusted target (0: residuals of a fit with an intercept) as prediction."""
    return PrsFit(eqtl.rows, eqtl.table["variant_id"].to_numpy(), np.zeros(0), np.zeros(0),
                  Calibration(0.0, 0.0), None, 0, {})


def fit_baseline(window: CisWindow, train: Sequence[str], eqtl: EqtlResult,
                 inner: InnerScores, target: np.ndarray) -> PrsFit:
    """Every tested cis variant weighted by its training slope, calibrated on inner scores
    against ``target``, the training samples' held-out inner targets
    (:func:`~apoe_assets.ml.inner_cv.held_out_targets`);
    with nothing tested, the training mean (inner scores may still exist: an inner training
    set can pass the MAF filter where the whole training set does not)."""
    if not len(eqtl.rows):
        return _training_mean(eqtl)
    means = _means(dosage_block(window, eqtl.rows, train))
    return PrsFit(eqtl.rows, eqtl.table["variant_id"].to_numpy(),
                  eqtl.table["slope"].to_numpy(), means,
                  Calibration.fit(inner.baseline, target))


def fit_pt(window: CisWindow, codes: np.ndarray, train: Sequence[str], eqtl: EqtlResult,
           inner: InnerScores, target: np.ndarray, *, thresholds: Sequence[float], r2: float,
           kb: float, p1: float) -> PrsFit:
    """Clumped training eQTLs at the threshold with the best inner out-of-fold r² against
    ``target`` (held-out inner targets; ties: the strictest threshold); with nothing tested,
    no threshold and the training mean."""
    if not len(eqtl.rows):
        return _training_mean(eqtl)
    inner_r2 = {float(t): pearson_r(target, inner.pt[k]) ** 2
                for k, t in enumerate(thresholds)}
    best = int(np.argmax([inner_r2[float(t)] for t in thresholds]))
    column = {s: i for i, s in enumerate(window.samples)}
    index = _clump_index(codes[:, [column[s] for s in train]], window, eqtl, r2=r2, kb=kb,
                         p1=p1)
    means = _means(dosage_block(window, eqtl.rows, train))
    weights = threshold_weights(eqtl.table["slope"].to_numpy(),
                                eqtl.table["pval_nominal"].to_numpy(), index,
                                [thresholds[best]])[0]
    return PrsFit(eqtl.rows, eqtl.table["variant_id"].to_numpy(), weights, means,
                  Calibration.fit(inner.pt[best], target), float(thresholds[best]),
                  int(index.sum()), inner_r2)
