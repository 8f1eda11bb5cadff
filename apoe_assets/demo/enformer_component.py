"""The demo's Enformer expression component: what the demo weights predict at a gene's TSS
from each person's two haplotypes, computed exactly as the pipeline's ``personal_sequences``
and ``enformer_predictions`` assets do from the written study, then scaled to a planted share
of expression variance.

Per gene and person: both haplotypes built from the bundled VCF and reference with bcftools
consensus semantics (the study's ``sequences`` settings), re-centred on their TSS and cut to the
model window; the selected track(s) summed over the :func:`tss_bins` of the output; the two
haplotype values combined by the study's ``enformer.haplotypes`` rule. The component is that
feature standardised over the expression samples and multiplied by √share.

The cross-gene component: one gene's Enformer feature also drives another gene's expression
(:data:`CROSS_GENE_SOURCE`'s standardised feature × √:data:`CROSS_GENE_SHARE` is added to
:data:`CROSS_GENE_TARGET`), a signal only a model that reads other genes' predictions (the
multi-gene stacking) can find.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from apoe_assets.enformer.convert import load_params
from apoe_assets.enformer.features import combine_haplotypes, haplotype_feature, tss_bins
from apoe_assets.enformer.inference import Predictor
from apoe_assets.enformer.model import EnformerConfig
from apoe_assets.enformer.targets import (
    check_head_size,
    read_targets,
    select_tracks,
    track_descriptions,
)
from apoe_assets.genomics.annotation import with_windows
from apoe_assets.genomics.consensus import build_haplotypes
from apoe_assets.genomics.fasta import ReferenceGenome
from apoe_assets.genomics.genotypes import GenotypeMatrix
from apoe_assets.genomics.vcf import read_genotypes
from apoe_assets.stage_settings import sequence_window
from apoe_assets.study import Study, load_study

ENFORMER_GENES = ("APOE", "TOMM40", "APOC1")
"""Genes whose expression carries an Enformer component in the demo."""
CROSS_GENE_SOURCE = "APOE"
CROSS_GENE_TARGET = "APOC1"
CROSS_GENE_SHARE = 0.15
"""Planted share of the target's expression variance driven by the source's Enformer feature:
a fixed constant, not a random draw, so every other draw of the simulator is unchanged. It
leaves APOC1 positive noise (0.10 in the bundled study) and is plain to a model of its ~490
samples that reads APOE's prediction: alone it correlates r ≈ 0.62 with APOC1's expression
(it shares its dominant variant, an insertion near APOE's TSS, with APOC1's own feature,
r ≈ 0.77, and correlates negatively with APOC1's SNP term); beside APOC1's own Enformer
feature its coefficient is ~6 SEs from 0."""
SHARE_RANGE = (0.15, 0.25)
"""Planted share of expression variance of the component (uniform range, per gene)."""
SHARE_DECIMALS = 4
FEATURE_DECIMALS = 8
"""Haplotype and person features are rounded to this before use (float32 carries about 7
digits), so the written truth reproduces the component exactly."""
HEAD = "human"
FEATURE_COLUMNS = ["gene_id", "symbol", "sample", "haplotype_1", "haplotype_2", "feature"]


@dataclass(frozen=True)
class FeatureSpec:
    """How the study turns predictions into a feature: tracks, bins, haplotype rule."""

    config: EnformerConfig
    tracks: np.ndarray
    descriptions: list[str]
    bins: np.ndarray
    haplotypes: str
    batch_size: int


def feature_spec(study: Study) -> tuple[FeatureSpec, dict]:
    """The study's Enformer settings resolved against its weights and targets; also returns
    the parameters."""
    settings = study.enformer
    if settings.weights is None or settings.targets is None:
        raise ValueError(f"{study.source}: enformer.weights and enformer.targets must be set")
    config, params = load_params(settings.weights)
    if config.sequence_length != study.window_length:
        raise ValueError(f"{settings.weights}: the model reads {config.sequence_length:,} bp "
                         f"but the study's window_length is {study.window_length:,}")
    targets = read_targets(settings.targets)
    check_head_size(targets, config.heads[HEAD], HEAD)
    tracks = select_tracks(targets, settings.tracks)
    spec = FeatureSpec(config, tracks, track_descriptions(targets, tracks),
                       tss_bins(config.target_length), settings.haplotypes, settings.batch_size)
    return spec, params


def _gene_windows(study: Study, reference: ReferenceGenome, symbols: Sequence[str]
                  ) -> pd.DataFrame:
    """The genes' rows with their model windows, as the ``gene_annotation`` asset adds them."""
    table = study.gene_table
    missing = [s for s in symbols if s not in set(table["symbol"])]
    if missing:
        raise ValueError(f"{study.source}: Enformer genes {missing} are not study genes")
    lengths = {c: reference.contig(c).length for c in study.chromosomes}
    genes = with_windows(table, study.window_length, study.cis_window, lengths,
                         study.annotation)
    return genes.set_index("symbol").loc[list(symbols)]


def model_inputs(study: Study, gene: pd.Series, reference: ReferenceGenome,
                 genotypes: GenotypeMatrix) -> list[bytes]:
    """Both haplotypes of every sample (``s0_h1, s0_h2, …``), as ``personal_sequences`` builds
    them (padded window, the study's missing/snps_only settings) and ``enformer_predictions``
    reads them: re-centred on their own TSS and cut to the model window."""
    window = sequence_window(study, gene)
    haplotypes = build_haplotypes(reference.fetch(window), window, genotypes,
                                  missing=study.sequences.missing,
                                  snps_only=study.sequences.snps_only, tss=int(gene["tss"]))
    return haplotypes.centred(study.window_length)


def predict_features(study_file: Path, symbols: Sequence[str],
                     samples: Sequence[str] | None = None,
                     progress: Callable[[str], None] | None = None
                     ) -> tuple[pd.DataFrame, dict[str, int], FeatureSpec]:
    """Per gene and sample (VCF order; ``samples`` to keep some): both haplotype features
    and the person's combined feature. Each distinct haplotype is predicted once. Also
    returns the distinct haplotypes per gene and the resolved settings."""
    study = load_study(study_file)
    spec, params = feature_spec(study)
    reference = ReferenceGenome(study.reference_fasta)
    try:
        genes = _gene_windows(study, reference, symbols)
        predictor = Predictor(spec.config, params, head=HEAD, tracks=spec.tracks,
                              bins=spec.bins, batch_size=spec.batch_size)
        tables, distinct = [], {}
        for chrom, on_chrom in genes.groupby("chrom", sort=False):
            windows = [sequence_window(study, gene) for _, gene in on_chrom.iterrows()]
            genotypes, _ = read_genotypes(study.genotype_file(str(chrom)), str(chrom),
                                          reference, windows, study.ref_mismatch,
                                          samples=samples)
            for symbol, gene in on_chrom.iterrows():
                started = time.perf_counter()
                sequences = model_inputs(study, gene, reference, genotypes)
                unique = list(dict.fromkeys(sequences))
                values = haplotype_feature(predictor.predict(unique))
                lookup = dict(zip(unique, np.round(values, FEATURE_DECIMALS), strict=True))
                per_haplotype = np.array([lookup[s] for s in sequences]).reshape(-1, 2)
                distinct[str(symbol)] = len(unique)
                tables.append(pd.DataFrame({
                    "gene_id": gene["gene_id"], "symbol": symbol,
                    "sample": genotypes.samples,
                    "haplotype_1": per_haplotype[:, 0], "haplotype_2": per_haplotype[:, 1],
                    "feature": np.round(combine_haplotypes(per_haplotype, spec.haplotypes),
                                        FEATURE_DECIMALS),
                }))
                if progress:
                    seconds = time.perf_counter() - started
                    progress(f"enformer: {symbol}, {len(unique)} distinct haplotypes of "
                             f"{len(sequences)} in {seconds:.1f} s "
                             f"({len(unique) / max(seconds, 1e-9):.1f} sequences/s)")
    finally:
        reference.close()
    features = (pd.concat(tables, ignore_index=True) if tables
                else pd.DataFrame(columns=FEATURE_COLUMNS))
    return features, distinct, spec


def plan_shares(symbols: Sequence[str], rng: np.random.Generator) -> dict[str, float]:
    """Planted share of expression variance per gene, uniform in :data:`SHARE_RANGE`."""
    return {s: round(float(rng.uniform(*SHARE_RANGE)), SHARE_DECIMALS) for s in symbols}


def plant_component(features: pd.DataFrame, shares: Mapping[str, float],
                    samples: Sequence[str]) -> tuple[pd.DataFrame, dict[str, dict[str, float]]]:
    """Add a ``component`` column: ``√share · (feature − mean) / sd``, mean and sd (ddof 0)
    over ``samples`` (the expression samples), so its variance there is exactly ``share``.
    Also returns per gene the share, mean and sd."""
    table = features.copy()
    table["component"] = np.nan
    stats = {}
    for symbol, share in shares.items():
        rows = table["symbol"] == symbol
        values = table.loc[rows].set_index("sample")["feature"]
        reference = values.loc[list(samples)].to_numpy()
        mean, sd = float(reference.mean()), float(reference.std())
        if not sd > 0:
            raise ValueError(f"{symbol}: the Enformer feature is the same for every sample")
        table.loc[rows, "component"] = np.sqrt(share) * (table.loc[rows, "feature"] - mean) / sd
        stats[symbol] = {"share": share, "feature_mean": mean, "feature_sd": sd}
    return table, stats


def cross_gene_plan(enformer_genes: Sequence[str], study_genes: Sequence[str],
                    source: str = CROSS_GENE_SOURCE, target: str = CROSS_GENE_TARGET,
                    share: float = CROSS_GENE_SHARE) -> dict[str, dict[str, float | str]]:
    """``{target: {"source": source, "share": share}}`` when ``source`` is among the
    ``enformer_genes`` (its feature is predicted) and ``target`` among the ``study_genes``;
    otherwise ``{}``: there is no cross-gene component."""
    if source in enformer_genes and target in study_genes and target != source:
        return {target: {"source": source, "share": share}}
    return {}


def cross_gene_terms(features: pd.DataFrame, plan: Mapping[str, Mapping[str, float | str]],
                     samples: Sequence[str]) -> dict[str, np.ndarray]:
    """Per target symbol of ``plan``: the source's feature over ``samples`` (in that order)
    standardised there (ddof 0) and times √share, so its variance there is exactly share."""
    terms = {}
    for target, spec in plan.items():
        rows = features[features["symbol"] == spec["source"]]
        feature = rows.set_index("sample").loc[list(samples), "feature"].to_numpy(np.float64)
        sd = float(feature.std())
        if not sd > 0:
            raise ValueError(f"{spec['source']}: the Enformer feature is the same for every "
                             f"sample")
        terms[target] = np.sqrt(float(spec["share"])) * (feature - feature.mean()) / sd
    return terms


def components_by_gene(table: pd.DataFrame, samples: Sequence[str]) -> dict[str, np.ndarray]:
    """Per gene_id, the component over ``samples`` (in that order)."""
    return {str(gene_id): rows.set_index("sample").loc[list(samples), "component"].to_numpy()
            for gene_id, rows in table.groupby("gene_id", sort=False)}
