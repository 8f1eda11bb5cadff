"""What a real callset does to true genotypes: a few missing calls, a few unphased hets."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MISSING = -1
BASE_MISSING_RATE = 0.003
"""Per-genotype missing rate at ordinary sites."""
POOR_SITE_FRACTION = 0.02
POOR_SITE_MISSING = (0.05, 0.15)
"""Missing-rate range at poorly called sites; overall ≈ 0.5% of genotypes are missing."""
UNPHASED_HET_RATE = 0.01
"""Share of heterozygous genotypes written unphased (``0/1``)."""


@dataclass
class Calls:
    """Genotype calls as written: ``alleles`` int8 ``[sites, samples, 2]`` (−1 missing) and
    ``phased`` bool ``[sites, samples]``."""

    alleles: np.ndarray
    phased: np.ndarray

    def missing(self) -> np.ndarray:
        """Bool ``[sites, samples]``: the genotype is ``./.``."""
        return self.alleles[..., 0] == MISSING

    def summary(self) -> dict[str, float]:
        """Overall missing-genotype share and unphased share of called heterozygotes."""
        missing = self.missing()
        het = (self.alleles[..., 0] != self.alleles[..., 1]) & ~missing
        return {"missing_genotype_fraction": float(missing.mean()),
                "unphased_het_fraction": float((het & ~self.phased).sum() / max(het.sum(), 1))}


def mask_calls(haplotypes: np.ndarray, protected: np.ndarray, rng: np.random.Generator
               ) -> Calls:
    """Calls from true ``haplotypes`` (int8 ``[sites, 2 × samples]``): sites vary in missing
    rate (``protected`` sites are never poorly called); some hets lose their phase."""
    n_sites = haplotypes.shape[0]
    alleles = haplotypes.reshape(n_sites, -1, 2).copy()
    rate = np.full(n_sites, BASE_MISSING_RATE)
    poor = (rng.random(n_sites) < POOR_SITE_FRACTION) & ~protected
    rate[poor] = rng.uniform(*POOR_SITE_MISSING, size=int(poor.sum()))
    missing = rng.random(alleles.shape[:2]) < rate[:, None]
    het = alleles[..., 0] != alleles[..., 1]
    phased = ~(het & ~missing & (rng.random(alleles.shape[:2]) < UNPHASED_HET_RATE))
    alleles[missing] = MISSING
    phased &= ~missing
    return Calls(alleles, phased)
