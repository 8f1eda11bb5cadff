"""Our cis_nominal statistics against tensorQTL 1.0.10's on the same genotypes (written by
plink2), expression and covariates: the demo study and a generated one with missing calls, a
multi-allelic record, rare, monomorphic and MAF-boundary sites.

Two peers: ``python -m tensorqtl … --mode cis_nominal`` as users run it, which computes in
float32 (its slopes carry float32 rounding, relative error up to ~1e-2 for slopes near zero,
so it is held to float32-sized tolerances), and tensorQTL's own functions run step for step in
float64 (see ``peers.tensorqtl_nominal_in_process``), held to 1e-6 relative.

Variant sets: tensorQTL writes a NaN row for a monomorphic variant (its correlation is 0/0);
we drop it with a note. With a MAF filter both drop it (MAF 0 < threshold). Every other
variant is in both tables.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from apoe_assets.stats.eqtl import NOMINAL_COLUMNS
from apoe_assets_tests.stats.conftest import (
    GENERATED_MAF,
    LoadedStudy,
    PeerOutputs,
    relative_error,
)
from apoe_assets_tests.stats.peers import read_bim

EXACT_RELATIVE = 1e-6
"""The project's bar for slope, slope_se and pval_nominal against float64 tensorQTL."""
FLOAT32_RELATIVE = 1e-6
"""af and slope_se of float32 tensorQTL: a few float32 roundings (epsilon 6e-8)."""
FLOAT32_SLOPE_IN_SE = 1e-4
"""|Δslope| of float32 tensorQTL, in units of slope_se (measured ≤ 3e-6)."""
FLOAT32_LOG_P = 1e-4
"""|Δ ln p| of float32 tensorQTL, relative to max(1, |ln p|) (measured ≤ 3e-5)."""
COUNT_COLUMNS = ["start_distance", "ma_samples", "ma_count"]


def _keyed(table: pd.DataFrame) -> pd.DataFrame:
    return table.set_index(["phenotype_id", "variant_id"]).sort_index()


def _same_variants(ours: pd.DataFrame, peer: pd.DataFrame, monomorphic: set[tuple[str, str]]
                   ) -> None:
    """Ours = tensorQTL's rows minus its NaN rows, which must be our monomorphic drops."""
    nan_rows = peer.index[peer["slope"].isna()]
    assert set(nan_rows) == monomorphic
    assert ours.index.equals(peer.index.drop(nan_rows))


def _monomorphic(study: LoadedStudy, gene_ids: list[str]) -> set[tuple[str, str]]:
    rows = set()
    for gene_id in gene_ids:
        window = study.window(gene_id)
        called = window.dosages
        with np.errstate(invalid="ignore"):
            constant = np.nanmax(called, axis=1) == np.nanmin(called, axis=1)
        rows |= {(gene_id, v) for v in window.variants["variant_id"][constant]}
    return rows


def _with_missing(study: LoadedStudy, gene_ids: list[str]) -> set[tuple[str, str]]:
    rows = set()
    for gene_id in gene_ids:
        window = study.window(gene_id)
        missing = np.isnan(window.dosages).any(axis=1)
        rows |= {(gene_id, v) for v in window.variants["variant_id"][missing]}
    return rows


def _check_exact(ours: pd.DataFrame, peer: pd.DataFrame) -> None:
    peer = peer.loc[ours.index]
    for column in COUNT_COLUMNS:
        np.testing.assert_array_equal(ours[column].to_numpy(), peer[column].to_numpy(),
                                      err_msg=column)
    assert relative_error(ours["af"], peer["af"]).max() < 1e-12
    for column in ("slope", "slope_se", "pval_nominal"):
        worst = relative_error(ours[column], peer[column]).max()
        assert worst < EXACT_RELATIVE, f"{column}: worst relative error {worst:.2e}"


def _check_float32(ours: pd.DataFrame, peer: pd.DataFrame, imputed: set[tuple[str, str]]
                   ) -> None:
    """float32 tensorQTL. ``ma_count`` is ``int(Σ imputed carrier dosages)``: where the
    imputed part is exactly an integer (e.g. 12 missing calls × mean 5/6 = 10), float32 sums to
    just below it and truncates one lower; we count exactly (as tensorQTL in float64 does).
    Such rows (only among ``imputed``, the variants with missing calls) may differ by one."""
    peer = peer.loc[ours.index]
    for column in ("start_distance", "ma_samples"):
        np.testing.assert_array_equal(ours[column].to_numpy(), peer[column].to_numpy(),
                                      err_msg=column)
    count_gap = (ours["ma_count"] - peer["ma_count"]).abs()
    assert count_gap.max() <= 1
    assert set(count_gap.index[count_gap > 0]) <= imputed
    assert relative_error(ours["af"], peer["af"]).max() < FLOAT32_RELATIVE
    assert relative_error(ours["slope_se"], peer["slope_se"]).max() < 10 * FLOAT32_RELATIVE
    slope_in_se = np.abs(ours["slope"] - peer["slope"]) / ours["slope_se"]
    assert slope_in_se.max() < FLOAT32_SLOPE_IN_SE
    log_p = np.log(ours["pval_nominal"].to_numpy())
    log_p_peer = np.log(peer["pval_nominal"].to_numpy())
    assert (np.abs(log_p - log_p_peer) / np.maximum(1, np.abs(log_p))).max() < FLOAT32_LOG_P


def test_demo_matches_tensorqtl_float64(demo: LoadedStudy, demo_peer: PeerOutputs) -> None:
    ours = _keyed(demo.scan_all(demo_peer.gene_ids))
    peer = _keyed(demo_peer.float64)
    assert list(demo.scan(demo_peer.gene_ids[0]).table.columns) == NOMINAL_COLUMNS
    monomorphic = _monomorphic(demo, demo_peer.gene_ids)
    assert monomorphic, "the demo has monomorphic sites: tensorQTL's NaN rows are exercised"
    _same_variants(ours, peer, monomorphic)
    _check_exact(ours, peer)


def test_demo_matches_tensorqtl_process(demo: LoadedStudy, demo_peer: PeerOutputs) -> None:
    ours = _keyed(demo.scan_all(demo_peer.gene_ids))
    peer = _keyed(demo_peer.process)
    _same_variants(ours, peer, _monomorphic(demo, demo_peer.gene_ids))
    _check_float32(ours, peer, _with_missing(demo, demo_peer.gene_ids))


def test_generated_matches_tensorqtl_with_maf_filter(generated: LoadedStudy,
                                                     generated_peer: PeerOutputs) -> None:
    ours = _keyed(generated.scan_all(generated_peer.gene_ids, maf_threshold=GENERATED_MAF))
    for peer in (generated_peer.float64, generated_peer.process):
        assert not peer["slope"].isna().any()
        _same_variants(ours, _keyed(peer), set())
    _check_exact(ours, _keyed(generated_peer.float64))
    _check_float32(ours, _keyed(generated_peer.process),
                   _with_missing(generated, generated_peer.gene_ids))


def test_generated_study_exercises_filters_and_imputation(
        generated: LoadedStudy, generated_peer: PeerOutputs,
        generated_study) -> None:
    """The hand-built sites land where they should, in both tools' tables."""
    gene_id = generated_peer.gene_ids[0]
    result = generated.scan(gene_id, maf_threshold=GENERATED_MAF)
    tested = set(result.table["variant_id"])
    peer_tested = set(generated_peer.process.query("phenotype_id == @gene_id")["variant_id"])
    variants = generated.window(gene_id).variants.set_index("pos")["variant_id"]
    sites = generated_study.special_sites
    for kept in ("maf_at_threshold", "maf_at_threshold_alt_major"):
        assert variants.loc[sites[kept]] in tested & peer_tested, kept
    for dropped in ("maf_below_threshold", "singleton", "monomorphic_ref", "monomorphic_alt"):
        assert variants.loc[sites[dropped]] not in tested | peer_tested, dropped
    assert result.counts["monomorphic"] >= 2 and result.counts["below_maf"] >= 2
    split = variants.loc[[sites["multiallelic"]]].tolist()
    assert len(split) == 2 and set(split) <= set(read_bim(generated_peer.plink_prefix)
                                                 ["variant_id"])
    window = generated.window(gene_id)
    with_missing = np.isnan(window.dosages[result.rows]).any(axis=1)
    assert with_missing.sum() >= 10, "imputation is exercised on tested variants"
    half = variants.loc[sites["half_samples_missing"]]
    if half in tested:
        assert np.isnan(window.dosages[window.variants["variant_id"] == half]).mean() > 0.4
