"""cis-eQTL per gene: one table for reporting (all samples) and one per fold (training samples
only), the latter being the only weights a polygenic score may use. Each scan's fingerprint
(:mod:`~apoe_assets.stats.provenance`) is stored with the table, so ``prs_scores`` can reuse the
fold scans and recognise stale ones without scanning again."""

import time
from collections.abc import Iterator

import dagster as dg
import numpy as np
import pandas as pd

from apoe_assets.assets.metadata import preview, scalars
from apoe_assets.assets.plots import locus_plot, qq_plot
from apoe_assets.genomics.genotypes import GenotypeMatrix
from apoe_assets.ml.fold_scans import fingerprint_digest, scan_folds
from apoe_assets.ml.folds import FOLD
from apoe_assets.parallel import LIGHT_JOBS_FOR_WORKERS, ordered_map, processes_for
from apoe_assets.partitions import StudyPartitions
from apoe_assets.resources.storage import ByPartition, by_partition
from apoe_assets.resources.study import StudyResource
from apoe_assets.stats.eqtl import NOMINAL_VERSION, CisWindow, cis_window, permutation_test
from apoe_assets.stats.provenance import SCANS_ATTR
from apoe_assets.study import Study

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


def gene_scan(config: Study, gene: pd.Series, window: CisWindow, phenotype: pd.Series,
              covariates: pd.DataFrame, folds: pd.Series) -> tuple[pd.DataFrame, dict, list[str]]:
    """One gene's stored scan table (every fold sample, then each fold's training samples,
    fingerprints in its ``attrs``), its materialisation metadata and its notes, from its cis
    window of the fold samples and its expression (a worker's job)."""
    samples = folds.index.tolist()
    started = time.perf_counter()
    scans = scan_folds(window, phenotype, covariates, folds, gene_id=str(gene["gene_id"]),
                       tss=int(gene["tss"]), maf_threshold=config.eqtl.maf_threshold)
    full = scans.full
    permutation = permutation_test(
        window, phenotype, covariates, gene_id=str(gene["gene_id"]),
        n_permutations=config.eqtl.permutations, seed=config.seed,
        maf_threshold=config.eqtl.maf_threshold, samples=samples)
    table = scans.table()
    top = full.top()
    pvalues = full.table["pval_nominal"].to_numpy()
    title = f"{gene.name} cis-eQTL ({len(full.table):,} variants)"
    notes = list(dict.fromkeys([*full.notes, *permutation.notes]))
    metadata = {
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
            f"{fold}: {len(result.table)}" for fold, result in scans.per_fold.items()),
        "fingerprints": dg.MetadataValue.json(table.attrs[SCANS_ATTR]),
        "fingerprint_digest": fingerprint_digest(table),
        "notes": "; ".join(notes) or "none",
        "locus_plot": locus_plot(full.table["pos"].to_numpy(), pvalues, title,
                                 tss=int(gene["tss"]) + 1),
        "qq_plot": qq_plot(pvalues, f"{gene.name} QQ"),
        "seconds": round(time.perf_counter() - started, 2),
        "preview": preview(full.table.sort_values("pval_nominal")),
    }
    return table, metadata, notes


def scan_jobs(config: Study, genes: list[str], gene_annotation: pd.DataFrame,
              chromosomes: dict[str, GenotypeMatrix], expression: pd.DataFrame,
              covariates: pd.DataFrame, folds: pd.Series) -> Iterator[tuple]:
    """:func:`gene_scan`'s arguments for each gene, one at a time (a gene without expression
    fails here, before any worker starts on it)."""
    samples = folds.index.tolist()
    for key in genes:
        gene = gene_row(gene_annotation, key)
        window = cis_window(chromosomes[gene["chrom"]], gene, samples, flank=config.cis_window)
        yield config, gene, window, gene_expression(expression, gene), covariates, folds


def eqtl_assets(parts: StudyPartitions) -> list[dg.AssetsDefinition]:
    """The ``cis_eqtl`` asset, partitioned by gene, up to ``genes_per_run`` genes a run."""

    @dg.asset(
        group_name=GROUP,
        partitions_def=parts.genes,
        ins={"genotypes": dg.AssetIn(partition_mapping=parts.gene_chromosome)},
        kinds={"pandas"},
        code_version=NOMINAL_VERSION,
        backfill_policy=parts.gene_backfill,
    )
    def cis_eqtl(context: dg.AssetExecutionContext, study: StudyResource,
                 gene_annotation: pd.DataFrame, genotypes: object,
                 expression: pd.DataFrame, covariates: pd.DataFrame, cv_folds: pd.DataFrame
                 ) -> dg.Output[ByPartition]:
        """tensorQTL ``cis_nominal`` statistics of every cis variant (MAF filter of the study),
        once on all fold samples (``fold`` <NA>, for reports) and once per outer fold on its
        training samples (for PRS weights), with the gene-level permutation p-value (beta
        approximation) in the metadata. A run may cover several genes: the chromosome,
        expression and covariates are loaded once, and the genes are scanned in one worker
        process per core (from four genes on)."""
        config = study.load()
        chromosomes = by_partition(genotypes, context.asset_partition_keys_for_input(
            "genotypes"))
        folds, genes = cv_folds[FOLD], context.partition_keys
        tables = ByPartition()
        done = ordered_map(gene_scan, scan_jobs(config, genes, gene_annotation, chromosomes,
                                                expression, covariates, folds),
                           processes_for(len(genes), LIGHT_JOBS_FOR_WORKERS))
        for key, (table, metadata, notes) in zip(genes, done, strict=True):
            for note in notes:
                context.log.warning(f"{key}: {note}")
            context.add_asset_metadata(metadata, partition_key=key)
            tables[key] = table
        return dg.Output(tables, data_version=single_data_version(tables))

    return [cis_eqtl]


def single_data_version(tables: ByPartition) -> dg.DataVersion | None:
    """The data version of a one-gene run: its fingerprint digest. A run of several genes
    shares one output, which Dagster would stamp on each gene with one version, so there
    Dagster's own (code version + input versions) is used and each gene's digest is in its
    metadata."""
    if len(tables) != 1:
        return None
    return dg.DataVersion(fingerprint_digest(next(iter(tables.values()))))
