"""Per-sample expression features from Enformer predictions at a gene's TSS.

The model window is centred on the TSS, so the TSS lies at the centre of the output bins;
the feature is the chosen tracks summed over the ``TSS_BINS`` bins around it (bins 447–449 of
896 for the full model, as Sasse et al. 2023 and Huang et al. 2023), and the two haplotypes of
a person are combined by a study setting (default: their mean).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

TSS_BINS = 3
"""Output bins summed around the TSS."""
HaplotypeCombination = Literal["mean", "sum", "max"]
COMBINATIONS: tuple[str, ...] = ("mean", "sum", "max")


def tss_bins(target_length: int, count: int = TSS_BINS) -> np.ndarray:
    """Indices of the ``count`` output bins centred on the window centre (447–449 of 896)."""
    if not 1 <= count <= target_length:
        raise ValueError(f"count must be within 1 … {target_length}, got {count}")
    first = target_length // 2 - count // 2
    return np.arange(first, first + count)


def haplotype_feature(predictions: np.ndarray) -> np.ndarray:
    """Sum over bins and tracks: ``[..., bins, tracks]`` → ``[...]`` (one value per sequence)."""
    predictions = np.asarray(predictions, dtype=np.float64)
    if predictions.ndim < 2:
        raise ValueError(f"predictions need bins and tracks axes, got shape {predictions.shape}")
    return predictions.sum(axis=(-2, -1))


def combine_haplotypes(values: np.ndarray, how: HaplotypeCombination = "mean") -> np.ndarray:
    """Combine ``[samples, 2]`` haplotype features into one value per sample."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or values.shape[1] != 2:
        raise ValueError(f"expected [samples, 2] haplotype values, got shape {values.shape}")
    if how == "mean":
        return values.mean(axis=1)
    if how == "sum":
        return values.sum(axis=1)
    if how == "max":
        return values.max(axis=1)
    raise ValueError(f"haplotype combination must be one of {COMBINATIONS}, got {how!r}")
