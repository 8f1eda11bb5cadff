"""Ingestion: reference, annotation, genotypes per chromosome, expression and covariates."""

import time

import dagster as dg
import pandas as pd

from apoe_assets.assets.metadata import preview
from apoe_assets.assets.sources import (
    ANNOTATION_FILE,
    COVARIATES_FILE,
    EXPRESSION_FILE,
    GENOTYPE_FILE,
    REFERENCE_FILE,
)
from apoe_assets.genomics.annotation import ANNOTATION_VERSION, genotype_regions, with_windows
from apoe_assets.genomics.errors import InputError
from apoe_assets.genomics.fasta import CONTIGS_VERSION, ReferenceGenome
from apoe_assets.genomics.genotypes import GenotypeMatrix
from apoe_assets.genomics.phenotypes import (
    PHENOTYPES_VERSION,
    align_samples,
    match_gene_ids,
    read_covariates,
    read_expression_bed,
)
from apoe_assets.genomics.vcf import (
    GENOTYPES_VERSION,
    read_genotypes,
    select_samples,
    vcf_samples,
)
from apoe_assets.partitions import StudyPartitions
from apoe_assets.resources.study import StudyResource
from apoe_assets.study import Study

GROUP = "ingestion"


def genotype_samples(study: Study) -> list[str]:
    """Sample IDs of the study's genotype files, which must all list the same samples."""
    files = study.genotype_files()
    samples = vcf_samples(files[0])
    for other in files[1:]:
        if vcf_samples(other) != samples:
            raise InputError(other, f"samples differ from those of {files[0]}")
    return select_samples(samples, study.samples, files[0]) if study.samples else samples


def ingestion_assets(parts: StudyPartitions) -> list[dg.AssetsDefinition]:
    """The ingestion assets of a study with these partitions."""

    @dg.asset(group_name=GROUP, kinds={"fasta"}, deps=[REFERENCE_FILE],
              code_version=CONTIGS_VERSION)
    def reference_genome(context: dg.AssetExecutionContext, study: StudyResource
                         ) -> pd.DataFrame:
        """Contigs of the reference FASTA (canonical name, the file's name, length)."""
        config = study.load()
        reference = ReferenceGenome(config.reference_fasta)
        contigs = pd.DataFrame([vars(c) for c in reference.contigs.values()])
        reference.close()
        for chrom in config.chromosomes:
            if chrom not in set(contigs["name"]):
                raise InputError(config.reference_fasta, f"study chromosome {chrom} is absent")
        context.add_output_metadata({
            "fasta": dg.MetadataValue.path(str(config.reference_fasta)),
            "contigs": len(contigs),
            "bases": int(contigs["length"].sum()),
            "preview": preview(contigs[contigs["name"].isin(config.chromosomes)]),
        })
        return contigs

    @dg.asset(group_name=GROUP, kinds={"pandas"}, deps=[ANNOTATION_FILE],
              code_version=ANNOTATION_VERSION)
    def gene_annotation(context: dg.AssetExecutionContext, study: StudyResource,
                        reference_genome: pd.DataFrame) -> pd.DataFrame:
        """The study's genes: TSS, model window and cis window (0-based half-open)."""
        config = study.load()
        lengths = dict(zip(reference_genome["name"], reference_genome["length"], strict=True))
        genes = with_windows(config.gene_table, config.window_length, config.cis_window,
                             lengths, config.annotation)
        context.add_output_metadata({
            "annotation": dg.MetadataValue.path(str(config.annotation)),
            "genes": len(genes),
            "chromosomes": ", ".join(config.chromosomes),
            "window_length": config.window_length,
            "preview": preview(genes[["partition_key", "gene_id", "chrom", "strand", "tss",
                                      "window_start", "window_end"]], rows=50),
        })
        return genes

    @dg.asset(group_name=GROUP, partitions_def=parts.chromosomes, kinds={"vcf", "numpy"},
              deps=[GENOTYPE_FILE], code_version=GENOTYPES_VERSION)
    def genotypes(context: dg.AssetExecutionContext, study: StudyResource,
                  gene_annotation: pd.DataFrame) -> dg.Output[GenotypeMatrix]:
        """Phased genotypes of one chromosome over the study's gene regions: a variant table
        (multi-allelic sites split) and an int8 haplotype matrix, haploid calls filled as
        ``sequences.haploid`` says (and counted)."""
        config = study.load()
        chrom = context.partition_key
        path = config.genotype_file(chrom)
        regions = genotype_regions(gene_annotation, chrom)
        started = time.perf_counter()
        reference = ReferenceGenome(config.reference_fasta)
        try:
            matrix, report = read_genotypes(path, chrom, reference, regions, config.ref_mismatch,
                                            samples=config.samples or None,
                                            haploid=config.sequences.haploid)
        finally:
            reference.close()
        seconds = time.perf_counter() - started
        context.log.info(f"{chrom}: {report.records} VCF records → {matrix.n_variants} "
                         f"variants × {len(matrix.samples)} samples in {seconds:.1f} s "
                         f"({report.records / max(seconds, 1e-9):,.0f} records/s)")
        context.add_output_metadata({
            "vcf": dg.MetadataValue.path(str(path)),
            "regions": len(regions),
            **matrix.summary(),
            **report.as_metadata(),
            "ref_mismatch_policy": config.ref_mismatch,
            "haploid_rule": config.sequences.haploid,
            "preview": preview(matrix.variants),
        })
        # the content's digest as data version: downstream goes stale when the genotypes
        # change, not when a file is rewritten with the same ones
        return dg.Output(matrix, data_version=dg.DataVersion(matrix.digest()))

    @dg.asset(group_name=GROUP, kinds={"pandas"}, deps=[EXPRESSION_FILE],
              code_version=PHENOTYPES_VERSION)
    def expression(context: dg.AssetExecutionContext, study: StudyResource,
                   gene_annotation: pd.DataFrame) -> pd.DataFrame:
        """Expression (genes × samples), columns in genotype sample order, samples without
        genotypes dropped."""
        config = study.load()
        values = read_expression_bed(config.expression)
        values = match_gene_ids(values, gene_annotation["gene_id"].tolist())
        aligned, dropped = align_samples(values, genotype_samples(config), config.expression,
                                         "expression")
        missing_genes = sorted(set(gene_annotation["gene_id"]) - set(aligned.index))
        if missing_genes:
            context.log.warning(f"study genes without expression: {', '.join(missing_genes)}")
        context.add_output_metadata({
            "bed": dg.MetadataValue.path(str(config.expression)),
            "genes": len(aligned),
            "samples": aligned.shape[1],
            "samples_dropped_without_genotypes": len(dropped),
            "study_genes_with_expression": len(gene_annotation) - len(missing_genes),
            "preview": preview(aligned),
        })
        return aligned

    @dg.asset(group_name=GROUP, kinds={"pandas"}, deps=[COVARIATES_FILE],
              code_version=PHENOTYPES_VERSION)
    def covariates(context: dg.AssetExecutionContext, study: StudyResource,
                   expression: pd.DataFrame) -> pd.DataFrame:
        """Covariates (covariates × samples) for exactly the expression samples, same order."""
        config = study.load()
        values = read_covariates(config.covariates)
        absent = [s for s in expression.columns if s not in set(values.columns)]
        if absent:
            raise InputError(config.covariates, f"{len(absent)} expression samples have no "
                             f"covariates (e.g. {', '.join(absent[:5])})")
        aligned = values[list(expression.columns)]
        context.add_output_metadata({
            "tsv": dg.MetadataValue.path(str(config.covariates)),
            "covariates": len(aligned),
            "samples": aligned.shape[1],
            "names": ", ".join(map(str, aligned.index)),
            "preview": preview(aligned),
        })
        return aligned

    return [reference_genome, gene_annotation, genotypes, expression, covariates]
