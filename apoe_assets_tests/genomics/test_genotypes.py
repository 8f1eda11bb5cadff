"""The genotype matrix, variant kinds and names, and locus summaries."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from apoe_assets.genomics.genotypes import (
    MISSING,
    VARIANT_COLUMNS,
    GenotypeMatrix,
    variant_id,
    variant_kind,
)
from apoe_assets.genomics.loci import locus_summary, variants_in


@pytest.mark.parametrize(("ref", "alt", "kind"), [
    ("A", "G", "snv"),
    ("AC", "GT", "mnv"),
    ("A", "ATTG", "ins"),
    ("ACGT", "A", "del"),
    ("ACG", "T", "complex"),
    ("A", "GT", "complex"),
    ("AC", "GTA", "complex"),
    ("A", "<DEL>", "symbolic"),
    ("A", "<INS:ME:ALU>", "symbolic"),
    ("A", "*", "symbolic"),
    ("A", ".", "symbolic"),
    ("G", "G]17:198982]", "symbolic"),
    ("T", "]13:123456]T", "symbolic"),
    ("A", "[chr2:321682[A", "symbolic"),
])
def test_variant_kind(ref: str, alt: str, kind: str) -> None:
    assert variant_kind(ref, alt) == kind


def test_variant_id_is_chrom_pos_ref_alt() -> None:
    assert variant_id("chr19", 44_908_684, "T", "C") == "chr19:44908684:T:C"


def matrix(haplotypes: list[list[int]], phased: list[list[bool]], kinds: list[str],
           positions: list[int] | None = None) -> GenotypeMatrix:
    n = len(haplotypes)
    positions = positions or list(range(1, n + 1))
    h = np.array(haplotypes, np.int8)
    called = h != MISSING
    variants = pd.DataFrame({
        "variant_id": [f"chr1:{p}:A:C" for p in positions], "chrom": "chr1",
        "pos": positions, "ref": "A", "alt": "C", "kind": kinds, "site": range(n),
        "af": (h == 1).sum(1) / called.sum(1), "missing": 0,
    })[VARIANT_COLUMNS]
    samples = [f"s{i}" for i in range(h.shape[1] // 2)]
    return GenotypeMatrix(samples, variants, h, np.array(phased, bool))


@pytest.fixture
def genotypes() -> GenotypeMatrix:
    return matrix(
        [[0, 1, 1, 1, -1, 0], [0, 0, 0, 0, 1, 0], [1, 1, 1, 1, 1, 1]],
        [[True, True, True], [True, True, False], [True, True, True]],
        ["snv", "del", "snv"],
        positions=[100, 150, 200],
    )


def test_dosages_and_heterozygous(genotypes: GenotypeMatrix) -> None:
    dosages = genotypes.dosages()
    assert dosages.dtype == np.float32
    assert dosages[0, :2].tolist() == [1.0, 2.0]
    assert np.isnan(dosages[0, 2])
    assert dosages[1].tolist() == [0.0, 0.0, 1.0]
    assert genotypes.heterozygous().tolist() == [
        [True, False, False], [False, False, True], [False, False, False]]


def test_summary_counts(genotypes: GenotypeMatrix) -> None:
    summary = genotypes.summary()
    assert summary["samples"] == 3
    assert summary["variants"] == 3
    assert summary["sites"] == 3
    assert summary["kind_snv"] == 2
    assert summary["kind_del"] == 1
    assert summary["heterozygous_genotypes"] == 2
    assert summary["unphased_heterozygous"] == 1
    assert summary["phased_heterozygous_fraction"] == pytest.approx(0.5)
    assert summary["missing_allele_fraction"] == pytest.approx(1 / 18)


def test_shapes_are_checked() -> None:
    with pytest.raises(ValueError, match="haplotypes"):
        matrix([[0, 1, 1]], [[True]], ["snv"])
    good = matrix([[0, 1]], [[True]], ["snv"])
    with pytest.raises(ValueError, match="phased"):
        GenotypeMatrix(good.samples, good.variants, good.haplotypes, np.ones((1, 2), bool))


def test_variants_in_uses_the_first_ref_base(genotypes: GenotypeMatrix) -> None:
    # positions 100, 150, 200 are 0-based 99, 149, 199
    assert variants_in(genotypes, 99, 150).tolist() == [True, True, False]
    assert variants_in(genotypes, 100, 199).tolist() == [False, True, False]
    assert variants_in(genotypes, 0, 99).tolist() == [False, False, False]


def test_locus_summary_counts_polymorphic_variants(genotypes: GenotypeMatrix) -> None:
    gene = pd.Series({"gene_id": "G1", "symbol": "A", "chrom": "chr1", "strand": "+",
                      "tss": 120, "window_start": 0, "window_end": 240, "cis_start": 99,
                      "cis_end": 149})
    expression = pd.Series([1.0, 3.0, np.nan])
    row = locus_summary(gene, genotypes, expression).loc["G1"]
    assert row["variants_in_window"] == 2  # the third is fixed (af 1)
    assert row["variants_in_cis"] == 1
    assert row["expression_samples"] == 2
    assert row["expression_mean"] == pytest.approx(2.0)
    assert row["expression_sd"] == pytest.approx(np.sqrt(2.0))
    empty = locus_summary(gene, genotypes, None).loc["G1"]
    assert empty["expression_samples"] == 0
    assert np.isnan(empty["expression_mean"])
