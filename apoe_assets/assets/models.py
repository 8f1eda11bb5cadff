"""The study's question per gene: the Enformer models beside the genotype models, every
prediction out of fold on the shared folds, compared in one table and logged to MLflow."""

import dataclasses
import functools
from collections.abc import Iterator, Sequence
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd

from apoe_assets.assets.eqtl import gene_expression, gene_row
from apoe_assets.assets.metadata import preview, scalars
from apoe_assets.assets.model_tracking import (
    GeneModels,
    GenePlots,
    LoggedGene,
    gene_plots,
    log_models,
    tracking_metadata,
)
from apoe_assets.assets.plots import embedded, png, prediction_figure
from apoe_assets.enformer.predictions import GenePredictions
from apoe_assets.ml.enformer_models import (
    ENFORMER_MODELS,
    FLANK_BINS,
    XGB_GRID,
    EnformerModels,
    boosting_features,
    enformer_models,
    metrics_table,
)
from apoe_assets.ml.exported_models import (
    ExportedModel,
    check_exported,
    enformer_exports,
    export_fold,
    genotype_export,
)
from apoe_assets.ml.folds import FOLD
from apoe_assets.ml.gene_models import MODELS, SCORES
from apoe_assets.ml.tracking import SINGLE_GENE, inputs_digest
from apoe_assets.parallel import ordered_map, processes_for
from apoe_assets.partitions import StudyPartitions
from apoe_assets.resources.mlflow_tracking import MlflowTracking
from apoe_assets.resources.storage import ALLOW_MISSING, ByPartition, by_partition
from apoe_assets.resources.study import StudyResource
from apoe_assets.stage_settings import genotype_model_settings
from apoe_assets.stats.eqtl import cis_window
from apoe_assets.study import Study

GROUP = "models"
ALL_MODELS: Sequence[str] = (*MODELS, *ENFORMER_MODELS)
VERSION = "2"
"""Code version of ``gene_models``: bump it when its results change (2: MLflow runs)."""


def model_params(config: Study, result: EnformerModels) -> dict[str, dict[str, Any]]:
    """What each model's MLflow run records as parameters: the study's settings behind it and
    the hyper-parameters chosen per fold."""
    genotype = dataclasses.asdict(genotype_model_settings(config))
    enformer = {"tracks": config.enformer.tracks, "haplotypes": config.enformer.haplotypes,
                "log1p": config.enformer.log1p}
    return {
        **{m: genotype for m in MODELS},
        "enformer_linear": {**enformer, "feature": "mean of the haplotypes' TSS-bin sums"},
        "enformer_xgboost": {**enformer, "grid": dict(XGB_GRID), "flank_bins": FLANK_BINS,
                             "inner_folds": config.prs.inner_folds, "seed": config.seed,
                             "chosen": {f"fold_{f.fold}": f.boosting_params
                                        for f in result.folds}},
        "combined": {**enformer, "features": ["feature", *SCORES],
                     "training_scores": "inner out-of-fold"},
    }


def exported_models(result: EnformerModels, features: pd.DataFrame | None,
                    fold_scores: pd.DataFrame, weights: pd.DataFrame, genotypes: Any,
                    gene: pd.Series, folds: pd.Series, flank: int, table: pd.DataFrame
                    ) -> dict[str, ExportedModel]:
    """Each model's fit of the exported fold, checked against the stored predictions."""
    fold = export_fold(folds)
    test = folds.index[folds == fold].tolist()
    window = cis_window(genotypes, gene, test, flank=flank)
    exports = [genotype_export(weights, window, model, fold, test) for model in MODELS]
    exports += enformer_exports(result, features, fold_scores, fold)
    for export in filter(None, exports):
        check_exported(export, table)
    return {e.model: e for e in exports if e is not None}


@dataclasses.dataclass(frozen=True)
class GeneFit:
    """One gene's models before logging: the stored table, the scored table and metrics,
    the Enformer models' result, the plots (for MLflow, and all models' panels for the
    metadata) and the exported fits."""

    table: pd.DataFrame
    scored: pd.DataFrame
    metrics: pd.DataFrame
    result: EnformerModels
    plots: GenePlots
    prediction_png: bytes
    exports: dict[str, ExportedModel] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class GeneInputs:
    """What one gene's Enformer models are fitted on: its annotation row, the boosting
    features of its predictions (None when never predicted) and its expression."""

    gene: pd.Series
    features: pd.DataFrame | None
    target: pd.Series


def gene_inputs(config: Study, gene: pd.Series, expression: pd.DataFrame,
                predictions: GenePredictions | None) -> GeneInputs:
    """One gene's :class:`GeneInputs`."""
    features = (None if predictions is None else
                boosting_features(predictions, log1p=config.enformer.log1p))
    return GeneInputs(gene, features, gene_expression(expression, gene))


def fit_gene(key: str, prs_scores: pd.DataFrame, features: pd.DataFrame | None,
             fold_scores: pd.DataFrame, target: pd.Series, covariates: pd.DataFrame,
             folds: pd.Series, gene_id: str, *, n_inner_folds: int, seed: int) -> GeneFit:
    """One gene's Enformer models beside its genotype models (``prs_scores``), scored and
    plotted: a worker process's task, so the plots are drawn beside the other genes' fits
    rather than in the process that logs. Without its exports (see :func:`finish_gene`)."""
    result = enformer_models(features, fold_scores, target, covariates, folds, gene_id,
                             n_inner_folds=n_inner_folds, seed=seed)
    table = prs_scores.join(result.predictions[list(ENFORMER_MODELS)])
    scored = table if result.scored else table.assign(**dict.fromkeys(ALL_MODELS, np.nan))
    metrics = metrics_table(scored, ALL_MODELS)
    panels = png(prediction_figure(
        table["observed"].to_numpy(), {m: table[m].to_numpy() for m in ALL_MODELS},
        metrics["r2"].to_dict(), f"{key}: observed vs out-of-fold prediction"))
    return GeneFit(table, scored, metrics, result, gene_plots(key, scored, metrics), panels)


def finish_gene(context: dg.AssetExecutionContext, config: Study, inputs: GeneInputs,
                fit: GeneFit, genotypes: Any, folds: pd.Series, prs_weights: pd.DataFrame,
                prs_fold_scores: pd.DataFrame) -> GeneFit:
    """``fit`` with its exported models (``genotypes``: its chromosome's matrix), each
    checked against the stored predictions; its notes logged."""
    for note in fit.result.notes:
        context.log.warning(f"{inputs.gene.name}: {note}")
    if not fit.result.scored:
        return fit
    return dataclasses.replace(fit, exports=exported_models(
        fit.result, inputs.features, prs_fold_scores, prs_weights, genotypes, inputs.gene,
        folds, config.cis_window, fit.scored))


def gene_digest(inputs: GeneInputs, covariates: pd.DataFrame, folds: pd.Series,
                prs_scores: pd.DataFrame, prs_fold_scores: pd.DataFrame) -> str:
    """The digest of everything one gene's models are fitted on (its MLflow data version)."""
    features = pd.DataFrame() if inputs.features is None else inputs.features
    return inputs_digest({"prs_scores": prs_scores, "prs_fold_scores": prs_fold_scores,
                          "features": features, "expression": inputs.target,
                          "covariates": covariates, "folds": folds})


def model_assets(parts: StudyPartitions) -> list[dg.AssetsDefinition]:
    """The ``gene_models`` asset, partitioned by gene, up to ``genes_per_run`` genes a run."""

    @dg.asset(group_name=GROUP, partitions_def=parts.genes, kinds={"pandas", "xgboost"},
              code_version=VERSION,
              ins={"genotypes": dg.AssetIn(partition_mapping=parts.gene_chromosome),
                   "enformer_predictions": dg.AssetIn(metadata={ALLOW_MISSING: True})},
              backfill_policy=parts.gene_backfill)
    def gene_models(context: dg.AssetExecutionContext, study: StudyResource,
                    mlflow: MlflowTracking, gene_annotation: pd.DataFrame, genotypes: object,
                    expression: pd.DataFrame, covariates: pd.DataFrame, cv_folds: pd.DataFrame,
                    prs_scores: object, prs_weights: object, prs_fold_scores: object,
                    enformer_predictions: object) -> ByPartition:
        """Per sample, the out-of-fold prediction of every model: the genotype models
        (baseline PRS, P+T PRS, elastic net, from ``prs_scores``) and the Enformer models
        (feature alone, XGBoost on tracks and haplotypes, feature + inner out-of-fold genotype
        scores), with MSE, R², Pearson r and p and Spearman ρ per model in the metadata; a
        run per model in MLflow's ``single-gene`` experiment and the best registered as
        ``<gene>-expression@champion``. A gene without Enformer predictions (never
        materialised) keeps its genotype models; its Enformer models are skipped with a note.
        A run may cover several genes: their MLflow runs share one parent run."""
        config = study.load()
        mlflow.check_reachable()  # fail before fitting, not after
        genes = context.partition_keys
        folds = cv_folds[FOLD]
        chromosomes = by_partition(genotypes, context.asset_partition_keys_for_input(
            "genotypes"))
        scores, weights, fold_scores, predictions = (
            by_partition(value, context.asset_partition_keys_for_input(name))
            for name, value in (("prs_scores", prs_scores), ("prs_weights", prs_weights),
                                ("prs_fold_scores", prs_fold_scores),
                                ("enformer_predictions", enformer_predictions)))
        inputs = {key: gene_inputs(config, gene_row(gene_annotation, key), expression,
                                   predictions.get(key)) for key in genes}
        fit = functools.partial(fit_gene, n_inner_folds=config.prs.inner_folds,
                                seed=config.seed)
        jobs = ((key, scores[key], i.features, fold_scores[key], i.target, covariates, folds,
                 str(i.gene["gene_id"])) for key, i in inputs.items())
        digests = {key: gene_digest(inputs[key], covariates, folds, scores[key],
                                    fold_scores[key]) for key in genes}
        fits: dict[str, GeneFit] = {}

        def finished() -> Iterator[GeneModels]:
            """Each gene fitted in a worker process (one per core), finished here in gene
            order and handed to MLflow while the workers fit the next genes."""
            done = ordered_map(fit, jobs, processes_for(len(genes)))
            for key, fitted in zip(genes, done, strict=True):
                chromosome = chromosomes[inputs[key].gene["chrom"]]
                fits[key] = gene_fit = finish_gene(
                    context, config, inputs[key], fitted, chromosome, folds, weights[key],
                    fold_scores[key])
                yield GeneModels(key, gene_fit.scored, gene_fit.metrics,
                                 model_params(config, gene_fit.result), gene_fit.exports,
                                 gene_fit.plots, gene_fit.result.failed)

        logged = log_models(mlflow, context, SINGLE_GENE, digests, finished(), VERSION)
        tables = ByPartition()
        for key, fit in fits.items():
            context.add_asset_metadata(gene_metadata(key, fit, mlflow, logged[key]),
                                       partition_key=key)
            tables[key] = fit.table
        return tables

    return [gene_models]


def gene_metadata(key: str, fit: GeneFit, mlflow: MlflowTracking, logged: LoggedGene) -> dict:
    """What one gene's ``gene_models`` materialisation shows."""
    metrics, result, table = fit.metrics, fit.result, fit.table
    best = str(metrics["r2"].idxmax()) if metrics["r2"].notna().any() else "none"
    return {
        "metrics": dg.MetadataValue.md(metrics.round(4).to_markdown()),
        **scalars({f"r2_{m}": metrics.loc[m, "r2"] for m in ALL_MODELS}),
        "best_model": best,
        "notes": "; ".join(result.notes) or "none",
        "boosting_parameters": ", ".join(f"{f.fold}: {f.boosting_params}"
                                         for f in result.folds),
        "prediction_plot": embedded(fit.prediction_png,
                                    f"{key}: observed vs out-of-fold prediction"),
        **tracking_metadata(mlflow, {key: logged}),
        "preview": preview(table),
    }
