"""cis-eQTL mapping: every variant in a gene's cis window tested at once by matrix algebra.

Definitions follow tensorQTL's ``cis_nominal`` (checked against it in the tests): missing
dosages are mean-imputed over the samples tested; ``af`` is the ALT frequency of the imputed
dosages; ``ma_samples`` counts samples carrying the minor allele (dosage > 0.5 when ALT is minor,
< 1.5 otherwise); ``ma_count`` the minor-allele copies (imputed dosages included, truncated);
expression and dosages are residualised on ``[1, covariates]``; with residual correlation
``r``, ``slope = r·sd(y)/sd(g)``, ``t = r·√(dof/(1−r²))``, ``slope_se = slope/t`` and
``pval_nominal = 2·P(T_dof > |t|)`` with ``dof = n − 2 − covariates``. ``start_distance`` is the
variant's 1-based position minus the 1-based TSS. The MAF filter keeps ``min(af, 1 − af) ≥
maf_threshold`` (tensorQTL's ``maf_threshold``). Unlike tensorQTL, which writes NaN rows for
them, monomorphic variants and variants collinear with the covariates are dropped with a note.

How it is computed: nothing of size variants × samples is copied or residualised per call. A
:class:`CisWindow` keeps, once, its dosages with missing calls as 0 and their squares over all
of its samples. A scan scatters the few sample-space vectors it needs — the indicator of the
samples tested, the residual expression, the covariate basis — into the window's sample order
and takes one matrix product; the residual genotype sums of squares follow from
``‖g‖² − (Σg)²/n − ‖Qᵀg‖²`` (``Q`` the orthonormal centred-covariate basis) and ``gᵀr_y`` needs
no residualised genotypes at all (``r_y`` is orthogonal to ``[1, covariates]``). Mean
imputation enters as a correction on the rows that have missing calls. Per-fold scans of the
same window therefore cost one pass over its dosages each.

The gene-level permutation p-value is FastQTL's/tensorQTL ``cis`` mode: the phenotype is
permuted, residualised and tested against every variant; the maximal r² per permutation gives
an empirical p-value, and a beta distribution fitted to the permutation minimum p-values (with
the effective degrees of freedom that make its first shape parameter 1) gives ``pval_beta``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd

from apoe_assets.genomics.genotypes import MISSING, GenotypeMatrix
from apoe_assets.stats.residualise import (
    CovariateError,
    Residualiser,
    explained_entirely,
    require_finite,
)

NOMINAL_COLUMNS = ["phenotype_id", "variant_id", "pos", "start_distance", "af", "ma_samples",
                   "ma_count", "pval_nominal", "slope", "slope_se", "tstat"]
"""tensorQTL ``cis_nominal`` columns, plus the variant's 1-based ``pos`` and the t statistic."""
NOMINAL_DTYPES = {"phenotype_id": str, "variant_id": str, "pos": np.int64,
                  "start_distance": np.int64, "af": np.float64, "ma_samples": np.int64,
                  "ma_count": np.int64, "pval_nominal": np.float64, "slope": np.float64,
                  "slope_se": np.float64, "tstat": np.float64}
DEFAULT_WINDOW = 1_000_000
"""cis flank around the TSS, bp (GTEx's)."""
MAF_THRESHOLD = 0.01
"""Variants with a lower minor-allele frequency are not tested."""
PERMUTATIONS = 1000
"""Phenotype permutations for the gene-level p-value."""
COVARIATE_COLLINEAR = 1e-10
"""A variant keeping less than this share of its centred sum of squares after removing the
covariates is collinear with them (its slope is undefined)."""
PERMUTATION_BLOCK = 2 ** 22
"""Most cells of one variants × permutations correlation block (memory bound)."""
BETA_TOLERANCE = 1e-4
"""Tolerance of the effective-dof root and of the beta fit (tensorQTL's default)."""
NEWTON_MAX_ITERATIONS = 50
NOMINAL_VERSION = "1"
"""Code version of :func:`map_cis_nominal`'s results: bump it when a change to the scan changes
its table, so stored scans made by the old code are recognised as stale."""
HARD_CALLS = (0.0, 1.0, 2.0)
"""The dosages a window may hold (besides NaN for missing): ALT counts of hard calls."""


@dataclass(frozen=True)
class _Dosages:
    """A window's dosages prepared for scans over any subset of its samples."""

    called: np.ndarray
    """float64 ``[variants, samples]``, missing calls as 0."""
    squares: np.ndarray
    """``called ** 2``."""
    missing_rows: np.ndarray
    """Rows that have at least one missing call."""
    missing: np.ndarray
    """float64 ``[missing rows, samples]``: 1 where the call is missing."""


@dataclass(frozen=True)
class CisWindow:
    """Raw ALT dosages (NaN where missing) of the variants in one gene's cis window."""

    variants: pd.DataFrame
    """``variant_id`` and 1-based ``pos``, one row per dosage row."""
    dosages: np.ndarray
    samples: list[str]

    @cached_property
    def column_of(self) -> dict[str, int]:
        """Column of each sample in :attr:`dosages`."""
        return {s: i for i, s in enumerate(self.samples)}

    def columns(self, samples: Sequence[str]) -> np.ndarray:
        """Columns of ``samples``; samples not in the window, or given twice, are an error."""
        index = self.column_of
        try:
            columns = np.fromiter((index[s] for s in samples), dtype=np.int64, count=len(samples))
        except KeyError:
            absent = [s for s in samples if s not in index]
            raise CovariateError(f"{len(absent)} sample(s) have no genotypes, e.g. "
                                 f"{', '.join(map(str, absent[:3]))}") from None
        if len(np.unique(columns)) != len(columns):
            seen: set[str] = set()
            twice = [s for s in samples if s in seen or seen.add(s)]
            raise CovariateError(f"sample(s) listed more than once: {', '.join(twice[:3])}")
        return columns

    def subset(self, samples: Sequence[str]) -> np.ndarray:
        """Dosage columns of ``samples`` (which must be in the window)."""
        return self.dosages[:, self.columns(samples)]

    @cached_property
    def prepared(self) -> _Dosages:
        """The dosages as scans use them (computed once per window)."""
        dosages = np.asarray(self.dosages, dtype=np.float64)
        missing = np.isnan(dosages)
        called = np.where(missing, 0.0, dosages)
        if not np.isin(called, HARD_CALLS).all():
            bad = called[~np.isin(called, HARD_CALLS)][0]
            raise ValueError(f"cis-window dosages must be hard-call ALT counts 0, 1, 2 or NaN; "
                             f"found {bad}")
        missing_rows = np.flatnonzero(missing.any(axis=1))
        return _Dosages(called, called * called, missing_rows,
                        missing[missing_rows].astype(np.float64))


def cis_bounds(gene: Mapping, flank: int = DEFAULT_WINDOW) -> tuple[int, int]:
    """0-based half-open cis window: the gene table's ``cis_start``/``cis_end`` when present,
    else TSS ± ``flank`` (both ends inclusive, as tensorQTL's window)."""
    if "cis_start" in gene and "cis_end" in gene:
        return int(gene["cis_start"]), int(gene["cis_end"])
    tss = int(gene["tss"])
    return max(tss - flank, 0), tss + flank + 1


def cis_window(genotypes: GenotypeMatrix, gene: Mapping, samples: Sequence[str] | None = None,
               flank: int = DEFAULT_WINDOW) -> CisWindow:
    """The dosages of ``samples`` (default all) for the variants in ``gene``'s cis window."""
    start, end = cis_bounds(gene, flank)
    local = genotypes.window(start, end)  # a stored matrix reads only these rows
    samples = list(genotypes.samples if samples is None else samples)
    index = {s: i for i, s in enumerate(genotypes.samples)}
    absent = [s for s in samples if s not in index]
    if absent:
        raise CovariateError(f"{len(absent)} sample(s) are not in the genotypes, e.g. "
                             f"{', '.join(absent[:3])}")
    columns = np.array([index[s] for s in samples], dtype=np.int64)
    # column gathers first (np.take on a row block is a fast strided copy), then one add
    block = np.asarray(local.haplotypes)
    first = np.take(block, 2 * columns, axis=1)
    second = np.take(block, 2 * columns + 1, axis=1)
    dosages = np.add(first, second, dtype=np.float64)
    dosages[(first == MISSING) | (second == MISSING)] = np.nan
    variants = local.variants[["variant_id", "pos"]].reset_index(drop=True)
    return CisWindow(variants, dosages, samples)


def impute_mean(dosages: np.ndarray) -> np.ndarray:
    """Copy of ``dosages`` (``[variants, samples]``) with NaN replaced by the row mean of the
    called values (0 for a row with no calls)."""
    imputed = np.array(dosages, dtype=np.float64)
    missing = np.isnan(imputed)
    if missing.any():
        called = (~missing).sum(axis=1)
        means = np.where(called > 0, np.nansum(imputed, axis=1) / np.maximum(called, 1), 0.0)
        imputed[missing] = np.broadcast_to(means[:, None], imputed.shape)[missing]
    return imputed


def allele_stats(imputed: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """tensorQTL's (af, ma_samples, ma_count) of mean-imputed dosages ``[variants, samples]``."""
    n2 = 2 * imputed.shape[1]
    af = imputed.sum(axis=1) / n2
    alt_minor = af <= 0.5
    carriers = imputed > 0.5
    ma_samples = np.where(alt_minor, carriers.sum(axis=1), (imputed < 1.5).sum(axis=1))
    alt_copies = np.trunc((imputed * carriers).sum(axis=1)).astype(np.int64)
    ma_count = np.where(alt_minor, alt_copies, n2 - alt_copies)
    return af, ma_samples.astype(np.int64), ma_count.astype(np.int64)


@dataclass(frozen=True)
class EqtlResult:
    """One gene's nominal cis-eQTL table and what happened on the way."""

    table: pd.DataFrame
    rows: np.ndarray
    """Row of each table variant in the :class:`CisWindow` it came from."""
    n_samples: int
    dof: int
    counts: dict[str, int]
    notes: tuple[str, ...] = ()

    def top(self) -> pd.Series | None:
        """The strongest association (smallest p, then largest |t|), or None if none."""
        if self.table.empty:
            return None
        order = np.lexsort((-self.table["tstat"].abs().to_numpy(),
                            self.table["pval_nominal"].to_numpy()))
        return self.table.iloc[order[0]]


@dataclass(frozen=True)
class _Scan:
    """One gene's inputs reduced to what the statistics need, over the samples tested."""

    window: CisWindow
    columns: np.ndarray
    """Window columns of the samples tested, in their order."""
    phenotype: np.ndarray
    residualiser: Residualiser
    residual_phenotype: np.ndarray
    rows: np.ndarray
    """Window rows tested."""
    af: np.ndarray
    ma_samples: np.ndarray
    ma_count: np.ndarray
    imputed_mean: np.ndarray
    """Mean dosage of each tested row over the samples tested (imputed value of a missing
    call)."""
    residual_ss: np.ndarray
    """Residual genotype sum of squares of each tested row."""
    genotype_phenotype: np.ndarray
    """``gᵀ r_y`` of each tested row."""
    counts: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _phenotype_values(phenotype: pd.Series, samples: list[str]) -> np.ndarray:
    try:
        values = phenotype.loc[samples]
    except KeyError:
        absent = [s for s in samples if s not in phenotype.index]
        raise CovariateError(f"{len(absent)} sample(s) have no expression, e.g. "
                             f"{', '.join(map(str, absent[:3]))}") from None
    require_finite(values.rename(phenotype.name or "expression"), "expression of gene")
    return values.to_numpy(dtype=np.float64)


def _scatter(window: CisWindow, columns: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """``vectors`` (``[samples tested, k]``) placed at ``columns`` of a zero
    ``[window samples, k]`` array."""
    full = np.zeros((len(window.samples), vectors.shape[1]))
    full[columns] = vectors
    return full


def _genotype_products(window: CisWindow, columns: np.ndarray, vectors: np.ndarray,
                       means: np.ndarray | None, rows: np.ndarray | None = None) -> np.ndarray:
    """``G_imputed[rows] @ vectors`` for the tested samples (``vectors`` is
    ``[samples tested, k]``), without copying the dosages: the called part over all window
    samples (zeros elsewhere), plus ``mean × Σ_missing vectors`` on rows with missing calls."""
    dosages = window.prepared
    full = _scatter(window, columns, vectors)
    called = dosages.called if rows is None else dosages.called[rows]
    product = called @ full
    if means is not None and len(dosages.missing_rows):
        position = (np.arange(len(dosages.called)) if rows is None
                    else np.full(len(dosages.called), -1, dtype=np.int64))
        if rows is not None:
            position[rows] = np.arange(len(rows))
        hit = position[dosages.missing_rows]
        keep = hit >= 0
        if keep.any():
            correction = dosages.missing[keep] @ full
            product[hit[keep]] += means[hit[keep]][:, None] * correction
    return product


def _prepare(window: CisWindow, phenotype: pd.Series, covariates: pd.DataFrame,
             samples: Sequence[str] | None, maf_threshold: float) -> _Scan:
    samples = list(window.samples if samples is None else samples)
    columns = window.columns(samples)
    y = _phenotype_values(phenotype, samples)
    residualiser = Residualiser.fit(covariates, samples)
    notes = list(residualiser.notes)
    n = len(samples)
    residual_y = residualiser.transform(y)
    dosages = window.prepared
    n_window = len(dosages.called)

    # One product gives, per variant: Σ called dosage, gᵀr_y and gᵀQ (before imputation).
    probe = np.column_stack([np.ones(n), residual_y, residualiser.basis])
    product = _genotype_products(window, columns, probe, means=None)
    alt_sum = product[:, 0].copy()
    square_sum = dosages.squares @ _scatter(window, columns, np.ones((n, 1)))[:, 0]
    n_missing = np.zeros(n_window)
    if len(dosages.missing_rows):
        missing_product = dosages.missing @ _scatter(window, columns, probe)
        n_missing[dosages.missing_rows] = missing_product[:, 0]
    n_called = n - n_missing
    mean = np.divide(alt_sum, n_called, out=np.zeros(n_window), where=n_called > 0)
    if len(dosages.missing_rows):  # mean imputation: each missing call contributes the mean
        m = dosages.missing_rows
        product[m] += mean[m][:, None] * missing_product
    hom_alt = (square_sum - alt_sum) / 2  # called dosages are 0/1/2: exact integer counts
    het = alt_sum - 2 * hom_alt
    hom_ref = n_called - het - hom_alt
    total = product[:, 0]
    af = total / (2 * n)
    # tensorQTL's allele counts, from the counts (2·Σ > called ⟺ imputed mean > 0.5)
    mean_above_half = 2 * alt_sum > n_called
    mean_below_1_5 = 2 * alt_sum < 3 * n_called
    alt_minor = af <= 0.5
    ma_samples = np.where(alt_minor, het + hom_alt + n_missing * mean_above_half,
                          hom_ref + het + n_missing * mean_below_1_5)
    imputed_carrier_copies = np.where(
        mean_above_half, np.floor_divide(alt_sum * n_missing, np.maximum(n_called, 1)), 0.0)
    alt_copies = het + 2 * hom_alt + imputed_carrier_copies  # truncated, as tensorQTL's int()
    ma_count = np.where(alt_minor, alt_copies, 2 * n - alt_copies)

    monomorphic = ((n_called == 0) | (hom_ref == n_called) | (het == n_called)
                   | (hom_alt == n_called))
    maf = np.minimum(af, 1.0 - af)
    below_maf = ~monomorphic & ~(maf >= maf_threshold)
    keep = ~monomorphic & ~below_maf
    centred_ss = square_sum + mean * mean * n_missing - total * total / n
    residual_ss = centred_ss - (product[:, 2:] ** 2).sum(axis=1)
    collinear = keep & (residual_ss <= COVARIATE_COLLINEAR * centred_ss)
    rows = np.flatnonzero(keep & ~collinear)
    counts = {"variants_in_window": n_window, "monomorphic": int(monomorphic.sum()),
              "below_maf": int(below_maf.sum()), "collinear_with_covariates": int(collinear.sum()),
              "tested": len(rows)}
    if n_window == 0:
        notes.append("no variant in the cis window: nothing tested")
    elif not len(rows):
        notes.append(f"none of the {n_window} variants in the cis window is polymorphic with "
                     f"MAF ≥ {maf_threshold} in these {n} samples: nothing tested")
    if counts["monomorphic"] and len(rows):
        notes.append(f"{counts['monomorphic']} monomorphic variant(s) in the window not tested")
    if counts["collinear_with_covariates"]:
        notes.append(f"{counts['collinear_with_covariates']} variant(s) collinear with the "
                     "covariates not tested")
    if len(rows) and explained_entirely(y, residual_y):
        notes.append("expression is constant after removing the covariates: nothing tested")
        rows = rows[:0]
        counts["tested"] = 0
    return _Scan(window, columns, y, residualiser, residual_y, rows, af[rows],
                 ma_samples[rows].astype(np.int64), ma_count[rows].astype(np.int64), mean[rows],
                 residual_ss[rows], product[rows, 1], counts, notes)


def _t_pvalue(tstat: np.ndarray, dof: float) -> np.ndarray:
    """Two-sided p-value of t statistics (``2·stdtr(dof, −|t|)``, as scipy's t.cdf)."""
    import scipy.special  # SciPy is imported on first use, so the code location loads fast

    return 2.0 * scipy.special.stdtr(dof, -np.abs(tstat))


def _associations(scan: _Scan) -> dict[str, np.ndarray]:
    """Slope, SE, t, p and r² of every tested row against the phenotype."""
    dof = scan.residualiser.dof
    gg = scan.residual_ss
    gy = scan.genotype_phenotype
    yy = float(scan.residual_phenotype @ scan.residual_phenotype)
    r = gy / np.sqrt(gg * yy)
    r2 = np.minimum(r * r, 1.0)
    slope = gy / gg
    with np.errstate(divide="ignore", invalid="ignore"):
        tstat = r * np.sqrt(dof / (1.0 - r2))
        slope_se = np.sqrt(yy * (1.0 - r2) / (dof * gg))
    return {"slope": slope, "slope_se": slope_se, "tstat": tstat,
            "pval_nominal": _t_pvalue(tstat, dof), "r2": r2}


def empty_nominal_table() -> pd.DataFrame:
    """A nominal table with no rows and the columns and dtypes of a full one."""
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in NOMINAL_DTYPES.items()})


def map_cis_nominal(window: CisWindow, phenotype: pd.Series, covariates: pd.DataFrame, *,
                    gene_id: str, tss: int, maf_threshold: float = 0.0,
                    samples: Sequence[str] | None = None) -> EqtlResult:
    """Nominal associations of every cis variant with one gene's expression.

    ``phenotype`` is a Series sample → expression; ``covariates`` covariates × samples;
    ``tss`` the 0-based TSS; ``samples`` the samples to use (default: the window's), e.g. the
    training samples of one fold. NaN in expression or covariates, or fewer samples than
    covariates + 3, is an error; a window with nothing to test gives an empty table and a note.
    """
    scan = _prepare(window, phenotype, covariates, samples, maf_threshold)
    stats = _associations(scan)
    if len(scan.rows):
        positions = window.variants["pos"].to_numpy(np.int64)[scan.rows]
        table = pd.DataFrame({
            "phenotype_id": gene_id,
            "variant_id": window.variants["variant_id"].to_numpy()[scan.rows].astype(str),
            "pos": positions, "start_distance": positions - (int(tss) + 1),
            "af": scan.af, "ma_samples": scan.ma_samples, "ma_count": scan.ma_count,
            **{k: stats[k] for k in ("pval_nominal", "slope", "slope_se", "tstat")},
        }, columns=NOMINAL_COLUMNS)
    else:
        table = empty_nominal_table()
    return EqtlResult(table, scan.rows, scan.residualiser.n_samples, scan.residualiser.dof,
                      scan.counts, tuple(scan.notes))


@dataclass(frozen=True)
class PermutationResult:
    """Gene-level significance of the top cis variant (tensorQTL ``cis`` mode's columns)."""

    phenotype_id: str
    num_var: int
    variant_id: str | None
    pval_nominal: float
    r2_nominal: float
    n_permutations: int
    pval_perm: float
    pval_beta: float
    beta_shape1: float
    beta_shape2: float
    true_df: float
    pval_true_df: float
    notes: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, object]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "notes"}


@dataclass(frozen=True)
class BetaApproximation:
    """The beta-approximated permutation p-value and its fitted parameters."""

    pval_beta: float
    beta_shape1: float
    beta_shape2: float
    true_df: float
    pval_true_df: float


def permutation_indices(n_samples: int, n_permutations: int, seed: int) -> np.ndarray:
    """``[n_permutations, n_samples]`` sample orders, drawn as tensorQTL draws them
    (``numpy.random.seed(seed)`` then one ``permutation`` per row), so a seed gives both tools
    the same permutations."""
    rng = np.random.RandomState(seed)
    return np.array([rng.permutation(n_samples) for _ in range(n_permutations)],
                    dtype=np.int64).reshape(n_permutations, n_samples)


def pval_from_r2(r2: np.ndarray | float, dof: float) -> np.ndarray:
    """Two-sided p-value of a correlation r² with ``dof`` residual degrees of freedom."""
    r2 = np.asarray(r2, dtype=np.float64)
    with np.errstate(divide="ignore"):
        t2 = dof * r2 / (1.0 - r2)
    return _t_pvalue(np.sqrt(t2), dof)


def _beta_shape1_moments(pvals: np.ndarray) -> float:
    mean, var = float(np.mean(pvals)), float(np.var(pvals))
    return mean * (mean * (1.0 - mean) / var - 1.0)


def effective_dof(r2_perm: np.ndarray, dof: float, tol: float = BETA_TOLERANCE) -> float:
    """Degrees of freedom making the moment-matched first beta shape of the permutation
    p-values equal to 1 (FastQTL), solved by Newton's method on log scale from ``dof``."""
    import scipy.optimize

    def objective(log_dof: float) -> float:
        return float(np.log(_beta_shape1_moments(pval_from_r2(r2_perm, np.exp(log_dof)))))

    try:
        log_dof = scipy.optimize.newton(objective, np.log(dof), tol=tol,
                                        maxiter=NEWTON_MAX_ITERATIONS)
        if np.isfinite(log_dof):
            return float(np.exp(log_dof))
    except (RuntimeError, OverflowError, ValueError, FloatingPointError):
        pass
    result = scipy.optimize.minimize_scalar(
        lambda x: abs(_beta_shape1_moments(pval_from_r2(r2_perm, x)) - 1.0),
        bounds=(1.0, max(10.0 * dof, 10.0)), method="bounded")
    return float(result.x)


def fit_beta(pvals: np.ndarray, tol: float = BETA_TOLERANCE) -> tuple[float, float]:
    """Maximum-likelihood beta shape parameters of p-values in (0, 1): Nelder–Mead from the
    moment estimates on tensorQTL's negative log-likelihood, term for term (so both stop at
    the same point for the same tolerance)."""
    import scipy.optimize
    import scipy.special

    mean, var = float(np.mean(pvals)), float(np.var(pvals))
    a0 = mean * (mean * (1 - mean) / var - 1)
    b0 = a0 * (1 / mean - 1)
    n = len(pvals)

    def negative_loglik(shapes: np.ndarray) -> float:
        a, b = shapes
        if a <= 0 or b <= 0:
            return np.inf
        log_beta = (scipy.special.loggamma(a) + scipy.special.loggamma(b)
                    - scipy.special.loggamma(a + b))
        return float((1.0 - a) * np.sum(np.log(pvals)) + (1.0 - b) * np.sum(np.log(1.0 - pvals))
                     + n * log_beta)

    result = scipy.optimize.minimize(negative_loglik, [a0, b0], method="Nelder-Mead", tol=tol)
    return float(result.x[0]), float(result.x[1])


def beta_approximation(r2_perm: np.ndarray, r2_nominal: float, dof: float,
                       tol: float = BETA_TOLERANCE) -> BetaApproximation:
    """FastQTL's beta approximation (tensorQTL's ``calculate_beta_approx_pval``): from the
    per-permutation maximal r² and the observed one, the effective dof, the beta shapes fitted
    to the permutation minimum p-values and the approximated p-value."""
    import scipy.stats

    r2_perm = np.asarray(r2_perm, dtype=np.float64)
    true_df = effective_dof(r2_perm, dof, tol)
    shape1, shape2 = fit_beta(pval_from_r2(r2_perm, true_df), tol)
    pval_true_df = float(pval_from_r2(r2_nominal, true_df))
    pval_beta = float(scipy.stats.beta.cdf(pval_true_df, shape1, shape2))
    return BetaApproximation(pval_beta, shape1, shape2, true_df, pval_true_df)


def _permutation_r2(scan: _Scan, order: np.ndarray) -> np.ndarray:
    """Maximal r² over the tested rows for each permuted phenotype (``order`` is
    ``[permutations, samples]``)."""
    rows = scan.rows
    all_rows = len(rows) > len(scan.window.variants) // 2  # cheaper than copying most rows
    inverse_norm = 1.0 / np.sqrt(scan.residual_ss)
    if all_rows:
        scale = np.zeros(len(scan.window.variants))
        scale[rows] = inverse_norm
        means = np.zeros(len(scan.window.variants))
        means[rows] = scan.imputed_mean
    else:
        scale, means = inverse_norm, scan.imputed_mean
    n_rows = len(scale)
    block = max(1, PERMUTATION_BLOCK // max(n_rows, 1))
    r2_perm = np.empty(len(order))
    for start in range(0, len(order), block):
        permuted = scan.residualiser.transform(scan.phenotype[order[start:start + block]])
        permuted /= np.linalg.norm(permuted, axis=1, keepdims=True)
        products = _genotype_products(scan.window, scan.columns, permuted.T, means,
                                      None if all_rows else rows)
        products *= scale[:, None]
        r2_perm[start:start + len(permuted)] = (products * products).max(axis=0)
    return r2_perm


@dataclass(frozen=True)
class PermutationStatistics:
    """What the permutation p-values are computed from (tensorQTL's ``r2_perm`` and
    ``r_nominal``), with the scan's bookkeeping."""

    r2_perm: np.ndarray
    """Maximal r² over the tested variants, one per permutation."""
    r2_nominal: float
    best_row: int
    """Window row of the strongest variant."""
    dof: int
    num_var: int
    notes: tuple[str, ...]


def permutation_statistics(window: CisWindow, phenotype: pd.Series, covariates: pd.DataFrame,
                           *, n_permutations: int, seed: int, maf_threshold: float = 0.0,
                           samples: Sequence[str] | None = None) -> PermutationStatistics | None:
    """The observed maximal r² and its permutation distribution (the phenotype permuted by
    :func:`permutation_indices`, residualised, tested against every variant); None when
    nothing is tested."""
    scan = _prepare(window, phenotype, covariates, samples, maf_threshold)
    if not len(scan.rows):
        return None
    r2 = _associations(scan)["r2"]
    best = int(np.argmax(r2))
    order = permutation_indices(len(scan.phenotype), n_permutations, seed)
    return PermutationStatistics(_permutation_r2(scan, order), float(r2[best]),
                                 int(scan.rows[best]), scan.residualiser.dof, len(scan.rows),
                                 tuple(scan.notes))


def permutation_test(window: CisWindow, phenotype: pd.Series, covariates: pd.DataFrame, *,
                     gene_id: str, n_permutations: int, seed: int, maf_threshold: float = 0.0,
                     samples: Sequence[str] | None = None) -> PermutationResult:
    """Permutation and beta-approximated p-values of the gene's best cis association.

    The permutations are tensorQTL's for the same ``seed`` and sample order
    (:func:`permutation_indices`), so ``pval_perm`` equals tensorQTL ``cis`` mode's.
    """
    nan = float("nan")
    stats = permutation_statistics(window, phenotype, covariates,
                                   n_permutations=max(n_permutations, 0), seed=seed,
                                   maf_threshold=maf_threshold, samples=samples)
    if stats is None:
        notes = _prepare(window, phenotype, covariates, samples, maf_threshold).notes
        return PermutationResult(gene_id, 0, None, nan, nan, 0, nan, nan, nan, nan, nan, nan,
                                 tuple(notes))
    notes = list(stats.notes)
    variant_id = str(window.variants["variant_id"].iloc[stats.best_row])
    pval_nominal = float(pval_from_r2(stats.r2_nominal, stats.dof))
    if n_permutations < 1:
        notes.append("no permutations asked for: permutation p-values not computed")
        return PermutationResult(gene_id, stats.num_var, variant_id, pval_nominal,
                                 stats.r2_nominal, 0, nan, nan, nan, nan, nan, nan, tuple(notes))
    pval_perm = (np.sum(stats.r2_perm >= stats.r2_nominal) + 1) / (n_permutations + 1)
    try:
        beta = beta_approximation(stats.r2_perm, stats.r2_nominal, stats.dof)
    except (ValueError, FloatingPointError, ZeroDivisionError) as exc:
        notes.append(f"beta approximation failed ({exc}): pval_beta not computed")
        beta = BetaApproximation(nan, nan, nan, nan, nan)
    return PermutationResult(
        gene_id, stats.num_var, variant_id, pval_nominal, stats.r2_nominal, n_permutations,
        float(pval_perm), beta.pval_beta, beta.beta_shape1, beta.beta_shape2, beta.true_df,
        beta.pval_true_df, tuple(notes))
