"""Inner cross-validation of one outer training set, nested all the way down.

Each inner fold is a small outer fold: its targets are expression adjusted for ``[1,
covariates]`` by a least-squares fit on the inner *training* samples only (the inner test
samples' targets are their expression less that fit's prediction), exactly as the outer fold
adjusts its own. So nothing an inner test sample holds — expression or covariates — enters the
model that is scored on it, and the inner out-of-fold errors estimate what the outer test fold
will see.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from apoe_assets.ml.folds import fold_ids
from apoe_assets.stats.residualise import adjust_for_covariates


@dataclass(frozen=True)
class InnerSplit:
    """One inner fold: index arrays into the outer training samples, and the targets adjusted
    with the covariate fit of the inner training samples."""

    train: np.ndarray
    test: np.ndarray
    train_target: np.ndarray
    test_target: np.ndarray


def inner_splits(train: Sequence[str], inner: pd.Series, expression: pd.Series,
                 covariates: pd.DataFrame) -> list[InnerSplit]:
    """The inner folds of ``inner`` (training sample → inner fold) over ``train``, with
    nested targets from ``expression`` (sample → value) and ``covariates`` (covariates ×
    samples)."""
    position = {s: i for i, s in enumerate(train)}
    values = expression.loc[list(train)].to_numpy(np.float64)
    design = covariates.loc[:, list(train)].to_numpy(np.float64).T
    splits = []
    for inner_fold in fold_ids(inner):
        is_test = inner.to_numpy() == inner_fold
        fit = np.array([position[s] for s in inner.index[~is_test]], dtype=np.int64)
        held = np.array([position[s] for s in inner.index[is_test]], dtype=np.int64)
        fit_target, held_target = adjust_for_covariates(values[fit], design[fit],
                                                        values[held], design[held])
        splits.append(InnerSplit(fit, held, fit_target, held_target))
    return splits


def held_out_targets(splits: Sequence[InnerSplit], n_train: int) -> np.ndarray:
    """Each training sample's target from the inner fold that holds it out (training order):
    what inner out-of-fold scores are calibrated and compared against."""
    targets = np.full(n_train, np.nan)
    for s in splits:
        targets[s.test] = s.test_target
    return targets
