"""Writing the demo callset as a bgzipped, tabix-indexed VCFv4.2 (GT only)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pysam

from apoe_assets.demo.facts import CHROM, CHROM_LENGTH
from apoe_assets.demo.masking import MISSING, Calls
from apoe_assets.demo.variants import VariantSet
from apoe_assets.genomics.bgzf import write_bgzf

_MAX_ALLELE = 2
_CODES = _MAX_ALLELE + 2  # allele values −1 … 2


def _genotype_strings() -> np.ndarray:
    """GT text by code ``(a+1)·4 + (b+1) + 16·unphased`` (unphased hets written sorted)."""
    table = []
    for unphased in (False, True):
        for a in range(-1, _MAX_ALLELE + 1):
            for b in range(-1, _MAX_ALLELE + 1):
                if MISSING in (a, b):
                    table.append("./.")
                elif unphased:
                    table.append(f"{min(a, b)}/{max(a, b)}")
                else:
                    table.append(f"{a}|{b}")
    return np.array(table, dtype=object)


def vcf_header(samples: Sequence[str], reference_name: str) -> str:
    """The VCF header lines, ``#CHROM`` line included."""
    lines = [
        "##fileformat=VCFv4.2",
        '##FILTER=<ID=PASS,Description="All filters passed">',
        "##source=apoe_assets.demo (msprime coalescent simulation)",
        f"##reference={reference_name}",
        f"##contig=<ID={CHROM},length={CHROM_LENGTH}>",
        '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">',
        "\t".join(["#CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO", "FORMAT",
                   *samples]),
    ]
    return "\n".join(lines) + "\n"


def vcf_text(variants: VariantSet, calls: Calls, samples: Sequence[str],
             reference_name: str) -> bytes:
    """The whole VCF as text."""
    a, b = calls.alleles[..., 0].astype(np.int64), calls.alleles[..., 1].astype(np.int64)
    codes = (a + 1) * _CODES + (b + 1) + _CODES * _CODES * (~calls.phased)
    strings = _genotype_strings()[codes]
    lines = [vcf_header(samples, reference_name)]
    for row, (pos, vid, ref, alts) in enumerate(
            zip(variants.pos.tolist(), variants.ids, variants.ref, variants.alts, strict=True)):
        fixed = f"{CHROM}\t{pos}\t{vid}\t{ref}\t{','.join(alts)}\t.\tPASS\t.\tGT\t"
        lines.append(fixed + "\t".join(strings[row]) + "\n")
    return "".join(lines).encode()


def write_vcf(path: Path, text: bytes, threads: int = 1) -> None:
    """bgzip ``text`` to ``path`` (atomically) and build its tabix index."""
    tmp = path.with_name(f".{path.name}.tmp")
    write_bgzf(tmp, text, threads=threads)
    os.replace(tmp, path)
    pysam.tabix_index(str(path), preset="vcf", force=True)
