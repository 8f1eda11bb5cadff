"""Enformer predictions per gene: every distinct personal haplotype through the model once."""

import time
from typing import TYPE_CHECKING

import dagster as dg
import pandas as pd

from apoe_assets.assets.metadata import preview
from apoe_assets.assets.plots import track_plot
from apoe_assets.assets.progress import throttled
from apoe_assets.assets.sources import WEIGHTS_FILE
from apoe_assets.enformer.features import tss_bins
from apoe_assets.enformer.predictions import PREDICTIONS_VERSION, GenePredictions, predict_gene
from apoe_assets.enformer.runtime import MissingWeightsError
from apoe_assets.enformer.targets import read_targets, resolve_tracks, track_descriptions
from apoe_assets.genomics.personal import SequenceFolder
from apoe_assets.orchestration.executors import ACCELERATOR_TAGS
from apoe_assets.partitions import StudyPartitions
from apoe_assets.resources.enformer import EnformerResource
from apoe_assets.resources.storage import ByPartition, by_partition
from apoe_assets.resources.study import StudyResource
from apoe_assets.stage_settings import enformer_resource
from apoe_assets.study import Study

# heavy (JAX): imported on first use, so that loading the code location stays fast
if TYPE_CHECKING:
    from apoe_assets.enformer.inference import Predictor

GROUP = "enformer"
HEAD = "human"
POOL = "accelerator"
"""Concurrency pool: one accelerator, one Enformer step at a time (limit in dagster.yaml)."""
ACCELERATOR_RETRIES = dg.RetryPolicy(max_retries=2, delay=30)
"""Enformer steps retry what can pass on its own (a device lost or out of memory); errors of
the study's settings raise ``dg.Failure(allow_retries=False)`` and fail at once."""


def selected_tracks(config: Study, head_size: int) -> pd.DataFrame:
    """``index`` and ``description`` of the study's tracks (by index, or by description
    through the study's targets table)."""
    settings = config.enformer
    try:
        indices = resolve_tracks(settings.tracks, head_size, settings.targets, HEAD)
        descriptions = (track_descriptions(read_targets(settings.targets), indices)
                        if settings.targets else [f"track {i}" for i in indices])
    except (ValueError, OSError) as error:
        where = (f"the descriptions in {settings.targets}" if settings.targets
                 else f"indices 0 … {head_size - 1}, or set enformer.targets to use descriptions")
        raise dg.Failure(f"{config.source}: enformer.tracks {settings.tracks}: {error}. Set "
                         f"enformer.tracks to track indices or description prefixes (e.g. "
                         f"'CAGE:brain'); choose from {where}.", allow_retries=False) from error
    return pd.DataFrame({"index": indices, "description": descriptions})


RUN_TIME_FIELDS = ("device", "batch_size", "compilation_cache_dir")
"""What a launchpad override of the ``enformer`` resource may change: where and in what batches
the model runs (the outputs agree within float32 tolerance). Everything that changes the
predictions (weights, precision, reverse-complement averaging, tracks, haplotype rule) comes
from the study file only, so the stored outputs, their lineage and the weights' source asset
always name the same settings."""


def check_one_path(config: Study, enformer: EnformerResource) -> None:
    """Fail, naming the fields, when the run's resource disagrees with the study file on a
    setting that changes the predictions."""
    study_side = enformer_resource(config)
    differ = [name for name in type(enformer).model_fields
              if name not in RUN_TIME_FIELDS
              and getattr(enformer, name) != getattr(study_side, name)]
    if differ:
        raise dg.Failure(
            f"{config.source}: this run's enformer resource sets {', '.join(differ)} "
            f"differently from the study file; settings that change the predictions come from "
            f"the study file only (enformer.{differ[0]} there). A launchpad override may "
            f"change {', '.join(RUN_TIME_FIELDS)}.", allow_retries=False)


def load_model(config: Study, enformer: EnformerResource) -> "Predictor":
    """The run's model; a configuration error fails at once (a retry could not fix it)."""
    from apoe_assets.enformer.convert import ConversionError  # heavy (JAX), as above

    check_one_path(config, enformer)
    try:
        return enformer.predictor()
    except (MissingWeightsError, ConversionError) as error:
        raise dg.Failure(f"{config.source}: enformer.weights: {error}", allow_retries=False
                         ) from error


def predict_one_gene(context: dg.AssetExecutionContext, config: Study, predictor: "Predictor",
                     gene: str, folder: SequenceFolder) -> tuple[GenePredictions, dict]:
    """Predict one gene's distinct haplotypes and assemble its per-sample feature."""
    model = predictor.config
    tracks = selected_tracks(config, model.heads[HEAD])
    computed_before = predictor.sequences_computed
    started = time.perf_counter()

    @throttled
    def progress(done: int, total: int, rate: float) -> None:
        context.log.info(f"{gene}: {done}/{total} distinct sequences ({rate:.2f} sequences/s)")

    result = predict_gene(predictor, folder, tracks, tss_bins(model.target_length),
                          config.enformer.haplotypes, progress=progress)
    seconds = time.perf_counter() - started
    distinct = len(result.values)
    summary = {"gene": gene, "haplotypes": len(result.haplotypes), "distinct": distinct,
               "computed": predictor.sequences_computed - computed_before,
               "seconds": round(seconds, 2),
               "sequences_per_second": round(distinct / max(seconds, 1e-9), 2),
               "feature_sd": float(result.features["feature"].std())}
    return result, summary


def enformer_assets(parts: StudyPartitions) -> list[dg.AssetsDefinition]:
    """The ``enformer_predictions`` asset, partitioned by gene, up to ``genes_per_run`` genes a
    run."""

    @dg.asset(
        group_name=GROUP,
        partitions_def=parts.genes,
        kinds={"jax"},
        pool=POOL,
        retry_policy=ACCELERATOR_RETRIES,
        op_tags=ACCELERATOR_TAGS,
        backfill_policy=parts.gene_backfill,
        deps=[WEIGHTS_FILE],
        code_version=PREDICTIONS_VERSION,
    )
    def enformer_predictions(context: dg.AssetExecutionContext, study: StudyResource,
                             enformer: EnformerResource, personal_sequences: object
                             ) -> dg.Output[ByPartition]:
        """Per haplotype, the selected tracks at every output bin (each distinct sequence
        predicted once), and per sample the expression feature: the tracks summed over the 3
        bins at the TSS, the two haplotypes combined as the study says (default mean). A
        backfill runs up to ``genes_per_run`` genes a run, so the model is loaded and compiled
        once per run; each gene's predictions are stored through the IO manager."""
        config = study.load()
        genes = context.partition_keys
        folders = by_partition(personal_sequences, genes)
        predictor = load_model(config, enformer)
        summaries, results = [], ByPartition()
        for gene in genes:
            results[gene], summary = predict_one_gene(context, config, predictor, gene,
                                                      folders[gene])
            summaries.append(summary)
            context.add_asset_metadata({**summary, "preview": preview(results[gene].features)},
                                       partition_key=gene)
        first = results[genes[0]]
        table = pd.DataFrame(summaries).set_index("gene")
        metadata = {
            "genes": len(genes),
            "haplotypes": int(table["haplotypes"].sum()),
            "distinct_sequences": int(table["distinct"].sum()),
            "sequences_computed": int(table["computed"].sum()),
            "sequences_per_second": round(float(table["distinct"].sum()
                                                / max(table["seconds"].sum(), 1e-9)), 2),
            "model_loads": enformer.loads,
            "tracks": ", ".join(first.tracks["description"]),
            "tss_bins": ", ".join(map(str, first.tss_bins)),
            "haplotype_combination": config.enformer.haplotypes,
            "per_gene": preview(table, rows=50),
        }
        metadata["tracks_plot"] = track_plot(first, f"{genes[0]}: predicted tracks")
        return dg.Output(results, metadata=metadata)

    return [enformer_predictions]
