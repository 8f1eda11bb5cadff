"""Multi-gene stacking: each gene's expression predicted from every study gene's Enformer
feature (and, with ``stacking.genotype_scores``, every gene's genotype scores), five tuned base
models and a meta-learner per outer fold, every prediction out of fold and checked for leakage
gene by gene (:mod:`apoe_assets.ml.stacking`)."""

import dataclasses
import functools
import time
from collections.abc import Iterable, Iterator

import dagster as dg
import numpy as np
import pandas as pd

from apoe_assets.assets.comparison import stored_partitions
from apoe_assets.assets.metadata import preview, scalars
from apoe_assets.assets.model_tracking import (
    GeneModels,
    GenePlots,
    LoggedGene,
    gene_plots,
    log_models,
    tracking_metadata,
)
from apoe_assets.assets.plots import embedded, png, r2_heatmap
from apoe_assets.ml.comparison import stacking_model_name
from apoe_assets.ml.exported_models import check_exported, export_fold, stacking_exports
from apoe_assets.ml.folds import FOLD
from apoe_assets.ml.stacking import (
    FIXED,
    GRIDS,
    META_PARAMS,
    STACK,
    STACKING_VERSION,
    LeakageError,
    StackResult,
    check_no_leakage,
    fold_inputs,
    stack_gene,
)
from apoe_assets.ml.stacking_inputs import StackingInputs, stacking_inputs, stacking_table
from apoe_assets.ml.tracking import MULTI_GENE_STACKING, inputs_digest
from apoe_assets.parallel import available_cores, ordered_map
from apoe_assets.partitions import StudyPartitions
from apoe_assets.resources.mlflow_tracking import MlflowTracking
from apoe_assets.resources.storage import ALLOW_MISSING
from apoe_assets.resources.study import StudyResource
from apoe_assets.study import Study

GROUP = "models"
METRICS_SHOWN = ["r2", "pearson_r", "mse", "fold_r2_mean", "fold_r2_se"]


def stack_genes(context: dg.AssetExecutionContext, config: Study, inputs: StackingInputs,
                covariates: pd.DataFrame, folds: pd.Series, processes: int | None = None
                ) -> tuple[dict[str, StackResult], dict[str, float]]:
    """:func:`stacked_genes`, collected: the results (gene → :class:`StackResult`:
    predictions, fitted models per fold, metrics, provenance; in the order of
    ``inputs.targets``) and the seconds per gene."""
    results, seconds = {}, {}
    for stacked in stacked_genes(context, config, inputs, covariates, folds, processes):
        results[stacked.gene], seconds[stacked.gene] = stacked.result, stacked.seconds
    return results, seconds


@dataclasses.dataclass(frozen=True)
class StackedGene:
    """One gene's stacking as a worker returns it: the result, the seconds it took, and
    the predictions, metrics and plots MLflow gets (under the comparison's model names)."""

    gene: str
    result: StackResult
    seconds: float
    predictions: pd.DataFrame
    metrics: pd.DataFrame
    plots: GenePlots


def stacked_genes(context: dg.AssetExecutionContext, config: Study, inputs: StackingInputs,
                  covariates: pd.DataFrame, folds: pd.Series, processes: int | None = None
                  ) -> Iterator[StackedGene]:
    """:func:`stack_gene` for every target gene of ``inputs`` with the study's inner folds and
    seed, each result checked by :func:`check_no_leakage`; progress logged per gene. Genes
    are fitted in ``processes`` worker processes (default: one per available core; 1: in this
    process), each gene seeded on its own, so the results do not depend on how many. Yields
    a :class:`StackedGene` a gene in the order of ``inputs.targets``, each as soon as it and
    the genes before it are done, while the workers fit the next."""
    processes = min(processes or available_cores(), len(inputs.targets)) or 1
    fit = functools.partial(_stack_timed, inputs.features, covariates=covariates, folds=folds,
                            fold_features=inputs.fold_features,
                            n_inner_folds=config.prs.inner_folds, seed=config.seed)
    total = len(inputs.targets)
    width = inputs.features.shape[1] + (0 if inputs.fold_features is None else
                                        inputs.fold_features.shape[1] - 3)
    started_all = time.perf_counter()
    done = ordered_map(fit, ((target, gene) for gene, target in inputs.targets.items()),
                       processes)
    for number, stacked in enumerate(done, start=1):
        gene, result = stacked.gene, stacked.result
        try:
            check_no_leakage(result)
        except LeakageError as error:
            raise dg.Failure(f"{gene}: multi-gene stacking leaks: {error}",
                             allow_retries=False) from error
        for note in result.notes:
            context.log.warning(note if note.startswith(gene) else f"{gene}: {note}")
        r2 = result.metrics()["r2"]
        so_far = time.perf_counter() - started_all
        summary = (f"R² stack {r2[STACK]:.3f}, best base {r2.drop(STACK).idxmax()} "
                   f"{r2.drop(STACK).max():.3f}" if result.scored else "not scored")
        context.log.info(f"{gene} ({number}/{total}): {len(folds)} samples × {width} "
                         f"features in {stacked.seconds:.1f} s; {summary}; about "
                         f"{so_far / number * (total - number):.0f} s to go")
        yield stacked


def _stack_timed(features: pd.DataFrame, target: pd.Series, gene: str, **settings: object
                 ) -> StackedGene:
    """:func:`stack_gene` of one gene, timed and plotted (a worker process's task, so the
    plots are drawn beside the other genes' fits rather than in the process that logs)."""
    started = time.perf_counter()
    result = stack_gene(features, target, gene_id=gene, **settings)
    seconds = time.perf_counter() - started
    predictions = result.predictions.rename(
        columns={m: stacking_model_name(m) for m in result.columns})
    metrics = result.metrics().rename(index=stacking_model_name).drop(columns="n")
    return StackedGene(gene, result, seconds, predictions, metrics,
                       gene_plots(gene, predictions, metrics))


def stacking_metrics(results: dict[str, StackResult]) -> pd.DataFrame:
    """Per (gene, model): the core's pooled and fold metrics of each gene."""
    frames = {gene: result.metrics()[METRICS_SHOWN] for gene, result in results.items()}
    return pd.concat(frames, names=["gene", "model"])


def best_per_gene(metrics: pd.DataFrame) -> pd.DataFrame:
    """Per gene: the model of highest pooled R² ("none" when nothing was scored) and its R²."""
    rows = {}
    for gene, group in metrics.groupby(level="gene", sort=False):
        r2 = group["r2"].droplevel("gene")
        scored = r2.notna().any()
        rows[gene] = {"best": str(r2.idxmax()) if scored else "none",
                      "r2": float(r2.max()) if scored else np.nan,
                      "r2_stack": float(r2[STACK])}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("gene")


def stacking_metadata(results: dict[str, StackResult], inputs: StackingInputs,
                      seconds: dict[str, float], table: pd.DataFrame) -> dict:
    """What ``multi_gene_stacking`` shows: metrics per gene × model, the best per gene, notes,
    an R² heat map, the leakage check, timings."""
    notes = [*inputs.notes, *(n for r in results.values() for n in r.notes)]
    metrics = stacking_metrics(results)
    best = best_per_gene(metrics)
    fits = sum(len(p.fits) for r in results.values() for p in r.provenance.values())
    image = png(r2_heatmap(metrics["r2"].unstack("model").reindex(
        index=list(results), columns=list(dict.fromkeys(metrics.index.get_level_values(1)))),
        "Multi-gene stacking: out-of-fold R² (best boxed)"))
    per_gene = pd.Series(seconds, name="seconds")
    return {
        "genes_stacked": len(results),
        "genes_skipped": len(inputs.skipped),
        "features": int(inputs.features.shape[1]),
        "genotype_scores": inputs.fold_features is not None,
        "samples": int(table["sample"].nunique()),
        "metrics": dg.MetadataValue.md(metrics.round(4).to_markdown()),
        "best_per_gene": dg.MetadataValue.md(best.round(4).to_markdown()),
        **scalars({f"r2_stack_{g}": r for g, r in best["r2_stack"].items()}),
        "notes": "; ".join(notes) or "none",
        "leakage_check": f"passed: {fits} fits of {len(results)} genes",
        "r2_plot": embedded(image, "multi-gene stacking R²"),
        "seconds": round(float(per_gene.sum()), 2),
        "seconds_per_gene": round(float(per_gene.mean()), 2) if len(per_gene) else 0.0,
        "preview": preview(table),
    }


def stacking_params(config: Study, result: StackResult, inputs: StackingInputs
                    ) -> dict[str, dict]:
    """What each stacking model's MLflow run records: its grid and fixed settings, the
    hyper-parameters chosen per fold, and the features it saw."""
    shared = {"features": list(inputs.features.columns),
              "genotype_scores": inputs.fold_features is not None,
              "inner_folds": config.prs.inner_folds, "seed": config.seed}
    params = {stacking_model_name(m): {**shared, "grid": dict(GRIDS[m]),
                                       "fixed": dict(FIXED.get(m, {})),
                                       "chosen": {f"fold_{f.fold}": f.params[m]
                                                  for f in result.folds}}
              for m in result.models}
    params[STACK] = {**shared, "meta_learner": dict(META_PARAMS),
                     "trained_on": "inner out-of-fold base predictions"}
    return params


def log_stacking(tracking: MlflowTracking, context: dg.AssetExecutionContext, config: Study,
                 inputs: StackingInputs, stacked: Iterable[StackedGene],
                 covariates: pd.DataFrame, folds: pd.Series) -> dict[str, LoggedGene]:
    """Every gene's stacking models in MLflow's ``multi-gene-stacking`` experiment, under the
    comparison's model names; each exported fit checked against the stored predictions.
    ``stacked`` (every gene of ``inputs.targets``, in order) is consumed as the runs are
    logged."""
    fold = export_fold(folds)
    fold_features = pd.DataFrame() if inputs.fold_features is None else inputs.fold_features
    versions = {gene: inputs_digest({"features": inputs.features, "target": target,
                                     "covariates": covariates, "folds": folds,
                                     "fold_features": fold_features})
                for gene, target in inputs.targets.items()}

    def ready() -> Iterator[GeneModels]:
        for done in stacked:
            x_test = fold_inputs(inputs.features, inputs.targets[done.gene], folds, fold,
                                 covariates=covariates, fold_features=inputs.fold_features,
                                 n_inner_folds=config.prs.inner_folds, seed=config.seed)[2]
            exports = stacking_exports(done.result, x_test, fold, stacking_model_name)
            for export in exports.values():
                check_exported(export, done.predictions)
            yield GeneModels(done.gene, done.predictions, done.metrics,
                             stacking_params(config, done.result, inputs), exports, done.plots)

    return log_models(tracking, context, MULTI_GENE_STACKING, versions, ready(),
                      STACKING_VERSION)


def stacking_assets(parts: StudyPartitions) -> list[dg.AssetsDefinition]:
    """The ``multi_gene_stacking`` asset (all genes, unpartitioned)."""

    @dg.asset(group_name=GROUP, kinds={"pandas", "xgboost"}, code_version=STACKING_VERSION,
              ins={"enformer_predictions": dg.AssetIn(metadata={ALLOW_MISSING: True}),
                   "prs_fold_scores": dg.AssetIn(metadata={ALLOW_MISSING: True})})
    def multi_gene_stacking(context: dg.AssetExecutionContext, study: StudyResource,
                            mlflow: MlflowTracking,
                            gene_annotation: pd.DataFrame, expression: pd.DataFrame,
                            covariates: pd.DataFrame, cv_folds: pd.DataFrame,
                            enformer_predictions: object, prs_fold_scores: object
                            ) -> pd.DataFrame:
        """Per gene and sample, the out-of-fold predictions of five base models (ridge,
        degree-2 ridge, random forest, elastic net, XGBoost; tuned on inner folds) and of the
        XGBoost meta-learner stacked on their inner out-of-fold predictions, from every study
        gene's Enformer feature (quantile-normalised and z-scored per training set) and, with
        ``stacking.genotype_scores``, every gene's genotype scores (inner out-of-fold for
        training samples); expression adjusted for the covariates per training set. Each
        (gene, model) is a run in MLflow's ``multi-gene-stacking`` experiment. A gene
        whose Enformer predictions were never materialised, or without expression, is skipped
        with a note; a constant one is kept with NaN predictions."""
        config = study.load()
        mlflow.check_reachable()  # fail before fitting, not after
        folds = cv_folds[FOLD]
        enformer = {key: predictions.features for key, predictions in stored_partitions(
            enformer_predictions,
            context.asset_partition_keys_for_input("enformer_predictions")).items()}
        scores = (stored_partitions(prs_fold_scores,
                                    context.asset_partition_keys_for_input("prs_fold_scores"))
                  if config.stacking.genotype_scores else None)
        inputs = stacking_inputs(gene_annotation, expression, folds, enformer, scores)
        for note in inputs.notes:
            context.log.warning(note)
        context.log.info(f"stacking {len(inputs.targets)} genes on {inputs.features.shape[1]} "
                         "Enformer features" + (" and the genotype scores of "
                                                f"{len(scores)} genes" if scores else ""))
        results, seconds = {}, {}

        def stacked() -> Iterator[StackedGene]:
            """Each gene as it is stacked, logged to MLflow while the workers fit the next."""
            for done in stacked_genes(context, config, inputs, covariates, folds):
                results[done.gene], seconds[done.gene] = done.result, done.seconds
                yield done

        logged = log_stacking(mlflow, context, config, inputs, stacked(), covariates, folds)
        table = stacking_table(results)
        context.add_output_metadata({**stacking_metadata(results, inputs, seconds, table),
                                     **tracking_metadata(mlflow, logged)})
        return table

    return [multi_gene_stacking]
