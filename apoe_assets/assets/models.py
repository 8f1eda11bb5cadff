"""The study's question per gene: the Enformer models beside the genotype models, every
prediction out of fold on the shared folds, compared in one table."""

from collections.abc import Sequence

import dagster as dg
import numpy as np
import pandas as pd

from apoe_assets.assets.eqtl import gene_expression, gene_row
from apoe_assets.assets.metadata import preview, scalars
from apoe_assets.assets.plots import prediction_plot
from apoe_assets.enformer.predictions import GenePredictions
from apoe_assets.ml.enformer_models import (
    ENFORMER_MODELS,
    boosting_features,
    enformer_models,
    metrics_table,
)
from apoe_assets.ml.folds import FOLD
from apoe_assets.ml.gene_models import MODELS
from apoe_assets.partitions import StudyPartitions
from apoe_assets.resources.study import StudyResource

GROUP = "models"
ALL_MODELS: Sequence[str] = (*MODELS, *ENFORMER_MODELS)
VERSION = "1"
"""Code version of ``gene_models``: bump it when its results change."""


def model_assets(parts: StudyPartitions) -> list[dg.AssetsDefinition]:
    """The ``gene_models`` asset, partitioned by gene."""

    @dg.asset(group_name=GROUP, partitions_def=parts.genes, kinds={"pandas", "xgboost"},
              code_version=VERSION)
    def gene_models(context: dg.AssetExecutionContext, study: StudyResource,
                    gene_annotation: pd.DataFrame, expression: pd.DataFrame,
                    covariates: pd.DataFrame, cv_folds: pd.DataFrame, prs_scores: pd.DataFrame,
                    prs_fold_scores: pd.DataFrame, enformer_predictions: GenePredictions
                    ) -> pd.DataFrame:
        """Per sample, the out-of-fold prediction of every model: the genotype models
        (baseline PRS, P+T PRS, elastic net, from ``prs_scores``) and the Enformer models
        (feature alone, XGBoost on tracks and haplotypes, feature + inner out-of-fold genotype
        scores), with MSE, R², Pearson r and p and Spearman ρ per model in the metadata."""
        config = study.load()
        key = context.partition_key
        gene = gene_row(gene_annotation, key)
        folds = cv_folds[FOLD]
        features = boosting_features(enformer_predictions, log1p=config.enformer.log1p)
        result = enformer_models(features, prs_fold_scores, gene_expression(expression, gene),
                                 covariates, folds, str(gene["gene_id"]),
                                 n_inner_folds=config.prs.inner_folds, seed=config.seed)
        table = prs_scores.join(result.predictions[list(ENFORMER_MODELS)])
        scored = table if result.scored else table.assign(**dict.fromkeys(ALL_MODELS, np.nan))
        metrics = metrics_table(scored, ALL_MODELS)
        for note in result.notes:
            context.log.warning(f"{key}: {note}")
        best = str(metrics["r2"].idxmax()) if metrics["r2"].notna().any() else "none"
        context.add_output_metadata({
            "metrics": dg.MetadataValue.md(metrics.round(4).to_markdown()),
            **scalars({f"r2_{m}": metrics.loc[m, "r2"] for m in ALL_MODELS}),
            "best_model": best,
            "notes": "; ".join(result.notes) or "none",
            "boosting_parameters": ", ".join(f"{f.fold}: {f.boosting_params}"
                                             for f in result.folds),
            "prediction_plot": prediction_plot(
                table["observed"].to_numpy(), {m: table[m].to_numpy() for m in ALL_MODELS},
                metrics["r2"].to_dict(), f"{key}: observed vs out-of-fold prediction"),
            "preview": preview(table),
        })
        return table

    return [gene_models]
