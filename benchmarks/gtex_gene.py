"""One generated GTEx-sized gene, written as study files: a 2-Mb cis window of msprime
genotypes (human-like LD), a few missing calls, covariates and expression with a planted h².

The window is the whole simulated sequence (TSS ± 1 Mb, both ends inclusive), so every
segregating site is a cis variant of the gene. The mutation rate is set from Watterson's
estimator so the window holds about the number of sites asked for. Files are written the way
the project's tests write them (:mod:`apoe_assets_tests.stats.generated`): a bgzipped,
tabix-indexed VCF, a bgzipped indexed FASTA whose bases the REF alleles match, an expression
BED (``#chr start end gene_id samples…``) and a covariates table (covariates × samples).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import msprime
import numpy as np
import pandas as pd
import pysam

from apoe_assets.demo.ancestry import PLOIDY, site_patterns
from apoe_assets.genomics.bgzf import write_bgzf
from apoe_assets.genomics.fasta import write_indexed_fasta
from apoe_assets_tests.stats.generated import CONTIG

FLANK = 1_000_000
"""The cis window: TSS ± 1 Mb."""
WINDOW_LENGTH = 2 * FLANK + 1
TSS = FLANK
"""0-based TSS in the middle of the simulated sequence."""
POPULATION_SIZE = 10_000
RECOMBINATION_RATE = 1e-8
"""Per base per generation."""
MISSING_CALL_SHARE = 0.002
"""Chance that any one call is written missing (``./.``)."""
N_COVARIATES = 6
N_CAUSAL = 5
HERITABILITY = 0.1
"""Share of the expression variance (covariates aside) explained by the causal variants."""
CAUSAL_MIN_MAF = 0.05
COVARIATE_EFFECT_SD = 0.3
GENE_ID = "GENE0001"
CALL_TEXT = np.array(["0|0", "0|1", "1|0", "1|1"])


@dataclass(frozen=True)
class GeneFiles:
    """Paths and facts of the generated gene."""

    vcf: Path
    reference: Path
    expression_bed: Path
    covariates_tsv: Path
    gene: dict
    """``gene_id`` and 0-based ``tss``."""
    samples: list[str]
    n_sites: int
    n_missing: int
    causal: list[str]
    """Variant IDs (``chrom:pos:ref:alt``) of the causal variants."""


def mutation_rate(n_sites: int, n_haplotypes: int, length: int,
                  population_size: int = POPULATION_SIZE) -> float:
    """Per-base rate whose expected number of segregating sites is ``n_sites``: Watterson's
    E[S] = 4·N·μ·L · Σ_{i<n} 1/i for ``n`` haplotypes."""
    harmonic = float(np.sum(1.0 / np.arange(1, n_haplotypes)))
    return n_sites / (4 * population_size * length * harmonic)


def simulate_haplotypes(n_samples: int, n_sites: int, seed: int
                        ) -> tuple[np.ndarray, np.ndarray]:
    """1-based positions and int8 haplotypes ``[sites, 2 × samples]`` of one constant-size
    population over the window (binary mutations; sites fixed in the sample dropped)."""
    seeds = np.random.SeedSequence(seed).generate_state(2)
    ts = msprime.sim_ancestry(samples=n_samples, ploidy=PLOIDY, population_size=POPULATION_SIZE,
                              sequence_length=WINDOW_LENGTH,
                              recombination_rate=RECOMBINATION_RATE, random_seed=int(seeds[0]))
    rate = mutation_rate(n_sites, PLOIDY * n_samples, WINDOW_LENGTH)
    ts = msprime.sim_mutations(ts, rate=rate, random_seed=int(seeds[1]),
                               model=msprime.BinaryMutationModel())
    patterns = site_patterns(ts)
    return patterns.offsets + 1, patterns.haplotypes


def planted_expression(dosages: np.ndarray, covariates: np.ndarray, rng: np.random.Generator
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Expression = genetic value (variance h²) + covariate effects + noise (variance 1 − h²)
    from ``N_CAUSAL`` common variants of the complete ``dosages``; returns it and the causal
    rows."""
    frequency = dosages.mean(axis=1) / 2
    common = np.flatnonzero(np.minimum(frequency, 1 - frequency) >= CAUSAL_MIN_MAF)
    causal = np.sort(rng.choice(common, N_CAUSAL, replace=False))
    block = dosages[causal]
    standardised = (block - block.mean(axis=1, keepdims=True)) / block.std(axis=1, keepdims=True)
    genetic = rng.normal(size=N_CAUSAL) @ standardised
    genetic *= np.sqrt(HERITABILITY) / genetic.std()
    noise = rng.normal(scale=np.sqrt(1 - HERITABILITY), size=dosages.shape[1])
    effects = rng.normal(scale=COVARIATE_EFFECT_SD, size=covariates.shape[0])
    return genetic + effects @ covariates + noise, causal


def _covariates(rng: np.random.Generator, n_samples: int) -> np.ndarray:
    """``N_COVARIATES`` × samples: genotype-PC-like normals and a sex-like 0/1 last."""
    values = rng.normal(size=(N_COVARIATES, n_samples))
    values[-1] = rng.integers(0, 2, n_samples)
    return values


def _vcf_text(positions: np.ndarray, alleles: list[tuple[str, str]], haplotypes: np.ndarray,
              missing: np.ndarray, samples: list[str]) -> bytes:
    calls = CALL_TEXT[2 * haplotypes[:, 0::2] + haplotypes[:, 1::2]].astype(object)
    calls[missing] = "./."
    lines = ["##fileformat=VCFv4.2", f"##contig=<ID={CONTIG},length={WINDOW_LENGTH}>",
             '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">',
             "\t".join(["#CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO", "FORMAT",
                        *samples])]
    for pos, (ref, alt), row in zip(positions, alleles, calls, strict=True):
        lines.append(f"{CONTIG}\t{pos}\t.\t{ref}\t{alt}\t.\tPASS\t.\tGT\t" + "\t".join(row))
    return ("\n".join(lines) + "\n").encode()


def _alleles(rng: np.random.Generator, reference: bytes, positions: np.ndarray
             ) -> list[tuple[str, str]]:
    """REF (the reference base) and a random other base as ALT at each position."""
    pairs = []
    for pos, shift in zip(positions, rng.integers(1, 4, len(positions)), strict=True):
        ref = chr(reference[pos - 1])
        pairs.append((ref, "ACGT"["ACGT".index(ref) + shift - 4]))
    return pairs


def write_gtex_gene(folder: Path, *, n_samples: int = 838, n_sites: int = 15_000,
                    seed: int = 1) -> GeneFiles:
    """Simulate the gene and write its study files under ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    samples = [f"GTEX-{i:05d}" for i in range(n_samples)]
    positions, haplotypes = simulate_haplotypes(n_samples, n_sites, seed)
    reference = rng.choice(np.frombuffer(b"ACGT", np.uint8), WINDOW_LENGTH).tobytes()
    alleles = _alleles(rng, reference, positions)
    missing = rng.random((len(positions), n_samples)) < MISSING_CALL_SHARE

    vcf = folder / "genotypes.vcf.gz"
    write_bgzf(vcf, _vcf_text(positions, alleles, haplotypes, missing, samples))
    pysam.tabix_index(str(vcf), preset="vcf", force=True)
    fasta = folder / "reference.fa.gz"
    write_indexed_fasta(fasta, [(CONTIG, reference)])

    covariates = _covariates(rng, n_samples)
    dosages = (haplotypes[:, 0::2] + haplotypes[:, 1::2]).astype(np.float64)
    expression, causal = planted_expression(dosages, covariates, rng)
    bed = pd.DataFrame([[CONTIG, TSS, TSS + 1, GENE_ID, *expression]],
                       columns=["#chr", "start", "end", "gene_id", *samples])
    expression_bed = folder / "expression.bed.gz"
    write_bgzf(expression_bed, bed.to_csv(sep="\t", index=False, float_format="%.10g").encode())
    covariates_tsv = folder / "covariates.tsv"
    pd.DataFrame(covariates, index=[f"PC{i + 1}" for i in range(N_COVARIATES - 1)] + ["sex"],
                 columns=samples).rename_axis("ID").to_csv(covariates_tsv, sep="\t",
                                                            float_format="%.10g")
    causal_ids = [f"{CONTIG}:{positions[r]}:{alleles[r][0]}:{alleles[r][1]}" for r in causal]
    return GeneFiles(vcf, fasta, expression_bed, covariates_tsv,
                     {"gene_id": GENE_ID, "tss": TSS}, samples, len(positions),
                     int(missing.sum()), causal_ids)
