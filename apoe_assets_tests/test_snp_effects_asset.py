"""The ``snp_effects`` asset on the demo (one gene, a few samples), through Dagster.

What these catch: the asset scoring a different window, allele or TSS than the genome and the
study say (its top variant is recomputed here by two full forwards of the demo weights on the
test's own edit of the reference); an eQTL input sneaking into the graph or the table; counts
and metadata missing.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import jax
import numpy as np
import pytest
from upath import UPath

from apoe_assets.definitions import build_definitions
from apoe_assets.enformer.features import tss_bins
from apoe_assets.enformer.model import build
from apoe_assets.enformer.runtime import load_params
from apoe_assets.enformer.targets import read_targets
from apoe_assets.enformer.variant_effects import COLUMNS, VariantEffects
from apoe_assets.genomics.coordinates import Interval
from apoe_assets.genomics.fasta import ReferenceGenome
from apoe_assets.materialize import materialize_all
from apoe_assets.resources import formats
from apoe_assets.study import load_study
from apoe_assets_tests.studies import demo_copy

GENE = "APOE"
SAMPLES = 24
SNP_EFFECTS = dg.AssetKey("snp_effects")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list, dict]:
    """Materialise ``snp_effects`` and what it needs for one demo gene and a few samples."""
    demo = load_study(demo_copy(tmp_path_factory.mktemp("demo")))
    import pysam
    with pysam.VariantFile(str(demo.genotype_file("chr19"))) as vcf:
        samples = list(vcf.header.samples)[:SAMPLES]
    study_file = demo_copy(tmp_path_factory.mktemp("snp"), genes=[GENE], samples=samples)
    defs = build_definitions(load_study(study_file))
    with dg.instance_for_test() as instance:
        results = materialize_all(defs, instance, report=lambda _: None,
                                  selection=dg.AssetSelection.assets(SNP_EFFECTS).upstream())
        assert all(r.success for r in results), [
            e.message for r in results for e in r.all_events if e.is_failure]
        events = results[-1].get_asset_materialization_events()
        [event] = [e for e in events if e.asset_key == SNP_EFFECTS]
        metadata = {k: getattr(v, "value", v)
                    for k, v in event.materialization.metadata.items()}
    return study_file, results, metadata


def _stored(study_file: Path) -> VariantEffects:
    storage = UPath(load_study(study_file).storage_root)
    return formats.load(storage / "snp_effects" / GENE)


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
    window = load_study(study_file).window_length // 2
    assert effects.table["distance_to_tss"].abs().max() <= window


def test_top_variant_equals_full_forwards_of_the_demo_weights(run) -> None:
    """The top variant by |expr_effect| recomputed here: the reference window centred on the
    TSS from the FASTA, the ALT written at its 1-based position, both through the model."""
    study_file, _, _ = run
    study = load_study(study_file)
    effects = _stored(study_file)
    top = effects.table.sort_values("rank_expr_effect").iloc[0]
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
