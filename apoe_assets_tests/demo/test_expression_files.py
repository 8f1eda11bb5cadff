"""Expression and covariates in tensorQTL's layouts, with realistic sample bookkeeping."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import numpy as np

from apoe_assets.demo.genes import gene_table
from apoe_assets_tests.demo.reading import Vcf, read_covariates, read_expression

FIXED_DECIMALS = re.compile(r"^-?\d+\.\d{6}$")


def test_expression_bed_layout(study: Path) -> None:
    with gzip.open(study / "expression/expression.bed.gz", "rt") as handle:
        lines = handle.read().splitlines()
    assert lines[0].split("\t")[:4] == ["#chr", "start", "end", "gene_id"]
    assert all(FIXED_DECIMALS.match(v) for line in lines[1:] for v in line.split("\t")[4:])
    bed = read_expression(study)
    tss = gene_table().set_index("gene_id")["tss"]
    assert len(bed) == 30 and set(bed["gene_id"]) == set(tss.index)
    assert (bed["start"] == bed["gene_id"].map(tss) - 1).all()  # 0-based TSS
    assert (bed["end"] == bed["start"] + 1).all()
    assert bed["start"].is_monotonic_increasing
    assert (bed["#chr"] == "chr19").all()


def test_covariates_layout(study: Path) -> None:
    text = (study / "expression/covariates.tsv").read_text().splitlines()
    assert text[0].split("\t")[0] == "ID"
    covariates = read_covariates(study)
    assert covariates.index.tolist() == ["PC1", "PC2", "PC3", "InferredCov1", "InferredCov2",
                                         "sex"]
    assert set(covariates.loc["sex"].unique()) == {0, 1}
    pcs = covariates.loc[["PC1", "PC2", "PC3"]].to_numpy()
    assert abs(pcs.mean(axis=1)).max() < 1e-5  # centred, unit variance, uncorrelated
    assert abs(pcs.std(axis=1) - 1).max() < 1e-3
    assert abs(np.corrcoef(pcs) - np.eye(3)).max() < 1e-4


def test_samples_shuffled_and_some_without_rna(study: Path, vcf: Vcf) -> None:
    expression_samples = read_expression(study).columns[4:].tolist()
    assert read_covariates(study).columns.tolist() == expression_samples
    assert len(set(expression_samples)) == len(expression_samples)
    assert set(expression_samples) < set(vcf.samples)
    absent = len(vcf.samples) - len(expression_samples)
    assert absent == max(1, round(0.02 * len(vcf.samples)))  # about 2% have no RNA
    in_vcf_order = [s for s in vcf.samples if s in set(expression_samples)]
    assert expression_samples != in_vcf_order
    assert sorted(expression_samples) == in_vcf_order
