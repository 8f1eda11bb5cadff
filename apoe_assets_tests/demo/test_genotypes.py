"""The VCF: consistent with the reference, realistic in content, APOE SNPs planted."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyfaidx
import pysam

from apoe_assets.demo.facts import REGION_FIRST, REGION_LAST
from apoe_assets_tests.demo.reading import Vcf


def test_header_and_samples(vcf: Vcf) -> None:
    assert vcf.header.startswith("##fileformat=VCFv4.2\n")
    assert "##contig=<ID=chr19,length=58617616>" in vcf.header
    assert [line for line in vcf.header.splitlines() if line.startswith("##FORMAT")] == [
        '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">']
    assert vcf.samples == [f"S{i:04d}" for i in range(1, len(vcf.samples) + 1)]


def test_sites_sorted_unique_and_not_overlapping(vcf: Vcf) -> None:
    assert set(vcf.chrom) == {"chr19"}
    assert vcf.pos.min() >= REGION_FIRST and vcf.pos.max() <= REGION_LAST
    ends = vcf.pos + np.array([len(r) for r in vcf.ref]) - 1
    assert (vcf.pos[1:] > ends[:-1]).all()  # sorted, no duplicates, no site inside a REF


def test_ref_matches_reference(study: Path, vcf: Vcf) -> None:
    fasta = pyfaidx.Fasta(str(study / "reference/chr19.fa.gz"), as_raw=True)
    region = fasta["chr19"][REGION_FIRST - 1 : REGION_LAST]
    fasta.close()
    for pos, ref in zip(vcf.pos.tolist(), vcf.ref, strict=True):
        start = pos - REGION_FIRST
        assert region[start : start + len(ref)] == ref, pos


def test_indels_are_anchored_and_left_aligned(vcf: Vcf) -> None:
    kinds = {"snv": 0, "ins": 0, "del": 0}
    for ref, alts in zip(vcf.ref, vcf.alts, strict=True):
        alt = alts[0]
        if len(ref) > 1:  # deletion: ALT is the anchor; the last deleted base is not it
            assert alt == ref[0] and ref[-1] != ref[0]
            kinds["del"] += 1
        elif len(alt) > 1:  # insertion: anchor + bases, the last not the anchor
            assert alt[0] == ref and alt[-1] != ref
            kinds["ins"] += 1
        else:
            kinds["snv"] += 1
    indel_share = (kinds["ins"] + kinds["del"]) / len(vcf.pos)
    assert 0.02 <= indel_share <= 0.07
    assert kinds["ins"] > 0 and kinds["del"] > 0


def test_multiallelic_sites_use_their_second_allele(vcf: Vcf) -> None:
    multi = [i for i, alts in enumerate(vcf.alts) if len(alts) > 1]
    assert len(multi) >= 3
    for i in multi:
        assert len(vcf.ref[i]) == 1 and all(len(a) == 1 for a in vcf.alts[i])
        assert len({vcf.ref[i], *vcf.alts[i]}) == 3
        assert (vcf.alleles[i] == 2).any() and (vcf.alleles[i] == 1).any()
    assert vcf.alleles.max() == 2


def test_missing_and_unphased_at_planted_rates(vcf: Vcf) -> None:
    a, b = vcf.alleles[..., 0], vcf.alleles[..., 1]
    missing = (a < 0) | (b < 0)
    assert ((a < 0) == (b < 0)).all()  # ./. only, never half-missing
    het = (a != b) & ~missing
    unphased = ~vcf.phased & ~missing
    assert 0.002 <= missing.mean() <= 0.01  # planted ≈ 0.5%
    assert 0.005 <= unphased[het].mean() <= 0.02  # planted 1% of heterozygotes
    assert not unphased[~het].any()  # everything else phased


def test_apoe_snps_planted(vcf: Vcf) -> None:
    rs429358, rs7412 = vcf.row(44_908_684), vcf.row(44_908_822)
    assert (vcf.ids[rs429358], vcf.ref[rs429358], vcf.alts[rs429358]) == ("rs429358", "T", ["C"])
    assert (vcf.ids[rs7412], vcf.ref[rs7412], vcf.alts[rs7412]) == ("rs7412", "C", ["T"])
    assert sum(i != "." for i in vcf.ids) == 2
    e4, e2 = vcf.alleles[rs429358], vcf.alleles[rs7412]
    called = (e4 >= 0).all(axis=1) & (e2 >= 0).all(axis=1)
    # clade sizes are discrete: the nearest clade to 0.14 / 0.08 in a few hundred haplotypes
    assert 0.10 <= (e4[called] == 1).mean() <= 0.18
    assert 0.05 <= (e2[called] == 1).mean() <= 0.11
    both_phased = called & vcf.phased[rs429358] & vcf.phased[rs7412]
    assert not ((e4[both_phased] == 1) & (e2[both_phased] == 1)).any()  # no ε4-ε2 haplotype


def test_tabix_index_answers_region_queries(study: Path, vcf: Vcf) -> None:
    with pysam.TabixFile(str(study / "genotypes/chr19.vcf.gz")) as tabix:
        rows = list(tabix.fetch("chr19", 44_908_683, 44_908_822))
    ends = vcf.pos + np.array([len(r) for r in vcf.ref]) - 1
    expected = ((ends >= 44_908_684) & (vcf.pos <= 44_908_822)).sum()
    assert len(rows) == expected and rows[0].split("\t")[2] == "rs429358"
