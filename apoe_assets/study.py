"""The study file: one YAML document that says where a study's data live and how to run it.

``APOE_STUDY`` names the file; without it, the bundled demo study is used. Paths in the file
are relative to the file itself.
"""

from __future__ import annotations

import os
import re
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal

import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from apoe_assets.genomics.annotation import read_annotation, select_genes
from apoe_assets.genomics.contigs import canonical_chrom
from apoe_assets.genomics.coordinates import parse_region
from apoe_assets.genomics.personal import CHUNK_SAMPLES
from apoe_assets.genomics.vcf import HAPLOID_RULE, HaploidRule
from apoe_assets.ml.elastic_net import L1_RATIO
from apoe_assets.ml.folds import FOLDS, INNER_FOLDS
from apoe_assets.stats import eqtl as eqtl_core
from apoe_assets.stats.ld import DEFAULT_KB, DEFAULT_P1, DEFAULT_R2
from apoe_assets.stats.overlap import EQTL_ALPHA, LD_R2, PERMUTATIONS, TOP_K
from apoe_assets.stats.prs import P_THRESHOLDS

STUDY_ENV = "APOE_STUDY"
DEMO_STUDY = Path(__file__).resolve().parents[1] / "data" / "demo" / "study.yaml"
CHROM_PLACEHOLDER = "{chrom}"


class StudyError(ValueError):
    """The study file is missing, not YAML, or has a field of the wrong kind."""


class SequenceSettings(BaseModel):
    """How personal haplotype sequences are built (``sequences:`` in the study file)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    missing: Literal["ref", "N"] = Field(
        "ref", description="a missing genotype gives the reference base, or N (bcftools -M N)")
    snps_only: bool = Field(False, description="apply SNVs and MNVs only, no indels")
    chunk_samples: Annotated[int, Field(gt=0)] = Field(
        CHUNK_SAMPLES, description="samples built and written at a time (bounds memory)")
    flank: Annotated[int, Field(ge=0)] | None = Field(
        None, description="bases kept beyond each side of the model window so that indels can "
        "be re-centred on the TSS with real sequence; default L/8")
    haploid: HaploidRule = Field(
        HAPLOID_RULE, description="a haploid call (`1` rather than `1|1`, as on chrX and chrY "
        "of males); applied when genotypes are read, so it sets the dosages (hap1 + hap2) of "
        "cis-eQTL and PRS as well as the sequences. `bcftools`: what `bcftools consensus "
        "-H 1pIu`/`2pIu` build: the allele on haplotype 1 and REF on haplotype 2 (dosage 1) in "
        "a record that also holds diploid calls, the allele on both (dosage 2) in a record "
        "whose calls are all haploid. `both`: the allele on both haplotypes everywhere "
        "(dosage 2). A lone `.` is missing on both either way")


Probability = Annotated[float, Field(gt=0, le=1)]


class EqtlSettings(BaseModel):
    """cis-eQTL mapping (``eqtl:`` in the study file); the window is ``cis_window``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    maf_threshold: Annotated[float, Field(ge=0, lt=0.5)] = Field(
        eqtl_core.MAF_THRESHOLD, description="variants with a minor-allele frequency below "
        "this are not tested")
    permutations: Annotated[int, Field(ge=0)] = Field(
        eqtl_core.PERMUTATIONS, description="phenotype permutations for the gene-level "
        "p-value (0: none)")


class PrsSettings(BaseModel):
    """Polygenic scores and the elastic net (``prs:`` in the study file), PLINK's defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    clump_p1: Probability = Field(DEFAULT_P1, description="index-variant p-value threshold")
    clump_r2: Annotated[float, Field(ge=0, lt=1)] = Field(
        DEFAULT_R2, description="variants with r² above this to an index variant join its "
        "clump")
    clump_kb: Annotated[float, Field(gt=0)] = Field(DEFAULT_KB, description="clumping window, kb")
    p_thresholds: list[Probability] = Field(
        list(P_THRESHOLDS),
        description="the P+T grid; the threshold is chosen by inner cross-validation",
        min_length=1)
    inner_folds: Annotated[int, Field(ge=2)] = Field(
        INNER_FOLDS, description="inner folds (within each training set) for thresholds and λ")
    l1_ratio: Annotated[float, Field(gt=0, le=1)] = Field(
        L1_RATIO, description="elastic-net mixing α (PrediXcan: 0.5)")


class EnformerSettings(BaseModel):
    """The sequence model (``enformer:`` in the study file)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    weights: Path | None = Field(
        None, description="converted weights (.safetensors from `python -m "
        "apoe_assets.enformer.convert`); required to run Enformer on a real study")
    targets: Path | None = Field(
        None, description="targets table in the layout of targets_human.txt, for selecting "
        "tracks by description")
    tracks: list[str | int] = Field(
        ["CAGE:brain"], min_length=1,
        description="track indices, or description prefixes/patterns (e.g. 'CAGE:brain')")
    haplotypes: Literal["mean", "sum", "max"] = Field(
        "mean", description="how a person's two haplotype features are combined")
    batch_size: Annotated[int, Field(gt=0)] = 4
    precision: Literal["float32", "bfloat16"] = "float32"
    reverse_complement: bool = Field(
        False, description="average each prediction with that of the reverse complement")
    device: Literal["auto", "cpu", "gpu", "tpu"] = "auto"
    log1p: bool = Field(
        False, description="log1p-transform the track values the boosting model sees")


class StackingSettings(BaseModel):
    """Multi-gene stacking (``stacking:`` in the study file); folds and inner folds are the
    genotype models' (``folds``, ``prs.inner_folds``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    genotype_scores: bool = Field(
        False, description="add every gene's genotype scores (baseline and P+T PRS; inner "
        "out-of-fold for training samples, from prs_fold_scores) to the Enformer features. "
        "Off (default): the stack is an Enformer-only model, so its comparison with the "
        "genotype models stays Enformer against genotype scores; and the genotype models make "
        "no inner-inner scores, so with them on the meta-learner's training rows come from "
        "inner fits that saw scores fitted on their own inner test samples (the outer "
        "predictions stay out of fold, the meta-learner's weights lean optimistic)")


class OverlapSettings(BaseModel):
    """Model SNPs against eQTL SNPs (``overlap:`` in the study file); the permutation seed is
    the study's ``seed``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    top_k: Annotated[int, Field(gt=0)] = Field(
        TOP_K, description="SNPs taken from the top of each model and eQTL ranking")
    ld_r2: Annotated[float, Field(gt=0, le=1)] = Field(
        LD_R2, description="r² at or above which a model SNP tags an eQTL SNP")
    permutations: Annotated[int, Field(ge=0)] = Field(
        PERMUTATIONS, description="circular shifts of the model ranking in the "
        "LD-keeping null (0: none)")
    eqtl_p: Probability | None = Field(
        None, description="eQTL significance threshold (pval_nominal ≤ this); default "
        f"Bonferroni within each gene: {EQTL_ALPHA} / variants tested")


SNP_EFFECT_TRACKS = ("CHIP:H3K27me3", "CHIP:H3K9me3", "CHIP:H3K36me3")
"""Default tracks of ``snp_effects`` (``tracks_l1``, SAD): the marks the earlier study scored.
Here, not beside the core, because the core's package starts JAX on import."""


class SnpEffectSettings(BaseModel):
    """Variant effects on the model's predictions (``snp_effects:`` in the study file); the
    expression track(s) of ``expr_effect`` are ``enformer.tracks``, REF mismatches follow
    ``ref_mismatch``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tracks: list[str | int] = Field(
        list(SNP_EFFECT_TRACKS), min_length=1,
        description="tracks of tracks_l1 and the SAD array: description prefixes, 're:' "
        "patterns or indices (default: the histone marks the earlier study scored; e.g. "
        "['CAGE:', 'DNASE:', 'CHIP:H3K27ac'] for another set); each must match a track")
    indels: bool = Field(
        False, description="score insertions and deletions too (re-centred on the TSS as "
        "personal sequences are); off: SNVs and MNVs only, indels skipped and counted")
    reverse_complement: bool = Field(
        False, description="average each REF and ALT prediction with that of its reverse "
        "complement")
    incremental: bool = Field(
        True, description="score SNVs by recomputing the conv tower only around the variant "
        "(equal to full forwards up to float32 rounding); off, or with reverse_complement or "
        "bfloat16: a full forward per ALT")
    variant_centred: bool = Field(
        False, description="centre each variant's REF and ALT windows on the variant "
        "(DeepMind's variant scoring) rather than on the TSS: two full forwards per variant; "
        "expr_effect reads the bins holding the TSS, variants whose TSS falls outside the "
        "model's output are skipped and counted")


REFRESH_CRON = "0 3 * * 1"
"""Default cron of ``refresh_stale_genes``: weekly, Monday 03:00."""
OBSERVE_CRON = "0 * * * *"
"""Default cron of ``observe_input_files``: hourly."""
SENSOR_SECONDS = 60
"""Default seconds between evaluations of the sensors that react to changed inputs."""
CRON_FIELD = re.compile(r"[0-9A-Za-z*/,?-]+")


class OrchestrationSettings(BaseModel):
    """When the assets run on their own (``orchestration:`` in the study file)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    refresh_cron: str = Field(
        REFRESH_CRON, description="cron of the schedule that runs every missing or stale gene "
        "partition")
    observe_cron: str = Field(
        OBSERVE_CRON, description="cron of the schedule that fingerprints the input files")
    sensor_seconds: Annotated[int, Field(ge=5)] = Field(
        SENSOR_SECONDS, description="seconds between evaluations of the input_files_changed "
        "and cheap_assets sensors (refresh_all_genes_assets: five times as long)")

    @field_validator("refresh_cron", "observe_cron")
    @classmethod
    def _valid_cron(cls, cron: str) -> str:
        fields = cron.split()
        if len(fields) != 5 or not all(CRON_FIELD.fullmatch(f) for f in fields):
            raise ValueError(f"{cron!r} is not a cron expression of 5 fields (minute hour "
                             f"day month weekday, e.g. {REFRESH_CRON!r})")
        return cron


class Study(BaseModel):
    """A parsed, validated study file. Paths are absolute once loaded."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    seed: int = 0
    reference_fasta: Path
    genotypes: Path | dict[str, Path] = Field(
        description="one VCF/BCF, a path with {chrom} in it, or a mapping chromosome → file")
    expression: Path
    covariates: Path
    annotation: Path
    genes: list[str] = Field(default_factory=list)
    regions: list[str] = Field(default_factory=list)
    samples: list[str] = Field(default_factory=list,
                               description="samples to use (default: every VCF sample)")
    window_length: Annotated[int, Field(gt=0, multiple_of=128)] = 196_608
    cis_window: Annotated[int, Field(gt=0)] = eqtl_core.DEFAULT_WINDOW
    ref_mismatch: Literal["fail", "drop"] = "fail"
    folds: Annotated[int, Field(ge=2)] = Field(
        FOLDS, description="cross-validation folds shared by every weight and model")
    genes_per_run: Annotated[int, Field(ge=1)] = Field(
        10, description="most gene partitions one backfill run of cis_eqtl or prs_scores "
        "takes (the chromosome, expression and covariates are loaded once per run)")
    storage_root: str = ".apoe/storage"
    mlflow_tracking_uri: str = "sqlite:///.apoe/mlflow.db"
    truth: Path | None = None
    sequences: SequenceSettings = SequenceSettings()
    eqtl: EqtlSettings = EqtlSettings()
    prs: PrsSettings = PrsSettings()
    enformer: EnformerSettings = EnformerSettings()
    stacking: StackingSettings = StackingSettings()
    snp_effects: SnpEffectSettings = SnpEffectSettings()
    overlap: OverlapSettings = OverlapSettings()
    orchestration: OrchestrationSettings = OrchestrationSettings()
    source: Path = Field(default=Path("study.yaml"), exclude=True)

    @field_validator("regions")
    @classmethod
    def _regions_parse(cls, regions: list[str]) -> list[str]:
        for region in regions:
            parse_region(region)
        return regions

    @field_validator("genotypes")
    @classmethod
    def _canonical_keys(cls, value: Path | dict[str, Path]) -> Path | dict[str, Path]:
        if isinstance(value, dict):
            return {canonical_chrom(k): v for k, v in value.items()}
        return value

    @property
    def sequence_flank(self) -> int:
        """Bases kept beyond each side of the model window in personal sequences."""
        flank = self.sequences.flank
        return self.window_length // 8 if flank is None else flank

    def genotype_file(self, chrom: str) -> Path:
        """The VCF/BCF that holds chromosome ``chrom`` (canonical name)."""
        if isinstance(self.genotypes, dict):
            if chrom not in self.genotypes:
                raise StudyError(f"{self.source}: field 'genotypes' has no file for {chrom}")
            return self.genotypes[chrom]
        text = str(self.genotypes)
        if CHROM_PLACEHOLDER in text:
            return Path(text.replace(CHROM_PLACEHOLDER, chrom.removeprefix("chr")))
        return self.genotypes

    def genotype_files(self) -> list[Path]:
        """Every genotype file the study names (one per chromosome of its genes, or one)."""
        return sorted({self.genotype_file(c) for c in self.chromosomes})

    @cached_property
    def gene_table(self) -> pd.DataFrame:
        """The study's genes from the annotation, with TSS and unique ``partition_key``."""
        return select_genes(read_annotation(self.annotation), self.genes, self.regions,
                            source=self.annotation)

    @property
    def chromosomes(self) -> list[str]:
        """Canonical names of the chromosomes that hold the study's genes, in genome order."""
        return sorted(set(self.gene_table["chrom"]), key=_chrom_order)


def _chrom_order(chrom: str) -> tuple[int, str]:
    bare = chrom.removeprefix("chr")
    return (int(bare), "") if bare.isdigit() else (1000, bare)


def _resolve(base: Path, value: str) -> str:
    """Resolve a relative path (or ``sqlite:///relative``) against the study file's folder."""
    if value.startswith("sqlite:///") and not value.startswith("sqlite:////"):
        return "sqlite:///" + str((base / value.removeprefix("sqlite:///")).resolve())
    if "://" in value or Path(value).is_absolute():
        return value
    return str((base / value).resolve())


_PATH_FIELDS = ("reference_fasta", "expression", "covariates", "annotation", "truth")


def load_study(path: Path | str | None = None) -> Study:
    """Read and validate a study file (default: ``$APOE_STUDY``, else the bundled demo)."""
    path = Path(path or os.environ.get(STUDY_ENV) or DEMO_STUDY).resolve()
    if not path.exists():
        raise StudyError(f"{path}: study file not found (set {STUDY_ENV} to a study YAML)")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise StudyError(f"{path}: invalid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise StudyError(f"{path}: expected a mapping of fields, got {type(raw).__name__}")
    base = path.parent
    for key in _PATH_FIELDS:
        if isinstance(raw.get(key), str):
            raw[key] = _resolve(base, raw[key])
    genotypes = raw.get("genotypes")
    if isinstance(genotypes, str):
        raw["genotypes"] = _resolve(base, genotypes)
    elif isinstance(genotypes, dict):
        raw["genotypes"] = {str(k): _resolve(base, str(v)) for k, v in genotypes.items()}
    enformer = raw.get("enformer")
    if isinstance(enformer, dict):
        for key in ("weights", "targets"):
            if isinstance(enformer.get(key), str):
                enformer[key] = _resolve(base, enformer[key])
    for key in ("storage_root", "mlflow_tracking_uri"):
        raw[key] = _resolve(base, str(raw.get(key, Study.model_fields[key].default)))
    try:
        study = Study.model_validate({**raw, "source": path})
    except ValidationError as exc:
        problems = "; ".join(
            f"field '{'.'.join(str(p) for p in err['loc'])}': {err['msg']}"
            + (f" (got {err['input']!r})" if not isinstance(err["input"], dict) else "")
            for err in exc.errors()
        )
        raise StudyError(f"{path}: {problems}") from None
    if not study.genes and not study.regions:
        raise StudyError(f"{path}: field 'genes' or 'regions' must name at least one gene")
    return study
