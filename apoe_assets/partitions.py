"""Chromosome and gene partitions of a study, and the gene → chromosome mapping."""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg

from apoe_assets.study import Study


@dataclass(frozen=True)
class StudyPartitions:
    """Partitions every asset of one study shares."""

    chromosomes: dg.StaticPartitionsDefinition
    genes: dg.StaticPartitionsDefinition
    gene_chromosome: dg.StaticPartitionMapping
    """Maps a chromosome partition to the gene partitions on it (genes need only their own)."""
    genes_per_run: int = 1
    """Most gene partitions one backfill run of a per-gene genotype model takes."""

    @property
    def gene_backfill(self) -> dg.BackfillPolicy:
        """Backfills of the per-gene genotype models: up to :attr:`genes_per_run` genes a run
        (each run loads the chromosome, expression and covariates once)."""
        return dg.BackfillPolicy.multi_run(max_partitions_per_run=self.genes_per_run)


def study_partitions(study: Study) -> StudyPartitions:
    """Partition definitions from the study's genes (keys: chromosome names, gene symbols)."""
    genes = study.gene_table
    by_chrom = {c: genes.loc[genes["chrom"] == c, "partition_key"].tolist()
                for c in study.chromosomes}
    return StudyPartitions(
        chromosomes=dg.StaticPartitionsDefinition(study.chromosomes),
        genes=dg.StaticPartitionsDefinition(genes["partition_key"].tolist()),
        gene_chromosome=dg.StaticPartitionMapping(by_chrom),
        genes_per_run=study.genes_per_run,
    )
