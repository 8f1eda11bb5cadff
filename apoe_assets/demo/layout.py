"""Where each file of a demo study lives (relative to the study folder) and study.yaml."""

from __future__ import annotations

import json
from collections.abc import Sequence

STUDY_FILE = "study.yaml"
README = "README.md"
REFERENCE = "reference/chr19.fa.gz"
GENOTYPES = "genotypes/chr19.vcf.gz"
EXPRESSION = "expression/expression.bed.gz"
COVARIATES = "expression/covariates.tsv"
ANNOTATION = "annotation/genes.tsv"
TRUTH = "truth"
TRUTH_CAUSAL = f"{TRUTH}/causal_variants.tsv"
TRUTH_GENES = f"{TRUTH}/genes.tsv"
TRUTH_COVARIATES = f"{TRUTH}/covariate_effects.tsv"
TRUTH_SIMULATION = f"{TRUTH}/simulation.json"
TRUTH_ENFORMER = f"{TRUTH}/enformer_features.tsv"
ENFORMER_WEIGHTS = "enformer/weights.safetensors"
ENFORMER_TARGETS = "enformer/targets.txt"

STUDY_NAME = "apoe-demo"
WINDOW_LENGTH = 24_576
CIS_WINDOW = 1_000_000
STORAGE_ROOT = "../../.apoe/storage"
MLFLOW_TRACKING_URI = "sqlite:///../../.apoe/mlflow.db"
ENFORMER_TRACKS = ("CAGE:brain",)
"""Track selectors of the Enformer feature (descriptions starting with this)."""
ENFORMER_HAPLOTYPES = "mean"
"""How a person's two haplotype features are combined."""
ENFORMER_BATCH_SIZE = 2
"""Sequences a forward pass: the demo model's fastest on 2 CPU cores (`bench_enformer.py
--configs small`: 50 sequences/s at 2 against 43 at 8; `enformer_predictions` of ten genes
47 s against 60 s)."""
SNP_EFFECT_TRACKS = ("CHIP:H3K27me3",)
"""Tracks of ``snp_effects``: of the marks the study's default names, the only one the demo
head has (it has no H3K9me3 or H3K36me3 track)."""
SNP_EFFECT_INDELS = True
"""Score indels too: the demo's Enformer component is carried mostly by indels (re-centring
shifts every base on one side of the TSS), so the SNVs alone explain little of it."""
OVERLAP_TOP_K = 3
"""Top SNPs per ranking in ``eqtl_overlap``: the demo's windows hold 43–64 variants that both
scans saw, so the default 50 would take nearly all of them; 3 is about the default's share of a
real window (50 of ≈ 1,500 variants), and the planted component sits in one dominant variant a
gene."""


def study_yaml(seed: int, genes: Sequence[str]) -> bytes:
    """The study file, keys in a fixed order, paths relative to it; every gene in one backfill
    run a gene asset (each run loads the chromosome and the model once)."""
    lines = [
        f"name: {STUDY_NAME}",
        f"seed: {seed}",
        f"reference_fasta: {REFERENCE}",
        f"genotypes: {GENOTYPES}",
        f"expression: {EXPRESSION}",
        f"covariates: {COVARIATES}",
        f"annotation: {ANNOTATION}",
        f"genes: [{', '.join(genes)}]",
        f"window_length: {WINDOW_LENGTH}",
        f"cis_window: {CIS_WINDOW}",
        f"genes_per_run: {len(genes)}",
        "ref_mismatch: fail",
        f"storage_root: {STORAGE_ROOT}",
        f"mlflow_tracking_uri: {MLFLOW_TRACKING_URI}",
        f"truth: {TRUTH}",
        "enformer:",
        f"  weights: {ENFORMER_WEIGHTS}",
        f"  targets: {ENFORMER_TARGETS}",
        f"  tracks: {json.dumps(list(ENFORMER_TRACKS))}",
        f"  haplotypes: {ENFORMER_HAPLOTYPES}",
        f"  batch_size: {ENFORMER_BATCH_SIZE}",
        "snp_effects:",
        f"  tracks: {json.dumps(list(SNP_EFFECT_TRACKS))}",
        f"  indels: {json.dumps(SNP_EFFECT_INDELS)}",
        "overlap:",
        f"  top_k: {OVERLAP_TOP_K}",
    ]
    return ("\n".join(lines) + "\n").encode()
