"""cis-eQTL per gene: one table for reporting (all samples) and one per fold (training samples
only), the latter being the only weights a polygenic score may use. Each scan's fingerprint
(:mod:`~apoe_assets.stats.provenance`) is stored with the table, so ``prs_scores`` can reuse the
fold scans and recognise stale ones without scanning again."""

import time

import dagster as dg
import numpy as np
import pandas as pd

from apoe_assets.assets.metadata import preview, scalars
from apoe_assets.assets.plots import locus_plot, qq_plot
from apoe_assets.genomics.genotypes import GenotypeMatrix
from apoe_assets.genomics.truth import causal_positions
from apoe_assets.ml.fold_scans import fingerprint_digest, scan_folds
from apoe_assets.ml.folds import FOLD
from apoe_assets.partitions import StudyPartitions
from apoe_assets.resources.study import StudyResource
from apoe_assets.stats.eqtl import NOMINAL_VERSION, cis_window, permutation_test
from apoe_assets.stats.provenance import SCANS_ATTR

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


def eqtl_assets(parts: StudyPartitions) -> list[dg.AssetsDefinition]:
    """The ``cis_eqtl`` asset, partitioned by gene."""

    @dg.asset(
        group_name=GROUP,
        partitions_def=parts.genes,
        ins={"genotypes": dg.AssetIn(partition_mapping=parts.gene_chromosome)},
        kinds={"pandas"},
        code_version=NOMINAL_VERSION,
    )
    def cis_eqtl(context: dg.AssetExecutionContext, study: StudyResource,
                 gene_annotation: pd.DataFrame, genotypes: GenotypeMatrix,
                 expression: pd.DataFrame, covariates: pd.DataFrame, cv_folds: pd.DataFrame
                 ) -> dg.Output[pd.DataFrame]:
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
        phenotype = gene_expression(expression, gene)
        scans = scan_folds(window, phenotype, covariates, folds, gene_id=str(gene["gene_id"]),
                           tss=int(gene["tss"]), maf_threshold=config.eqtl.maf_threshold)
        full, per_fold = scans.full, scans.per_fold
        permutation = permutation_test(
            window, phenotype, covariates, gene_id=str(gene["gene_id"]),
            n_permutations=config.eqtl.permutations, seed=config.seed,
            maf_threshold=config.eqtl.maf_threshold, samples=samples)
        table = scans.table()
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
            "fingerprints": dg.MetadataValue.json(table.attrs[SCANS_ATTR]),
            "notes": "; ".join(notes) or "none",
            "locus_plot": locus_plot(full.table["pos"].to_numpy(), pvalues, title,
                                     tss=int(gene["tss"]) + 1,
                                     marked=causal_positions(config.truth, str(gene["gene_id"]))),
            "qq_plot": qq_plot(pvalues, f"{context.partition_key} QQ"),
            "seconds": round(time.perf_counter() - started, 2),
            "preview": preview(full.table.sort_values("pval_nominal")),
        })
        return dg.Output(table, data_version=dg.DataVersion(fingerprint_digest(table)))

    return [cis_eqtl]
