"""Every model of every gene side by side: the single-gene models of ``gene_models`` and the
multi-gene stacking, scored from their stored out-of-fold predictions, the winner per gene, and
a heat map of R² by gene and model (in the metadata and as a PNG beside the stored table)."""

from collections.abc import Iterable
from typing import Any

import dagster as dg
import pandas as pd

from apoe_assets.assets.metadata import preview, scalars
from apoe_assets.assets.model_tracking import register_champions
from apoe_assets.assets.plots import embedded, png, r2_heatmap
from apoe_assets.ml.comparison import (
    COMPARISON_VERSION,
    long_predictions,
    model_table,
    r2_matrix,
    winners,
)
from apoe_assets.ml.enformer_models import ENFORMER_MODELS
from apoe_assets.ml.gene_models import MODELS
from apoe_assets.partitions import StudyPartitions
from apoe_assets.resources.mlflow_tracking import MlflowTracking
from apoe_assets.resources.storage import ALLOW_MISSING, WithFigures, by_partition

GROUP = "models"
SINGLE_GENE_MODELS = (*MODELS, *ENFORMER_MODELS)
"""The model columns of ``gene_models``."""


def stored_partitions(loaded: Any, keys: Iterable[str]) -> dict[str, Any]:
    """An all-partitions input with :data:`ALLOW_MISSING` as partition key → value, the
    partitions never stored left out (the caller notes the gap)."""
    return {k: v for k, v in by_partition(loaded, keys).items() if v is not None}


def comparison_assets(parts: StudyPartitions) -> list[dg.AssetsDefinition]:
    """The ``model_comparison`` asset (all genes, unpartitioned)."""

    @dg.asset(group_name=GROUP, kinds={"pandas"}, code_version=COMPARISON_VERSION,
              ins={"gene_models": dg.AssetIn(metadata={ALLOW_MISSING: True})})
    def model_comparison(context: dg.AssetExecutionContext, mlflow: MlflowTracking,
                         gene_annotation: pd.DataFrame, gene_models: object,
                         multi_gene_stacking: pd.DataFrame) -> WithFigures:
        """Per gene and model, from the stored out-of-fold predictions (``gene_models`` of
        every gene materialised, ``multi_gene_stacking``; base models of the stack prefixed
        ``stacking_``): pooled R², Pearson r, MSE, R²'s fold mean and SE, ``n``, the rank
        within the gene and whether it is the gene's winner; the winner, runner-up, margin
        and its paired fold SE per gene in the metadata, with a note where the winner is not
        better beyond 1 fold-SE. Each gene's best model whose MLflow run reported exactly
        these predictions is registered as ``<gene>-expression@champion``."""
        mlflow.check_reachable()  # before anything is compared or registered
        genes = gene_annotation["partition_key"].tolist()
        single = stored_partitions(gene_models,
                                   context.asset_partition_keys_for_input("gene_models"))
        notes = [f"{g}: gene_models not materialised; single-gene models left out"
                 for g in genes if g not in single]
        predictions = long_predictions(single, SINGLE_GENE_MODELS, multi_gene_stacking)
        metrics = model_table(predictions)
        best = winners(predictions, metrics)
        notes += [n for n in best["note"] if n]
        for note in notes:
            context.log.warning(note)
        table = metrics.reset_index()
        table["rank"] = table.groupby("gene")["r2"].rank(ascending=False, method="first"
                                                         ).astype("Int64")
        table["winner"] = table["model"].to_numpy() == table["gene"].map(best["winner"])
        champions = register_champions(mlflow, predictions, metrics)
        table["champion"] = table["model"].to_numpy() == table["gene"].map(
            champions["champion"]).to_numpy()
        for gene, row in champions.iterrows():
            if row["champion"] is None:
                notes.append(f"{gene}: no model predicts better than the mean (R² ≤ 0); "
                             "no champion registered")
            if row["passed_over"]:
                notes.append(f"{gene}: no MLflow run reported the compared predictions of "
                             f"{row['passed_over']}; champion is the best model that has one")
        image = png(r2_heatmap(r2_matrix(metrics), "Out-of-fold R² by gene and model "
                                    "(best boxed)"))
        wins = best["winner"].value_counts()
        context.add_output_metadata({
            "genes": int(best.shape[0]),
            "models": int(table["model"].nunique()),
            "winners": dg.MetadataValue.md(best.drop(columns="note").round(4).to_markdown()),
            "champions": dg.MetadataValue.md(champions.drop(columns="run_id").round(4)
                                             .fillna("none").to_markdown()),
            "wins_per_model": ", ".join(f"{m}: {n}" for m, n in wins.items()),
            "unclear_winners": int((~best["clear"]).sum()),
            **scalars({f"r2_winner_{g}": r for g, r in best["r2"].items()}),
            "notes": "; ".join(notes) or "none",
            "r2_plot": embedded(image, "R² by gene and model"),
            "metrics": dg.MetadataValue.md(metrics.round(4).to_markdown()),
            "preview": preview(table),
        })
        return WithFigures(table, {"r2_plot": image})

    return [model_comparison]
