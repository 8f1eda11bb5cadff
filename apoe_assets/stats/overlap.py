"""Do the SNPs a sequence model flags overlap the SNPs eQTL mapping finds? Measured so that a
reviewer can accept it: the model's ranking never sees an eQTL statistic, and every overlap is
set against a null.

The earlier student study ranked SNPs by a score that already contained the eQTL p-value (a
circular score); :func:`model_ranking` refuses any table that carries an eQTL statistic, and
:func:`eqtl_overlap` ranks the model's scores before the eQTL table is joined.

Per model score (|``expr_effect``|, ``full_matrix_l1``, ``tracks_l1``), over the variants in
both the SNP-effect and the all-sample cis-eQTL tables (the universe, in position order):

- ``top_k`` / ``significant``: the model's top k against the top k by eQTL p / the eQTL SNPs
  at or below the significance threshold; hypergeometric upper-tail p.
- ``top_k_ld`` / ``significant_ld``: a model SNP counts when its r² with any SNP of the eQTL
  set is ≥ ``ld_r2`` (PLINK's haplotype r² from the same genotypes). Neighbouring SNPs share
  both LD and eQTL signal, so a hypergeometric null would be anti-conservative; the null here
  shifts the model's ranking circularly along the window (the ranks move together, so the
  LD between the model's top SNPs is kept), p = (1 + #null ≥ observed) / (1 + permutations).
- ``lead_ld``: whether the model's top SNP is in LD with the lead eQTL SNP (same null; the
  expectation is exact: the share of other positions in LD with the lead).
- ``spearman``: Spearman ρ of the score with −log10 p, and its p-value.
- For ``full_matrix_l1`` also ``top_k_tracks_l1`` and ``spearman_tracks_l1``: the full
  prediction matrix against the selected tracks, compared the same way.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from apoe_assets.stats.ld import PackedGenotypes, genotype_codes, haplotype_r2

TOP_K = 50
"""SNPs taken from the top of each ranking (the earlier study's 50)."""
LD_R2 = 0.8
"""r² at or above which a model SNP counts as tagging an eQTL SNP."""
PERMUTATIONS = 1000
"""Circular shifts in the LD-keeping null."""
EQTL_ALPHA = 0.05
"""Family-wise level of the default significance threshold: Bonferroni over the variants
tested for the gene (``EQTL_ALPHA / tested``)."""
R2_PAIRS = 1 << 18
"""Variant pairs whose r² are computed together (bounds memory)."""
OVERLAP_VERSION = "1"
"""Code version of the overlap assets: bump it when results change."""

SCORES: dict[str, bool] = {"expr_effect": True, "full_matrix_l1": False, "tracks_l1": False}
"""The model scores, each ranked by its magnitude (True: |value|, the effect is signed)."""
EQTL_TESTS = ("top_k", "significant")
"""The eQTL SNP sets: top k by p-value, and those at or below the threshold."""
ALL_SAMPLES_FOLD = "fold"
"""``cis_eqtl`` column: <NA> on the scan of all samples (the one compared here)."""
EQTL_COLUMN = re.compile(
    r"pval|p_value|pvalue|qval|slope|tstat|zscore|z_score|beta|eqtl|lod|^p$|^se$|^(log|neg)",
    re.IGNORECASE)
"""Column names that carry eQTL statistics (tensorQTL's ``pval_nominal``, ``slope``,
``slope_se``, ``tstat``, …); a table with one cannot be ranked."""
TABLE_COLUMNS = ["score", "comparison", "test", "k", "eqtl_snps", "universe", "statistic",
                 "expected", "p"]
"""The tidy overlap table: one row per score × comparison. ``statistic`` is the overlap count
(or ρ, or 1/0 for ``lead_ld``), ``expected`` its null expectation."""


class CircularScoreError(ValueError):
    """A table handed to the model ranking carries eQTL statistics."""


def model_ranking(effects: pd.DataFrame) -> pd.DataFrame:
    """The model's scores and ranks (1 = largest magnitude, ties in position order), in
    position order: ``variant_id``, ``pos``, and per score of :data:`SCORES` the score and
    ``rank_<score>``. Refuses a table with any column that carries eQTL statistics, so no
    ranking can contain the p-value it is compared with."""
    leaked = [c for c in effects.columns if EQTL_COLUMN.search(str(c))]
    if leaked:
        raise CircularScoreError(
            f"the SNP-effect table carries eQTL statistics ({', '.join(map(str, leaked))}); "
            "a model ranking must come from model effects alone (a score containing the eQTL "
            "p-value makes any overlap with eQTL SNPs circular)")
    missing = [c for c in ("variant_id", "pos", *SCORES) if c not in effects.columns]
    if missing:
        raise ValueError(f"the SNP-effect table lacks column(s) {', '.join(missing)}")
    table = (effects[["variant_id", "pos", *SCORES]]
             .sort_values(["pos", "variant_id"], kind="stable").reset_index(drop=True))
    for score, signed in SCORES.items():
        values = table[score].to_numpy(np.float64)
        table[score] = values
        ranks = np.empty(len(values), dtype=np.int64)
        ranks[_descending(np.abs(values) if signed else values)] = np.arange(1, len(values) + 1)
        table[f"rank_{score}"] = ranks
    return table


def _descending(values: np.ndarray) -> np.ndarray:
    """Row order by descending value (NaN last), ties in row order."""
    return np.lexsort((np.arange(len(values)), np.nan_to_num(-values, nan=np.inf)))


def all_sample_scan(eqtl: pd.DataFrame) -> pd.DataFrame:
    """The rows of a ``cis_eqtl`` table from the scan of all samples (``fold`` <NA>)."""
    if ALL_SAMPLES_FOLD in eqtl.columns:
        eqtl = eqtl[eqtl[ALL_SAMPLES_FOLD].isna()]
    return eqtl


def max_r2(codes: np.ndarray, targets: np.ndarray, threshold: float) -> np.ndarray:
    """Per row of ``codes`` (hard-call genotype codes), its largest |r²| with a row of
    ``targets``; pairs whose allele frequencies bound r² below ``threshold`` count as 0, and
    a row is 1 with itself (even monomorphic)."""
    n = codes.shape[0]
    best = np.zeros(n)
    targets = np.asarray(targets, dtype=np.int64)
    if n == 0 or len(targets) == 0:
        return best
    packed = PackedGenotypes(codes)
    step = max(R2_PAIRS // len(targets), 1)
    for start in range(0, n, step):
        rows = np.arange(start, min(start + step, n), dtype=np.int64)
        anchors = np.repeat(rows, len(targets))
        others = np.tile(targets, len(rows))
        check = np.flatnonzero(packed.may_exceed(anchors, others, threshold))
        values = np.zeros(len(anchors))
        if len(check):
            values[check] = np.abs(np.nan_to_num(haplotype_r2(
                packed.tables(anchors[check], others[check]))))
        best[rows] = values.reshape(len(rows), len(targets)).max(axis=1)
    best[targets] = 1.0
    return best


def hypergeometric_p(overlap: int, universe: int, marked: int, drawn: int) -> float:
    """P(X ≥ ``overlap``) for X the marked items among ``drawn`` drawn from ``universe``."""
    from scipy.stats import hypergeom  # scipy.stats is slow to import; only used here

    return float(hypergeom.sf(overlap - 1, universe, marked, drawn)) if drawn else 1.0


def circular_shifts(n: int, permutations: int, seed: int | Sequence[int]) -> np.ndarray:
    """``permutations`` shifts drawn uniformly from 1 … n − 1 (none below 2 variants)."""
    if n < 2 or permutations < 1:
        return np.zeros(0, dtype=np.int64)
    return np.random.default_rng(seed).integers(1, n, size=permutations)


def shift_null(hits: np.ndarray, chosen: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """Per shift, the number of ``hits`` (bool, per position) among the ``chosen`` positions
    moved circularly by the shift: the ranking slides along the window, its LD kept."""
    if len(shifts) == 0:
        return np.zeros(0, dtype=np.int64)
    moved = (np.asarray(chosen)[None, :] + shifts[:, None]) % len(hits)
    return hits[moved].sum(axis=1)


def permutation_p(observed: float, null: np.ndarray) -> float:
    """(1 + #null ≥ observed) / (1 + permutations); NaN without a null."""
    if len(null) == 0:
        return float("nan")
    return float((1 + np.sum(null >= observed)) / (1 + len(null)))


def _spearman(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    from scipy.stats import spearmanr

    keep = np.isfinite(a) & np.isfinite(b)
    if keep.sum() < 3 or np.ptp(a[keep]) == 0 or np.ptp(b[keep]) == 0:
        return float("nan"), float("nan")
    result = spearmanr(a[keep], b[keep])
    return float(result.statistic), float(result.pvalue)


@dataclass
class OverlapResult:
    """One gene's overlap table, its variants joined, and what was left out."""

    table: pd.DataFrame
    """:data:`TABLE_COLUMNS`, one row per score × comparison."""
    variants: pd.DataFrame
    """Per variant of the universe (position order): scores, ranks, eQTL p, −log10 p, set
    memberships and r² with each eQTL set, for plots."""
    threshold: float
    """The eQTL significance threshold used."""
    notes: list[str] = field(default_factory=list)


def eqtl_overlap(effects: pd.DataFrame, eqtl: pd.DataFrame, genotype_ids: Sequence[str],
                 dosages: np.ndarray, *, top_k: int = TOP_K, ld_r2: float = LD_R2,
                 permutations: int = PERMUTATIONS, seed: int | Sequence[int] = 0,
                 eqtl_p: float | None = None) -> OverlapResult:
    """Overlap of the model's top SNPs with the eQTL SNPs of one gene (module docstring).

    ``effects``: the SNP-effect table (no eQTL column, see :func:`model_ranking`); ``eqtl``:
    the gene's ``cis_eqtl`` table (``variant_id``, ``pval_nominal``; the all-sample rows are
    used); ``dosages`` ``[variants, samples]`` hard-call ALT dosages (NaN missing) with a row
    per ``genotype_ids``, the genotypes the eQTL scan used. ``eqtl_p``: significance
    threshold, default Bonferroni (:data:`EQTL_ALPHA` / variants tested)."""
    ranking = model_ranking(effects)  # ranked before any eQTL statistic is in sight
    scan = all_sample_scan(eqtl)
    scan = scan[np.isfinite(scan["pval_nominal"].to_numpy(np.float64))]
    tested = len(scan)
    threshold = float(eqtl_p) if eqtl_p is not None else EQTL_ALPHA / max(tested, 1)
    notes: list[str] = []
    row_of = pd.Series(np.arange(len(genotype_ids)), index=pd.Index(genotype_ids))
    joined = ranking.merge(scan[["variant_id", "pval_nominal"]], on="variant_id", how="inner")
    typed = joined["variant_id"].isin(row_of.index).to_numpy()
    if not typed.all():
        notes.append(f"{int((~typed).sum())} variants without genotypes left out")
    joined = joined[typed].reset_index(drop=True)
    if len(joined) < len(ranking):
        notes.append(f"{len(ranking) - len(joined)} of {len(ranking)} scored variants not in "
                     "the eQTL scan (e.g. below its MAF filter) left out")
    n = len(joined)
    codes = genotype_codes(np.asarray(dosages)[row_of[joined["variant_id"]].to_numpy()]
                           if n else np.zeros((0, np.asarray(dosages).shape[1])))
    pvalues = joined["pval_nominal"].to_numpy(np.float64)
    by_p = np.lexsort((np.arange(n), pvalues))
    sets = {"top_k": np.sort(by_p[:min(top_k, n)]),
            "significant": np.flatnonzero(pvalues <= threshold)}
    lead = by_p[:1]
    r2 = {name: max_r2(codes, members, ld_r2) for name, members in sets.items()}
    r2["lead"] = max_r2(codes, lead, ld_r2)
    shifts = circular_shifts(n, permutations, seed)
    k = min(top_k, n)
    neg_log_p = -np.log10(np.clip(pvalues, 1e-300, 1.0))
    rows: list[dict] = []
    tops: dict[str, np.ndarray] = {}
    for score, signed in SCORES.items():
        order = np.argsort(joined[f"rank_{score}"].to_numpy(), kind="stable")
        chosen = tops[score] = order[:k]
        magnitude = joined[score].to_numpy(np.float64)
        magnitude = np.abs(magnitude) if signed else magnitude
        for name, members in sets.items():
            marked = np.zeros(n, dtype=bool)
            marked[members] = True
            common = int(marked[chosen].sum())
            rows.append(_row(score, name, "hypergeometric", k, len(members), n, common,
                             k * len(members) / n if n else np.nan,
                             hypergeometric_p(common, n, len(members), k)))
            hits = r2[name] >= ld_r2
            tagged = int(hits[chosen].sum())
            null = shift_null(hits, chosen, shifts)
            rows.append(_row(score, f"{name}_ld", "circular_shift", k, len(members), n, tagged,
                             float(null.mean()) if len(null) else np.nan,
                             permutation_p(tagged, null)))
        hits = r2["lead"] >= ld_r2
        top = chosen[:1]
        observed = int(hits[top].sum())
        exact = ((hits.sum() - observed) / (n - 1)) if n > 1 else np.nan
        rows.append(_row(score, "lead_ld", "circular_shift", len(top), len(lead), n, observed,
                         exact, permutation_p(observed, shift_null(hits, top, shifts))))
        rho, p = _spearman(magnitude, neg_log_p)
        rows.append(_row(score, "spearman", "spearman", n, n, n, rho, 0.0, p))
    full, tracks = tops["full_matrix_l1"], tops["tracks_l1"]
    common = len(np.intersect1d(full, tracks))
    rows.append(_row("full_matrix_l1", "top_k_tracks_l1", "hypergeometric", k, k, n, common,
                     k * k / n if n else np.nan, hypergeometric_p(common, n, k, k)))
    rho, p = _spearman(joined["full_matrix_l1"].to_numpy(np.float64),
                       joined["tracks_l1"].to_numpy(np.float64))
    rows.append(_row("full_matrix_l1", "spearman_tracks_l1", "spearman", n, n, n, rho, 0.0, p))
    if n == 0:
        notes.append("no variant is in both the SNP-effect and the eQTL tables")
    variants = joined.assign(
        neg_log10_p=neg_log_p, eqtl_lead=np.isin(np.arange(n), lead),
        **{f"eqtl_{name}": np.isin(np.arange(n), members) for name, members in sets.items()},
        **{f"r2_{name}": values for name, values in r2.items()},
        **{f"model_top_k_{score}": np.isin(np.arange(n), chosen)
           for score, chosen in tops.items()})
    return OverlapResult(pd.DataFrame(rows, columns=TABLE_COLUMNS), variants, threshold, notes)


def _row(score: str, comparison: str, test: str, k: int, eqtl_snps: int, universe: int,
         statistic: float, expected: float, p: float) -> dict:
    return dict(zip(TABLE_COLUMNS, (score, comparison, test, int(k), int(eqtl_snps),
                                    int(universe), float(statistic), float(expected), float(p)),
                    strict=True))


def poisson_binomial_upper(observed: int, probabilities: np.ndarray) -> float:
    """P(X ≥ ``observed``) for X a sum of independent Bernoulli(``probabilities``)."""
    distribution = np.array([1.0])
    for q in np.asarray(probabilities, dtype=np.float64):
        distribution = np.convolve(distribution, [1.0 - q, q])
    return float(min(distribution[max(observed, 0):].sum(), 1.0))


def pooled_hypergeometric_upper(observed: int, genes: pd.DataFrame) -> float:
    """P(Σ X_g ≥ ``observed``) for independent hypergeometric X_g: per row of ``genes`` the
    marked items (``eqtl_snps``) among ``k`` drawn from ``universe`` (exact convolution)."""
    from scipy.stats import hypergeom

    distribution = np.array([1.0])
    for gene in genes.itertuples(index=False):
        k = int(gene.k)
        pmf = hypergeom.pmf(np.arange(k + 1), int(gene.universe), int(gene.eqtl_snps), k)
        distribution = np.convolve(distribution, pmf)
    return float(min(distribution[max(int(observed), 0):].sum(), 1.0))


def pooled_overlap(stacked: pd.DataFrame, comparison: str = "top_k") -> pd.DataFrame:
    """Per score, the hypergeometric ``comparison`` (default ``top_k``) pooled over genes:
    genes, the summed overlap, its summed expectation and the exact p of at least that sum
    with genes independent (:func:`pooled_hypergeometric_upper`): do model and eQTL SNPs
    overlap beyond chance across the genes, not only in one?"""
    part = stacked[(stacked["comparison"] == comparison)
                   & (stacked["test"] == "hypergeometric") & (stacked["universe"] > 0)]
    rows = []
    for score in SCORES:
        genes = part[part["score"] == score]
        observed = int(genes["statistic"].sum())
        rows.append({"score": score, "genes": len(genes), "overlap": observed,
                     "expected": float(genes["expected"].sum()),
                     "p": pooled_hypergeometric_upper(observed, genes) if len(genes)
                     else np.nan})
    return pd.DataFrame(rows)


def overlap_summary(tables: Mapping[str, pd.DataFrame]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """All genes' overlap tables stacked (``gene`` first), and per score the fraction of genes
    whose top model SNP is in LD with the lead eQTL SNP against its expectation under the
    genes' circular-shift nulls (each gene's exact expected share, genes independent), with
    the Poisson-binomial p of at least that many genes. Genes without a defined ``lead_ld``
    (fewer than 2 variants) are left out of the fraction."""
    stacked = pd.concat([t.assign(gene=g) for g, t in tables.items()], ignore_index=True
                        ) if tables else pd.DataFrame(columns=[*TABLE_COLUMNS, "gene"])
    stacked = stacked[["gene", *TABLE_COLUMNS]]
    lead = stacked[(stacked["comparison"] == "lead_ld") & stacked["expected"].notna()]
    rows = []
    for score in SCORES:
        part = lead[lead["score"] == score]
        hits = int(part["statistic"].sum())
        genes = len(part)
        rows.append({"score": score, "genes": genes, "genes_in_ld": hits,
                     "fraction": hits / genes if genes else np.nan,
                     "expected_fraction": float(part["expected"].mean()) if genes else np.nan,
                     "p": poisson_binomial_upper(hits, part["expected"].to_numpy())
                     if genes else np.nan})
    return stacked.reset_index(drop=True), pd.DataFrame(rows)
