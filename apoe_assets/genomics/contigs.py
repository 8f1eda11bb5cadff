"""Chromosome naming: one canonical name (``chr19``) whatever each file calls it (``19``)."""

from __future__ import annotations

from collections.abc import Iterable

_MITO = {"M", "MT"}


def canonical_chrom(name: str) -> str:
    """UCSC-style canonical name: ``19`` → ``chr19``, ``MT`` → ``chrM``, ``chrX`` unchanged."""
    bare = name[3:] if name.lower().startswith("chr") else name
    if not bare:
        raise ValueError(f"empty chromosome name in {name!r}")
    return "chrM" if bare.upper() in _MITO else f"chr{bare}"


def native_names(names: Iterable[str]) -> dict[str, str]:
    """Map canonical name → the file's own name, for the contigs one file declares.

    Raises if two native names collapse onto one canonical name (``19`` and ``chr19``).
    """
    mapping: dict[str, str] = {}
    for name in names:
        canonical = canonical_chrom(name)
        if canonical in mapping and mapping[canonical] != name:
            raise ValueError(
                f"contigs {mapping[canonical]!r} and {name!r} both mean {canonical!r}"
            )
        mapping[canonical] = name
    return mapping
