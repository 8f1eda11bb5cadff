"""Plots for materialisation metadata: PNGs embedded in Markdown, so the Dagster UI shows them."""

from __future__ import annotations

import base64
import io
from types import ModuleType
from typing import TYPE_CHECKING

import dagster as dg
import numpy as np
import pandas as pd

from apoe_assets.enformer.predictions import GenePredictions

if TYPE_CHECKING:
    from matplotlib.figure import Figure

_DPI = 110


def pyplot() -> ModuleType:
    """``matplotlib.pyplot`` on the Agg backend (no display), imported on first use: loading
    it costs every process that loads the code location (the code server, the daemon, each
    run) about a second, and most of them draw nothing."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png(figure: Figure) -> bytes:
    """The figure as PNG bytes (it is closed)."""
    plt = pyplot()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=_DPI, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def embedded(image: bytes, title: str) -> dg.MetadataValue:
    """A PNG as Markdown the Dagster UI shows."""
    encoded = base64.b64encode(image).decode()
    return dg.MetadataValue.md(f"![{title}](data:image/png;base64,{encoded})")


def _embed(figure: Figure, title: str) -> dg.MetadataValue:
    return embedded(png(figure), title)


def locus_plot(positions: np.ndarray, pvalues: np.ndarray, title: str, tss: int | None = None
               ) -> dg.MetadataValue:
    """Position (Mb) against −log10 p, the TSS as a dashed line."""
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(7, 3))
    score = -np.log10(np.clip(pvalues, 1e-300, 1))
    axes.scatter(positions / 1e6, score, s=6, color="#4a6fa5", linewidths=0)
    if tss is not None:
        axes.axvline(tss / 1e6, color="grey", linestyle="--", linewidth=0.8)
    axes.set(xlabel="position (Mb)", ylabel="−log10 p", title=title)
    return _embed(figure, title)


def qq_plot(pvalues: np.ndarray, title: str) -> dg.MetadataValue:
    """Observed against expected −log10 p under the null, with the identity line."""
    plt = pyplot()
    p = np.sort(np.clip(pvalues[np.isfinite(pvalues)], 1e-300, 1))
    expected = -np.log10((np.arange(1, len(p) + 1) - 0.5) / max(len(p), 1))
    figure, axes = plt.subplots(figsize=(3.5, 3.5))
    axes.scatter(expected, -np.log10(p), s=6, color="#4a6fa5", linewidths=0)
    top = max(expected.max(initial=1), 1)
    axes.plot([0, top], [0, top], color="grey", linewidth=0.8)
    axes.set(xlabel="expected −log10 p", ylabel="observed −log10 p", title=title)
    return _embed(figure, title)


def track_plot(predictions: GenePredictions, title: str) -> dg.MetadataValue:
    """Each track's mean prediction over haplotypes along the output bins, ±1 SD shaded, the
    TSS bins marked."""
    plt = pyplot()
    values = predictions.per_haplotype()
    mean, sd = values.mean(axis=0), values.std(axis=0)
    figure, axes = plt.subplots(figsize=(7, 3))
    for k, description in enumerate(predictions.tracks["description"][:8]):
        axes.plot(predictions.bins, mean[:, k], linewidth=0.9, label=description)
        axes.fill_between(predictions.bins, mean[:, k] - sd[:, k], mean[:, k] + sd[:, k],
                          alpha=0.25, linewidth=0)
    axes.axvspan(predictions.tss_bins.min() - 0.5, predictions.tss_bins.max() + 0.5,
                 color="grey", alpha=0.2, label="TSS bins")
    axes.legend(frameon=False, fontsize=7, loc="upper right")
    axes.set(xlabel="output bin", ylabel="prediction", title=title)
    return _embed(figure, title)


def prediction_plot(observed: np.ndarray, predicted: dict[str, np.ndarray],
                    r2: dict[str, float], title: str) -> dg.MetadataValue:
    """One panel per model: observed (covariate-adjusted) expression against its out-of-fold
    prediction, titled with the model's pooled ``r2``, and the identity line."""
    return _embed(prediction_figure(observed, predicted, r2, title), title)


def prediction_figure(observed: np.ndarray, predicted: dict[str, np.ndarray],
                      r2: dict[str, float], title: str) -> Figure:
    """The figure of :func:`prediction_plot`."""
    plt = pyplot()
    figure, axes = plt.subplots(1, len(predicted), figsize=(3.2 * len(predicted), 3.2),
                                sharex=True, sharey=True, squeeze=False)
    observed = np.asarray(observed, dtype=np.float64)
    for panel, (model, values) in zip(axes[0], predicted.items(), strict=True):
        values = np.asarray(values, dtype=np.float64)
        panel.scatter(values, observed, s=6, color="#4a6fa5", linewidths=0)
        low, high = np.nanmin(observed), np.nanmax(observed)
        panel.plot([low, high], [low, high], color="grey", linewidth=0.8)
        panel.set(xlabel="out-of-fold prediction", title=f"{model}  R² {r2[model]:.3f}")
    axes[0][0].set_ylabel("observed")
    figure.suptitle(title)
    return figure


def r2_figure(metrics: pd.DataFrame, title: str) -> Figure:
    """Pooled out-of-fold R² per model (rows of ``metrics``: ``r2`` and, when present,
    ``fold_r2_se`` as error bars), best first."""
    plt = pyplot()
    table = metrics.sort_values("r2", ascending=False, na_position="last")
    figure, axes = plt.subplots(figsize=(1.0 + 0.7 * len(table), 3.2))
    errors = table.get("fold_r2_se")
    axes.bar(range(len(table)), table["r2"].fillna(0.0), yerr=errors, color="#4a6fa5",
             capsize=3)
    axes.axhline(0.0, color="grey", linewidth=0.8)
    axes.set_xticks(range(len(table)), table.index, rotation=40, ha="right")
    axes.set(ylabel="out-of-fold R²", title=title)
    return figure


def threshold_plot(inner_r2: dict[int, dict[float, float]], chosen: dict[int, float | None],
                   title: str) -> dg.MetadataValue:
    """Inner-CV r² of the P+T score per p-value threshold, one line per outer fold, the chosen
    threshold marked."""
    plt = pyplot()
    from matplotlib.ticker import FuncFormatter, NullLocator

    figure, axes = plt.subplots(figsize=(5, 3))
    for fold, curve in inner_r2.items():
        if not curve:
            continue
        thresholds = np.array(sorted(curve))
        line, = axes.plot(thresholds, [curve[t] for t in thresholds], marker="o", markersize=3,
                          linewidth=0.9, label=f"fold {fold}")
        if chosen.get(fold) is not None:
            axes.scatter([chosen[fold]], [curve[chosen[fold]]], s=60, facecolors="none",
                         edgecolors=line.get_color())
    axes.set_xscale("log")
    # decades only, labelled as plain numbers: no mathtext to lay out (half the drawing time)
    axes.xaxis.set_minor_locator(NullLocator())
    axes.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axes.set(xlabel="p-value threshold", ylabel="inner out-of-fold r²", title=title)
    axes.legend(frameon=False, fontsize=7)
    return _embed(figure, title)


def r2_heatmap(r2: pd.DataFrame, title: str) -> Figure:
    """Genes (rows) × models (columns) of pooled out-of-fold R², each cell annotated, the
    best model of each gene boxed; NaN (not scored) grey. Colours are centred on 0."""
    plt = pyplot()
    values = r2.to_numpy(dtype=np.float64)
    finite = values[np.isfinite(values)]
    bound = max(float(np.abs(finite).max()) if finite.size else 0.0, 0.05)
    figure, axes = plt.subplots(figsize=(1.6 + 0.85 * r2.shape[1], 1.2 + 0.42 * r2.shape[0]))
    cmap = plt.get_cmap("RdBu_r").with_extremes(bad="#dddddd")
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


def recovery_figure(table: pd.DataFrame, title: str) -> Figure:
    """Planted share of expression variance against out-of-fold R² recovered, per gene: SNPs
    (``h2_realised``) against the best genotype model, the Enformer component
    (``enformer_realised``) against the best Enformer model; each gene labelled, the identity
    line dashed (a model can at best explain what was planted, up to sampling noise)."""
    plt = pyplot()
    pairs = (("h2_realised", "r2_genotype", "planted SNP share", "best genotype model R²"),
             ("enformer_realised", "r2_enformer", "planted Enformer share",
              "best Enformer model R²"))
    figure, axes = plt.subplots(1, len(pairs), figsize=(4.2 * len(pairs), 3.8), squeeze=False)
    for panel, (planted, recovered, xlabel, ylabel) in zip(axes[0], pairs, strict=True):
        x, y = table[planted].to_numpy(float), table[recovered].to_numpy(float)
        panel.scatter(x, y, s=18, color="#4a6fa5", linewidths=0)
        for gene, gx, gy in zip(table["gene"], x, y, strict=True):
            if np.isfinite(gx) and np.isfinite(gy):
                panel.annotate(str(gene), (gx, gy), fontsize=6, xytext=(2, 2),
                               textcoords="offset points")
        finite = np.concatenate([x[np.isfinite(x)], y[np.isfinite(y)], [0.0, 0.05]])
        low, high = min(finite.min(), 0.0), finite.max()
        panel.plot([low, high], [low, high], color="grey", linestyle="--", linewidth=0.8)
        panel.axhline(0.0, color="grey", linewidth=0.5)
        panel.set(xlabel=xlabel, ylabel=ylabel)
    figure.suptitle(title)
    return figure
