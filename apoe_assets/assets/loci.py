"""Per-gene loci: the first gene-partitioned asset, each gene reading only its chromosome."""

import dagster as dg
import pandas as pd

from apoe_assets.assets.metadata import scalars
from apoe_assets.genomics.loci import LOCUS_VERSION, locus_summary
from apoe_assets.partitions import StudyPartitions
from apoe_assets.resources.storage import ByPartition, by_partition

GROUP = "genes"


def locus_assets(parts: StudyPartitions) -> list[dg.AssetsDefinition]:
    """The ``gene_locus`` asset, partitioned by gene, up to ``genes_per_run`` genes a run."""

    @dg.asset(
        group_name=GROUP,
        partitions_def=parts.genes,
        ins={"genotypes": dg.AssetIn(partition_mapping=parts.gene_chromosome)},
        code_version=LOCUS_VERSION,
        kinds={"pandas"},
        backfill_policy=parts.gene_backfill,
    )
    def gene_locus(context: dg.AssetExecutionContext, gene_annotation: pd.DataFrame,
                   genotypes: object, expression: pd.DataFrame) -> ByPartition:
        """The gene's TSS, model and cis windows, the variants inside them, its expression.
        A run may cover several genes: each chromosome is loaded once."""
        chromosomes = by_partition(genotypes, context.asset_partition_keys_for_input(
            "genotypes"))
        annotation = gene_annotation.set_index("partition_key")
        loci = ByPartition()
        for key in context.partition_keys:
            gene = annotation.loc[key].copy()
            gene["partition_key"] = key
            row = expression.loc[gene["gene_id"]] if gene["gene_id"] in expression.index else None
            locus = locus_summary(gene, chromosomes[gene["chrom"]], row)
            if row is None:
                context.log.warning(f"{key}: no expression for {gene['gene_id']}")
            context.add_asset_metadata(scalars(locus.iloc[0].to_dict()), partition_key=key)
            loci[key] = locus
        return loci

    return [gene_locus]
