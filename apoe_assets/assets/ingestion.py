"""Ingestion: reference, annotation, genotypes per chromosome, expression and covariates."""

import time
import warnings

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
from apoe_assets.genomics.genotypes import GenotypeMatrix, ref_mismatches
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


MIN_PHASED_HETEROZYGOUS = 0.99
MAX_MISSING_ALLELES = 0.05
EXAMPLES = 5


def ingestion_checks(parts: StudyPartitions) -> list[dg.AssetChecksDefinition]:
    """The checks of the ingestion assets; each re-reads the stored output."""
    with warnings.catch_warnings():  # partitioned checks are a Dagster preview feature
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return _ingestion_checks(parts)


def _ingestion_checks(parts: StudyPartitions) -> list[dg.AssetChecksDefinition]:
    @dg.asset_check(asset="genotypes", partitions_def=parts.chromosomes, blocking=True)
    def ref_matches_reference(study: StudyResource, genotypes: GenotypeMatrix
                              ) -> dg.AssetCheckResult:
        """Every stored REF equals the reference bases at its position."""
        reference = ReferenceGenome(study.load().reference_fasta)
        try:
            wrong = ref_mismatches(genotypes, reference.fetch)
        finally:
            reference.close()
        return dg.AssetCheckResult(
            passed=not wrong,
            metadata={"variants": genotypes.n_variants, "mismatches": len(wrong),
                      "examples": ", ".join(wrong[:EXAMPLES]) or "none"},
        )

    @dg.asset_check(asset="genotypes", partitions_def=parts.chromosomes)
    def heterozygotes_phased(genotypes: GenotypeMatrix) -> dg.AssetCheckResult:
        """At least 99% of heterozygous genotypes are phased (the rest become IUPAC codes)."""
        summary = genotypes.summary()
        fraction = summary["phased_heterozygous_fraction"]
        return dg.AssetCheckResult(
            passed=fraction >= MIN_PHASED_HETEROZYGOUS,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"phased_heterozygous_fraction": fraction,
                      "unphased_heterozygous": summary["unphased_heterozygous"]},
        )

    @dg.asset_check(asset="genotypes", partitions_def=parts.chromosomes)
    def missingness(genotypes: GenotypeMatrix) -> dg.AssetCheckResult:
        """At most 5% of alleles are missing."""
        fraction = genotypes.summary()["missing_allele_fraction"]
        return dg.AssetCheckResult(passed=fraction <= MAX_MISSING_ALLELES,
                                   severity=dg.AssetCheckSeverity.WARN,
                                   metadata={"missing_allele_fraction": fraction})

    @dg.asset_check(asset="covariates", additional_ins={"expression": dg.AssetIn()})
    def samples_shared(expression: pd.DataFrame, covariates: pd.DataFrame
                       ) -> dg.AssetCheckResult:
        """Expression and covariates hold the same samples in the same order."""
        same = list(expression.columns) == list(covariates.columns)
        return dg.AssetCheckResult(passed=same and expression.shape[1] > 0,
                                   metadata={"expression_samples": expression.shape[1],
                                             "covariate_samples": covariates.shape[1]})

    @dg.asset_check(asset="expression", blocking=True)
    def expression_complete(expression: pd.DataFrame) -> dg.AssetCheckResult:
        """No NaN in the expression matrix."""
        nan = expression.isna()
        genes = expression.index[nan.any(axis=1)].tolist()
        return dg.AssetCheckResult(passed=not genes,
                                   metadata={"nan_values": int(nan.to_numpy().sum()),
                                             "genes_with_nan": ", ".join(genes[:EXAMPLES])
                                             or "none"})

    @dg.asset_check(asset="covariates", blocking=True)
    def covariates_complete(covariates: pd.DataFrame) -> dg.AssetCheckResult:
        """No NaN in the covariates."""
        nan = int(covariates.isna().to_numpy().sum())
        return dg.AssetCheckResult(passed=nan == 0, metadata={"nan_values": nan})

    return [ref_matches_reference, heterozygotes_phased, missingness, samples_shared,
            expression_complete, covariates_complete]
