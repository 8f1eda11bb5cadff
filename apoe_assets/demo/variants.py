"""From genealogy patterns to VCF-style variants: SNVs, short indels and multi-allelic sites
whose REF is the synthetic reference, plus the planted APOE SNPs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import tskit

from apoe_assets.demo.ancestry import (
    SitePatterns,
    clade_near_frequency,
    clade_pattern,
    nested_clade,
)
from apoe_assets.demo.facts import CHROM, REGION_FIRST, SnpFact
from apoe_assets.genomics.genotypes import variant_id

INDEL_FRACTION = 0.04
"""Share of sites turned into short indels (half deletions, half insertions)."""
MULTIALLELIC_FRACTION = 0.005
MIN_MULTIALLELIC = 3
MAX_INDEL_LENGTH = 8
TRANSITION_SHARE = 2 / 3
"""Ti/Tv ≈ 2, as in human SNVs."""
_TRANSITION = {"A": "G", "G": "A", "C": "T", "T": "C"}
_BASES = "ACGT"


@dataclass
class VariantSet:
    """Sorted, non-overlapping variant sites with their true phased alleles.

    ``pos`` is the 1-based VCF POS; ``haplotypes`` is int8 ``[sites, 2 × samples]`` of allele
    indices (0 = REF, 1 = first ALT, 2 = second ALT).
    """

    pos: np.ndarray
    ids: list[str]
    ref: list[str]
    alts: list[tuple[str, ...]]
    haplotypes: np.ndarray

    def __len__(self) -> int:
        return len(self.pos)

    def kinds(self) -> list[str]:
        """Per site: ``snv``, ``multiallelic``, ``ins`` or ``del``."""
        out = []
        for ref, alts in zip(self.ref, self.alts, strict=True):
            if len(alts) > 1:
                out.append("multiallelic")
            elif len(ref) > 1:
                out.append("del")
            elif len(alts[0]) > 1:
                out.append("ins")
            else:
                out.append("snv")
        return out

    def variant_ids(self) -> list[str]:
        """``chrom:pos:ref:alt`` of each site's first ALT."""
        return [variant_id(CHROM, int(p), r, a[0])
                for p, r, a in zip(self.pos, self.ref, self.alts, strict=True)]

    def index_of(self, pos: int) -> int:
        """Row of the site at 1-based ``pos``."""
        hits = np.flatnonzero(self.pos == pos)
        if not len(hits):
            raise KeyError(f"no variant at {CHROM}:{pos}")
        return int(hits[0])


def build_variants(ts: tskit.TreeSequence, patterns: SitePatterns, region: bytes,
                   planted: Sequence[SnpFact], rng: np.random.Generator) -> VariantSet:
    """Variants of the region (whose first base is :data:`REGION_FIRST`): the genealogy's
    sites as SNVs, indels and multi-allelics, and each ``planted`` SNP on a clade of its local
    tree with the SNP's target frequency."""
    offsets, haplotypes, nodes = _with_planted(ts, patterns, planted)
    protected = np.isin(offsets, [snp.pos - REGION_FIRST for snp in planted])
    haplotypes = haplotypes.copy()
    multi = _choose_multiallelic(ts, offsets, haplotypes, nodes, protected, rng)
    free = np.flatnonzero(~protected & ~multi)
    indel = np.zeros(len(offsets), dtype=bool)
    indel[free[rng.random(len(free)) < INDEL_FRACTION]] = True
    is_deletion = rng.random(len(offsets)) < 0.5
    next_offset = np.append(offsets[1:], len(region))
    refs, alts = [], []
    for i, offset in enumerate(offsets.tolist()):
        if indel[i]:
            ref, alt = _indel(region, offset, int(next_offset[i]), bool(is_deletion[i]), rng)
            refs.append(ref)
            alts.append((alt,))
        else:
            ref = chr(region[offset])
            first = _snv_alt(ref, rng)
            others = [b for b in _BASES if b not in (ref, first)]
            refs.append(ref)
            alts.append((first, str(rng.choice(others))) if multi[i] else (first,))
    ids = ["."] * len(offsets)
    for snp in planted:
        row = int(np.flatnonzero(offsets == snp.pos - REGION_FIRST)[0])
        if refs[row] != snp.ref:
            raise ValueError(f"reference carries {refs[row]} at {snp.rsid}, not {snp.ref}")
        ids[row], alts[row] = snp.rsid, (snp.alt,)
    return VariantSet(offsets + REGION_FIRST, ids, refs, alts, haplotypes)


def _with_planted(ts: tskit.TreeSequence, patterns: SitePatterns, planted: Sequence[SnpFact]
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sites plus the planted SNPs (each replacing any genealogy site at its position)."""
    targets = [snp.pos - REGION_FIRST for snp in planted]
    keep = ~np.isin(patterns.offsets, targets)
    offsets, haplotypes, nodes = (patterns.offsets[keep], patterns.haplotypes[keep],
                                  patterns.nodes[keep])
    chosen: list[int] = []
    rows = []
    for snp, offset in zip(planted, targets, strict=True):
        node = clade_near_frequency(ts, offset, snp.alt_frequency, avoid=chosen)
        chosen.append(node)
        rows.append(clade_pattern(ts, ts.at(offset), node))
    offsets = np.concatenate([offsets, np.array(targets, dtype=np.int64)])
    haplotypes = np.vstack([haplotypes, *rows]) if rows else haplotypes
    nodes = np.concatenate([nodes, np.array(chosen, dtype=np.int64)])
    order = np.argsort(offsets, kind="stable")
    return offsets[order], haplotypes[order], nodes[order]


def _choose_multiallelic(ts: tskit.TreeSequence, offsets: np.ndarray, haplotypes: np.ndarray,
                         nodes: np.ndarray, protected: np.ndarray, rng: np.random.Generator
                         ) -> np.ndarray:
    """Mark some sites multi-allelic: a second mutation on a sub-clade of the first one's
    clade writes allele 2 on that sub-clade's haplotypes (edits ``haplotypes`` in place)."""
    count = haplotypes.sum(axis=1)
    eligible = np.flatnonzero(~protected & (nodes >= 0) & (count >= 10)
                              & (count <= haplotypes.shape[1] - 3))
    wanted = min(max(MIN_MULTIALLELIC, round(MULTIALLELIC_FRACTION * len(offsets))),
                 len(eligible))
    multi = np.zeros(len(offsets), dtype=bool)
    for row in np.sort(rng.choice(eligible, size=wanted, replace=False)).tolist():
        offset = int(offsets[row])
        sub = nested_clade(ts, offset, int(nodes[row]), rng)
        if sub is None:
            continue
        haplotypes[row][clade_pattern(ts, ts.at(offset), sub) == 1] = 2
        multi[row] = True
    return multi


def _snv_alt(ref: str, rng: np.random.Generator) -> str:
    if rng.random() < TRANSITION_SHARE:
        return _TRANSITION[ref]
    return str(rng.choice([b for b in _BASES if b not in (ref, _TRANSITION[ref])]))


def _indel(region: bytes, offset: int, next_offset: int, deletion: bool,
           rng: np.random.Generator) -> tuple[str, str]:
    """A left-aligned, VCF-anchored indel at ``offset`` that ends before ``next_offset``.

    A deletion of bases ``offset+1 … offset+k`` is left-aligned only if the last deleted base
    differs from the anchor, an insertion only if its last inserted base does. A deletion
    takes the drawn length or the nearest that is left-aligned and ends before the next site;
    one that has none becomes an insertion.
    """
    anchor = chr(region[offset])
    length = min(int(rng.geometric(0.45)), MAX_INDEL_LENGTH)
    if deletion:
        room = min(MAX_INDEL_LENGTH, next_offset - offset - 1)
        for k in sorted(range(1, room + 1), key=lambda k: (abs(k - length), k)):
            if chr(region[offset + k]) != anchor:
                return region[offset : offset + k + 1].decode(), anchor
    body = "".join(rng.choice(list(_BASES), size=length - 1)) if length > 1 else ""
    last = str(rng.choice([b for b in _BASES if b != anchor]))
    return anchor, anchor + body + last
