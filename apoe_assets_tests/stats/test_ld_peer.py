"""LD clumping, pairwise r² and scores against PLINK 1.9 on the same genotypes (written by
plink2 from the same VCF), p-values and weights: the demo study and the generated one (missing
and half-missing calls, a split multi-allelic record, rare sites).

Like for like: every PLINK run is restricted with ``--keep`` to the samples our side uses (the
expression samples, a reordered subset of the genotyped ones in the generated study), because
PLINK's r² tables and its mean-imputation frequencies are over the samples it keeps. P-values
come from our own eQTL scan of a gene, written with 17 significant digits in bim order (PLINK
breaks p-value ties in file order, we in row order).

PLINK prints scores and r² with 6 significant digits, so those are held to half a unit in the
6th digit of PLINK's printed value (relative error ≤ 5e-6, the most its output can show); the
clumps (index variants, their order and every member) are held to be identical.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from apoe_assets.stats.eqtl import EqtlResult
from apoe_assets.stats.ld import (
    _r2_exceeding,
    clump,
    genotype_codes,
    haplotype_r2,
    pairwise_r2,
)
from apoe_assets.stats.prs import score, threshold_weights
from apoe_assets_tests.requirements import require_tools
from apoe_assets_tests.stats.conftest import DEMO, DEMO_PEER_GENES, LoadedStudy, relative_error
from apoe_assets_tests.stats.generated import GeneratedStudy
from apoe_assets_tests.stats.peers import (
    PLINK_TOOLS,
    printed_tolerance,
    read_bim,
    run_plink_clump,
    run_plink_r2,
    run_plink_score,
    write_keep,
    write_plink_bed,
)

DEFAULT_SETTING = {"p1": 1.0, "r2": 0.1, "kb": 250.0}
OTHER_SETTINGS = [{"p1": 0.01, "r2": 0.5, "kb": 100.0}, {"p1": 1e-3, "r2": 0.8, "kb": 500.0}]
R2_ANCHORS = 6
"""Anchor variants per study whose r² with every variant within :data:`R2_WINDOW_KB` is
compared."""
R2_WINDOW_KB = 1000.0
SCORE_SEED = 5
PRINTED_SLACK = 1e-9
"""Relative slack on the printed-precision bound (PLINK sums in another order)."""


@dataclass
class PlinkFiles:
    """A study's PLINK 1 fileset and a ``--keep`` file of the samples our side uses."""

    study: LoadedStudy
    bfile: Path
    keep: Path
    folder: Path

    def gene_scan(self, gene_id: str) -> EqtlResult:
        return self.study.scan(gene_id)

    def codes(self, gene_id: str, rows: np.ndarray) -> np.ndarray:
        return genotype_codes(self.study.window(gene_id).dosages[rows])


def _plink_files(study: LoadedStudy, vcf: Path, folder: Path) -> PlinkFiles:
    require_tools(*PLINK_TOOLS)
    bfile = write_plink_bed(vcf, folder / "genotypes")
    return PlinkFiles(study, bfile, write_keep(study.samples, folder / "keep.txt"), folder)


@pytest.fixture(scope="session")
def demo_plink(demo: LoadedStudy, tmp_path_factory: pytest.TempPathFactory) -> PlinkFiles:
    return _plink_files(demo, DEMO / "genotypes" / "chr19.vcf.gz",
                        tmp_path_factory.mktemp("demo_plink"))


@pytest.fixture(scope="session")
def generated_plink(generated: LoadedStudy, generated_study: GeneratedStudy,
                    tmp_path_factory: pytest.TempPathFactory) -> PlinkFiles:
    return _plink_files(generated, generated_study.vcf, tmp_path_factory.mktemp("gen_plink"))


def _demo_gene_ids(study: LoadedStudy) -> list[str]:
    return study.genes.reset_index().set_index("symbol").loc[DEMO_PEER_GENES, "gene_id"].tolist()


def _compare_clumps(files: PlinkFiles, gene_id: str, setting: dict[str, float],
                    tag: str) -> int:
    """Clump one gene's scan both ways; assert identical clumps; return the index count."""
    result = files.gene_scan(gene_id)
    table = result.table
    ids = table["variant_id"].to_numpy()
    pvalues = table["pval_nominal"].to_numpy()
    ours = clump(files.codes(gene_id, result.rows),
                 files.study.window(gene_id).variants["pos"].to_numpy()[result.rows], pvalues,
                 **setting)
    folder = files.folder / f"clump_{gene_id}_{tag}_{setting['p1']}_{setting['r2']}"
    peer = run_plink_clump(files.bfile, pd.DataFrame({"SNP": ids, "P": pvalues}), folder,
                           keep=files.keep, **setting)
    assert list(ids[ours.index]) == peer["SNP"].tolist(), "index variants or their order differ"
    for index_row, members in zip(ours.index, peer["members"], strict=True):
        ours_members = np.flatnonzero(ours.clump_of == index_row)
        assert set(ids[ours_members[ours_members != index_row]]) == set(members), ids[index_row]
    unclumped = ours.clump_of < 0
    assert (pvalues[unclumped] > setting["p1"]).all(), "a variant ≤ p1 in no clump"
    print(f"clump {tag} {gene_id} {setting}: {len(ids)} variants, {len(ours.index)} index "
          f"variants, {int((ours.clump_of >= 0).sum())} clumped; identical to PLINK")
    return len(ours.index)


def test_demo_clumps_match_plink_default(demo_plink: PlinkFiles) -> None:
    counts = [_compare_clumps(demo_plink, g, DEFAULT_SETTING, "default")
              for g in _demo_gene_ids(demo_plink.study)]
    assert min(counts) > 10, "the clumping is not trivial"


@pytest.mark.parametrize("setting", OTHER_SETTINGS, ids=lambda s: f"p1={s['p1']},r2={s['r2']}")
def test_demo_clumps_match_plink_other_settings(demo_plink: PlinkFiles,
                                                setting: dict[str, float]) -> None:
    counts = [_compare_clumps(demo_plink, g, setting, "other")
              for g in _demo_gene_ids(demo_plink.study)]
    assert max(counts) >= 1


@pytest.mark.parametrize("setting", [DEFAULT_SETTING, *OTHER_SETTINGS],
                         ids=lambda s: f"p1={s['p1']},r2={s['r2']}")
def test_generated_clumps_match_plink(generated_plink: PlinkFiles,
                                      setting: dict[str, float]) -> None:
    """Missing calls: PLINK's two-locus tables are over samples called at both variants."""
    study = generated_plink.study
    for gene_id in study.genes.index:
        result = generated_plink.gene_scan(gene_id)
        assert np.isnan(study.window(gene_id).dosages[result.rows]).any()
        _compare_clumps(generated_plink, gene_id, setting, "gen")


def _compare_r2(files: PlinkFiles, tag: str) -> tuple[float, int]:
    """Signed r² of a few anchors with their neighbours (PLINK also lists each anchor with
    itself; not compared); returns the worst error in units of PLINK's printed half-ulp and
    the number of pairs."""
    gene_id = files.study.genes.index[0]
    window = files.study.window(gene_id)
    ids = window.variants["variant_id"].to_numpy()
    codes = genotype_codes(window.dosages)
    anchors = np.random.default_rng(SCORE_SEED).choice(len(ids), R2_ANCHORS, replace=False)
    peer = run_plink_r2(files.bfile, ids[anchors], files.folder / f"r2_{tag}",
                        window_kb=R2_WINDOW_KB, keep=files.keep)
    row_of = {v: i for i, v in enumerate(ids)}
    positions = window.variants["pos"].to_numpy()
    worst = 0.0
    for anchor in anchors:
        pairs = peer[(peer["SNP_A"] == ids[anchor]) & (peer["SNP_B"] != ids[anchor])]
        others = np.array([row_of[v] for v in pairs["SNP_B"]])
        ours = pairwise_r2(codes, anchor, others)
        theirs = pairs["R2"].to_numpy() * np.sign(pairs["DP"].to_numpy())
        assert np.isfinite(ours).all()
        error = np.abs(ours - theirs) / (printed_tolerance(theirs) + 1e-300)
        worst = max(worst, float(error[theirs != 0].max()))
        assert (np.abs(ours[theirs == 0]) < printed_tolerance(np.array([1e-6]))[0]).all()
        # every other polymorphic neighbour in the window is in PLINK's report
        near = np.flatnonzero(np.abs(positions - positions[anchor]) < R2_WINDOW_KB * 1000)
        near = near[near != anchor]
        defined = near[np.isfinite(pairwise_r2(codes, anchor, near))]
        assert set(ids[defined]) == set(pairs["SNP_B"])
    assert worst <= 1 + PRINTED_SLACK, f"r² off by {worst:.3f} printed half-ulps"
    return worst, len(peer)


def test_pairwise_r2_matches_plink(demo_plink: PlinkFiles, generated_plink: PlinkFiles) -> None:
    for files, tag in ((demo_plink, "demo"), (generated_plink, "generated")):
        worst, pairs = _compare_r2(files, tag)
        print(f"r² {tag}: {pairs} pairs, worst {worst:.3f} of PLINK's printed half-ulp")


@pytest.mark.parametrize("threshold", [0.1, 0.5, 0.8])
def test_r2_bound_never_drops_a_pair_above_the_threshold(threshold: float) -> None:
    """Clumping skips the cubic for pairs whose r² at the two extreme phase splits of the
    double heterozygotes stays at or below the threshold. On 200,000 seeded tables (double
    heterozygotes in most, some with empty cells, strong LD planted in a third), every pair
    the exact r² puts above the threshold keeps its exact value and every other pair is 0.
    Catches a bound that is too tight (one scaled by 0.7 drops pairs here) or a pair lost to
    NaN handling."""
    rng = np.random.default_rng(17)
    tables = rng.poisson(rng.uniform(0.0, 30.0, size=(200_000, 1)), size=(200_000, 9))
    linked = rng.random(len(tables)) < 1 / 3
    tables[np.ix_(linked, [1, 2, 3, 5, 6, 7])] //= 8  # few discordant genotypes: high r²
    tables[rng.random(tables.shape) < 0.1] = 0
    exact = np.abs(np.nan_to_num(haplotype_r2(tables)))
    ours = _r2_exceeding(tables, threshold)
    above = exact > threshold
    assert above.sum() > 1000 and (~above).sum() > 1000  # both sides are exercised
    np.testing.assert_array_equal(ours[above], exact[above])
    assert (ours[~above] <= threshold).all()


def _weights_table(files: PlinkFiles, ids: np.ndarray, weights: np.ndarray) -> pd.DataFrame:
    bim = read_bim(files.bfile).set_index("variant_id")
    alt = np.array([v.split(":")[3] for v in ids])
    assert (bim.loc[ids, "a1"].to_numpy() == alt).all(), "A1 is ALT"
    return pd.DataFrame({"ID": ids, "A1": alt, "W": weights})


def _assert_scores_equal(ours: np.ndarray, peer: pd.DataFrame, samples: list[str],
                         dosages: np.ndarray) -> float:
    """Ours against PLINK's printed sums; alleles counted must agree exactly. Returns the
    max relative error (0 where both are 0)."""
    peer = peer.loc[samples]
    np.testing.assert_array_equal(peer["CNT"].to_numpy(), 2 * (~np.isnan(dosages)).sum(axis=0))
    np.testing.assert_array_equal(peer["CNT2"].to_numpy(), np.nansum(dosages, axis=0))
    theirs = peer["SCORESUM"].to_numpy()
    gap = np.abs(ours - theirs)
    assert (gap <= printed_tolerance(theirs) * (1 + PRINTED_SLACK)).all(), gap.max()
    return float(relative_error(ours, theirs).max())


@pytest.mark.parametrize("which", ["demo", "generated"])
def test_scores_match_plink_sum(which: str, request: pytest.FixtureRequest) -> None:
    """Baseline (every tested variant, weighted by its slope) and P+T weights at a few
    thresholds, counted on ALT (A1), with PLINK's mean imputation over the kept samples."""
    files: PlinkFiles = request.getfixturevalue(f"{which}_plink")
    gene_id = files.study.genes.index[0]
    result = files.gene_scan(gene_id)
    table = result.table
    dosages = files.study.window(gene_id).dosages[result.rows]
    assert np.isnan(dosages).sum() > 100, "mean imputation is exercised"
    ids, slopes = table["variant_id"].to_numpy(), table["slope"].to_numpy()
    pvalues = table["pval_nominal"].to_numpy()
    index = np.zeros(len(ids), dtype=bool)
    index[clump(files.codes(gene_id, result.rows), table["pos"].to_numpy(), pvalues).index] = True
    weight_sets = {"baseline": slopes,
                   **{f"pt{t:g}": w for t, w in zip((1e-3, 0.05, 1.0), threshold_weights(
                       slopes, pvalues, index, (1e-3, 0.05, 1.0)), strict=True)}}
    for name, weights in weight_sets.items():
        used = weights != 0
        assert used.sum() >= 2, name
        ours = score(dosages[used], weights[used])
        peer = run_plink_score(files.bfile, _weights_table(files, ids[used], weights[used]),
                               files.folder / f"score_{gene_id}_{name}", keep=files.keep)
        error = _assert_scores_equal(ours, peer, files.study.samples, dosages[used])
        print(f"score {which} {name}: {int(used.sum())} variants, "
              f"{int(np.isnan(dosages[used]).sum())} missing calls, max relative error "
              f"{error:.2e} (PLINK prints 6 digits)")


def test_scores_with_training_frequencies_match_plink(generated_plink: PlinkFiles) -> None:
    """Held-out samples scored with the training samples' means (as the pipeline scores a
    fold): PLINK reads the training frequencies with ``--read-freq``."""
    files = generated_plink
    gene_id = files.study.genes.index[-1]
    result = files.gene_scan(gene_id)
    window = files.study.window(gene_id)
    samples = files.study.samples
    rng = np.random.default_rng(SCORE_SEED)
    test = sorted(rng.choice(samples, len(samples) // 5, replace=False).tolist())
    train = [s for s in samples if s not in set(test)]
    train_dosages = window.subset(train)[result.rows]
    called = (~np.isnan(train_dosages)).sum(axis=1)
    means = np.nansum(train_dosages, axis=1) / called
    ids = result.table["variant_id"].to_numpy()
    weights = result.table["slope"].to_numpy()
    test_dosages = window.subset(test)[result.rows]
    assert np.isnan(test_dosages).sum() > 10
    ours = score(test_dosages, weights, means)
    weights_table = _weights_table(files, ids, weights)
    frequencies = pd.DataFrame({"SNP": ids, "A1": weights_table["A1"],
                                "A2": [v.split(":")[2] for v in ids], "FREQ": means / 2,
                                "NCHROBS": 2 * called})
    peer = run_plink_score(files.bfile, weights_table, files.folder / "score_trainfreq",
                           keep=write_keep(test, files.folder / "test.txt"),
                           frequencies=frequencies)
    error = _assert_scores_equal(ours, peer, test, test_dosages)
    print(f"score with training frequencies: {len(ids)} variants, {len(test)} samples, max "
          f"relative error {error:.2e}")
    # and the test samples' own means would give other scores: the frequencies were used
    assert not np.allclose(score(test_dosages, weights), ours, rtol=1e-4, atol=0)
