"""Personal haplotype sequences: ours vs `bcftools consensus`, one 196,608-bp window.

bcftools runs as users run it: one call per sample and haplotype, each writing plain FASTA.
Ours reads the window's genotypes once and builds every haplotype, written (a) as the same
plain FASTA text and (b) as our bgzipped, faidx-indexed multi-FASTA. Both outputs are checked
against bcftools before any figure is printed. The last line is the plain comparison:

    personal_sequences: ratio=X (ours S s, bcftools B s)

Run: .venv/bin/python benchmarks/bench_personal_sequences.py [--samples 300] [--gene APOE]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from apoe_assets.genomics.consensus import build_haplotypes
from apoe_assets.genomics.coordinates import centred_window
from apoe_assets.genomics.fasta import ReferenceGenome
from apoe_assets.genomics.fasta_writer import IndexedFastaWriter, wrap_lines
from apoe_assets.genomics.personal import COMPRESSION_LEVEL
from apoe_assets.genomics.vcf import read_genotypes, vcf_samples
from apoe_assets.study import load_study

WINDOW = 196_608


def _ours(study, window, samples: list[str]):
    reference = ReferenceGenome(study.reference_fasta)
    bases = reference.fetch(window)
    genotypes, _ = read_genotypes(study.genotypes, window.chrom, reference, [window],
                                  samples=samples)
    haps = build_haplotypes(bases, window, genotypes)
    reference.close()
    return haps


def _write_plain(haps, path: Path) -> None:
    with path.open("wb") as handle:
        for name, seq in zip(haps.names(), haps.sequences, strict=True):
            handle.write(f">{name}\n".encode() + wrap_lines(seq))


def _bcftools(study, region_fasta: Path, samples: list[str], out: Path) -> None:
    for sample in samples:
        for haplotype in (1, 2):
            subprocess.run(["bcftools", "consensus", "-f", str(region_fasta), "-s", sample,
                            "-H", f"{haplotype}pIu", "-o", str(out / f"{sample}_h{haplotype}.fa"),
                            str(study.genotypes)], check=True, capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--gene", default="APOE")
    args = parser.parse_args()
    study = load_study()
    gene = study.gene_table.set_index("partition_key").loc[args.gene]
    window = centred_window(gene["chrom"], int(gene["tss"]), WINDOW)
    samples = vcf_samples(study.genotypes)[: args.samples]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        region_fasta = tmp / "region.fa"
        with region_fasta.open("w") as handle:
            subprocess.run(["samtools", "faidx", str(study.reference_fasta),
                            window.to_region()], check=True, stdout=handle)
        (tmp / "bcftools").mkdir()
        started = time.perf_counter()
        _bcftools(study, region_fasta, samples, tmp / "bcftools")
        peer = time.perf_counter() - started

        started = time.perf_counter()
        haps = _ours(study, window, samples)
        built = time.perf_counter() - started
        _write_plain(haps, tmp / "ours.fa")
        plain = time.perf_counter() - started

        started = time.perf_counter()
        haps = _ours(study, window, samples)
        with IndexedFastaWriter(tmp / "ours.fa.gz", threads=os.cpu_count() or 1,
                                level=COMPRESSION_LEVEL) as writer:
            for name, seq in zip(haps.names(), haps.sequences, strict=True):
                writer.add(name, seq)
        packed = time.perf_counter() - started
        packed_bytes = sum(p.stat().st_size for p in tmp.glob("ours.fa.gz*"))

        for name, seq in zip(haps.names(), haps.sequences, strict=True):
            lines = (tmp / "bcftools" / f"{name}.fa").read_text().splitlines()
            if "".join(lines[1:]).encode() != seq:
                raise SystemExit(f"{name}: ours differs from bcftools")
        bcftools_bytes = sum(p.stat().st_size for p in (tmp / "bcftools").iterdir())

    total = sum(len(s) for s in haps.sequences)
    block = np.frombuffer(b"".join(haps.sequences), np.uint8)
    started = time.perf_counter()
    np.copy(block)
    copy = time.perf_counter() - started
    n = 2 * len(samples)
    print(f"{len(samples)} samples, {n} haplotypes, window {window.to_region()}, "
          f"{haps.applied.mean():.0f} variants applied per haplotype on average; "
          f"all {n} identical to bcftools")
    print(f"bcftools: {peer / n * 1e3:.2f} ms per sample-haplotype")
    print(f"ours: build {total / built / 1e6:,.0f} MB/s (read + build {built:.3f} s); "
          f"numpy copy of the same {total / 1e6:.0f} MB: {total / copy / 1e6:,.0f} MB/s")
    print(f"personal_sequences_bgzip: ratio={peer / packed:.1f} (ours {packed:.3f} s, "
          f"bcftools {peer:.2f} s, bytes on disk ours {packed_bytes:,} "
          f"vs bcftools {bcftools_bytes:,})")
    print(f"personal_sequences: ratio={peer / plain:.1f} (ours {plain:.3f} s, "
          f"bcftools {peer:.2f} s)")


if __name__ == "__main__":
    main()
