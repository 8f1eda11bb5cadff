"""The genotype matrix: biallelic variant records × phased haplotypes of every sample."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from apoe_assets.genomics.coordinates import Interval, from_one_based

MISSING = -1
"""Haplotype code of a missing allele (``.`` in a VCF); 0 is REF, 1 is ALT."""

VARIANT_COLUMNS = ["variant_id", "chrom", "pos", "ref", "alt", "kind", "site", "af", "missing"]
"""Columns of the variant table. ``pos`` is the 1-based VCF POS (as in ``variant_id``);
``site`` numbers the VCF record a split multi-allelic record came from."""


@dataclass
class GenotypeMatrix:
    """Phased genotypes of one chromosome.

    ``haplotypes`` is int8 ``[variants, 2 × samples]`` with columns ``s0_h1, s0_h2, s1_h1, …``
    and :data:`MISSING` for missing alleles; ``phased`` is bool ``[variants, samples]``, False
    where the VCF wrote ``/`` (unphased).
    """

    samples: list[str]
    variants: pd.DataFrame
    haplotypes: np.ndarray
    phased: np.ndarray

    def __post_init__(self) -> None:
        self._check_shapes(len(self.variants))

    def _check_shapes(self, n_var: int) -> None:
        n_samples = len(self.samples)
        if self.haplotypes.shape != (n_var, 2 * n_samples):
            raise ValueError(f"haplotypes {self.haplotypes.shape} != {(n_var, 2 * n_samples)}")
        if self.phased.shape != (n_var, n_samples):
            raise ValueError(f"phased shape {self.phased.shape} != {(n_var, n_samples)}")

    @property
    def n_variants(self) -> int:
        return self.haplotypes.shape[0]

    def digest(self) -> str:
        """A digest of the content: samples, variant table, alleles and phasing (what a model
        downstream reads), so a rewritten file with the same genotypes keeps its digest."""
        hasher = hashlib.blake2b(digest_size=16)
        hasher.update("\t".join(self.samples).encode())
        hasher.update(self.variants.to_csv(index=False).encode())
        hasher.update(np.ascontiguousarray(self.haplotypes).tobytes())
        hasher.update(np.ascontiguousarray(self.phased).tobytes())
        return hasher.hexdigest()

    def positions(self) -> np.ndarray:
        """The 1-based ``pos`` of every variant (int64), without the rest of the table."""
        return self.variants["pos"].to_numpy(np.int64)

    @property
    def longest_ref(self) -> int:
        """Length of the longest REF (0 without variants): a record starting more than this
        many bases before a window cannot overlap it."""
        return int(self.variants["ref"].str.len().max()) if self.n_variants else 0

    def window(self, start: int, end: int) -> GenotypeMatrix:
        """The variants whose first REF base lies in 0-based ``[start, end)`` (as
        :func:`~apoe_assets.genomics.loci.variants_in`), in matrix order. With positions
        sorted (as a VCF's are) the rows are one slice: the arrays are views (memory-mapped
        arrays stay memory-mapped) and a stored matrix reads only those rows of its table."""
        rows = window_rows(self.positions(), start, end)
        return GenotypeMatrix(self.samples, self.variant_rows(rows), self.haplotypes[rows],
                              self.phased[rows])

    def variant_rows(self, rows: slice | np.ndarray) -> pd.DataFrame:
        """Rows ``rows`` (a slice or row numbers) of the variant table."""
        return self.variants.iloc[rows]

    def dosages(self) -> np.ndarray:
        """ALT dosage ``[variants, samples]`` as float32, NaN where either allele is missing."""
        h = self.haplotypes.reshape(self.n_variants, len(self.samples), 2).astype(np.float32)
        h[h == MISSING] = np.nan
        return h.sum(axis=2)

    def heterozygous(self) -> np.ndarray:
        """Bool ``[variants, samples]``: both alleles called and different."""
        h = self.haplotypes.reshape(self.n_variants, len(self.samples), 2)
        return (h[..., 0] != h[..., 1]) & (h[..., 0] != MISSING) & (h[..., 1] != MISSING)

    def summary(self) -> dict[str, float | int]:
        """Counts for reports: variants by kind, phasing of heterozygotes, missingness."""
        het = self.heterozygous()
        n_het = int(het.sum())
        alleles = self.haplotypes.size
        missing = int((self.haplotypes == MISSING).sum())
        return {
            "samples": len(self.samples),
            "variants": self.n_variants,
            "sites": int(self.variants["site"].nunique()) if self.n_variants else 0,
            **{f"kind_{k}": int(n) for k, n in self.variants["kind"].value_counts().items()},
            "heterozygous_genotypes": n_het,
            "unphased_heterozygous": int((het & ~self.phased).sum()),
            "phased_heterozygous_fraction": float((het & self.phased).sum() / max(n_het, 1))
            if n_het else 1.0,
            "missing_allele_fraction": missing / alleles if alleles else 0.0,
        }


def window_rows(positions: np.ndarray, start: int, end: int) -> slice | np.ndarray:
    """Rows of 1-based ``positions`` whose 0-based start lies in ``[start, end)``: a slice when
    ``positions`` are sorted (two binary searches), else the row numbers."""
    if np.all(positions[1:] >= positions[:-1]):
        lo = int(np.searchsorted(positions, start + 1, "left"))
        return slice(lo, max(lo, int(np.searchsorted(positions, end, "right"))))
    return np.flatnonzero((positions > start) & (positions <= end))


def variant_kind(ref: str, alt: str) -> str:
    """Classify a biallelic record: snv, mnv, ins, del, complex or symbolic."""
    if alt in {"*", "."} or alt.startswith("<") or "[" in alt or "]" in alt:
        return "symbolic"
    if len(ref) == len(alt):
        return "snv" if len(ref) == 1 else "mnv"
    if len(ref) == 1 and alt[0] == ref[0]:
        return "ins"
    if len(alt) == 1 and ref[0] == alt[0]:
        return "del"
    return "complex"


def variant_id(chrom: str, pos: int, ref: str, alt: str) -> str:
    """The one variant name used everywhere: ``chrom:pos:ref:alt`` (1-based pos)."""
    return f"{chrom}:{pos}:{ref}:{alt}"


def ref_mismatches(matrix: GenotypeMatrix, fetch: Callable[[Interval], bytes]) -> list[str]:
    """Variant IDs whose REF differs from the reference bases at their position (``fetch``:
    e.g. :meth:`ReferenceGenome.fetch`)."""
    wrong = []
    for variant in matrix.variants.itertuples():
        start, end = from_one_based(variant.pos, variant.pos + len(variant.ref) - 1)
        if fetch(Interval(variant.chrom, start, end)).decode() != variant.ref:
            wrong.append(variant.variant_id)
    return wrong
