"""FASTA: bgzipped + faidx-indexed writing, and windowed reading with N past contig ends."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pyfaidx

from apoe_assets.genomics.contigs import canonical_chrom, native_names
from apoe_assets.genomics.coordinates import Interval
from apoe_assets.genomics.errors import InputError
from apoe_assets.genomics.fasta_writer import LINE_WIDTH, IndexedFastaWriter, wrap_lines

CONTIGS_VERSION = "1"
"""Code version of the ``reference_genome`` contig table: bump it when they change
for the same inputs."""


def fasta_bytes(records: Iterable[tuple[str, bytes]], line_width: int = LINE_WIDTH
                ) -> tuple[bytes, list[str]]:
    """Plain FASTA text for ``(name, sequence)`` records and their `.fai` lines."""
    parts: list[bytes] = []
    fai: list[str] = []
    offset = 0
    for name, seq in records:
        header = f">{name}\n".encode()
        body = wrap_lines(seq, line_width)
        bases = min(line_width, len(seq))  # samtools: a one-line contig's own length
        fai.append(f"{name}\t{len(seq)}\t{offset + len(header)}\t{bases}\t{bases + 1}")
        parts += [header, body]
        offset += len(header) + len(body)
    return b"".join(parts), fai


def write_indexed_fasta(path: Path, records: Iterable[tuple[str, bytes]], threads: int = 1,
                        line_width: int = LINE_WIDTH) -> None:
    """Write a bgzipped FASTA with its `.fai` and `.gzi`, readable by samtools and pyfaidx.

    Each file is written beside its target and renamed into place, so readers never see a
    half-written FASTA.
    """
    with IndexedFastaWriter(path, threads=threads, line_width=line_width) as writer:
        for name, sequence in records:
            writer.add(name, sequence)


@dataclass(frozen=True)
class Contig:
    """A reference contig: canonical name, the FASTA's own name, length."""

    name: str
    native: str
    length: int


class ReferenceGenome:
    """A reference FASTA (plain or bgzipped) read by window, under canonical contig names."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        if not self.path.exists():
            raise InputError(self.path, "reference FASTA not found")
        _require_fasta_index(self.path)
        try:
            self._fasta = pyfaidx.Fasta(str(self.path), sequence_always_upper=True,
                                        as_raw=True, build_index=False)
        except Exception as exc:  # pyfaidx raises several types for a bad index or file
            raise InputError(self.path, f"cannot open FASTA: {exc}") from exc
        lengths = {name: len(record) for name, record in self._fasta.records.items()}
        self._native = native_names(lengths)
        self.contigs = {c: Contig(c, n, lengths[n]) for c, n in self._native.items()}

    def contig(self, chrom: str) -> Contig:
        """The contig called ``chrom`` (any naming style)."""
        try:
            return self.contigs[canonical_chrom(chrom)]
        except KeyError:
            raise InputError(self.path, f"contig {chrom!r} is not in the reference "
                             f"(it has {', '.join(list(self.contigs)[:5])}…)") from None

    def fetch(self, interval: Interval) -> bytes:
        """Upper-case bases of ``interval``; positions before 0 or past the end read as N."""
        contig = self.contig(interval.chrom)
        start, end = max(interval.start, 0), min(interval.end, contig.length)
        inner = self._fasta[contig.native][start:end].encode() if end > start else b""
        left = min(max(-interval.start, 0), len(interval))
        right = len(interval) - left - len(inner)
        return b"N" * left + inner + b"N" * right

    def close(self) -> None:
        """Release the file handle."""
        self._fasta.close()


def _require_fasta_index(path: Path) -> None:
    """Build a missing `.fai` (and `.gzi`) with pysam, or say exactly how to."""
    fai = Path(f"{path}.fai")
    gzipped = path.suffix in {".gz", ".bgz"}
    gzi = Path(f"{path}.gzi")
    if fai.exists() and (not gzipped or gzi.exists()):
        return
    import pysam

    try:
        pysam.faidx(str(path))
    except (pysam.SamtoolsError, OSError) as exc:
        raise InputError(path, "FASTA has no index and one could not be built here "
                         f"({exc}); run `samtools faidx {path}` (bgzip it first with "
                         "`bgzip` if it is plain gzip)") from exc
