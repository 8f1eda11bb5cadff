"""Genotype-only expression models per gene: baseline PRS, pruning + thresholding PRS and the
PrediXcan-style elastic net, each predicting every sample out of fold.

Two assets from one computation: ``prs_scores`` (per sample: fold, observed covariate-adjusted
expression, one out-of-fold prediction per model) and ``prs_weights`` (per outer fold and
model, the non-zero weights that scored the fold's test samples, with the intercept and scale
that turn a score into a prediction), for SNP-effect overlap and audits. The PRS weights are
the ``cis_eqtl`` asset's per-fold training tables, used as stored once their fingerprints
(samples, variants, genotypes, expression, covariates, settings, scan code version) match this
run's inputs; a stale table is a clear error naming the fold and what differs.
"""

import time
from collections.abc import Iterator
from typing import NamedTuple

import dagster as dg
import pandas as pd

from apoe_assets.assets.eqtl import gene_expression, gene_row
from apoe_assets.assets.metadata import preview, scalars
from apoe_assets.assets.plots import prediction_plot, threshold_plot
from apoe_assets.genomics.genotypes import GenotypeMatrix
from apoe_assets.ml.fold_scans import StoredFoldScans, stored_fold_scans
from apoe_assets.ml.folds import FOLD, fold_ids
from apoe_assets.ml.gene_models import (
    MODELS,
    MODELS_VERSION,
    GeneModels,
    ModelSettings,
    gene_models,
)
from apoe_assets.parallel import ordered_map, processes_for
from apoe_assets.partitions import StudyPartitions
from apoe_assets.resources.storage import ByPartition, by_partition
from apoe_assets.resources.study import StudyResource
from apoe_assets.stage_settings import genotype_model_settings
from apoe_assets.stats.eqtl import CisWindow, cis_window
from apoe_assets.study import Study

GROUP = "statistics"


def _metadata(result: GeneModels, partition: str, seconds: float) -> dict:
    metrics = result.metrics()
    summary = result.fold_summary()
    best = str(metrics["r2"].idxmax()) if metrics["r2"].notna().any() else "none"
    return {
        "samples": len(result.predictions),
        "variants_tested": len(result.eqtl.table),
        "metrics": dg.MetadataValue.md(metrics.round(4).to_markdown()),
        **scalars({f"r2_{m}": metrics.loc[m, "r2"] for m in MODELS}),
        **scalars({f"pearson_r_{m}": metrics.loc[m, "pearson_r"] for m in MODELS}),
        "best_model": best,
        "folds": dg.MetadataValue.md(summary.to_markdown(floatfmt=".4g")),
        "pt_thresholds": ", ".join(f"{f}: {t:g}" for f, t in summary["pt_threshold"].items()),
        "pt_index_snps": ", ".join(f"{f}: {n}" for f, n in summary["pt_index_snps"].items()),
        "snps_per_model": ", ".join(
            f"{m}: {'/'.join(str(n) for n in summary[c])}"
            for m, c in zip(MODELS, ("baseline_snps", "pt_snps", "elastic_net_snps"),
                            strict=True)),
        "elastic_net_lambdas": ", ".join(f"{f}: {v:.4g}"
                                         for f, v in summary["elastic_net_lambda"].items()),
        "notes": "; ".join(result.notes) or "none",
        "prediction_plot": prediction_plot(
            result.predictions["observed"].to_numpy(),
            {m: result.predictions[m].to_numpy() for m in MODELS}, metrics["r2"].to_dict(),
            f"{partition}: observed vs out-of-fold prediction"),
        "threshold_plot": threshold_plot(
            {f.fold: f.pt.inner_r2 for f in result.folds},
            {f.fold: f.pt.threshold for f in result.folds}, f"{partition}: P+T inner CV"),
        "seconds": round(seconds, 2),
        "preview": preview(result.predictions),
    }


class GenotypeFit(NamedTuple):
    """One gene's genotype models, the seconds they took and the cis variants they saw."""

    result: GeneModels
    seconds: float
    variants: int


def fit_gene(window: CisWindow, target: pd.Series, covariates: pd.DataFrame, gene: pd.Series,
             folds: pd.Series, settings: ModelSettings, stored: StoredFoldScans
             ) -> GenotypeFit:
    """One gene's genotype models on its cis window and the fold scans ``cis_eqtl`` stored
    (runs in a worker process: no Dagster context)."""
    started = time.perf_counter()
    result = gene_models(window, target, covariates, gene, folds, settings, stored=stored)
    return GenotypeFit(result, time.perf_counter() - started, len(window.variants))


def gene_jobs(config: Study, genes: list[str], gene_annotation: pd.DataFrame,
              chromosomes: dict[str, GenotypeMatrix], expression: pd.DataFrame,
              covariates: pd.DataFrame, folds: pd.Series, tables: dict[str, pd.DataFrame]
              ) -> Iterator[tuple]:
    """The arguments of :func:`fit_gene` for each gene, cut from the loaded inputs one gene
    at a time."""
    settings, samples = genotype_model_settings(config), folds.index.tolist()
    for key in genes:
        gene = gene_row(gene_annotation, key)
        window = cis_window(chromosomes[gene["chrom"]], gene, samples, flank=config.cis_window)
        stored = stored_fold_scans(tables[key], fold_ids(folds), f"cis_eqtl {key}")
        yield window, gene_expression(expression, gene), covariates, gene, folds, settings, stored


def weights_metadata(weights: pd.DataFrame) -> dict:
    """What ``prs_weights`` shows: non-zero weights per model and fold, a preview."""
    counts = (weights[weights["weight"] != 0].groupby(["model", FOLD]).size()
              .unstack(FOLD, fill_value=0).reindex(list(MODELS), fill_value=0))
    return {"rows": len(weights), "nonzero_weights": dg.MetadataValue.md(counts.to_markdown()),
            "preview": preview(weights)}


def prs_assets(parts: StudyPartitions) -> list[dg.AssetsDefinition]:
    """``prs_scores``, ``prs_weights`` and ``prs_fold_scores``, partitioned by gene, up to
    ``genes_per_run`` genes a run."""

    @dg.multi_asset(
        outs={
            "prs_scores": dg.AssetOut(group_name=GROUP, kinds={"pandas"},
                                      description="Out-of-fold predictions per sample."),
            "prs_weights": dg.AssetOut(group_name=GROUP, kinds={"pandas"},
                                       description="Per-fold weights behind the predictions."),
            "prs_fold_scores": dg.AssetOut(
                group_name=GROUP, kinds={"pandas"},
                description="Per outer fold, the genotype scores a stacked model may use: "
                            "inner out-of-fold scores of its training samples, outer scores "
                            "of its test samples."),
        },
        partitions_def=parts.genes,
        ins={"genotypes": dg.AssetIn(partition_mapping=parts.gene_chromosome)},
        code_version=MODELS_VERSION,
        backfill_policy=parts.gene_backfill,
    )
    def prs_models(context: dg.AssetExecutionContext, study: StudyResource,
                   gene_annotation: pd.DataFrame, genotypes: object,
                   expression: pd.DataFrame, covariates: pd.DataFrame, cv_folds: pd.DataFrame,
                   cis_eqtl: object) -> Iterator[dg.Output[ByPartition]]:
        """Baseline PRS (every tested cis variant at its training slope), P+T PRS (clumped,
        threshold by inner CV) and elastic net (α from the study, λ by inner CV), each
        calibrated or fitted on training folds only and scored on the held-out fold. A run
        may cover several genes: the chromosome, expression and covariates are loaded once."""
        config = study.load()
        genes = context.partition_keys
        chromosomes = by_partition(genotypes, context.asset_partition_keys_for_input(
            "genotypes"))
        tables = by_partition(cis_eqtl, genes)
        scores, weights, fold_scores = ByPartition(), ByPartition(), ByPartition()
        jobs = gene_jobs(config, genes, gene_annotation, chromosomes, expression, covariates,
                         cv_folds[FOLD], tables)
        fits = ordered_map(fit_gene, jobs, processes_for(len(genes)))
        for number, (key, (result, seconds, variants)) in enumerate(
                zip(genes, fits, strict=True), start=1):
            for note in result.notes:
                context.log.info(f"{key}: {note}")
            metrics = result.metrics()
            context.log.info(f"{key} ({number}/{len(genes)}): {len(cv_folds)} samples × "
                             f"{variants} variants in {seconds:.1f} s; out-of-fold R² "
                             + ", ".join(f"{m} {metrics.loc[m, 'r2']:.3f}" for m in MODELS))
            scores[key], weights[key] = result.predictions, result.weight_table()
            fold_scores[key] = result.stacking_scores()
            context.add_asset_metadata(_metadata(result, key, seconds),
                                       asset_key="prs_scores", partition_key=key)
            context.add_asset_metadata(weights_metadata(weights[key]),
                                       asset_key="prs_weights", partition_key=key)
        yield dg.Output(scores, output_name="prs_scores")
        yield dg.Output(weights, output_name="prs_weights")
        yield dg.Output(fold_scores, output_name="prs_fold_scores")

    return [prs_models]
