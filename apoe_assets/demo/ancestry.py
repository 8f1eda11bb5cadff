"""Coalescent genealogies of the demo region (msprime) and the haplotype patterns they imply."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import msprime
import numpy as np
import tskit

POPULATION_SIZE = 10_000
RECOMBINATION_RATE = 1.2e-8
"""Per base per generation."""
MUTATION_RATE = 1.25e-8
"""Per base per generation."""
PLOIDY = 2


@dataclass(frozen=True)
class SitePatterns:
    """Segregating sites of a tree sequence as 0/1 haplotype patterns.

    ``offsets`` are 0-based positions inside the simulated sequence; ``haplotypes`` is int8
    ``[sites, 2 × samples]`` (columns ``s0_h1, s0_h2, s1_h1, …``), 1 where a haplotype carries
    any derived allele; ``nodes`` is the node of the site's single mutation, or −1 where
    several mutations hit the site.
    """

    offsets: np.ndarray
    haplotypes: np.ndarray
    nodes: np.ndarray


def simulate_ancestry(n_samples: int, length: int, seeds: Sequence[int]) -> tskit.TreeSequence:
    """Genealogies and mutations of ``n_samples`` diploids over ``length`` bases (one
    population, constant size), seeded by ``seeds`` (ancestry, mutations)."""
    ancestry_seed, mutation_seed = seeds
    ts = msprime.sim_ancestry(samples=n_samples, ploidy=PLOIDY,
                              population_size=POPULATION_SIZE,
                              recombination_rate=RECOMBINATION_RATE, sequence_length=length,
                              random_seed=ancestry_seed)
    return msprime.sim_mutations(ts, rate=MUTATION_RATE, random_seed=mutation_seed)


def site_patterns(ts: tskit.TreeSequence) -> SitePatterns:
    """Every segregating site as a derived/ancestral pattern over the sample haplotypes."""
    haplotypes = (ts.genotype_matrix() != 0).astype(np.int8)
    count = haplotypes.sum(axis=1)
    keep = (count > 0) & (count < ts.num_samples)
    offsets = np.array([int(site.position) for site in ts.sites()], dtype=np.int64)
    nodes = np.array([site.mutations[0].node if len(site.mutations) == 1 else -1
                      for site in ts.sites()], dtype=np.int64)
    return SitePatterns(offsets[keep], haplotypes[keep], nodes[keep])


def clade_pattern(ts: tskit.TreeSequence, tree: tskit.Tree, node: int) -> np.ndarray:
    """int8 pattern over sample haplotypes: 1 for the samples below ``node`` in ``tree``."""
    below = np.fromiter(tree.samples(node), dtype=np.int64)
    return np.isin(ts.samples(), below).astype(np.int8)


def clade_near_frequency(ts: tskit.TreeSequence, offset: int, frequency: float,
                         avoid: Sequence[int] = ()) -> int:
    """The node of the local tree at ``offset`` whose clade frequency is nearest
    ``frequency``, among clades that neither contain nor lie inside any node of ``avoid``
    (so a mutation placed there never shares a haplotype with one placed on ``avoid``)."""
    tree = ts.at(offset)
    best, best_gap = -1, np.inf
    for node in tree.nodes(order="preorder"):
        if node == tree.root or any(tree.is_descendant(node, other)
                                    or tree.is_descendant(other, node) for other in avoid):
            continue
        gap = abs(tree.num_samples(node) / ts.num_samples - frequency)
        if gap < best_gap or (gap == best_gap and node < best):
            best, best_gap = node, gap
    if best < 0:
        raise ValueError(f"no clade at offset {offset} is disjoint from {list(avoid)}")
    return best


def nested_clade(ts: tskit.TreeSequence, offset: int, node: int, rng: np.random.Generator,
                 min_size: int = 2) -> int | None:
    """A random proper sub-clade of ``node`` (in the tree at ``offset``) with at least
    ``min_size`` samples that leaves at least one sample of ``node`` outside it; None if there
    is none. A second mutation there turns a biallelic site multi-allelic with real LD."""
    tree = ts.at(offset)
    total = tree.num_samples(node)
    candidates = [u for u in tree.nodes(node, order="preorder")
                  if u != node and min_size <= tree.num_samples(u) < total]
    if not candidates:
        return None
    return int(candidates[int(rng.integers(len(candidates)))])
