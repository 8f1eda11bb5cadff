"""Coordinates: files speak 1-based inclusive, code speaks 0-based half-open.

Every conversion goes through :func:`from_one_based`, so an off-by-one can only live in one
place, and it is tested on the first and last base of a contig.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_REGION = re.compile(r"^(?P<chrom>[^:\s]+)(?::(?P<start>[\d,]+)(?:-(?P<end>[\d,]+))?)?$")


@dataclass(frozen=True, order=True)
class Interval:
    """A 0-based half-open interval ``[start, end)`` on ``chrom``.

    ``start`` may be negative for a model window reaching past the contig start; such positions
    read as N.
    """

    chrom: str
    start: int
    end: int

    def __post_init__(self) -> None:
        if self.end < self.start:
            raise ValueError(f"invalid interval {self.chrom}:[{self.start}, {self.end})")

    def __len__(self) -> int:
        return self.end - self.start

    def contains(self, position0: int) -> bool:
        """Whether the 0-based ``position0`` lies inside."""
        return self.start <= position0 < self.end

    def to_region(self) -> str:
        """The 1-based inclusive region string ``chrom:start-end`` (samtools, bcftools, tabix)."""
        first, last = to_one_based(self.start, self.end)
        return f"{self.chrom}:{first}-{last}"


def from_one_based(first: int, last: int | None = None) -> tuple[int, int]:
    """1-based inclusive ``[first, last]`` → 0-based half-open ``[start, end)``.

    With ``last`` omitted, converts the single base at ``first`` (a VCF POS).
    """
    if first < 1:
        raise ValueError(f"1-based position must be >= 1, got {first}")
    last = first if last is None else last
    if last < first - 1:
        raise ValueError(f"1-based range {first}-{last} ends before it starts")
    return first - 1, last


def to_one_based(start: int, end: int) -> tuple[int, int]:
    """0-based half-open ``[start, end)`` → 1-based inclusive ``(first, last)``."""
    return start + 1, end


def parse_region(region: str) -> Interval:
    """Parse ``chr19:44,400,000-45,410,000`` (1-based inclusive) into an :class:`Interval`."""
    match = _REGION.match(region.strip())
    if not match or match["start"] is None or match["end"] is None:
        raise ValueError(f"region {region!r} is not of the form CHROM:START-END")
    start, end = from_one_based(int(match["start"].replace(",", "")),
                                int(match["end"].replace(",", "")))
    return Interval(match["chrom"], start, end)


def centred_window(chrom: str, centre0: int, length: int) -> Interval:
    """The window of ``length`` bases centred on 0-based ``centre0``: ``[c - L/2, c + L/2)``.

    The start may fall before the contig; readers pad such positions with N.
    """
    if length <= 0 or length % 2:
        raise ValueError(f"window length must be a positive even number, got {length}")
    return Interval(chrom, centre0 - length // 2, centre0 + length // 2)
