"""Expression BED and covariates: reading, sample alignment, gene ID matching."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from apoe_assets.genomics.errors import InputError
from apoe_assets.genomics.phenotypes import (
    align_samples,
    match_gene_ids,
    read_covariates,
    read_expression_bed,
)
from apoe_assets_tests.studies import SAMPLES, write_tiny_study

BED = (
    "#chr\tstart\tend\tgene_id\ts3\ts1\ts2\textra\n"
    "chr19\t999\t1000\tENSG00000130203.10\t0.5\t-1.25\t2\t9\n"
    "chr19\t3998\t3999\tENSG00000130202.11\t1e-3\tNA\t-0\t0\n"
)


@pytest.fixture
def bed(tmp_path: Path) -> Path:
    path = tmp_path / "expression.bed"
    path.write_text(BED)
    return path


def test_expression_is_genes_by_samples(bed: Path) -> None:
    values = read_expression_bed(bed)
    assert values.index.tolist() == ["ENSG00000130203.10", "ENSG00000130202.11"]
    assert values.columns.tolist() == ["s3", "s1", "s2", "extra"]
    assert (values.dtypes == "float64").all()
    assert values.loc["ENSG00000130203.10"].tolist() == [0.5, -1.25, 2.0, 9.0]
    assert values.loc["ENSG00000130202.11", "s3"] == pytest.approx(0.001)
    assert pd.isna(values.loc["ENSG00000130202.11", "s1"])  # NA is missing, not an error


def test_bgzipped_expression_of_the_tiny_study(tmp_path: Path) -> None:
    tiny = write_tiny_study(tmp_path / "tiny")
    values = read_expression_bed(tiny.folder / "expression.bed.gz")
    assert values.shape == (2, 7)
    assert values.index.tolist() == ["ENSG00000000001", "ENSG00000000002"]
    assert sorted(values.columns) == sorted([*SAMPLES, "extra"])


def test_align_samples_keeps_genotype_order_and_reports_extras(bed: Path) -> None:
    values = read_expression_bed(bed)
    aligned, dropped = align_samples(values, ["s1", "s2", "s9", "s3"], bed, "expression")
    assert aligned.columns.tolist() == ["s1", "s2", "s3"]
    assert dropped == ["extra"]
    assert aligned.loc["ENSG00000130203.10"].tolist() == [-1.25, 2.0, 0.5]


def test_align_samples_with_none_shared_names_the_file(bed: Path) -> None:
    values = read_expression_bed(bed)
    with pytest.raises(InputError) as excinfo:
        align_samples(values, ["x1", "x2"], bed, "expression")
    assert str(bed) in str(excinfo.value)
    assert "'x1'" in str(excinfo.value)


def test_non_numeric_value_names_gene_and_sample(tmp_path: Path) -> None:
    path = tmp_path / "e.bed"
    path.write_text(BED.replace("\t2\t9\n", "\thigh\t9\n"))
    with pytest.raises(InputError) as excinfo:
        read_expression_bed(path)
    assert excinfo.value.record == "gene ENSG00000130203.10"
    assert "sample s2" in str(excinfo.value)
    assert "'high'" in str(excinfo.value)


@pytest.mark.parametrize("reader", [read_expression_bed, read_covariates])
def test_duplicate_sample_columns_are_an_error(tmp_path: Path, reader) -> None:
    path = tmp_path / "t.tsv"
    if reader is read_expression_bed:
        path.write_text("#chr\tstart\tend\tgene_id\ts1\ts2\ts1\nchr1\t0\t1\tG\t1\t2\t3\n")
    else:
        path.write_text("ID\ts1\ts2\ts1\nPC1\t1\t2\t3\n")
    with pytest.raises(InputError, match=r"duplicate sample IDs.*s1"):
        reader(path)


@pytest.mark.parametrize("first_line", [
    "chr\tstart\tend\tgene_id\ts1",  # no '#'
    "#chr\tstart\tend\tphenotype_id\ts1",
    "#chr\tend\tstart\tgene_id\ts1",
])
def test_wrong_header_is_an_error(tmp_path: Path, first_line: str) -> None:
    path = tmp_path / "e.bed"
    path.write_text(first_line + "\nchr1\t0\t1\tG\t1\n")
    with pytest.raises(InputError, match="header must start with") as excinfo:
        read_expression_bed(path)
    assert str(path) in str(excinfo.value)


def test_expression_without_samples(tmp_path: Path) -> None:
    path = tmp_path / "e.bed"
    path.write_text("#chr\tstart\tend\tgene_id\nchr1\t0\t1\tG\n")
    with pytest.raises(InputError, match="no sample columns"):
        read_expression_bed(path)


def test_duplicate_gene_is_named(tmp_path: Path) -> None:
    path = tmp_path / "e.bed"
    path.write_text("#chr\tstart\tend\tgene_id\ts1\nchr1\t0\t1\tG1\t1\nchr1\t5\t6\tG1\t2\n")
    with pytest.raises(InputError) as excinfo:
        read_expression_bed(path)
    assert excinfo.value.record == "G1"


@pytest.mark.parametrize("text", ["", "\n"])
def test_empty_expression_file(tmp_path: Path, text: str) -> None:
    path = tmp_path / "e.bed"
    path.write_text(text)
    with pytest.raises(InputError) as excinfo:
        read_expression_bed(path)
    assert str(path) in str(excinfo.value)


def test_missing_expression_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="expression file not found"):
        read_expression_bed(tmp_path / "nope.bed.gz")


def test_covariates(tmp_path: Path) -> None:
    path = tmp_path / "c.tsv"
    path.write_text("ID\ts2\ts1\nsex\t1\t0\nPC1\t0.25\t-3.5\n")
    covariates = read_covariates(path)
    assert covariates.index.name == "covariate"
    assert covariates.index.tolist() == ["sex", "PC1"]
    assert covariates.loc["PC1"].tolist() == [0.25, -3.5]
    aligned, dropped = align_samples(covariates, ["s1", "s2"], path, "covariate")
    assert aligned.loc["PC1"].tolist() == [-3.5, 0.25]
    assert dropped == []


def test_covariate_non_numeric_names_covariate_and_sample(tmp_path: Path) -> None:
    path = tmp_path / "c.tsv"
    path.write_text("ID\ts1\ts2\nsex\tmale\t0\n")
    with pytest.raises(InputError) as excinfo:
        read_covariates(path)
    assert excinfo.value.record == "covariate sex"
    assert "sample s1" in str(excinfo.value)


def test_match_gene_ids_maps_versions() -> None:
    values = pd.DataFrame({"s1": [1.0, 2.0, 3.0, 4.0]},
                          index=["ENSG00000130203.17", "ENSG00000130202", "ENSG9", "ENSG8.1"])
    renamed = match_gene_ids(values, ["ENSG00000130203", "ENSG00000130202.11", "ENSG8.1"])
    assert renamed.index.tolist() == ["ENSG00000130203", "ENSG00000130202.11", "ENSG9",
                                      "ENSG8.1"]
    assert renamed["s1"].tolist() == [1.0, 2.0, 3.0, 4.0]
