"""The study file: paths relative to it, validation errors that name the file and field."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
import yaml

from apoe_assets.genomics.errors import InputError
from apoe_assets.resources.formats import read_genotypes as read_stored_genotypes
from apoe_assets.study import STUDY_ENV, StudyError, load_study
from apoe_assets_tests.conftest import materialise
from apoe_assets_tests.studies import Record, default_records, reference_sequence, write_tiny_study


@pytest.fixture
def tiny(tmp_path: Path):
    return write_tiny_study(tmp_path / "tiny")


def edit(path: Path, drop: tuple[str, ...] = (), **changes: object) -> Path:
    fields = yaml.safe_load(path.read_text())
    for key in drop:
        fields.pop(key)
    fields.update(changes)
    path.write_text(yaml.safe_dump(fields, sort_keys=False))
    return path


# --- paths -------------------------------------------------------------------------------------


def test_paths_are_resolved_against_the_study_file(tiny, tmp_path: Path, monkeypatch) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # relative to the file, not the working folder
    study = load_study(Path("..") / "tiny" / "study.yaml")
    folder = tiny.folder.resolve()
    assert study.source == folder / "study.yaml"
    assert study.reference_fasta == folder / "reference.fa.gz"
    assert study.genotypes == folder / "genotypes.vcf.gz"
    assert study.expression == folder / "expression.bed.gz"
    assert study.covariates == folder / "covariates.tsv"
    assert study.annotation == folder / "genes.tsv"
    assert study.storage_root == str(folder / "storage")
    assert study.mlflow_tracking_uri == f"sqlite:///{folder / 'mlflow.db'}"
    assert study.mlflow_tracking_uri.startswith("sqlite:////")  # four slashes: absolute
    assert study.truth is None
    assert study.genotype_file("chr1") == folder / "genotypes.vcf.gz"
    assert study.genotype_files() == [folder / "genotypes.vcf.gz"]


def test_defaults_are_resolved_against_the_study_file(tiny) -> None:
    edit(tiny.study, drop=("storage_root", "mlflow_tracking_uri", "window_length",
                           "cis_window"))
    study = load_study(tiny.study)
    folder = tiny.folder.resolve()
    assert study.storage_root == str(folder / ".apoe" / "storage")
    assert study.mlflow_tracking_uri == f"sqlite:///{folder / '.apoe' / 'mlflow.db'}"
    assert study.window_length == 196_608
    assert study.cis_window == 1_000_000
    assert study.ref_mismatch == "fail"


@pytest.mark.parametrize(("storage_root", "tracking_uri"), [
    ("s3://bucket/x", "http://127.0.0.1:5000"),
    ("gs://bucket/apoe/storage", "sqlite:////var/lib/mlflow.db"),
    ("/srv/apoe/storage", "file:///srv/mlruns"),
])
def test_urls_and_absolute_paths_are_kept(tiny, storage_root: str, tracking_uri: str) -> None:
    edit(tiny.study, storage_root=storage_root, mlflow_tracking_uri=tracking_uri)
    study = load_study(tiny.study)
    assert study.storage_root == storage_root
    assert study.mlflow_tracking_uri == tracking_uri


@pytest.mark.parametrize(("template", "chrom", "expected"), [
    ("vcf/chr{chrom}.vcf.gz", "chr19", "vcf/chr19.vcf.gz"),
    ("vcf/{chrom}.vcf.gz", "chr19", "vcf/19.vcf.gz"),
    ("by_chrom/ALL.chr{chrom}.phased.bcf", "chrX", "by_chrom/ALL.chrX.phased.bcf"),
])
def test_chrom_template(tiny, template: str, chrom: str, expected: str) -> None:
    edit(tiny.study, genotypes=template)
    study = load_study(tiny.study)
    assert study.genotype_file(chrom) == tiny.folder.resolve() / expected


def test_per_chromosome_mapping_is_canonicalised(tiny) -> None:
    tiny.study.write_text(tiny.study.read_text().replace(
        "genotypes: genotypes.vcf.gz",
        "genotypes:\n  '19': vcf/nineteen.vcf.gz\n  chr1: genotypes.vcf.gz\n"
        "  MT: /data/mito.bcf"))
    study = load_study(tiny.study)
    folder = tiny.folder.resolve()
    assert study.genotypes == {"chr19": folder / "vcf" / "nineteen.vcf.gz",
                               "chr1": folder / "genotypes.vcf.gz",
                               "chrM": Path("/data/mito.bcf")}
    assert study.genotype_file("chr19") == folder / "vcf" / "nineteen.vcf.gz"
    assert study.genotype_files() == [folder / "genotypes.vcf.gz"]  # only chr1 has genes
    with pytest.raises(StudyError, match="'genotypes' has no file for chr2") as excinfo:
        study.genotype_file("chr2")
    assert str(study.source) in str(excinfo.value)


def test_per_chromosome_mapping_with_unquoted_number_keys(tiny) -> None:
    tiny.study.write_text(tiny.study.read_text().replace(
        "genotypes: genotypes.vcf.gz",
        "genotypes:\n  19: chr19.vcf.gz\n  1: genotypes.vcf.gz"))
    study = load_study(tiny.study)
    assert study.genotype_file("chr19") == tiny.folder.resolve() / "chr19.vcf.gz"


# --- choosing the file -------------------------------------------------------------------------


def test_env_var_selects_the_study(tiny, monkeypatch) -> None:
    edit(tiny.study, name="from-env")
    monkeypatch.setenv(STUDY_ENV, str(tiny.study))
    study = load_study()
    assert study.name == "from-env"
    assert study.source == tiny.study.resolve()


def test_an_explicit_path_wins_over_the_env_var(tiny, tmp_path: Path, monkeypatch) -> None:
    other = write_tiny_study(tmp_path / "other", name="other")
    monkeypatch.setenv(STUDY_ENV, str(tiny.study))
    assert load_study(other.study).name == "other"


def test_missing_study_file(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "absent.yaml"
    monkeypatch.setenv(STUDY_ENV, str(path))
    with pytest.raises(StudyError, match="not found") as excinfo:
        load_study()
    assert str(path) in str(excinfo.value)
    assert STUDY_ENV in str(excinfo.value)


# --- validation errors -------------------------------------------------------------------------


def test_invalid_yaml_names_the_file(tiny) -> None:
    tiny.study.write_text("name: tiny\ngenes: [GENE_A\n  bad: : :\n")
    with pytest.raises(StudyError, match="invalid YAML") as excinfo:
        load_study(tiny.study)
    assert str(tiny.study.resolve()) in str(excinfo.value)


@pytest.mark.parametrize("text", ["- a\n- b\n", "just text\n", ""])
def test_a_study_must_be_a_mapping(tiny, text: str) -> None:
    tiny.study.write_text(text)
    with pytest.raises(StudyError, match="expected a mapping") as excinfo:
        load_study(tiny.study)
    assert str(tiny.study.resolve()) in str(excinfo.value)


def test_wrong_field_type_names_the_field(tiny) -> None:
    edit(tiny.study, window_length="abc")
    with pytest.raises(StudyError) as excinfo:
        load_study(tiny.study)
    message = str(excinfo.value)
    assert str(tiny.study.resolve()) in message
    assert "field 'window_length'" in message
    assert "'abc'" in message


@pytest.mark.parametrize(("field", "value"), [
    ("window_length", 1_000),  # not a multiple of 128
    ("window_length", 0),
    ("cis_window", -5),
    ("ref_mismatch", "ignore"),
    ("seed", "zero"),
    ("genes", "GENE_A"),
])
def test_invalid_values_name_the_field(tiny, field: str, value: object) -> None:
    edit(tiny.study, **{field: value})
    with pytest.raises(StudyError, match=f"field '{field}'"):
        load_study(tiny.study)


def test_unknown_field_is_named(tiny) -> None:
    edit(tiny.study, windowlength=1024)
    with pytest.raises(StudyError, match=r"field 'windowlength'.*[Ee]xtra"):
        load_study(tiny.study)


def test_missing_required_field_is_named(tiny) -> None:
    edit(tiny.study, drop=("reference_fasta",))
    with pytest.raises(StudyError, match="field 'reference_fasta'"):
        load_study(tiny.study)


def test_bad_region_names_the_field(tiny) -> None:
    edit(tiny.study, genes=[], regions=["chr1:5000"])
    with pytest.raises(StudyError, match="field 'regions'"):
        load_study(tiny.study)


def test_a_study_needs_genes_or_regions(tiny) -> None:
    edit(tiny.study, genes=[], regions=[])
    with pytest.raises(StudyError, match="'genes' or 'regions'") as excinfo:
        load_study(tiny.study)
    assert str(tiny.study.resolve()) in str(excinfo.value)
    edit(tiny.study, drop=("genes", "regions"))
    with pytest.raises(StudyError, match="'genes' or 'regions'"):
        load_study(tiny.study)


def test_a_bad_haploid_rule_names_the_field_and_the_choices(tiny) -> None:
    """``sequences.haploid`` defaults to ``bcftools``; any value but ``bcftools``/``both`` is
    refused with the field, the choices and the value. Catches the setting typed as a free
    string (a typo would then read haploid calls some third way) and the default changed."""
    assert load_study(tiny.study).sequences.haploid == "bcftools"
    edit(tiny.study, sequences={"haploid": "copy"})
    with pytest.raises(StudyError, match=r"field 'sequences\.haploid': Input should be "
                       r"'bcftools' or 'both' \(got 'copy'\)"):
        load_study(tiny.study)


def test_the_haploid_rule_reaches_the_genotypes_asset(tmp_path: Path,
                                                      instance: dg.DagsterInstance) -> None:
    """``sequences.haploid: both`` in the study file is the rule the ``genotypes`` asset reads
    with, and its metadata counts the haploid calls (3 in a mixed-ploidy record, 5 in an
    all-haploid one; a lone ``.`` not counted) and names the rule. Catches the setting not
    passed to the reader (the mixed record's haplotype 2 would be REF, the default) and the
    count missing from the metadata."""
    rule = "both"
    reference = reference_sequence()
    records = sorted([*default_records(reference),
                      Record(5_300, ["*"], ["1", "0|1", "0", "1", "1|1", "."]),
                      Record(13_600, ["*"], ["1", "0", "1", "0", ".", "1"])],
                     key=lambda record: record.pos)
    tiny = write_tiny_study(tmp_path / "study", records, sequences={"haploid": rule})
    results = materialise(tiny.study, instance,
                          dg.AssetSelection.assets("genotypes").upstream())
    assert all(r.success for r in results)
    metadata = {k: getattr(v, "value", v) for r in results
                for e in r.get_asset_materialization_events()
                if e.asset_key == dg.AssetKey("genotypes")
                for k, v in e.materialization.metadata.items()}
    assert metadata["haploid_calls"] == 8
    assert metadata["haploid_rule"] == rule
    stored = read_stored_genotypes(tiny.storage / "genotypes" / "chr1.genotypes")
    rows = stored.variants.set_index("pos").index
    mixed, haploid = rows.get_loc(5_300), rows.get_loc(13_600)
    assert stored.haplotypes[mixed, :2].tolist() == [1, 1]  # [1, 0] under the default
    assert stored.haplotypes[haploid, :2].tolist() == [1, 1]


def test_the_study_is_frozen(tiny) -> None:
    study = load_study(tiny.study)
    with pytest.raises(ValueError):
        study.name = "changed"  # type: ignore[misc]


# --- genes -------------------------------------------------------------------------------------


def test_gene_table_and_chromosomes_of_the_tiny_study(tiny) -> None:
    study = load_study(tiny.study)
    table = study.gene_table
    assert table["gene_id"].tolist() == ["ENSG00000000001", "ENSG00000000002"]
    assert table["partition_key"].tolist() == ["GENE_A", "GENE_B"]
    assert table["chrom"].tolist() == ["chr1", "chr1"]
    assert table["tss"].tolist() == [4_999, 13_999]  # + strand start, − strand end, 0-based
    assert study.chromosomes == ["chr1"]
    assert study.gene_table is table  # computed once


def test_genes_from_a_region(tiny) -> None:
    edit(tiny.study, genes=[], regions=["1:13,000-14,000"])
    study = load_study(tiny.study)
    assert study.gene_table["partition_key"].tolist() == ["GENE_B"]


def test_unknown_study_gene_names_gene_and_annotation(tiny) -> None:
    edit(tiny.study, genes=["GENE_A", "APOE"])
    study = load_study(tiny.study)
    with pytest.raises(InputError) as excinfo:
        _ = study.gene_table
    assert "'APOE'" in str(excinfo.value)
    assert str(study.annotation) in str(excinfo.value)


def test_chromosomes_are_in_genome_order(tiny) -> None:
    rows = [("G1", "A", "chrX", 10, 20, "+"), ("G2", "B", "10", 10, 20, "+"),
            ("G3", "C", "chr2", 10, 20, "-"), ("G4", "D", "1", 10, 20, "+"),
            ("G5", "E", "MT", 10, 20, "+")]
    (tiny.folder / "genes.tsv").write_text(
        "gene_id\tsymbol\tchrom\tstart\tend\tstrand\n"
        + "".join("\t".join(map(str, r)) + "\n" for r in rows))
    edit(tiny.study, genes=["A", "B", "C", "D", "E"], genotypes="chr{chrom}.vcf.gz")
    study = load_study(tiny.study)
    assert study.chromosomes == ["chr1", "chr2", "chr10", "chrM", "chrX"]
    folder = tiny.folder.resolve()
    assert study.genotype_files() == sorted(folder / f"chr{c}.vcf.gz"
                                            for c in ("1", "2", "10", "M", "X"))
