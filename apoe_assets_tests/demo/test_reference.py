"""The synthetic reference: real chr19 length and coordinates, human-like composition."""

from __future__ import annotations

import gzip
from pathlib import Path

from apoe_assets.demo.facts import CHROM_LENGTH, REGION_FIRST, REGION_LAST


def test_reference_facts(study: Path) -> None:
    fai = (study / "reference/chr19.fa.gz.fai").read_text().splitlines()
    assert [line.split("\t")[:2] for line in fai] == [["chr19", str(CHROM_LENGTH)]]
    header, *lines = gzip.decompress((study / "reference/chr19.fa.gz").read_bytes()).split()
    assert header == b">chr19"
    contig = b"".join(lines)
    assert len(contig) == CHROM_LENGTH
    before, after = contig[: REGION_FIRST - 1], contig[REGION_LAST:]
    inside = contig[REGION_FIRST - 1 : REGION_LAST]
    assert before.count(b"N") == len(before) and after.count(b"N") == len(after)
    assert set(inside) == set(b"ACGT")  # upper case, no N
    c, g = inside.count(b"C"), inside.count(b"G")
    gc = (c + g) / len(inside)
    cpg_observed_expected = inside.count(b"CG") * len(inside) / (c * g)
    assert 0.46 <= gc <= 0.50
    assert cpg_observed_expected < 0.5
    assert contig[44_908_684 - 1 : 44_908_684] == b"T"  # rs429358
    assert contig[44_908_822 - 1 : 44_908_822] == b"C"  # rs7412
