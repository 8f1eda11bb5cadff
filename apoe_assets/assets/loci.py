"""Per-gene loci: the first gene-partitioned asset, each gene reading only its chromosome."""

import dagster as dg
import pandas as pd

from apoe_assets.assets.metadata import scalars
from apoe_assets.genomics.genotypes import GenotypeMatrix
from apoe_assets.genomics.loci import LOCUS_VERSION, locus_summary
from apoe_assets.partitions import StudyPartitions

GROUP = "genes"


def locus_assets(parts: StudyPartitions) -> list[dg.AssetsDefinition]:
    """The ``gene_locus`` asset, partitioned by gene, fed by its chromosome's genotypes."""

    @dg.asset(
        group_name=GROUP,
        partitions_def=parts.genes,
        ins={"genotypes": dg.AssetIn(partition_mapping=parts.gene_chromosome)},
        code_version=LOCUS_VERSION,
        kinds={"pandas"},
    )
    def gene_locus(context: dg.AssetExecutionContext, gene_annotation: pd.DataFrame,
                   genotypes: GenotypeMatrix, expression: pd.DataFrame) -> pd.DataFrame:
        """The gene's TSS, model and cis windows, the variants inside them, its expression."""
        gene = gene_annotation.set_index("partition_key").loc[context.partition_key]
        gene["partition_key"] = context.partition_key
        row = expression.loc[gene["gene_id"]] if gene["gene_id"] in expression.index else None
        locus = locus_summary(gene, genotypes, row)
        if row is None:
            context.log.warning(f"{context.partition_key}: no expression for {gene['gene_id']}")
        context.add_output_metadata(scalars(locus.iloc[0].to_dict()))
        return locus

    return [gene_locus]
