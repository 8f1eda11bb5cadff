"""Asset checks, declared beside the assets they check: each re-reads the stored output."""

import warnings

import dagster as dg
import pandas as pd

from apoe_assets.genomics.coordinates import Interval, from_one_based
from apoe_assets.genomics.fasta import ReferenceGenome
from apoe_assets.genomics.genotypes import GenotypeMatrix
from apoe_assets.genomics.personal import SequenceFolder
from apoe_assets.partitions import StudyPartitions
from apoe_assets.resources.study import StudyResource

MIN_PHASED_HETEROZYGOUS = 0.99
MAX_MISSING_ALLELES = 0.05
_EXAMPLES = 5


def ref_mismatches(matrix: GenotypeMatrix, reference: ReferenceGenome) -> list[str]:
    """Variant IDs whose REF differs from the reference bases at their position."""
    wrong = []
    for variant in matrix.variants.itertuples():
        start, end = from_one_based(variant.pos, variant.pos + len(variant.ref) - 1)
        if reference.fetch(Interval(variant.chrom, start, end)).decode() != variant.ref:
            wrong.append(variant.variant_id)
    return wrong


def ingestion_checks(parts: StudyPartitions) -> list[dg.AssetChecksDefinition]:
    """Checks of the ingestion assets for a study with these partitions."""
    with warnings.catch_warnings():  # partitioned checks are a Dagster preview feature
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return _checks(parts)


def _checks(parts: StudyPartitions) -> list[dg.AssetChecksDefinition]:
    @dg.asset_check(asset="genotypes", partitions_def=parts.chromosomes, blocking=True)
    def ref_matches_reference(study: StudyResource, genotypes: GenotypeMatrix
                              ) -> dg.AssetCheckResult:
        """Every stored REF equals the reference bases at its position."""
        reference = ReferenceGenome(study.load().reference_fasta)
        wrong = ref_mismatches(genotypes, reference)
        reference.close()
        return dg.AssetCheckResult(
            passed=not wrong,
            metadata={"variants": genotypes.n_variants, "mismatches": len(wrong),
                      "examples": ", ".join(wrong[:_EXAMPLES]) or "none"},
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
                                             "genes_with_nan": ", ".join(genes[:_EXAMPLES])
                                             or "none"})

    @dg.asset_check(asset="covariates", blocking=True)
    def covariates_complete(covariates: pd.DataFrame) -> dg.AssetCheckResult:
        """No NaN in the covariates."""
        nan = int(covariates.isna().to_numpy().sum())
        return dg.AssetCheckResult(passed=nan == 0, metadata={"nan_values": nan})

    @dg.asset_check(asset="personal_sequences", partitions_def=parts.genes, blocking=True)
    def tss_centred(personal_sequences: SequenceFolder) -> dg.AssetCheckResult:
        """Every haplotype's TSS index points at the reference TSS context (where no variant
        near the TSS makes that untestable), so re-centring puts the TSS at L/2."""
        manifest = personal_sequences.manifest()
        checked = manifest["tss_matches_reference"].dropna()
        wrong = manifest.loc[manifest["tss_matches_reference"] == 0, "record"].tolist()
        return dg.AssetCheckResult(
            passed=not wrong and len(checked) > 0,
            metadata={"verified": int(checked.sum()), "mismatches": len(wrong),
                      "untestable": int(manifest["tss_matches_reference"].isna().sum()),
                      "examples": ", ".join(wrong[:_EXAMPLES]) or "none"})

    return [ref_matches_reference, heterozygotes_phased, missingness, samples_shared,
            expression_complete, covariates_complete, tss_centred]
