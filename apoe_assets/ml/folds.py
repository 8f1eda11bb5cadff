"""Seeded cross-validation folds shared by every model, so no test sample informs a weight.

Outer folds split the samples that have both genotypes and expression; inner folds split the
training samples of one outer fold (for tuning: λ, the P+T threshold, score calibration).
Assignment is balanced (fold sizes differ by at most one) and depends only on the sample set
and the seed, not on the order the samples come in.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

FOLDS_VERSION = "1"
"""Code version of the ``cv_folds`` assignment: bump it when they change
for the same inputs."""

FOLD = "fold"
FOLDS = 5
"""Outer cross-validation folds, shared by every weight and model."""
INNER_FOLDS = 5
"""Inner folds within each training set (thresholds, λ, hyper-parameters, calibration)."""


class FoldError(ValueError):
    """Too few samples for the folds asked for, or a fold that does not exist."""


def shared_samples(genotype_samples: Sequence[str], expression_samples: Sequence[str]
                   ) -> list[str]:
    """Samples with both genotypes and expression, in genotype order."""
    have = set(expression_samples)
    return [s for s in genotype_samples if s in have]


def assign_folds(samples: Sequence[str], n_folds: int, seed: int) -> pd.Series:
    """Balanced, seeded K-fold assignment: a Series sample → fold (0 … K−1), in input order."""
    samples = list(samples)
    if len(set(samples)) != len(samples):
        raise FoldError("duplicate sample IDs in the fold assignment")
    if n_folds < 2:
        raise FoldError(f"cross-validation needs at least 2 folds, got {n_folds}")
    if len(samples) < n_folds:
        raise FoldError(f"{len(samples)} samples cannot fill {n_folds} folds (each fold needs "
                        "at least one sample)")
    ordered = sorted(samples)
    order = np.random.default_rng(seed).permutation(len(ordered))
    fold_of = {ordered[i]: rank % n_folds for rank, i in enumerate(order)}
    return pd.Series([fold_of[s] for s in samples], index=pd.Index(samples, name="sample"),
                     name=FOLD, dtype="int64")


def inner_folds(folds: pd.Series, outer: int, n_folds: int, seed: int) -> pd.Series:
    """Inner K-fold assignment of the training samples of outer fold ``outer``."""
    train, _ = split(folds, outer)
    inner_seed = int(np.random.SeedSequence([seed, outer + 1]).generate_state(1)[0])
    return assign_folds(train, n_folds, inner_seed)


def split(folds: pd.Series, fold: int) -> tuple[list[str], list[str]]:
    """(training samples, test samples) of one fold, each in the order of ``folds``."""
    if fold not in set(folds.tolist()):
        raise FoldError(f"fold {fold} is not in the assignment (folds "
                        f"{sorted(set(folds.tolist()))})")
    test = folds.to_numpy() == fold
    names = folds.index.to_numpy()
    return names[~test].tolist(), names[test].tolist()


def fold_ids(folds: pd.Series) -> list[int]:
    """The folds present, ascending."""
    return sorted(int(f) for f in set(folds.tolist()))
