"""Source assets: the study's input files, observed so that lineage starts at the files and a
changed file marks everything built from it unsynced in the UI.

Each observation records the file's size, modification time and a digest of its bytes; the
digest is the data version, so a file touched or copied unchanged keeps its version and any
edit changes it. The genotype files are one source partitioned by chromosome (a single VCF
for all chromosomes gives every chromosome the same version)."""

from datetime import UTC, datetime
from pathlib import Path

import dagster as dg

from apoe_assets.genomics.fingerprint import FileFingerprint, fingerprint
from apoe_assets.partitions import StudyPartitions
from apoe_assets.resources.study import StudyResource
from apoe_assets.study import Study

GROUP = "sources"
REFERENCE_FILE = dg.AssetKey("reference_fasta_file")
ANNOTATION_FILE = dg.AssetKey("annotation_file")
EXPRESSION_FILE = dg.AssetKey("expression_file")
COVARIATES_FILE = dg.AssetKey("covariates_file")
WEIGHTS_FILE = dg.AssetKey("enformer_weights_file")
GENOTYPE_FILE = dg.AssetKey("genotype_file")
DESCRIPTIONS = {
    REFERENCE_FILE: "The study's reference FASTA (reference_fasta).",
    ANNOTATION_FILE: "The study's gene annotation table (annotation).",
    EXPRESSION_FILE: "The study's expression BED (expression).",
    COVARIATES_FILE: "The study's covariates table (covariates).",
    WEIGHTS_FILE: "The Enformer weights (enformer.weights).",
}


NO_WEIGHTS = "no weights file"
"""Data version of ``enformer_weights_file`` when the study sets none (random weights)."""


def single_files(study: Study) -> dict[dg.AssetKey, Path | None]:
    """The study's unpartitioned input files by source key (no weights file: None)."""
    return {REFERENCE_FILE: study.reference_fasta, ANNOTATION_FILE: study.annotation,
            EXPRESSION_FILE: study.expression, COVARIATES_FILE: study.covariates,
            WEIGHTS_FILE: Path(study.enformer.weights) if study.enformer.weights else None}


def observation_metadata(print_: FileFingerprint) -> dict:
    """What an observation shows: the path, size, modification time and digest."""
    modified = datetime.fromtimestamp(print_.mtime, tz=UTC).isoformat(timespec="seconds")
    return {"path": dg.MetadataValue.path(print_.path), "size_bytes": print_.size,
            "modified": modified, "digest": print_.digest}


def source_assets(parts: StudyPartitions) -> list:
    """The observable source assets of the study's input files."""
    specs = [dg.AssetSpec(key, group_name=GROUP, description=text, kinds={"file"})
             for key, text in DESCRIPTIONS.items()]

    @dg.multi_observable_source_asset(specs=specs, name="study_files", can_subset=True)
    def study_files(context: dg.AssetExecutionContext, study: StudyResource):
        """Fingerprint each selected input file (size, mtime, content digest)."""
        for key, path in single_files(study.load()).items():
            if key not in context.selected_asset_keys:
                continue
            if path is None:
                yield dg.ObserveResult(asset_key=key, data_version=dg.DataVersion(NO_WEIGHTS),
                                       metadata={"path": "none (random weights)"})
                continue
            print_ = fingerprint(path)
            yield dg.ObserveResult(asset_key=key, data_version=dg.DataVersion(print_.digest),
                                   metadata=observation_metadata(print_))

    @dg.observable_source_asset(key=GENOTYPE_FILE, group_name=GROUP,
                                partitions_def=parts.chromosomes,
                                description="The study's genotype file of each chromosome "
                                            "(genotypes).")
    def genotype_file(study: StudyResource) -> dg.DataVersionsByPartition:
        """Fingerprint each chromosome's VCF/BCF (a file shared by chromosomes once)."""
        config = study.load()
        files = {chrom: config.genotype_file(chrom) for chrom in config.chromosomes}
        prints = {path: fingerprint(path) for path in set(files.values())}
        return dg.DataVersionsByPartition(
            {chrom: prints[path].digest for chrom, path in files.items()})

    return [study_files, genotype_file]
