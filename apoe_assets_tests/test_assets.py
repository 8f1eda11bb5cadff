"""Ingestion assets on a tiny study, materialised for real on an ephemeral instance."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd

from apoe_assets.definitions import build_definitions
from apoe_assets.genomics.fasta import ReferenceGenome
from apoe_assets.genomics.vcf import read_genotypes
from apoe_assets.resources.formats import read_genotypes as read_stored_genotypes
from apoe_assets.study import load_study
from apoe_assets_tests.conftest import materialise
from apoe_assets_tests.studies import (
    SAMPLES,
    TinyStudy,
    write_tiny_study,
)


def _metadata(results: list[dg.ExecuteInProcessResult], asset: str) -> dict:
    for result in results:
        for event in result.get_asset_materialization_events():
            if event.asset_key == dg.AssetKey(asset):
                return {k: getattr(v, "value", v) for k, v in
                        event.materialization.metadata.items()}
    raise AssertionError(f"{asset} was not materialised")


def test_everything_materialises_and_matches_the_core(tiny: TinyStudy,
                                                      instance: dg.DagsterInstance) -> None:
    results = materialise(tiny.study, instance)
    assert all(r.success for r in results)
    stored = read_stored_genotypes(tiny.storage / "genotypes" / "chr1.genotypes")
    direct, _ = read_genotypes(tiny.vcf, "chr1", ReferenceGenome(tiny.folder / "reference.fa.gz"))
    pd.testing.assert_frame_equal(stored.variants, direct.variants)
    np.testing.assert_array_equal(stored.haplotypes, direct.haplotypes)
    assert stored.samples == SAMPLES

    expression = pd.read_parquet(tiny.storage / "expression.parquet")
    covariates = pd.read_parquet(tiny.storage / "covariates.parquet")
    assert list(expression.columns) == SAMPLES  # VCF order, expression-only sample dropped
    assert list(covariates.columns) == SAMPLES
    assert _metadata(results, "expression")["samples_dropped_without_genotypes"] == 1
    raw = pd.read_csv(tiny.folder / "expression.bed.gz", sep="\t").set_index("gene_id")
    assert expression.loc["ENSG00000000002", "s3"] == raw.loc["ENSG00000000002", "s3"]

    locus = pd.read_parquet(tiny.storage / "gene_locus" / "GENE_B.parquet")
    assert locus.loc["ENSG00000000002", "tss"] == 13_999  # 1-based end 14,000 on − strand
    assert locus.loc["ENSG00000000002", "window_end"] - 13_999 == 512  # centred, L = 1024


def test_checks_report_unphased_genotypes(tiny: TinyStudy, instance: dg.DagsterInstance
                                          ) -> None:
    results = materialise(tiny.study, instance)
    checks = {e.check_name: e for r in results for e in r.get_asset_check_evaluations()}
    assert checks["ref_matches_reference"].passed
    phased = checks["heterozygotes_phased"]
    assert not phased.passed  # two of 19 heterozygous genotypes are written 0/1
    assert phased.metadata["unphased_heterozygous"].value == 2
    assert phased.severity == dg.AssetCheckSeverity.WARN
    assert checks["samples_shared"].passed and checks["expression_complete"].passed


def _upstream_chromosomes(graph: object, gene: str) -> set[str]:
    node = graph.get(dg.AssetKey("gene_locus"))
    mapping = node.partition_mappings[dg.AssetKey("genotypes")]
    chromosomes = graph.get(dg.AssetKey("genotypes")).partitions_def
    result = mapping.get_upstream_mapped_partitions_result_for_partitions(
        node.partitions_def.subset_with_partition_keys([gene]), node.partitions_def, chromosomes)
    return set(result.partitions_subset.get_partition_keys())


def test_each_gene_needs_only_its_chromosome(tmp_path: Path,
                                             instance: dg.DagsterInstance) -> None:
    tiny = write_tiny_study(tmp_path, second_chromosome=True)
    study = load_study(tiny.study)
    graph = build_definitions(study).resolve_asset_graph()
    assert {g: _upstream_chromosomes(graph, g) for g in ("GENE_A", "GENE_B", "GENE_C")} == {
        "GENE_A": {"chr1"}, "GENE_B": {"chr1"}, "GENE_C": {"chr2"}}
    results = materialise(tiny.study, instance)
    assert all(r.success for r in results)
    chr2 = read_stored_genotypes(tiny.storage / "genotypes" / "chr2.genotypes")
    assert chr2.variants["variant_id"].str.startswith("chr2:8100:").all()
    locus = pd.read_parquet(tiny.storage / "gene_locus" / "GENE_C.parquet")
    assert locus["variants_in_window"].item() == 1  # its own chromosome's variant, no other
