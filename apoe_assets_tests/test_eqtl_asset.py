"""cis_eqtl on the demo study, materialised for real: per-fold tables use training samples
only, so changing a held-out fold's expression cannot change the weights that score it."""

from __future__ import annotations

import gzip
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from apoe_assets.definitions import build_definitions
from apoe_assets.genomics.fasta import ReferenceGenome
from apoe_assets.genomics.vcf import read_genotypes
from apoe_assets.materialize import materialize_all
from apoe_assets.ml.folds import split
from apoe_assets.stats.eqtl import cis_window, map_cis_nominal
from apoe_assets.study import load_study
from apoe_assets_tests.studies import demo_copy

GENE = "APOE"
HELD_OUT = 0
SELECTION = dg.AssetSelection.assets("cis_eqtl").upstream()


def _materialise(study_file: Path) -> list[dg.ExecuteInProcessResult]:
    with dg.instance_for_test() as instance:
        results = materialize_all(build_definitions(load_study(study_file)), instance,
                                  report=lambda _: None, selection=SELECTION)
    assert all(r.success for r in results)
    return results


def _tables(study_file: Path) -> pd.DataFrame:
    return pd.read_parquet(Path(load_study(study_file).storage_root) / "cis_eqtl"
                           / f"{GENE}.parquet")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    study_file = demo_copy(tmp_path_factory.mktemp("eqtl"), genes=[GENE],
                           eqtl={"permutations": 50})
    _materialise(study_file)
    return study_file


def test_each_fold_table_is_a_scan_of_its_training_samples(demo: Path) -> None:
    study = load_study(demo)
    storage = Path(study.storage_root)
    folds = pd.read_parquet(storage / "cv_folds.parquet")["fold"]
    expression = pd.read_parquet(storage / "expression.parquet")
    covariates = pd.read_parquet(storage / "covariates.parquet")
    gene = study.gene_table.set_index("partition_key").loc[GENE]
    genotypes, _ = read_genotypes(study.genotype_file("chr19"), "chr19",
                                  ReferenceGenome(study.reference_fasta))
    window = cis_window(genotypes, gene, folds.index.tolist(), flank=study.cis_window)
    stored = _tables(demo)
    assert stored["fold"].isna().sum() > 1000  # the all-sample table
    for fold in sorted(folds.unique()):
        train = split(folds, fold)[0]
        direct = map_cis_nominal(window, expression.loc[gene["gene_id"]], covariates,
                                 gene_id=gene["gene_id"], tss=int(gene["tss"]),
                                 maf_threshold=study.eqtl.maf_threshold, samples=train)
        table = stored[stored["fold"] == fold].drop(columns="fold").reset_index(drop=True)
        pd.testing.assert_frame_equal(table, direct.table)


def _permute_held_out_expression(study_file: Path, folder: Path) -> Path:
    """A copy of the study whose expression of the held-out fold's samples is shuffled."""
    study = load_study(study_file)
    folds = pd.read_parquet(Path(study.storage_root) / "cv_folds.parquet")["fold"]
    held_out = split(folds, HELD_OUT)[1]
    bed = pd.read_csv(study.expression, sep="\t")
    rng = np.random.default_rng(5)
    bed[held_out] = bed[held_out].to_numpy()[:, rng.permutation(len(held_out))]
    path = folder / "expression.bed.gz"
    with gzip.open(path, "wt") as handle:
        bed.to_csv(handle, sep="\t", index=False)
    return demo_copy(folder, genes=[GENE], eqtl={"permutations": 50}, expression=str(path))


def test_held_out_expression_never_reaches_its_fold_weights(demo: Path, tmp_path: Path
                                                            ) -> None:
    changed = _permute_held_out_expression(demo, tmp_path)
    _materialise(changed)
    before, after = _tables(demo), _tables(changed)
    for fold in range(load_study(demo).folds):
        same = before[before["fold"] == fold].equals(after[after["fold"] == fold])
        assert same == (fold == HELD_OUT), f"fold {fold}"
    assert not before[before["fold"].isna()].equals(after[after["fold"].isna()])


def test_fingerprints_track_what_each_scan_used(demo: Path, tmp_path: Path) -> None:
    """Each stored scan's fingerprint changes exactly when its own inputs do: permuting the
    held-out fold's expression leaves that fold's training fingerprint as it was and changes
    only the ``expression`` digest of every other scan (whose samples include the permuted
    ones). Catches a fingerprint that hashes all samples' expression (then the held-out fold
    would look stale) or none (then nothing would)."""
    changed = _permute_held_out_expression(demo, tmp_path)
    _materialise(changed)
    before, after = _tables(demo).attrs["scans"], _tables(changed).attrs["scans"]
    assert set(before) == {"all", *map(str, range(load_study(demo).folds))}
    for name in before:
        differ = [k for k, v in before[name]["fingerprint"].items()
                  if after[name]["fingerprint"][k] != v]
        assert differ == ([] if name == str(HELD_OUT) else ["expression"]), name
