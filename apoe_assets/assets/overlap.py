"""Model SNPs against eQTL SNPs: ``eqtl_overlap`` per gene (with its per-variant table
``eqtl_overlap_variants``) and ``snp_effects_summary`` over all genes. The statistics are in
:mod:`apoe_assets.stats.overlap`; the ranking there takes no eQTL input, and ``snp_effects``
takes no ``cis_eqtl`` input in the graph."""

import zlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import dagster as dg
import numpy as np
import pandas as pd

from apoe_assets.assets.comparison import stored_partitions
from apoe_assets.assets.eqtl import gene_row
from apoe_assets.assets.metadata import preview, scalars
from apoe_assets.assets.plots import embedded, png, pyplot
from apoe_assets.parallel import LIGHT_JOBS_FOR_WORKERS, ordered_map, processes_for
from apoe_assets.partitions import StudyPartitions
from apoe_assets.resources.storage import ALLOW_MISSING, ByPartition, WithFigures, by_partition
from apoe_assets.resources.study import StudyResource
from apoe_assets.stats import overlap as core
from apoe_assets.study import Study

if TYPE_CHECKING:
    from matplotlib.figure import Figure

GROUP = "statistics"
ALL_GENES = "all genes"
"""``gene`` of the summary's rows over all genes (the lead-LD fractions)."""


def gene_seed(seed: int, key: str) -> tuple[int, int]:
    """The permutation seed of one gene: the study's seed and a hash of the partition key, so
    genes get independent shifts and a gene's result does not depend on which others ran."""
    return seed, zlib.crc32(key.encode())


def effect_table(snp_effects: Any) -> pd.DataFrame:
    """The SNP-effect table of a stored ``snp_effects`` partition (the table itself, or a
    :class:`~apoe_assets.enformer.variant_effects.VariantEffects` holding it)."""
    return snp_effects if isinstance(snp_effects, pd.DataFrame) else snp_effects.table


def scored_window(snp_effects: Any, genotypes: Any) -> Any:
    """The rows of ``genotypes`` (a chromosome's matrix) spanning the scored variants."""
    positions = effect_table(snp_effects)["pos"].to_numpy(np.int64)
    return (genotypes.window(int(positions.min()) - 1, int(positions.max())) if len(positions)
            else genotypes.window(0, 0))


def gene_overlap(config: Study, key: str, snp_effects: Any, eqtl: pd.DataFrame,
                 genotypes: Any) -> core.OverlapResult:
    """One gene's overlap from its stored inputs (``genotypes``: its chromosome's matrix, or
    any part of it holding :func:`scored_window`)."""
    settings = config.overlap
    effects = effect_table(snp_effects)
    window = scored_window(effects, genotypes)
    return core.eqtl_overlap(
        effects, eqtl, window.variants["variant_id"].tolist(), window.dosages(),
        top_k=settings.top_k, ld_r2=settings.ld_r2, permutations=settings.permutations,
        seed=gene_seed(config.seed, key), eqtl_p=settings.eqtl_p)


def scatter_figure(variants: pd.DataFrame, title: str) -> "Figure":
    """One panel per model score: the score (|``expr_effect``|) against −log10 eQTL p; the
    model's top k filled red, significant eQTL SNPs ringed."""
    plt = pyplot()
    figure, axes = plt.subplots(1, len(core.SCORES), figsize=(3.3 * len(core.SCORES), 3.2),
                                sharey=True, squeeze=False)
    for panel, (score, signed) in zip(axes[0], core.SCORES.items(), strict=True):
        x = variants[score].to_numpy(np.float64)
        x = np.abs(x) if signed else x
        y = variants["neg_log10_p"].to_numpy(np.float64)
        top = variants[f"model_top_k_{score}"].to_numpy(bool)
        significant = variants["eqtl_significant"].to_numpy(bool)
        panel.scatter(x[~top], y[~top], s=6, color="#4a6fa5", linewidths=0)
        panel.scatter(x[top], y[top], s=10, color="#d1495b", linewidths=0, label="model top k")
        panel.scatter(x[significant], y[significant], s=40, facecolors="none",
                      edgecolors="black", linewidths=0.6, label="eQTL significant")
        panel.set(xlabel=f"|{score}|" if signed else score, title=score)
    axes[0][0].set_ylabel("−log10 eQTL p")
    axes[0][0].legend(frameon=False, fontsize=7)
    figure.suptitle(title, y=1.04)
    return figure


def overlap_figure(table: pd.DataFrame, title: str) -> "Figure":
    """Observed against expected overlap per score and comparison (the overlap counts), each
    bar labelled with its p-value."""
    plt = pyplot()
    counts = table[table["test"] != "spearman"]
    figure, axes = plt.subplots(figsize=(1.2 + 0.45 * len(counts), 3.4))
    x = np.arange(len(counts))
    axes.bar(x - 0.2, counts["statistic"], width=0.4, color="#d1495b", label="observed")
    axes.bar(x + 0.2, counts["expected"].fillna(0.0), width=0.4, color="#bbbbbb",
             label="expected (null)")
    for i, (value, p) in enumerate(zip(counts["statistic"], counts["p"], strict=True)):
        axes.text(i, value, f"p={p:.2g}", ha="center", va="bottom", fontsize=6, rotation=90)
    axes.set_xticks(x, [f"{s} · {c}" for s, c in zip(counts["score"], counts["comparison"],
                                                      strict=True)],
                    rotation=60, ha="right", fontsize=7)
    axes.set(ylabel="SNPs", title=title)
    axes.legend(frameon=False, fontsize=7)
    return figure


def overlap_plots(result: core.OverlapResult, key: str) -> dict[str, bytes]:
    """The scatter and overlap plots of one gene as PNG bytes."""
    return {"scatter_plot": png(scatter_figure(result.variants,
                                               f"{key}: model score vs eQTL")),
            "overlap_plot": png(overlap_figure(result.table,
                                               f"{key}: model top k ∩ eQTL SNPs"))}


def overlap_with_plots(config: Study, key: str, snp_effects: Any, eqtl: pd.DataFrame,
                       genotypes: Any, plots: bool) -> tuple[core.OverlapResult, dict[str, bytes]]:
    """:func:`gene_overlap` and, if ``plots``, :func:`overlap_plots` (a worker's job)."""
    result = gene_overlap(config, key, snp_effects, eqtl, genotypes)
    return result, overlap_plots(result, key) if plots else {}


def overlap_metadata(result: core.OverlapResult, images: dict[str, bytes]) -> dict:
    """What ``eqtl_overlap`` shows: the table, the key p-values, both plots and notes (the
    IO manager adds the plots' file paths)."""
    table = result.table
    named = table.set_index(["score", "comparison"])
    return {
        "variants": len(result.variants),
        "eqtl_threshold": result.threshold,
        "eqtl_significant": int(result.variants["eqtl_significant"].sum())
        if len(result.variants) else 0,
        **scalars({f"p_{s}_{c}": named.loc[(s, c), "p"] for s in core.SCORES
                   for c in ("top_k", "significant", "top_k_ld", "significant_ld")}),
        "table": dg.MetadataValue.md(table.round(4).to_markdown(index=False)),
        "notes": "; ".join(result.notes) or "none",
        "scatter_plot": embedded(images["scatter_plot"], "model score vs −log10 eQTL p"),
        "overlap_plot": embedded(images["overlap_plot"], "overlap against its null"),
    }


def summary_table(tables: dict[str, pd.DataFrame]
                  ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The stored summary (every gene's rows, then per score over all genes the lead-LD
    fraction as ``lead_ld_fraction`` rows and the pooled top-k overlap as ``pooled_top_k``
    rows), the lead-LD table and the pooled table."""
    stacked, lead = core.overlap_summary(tables)
    pooled = core.pooled_overlap(stacked)
    fractions = pd.DataFrame({
        "gene": ALL_GENES, "score": lead["score"], "comparison": "lead_ld_fraction",
        "test": "poisson_binomial", "k": lead["genes"], "eqtl_snps": lead["genes"],
        "universe": lead["genes"], "statistic": lead["fraction"],
        "expected": lead["expected_fraction"], "p": lead["p"]})
    sums = pd.DataFrame({
        "gene": ALL_GENES, "score": pooled["score"], "comparison": "pooled_top_k",
        "test": "hypergeometric_sum", "k": pooled["genes"], "eqtl_snps": pooled["genes"],
        "universe": pooled["genes"], "statistic": pooled["overlap"],
        "expected": pooled["expected"], "p": pooled["p"]})
    parts = [t for t in (stacked, fractions, sums) if len(t)]
    return (pd.concat(parts, ignore_index=True) if parts else stacked), lead, pooled


def overlap_assets(parts: StudyPartitions) -> list[dg.AssetsDefinition]:
    """``eqtl_overlap`` and ``eqtl_overlap_variants`` (per gene, up to ``genes_per_run`` genes
    a run) and ``snp_effects_summary`` (all genes)."""

    @dg.multi_asset(
        outs={
            "eqtl_overlap": dg.AssetOut(
                group_name=GROUP, kinds={"pandas"}, is_required=False,
                description="Per score × comparison: overlap of the model's top SNPs with the "
                            "eQTL SNPs, its null expectation and p-value."),
            "eqtl_overlap_variants": dg.AssetOut(
                group_name=GROUP, kinds={"pandas"}, is_required=False,
                description="Per variant: model scores and ranks, eQTL p, set memberships and "
                            "r² with each eQTL set (the plots' data)."),
        },
        partitions_def=parts.genes,
        ins={"genotypes": dg.AssetIn(partition_mapping=parts.gene_chromosome)},
        code_version=core.OVERLAP_VERSION,
        backfill_policy=parts.gene_backfill,
        can_subset=True,  # either table alone, e.g. when a user selects the summary upstream
    )
    def eqtl_overlap(context: dg.AssetExecutionContext, study: StudyResource,
                     gene_annotation: pd.DataFrame, snp_effects: object,
                     cis_eqtl: object, genotypes: object) -> Iterator[dg.Output]:
        """SNPs ranked by model effect alone (|``expr_effect``|, ``full_matrix_l1``,
        ``tracks_l1``) against the all-sample ``cis_eqtl`` scan: overlap of the top k with the
        top k by p and with the significant eQTL SNPs (hypergeometric p), the same counted
        through LD (r² from the study's genotypes, null: circular shifts of the model ranking
        along the window), the top model SNP against the lead eQTL SNP, Spearman ρ, and the
        full matrix against the selected tracks. Plots in the metadata and beside the table.
        A run may cover several genes: each chromosome is loaded once, and the genes'
        overlaps and plots are computed in one worker process per core (from four genes on)."""
        config = study.load()
        chromosomes = by_partition(genotypes, context.asset_partition_keys_for_input(
            "genotypes"))
        effects = by_partition(snp_effects, context.asset_partition_keys_for_input(
            "snp_effects"))
        scans = by_partition(cis_eqtl, context.asset_partition_keys_for_input("cis_eqtl"))
        selected = context.op_execution_context.selected_output_names
        tables, variants = ByPartition(), ByPartition()
        genes = context.partition_keys
        plots = "eqtl_overlap" in selected  # only the table's output shows them
        jobs = ((config, key, effects[key], scans[key], scored_window(
                    effects[key], chromosomes[gene_row(gene_annotation, key)["chrom"]]), plots)
                for key in genes)
        done = ordered_map(overlap_with_plots, jobs,
                           processes_for(len(genes), LIGHT_JOBS_FOR_WORKERS))
        for key, (result, images) in zip(genes, done, strict=True):
            for note in result.notes:
                context.log.warning(f"{key}: {note}")
            context.log.info(f"{key}: {len(result.variants)} variants in both tables, eQTL "
                             f"threshold {result.threshold:.3g}")
            if plots:
                context.add_asset_metadata(overlap_metadata(result, images),
                                           asset_key="eqtl_overlap", partition_key=key)
                tables[key] = WithFigures(result.table, images)
            if "eqtl_overlap_variants" in selected:
                context.add_asset_metadata({"rows": len(result.variants),
                                            "preview": preview(result.variants)},
                                           asset_key="eqtl_overlap_variants", partition_key=key)
                variants[key] = result.variants
        if "eqtl_overlap" in selected:
            yield dg.Output(tables, output_name="eqtl_overlap")
        if "eqtl_overlap_variants" in selected:
            yield dg.Output(variants, output_name="eqtl_overlap_variants")

    @dg.asset(group_name=GROUP, kinds={"pandas"}, code_version=core.OVERLAP_VERSION,
              ins={"eqtl_overlap": dg.AssetIn(metadata={ALLOW_MISSING: True})})
    def snp_effects_summary(context: dg.AssetExecutionContext,
                            gene_annotation: pd.DataFrame, eqtl_overlap: object
                            ) -> WithFigures:
        """Every gene's overlaps and p-values (genes whose ``eqtl_overlap`` was never
        materialised are left out with a note), and per score the fraction of genes whose
        top model SNP is in LD with the lead eQTL SNP against its expectation under the
        genes' circular-shift nulls, with a Poisson-binomial p; and per score the top-k
        overlaps summed over genes against their summed hypergeometric null."""
        genes = gene_annotation["partition_key"].tolist()
        tables = stored_partitions(eqtl_overlap,
                                   context.asset_partition_keys_for_input("eqtl_overlap"))
        notes = [f"{g}: eqtl_overlap not materialised; left out" for g in genes
                 if g not in tables]
        for note in notes:
            context.log.warning(note)
        table, lead, pooled = summary_table(tables)
        wide = (table[table["gene"] != ALL_GENES]
                .pivot_table(index="gene", columns=["score", "comparison"], values="p")
                if len(table) else pd.DataFrame())
        image = png(summary_figure(table)) if len(table) else None
        context.add_output_metadata({
            "genes": len(tables),
            "lead_ld": dg.MetadataValue.md(lead.round(4).to_markdown(index=False)),
            **scalars({f"lead_ld_fraction_{r.score}": r.fraction for r in lead.itertuples()}),
            **scalars({f"lead_ld_p_{r.score}": r.p for r in lead.itertuples()}),
            "pooled_top_k": dg.MetadataValue.md(pooled.round(4).to_markdown(index=False)),
            **scalars({f"pooled_top_k_p_{r.score}": r.p for r in pooled.itertuples()}),
            "p_values": dg.MetadataValue.md(wide.round(4).to_markdown()) if len(wide)
            else "none",
            "notes": "; ".join(notes) or "none",
            **({"p_plot": embedded(image, "overlap p-values by gene")} if image else {}),
            "preview": preview(table),
        })
        return WithFigures(table, {"p_plot": image} if image else {})

    return [eqtl_overlap, snp_effects_summary]


def summary_figure(table: pd.DataFrame) -> "Figure":
    """−log10 p of each gene's overlap tests (rows: genes, columns: score · comparison)."""
    plt = pyplot()
    genes = table[table["gene"] != ALL_GENES]
    wide = genes.pivot_table(index="gene", columns=["score", "comparison"], values="p")
    values = -np.log10(np.clip(wide.to_numpy(np.float64), 1e-300, 1.0))
    figure, axes = plt.subplots(figsize=(1.6 + 0.4 * wide.shape[1], 1.2 + 0.35 * wide.shape[0]))
    image = axes.imshow(np.ma.masked_invalid(values), cmap="viridis", aspect="auto")
    axes.set_xticks(range(wide.shape[1]), [f"{s} · {c}" for s, c in wide.columns],
                    rotation=60, ha="right", fontsize=7)
    axes.set_yticks(range(wide.shape[0]), [str(g) for g in wide.index], fontsize=7)
    figure.colorbar(image, ax=axes, label="−log10 p", shrink=0.8)
    axes.set_title("Model SNPs ∩ eQTL SNPs: p by gene", fontsize=9)
    return figure
