"""Gene facts, the default gene list and the study file."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from apoe_assets.demo.facts import REGION_FIRST, REGION_LAST
from apoe_assets.demo.genes import GENE_BODY, gene_table, nearest_genes
from apoe_assets.study import load_study
from apoe_assets_tests.demo.reading import read_study_yaml

DEFAULT_GENES = ["APOE", "APOC1", "TOMM40", "APOC4", "APOC2", "CLPTM1", "NECTIN2", "RELB",
                 "BCAM", "CBLC", "CLASRP", "BCL3"]


def test_default_genes_are_the_twelve_nearest_apoe() -> None:
    assert nearest_genes(gene_table()) == DEFAULT_GENES


def test_annotation_keeps_real_tss_and_placeholder_bodies(study: Path) -> None:
    genes = pd.read_csv(study / "annotation/genes.tsv", sep="\t")
    assert list(genes.columns) == ["gene_id", "symbol", "chrom", "start", "end", "strand"]
    assert len(genes) == 30 and set(genes["chrom"]) == {"chr19"}
    apoe = genes.set_index("symbol").loc["APOE"]
    assert (apoe["gene_id"], apoe["start"], apoe["strand"]) == ("ENSG00000130203", 44_905_754,
                                                                "+")
    ercc2 = genes.set_index("symbol").loc["ERCC2"]
    assert (ercc2["end"], ercc2["strand"]) == (45_370_918, "-")  # − strand: TSS is the end
    assert (genes["end"] - genes["start"] + 1 == GENE_BODY).all()  # none needs clipping
    assert genes["start"].min() >= REGION_FIRST and genes["end"].max() <= REGION_LAST


def test_study_file_has_the_agreed_keys_and_loads(study: Path) -> None:
    raw = read_study_yaml(study)
    assert list(raw) == ["name", "seed", "reference_fasta", "genotypes", "expression",
                         "covariates", "annotation", "genes", "window_length", "cis_window",
                         "genes_per_run", "ref_mismatch", "storage_root",
                         "mlflow_tracking_uri", "truth", "enformer", "snp_effects", "overlap"]
    assert raw["genes"] == DEFAULT_GENES
    assert raw["genes_per_run"] == len(DEFAULT_GENES)  # one range a gene asset
    assert (raw["window_length"], raw["cis_window"], raw["ref_mismatch"]) == (24576, 1_000_000,
                                                                             "fail")
    for key in ("reference_fasta", "genotypes", "expression", "covariates", "annotation"):
        assert (study / raw[key]).is_file(), key
    assert raw["enformer"] == {"weights": "enformer/weights.safetensors",
                               "targets": "enformer/targets.txt", "tracks": ["CAGE:brain"],
                               "haplotypes": "mean", "batch_size": 2}
    assert raw["snp_effects"] == {"tracks": ["CHIP:H3K27me3"],  # the only mark its head has
                                  "indels": True}  # they carry its Enformer component
    assert raw["overlap"] == {"top_k": 3}  # its windows hold 43–64 variants
    loaded = load_study(study / "study.yaml")
    assert loaded.enformer.weights == (study / "enformer/weights.safetensors").resolve()
    assert loaded.enformer.targets.is_file()
    assert loaded.gene_table["symbol"].tolist() == sorted(
        DEFAULT_GENES, key=lambda s: int(gene_table().set_index("symbol").loc[s, "tss"]))
