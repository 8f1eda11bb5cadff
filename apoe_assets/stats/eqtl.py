"""cis-eQTL mapping: every variant in a gene's cis window tested at once by matrix algebra.

Definitions follow tensorQTL's ``cis_nominal`` (checked against it in the tests): missing
dosages are mean-imputed over the samples tested; ``af`` is the ALT frequency of the imputed
dosages; ``ma_samples`` counts samples carrying the minor allele (dosage > 0.5 when ALT is minor,
< 1.5 otherwise); ``ma_count`` the minor-allele copies (imputed dosages included, truncated);
expression and dosages are residualised once on ``[1, covariates]``; with residual correlation
``r``, ``slope = r·sd(y)/sd(g)``, ``t = r·√(dof/(1−r²))``, ``slope_se = slope/t`` and
``pval_nominal = 2·P(T_dof > |t|)`` with ``dof = n − 2 − covariates``. ``start_distance`` is the
variant's 1-based position minus the 1-based TSS. Unlike tensorQTL (which reports NaN rows),
monomorphic variants and variants collinear with the covariates are dropped with a note.

The gene-level permutation p-value is FastQTL's/tensorQTL ``cis`` mode: the phenotype is
permuted, residualised and tested against every variant; the maximal r² per permutation gives
an empirical p-value, and a beta distribution fitted to the permutation minimum p-values (with
the effective degrees of freedom that make its first shape parameter 1) gives ``pval_beta``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.optimize
import scipy.special
import scipy.stats

from apoe_assets.genomics.genotypes import MISSING, GenotypeMatrix
from apoe_assets.genomics.loci import variants_in
from apoe_assets.stats.residualise import CovariateError, Residualiser, require_finite

NOMINAL_COLUMNS = ["phenotype_id", "variant_id", "pos", "start_distance", "af", "ma_samples",
                   "ma_count", "pval_nominal", "slope", "slope_se", "tstat"]
"""tensorQTL ``cis_nominal`` columns, plus the variant's 1-based ``pos`` and the t statistic."""
DEFAULT_WINDOW = 1_000_000
COVARIATE_COLLINEAR = 1e-10
"""A variant keeping less than this share of its sum of squares after removing the covariates
is collinear with them (its slope is undefined)."""
PERMUTATION_CHUNK = 1000


@dataclass(frozen=True)
class CisWindow:
    """Raw ALT dosages (NaN where missing) of the variants in one gene's cis window."""

    variants: pd.DataFrame
    """``variant_id`` and 1-based ``pos``, one row per dosage row."""
    dosages: np.ndarray
    samples: list[str]

    def subset(self, samples: Sequence[str]) -> np.ndarray:
        """Dosage columns of ``samples`` (which must be in the window)."""
        index = {s: i for i, s in enumerate(self.samples)}
        absent = [s for s in samples if s not in index]
        if absent:
            raise CovariateError(f"{len(absent)} sample(s) have no genotypes, e.g. "
                                 f"{', '.join(absent[:3])}")
        return self.dosages[:, [index[s] for s in samples]]


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
    rows = np.flatnonzero(variants_in(genotypes, start, end))
    samples = list(genotypes.samples if samples is None else samples)
    index = {s: i for i, s in enumerate(genotypes.samples)}
    absent = [s for s in samples if s not in index]
    if absent:
        raise CovariateError(f"{len(absent)} sample(s) are not in the genotypes, e.g. "
                             f"{', '.join(absent[:3])}")
    columns = np.array([index[s] for s in samples], dtype=np.int64)
    haps = genotypes.haplotypes[rows][:, np.stack([2 * columns, 2 * columns + 1], axis=1)]
    dosages = haps.sum(axis=2, dtype=np.float64)
    dosages[(haps == MISSING).any(axis=2)] = np.nan
    variants = genotypes.variants.iloc[rows][["variant_id", "pos"]].reset_index(drop=True)
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
class _Prepared:
    """Filtered, imputed, residualised inputs of one gene's scan."""

    rows: np.ndarray
    imputed: np.ndarray
    residual_genotypes: np.ndarray
    residual_phenotype: np.ndarray
    phenotype: np.ndarray
    residualiser: Residualiser
    af: np.ndarray
    ma_samples: np.ndarray
    ma_count: np.ndarray
    counts: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _prepare(window: CisWindow, phenotype: pd.Series, covariates: pd.DataFrame,
             samples: Sequence[str] | None, maf_threshold: float) -> _Prepared:
    samples = list(window.samples if samples is None else samples)
    absent = [s for s in samples if s not in phenotype.index]
    if absent:
        raise CovariateError(f"{len(absent)} sample(s) have no expression, e.g. "
                             f"{', '.join(map(str, absent[:3]))}")
    y_series = phenotype.loc[samples].astype(float)
    require_finite(y_series.rename(phenotype.name or "expression"), "expression of gene")
    residualiser = Residualiser.fit(covariates, samples)
    notes = list(residualiser.notes)
    imputed = impute_mean(window.subset(samples))
    n_window = imputed.shape[0]
    af, ma_samples, ma_count = allele_stats(imputed)
    monomorphic = ~(imputed.max(axis=1, initial=-np.inf) > imputed.min(axis=1, initial=np.inf))
    maf = np.minimum(af, 1 - af)
    below_maf = ~monomorphic & ~(maf >= maf_threshold)
    keep = ~monomorphic & ~below_maf
    residual = residualiser.transform(imputed[keep])
    centred_ss = ((imputed[keep] - imputed[keep].mean(axis=1, keepdims=True)) ** 2).sum(axis=1)
    collinear = (residual ** 2).sum(axis=1) <= COVARIATE_COLLINEAR * centred_ss
    kept_rows = np.flatnonzero(keep)
    rows = kept_rows[~collinear]
    counts = {"variants_in_window": n_window, "monomorphic": int(monomorphic.sum()),
              "below_maf": int(below_maf.sum()), "collinear_with_covariates": int(collinear.sum()),
              "tested": len(rows)}
    if n_window == 0:
        notes.append("no variant in the cis window: nothing tested")
    elif not len(rows):
        notes.append(f"none of the {n_window} variants in the cis window is polymorphic with "
                     f"MAF ≥ {maf_threshold} in these {len(samples)} samples: nothing tested")
    if counts["monomorphic"] and len(rows):
        notes.append(f"{counts['monomorphic']} monomorphic variant(s) in the window not tested")
    if counts["collinear_with_covariates"]:
        notes.append(f"{counts['collinear_with_covariates']} variant(s) collinear with the "
                     "covariates not tested")
    y = y_series.to_numpy()
    residual_y = residualiser.transform(y)
    if len(rows) and not (residual_y ** 2).sum() > 0:
        notes.append("expression is constant after removing the covariates: nothing tested")
        rows = rows[:0]
        counts["tested"] = 0
    return _Prepared(rows, imputed[rows], residual[~collinear][: len(rows)], residual_y, y,
                     residualiser, af[rows], ma_samples[rows], ma_count[rows], counts, notes)


def _associations(residual_genotypes: np.ndarray, residual_phenotype: np.ndarray, dof: int
                  ) -> dict[str, np.ndarray]:
    """Slope, SE, t, p and r² of every row against the phenotype (all residualised)."""
    gg = (residual_genotypes ** 2).sum(axis=1)
    yy = float(residual_phenotype @ residual_phenotype)
    gy = residual_genotypes @ residual_phenotype
    r = gy / np.sqrt(gg * yy)
    r2 = np.minimum(r * r, 1.0)
    slope = gy / gg
    with np.errstate(divide="ignore", invalid="ignore"):
        tstat = r * np.sqrt(dof / (1.0 - r2))
        slope_se = np.sqrt(np.maximum(yy - slope * gy, 0.0) / dof / gg)
    pval = 2.0 * scipy.stats.t.sf(np.abs(tstat), dof)
    return {"slope": slope, "slope_se": slope_se, "tstat": tstat, "pval_nominal": pval, "r2": r2}


def map_cis_nominal(window: CisWindow, phenotype: pd.Series, covariates: pd.DataFrame, *,
                    gene_id: str, tss: int, maf_threshold: float = 0.0,
                    samples: Sequence[str] | None = None) -> EqtlResult:
    """Nominal associations of every cis variant with one gene's expression.

    ``phenotype`` is a Series sample → expression; ``covariates`` covariates × samples;
    ``tss`` the 0-based TSS; ``samples`` the samples to use (default: the window's), e.g. the
    training samples of one fold. NaN in expression or covariates, or fewer samples than
    covariates + 3, is an error; a window with nothing to test gives an empty table and a note.
    """
    prep = _prepare(window, phenotype, covariates, samples, maf_threshold)
    dof = prep.residualiser.dof
    stats = _associations(prep.residual_genotypes, prep.residual_phenotype, dof)
    variants = window.variants.iloc[prep.rows]
    table = pd.DataFrame({
        "phenotype_id": gene_id,
        "variant_id": variants["variant_id"].to_numpy(),
        "pos": variants["pos"].to_numpy(np.int64),
        "start_distance": variants["pos"].to_numpy(np.int64) - (tss + 1),
        "af": prep.af, "ma_samples": prep.ma_samples, "ma_count": prep.ma_count,
        **{k: stats[k] for k in ("pval_nominal", "slope", "slope_se", "tstat")},
    }, columns=NOMINAL_COLUMNS)
    table = table.astype({"phenotype_id": str, "variant_id": str})
    return EqtlResult(table, prep.rows, prep.residualiser.n_samples, dof, prep.counts,
                      tuple(prep.notes))


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
    return scipy.special.betainc(dof / 2.0, 0.5, dof / (dof + t2))


def _beta_shape1_moments(pvals: np.ndarray) -> float:
    mean, var = float(np.mean(pvals)), float(np.var(pvals))
    return mean * (mean * (1.0 - mean) / var - 1.0)


def effective_dof(r2_perm: np.ndarray, dof: float, tol: float = 1e-4) -> float:
    """Degrees of freedom making the moment-matched first beta shape of the permutation
    p-values equal to 1 (FastQTL), solved on log scale from ``dof``."""
    def objective(log_dof: float) -> float:
        return float(np.log(_beta_shape1_moments(pval_from_r2(r2_perm, np.exp(log_dof)))))

    try:
        log_dof = scipy.optimize.newton(objective, np.log(dof), tol=tol, maxiter=50)
        if np.isfinite(log_dof):
            return float(np.exp(log_dof))
    except (RuntimeError, OverflowError, ValueError, FloatingPointError):
        pass
    result = scipy.optimize.minimize_scalar(
        lambda x: abs(_beta_shape1_moments(pval_from_r2(r2_perm, x)) - 1.0),
        bounds=(1.0, max(10.0 * dof, 10.0)), method="bounded")
    return float(result.x)


def fit_beta(pvals: np.ndarray, tol: float = 1e-6) -> tuple[float, float]:
    """Maximum-likelihood beta shape parameters of p-values in (0, 1)."""
    mean, var = float(np.mean(pvals)), float(np.var(pvals))
    a0 = mean * (mean * (1 - mean) / var - 1)
    b0 = a0 * (1 / mean - 1)
    log_p, log_q = np.log(pvals).sum(), np.log1p(-pvals).sum()
    n = len(pvals)

    def negative_loglik(shapes: np.ndarray) -> float:
        a, b = shapes
        if a <= 0 or b <= 0:
            return np.inf
        return float((1 - a) * log_p + (1 - b) * log_q + n * scipy.special.betaln(a, b))

    result = scipy.optimize.minimize(negative_loglik, [a0, b0], method="Nelder-Mead",
                                     options={"xatol": tol, "fatol": tol, "maxiter": 2000})
    return float(result.x[0]), float(result.x[1])


def permutation_test(window: CisWindow, phenotype: pd.Series, covariates: pd.DataFrame, *,
                     gene_id: str, n_permutations: int, seed: int, maf_threshold: float = 0.0,
                     samples: Sequence[str] | None = None) -> PermutationResult:
    """Permutation and beta-approximated p-values of the gene's best cis association."""
    prep = _prepare(window, phenotype, covariates, samples, maf_threshold)
    dof = prep.residualiser.dof
    notes = list(prep.notes)
    nan = float("nan")
    if not len(prep.rows) or n_permutations < 1:
        if len(prep.rows):
            notes.append("no permutations asked for: permutation p-values not computed")
        return PermutationResult(gene_id, len(prep.rows), None, nan, nan, 0, nan, nan, nan, nan,
                                 nan, nan, tuple(notes))
    genotypes = prep.residual_genotypes / np.linalg.norm(prep.residual_genotypes, axis=1,
                                                         keepdims=True)
    y = prep.residual_phenotype
    r_nominal = genotypes @ (y / np.linalg.norm(y))
    best = int(np.argmax(r_nominal ** 2))
    r2_nominal = float(r_nominal[best] ** 2)
    order = permutation_indices(len(prep.phenotype), n_permutations, seed)
    r2_perm = np.empty(n_permutations)
    for start in range(0, n_permutations, PERMUTATION_CHUNK):
        permuted = prep.residualiser.transform(prep.phenotype[order[start:start
                                                                    + PERMUTATION_CHUNK]])
        permuted /= np.linalg.norm(permuted, axis=1, keepdims=True)
        r2_perm[start:start + len(permuted)] = ((genotypes @ permuted.T) ** 2).max(axis=0)
    pval_perm = (np.sum(r2_perm >= r2_nominal) + 1) / (n_permutations + 1)
    try:
        true_df = effective_dof(r2_perm, dof)
        shape1, shape2 = fit_beta(pval_from_r2(r2_perm, true_df))
        pval_true_df = float(pval_from_r2(r2_nominal, true_df))
        pval_beta = float(scipy.stats.beta.cdf(pval_true_df, shape1, shape2))
    except (ValueError, FloatingPointError, ZeroDivisionError) as exc:
        notes.append(f"beta approximation failed ({exc}): pval_beta not computed")
        true_df = shape1 = shape2 = pval_true_df = pval_beta = nan
    return PermutationResult(
        gene_id, len(prep.rows), str(window.variants["variant_id"].iloc[prep.rows[best]]),
        float(pval_from_r2(r2_nominal, dof)), r2_nominal, n_permutations, float(pval_perm),
        pval_beta, shape1, shape2, true_df, pval_true_df, tuple(notes))
