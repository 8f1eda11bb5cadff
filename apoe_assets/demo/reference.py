"""A synthetic chr19: N everywhere but the demo region, which holds a human-like sequence."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

BASES = b"ACGT"
TRANSITIONS = np.array([
    # to:  A     C     G     T        from:
    [0.29, 0.21, 0.28, 0.22],  # A
    [0.30, 0.29, 0.06, 0.35],  # C  (C→G rare: CpG depletion, CpA/TpG excess)
    [0.25, 0.25, 0.29, 0.21],  # G
    [0.18, 0.25, 0.30, 0.27],  # T
])
"""First-order Markov chain: stationary GC ≈ 48%, CpG observed/expected ≈ 0.26."""
_RESOLUTION = 4096  # quantisation of the transition probabilities


def markov_sequence(rng: np.random.Generator, length: int) -> bytes:
    """Upper-case bases drawn from :data:`TRANSITIONS`."""
    probabilities = TRANSITIONS / TRANSITIONS.sum(axis=1, keepdims=True)
    bins = np.floor(np.cumsum(probabilities, axis=1) * _RESOLUTION).astype(np.int64)
    bins[:, -1] = _RESOLUTION
    grid = np.arange(_RESOLUTION)
    lookup = [np.searchsorted(row, grid, side="right").tolist() for row in bins]
    draws = rng.integers(0, _RESOLUTION, size=length).tolist()
    state = int(rng.integers(0, 4))
    states = bytearray(length)
    for i, draw in enumerate(draws):
        state = lookup[state][draw]
        states[i] = state
    return bytes(states).translate(bytes.maketrans(bytes(range(4)), BASES))


def plant_bases(sequence: bytes, offset: int, bases: Mapping[int, str]) -> bytes:
    """``sequence`` (whose first base is 1-based position ``offset``) with the given bases set
    at the given 1-based positions."""
    edited = bytearray(sequence)
    for pos, base in bases.items():
        edited[pos - offset] = ord(base)
    return bytes(edited)


def chromosome(region: bytes, first: int, length: int) -> bytes:
    """A contig of ``length`` bases: N, then ``region`` from 1-based ``first``, then N."""
    before = first - 1
    after = length - before - len(region)
    if after < 0:
        raise ValueError("region runs past the contig end")
    return b"N" * before + region + b"N" * after


def composition(sequence: bytes) -> dict[str, float]:
    """GC fraction and CpG observed/expected of an N-free sequence."""
    n = len(sequence)
    c, g = sequence.count(b"C"), sequence.count(b"G")
    cpg = sequence.count(b"CG")
    return {"gc_fraction": (c + g) / n, "cpg_observed_expected": cpg * n / (c * g)}
