"""cis-eQTL per gene: one table for reporting (all samples) and one per fold (training samples
only), the latter being the only weights a polygenic score may use."""

import time
from functools import partial

import dagster as dg
import numpy as np
import pandas as pd

from apoe_assets.assets.metadata import preview, scalars
from apoe_assets.assets.plots import locus_plot, qq_plot
from apoe_assets.genomics.genotypes import GenotypeMatrix
from apoe_assets.genomics.truth import causal_positions
from apoe_assets.ml.folds import FOLD, fold_ids, split
from apoe_assets.partitions import StudyPartitions
from apoe_assets.resources.study import StudyResource
from apoe_assets.stats.eqtl import EqtlResult, cis_window, map_cis_nominal, permutation_test

GROUP = "statistics"


def gene_row(gene_annotation: pd.DataFrame, partition_key: str) -> pd.Series:
    """The annotation row of one gene partition."""
    return gene_annotation.set_index("partition_key").loc[partition_key]


def gene_expression(expression: pd.DataFrame, gene: pd.Series) -> pd.Series:
    """The gene's expression per sample; a clear failure when the study has none for it."""
    if gene["gene_id"] not in expression.index:
        raise dg.Failure(f"{gene.name} ({gene['gene_id']}) has no row in the expression file, "
                         "so it has no eQTL or expression model; remove it from the study's "
                         "genes or add its expression")
    return expression.loc[gene["gene_id"]]


def stack_fold_tables(full: EqtlResult, per_fold: dict[int, EqtlResult]) -> pd.DataFrame:
    """One long table: ``fold`` is <NA> for the all-sample scan, else the outer fold whose
    training samples were scanned."""
    parts = [full.table.assign(**{FOLD: pd.NA})]
    parts += [result.table.assign(**{FOLD: fold}) for fold, result in per_fold.items()]
    table = pd.concat(parts, ignore_index=True)
    return table.astype({FOLD: "Int64"})


def eqtl_assets(parts: StudyPartitions) -> list[dg.AssetsDefinition]:
    """The ``cis_eqtl`` asset, partitioned by gene."""

    @dg.asset(
        group_name=GROUP,
        partitions_def=parts.genes,
        ins={"genotypes": dg.AssetIn(partition_mapping=parts.gene_chromosome)},
        kinds={"pandas"},
    )
    def cis_eqtl(context: dg.AssetExecutionContext, study: StudyResource,
                 gene_annotation: pd.DataFrame, genotypes: GenotypeMatrix,
                 expression: pd.DataFrame, covariates: pd.DataFrame, cv_folds: pd.DataFrame
                 ) -> pd.DataFrame:
        """tensorQTL ``cis_nominal`` statistics of every cis variant (MAF filter of the study),
        once on all fold samples (``fold`` <NA>, for reports) and once per outer fold on its
        training samples (for PRS weights), with the gene-level permutation p-value (beta
        approximation) in the metadata."""
        config = study.load()
        gene = gene_row(gene_annotation, context.partition_key)
        folds = cv_folds[FOLD]
        samples = folds.index.tolist()
        started = time.perf_counter()
        window = cis_window(genotypes, gene, samples, flank=config.cis_window)
        scan = partial(map_cis_nominal, window, gene_expression(expression, gene), covariates,
                       gene_id=str(gene["gene_id"]), tss=int(gene["tss"]),
                       maf_threshold=config.eqtl.maf_threshold)
        full = scan(samples=samples)
        per_fold = {fold: scan(samples=split(folds, fold)[0]) for fold in fold_ids(folds)}
        permutation = permutation_test(
            window, gene_expression(expression, gene), covariates, gene_id=str(gene["gene_id"]),
            n_permutations=config.eqtl.permutations, seed=config.seed,
            maf_threshold=config.eqtl.maf_threshold, samples=samples)
        table = stack_fold_tables(full, per_fold)
        notes = list(dict.fromkeys([*full.notes, *permutation.notes]))
        for note in notes:
            context.log.warning(f"{context.partition_key}: {note}")
        top = full.top()
        pvalues = full.table["pval_nominal"].to_numpy()
        title = f"{context.partition_key} cis-eQTL ({len(full.table):,} variants)"
        context.add_output_metadata({
            "samples": full.n_samples,
            "variants_in_window": len(window.variants),
            "variants_tested": len(full.table),
            **{f"dropped_{k}": v for k, v in full.counts.items()},
            "top_variant": "" if top is None else str(top["variant_id"]),
            **scalars({
                "top_pval_nominal": None if top is None else top["pval_nominal"],
                "top_slope": None if top is None else top["slope"],
                "share_p_below_0.05": float(np.mean(pvalues < 0.05)) if len(pvalues) else None,
                **{k: v for k, v in permutation.as_dict().items()
                   if k in ("n_permutations", "pval_perm", "pval_beta", "true_df")},
            }),
            "variants_tested_per_fold": ", ".join(
                f"{fold}: {len(result.table)}" for fold, result in per_fold.items()),
            "notes": "; ".join(notes) or "none",
            "locus_plot": locus_plot(full.table["pos"].to_numpy(), pvalues, title,
                                     tss=int(gene["tss"]) + 1,
                                     marked=causal_positions(config.truth, str(gene["gene_id"]))),
            "qq_plot": qq_plot(pvalues, f"{context.partition_key} QQ"),
            "seconds": round(time.perf_counter() - started, 2),
            "preview": preview(full.table.sort_values("pval_nominal")),
        })
        return table

    return [cis_eqtl]
