"""Personal sequences of one gene: every sample's two haplotypes over the gene's window,
built in chunks of samples and streamed into an indexed FASTA with a manifest beside it."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pysam

from apoe_assets.genomics.consensus import (
    SKIP_REASONS,
    Haplotypes,
    MissingPolicy,
    VariantIndex,
    build_haplotypes,
    centre_on_tss,
    sample_chunks,
)
from apoe_assets.genomics.coordinates import Interval
from apoe_assets.genomics.fasta_writer import IndexedFastaWriter
from apoe_assets.genomics.genotypes import GenotypeMatrix
from apoe_assets.genomics.loci import variants_in

SEQUENCES_VERSION = "1"
"""Code version of the ``personal_sequences`` haplotypes: bump it when they change
for the same inputs."""

FASTA_NAME = "haplotypes.fa.gz"
MANIFEST_NAME = "manifest.parquet"
COMPRESSION_LEVEL = 2
"""zlib level for haplotype FASTA: on DNA text about 8× faster than the default 6 for ~7% more
bytes (measured by benchmarks/bench_personal_sequences.py)."""
TSS_CONTEXT = 16
"""Bases either side of the TSS compared with the reference to verify each haplotype's TSS."""


@dataclass(frozen=True)
class SequenceFolder:
    """A folder holding ``haplotypes.fa.gz`` (+ `.fai`, `.gzi`) and ``manifest.parquet``."""

    path: Path

    @property
    def fasta(self) -> Path:
        return self.path / FASTA_NAME

    def manifest(self) -> pd.DataFrame:
        """One row per haplotype record (see :func:`write_personal_sequences`)."""
        return pd.read_parquet(self.path / MANIFEST_NAME)

    def open(self) -> pysam.FastaFile:
        """Random access to the records by name (``{sample}_h1``, ``{sample}_h2``)."""
        return pysam.FastaFile(str(self.fasta))

    def model_inputs(self, length: int, records: list[str] | None = None) -> list[bytes]:
        """Haplotypes re-centred on their own TSS and cut or N-padded to ``length`` (the
        model window): the TSS base sits at index ``length // 2`` of every one."""
        manifest = self.manifest().set_index("record")
        names = list(manifest.index) if records is None else records
        fasta = self.open()
        try:
            return [centre_on_tss(fasta.fetch(name).encode(),
                                  int(manifest.at[name, "tss_index"]), length)
                    for name in names]
        finally:
            fasta.close()


CHUNK_SAMPLES = 256
"""Samples built and written at a time (bounds memory)."""


@dataclass(frozen=True)
class SequenceSpec:
    """What to build for one gene: the padded window, the TSS and the study's settings."""

    window: Interval
    tss: int
    missing: MissingPolicy = "ref"
    snps_only: bool = False
    chunk_samples: int = CHUNK_SAMPLES


def sequence_hash(sequence: bytes) -> str:
    """A short content hash: identical haplotypes share it (so are predicted once)."""
    return hashlib.blake2b(sequence, digest_size=12).hexdigest()


def _altered_near_tss(genotypes: GenotypeMatrix, near: np.ndarray, samples: np.ndarray
                      ) -> np.ndarray:
    """Per haplotype of ``samples`` (h1, h2, h1, …): whether a variant ``near`` the TSS may
    change its bases there: an ALT or missing allele, or an unphased heterozygote, which puts
    an IUPAC code into both haplotypes (``-H 1pIu``/``2pIu``), the REF one included."""
    columns = np.stack([2 * samples, 2 * samples + 1], axis=1).reshape(-1)
    alleles = genotypes.haplotypes[np.ix_(near, columns)]
    heterozygous = alleles[:, 0::2] != alleles[:, 1::2]
    unphased_het = (heterozygous & ~genotypes.phased[np.ix_(near, samples)]).any(axis=0)
    return (alleles != 0).any(axis=0) | np.repeat(unphased_het, 2)


def _tss_checks(haps: Haplotypes, reference: bytes, spec: SequenceSpec, near_tss: np.ndarray
                ) -> np.ndarray:
    """Per haplotype: True if the bases around its TSS index equal the reference's around the
    TSS, False if not, NaN where a variant (or missing call) near the TSS makes it untestable."""
    offset = spec.tss - spec.window.start
    expected = reference[max(offset - TSS_CONTEXT, 0) : offset + TSS_CONTEXT + 1]
    left = offset - max(offset - TSS_CONTEXT, 0)
    result = np.full(len(haps.sequences), np.nan)
    for i, (seq, index) in enumerate(zip(haps.sequences, haps.tss_index, strict=True)):
        if not near_tss[i]:
            result[i] = seq[index - left : index - left + len(expected)] == expected
    return result


def write_personal_sequences(
    folder: Path,
    reference: bytes,
    genotypes: GenotypeMatrix,
    spec: SequenceSpec,
    threads: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> pd.DataFrame:
    """Build both haplotypes of every sample over ``spec.window`` (bcftools consensus
    semantics) and write them to ``folder`` as an indexed FASTA and a manifest.

    The manifest has a row per record: sample, haplotype (1/2), record name, length,
    variants applied, variants skipped by reason, the TSS index, whether the TSS context
    matches the reference (NaN where a variant near the TSS makes that untestable), and a
    content hash. Returns the manifest.
    """
    folder.mkdir(parents=True, exist_ok=True)
    index = VariantIndex.of(genotypes)
    near = variants_in(genotypes, spec.tss - TSS_CONTEXT - 64, spec.tss + TSS_CONTEXT + 1)
    rows: list[pd.DataFrame] = []
    done = 0
    with IndexedFastaWriter(folder / FASTA_NAME, threads=threads,
                            level=COMPRESSION_LEVEL) as writer:
        for chunk in sample_chunks(len(genotypes.samples), spec.chunk_samples):
            haps = build_haplotypes(reference, spec.window, genotypes, samples=chunk,
                                    missing=spec.missing, snps_only=spec.snps_only,
                                    tss=spec.tss, index=index)
            near_tss = _altered_near_tss(genotypes, near, chunk)
            names = haps.names()
            for name, sequence in zip(names, haps.sequences, strict=True):
                writer.add(name, sequence)
            rows.append(pd.DataFrame({
                "sample": np.repeat(haps.samples, 2),
                "haplotype": np.tile([1, 2], len(haps.samples)).astype(np.int8),
                "record": names,
                "length": [len(s) for s in haps.sequences],
                "variants_applied": haps.applied,
                **{f"skipped_{r}": haps.skipped[r] for r in SKIP_REASONS},
                "tss_index": haps.tss_index,
                "tss_matches_reference": _tss_checks(haps, reference, spec, near_tss),
                "hash": [sequence_hash(s) for s in haps.sequences],
            }))
            done += len(chunk)
            if progress:
                progress(done, len(genotypes.samples))
    manifest = pd.concat(rows, ignore_index=True)
    manifest.to_parquet(folder / MANIFEST_NAME, index=False)
    return manifest
