"""The eQTL overlap core (:mod:`apoe_assets.stats.overlap`) on seeded synthetic genes: LD
blocks of near-copies of a founder haplotype, eQTL p-values from a regression on a causal SNP,
model scores from a regression on a SNP of our choosing (no Enformer needed)."""

from __future__ import annotations

import itertools
from math import comb

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from apoe_assets.stats import overlap
from apoe_assets.stats.ld import genotype_codes, pairwise_r2

BLOCK = 10
"""Variants per LD block."""
SAMPLES = 120


def block_genotypes(rng: np.random.Generator, n_blocks: int, flip: float = 0.02
                    ) -> np.ndarray:
    """Dosages ``[variants, samples]``: per block a founder pair of haplotypes at frequency
    0.2–0.5, each variant a copy with a share ``flip`` of alleles flipped (high r² within a
    block, none across)."""
    rows = []
    for _ in range(n_blocks):
        founder = rng.random((2, SAMPLES)) < rng.uniform(0.2, 0.5)
        for _ in range(BLOCK):
            rows.append((founder ^ (rng.random(founder.shape) < flip)).sum(axis=0))
    return np.asarray(rows, dtype=np.float64)


def regression_scores(dosages: np.ndarray, driver: int, rng: np.random.Generator,
                      effect: float = 0.8) -> tuple[np.ndarray, np.ndarray]:
    """A phenotype driven by variant ``driver``; per variant |r| and the p-value of r."""
    y = effect * (dosages[driver] - dosages[driver].mean()) + rng.normal(size=SAMPLES)
    x = dosages - dosages.mean(axis=1, keepdims=True)
    r = (x @ (y - y.mean())) / (np.linalg.norm(x, axis=1) * np.linalg.norm(y - y.mean()))
    t = r * np.sqrt((SAMPLES - 2) / np.clip(1 - r ** 2, 1e-12, None))
    return np.abs(r), 2 * stats.t.sf(np.abs(t), SAMPLES - 2)


def gene_tables(scores: np.ndarray, pvalues: np.ndarray, flat: bool = False
                ) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """A SNP-effect table (the model scores: ``expr_effect`` signed, the L1 scores
    ``scores`` or, with ``flat``, unrelated) and a ``cis_eqtl``-like table (an all-sample
    block with <NA> fold and a fold block that must be ignored)."""
    n = len(scores)
    ids = [f"chr19:{1000 + 10 * i}:A:G" for i in range(n)]
    signs = np.where(np.arange(n) % 2 == 0, 1.0, -1.0)
    effects = pd.DataFrame({
        "variant_id": ids, "pos": 1000 + 10 * np.arange(n), "ref": "A", "alt": "G",
        "kind": "snv", "distance_to_tss": 10 * np.arange(n) - 500,
        "expr_effect": signs * scores, "full_matrix_l1": scores * 3.0,
        "tracks_l1": np.arange(n, dtype=float) if flat else scores * 2.0,
        "rank_expr_effect": 1, "rank_full_matrix": 1, "rank_tracks": 1})
    eqtl = pd.DataFrame({"variant_id": ids * 2, "pval_nominal": [*pvalues, *np.ones(n) * 1e-30],
                         "slope": 0.0, "fold": pd.array([pd.NA] * n + [1] * n, "Int64")})
    return effects, eqtl, ids


def test_hypergeometric_p_equals_counting() -> None:
    """Catches a wrong tail or an off-by-one in the overlap p-value (P(X ≥ x), not > x), and
    a table row whose p is not the hypergeometric of its own counts."""
    for universe, marked, drawn in [(30, 7, 5), (200, 50, 50), (12, 12, 4), (9, 0, 3)]:
        for x in range(min(marked, drawn) + 1):
            direct = sum(comb(marked, j) * comb(universe - marked, drawn - j)
                         for j in range(x, min(marked, drawn) + 1)) / comb(universe, drawn)
            assert overlap.hypergeometric_p(x, universe, marked, drawn) == pytest.approx(
                direct, rel=1e-9, abs=1e-300)
    rng = np.random.default_rng(1)
    dosages = block_genotypes(rng, 8)
    scores, _ = regression_scores(dosages, 5, rng)
    _, pvalues = regression_scores(dosages, 45, rng)
    effects, eqtl, ids = gene_tables(scores, pvalues)
    result = overlap.eqtl_overlap(effects, eqtl, ids, dosages, top_k=7, permutations=50)
    for row in result.table[result.table["test"] == "hypergeometric"].itertuples():
        n, k, marked, x = row.universe, row.k, row.eqtl_snps, int(row.statistic)
        direct = sum(comb(marked, j) * comb(n - marked, k - j)
                     for j in range(x, min(marked, k) + 1)) / comb(n, k)
        assert row.p == pytest.approx(direct, rel=1e-9)
        assert row.expected == pytest.approx(k * marked / n)


def test_overlap_counts_recomputed_from_the_variant_table() -> None:
    """Catches an overlap counted against the wrong set (ranks reversed, the fold scans used
    instead of the all-sample scan, the top k by p taken from the largest p)."""
    rng = np.random.default_rng(2)
    dosages = block_genotypes(rng, 10)
    scores, _ = regression_scores(dosages, 33, rng)
    _, pvalues = regression_scores(dosages, 33, rng)
    effects, eqtl, ids = gene_tables(scores, pvalues)
    result = overlap.eqtl_overlap(effects, eqtl, ids, dosages, top_k=10, permutations=20)
    top_model = set(np.argsort(-scores, kind="stable")[:10])
    top_eqtl = set(np.argsort(pvalues, kind="stable")[:10])
    significant = set(np.flatnonzero(pvalues <= 0.05 / len(ids)))
    got = result.table.set_index(["score", "comparison"])["statistic"]
    assert got[("expr_effect", "top_k")] == len(top_model & top_eqtl)
    assert got[("expr_effect", "significant")] == len(top_model & significant)
    assert result.threshold == pytest.approx(0.05 / len(ids))
    assert got[("expr_effect", "top_k")] >= 3  # the same driver: a real overlap


def test_ld_aware_overlap_counts_a_snp_in_perfect_ld() -> None:
    """Catches an LD-aware overlap that counts only identical SNPs (or r² from the wrong
    genotype rows): the model's top SNP is a perfect copy of the lead eQTL SNP, a different
    variant, so the exact overlap is 0 and the LD-aware one is 1."""
    rng = np.random.default_rng(3)
    dosages = block_genotypes(rng, 6)
    dosages[17] = dosages[42]  # variant 17 in perfect LD with 42
    scores = np.linspace(0.01, 0.1, len(dosages))
    scores[17] = 5.0
    pvalues = np.full(len(dosages), 0.5)
    pvalues[42] = 1e-12
    effects, eqtl, ids = gene_tables(scores, pvalues)
    result = overlap.eqtl_overlap(effects, eqtl, ids, dosages, top_k=1, permutations=50)
    got = result.table.set_index(["score", "comparison"])["statistic"]
    assert got[("expr_effect", "top_k")] == 0
    assert got[("expr_effect", "top_k_ld")] == 1
    assert got[("expr_effect", "lead_ld")] == 1
    variants = result.variants.set_index("variant_id")
    assert variants.loc[ids[17], "r2_lead"] == pytest.approx(1.0)
    assert abs(pairwise_r2(genotype_codes(dosages), 42, [17])[0]) == pytest.approx(1.0)


def test_circular_shift_null_is_the_shifted_ranking_and_keeps_ld() -> None:
    """Catches a null that is not a circular shift of the model ranking (recomputed here by
    rolling the scores and ranking again) or one that breaks LD: the model's top k lies in one
    LD block, so under a shift the tagged count is all-or-nothing and its variance far exceeds
    the hypergeometric's (a null that permutes SNPs independently would not)."""
    rng = np.random.default_rng(4)
    n = 200
    hits = np.zeros(n, dtype=bool)
    hits[60:70] = True  # the eQTL SNPs' LD block
    scores = rng.random(n) * 0.1
    scores[120:130] = 1 + rng.random(10)  # the model's top 10: one other block
    chosen = np.argsort(-scores, kind="stable")[:10]
    shifts = overlap.circular_shifts(n, 400, seed=9)
    null = overlap.shift_null(hits, chosen, shifts)
    for shift, count in zip(shifts[:40], null[:40], strict=True):
        rolled = np.roll(scores, shift)
        assert hits[np.argsort(-rolled, kind="stable")[:10]].sum() == count
    hypergeometric_var = stats.hypergeom(n, hits.sum(), 10).var()
    assert null.var() > 3 * hypergeometric_var
    assert null.mean() == pytest.approx(10 * hits.mean(), rel=0.3)
    assert np.array_equal(shifts, overlap.circular_shifts(n, 400, seed=9))  # seeded
    assert shifts.min() >= 1 and shifts.max() <= n - 1


def _replicate_p(seed: int, planted: bool) -> dict[str, float]:
    """Overlap p-values of one synthetic gene: eQTL driven by one SNP, the model's scores by
    another SNP of the same LD block. Planted: as they are. Null: the model's scores moved
    circularly by a random offset, so the model's signal sits at a random place relative to
    the eQTL signal with its LD structure intact (the null the shifts test)."""
    rng = np.random.default_rng(seed)
    dosages = block_genotypes(rng, 15)
    causal = int(rng.integers(len(dosages)))
    block = causal // BLOCK * BLOCK
    driver = block + (causal - block + 1 + int(rng.integers(BLOCK - 1))) % BLOCK
    scores, _ = regression_scores(dosages, driver, rng, effect=1.0)
    _, pvalues = regression_scores(dosages, causal, rng, effect=1.0)
    if not planted:
        scores = np.roll(scores, int(rng.integers(1, len(scores))))
    effects, eqtl, ids = gene_tables(scores, pvalues)
    result = overlap.eqtl_overlap(effects, eqtl, ids, dosages, top_k=10, permutations=199,
                                  seed=seed)
    return result.table.set_index(["score", "comparison"])["p"].to_dict()


def test_null_gives_uniform_ish_p_and_planted_overlap_small_p() -> None:
    """Catches a miscalibrated circular-shift p-value (wrong tail, a missing +1, shifts that
    are not uniform along the window) and a test without power: with the model's signal at a
    random place (null), P(p ≤ α) stays near or below α for every α (the counts are discrete,
    so the p-values are uniform or conservative), while with the model's and the eQTL's
    signals in one LD block (planted) p is small."""
    null = np.array([_replicate_p(s, planted=False)[("expr_effect", "top_k_ld")]
                     for s in range(80)])
    planted = np.array([_replicate_p(1000 + s, planted=True)[("expr_effect", "top_k_ld")]
                        for s in range(15)])
    for alpha in (0.05, 0.1, 0.25, 0.5):
        share = np.mean(null <= alpha)
        assert share <= alpha + 2.5 * np.sqrt(alpha * (1 - alpha) / len(null)), alpha
    assert np.mean(null <= 0.1) > 0  # not stuck at 1
    assert np.median(planted) <= 0.02
    assert np.mean(planted <= 0.05) >= 0.8


def test_ranking_refuses_eqtl_columns() -> None:
    """Catches a circular score: a SNP-effect table carrying any eQTL statistic (p-value,
    slope, t, −log10 p) cannot be ranked, so an overlap can never be computed from a score
    that already contains the p-value it is compared with."""
    rng = np.random.default_rng(5)
    dosages = block_genotypes(rng, 3)
    scores, pvalues = regression_scores(dosages, 4, rng)
    effects, eqtl, ids = gene_tables(scores, pvalues)
    overlap.model_ranking(effects)  # the clean table ranks
    for column in ("pval_nominal", "slope", "slope_se", "tstat", "neg_log10_p", "eqtl_score",
                   "p"):
        leaky = effects.assign(**{column: pvalues})
        with pytest.raises(overlap.CircularScoreError, match=column):
            overlap.model_ranking(leaky)
        with pytest.raises(overlap.CircularScoreError):
            overlap.eqtl_overlap(leaky, eqtl, ids, dosages, permutations=5)


def test_model_top_sets_do_not_depend_on_the_eqtl_table() -> None:
    """Catches a ranking that looks at the eQTL results after the join: the model's top-k
    sets are the same whatever the p-values."""
    rng = np.random.default_rng(6)
    dosages = block_genotypes(rng, 5)
    scores, pvalues = regression_scores(dosages, 7, rng)
    effects, eqtl, ids = gene_tables(scores, pvalues)
    columns = [f"model_top_k_{s}" for s in overlap.SCORES]
    first = overlap.eqtl_overlap(effects, eqtl, ids, dosages, top_k=5, permutations=5)
    shuffled = eqtl.assign(pval_nominal=rng.permutation(eqtl["pval_nominal"].to_numpy()))
    second = overlap.eqtl_overlap(effects, shuffled, ids, dosages, top_k=5, permutations=5)
    pd.testing.assert_frame_equal(first.variants[columns], second.variants[columns])


def test_full_matrix_against_tracks_compared_the_same_way() -> None:
    """Catches a missing or miscounted full-matrix vs selected-tracks comparison: identical
    rankings overlap in all k, unrelated ones near k²/n."""
    rng = np.random.default_rng(7)
    dosages = block_genotypes(rng, 6)
    scores, pvalues = regression_scores(dosages, 4, rng)
    effects, eqtl, ids = gene_tables(scores, pvalues)
    same = overlap.eqtl_overlap(effects, eqtl, ids, dosages, top_k=8, permutations=5)
    got = same.table.set_index(["score", "comparison"])
    assert got.loc[("full_matrix_l1", "top_k_tracks_l1"), "statistic"] == 8
    assert got.loc[("full_matrix_l1", "spearman_tracks_l1"), "statistic"] == pytest.approx(1)
    for score in overlap.SCORES:  # every score gets every comparison
        assert {"top_k", "significant", "top_k_ld", "significant_ld", "lead_ld",
                "spearman"} <= set(got.loc[score].index)
    effects, _, _ = gene_tables(scores, pvalues, flat=True)
    other = overlap.eqtl_overlap(effects, eqtl, ids, dosages, top_k=8, permutations=5)
    row = other.table.set_index(["score", "comparison"]).loc[("full_matrix_l1",
                                                              "top_k_tracks_l1")]
    assert row["statistic"] < 8 and row["expected"] == pytest.approx(64 / len(ids))


def test_summary_fraction_and_poisson_binomial() -> None:
    """Catches a wrong lead-LD fraction or expectation over genes and a wrong tail of its
    p-value (checked by enumerating every outcome)."""
    q = np.array([0.1, 0.3, 0.05, 0.5])
    for observed in range(5):
        direct = sum(np.prod([qi if o else 1 - qi for qi, o in zip(q, outcome, strict=True)])
                     for outcome in itertools.product([0, 1], repeat=4)
                     if sum(outcome) >= observed)
        assert overlap.poisson_binomial_upper(observed, q) == pytest.approx(direct)
    tables = {}
    for g, (hit, expected) in enumerate([(1, 0.1), (0, 0.3), (1, 0.05), (0, 0.5)]):
        tables[f"G{g}"] = pd.DataFrame([dict(zip(overlap.TABLE_COLUMNS, (
            s, "lead_ld", "circular_shift", 1, 1, 50, hit, expected, 0.5), strict=True))
            for s in overlap.SCORES])
    stacked, lead = overlap.overlap_summary(tables)
    assert len(stacked) == 12 and stacked.columns[0] == "gene"
    row = lead.set_index("score").loc["expr_effect"]
    assert row["fraction"] == 0.5 and row["expected_fraction"] == pytest.approx(q.mean())
    assert row["p"] == pytest.approx(overlap.poisson_binomial_upper(2, q))


def test_pooled_top_k_is_the_tail_of_summed_hypergeometric_draws() -> None:
    """The pooled top-k p over genes equals the tail of the sum of independent draws, counted
    here by enumerating every outcome of small urns (catches a tail off by one, genes not
    convolved but averaged, a gene's k or universe swapped); genes with an empty universe
    and rows of other comparisons stay out."""
    from scipy.stats import hypergeom

    urns = [(12, 4, 3), (9, 2, 5), (15, 6, 4)]  # (universe, eQTL SNPs, k)
    observed = [2, 1, 3]
    rows = [dict(zip(overlap.TABLE_COLUMNS, (s, "top_k", "hypergeometric", k, m, n, o,
                                             k * m / n, 0.5), strict=True))
            for (n, m, k), o in zip(urns, observed, strict=True) for s in overlap.SCORES]
    rows += [dict(zip(overlap.TABLE_COLUMNS, ("expr_effect", "top_k", "hypergeometric", 0, 0,
                                              0, 0, np.nan, 1.0), strict=True)),
             dict(zip(overlap.TABLE_COLUMNS, ("expr_effect", "significant", "hypergeometric",
                                              3, 1, 12, 1, 0.25, 0.25), strict=True))]
    stacked = pd.DataFrame(rows)
    pooled = overlap.pooled_overlap(stacked).set_index("score").loc["expr_effect"]
    pmfs = [hypergeom.pmf(np.arange(k + 1), n, m, k) for n, m, k in urns]
    direct = sum(np.prod([pmf[x] for pmf, x in zip(pmfs, draw, strict=True)])
                 for draw in itertools.product(*(range(len(pmf)) for pmf in pmfs))
                 if sum(draw) >= sum(observed))
    assert pooled["genes"] == 3 and pooled["overlap"] == 6
    assert pooled["expected"] == pytest.approx(sum(k * m / n for n, m, k in urns))
    assert pooled["p"] == pytest.approx(direct, rel=1e-9)
    assert 0.001 < direct < 0.5  # a tail, neither certain nor vanishing
