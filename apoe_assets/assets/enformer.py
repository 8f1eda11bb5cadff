"""Enformer predictions per gene: every distinct personal haplotype through the model once."""

import time

import dagster as dg
import numpy as np
import pandas as pd
from upath import UPath

from apoe_assets.assets.metadata import preview
from apoe_assets.assets.plots import track_plot
from apoe_assets.enformer.features import tss_bins
from apoe_assets.enformer.predictions import GenePredictions, assemble, distinct_sequences
from apoe_assets.enformer.targets import read_targets, resolve_tracks, track_descriptions
from apoe_assets.genomics.personal import SequenceFolder
from apoe_assets.partitions import StudyPartitions
from apoe_assets.resources import formats
from apoe_assets.resources.enformer import EnformerResource
from apoe_assets.resources.study import StudyResource
from apoe_assets.study import Study

GROUP = "enformer"
HEAD = "human"
POOL = "accelerator"
"""Concurrency pool: one accelerator, one Enformer step at a time (limit in dagster.yaml)."""


def selected_tracks(config: Study, head_size: int) -> pd.DataFrame:
    """``index`` and ``description`` of the study's tracks (by index, or by description
    through the study's targets table)."""
    settings = config.enformer
    try:
        indices = resolve_tracks(settings.tracks, head_size, settings.targets, HEAD)
        descriptions = (track_descriptions(read_targets(settings.targets), indices)
                        if settings.targets else [f"track {i}" for i in indices])
    except ValueError as error:
        raise dg.Failure(f"{config.source}: enformer.tracks: {error}") from error
    return pd.DataFrame({"index": indices, "description": descriptions})


def predict_gene(context: dg.AssetExecutionContext, config: Study, enformer: EnformerResource,
                 gene: str, folder: SequenceFolder) -> tuple[GenePredictions, dict]:
    """Predict one gene's distinct haplotypes and assemble its per-sample feature."""
    predictor = enformer.predictor()
    model = predictor.config
    tracks = selected_tracks(config, model.heads[HEAD])
    bins = np.arange(model.target_length)
    haplotypes, representatives = distinct_sequences(folder.manifest())
    sequences = folder.model_inputs(model.sequence_length, representatives)
    started = time.perf_counter()

    def progress(done: int, total: int) -> None:
        rate = done / max(time.perf_counter() - started, 1e-9)
        context.log.info(f"{gene}: {done}/{total} distinct sequences ({rate:.2f} sequences/s)")

    values = predictor.predict(sequences, progress, tracks=tracks["index"].to_numpy(),
                               bins=bins)
    seconds = time.perf_counter() - started
    result = assemble(haplotypes, values, tracks, bins, tss_bins(model.target_length),
                      config.enformer.haplotypes)
    summary = {"gene": gene, "haplotypes": len(haplotypes), "distinct": len(representatives),
               "seconds": round(seconds, 2),
               "sequences_per_second": round(len(representatives) / max(seconds, 1e-9), 2),
               "feature_sd": float(result.features["feature"].std())}
    return result, summary


def enformer_assets(parts: StudyPartitions) -> list[dg.AssetsDefinition]:
    """The ``enformer_predictions`` asset, partitioned by gene, one run for many genes."""

    @dg.asset(
        group_name=GROUP,
        partitions_def=parts.genes,
        kinds={"jax"},
        pool=POOL,
        retry_policy=dg.RetryPolicy(max_retries=2, delay=30),
        backfill_policy=dg.BackfillPolicy.single_run(),
    )
    def enformer_predictions(context: dg.AssetExecutionContext, study: StudyResource,
                             enformer: EnformerResource, personal_sequences: object
                             ) -> dg.MaterializeResult:
        """Per haplotype, the selected tracks at every output bin (each distinct sequence
        predicted once), and per sample the expression feature: the tracks summed over the 3
        bins at the TSS, the two haplotypes combined as the study says (default mean). A
        backfill runs every gene in one run, so the model is loaded and compiled once."""
        config = study.load()
        genes = context.partition_keys
        # one partition loads as a folder, several as {gene: folder}
        folders = (personal_sequences if isinstance(personal_sequences, dict)
                   else {genes[0]: personal_sequences})
        summaries = []
        for gene in genes:
            result, summary = predict_gene(context, config, enformer, gene, folders[gene])
            formats.save(result, UPath(config.storage_root) / "enformer_predictions" / gene)
            summaries.append(summary)
        table = pd.DataFrame(summaries).set_index("gene")
        metadata = {
            "genes": len(genes),
            "haplotypes": int(table["haplotypes"].sum()),
            "distinct_sequences": int(table["distinct"].sum()),
            "sequences_per_second": round(float(table["distinct"].sum()
                                                / max(table["seconds"].sum(), 1e-9)), 2),
            "tracks": ", ".join(result.tracks["description"]),
            "tss_bins": ", ".join(map(str, result.tss_bins)),
            "haplotype_combination": config.enformer.haplotypes,
            "per_gene": preview(table, rows=50),
        }
        if len(genes) == 1:
            metadata["tracks_plot"] = track_plot(result, f"{genes[0]}: predicted tracks")
            metadata["preview"] = preview(result.features)
        return dg.MaterializeResult(metadata=metadata)

    return [enformer_predictions]
