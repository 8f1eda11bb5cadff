"""The demo's planted truth recovered by the cis-eQTL scan: causal SNPs on top where the planted
h² is substantial, calibrated p-values where nothing was planted."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from apoe_assets.stats.eqtl import impute_mean, permutation_test

H2_STRONG = 0.1
LD_PROXY_R2 = 0.8
ALPHA = 0.05
CALIBRATION_SDS = 3.0
"""How many standard errors the share of p < 0.05 may stray from 0.05."""
KS_ALPHA = 0.01
"""Null genes' permutation p-values must not be rejected as uniform at this level."""
N_PERMUTATIONS = 1000
SEED = 20231107


def _snp_only(genes: pd.DataFrame) -> pd.DataFrame:
    """Genes whose genetic signal is only the planted causal SNPs: the demo may add a
    component made by the demo Enformer weights (``enformer_share``), driven by variants that
    are not in causal_variants.tsv."""
    if "enformer_share" not in genes.columns:
        return genes
    return genes[genes["enformer_share"] == 0]


def _dosage_r2(window, row: int, others: list[int]) -> np.ndarray:
    dosages = impute_mean(window.dosages[[row, *others]])
    return np.corrcoef(dosages)[0, 1:] ** 2


def test_top_eqtl_tags_a_causal_variant(demo, demo_truth) -> None:
    genes, causal = demo_truth
    genes = _snp_only(genes)
    strong = genes.index[genes["h2_planted"] >= H2_STRONG]
    assert len(strong) >= 15
    for gene_id in strong:
        result = demo.scan(gene_id)
        window = demo.window(gene_id)
        ids = window.variants["variant_id"].tolist()
        top = result.top()
        causal_rows = [ids.index(v) for v in causal.query("gene_id == @gene_id")["variant_id"]]
        r2 = _dosage_r2(window, ids.index(top["variant_id"]), causal_rows)
        assert r2.max() >= LD_PROXY_R2, (genes.loc[gene_id, "symbol"], top["variant_id"], r2)


def _effective_tests(window, rows: np.ndarray) -> float:
    """Effective number of independent tests of correlated variants, M² / Σ r²ᵢⱼ (the
    variance of a share of correlated test outcomes is that of M_eff independent ones)."""
    dosages = impute_mean(window.dosages[rows])
    z = dosages - dosages.mean(axis=1, keepdims=True)
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    gram = z.T @ z  # samples × samples: Σ r²ᵢⱼ = ‖ZZᵀ‖²_F = ‖ZᵀZ‖²_F
    return len(rows) ** 2 / float((gram ** 2).sum())


def test_null_genes_are_calibrated(demo, demo_truth) -> None:
    """Share of nominal p < 0.05 within sampling error of 0.05 per null gene and pooled, the
    sampling error allowing for LD; the gene-level permutation p is not small (Bonferroni over
    the null genes) and they look uniform."""
    genes = _snp_only(demo_truth[0])
    null = genes.index[genes["h2_planted"] == 0]
    assert len(null) >= 5
    shares, variances, permutation_p = [], [], []
    for gene_id in null:
        result = demo.scan(gene_id)
        share = float((result.table["pval_nominal"] < ALPHA).mean())
        variance = ALPHA * (1 - ALPHA) / _effective_tests(demo.window(gene_id), result.rows)
        assert abs(share - ALPHA) <= CALIBRATION_SDS * np.sqrt(variance), (gene_id, share)
        shares.append(share)
        variances.append(variance)
        permutation = permutation_test(demo.window(gene_id), demo.expression.loc[gene_id],
                                       demo.covariates, gene_id=gene_id,
                                       n_permutations=N_PERMUTATIONS, seed=SEED)
        permutation_p.append((permutation.pval_perm, permutation.pval_beta))
    pooled_sd = np.sqrt(np.sum(variances)) / len(null)
    assert abs(np.mean(shares) - ALPHA) <= CALIBRATION_SDS * pooled_sd
    table = pd.DataFrame(permutation_p, columns=["perm", "beta"], index=null)
    assert (table > ALPHA / len(null)).all().all(), table
    assert table["beta"].to_numpy() == pytest.approx(table["perm"].to_numpy(), abs=0.05)
    assert scipy.stats.kstest(table["beta"], "uniform").pvalue > KS_ALPHA
