"""Demo covariates in GTEx's style: genotype PCs, hidden (inferred) factors and sex."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

PC_COUNT = 3
HIDDEN_FACTORS = ("InferredCov1", "InferredCov2")
SEX = "sex"
PC_MIN_MAF = 0.05
DECIMALS = 6
"""Covariates are rounded to what the file holds before they enter the expression model."""


def covariate_names() -> list[str]:
    """Row order of the covariates file, as GTEx orders them: PCs, inferred factors, sex."""
    return [*(f"PC{k}" for k in range(1, PC_COUNT + 1)), *HIDDEN_FACTORS, SEX]


def genotype_pcs(dosages: np.ndarray, count: int = PC_COUNT) -> np.ndarray:
    """Top ``count`` principal components ``[count, samples]`` of ALT dosages
    ``[variants, samples]`` (common variants, each standardised), scaled to unit variance.
    Each PC's sign puts its largest-magnitude sample score positive."""
    frequency = dosages.mean(axis=1) / 2
    common = (frequency >= PC_MIN_MAF) & (frequency <= 1 - PC_MIN_MAF)
    x = dosages[common]
    x = (x - x.mean(axis=1, keepdims=True)) / x.std(axis=1, keepdims=True)
    u, _, _ = np.linalg.svd(x.T, full_matrices=False)
    scores = u[:, :count].T
    scores = scores / scores.std(axis=1, keepdims=True)
    signs = np.sign(scores[np.arange(count), np.abs(scores).argmax(axis=1)])
    return scores * signs[:, None]


def simulate_covariates(dosages: np.ndarray, samples: Sequence[str], rng: np.random.Generator
                        ) -> pd.DataFrame:
    """Covariates × samples: PCs of ``dosages`` (``[variants, samples]``), standard-normal
    hidden factors, and sex (0/1, fair coin)."""
    n = len(samples)
    pcs = genotype_pcs(dosages)
    hidden = rng.standard_normal((len(HIDDEN_FACTORS), n))
    sex = rng.integers(0, 2, size=(1, n)).astype(np.float64)
    values = np.round(np.vstack([pcs, hidden, sex]), DECIMALS)
    return pd.DataFrame(values, index=covariate_names(), columns=list(samples))
