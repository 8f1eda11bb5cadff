"""``snp_effects``, ``eqtl_overlap`` and ``snp_effects_summary`` on the whole demo, through
Dagster.

What these catch: the asset scoring a different window, allele or TSS than the genome and the
study say (its top SNV is recomputed here by two full forwards of the demo weights on the
test's own edit of the reference); an eQTL input sneaking into the graph or the table; counts
and metadata missing; an overlap that is not the plain intersection of the two top-k lists;
and, against the demo's planted truth, a model ranking that does not find the variants that
carry its Enformer component (APOE, TOMM40, APOC1) or that finds them where there are none.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import jax
import numpy as np
import pandas as pd
import pytest
from upath import UPath

from apoe_assets.definitions import build_definitions
from apoe_assets.demo.enformer_component import ENFORMER_GENES
from apoe_assets.enformer.convert import load_params
from apoe_assets.enformer.features import tss_bins
from apoe_assets.enformer.model import build
from apoe_assets.enformer.targets import read_targets
from apoe_assets.enformer.variant_effects import COLUMNS, VariantEffects
from apoe_assets.genomics.coordinates import Interval
from apoe_assets.genomics.fasta import ReferenceGenome
from apoe_assets.materialize import materialize_all
from apoe_assets.resources import formats
from apoe_assets.study import load_study
from apoe_assets_tests.studies import demo_copy

GENE = "APOE"
RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"
SNP_EFFECTS = dg.AssetKey("snp_effects")
SUMMARY = dg.AssetKey("snp_effects_summary")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list, dict]:
    """Materialise ``snp_effects_summary`` and everything it needs for every demo gene: the
    scans and effects of all genes in one run (one model load), the overlaps per gene."""
    # no gene-level permutations: the overlap reads the nominal scan alone
    study_file = demo_copy(tmp_path_factory.mktemp("snp"), eqtl={"permutations": 0})
    study = load_study(study_file)
    defs = build_definitions(study)
    per_gene = dg.AssetSelection.assets("cis_eqtl", SNP_EFFECTS)
    genes = study.gene_table["partition_key"].tolist()
    with dg.instance_for_test() as instance:
        results = materialize_all(defs, instance, report=lambda _: None,
                                  selection=per_gene.upstream() - per_gene)
        job = defs.resolve_implicit_global_asset_job_def()
        results.append(job.execute_in_process(
            instance=instance, asset_selection=[dg.AssetKey("cis_eqtl"), SNP_EFFECTS],
            tags={RANGE_START: genes[0], RANGE_END: genes[-1]}, raise_on_error=False))
        results += materialize_all(defs, instance, report=lambda _: None,
                                   selection=dg.AssetSelection.assets(SUMMARY).upstream()
                                   - per_gene.upstream())
        assert all(r.success for r in results), [
            e.message for r in results for e in r.all_events if e.is_failure]
        events = [e for r in results for e in r.get_asset_materialization_events()]
        metadata = {(e.asset_key.to_user_string(), e.partition): {
            k: getattr(v, "value", v) for k, v in e.materialization.metadata.items()}
            for e in events}
    return study_file, results, metadata


def _storage(study_file: Path) -> UPath:
    return UPath(load_study(study_file).storage_root)


def _stored(study_file: Path, gene: str = GENE) -> VariantEffects:
    return formats.load(_storage(study_file) / "snp_effects" / gene)


def test_snp_effects_takes_no_eqtl_input() -> None:
    """By construction: ``cis_eqtl`` is nowhere upstream of ``snp_effects`` in the demo
    definitions (while it is upstream of the genotype models, so the check can fail)."""
    graph = build_definitions(load_study()).resolve_asset_graph()
    upstream = dg.AssetSelection.assets(SNP_EFFECTS).upstream().resolve(graph)
    assert dg.AssetKey("cis_eqtl") not in upstream
    assert {dg.AssetKey(k) for k in ("genotypes", "gene_annotation", "reference_genome")
            } <= upstream
    models = dg.AssetSelection.assets("prs_scores").upstream().resolve(graph)
    assert dg.AssetKey("cis_eqtl") in models


def test_the_table_and_metadata(run) -> None:
    study_file, _, metadata = run
    metadata = metadata[("snp_effects", GENE)]
    effects = _stored(study_file)
    assert list(effects.table.columns) == COLUMNS
    assert not [c for c in effects.table.columns
                if any(word in c.lower() for word in ("eqtl", "pval", "slope", "beta"))]
    assert len(effects.table) == metadata["scored"] > 20
    assert effects.sad.shape == (len(effects.table), 1)  # the demo's one H3K27me3 track
    assert effects.tracks["description"].tolist() == ["CAGE:brain, adult, demo",
                                                      "CHIP:H3K27me3:brain, demo"]
    assert metadata["variants_in_window"] == metadata["scored"] + sum(
        metadata[k] for k in metadata if k.startswith("skipped_"))
    assert metadata["skipped_ref_mismatch"] == 0
    assert metadata["variants_per_second"] > 0 and "effect_plot" in metadata
    assert metadata["indels"] is True and metadata["skipped_indel"] == 0  # the demo scores them
    assert effects.table["kind"].isin(["ins", "del"]).any()
    window = load_study(study_file).window_length // 2
    assert effects.table["distance_to_tss"].abs().max() <= window


def test_top_snv_equals_full_forwards_of_the_demo_weights(run) -> None:
    """The top SNV by |expr_effect| recomputed here: the reference window centred on the
    TSS from the FASTA, the ALT written at its 1-based position, both through the model."""
    study_file, _, _ = run
    study = load_study(study_file)
    effects = _stored(study_file)
    snvs = effects.table[effects.table["kind"] == "snv"]
    top = snvs.sort_values("rank_expr_effect").iloc[0]
    gene = study.gene_table.set_index("partition_key").loc[GENE]
    config, params = load_params(study.enformer.weights)
    length, tss0 = config.sequence_length, int(gene["tss"])
    reference = ReferenceGenome(study.reference_fasta)
    bases = reference.fetch(Interval(gene["chrom"], tss0 - length // 2, tss0 + length // 2))
    reference.close()
    i = int(top["pos"]) - 1 - (tss0 - length // 2)
    assert bases[i:i + len(top["ref"])].decode() == top["ref"]
    alt = bases[:i] + top["alt"].encode() + bases[i + len(top["ref"]):]
    codes = {ord(b): k for k, b in enumerate("ACGT")}

    def encode(sequence: bytes) -> np.ndarray:
        x = np.zeros((1, len(sequence), 4), np.float32)
        for j, byte in enumerate(sequence):
            if byte in codes:
                x[0, j, codes[byte]] = 1
        return x

    apply = jax.jit(build(config).apply)
    ref_out, alt_out = (np.asarray(apply(params, encode(s))["human"][0], np.float64)
                        for s in (bases, alt))
    cage = read_targets(study.enformer.targets)["description"].str.startswith("CAGE:brain")
    tss = tss_bins(config.target_length)
    expected = (alt_out - ref_out)[tss][:, cage.to_numpy()].sum()
    assert abs(expected) > 100 * 2e-6  # well above float32 noise between batched and single
    np.testing.assert_allclose(top["expr_effect"], expected, rtol=1e-3, atol=2e-6)


def _top_k_overlap(study_file: Path, gene: str, k: int) -> tuple[int, int]:
    """The test's own count: of the variants in both stored tables, the top ``k`` by
    |expr_effect| against the top ``k`` by the all-sample eQTL p (ties in position order);
    returns the overlap and the number of variants in both."""
    storage = _storage(study_file)
    effects = _stored(study_file, gene).table
    eqtl = pd.read_parquet(storage / "cis_eqtl" / f"{gene}.parquet")
    p = eqtl[eqtl["fold"].isna()].set_index("variant_id")["pval_nominal"]
    both = effects[effects["variant_id"].isin(p.index)].sort_values("pos", kind="stable")
    by_effect = both["expr_effect"].abs().sort_values(ascending=False, kind="stable")
    model = set(both.loc[by_effect.index[:k], "variant_id"])
    eqtl_top = set(p.loc[both["variant_id"]].sort_values(kind="stable").index[:k])
    return len(model & eqtl_top), len(both)


def _pooled_p(overlaps: list[tuple[int, int]], k: int) -> float:
    """P(Σ overlap ≥ observed) with each gene's overlap an independent hypergeometric draw of
    ``k`` among its variants, ``k`` of them marked: the distribution convolved here."""
    from scipy.stats import hypergeom

    total = np.array([1.0])
    for _, universe in overlaps:
        total = np.convolve(total, hypergeom.pmf(np.arange(k + 1), universe, k, k))
    return float(total[sum(o for o, _ in overlaps):].sum())


def test_each_overlap_is_the_intersection_of_the_two_top_lists(run) -> None:
    """Per gene the stored top-k overlap of |expr_effect| with the eQTL p equals the test's
    own intersection of the two lists; plots in the metadata and as files beside the table."""
    study_file, _, metadata = run
    study = load_study(study_file)
    k = study.overlap.top_k
    assert k == 3  # the demo's setting (its windows hold 43–64 variants)
    for gene in study.genes:
        table = pd.read_parquet(_storage(study_file) / "eqtl_overlap" / f"{gene}.parquet")
        row = table.set_index(["score", "comparison"]).loc[("expr_effect", "top_k")]
        overlap, universe = _top_k_overlap(study_file, gene, k)
        assert (row["statistic"], row["universe"], row["k"]) == (overlap, universe, k), gene
        shown = metadata[("eqtl_overlap", gene)]
        assert {"scatter_plot", "overlap_plot", "table"} <= set(shown)
        for name in ("scatter_plot", "overlap_plot"):
            assert Path(shown[f"{name}_file"]).stat().st_size > 1000, (gene, name)


def test_planted_genes_overlap_the_eqtls_beyond_chance(run) -> None:
    """Planted truth: the demo's APOE, TOMM40 and APOC1 carry an Enformer component (the demo
    weights' prediction from each person's haplotypes), so their model top SNPs overlap their
    eQTL top SNPs beyond chance, pooled over the three (the test's own hypergeometric sum);
    the other nine carry none and pooled overlap no more than chance. Every gene's p is
    printed (``pytest -s``). The summary's pooled row over all genes is the same sum."""
    study_file, _, metadata = run
    study = load_study(study_file)
    k = study.overlap.top_k
    overlaps = {gene: _top_k_overlap(study_file, gene, k) for gene in study.genes}
    planted = [overlaps[g] for g in ENFORMER_GENES]
    null = [overlaps[g] for g in study.genes if g not in ENFORMER_GENES]
    summary = pd.read_parquet(_storage(study_file) / "snp_effects_summary.parquet")
    per_gene = summary[(summary["score"] == "expr_effect") & (summary["comparison"] == "top_k")]
    for row in per_gene.itertuples():
        print(f"{row.gene:8} planted={row.gene in ENFORMER_GENES!s:5} top-{k} overlap "
              f"{row.statistic:.0f} (expected {row.expected:.2f}) of {row.universe}, "
              f"p={row.p:.3f}")
    p_planted, p_null = _pooled_p(planted, k), _pooled_p(null, k)
    print(f"pooled: planted {sum(o for o, _ in planted)} p={p_planted:.4f}; "
          f"null {sum(o for o, _ in null)} p={p_null:.3f}")
    assert p_planted < 0.05
    assert p_null > 0.05
    pooled = summary[(summary["gene"] == "all genes") & (summary["comparison"] == "pooled_top_k")
                     ].set_index("score").loc["expr_effect"]
    assert pooled["statistic"] == sum(o for o, _ in overlaps.values())
    assert pooled["p"] == pytest.approx(_pooled_p(list(overlaps.values()), k), rel=1e-9)
    assert metadata[("snp_effects_summary", None)]["pooled_top_k_p_expr_effect"] == \
        pytest.approx(pooled["p"])
