"""The demo study end to end: reference, genotypes, expression, truth, study.yaml, README."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import jax
import jaxlib
import msprime
import numpy as np
import pandas as pd
import tskit

from apoe_assets.demo import ancestry, layout
from apoe_assets.demo.covariates import simulate_covariates
from apoe_assets.demo.enformer_component import (
    ENFORMER_GENES,
    HEAD,
    components_by_gene,
    cross_gene_plan,
    cross_gene_terms,
    plan_shares,
    plant_component,
    predict_features,
)
from apoe_assets.demo.enformer_weights import write_demo_model
from apoe_assets.demo.expression import (
    CausalPool,
    ExpressionTruth,
    eligible_causal,
    simulate_expression,
)
from apoe_assets.demo.facts import (
    APOE_SNPS,
    CHROM,
    CHROM_LENGTH,
    FOCUS_GENE,
    REGION_FIRST,
    REGION_LAST,
    REGION_LENGTH,
    RS7412,
)
from apoe_assets.demo.files import matrix_text, table_text, write_atomic, write_bgzf_atomic
from apoe_assets.demo.genes import annotation_tsv, gene_table, nearest_genes, study_genes
from apoe_assets.demo.masking import Calls, mask_calls
from apoe_assets.demo.readme import readme_text
from apoe_assets.demo.reference import chromosome, composition, markov_sequence, plant_bases
from apoe_assets.demo.variants import VariantSet, build_variants
from apoe_assets.demo.vcf_writer import vcf_text, write_vcf
from apoe_assets.genomics.fasta import write_indexed_fasta

DEFAULT_SEED = 20231107
DEFAULT_SAMPLES = 500
MIN_SAMPLES = 20
NO_RNA_SHARE = 0.02
"""Share of genotyped samples without expression (absent from expression and covariates)."""
_STREAMS = ("reference", "ancestry", "alleles", "calls", "samples", "covariates", "expression",
            "enformer")
"""Independent random streams; a new one goes last so the others keep their draws."""
ENFORMER_DECIMALS = 8
"""Decimals of the Enformer features table (its features have this many)."""
RECORD_DIGITS = 12
"""Significant digits of the Enformer feature statistics in simulation.json."""

ExtraComponents = Callable[[Path, Sequence[str]], Mapping[str, np.ndarray]]
"""Hook for components beyond SNPs and covariates: called with the study folder (reference
and VCF already written) and the expression samples, returns per-gene_id values over them."""


def simulate_study(out_dir: Path, seed: int = DEFAULT_SEED, n_samples: int = DEFAULT_SAMPLES,
                   genes: str = "default", progress: Callable[[str], None] | None = None,
                   extra_components: ExtraComponents | None = None, threads: int = 1,
                   enformer_genes: Sequence[str] = ENFORMER_GENES) -> Path:
    """Write the planted-truth demo study to ``out_dir``; returns its study.yaml.

    The output is a function of (seed, n_samples, genes, enformer_genes) alone: the same
    arguments give byte-identical files (on one machine: the Enformer component is float32
    arithmetic whose last bits may differ between CPUs). ``enformer_genes`` (study genes) get
    an expression component predicted by the demo Enformer weights; the weights are always
    written. The cross-gene component (:func:`cross_gene_plan`: part of APOC1's expression
    driven by APOE's Enformer feature) is planted only when its source is among the
    ``enformer_genes`` and its target among the study genes; otherwise there is none, and its
    truth columns are 0.
    """
    if n_samples < MIN_SAMPLES:
        raise ValueError(f"n_samples must be at least {MIN_SAMPLES}, got {n_samples}")
    report = progress or (lambda _: None)
    out = Path(out_dir)
    streams = np.random.SeedSequence(seed).spawn(len(_STREAMS))
    rng = {name: np.random.default_rng(s) for name, s in zip(_STREAMS, streams, strict=True)}
    genes_table = gene_table()
    listed = study_genes(genes_table, genes)

    report(f"reference: synthetic {CHROM}:{REGION_FIRST:,}-{REGION_LAST:,}")
    region = _write_reference(out, rng["reference"], threads)

    report(f"genotypes: msprime, {n_samples} diploids")
    seeds = [int(v) % (2**32 - 1) + 1
             for v in streams[_STREAMS.index("ancestry")].generate_state(2)]
    ts = ancestry.simulate_ancestry(n_samples, REGION_LENGTH, seeds)
    variants = build_variants(ts, ancestry.site_patterns(ts), region, APOE_SNPS, rng["alleles"])
    calls = mask_calls(variants.haplotypes, np.isin(variants.pos, [s.pos for s in APOE_SNPS]),
                       rng["calls"])
    samples = sample_ids(n_samples)
    (out / layout.GENOTYPES).parent.mkdir(parents=True, exist_ok=True)
    write_vcf(out / layout.GENOTYPES,
              vcf_text(variants, calls, samples, Path(layout.REFERENCE).name), threads)

    report(f"expression: {len(genes_table)} genes with planted causal SNPs")
    rna = rna_samples(samples, rng["samples"])
    pool, non_ref = _causal_pool(variants, calls, samples, rna)
    covariates = simulate_covariates(non_ref, rna, rng["covariates"])
    weights_seed = int(streams[_STREAMS.index("enformer")].generate_state(1)[0])
    report(f"enformer: demo weights (seed {weights_seed}), study.yaml")
    write_demo_model(out, weights_seed)
    write_atomic(out / layout.ANNOTATION, annotation_tsv(genes_table))
    study_file = out / layout.STUDY_FILE
    write_atomic(study_file, layout.study_yaml(seed, listed))
    features, enformer = _enformer_component(study_file, enformer_genes, rna,
                                             rng["enformer"], report)
    enformer["weights_seed"] = weights_seed
    cross_gene = cross_gene_plan(enformer_genes, listed)
    gene_ids = dict(zip(genes_table["symbol"], genes_table["gene_id"], strict=True))

    extra = extra_components(out, rna) if extra_components else None
    components = {"enformer": components_by_gene(features, rna),
                  "cross_gene": {gene_ids[target]: term for target, term
                                 in cross_gene_terms(features, cross_gene, rna).items()},
                  **({"extra": extra} if extra is not None else {})}
    truth = simulate_expression(genes_table, pool, covariates, nearest_genes(genes_table),
                                {FOCUS_GENE: [variants.index_of(RS7412.pos)]},
                                rng["expression"], components)

    report("writing expression, covariates, truth, README")
    _write_expression(out, genes_table, truth, covariates)
    record = simulation_record(seed, n_samples, len(rna), seeds, region, variants, calls, truth,
                               enformer, cross_gene)
    _write_truth(out, truth, record)
    write_atomic(out / layout.TRUTH_ENFORMER, table_text(features, ENFORMER_DECIMALS))
    write_atomic(out / layout.README, readme_text(seed, n_samples, genes, record))
    return study_file


def _enformer_component(study_file: Path, symbols: Sequence[str], rna: Sequence[str],
                        rng: np.random.Generator, report: Callable[[str], None]
                        ) -> tuple[pd.DataFrame, dict]:
    """Per-sample Enformer features and planted components of ``symbols`` (expression
    samples only), and their record for ``simulation.json``."""
    features, distinct, spec = predict_features(study_file, symbols, samples=rna,
                                                progress=report)
    features, stats = plant_component(features, plan_shares(symbols, rng), rna)
    record = {
        "config": spec.config.to_dict(),
        "weights": layout.ENFORMER_WEIGHTS,
        "targets": layout.ENFORMER_TARGETS,
        "head": HEAD,
        "tracks": list(layout.ENFORMER_TRACKS),
        "track_indices": spec.tracks.tolist(),
        "track_descriptions": spec.descriptions,
        "bins": spec.bins.tolist(),
        "haplotypes": spec.haplotypes,
        "batch_size": spec.batch_size,
        "precision": "float32",
        "genes": {symbol: {**{k: float(f"{v:.{RECORD_DIGITS}g}")
                              for k, v in stats[symbol].items()},
                           "distinct_haplotypes": distinct[symbol]} for symbol in symbols},
    }
    return features, record


def _write_reference(out: Path, rng: np.random.Generator, threads: int) -> bytes:
    """Write the synthetic chr19 FASTA; returns the region's bases."""
    region = plant_bases(markov_sequence(rng, REGION_LENGTH), REGION_FIRST,
                         {snp.pos: snp.ref for snp in APOE_SNPS})
    (out / layout.REFERENCE).parent.mkdir(parents=True, exist_ok=True)
    write_indexed_fasta(out / layout.REFERENCE,
                        [(CHROM, chromosome(region, REGION_FIRST, CHROM_LENGTH))], threads)
    return region


def _causal_pool(variants: VariantSet, calls: Calls, samples: Sequence[str],
                 rna: Sequence[str]) -> tuple[CausalPool, np.ndarray]:
    """Candidate causal variants with their true dosages over the expression samples, and the
    non-REF allele counts ``[variants, expression samples]`` the genotype PCs are made from."""
    column = {sample: i for i, sample in enumerate(samples)}
    columns = np.array([column[s] for s in rna])
    alleles = variants.haplotypes.reshape(len(variants), len(samples), 2)
    alt1 = (alleles == 1).sum(axis=2).astype(np.float64)
    non_ref = (alleles != 0).sum(axis=2).astype(np.float64)
    eligible = eligible_causal(variants.kinds(), alt1, calls.missing().mean(axis=1))
    pool = CausalPool(variants.pos, variants.variant_ids(), variants.ids, alt1[:, columns],
                      eligible)
    return pool, non_ref[:, columns]


def sample_ids(n_samples: int) -> list[str]:
    """``S0001`` … (zero-padded to at least four digits)."""
    width = max(4, len(str(n_samples)))
    return [f"S{i:0{width}d}" for i in range(1, n_samples + 1)]


def rna_samples(samples: Sequence[str], rng: np.random.Generator) -> list[str]:
    """The samples with expression, shuffled: all but about :data:`NO_RNA_SHARE` of them."""
    absent = max(1, round(NO_RNA_SHARE * len(samples)))
    dropped = set(rng.choice(len(samples), size=absent, replace=False).tolist())
    kept = [s for i, s in enumerate(samples) if i not in dropped]
    return [kept[i] for i in rng.permutation(len(kept))]


def _write_expression(out: Path, genes: pd.DataFrame, truth: ExpressionTruth,
                      covariates: pd.DataFrame) -> None:
    """Expression BED (tensorQTL/GTEx layout, rows by TSS) and the covariates TSV."""
    ordered = genes.sort_values("tss", kind="stable")
    labels = [(CHROM, tss - 1, tss, gene_id)
              for gene_id, tss in zip(ordered["gene_id"], ordered["tss"], strict=True)]
    bed = matrix_text(["#chr", "start", "end", "gene_id", *truth.expression.columns], labels,
                      truth.expression.loc[ordered["gene_id"]].to_numpy())
    write_bgzf_atomic(out / layout.EXPRESSION, bed)
    write_atomic(out / layout.COVARIATES,
                 matrix_text(["ID", *covariates.columns], [(n,) for n in covariates.index],
                             covariates.to_numpy()))


def _write_truth(out: Path, truth: ExpressionTruth, record: dict) -> None:
    write_atomic(out / layout.TRUTH_CAUSAL, table_text(truth.causal))
    write_atomic(out / layout.TRUTH_GENES, table_text(truth.genes))
    write_atomic(out / layout.TRUTH_COVARIATES, table_text(truth.covariate_effects))
    write_atomic(out / layout.TRUTH_SIMULATION,
                 (json.dumps(record, indent=2, sort_keys=True) + "\n").encode())


def simulation_record(seed: int, n_samples: int, n_expression: int, msprime_seeds: list[int],
                      region: bytes, variants: VariantSet, calls: Calls,
                      truth: ExpressionTruth, enformer: dict, cross_gene: dict) -> dict:
    """How the study was made and what came out, for ``truth/simulation.json``;
    ``cross_gene`` is :func:`cross_gene_plan`'s (target → source and share)."""
    kinds = pd.Series(variants.kinds()).value_counts()
    haplotypes = {snp.rsid: variants.haplotypes[variants.index_of(snp.pos)]
                  for snp in APOE_SNPS}
    both = int(np.sum(np.logical_and.reduce([h == 1 for h in haplotypes.values()])))
    return {
        "seed": seed,
        "samples": n_samples,
        "expression_samples": n_expression,
        "region": f"{CHROM}:{REGION_FIRST}-{REGION_LAST}",
        "chrom_length": CHROM_LENGTH,
        "population_size": ancestry.POPULATION_SIZE,
        "recombination_rate": ancestry.RECOMBINATION_RATE,
        "mutation_rate": ancestry.MUTATION_RATE,
        "msprime_seeds": msprime_seeds,
        "versions": {"msprime": msprime.__version__, "tskit": tskit.__version__,
                     "numpy": np.__version__, "jax": jax.__version__,
                     "jaxlib": jaxlib.__version__},
        "reference": {k: round(v, 6) for k, v in composition(region).items()},
        "variants": {
            "sites": len(variants),
            **{kind: int(kinds.get(kind, 0)) for kind in ("snv", "ins", "del", "multiallelic")},
            **{k: round(v, 6) for k, v in calls.summary().items()},
        },
        "apoe_snps": {
            **{snp.rsid: {"pos": snp.pos, "ref": snp.ref, "alt": snp.alt,
                          "alt_frequency": round(float(haplotypes[snp.rsid].mean()), 6)}
               for snp in APOE_SNPS},
            "haplotypes_with_both_alt": both,
        },
        "null_genes": truth.genes.loc[truth.genes["h2_planted"] == 0, "symbol"].tolist(),
        "enformer": enformer,
        "cross_gene": cross_gene,
    }
