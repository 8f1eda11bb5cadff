"""From the study file to each stage's core settings: one function per stage, so that the path
of a setting from the YAML to the science is written once, here.

The defaults themselves live beside the science (``stats/eqtl.MAF_THRESHOLD``,
``stats/prs.P_THRESHOLDS``, ``ml/elastic_net.L1_RATIO``, …) and the study's fields take them
from there."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from apoe_assets.genomics.coordinates import Interval
from apoe_assets.genomics.personal import SequenceSpec
from apoe_assets.ml.gene_models import ModelSettings
from apoe_assets.resources.enformer import EnformerResource
from apoe_assets.study import Study

JAX_CACHE = ".jax_cache"
"""JAX's persistent compilation cache, under a local storage root."""


def sequence_window(study: Study, gene: pd.Series) -> Interval:
    """The gene's model window plus ``sequence_flank`` either side: what personal sequences
    cover (``gene``: a ``gene_annotation`` row)."""
    flank = study.sequence_flank
    return Interval(gene["chrom"], int(gene["window_start"]) - flank,
                    int(gene["window_end"]) + flank)


def sequence_spec(study: Study, gene: pd.Series) -> SequenceSpec:
    """What ``personal_sequences`` builds for one gene."""
    settings = study.sequences
    return SequenceSpec(sequence_window(study, gene), int(gene["tss"]), settings.missing,
                        settings.snps_only, settings.chunk_samples)


def genotype_model_settings(study: Study) -> ModelSettings:
    """The genotype models' settings (no permutations: the gene-level p-value is
    ``cis_eqtl``'s)."""
    prs = study.prs
    return ModelSettings(
        n_folds=study.folds, n_inner_folds=prs.inner_folds, seed=study.seed,
        cis_window=study.cis_window, maf_threshold=study.eqtl.maf_threshold, n_permutations=0,
        p_thresholds=tuple(sorted(prs.p_thresholds)), clump_p1=prs.clump_p1,
        clump_r2=prs.clump_r2, clump_kb=prs.clump_kb, l1_ratio=prs.l1_ratio)


def enformer_resource(study: Study) -> EnformerResource:
    """The Enformer runtime as the study file sets it (each field can be overridden in the
    launchpad); the compilation cache lives beside a local storage root."""
    settings = study.enformer
    local = "://" not in study.storage_root
    return EnformerResource(
        weights=str(settings.weights) if settings.weights else None, device=settings.device,
        batch_size=settings.batch_size, precision=settings.precision,
        reverse_complement=settings.reverse_complement,
        compilation_cache_dir=str(Path(study.storage_root) / JAX_CACHE) if local else None)
