"""Variant effects per gene: every cohort variant of the model window, REF against ALT.

The science is :mod:`apoe_assets.enformer.variant_effects`; this loads the window and the
variants, maps the study to the scoring settings, runs the model and reports. No association
statistic is an input (the asset does not depend on ``cis_eqtl``), so a later overlap with the
eQTLs is not circular.
"""


import time
from typing import TYPE_CHECKING

import dagster as dg
import numpy as np
import pandas as pd

from apoe_assets.assets.enformer import ACCELERATOR_RETRIES, HEAD, POOL, load_model, selected_tracks
from apoe_assets.assets.metadata import preview
from apoe_assets.assets.plots import embedded, png, pyplot
from apoe_assets.assets.progress import throttled
from apoe_assets.assets.sources import WEIGHTS_FILE
from apoe_assets.enformer.features import tss_bins
from apoe_assets.enformer.targets import check_head_size, read_targets
from apoe_assets.enformer.variant_effects import (
    SKIP_REASONS,
    SNP_EFFECTS_VERSION,
    EffectSettings,
    FullForwards,
    GeneWindow,
    Incremental,
    RefMismatchError,
    VariantEffects,
    match_tracks,
    variant_centred_effects,
    variant_effects,
)
from apoe_assets.genomics.fasta import ReferenceGenome
from apoe_assets.genomics.genotypes import GenotypeMatrix
from apoe_assets.orchestration.executors import ACCELERATOR_TAGS
from apoe_assets.partitions import StudyPartitions
from apoe_assets.resources.enformer import EnformerResource
from apoe_assets.resources.storage import ByPartition, by_partition
from apoe_assets.resources.study import StudyResource
from apoe_assets.study import Study

# heavy (JAX): imported on first use, so that loading the code location stays fast
if TYPE_CHECKING:
    from apoe_assets.enformer.inference import Predictor

GROUP = "enformer"


def head_tracks(config: Study, head_size: int) -> pd.DataFrame:
    """Every track of the head: ``index``, ``description`` (from the study's targets table,
    else ``track i``)."""
    targets = config.enformer.targets
    if targets is None:
        return pd.DataFrame({"index": np.arange(head_size),
                             "description": [f"track {i}" for i in range(head_size)]})
    table = read_targets(targets)
    check_head_size(table, head_size, HEAD)
    return table[["index", "description"]]


def effect_settings(config: Study, predictor: "Predictor") -> tuple[EffectSettings, pd.DataFrame]:
    """The scoring settings of this study and model, and the head's track table. A track
    pattern that matches nothing fails at once, listing the closest descriptions."""
    settings = config.snp_effects
    model = predictor.config
    expression = selected_tracks(config, model.heads[HEAD])
    tracks = head_tracks(config, model.heads[HEAD])
    try:
        chosen = match_tracks(tracks, settings.tracks)
    except ValueError as error:
        raise dg.Failure(f"{config.source}: snp_effects.tracks: {error}. Set snp_effects.tracks "
                         "to description prefixes, 're:' patterns or indices of the head "
                         f"({config.enformer.targets or 'no targets table: indices only'}).",
                         allow_retries=False) from error
    return EffectSettings(expression["index"].to_numpy(np.int64), chosen,
                          tss_bins(model.target_length), indels=settings.indels,
                          ref_mismatch=config.ref_mismatch), tracks


def effect_plot(effects: VariantEffects, title: str) -> dg.MetadataValue:
    """``expr_effect`` and ``tracks_l1`` along the window (kb from the TSS), the TSS dashed."""
    plt = pyplot()
    table = effects.table
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(7, 4), sharex=True)
    x = table["distance_to_tss"].to_numpy() / 1e3
    top.vlines(x, 0, table["expr_effect"], color="#4a6fa5", linewidth=0.8)
    top.scatter(x, table["expr_effect"], s=8, color="#4a6fa5", linewidths=0)
    top.axhline(0, color="black", linewidth=0.5)
    top.set(ylabel="expr_effect\n(ALT − REF)", title=title)
    bottom.scatter(x, table["tracks_l1"], s=8, color="#d1495b", linewidths=0,
                   label="selected tracks")
    bottom.scatter(x, table["full_matrix_l1"], s=8, color="grey", linewidths=0, alpha=0.6,
                   label="full matrix")
    bottom.set(xlabel="distance to TSS (kb)", ylabel="Σ |ALT − REF|", yscale="symlog")
    bottom.legend(frameon=False, loc="upper right", fontsize=7)
    for axes in (top, bottom):
        axes.axvline(0, color="grey", linestyle="--", linewidth=0.8)
    return embedded(png(figure), title)


def alt_model(config: Study, predictor: "Predictor") -> FullForwards | Incremental:
    """Incremental SNV scoring when the study allows it (float32, no reverse-complement
    averaging, windows centred on the TSS), else a full forward per ALT."""
    settings = config.snp_effects
    if settings.incremental and not (settings.variant_centred or settings.reverse_complement) \
            and predictor.precision == "float32":
        return Incremental.of(predictor)
    return FullForwards(predictor, reverse_complement=settings.reverse_complement)


def score_gene(context: dg.AssetExecutionContext, config: Study, predictor: "Predictor",
               model: FullForwards | Incremental, reference: ReferenceGenome, gene: pd.Series,
               genotypes: GenotypeMatrix) -> VariantEffects:
    """One gene's variant effects through ``model`` (one per run: its compiled functions serve
    every gene), logged as it goes, with its metadata added."""
    key = str(gene["partition_key"])
    settings, tracks = effect_settings(config, predictor)
    length = predictor.config.sequence_length
    window = GeneWindow.around(gene["chrom"], int(gene["tss"]), length, config.sequence_flank,
                               reference.fetch)
    variants = genotypes.window(window.window.start, window.window.end).variants

    @throttled
    def progress(done: int, total: int, rate: float) -> None:
        context.log.info(f"{key}: {done}/{total} variants ({rate:.2f} variants/s)")

    started = time.perf_counter()
    try:
        if config.snp_effects.variant_centred:
            effects = variant_centred_effects(window, variants, model, settings,
                                              reference.fetch, config.sequence_flank, tracks,
                                              progress)
        else:
            effects = variant_effects(window, variants, model, settings, tracks, progress)
    except RefMismatchError as error:
        raise dg.Failure(f"{key}: {error}", allow_retries=False) from error
    seconds = time.perf_counter() - started
    counts = effects.counts
    rate = counts["scored"] / seconds if counts["scored"] else 0.0
    context.log.info(f"{key}: {counts['scored']} variants scored in {seconds:.1f} s "
                     f"({rate:.2f} variants/s); skipped " + ", ".join(
                         f"{r} {counts[f'skipped_{r}']}" for r in SKIP_REASONS))
    table = effects.table
    selected = effects.tracks[effects.tracks["role"] == "selected"]
    context.add_asset_metadata({
        "gene": key, "window": effects.info["window"], "tss": effects.info["tss"],
        **{k: int(v) for k, v in counts.items()},
        "seconds": round(seconds, 2), "variants_per_second": round(rate, 3),
        "expression_tracks": ", ".join(
            effects.tracks.loc[effects.tracks["role"] == "expression", "description"]),
        "selected_tracks": len(selected),
        "selected_track_names": ", ".join(selected["description"].head(20)),
        "reverse_complement": config.snp_effects.reverse_complement,
        "indels": config.snp_effects.indels,
        "centred_on": effects.info["centred_on"],
        "effect_plot": effect_plot(effects, f"{key}: variant effects"),
        "top_variants": preview(table.sort_values("rank_expr_effect"), rows=10, columns=12),
    }, partition_key=key)
    return effects


def snp_effect_assets(parts: StudyPartitions) -> list[dg.AssetsDefinition]:
    """The ``snp_effects`` asset, partitioned by gene, up to ``genes_per_run`` genes a run."""

    @dg.asset(
        group_name=GROUP,
        partitions_def=parts.genes,
        ins={"genotypes": dg.AssetIn(partition_mapping=parts.gene_chromosome)},
        kinds={"jax", "pandas"},
        pool=POOL,
        retry_policy=ACCELERATOR_RETRIES,
        op_tags=ACCELERATOR_TAGS,
        deps=["reference_genome", WEIGHTS_FILE],
        code_version=SNP_EFFECTS_VERSION,
        backfill_policy=parts.gene_backfill,
    )
    def snp_effects(context: dg.AssetExecutionContext, study: StudyResource,
                    enformer: EnformerResource, gene_annotation: pd.DataFrame,
                    genotypes: object) -> dg.Output[ByPartition]:
        """Per cohort variant of the gene's model window (SNVs/MNVs; indels by setting):
        ``expr_effect`` (ALT − REF of the expression tracks over the TSS bins),
        ``full_matrix_l1`` (Σ |ALT − REF| over every bin and track), ``tracks_l1`` (the same
        over ``snp_effects.tracks``) and their ranks; beside the table the SAD of every
        selected track. The reference is predicted once per gene, the ALTs in batches."""
        config = study.load()
        genes = context.partition_keys
        chromosomes = by_partition(genotypes, context.asset_partition_keys_for_input(
            "genotypes"))
        annotation = gene_annotation.set_index("partition_key", drop=False)
        predictor = load_model(config, enformer)
        model = alt_model(config, predictor)
        reference = ReferenceGenome(config.reference_fasta)
        results = ByPartition()
        try:
            for key in genes:
                gene = annotation.loc[key]
                results[key] = score_gene(context, config, predictor, model, reference, gene,
                                          chromosomes[gene["chrom"]])
        finally:
            reference.close()
        scored = sum(r.counts["scored"] for r in results.values())
        seconds = sum(r.info["seconds"] for r in results.values())
        return dg.Output(results, metadata={
            "genes": len(genes), "variants_scored": scored,
            "variants_per_second": round(scored / seconds, 3) if seconds else 0.0,
            "model_loads": enformer.loads})

    return [snp_effects]
