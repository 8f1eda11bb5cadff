"""A seeded, generated eQTL study (VCF, reference, expression BED, covariates, genes) that holds
what real data hold and the demo lacks: missing and half-missing calls, a multi-allelic record,
monomorphic and rare sites, sites exactly at and just below a MAF threshold, and expression
samples that are a reordered subset of the genotyped ones."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pysam

from apoe_assets.genomics.bgzf import write_bgzf
from apoe_assets.genomics.fasta import write_indexed_fasta

CONTIG = "chr2"
MAF_BOUNDARY = 0.05
"""The MAF threshold the boundary sites are built around (one at it, one just below)."""
LD_COPY_PROBABILITY = 0.4
"""Chance that a site copies the previous site's haplotypes (with a few flips): LD blocks."""
LD_FLIP = 0.03
MISSING_SITE_SHARE = 0.2
MISSING_CALL_SHARE = 0.03


@dataclass(frozen=True)
class GeneratedStudy:
    """Paths and facts of a generated study."""

    folder: Path
    vcf: Path
    reference: Path
    expression_bed: Path
    covariates_tsv: Path
    genes: pd.DataFrame
    """gene_id, chrom, tss (0-based), strand."""
    expression_samples: list[str]
    special_sites: dict[str, int]
    """1-based positions of the hand-built sites, by what they exercise."""


def _haplotypes(rng: np.random.Generator, n_sites: int, n_haplotypes: int) -> np.ndarray:
    frequencies = np.clip(rng.beta(0.4, 0.4, size=n_sites), 0.002, 0.998)
    haps = np.empty((n_sites, n_haplotypes), dtype=np.int8)
    for i in range(n_sites):
        if i and rng.random() < LD_COPY_PROBABILITY:
            flips = rng.random(n_haplotypes) < LD_FLIP
            haps[i] = np.where(flips, 1 - haps[i - 1], haps[i - 1])
        else:
            haps[i] = rng.random(n_haplotypes) < frequencies[i]
    return haps


def _with_alt_count(rng: np.random.Generator, n_haplotypes: int, among: np.ndarray,
                    alt_alleles: int) -> np.ndarray:
    """Haplotypes with exactly ``alt_alleles`` ALT alleles among the haplotypes ``among``
    (others ALT only when every one of ``among`` is)."""
    haps = np.full(n_haplotypes, int(alt_alleles == len(among)), dtype=np.int8)
    haps[among] = 0
    haps[rng.choice(among, alt_alleles, replace=False)] = 1
    return haps


def write_generated_study(folder: Path, *, seed: int = 11, n_samples: int = 300,
                          n_sites: int = 700, contig_length: int = 400_000, n_genes: int = 3,
                          expression_share: float = 0.9, n_covariates: int = 4,
                          missing: bool = True) -> GeneratedStudy:
    """Write a generated study under ``folder`` and describe it. Sites are spread over the
    contig; gene TSSs sit in its middle half; a few cis variants per gene have planted effects.
    """
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    samples = [f"G{i:05d}" for i in range(n_samples)]
    reference = rng.choice(np.frombuffer(b"ACGT", np.uint8), contig_length).tobytes()
    positions = np.sort(rng.choice(np.arange(100, contig_length - 100), n_sites, replace=False))
    haps = _haplotypes(rng, n_sites, 2 * n_samples)

    expressed = list(rng.permutation(samples)[: round(expression_share * n_samples)])
    column = {s: i for i, s in enumerate(samples)}
    expressed_haps = np.array([2 * column[s] + h for s in expressed for h in (0, 1)])

    # MAF is counted in-sample (expressed samples): the boundary sites are built on them.
    special: dict[str, int] = {}
    special_rows = iter(rng.choice(np.arange(10, n_sites - 10), 7, replace=False))
    n2 = len(expressed_haps)
    boundary = int(np.ceil(MAF_BOUNDARY * n2))
    for name, alt_alleles in [("maf_at_threshold", boundary), ("maf_below_threshold", boundary - 1),
                              ("maf_at_threshold_alt_major", n2 - boundary), ("singleton", 1),
                              ("monomorphic_ref", 0), ("monomorphic_alt", n2)]:
        row = next(special_rows)
        haps[row] = _with_alt_count(rng, 2 * n_samples, expressed_haps, alt_alleles)
        special[name] = int(positions[row])
    multi_row = next(special_rows)
    special["multiallelic"] = int(positions[multi_row])
    second_alt = (rng.random(2 * n_samples) < 0.15) & (haps[multi_row] == 0)

    genotype_text = np.where(haps == 1, "1", "0").astype(object)
    genotype_text[multi_row, second_alt] = "2"
    calls = genotype_text[:, 0::2] + "|" + genotype_text[:, 1::2]
    if missing:
        boundary_rows = [i for i, p in enumerate(positions) if p in special.values()]
        for row in range(n_sites):
            if row in boundary_rows or rng.random() > MISSING_SITE_SHARE:
                continue
            hit = rng.random(n_samples) < MISSING_CALL_SHARE
            calls[row, hit] = "./."
        half = rng.choice(np.setdiff1d(np.arange(n_sites), boundary_rows))
        calls[half, rng.choice(n_samples, 3, replace=False)] = "0|."
        special["half_missing"] = int(positions[half])
        heavy = rng.choice(np.setdiff1d(np.arange(n_sites), [*boundary_rows, half]))
        calls[heavy, rng.random(n_samples) < 0.5] = "./."
        special["half_samples_missing"] = int(positions[heavy])

    lines = ["##fileformat=VCFv4.2", f"##contig=<ID={CONTIG},length={contig_length}>",
             '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">',
             "\t".join(["#CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO", "FORMAT",
                        *samples])]
    for row, pos in enumerate(positions):
        ref = chr(reference[pos - 1])
        alts = [b for b in "ACGT" if b != ref]
        alt = ",".join(alts[:2]) if row == multi_row else alts[int(rng.integers(3))]
        lines.append("\t".join([CONTIG, str(pos), ".", ref, alt, ".", "PASS", ".", "GT",
                                *calls[row]]))
    vcf = folder / "genotypes.vcf.gz"
    write_bgzf(vcf, ("\n".join(lines) + "\n").encode())
    pysam.tabix_index(str(vcf), preset="vcf", force=True)
    fasta = folder / "reference.fa.gz"
    write_indexed_fasta(fasta, [(CONTIG, reference)])

    tss = np.sort(rng.choice(np.arange(contig_length // 4, 3 * contig_length // 4), n_genes,
                             replace=False))
    genes = pd.DataFrame({"gene_id": [f"GENE{i:03d}" for i in range(n_genes)], "chrom": CONTIG,
                          "tss": tss, "strand": "+"})
    dosage = haps[:, 0::2] + haps[:, 1::2]
    covariates = pd.DataFrame(rng.normal(size=(n_covariates, len(expressed))),
                              index=[f"PC{i + 1}" for i in range(n_covariates)], columns=expressed)
    covariates.iloc[-1] = rng.integers(0, 2, len(expressed)).astype(float)  # a sex-like 0/1
    rows = []
    for _, gene in genes.iterrows():
        near = np.flatnonzero(np.abs(positions - gene["tss"]) < contig_length // 8)
        causal = rng.choice(near, min(2, len(near)), replace=False)
        signal = sum(rng.normal() * dosage[c, [column[s] for s in expressed]] for c in causal)
        values = (0.3 * signal + covariates.T.to_numpy() @ rng.normal(size=n_covariates)
                  + rng.normal(size=len(expressed)))
        rows.append([CONTIG, int(gene["tss"]), int(gene["tss"]) + 1, gene["gene_id"], *values])
    bed = pd.DataFrame(rows, columns=["#chr", "start", "end", "gene_id", *expressed])
    expression_bed = folder / "expression.bed.gz"
    write_bgzf(expression_bed, bed.to_csv(sep="\t", index=False, float_format="%.10g").encode())
    covariates_tsv = folder / "covariates.tsv"
    covariates.rename_axis("ID").to_csv(covariates_tsv, sep="\t", float_format="%.10g")
    return GeneratedStudy(folder, vcf, fasta, expression_bed, covariates_tsv, genes, expressed,
                          special)
