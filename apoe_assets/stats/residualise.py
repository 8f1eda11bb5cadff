"""Covariates (plus an intercept) regressed out once, as tensorQTL's ``Residualizer`` does.

Rows of a matrix (expression or genotype dosages, samples in columns) are centred and projected
off an orthonormal basis of the centred covariates; the residual degrees of freedom of a
single-SNP test are ``n − 2 − k`` (intercept, SNP, ``k`` covariates). Covariates that are a
linear combination of the intercept and earlier covariates are dropped with a note: keeping
them would leave the fit unchanged but make ``k`` (and so the degrees of freedom) wrong.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

COLLINEAR_TOLERANCE = 1e-8
"""A covariate whose centred values keep less than this fraction of their norm after projecting
off the intercept and the covariates before it is collinear with them."""


CONSTANT_TOLERANCE = 1e-12
"""Expression whose residual sum of squares is at most this fraction of its centred sum of
squares is constant after removing the covariates (what is left is rounding)."""


def explained_entirely(values: np.ndarray, residuals: np.ndarray) -> bool:
    """Whether ``[1, covariates]`` leave nothing of ``values`` but rounding (``residuals`` are
    its residuals): constant expression, or a linear combination of the covariates."""
    centred = np.asarray(values, dtype=np.float64) - np.mean(values)
    residuals = np.asarray(residuals, dtype=np.float64)
    return float(residuals @ residuals) <= CONSTANT_TOLERANCE * float(centred @ centred)


class CovariateError(ValueError):
    """Covariates or phenotypes that cannot be used: NaN, too few samples, unknown samples."""


def require_finite(values: pd.DataFrame | pd.Series, what: str) -> None:
    """Raise naming the first NaN/inf cell of a (rows × samples) table or a sample Series."""
    table = values.to_frame().T if isinstance(values, pd.Series) else values
    bad = ~np.isfinite(table.to_numpy(dtype=float))
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise CovariateError(f"{what} {table.index[row]!s} has a missing or non-finite value "
                             f"for sample {table.columns[col]!s} ({int(bad.sum())} such cells); "
                             "impute or drop it first")


@dataclass(frozen=True)
class Residualiser:
    """Projects rows onto the orthogonal complement of ``[1, covariates]``."""

    basis: np.ndarray
    """Orthonormal basis ``[samples, kept covariates]`` of the centred covariates."""
    kept: tuple[str, ...]
    dropped: tuple[str, ...]

    @property
    def n_samples(self) -> int:
        return self.basis.shape[0]

    @property
    def dof(self) -> int:
        """Residual degrees of freedom of one SNP's regression: n − 2 − kept covariates."""
        return self.n_samples - 2 - len(self.kept)

    @property
    def notes(self) -> list[str]:
        if not self.dropped:
            return []
        return [f"covariate(s) {', '.join(self.dropped)} are linear combinations of the "
                "intercept and other covariates: dropped"]

    def transform(self, rows: np.ndarray) -> np.ndarray:
        """Residuals of each row (``[m, samples]`` or ``[samples]``), as float64."""
        rows = np.asarray(rows, dtype=np.float64)
        centred = rows - rows.mean(axis=-1, keepdims=True)
        if self.basis.shape[1] == 0:
            return centred
        return centred - (centred @ self.basis) @ self.basis.T

    @classmethod
    def fit(cls, covariates: pd.DataFrame, samples: Sequence[str] | None = None
            ) -> Residualiser:
        """Build from a covariates × samples table (tensorQTL layout), for ``samples``."""
        if samples is not None:
            absent = [s for s in samples if s not in covariates.columns]
            if absent:
                raise CovariateError(f"{len(absent)} sample(s) have no covariates, e.g. "
                                     f"{', '.join(map(str, absent[:3]))}")
            covariates = covariates.loc[:, list(samples)]
        require_finite(covariates, "covariate")
        n, k = covariates.shape[1], covariates.shape[0]
        if n < k + 3:
            raise CovariateError(f"{n} samples are too few for {k} covariates: a SNP's test "
                                 f"needs at least covariates + 3 = {k + 3} samples "
                                 "(intercept, SNP and one residual degree of freedom)")
        # samples × covariates, C order whatever the table's layout (rounding follows layout)
        values = np.ascontiguousarray(covariates.to_numpy(dtype=np.float64).T)
        centred = values - values.mean(axis=0)
        columns: list[np.ndarray] = []
        kept: list[str] = []
        dropped: list[str] = []
        for name, column in zip(covariates.index, centred.T, strict=True):
            norm = float(np.linalg.norm(column))
            residual = column.copy()
            for _ in range(2):  # Gram–Schmidt twice keeps the basis orthonormal to rounding
                for q in columns:
                    residual -= (q @ residual) * q
            left = float(np.linalg.norm(residual))
            if norm == 0.0 or left <= COLLINEAR_TOLERANCE * norm:
                dropped.append(str(name))
                continue
            columns.append(residual / left)
            kept.append(str(name))
        basis = np.stack(columns, axis=1) if columns else np.zeros((n, 0))
        return cls(basis, tuple(kept), tuple(dropped))


def adjust_for_covariates(train_target: np.ndarray, train_covariates: np.ndarray,
                          test_target: np.ndarray, test_covariates: np.ndarray
                          ) -> tuple[np.ndarray, np.ndarray]:
    """Covariate-adjusted targets without leakage: ``[1, covariates]`` (``[samples, k]``) is
    fitted by least squares on the training samples only; returns the training residuals and
    the test targets minus the training fit's predictions (minimum-norm if rank-deficient)."""
    # C order whatever the caller's layout: LAPACK and BLAS round differently by layout, and
    # a training fit must not change because the test samples' columns were rewritten
    design = np.ascontiguousarray(np.column_stack([np.ones(len(train_target)),
                                                   train_covariates]), dtype=np.float64)
    beta, *_ = np.linalg.lstsq(design, train_target, rcond=None)
    test_design = np.ascontiguousarray(np.column_stack([np.ones(len(test_target)),
                                                        test_covariates]), dtype=np.float64)
    return train_target - design @ beta, test_target - test_design @ beta
