"""Every model of every gene side by side: the single-gene models of ``gene_models`` and the
multi-gene stacking, scored from their stored out-of-fold predictions, the winner per gene, and
a heat map of R² by gene and model (in the metadata and as a PNG beside the stored table)."""

import base64
import io
from collections.abc import Iterable
from typing import Any

import dagster as dg
import matplotlib

matplotlib.use("Agg")  # no display; must precede pyplot
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from upath import UPath

from apoe_assets.assets.metadata import preview, scalars
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
from apoe_assets.resources import formats
from apoe_assets.resources.storage import ALLOW_MISSING, AssetStorage, by_partition

GROUP = "models"
SINGLE_GENE_MODELS = (*MODELS, *ENFORMER_MODELS)
"""The model columns of ``gene_models``."""
PLOT_NAME = "model_comparison.png"
_DPI = 110


def stored_partitions(loaded: Any, keys: Iterable[str]) -> dict[str, Any]:
    """An all-partitions input with :data:`ALLOW_MISSING` as partition key → value, the
    partitions never stored left out (the caller notes the gap)."""
    return {k: v for k, v in by_partition(loaded, keys).items() if v is not None}


def figure_png(figure: plt.Figure) -> bytes:
    """The figure as PNG bytes (the figure is closed)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=_DPI, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def embedded(png: bytes, title: str) -> dg.MetadataValue:
    """A PNG as Markdown the Dagster UI shows."""
    return dg.MetadataValue.md(f"![{title}](data:image/png;base64,"
                               f"{base64.b64encode(png).decode()})")


def r2_heatmap(r2: pd.DataFrame, title: str) -> plt.Figure:
    """Genes (rows) × models (columns) of pooled out-of-fold R², each cell annotated, the
    best model of each gene boxed; NaN (not scored) grey. Colours are centred on 0."""
    values = r2.to_numpy(dtype=np.float64)
    finite = values[np.isfinite(values)]
    bound = max(float(np.abs(finite).max()) if finite.size else 0.0, 0.05)
    figure, axes = plt.subplots(figsize=(1.6 + 0.85 * r2.shape[1], 1.2 + 0.42 * r2.shape[0]))
    cmap = matplotlib.colormaps["RdBu_r"].with_extremes(bad="#dddddd")
    image = axes.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=-bound, vmax=bound,
                        aspect="auto")
    for i in range(values.shape[0]):
        row = values[i]
        best = int(np.nanargmax(row)) if np.isfinite(row).any() else -1
        for j, value in enumerate(row):
            text = "–" if not np.isfinite(value) else f"{value:.2f}"
            axes.text(j, i, text, ha="center", va="center", fontsize=7,
                      color="white" if np.isfinite(value) and abs(value) > 0.6 * bound
                      else "black", fontweight="bold" if j == best else "normal")
        if best >= 0:
            axes.add_patch(plt.Rectangle((best - 0.5, i - 0.5), 1, 1, fill=False,
                                         edgecolor="black", linewidth=1.2))
    axes.set_xticks(range(r2.shape[1]), [str(c) for c in r2.columns], rotation=45,
                    ha="right", fontsize=8)
    axes.set_yticks(range(r2.shape[0]), [str(g) for g in r2.index], fontsize=8)
    figure.colorbar(image, ax=axes, label="out-of-fold R²", shrink=0.8)
    axes.set_title(title, fontsize=9)
    return figure


def write_beside(io_manager: dg.IOManager, name: str, payload: bytes) -> str | None:
    """Write ``payload`` atomically as ``name`` at the storage root (beside the unpartitioned
    tables); None when the IO manager is not the project's storage."""
    if not isinstance(io_manager, AssetStorage):
        return None
    target = UPath(io_manager.root) / name
    with formats.atomic_target(target) as scratch:
        scratch.write_bytes(payload)
    return str(target)


def comparison_assets(parts: StudyPartitions) -> list[dg.AssetsDefinition]:
    """The ``model_comparison`` asset (all genes, unpartitioned)."""

    @dg.asset(group_name=GROUP, kinds={"pandas"}, code_version=COMPARISON_VERSION,
              ins={"gene_models": dg.AssetIn(metadata={ALLOW_MISSING: True})})
    def model_comparison(context: dg.AssetExecutionContext,
                         io_manager: dg.ResourceParam[dg.IOManager],
                         gene_annotation: pd.DataFrame, gene_models: object,
                         multi_gene_stacking: pd.DataFrame) -> pd.DataFrame:
        """Per gene and model, from the stored out-of-fold predictions (``gene_models`` of
        every gene materialised, ``multi_gene_stacking``; base models of the stack prefixed
        ``stacking_``): pooled R², Pearson r, MSE, R²'s fold mean and SE, ``n``, the rank
        within the gene and whether it is the gene's winner; the winner, runner-up, margin
        and its paired fold SE per gene in the metadata, with a note where the winner is not
        better beyond 1 fold-SE."""
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
        png = figure_png(r2_heatmap(r2_matrix(metrics), "Out-of-fold R² by gene and model "
                                    "(best boxed)"))
        path = write_beside(io_manager, PLOT_NAME, png)
        wins = best["winner"].value_counts()
        context.add_output_metadata({
            "genes": int(best.shape[0]),
            "models": int(table["model"].nunique()),
            "winners": dg.MetadataValue.md(best.drop(columns="note").round(4).to_markdown()),
            "wins_per_model": ", ".join(f"{m}: {n}" for m, n in wins.items()),
            "unclear_winners": int((~best["clear"]).sum()),
            **scalars({f"r2_winner_{g}": r for g, r in best["r2"].items()}),
            "notes": "; ".join(notes) or "none",
            "r2_plot": embedded(png, "R² by gene and model"),
            **({"plot_file": dg.MetadataValue.path(path)} if path else {}),
            "metrics": dg.MetadataValue.md(metrics.round(4).to_markdown()),
            "preview": preview(table),
        })
        return table

    return [model_comparison]
