"""Bad input: a clear error naming the file and the record or field, and the earlier good
materialisation left exactly as it was."""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import yaml

from apoe_assets.genomics.bgzf import write_bgzf
from apoe_assets.genomics.errors import InputError
from apoe_assets.resources.formats import read_genotypes
from apoe_assets.study import StudyError, load_study
from apoe_assets_tests.conftest import failure_message, materialise, snapshot
from apoe_assets_tests.studies import (
    Record,
    TinyStudy,
    default_records,
    vcf_text,
    write_tiny_study,
    write_vcf,
)


def _rewrite_vcf(tiny: TinyStudy, edit: Callable[[str], str], index: bool = True) -> None:
    text = edit(vcf_text(tiny.records, tiny.reference))
    for suffix in (".tbi", ".csi"):
        Path(f"{tiny.vcf}{suffix}").unlink(missing_ok=True)
    write_vcf(tiny.vcf, text, index=index)


def _set_study(tiny: TinyStudy, **fields: object) -> None:
    study = yaml.safe_load(tiny.study.read_text())
    tiny.study.write_text(yaml.safe_dump({**study, **fields}, sort_keys=False))


def _drop_vcf(tiny: TinyStudy) -> None:
    tiny.vcf.unlink()


def _drop_index(tiny: TinyStudy) -> None:
    Path(f"{tiny.vcf}.tbi").unlink()


def _no_samples(tiny: TinyStudy) -> None:
    def strip(text: str) -> str:
        return "\n".join("\t".join(line.split("\t")[:8]) if not line.startswith("##") else line
                         for line in text.splitlines()) + "\n"
    _rewrite_vcf(tiny, strip)


def _truncated_line(tiny: TinyStudy) -> None:
    """The line at 1:5200 cut after ALT, as a partial write leaves it."""
    _rewrite_vcf(tiny, lambda text: text.replace("\t.\tPASS\t.\tGT\t1|2\t0|0\t2|2\t0|1\t./.\t1/0",
                                                 "", 1))


def _missing_genotype_columns(tiny: TinyStudy) -> None:
    _rewrite_vcf(tiny, lambda text: text.replace("\t./.\t1/0", "", 1))


def _truncated_vcf(tiny: TinyStudy) -> None:
    data = tiny.vcf.read_bytes()
    tiny.vcf.write_bytes(data[: len(data) // 2])


def _ref_mismatch(tiny: TinyStudy) -> None:
    records = default_records(tiny.reference)
    wrong = "A" if tiny.reference[5_000] != ord("A") else "C"
    records[1] = Record(5_001, ["G" if wrong != "G" else "T"], records[1].genotypes, ref=wrong)
    tiny.records = records
    _rewrite_vcf(tiny, lambda text: text)


def _duplicate_samples(tiny: TinyStudy) -> None:
    _rewrite_vcf(tiny, lambda text: text.replace("\ts2\t", "\ts1\t", 1))


def _no_shared_samples(tiny: TinyStudy) -> None:
    bed = tiny.folder / "expression.bed.gz"
    table = pd.read_csv(bed, sep="\t")
    table.columns = [*table.columns[:4], *[f"x{c}" for c in table.columns[4:]]]
    write_bgzf(bed, table.to_csv(sep="\t", index=False).encode())


def _nan_covariate_sample(tiny: TinyStudy) -> None:
    path = tiny.folder / "covariates.tsv"
    path.write_text(path.read_text().replace("\ts6", "\ts6_renamed", 1))


def _unknown_sample(tiny: TinyStudy) -> None:
    _set_study(tiny, samples=["s1", "s2", "nobody"])


def _too_many_folds(tiny: TinyStudy) -> None:
    _set_study(tiny, folds=7)


CASES = {
    "fewer samples than folds": (_too_many_folds, ["6 samples cannot fill 7 folds"]),
    "requested sample not in the VCF": (_unknown_sample, ["genotypes.vcf.gz", "nobody",
                                                          "not in the VCF"]),
    # name: (break the study, asset expected to fail, texts the error must contain)
    "missing VCF": (_drop_vcf, ["genotypes.vcf.gz", "VCF not found"]),
    "VCF without index": (_drop_index, ["genotypes.vcf.gz", "tabix -p vcf"]),
    "VCF with no samples": (_no_samples, ["genotypes.vcf.gz", "no samples"]),
    "truncated VCF line": (_truncated_line, ["genotypes.vcf.gz", "after 1:5001", "malformed"]),
    "too few genotype columns": (_missing_genotype_columns, ["genotypes.vcf.gz",
                                                             "after 1:5001"]),
    "truncated VCF": (_truncated_vcf, ["genotypes.vcf.gz"]),
    "REF mismatch": (_ref_mismatch, ["genotypes.vcf.gz", "chr1:5001", "1 records have a REF",
                                     "ref_mismatch: drop"]),
    "duplicate sample IDs": (_duplicate_samples, ["genotypes.vcf.gz", "duplicate sample",
                                                  "s1"]),
    "no expression sample genotyped": (_no_shared_samples, ["expression.bed.gz",
                                                            "none of the 7"]),
    "covariates lack a sample": (_nan_covariate_sample, ["covariates.tsv", "s6"]),
}


@pytest.fixture(scope="module")
def materialised(tmp_path_factory: pytest.TempPathFactory) -> TinyStudy:
    """A tiny study with its good outputs, materialised once for every case (its paths are
    relative to its folder, so a copy of the folder is the same study with the same
    outputs)."""
    good = write_tiny_study(tmp_path_factory.mktemp("good") / "study")
    with dg.instance_for_test() as instance:
        assert all(r.success for r in materialise(good.study, instance))
    return good


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_fails_clearly_and_keeps_good_outputs(case: str, materialised: TinyStudy,
                                                        tmp_path: Path,
                                                        instance: dg.DagsterInstance) -> None:
    tiny = dataclasses.replace(materialised, folder=tmp_path / "study")
    shutil.copytree(materialised.folder, tiny.folder)
    before = snapshot(tiny.storage)
    assert before  # the good outputs are there to keep
    breaker, expected = CASES[case]
    breaker(tiny)
    results = materialise(tiny.study, instance)
    assert not results[-1].success
    message = failure_message(results)
    for text in expected:
        assert text in message, f"{text!r} not in error:\n{message}"
    assert snapshot(tiny.storage) == before  # nothing half-written, nothing replaced
    assert instance.get_runs()


def test_ref_mismatch_drop_policy_drops_and_counts(tiny: TinyStudy,
                                                   instance: dg.DagsterInstance) -> None:
    _ref_mismatch(tiny)
    _set_study(tiny, ref_mismatch="drop")
    results = materialise(tiny.study, instance)
    assert all(r.success for r in results)
    stored = read_genotypes(tiny.storage / "genotypes" / "chr1.genotypes")
    assert not stored.variants["pos"].eq(5_001).any()
    events = [e for r in results for e in r.get_asset_materialization_events()
              if e.asset_key == dg.AssetKey("genotypes")]
    assert events[0].materialization.metadata["ref_mismatches"].value == 1


@pytest.mark.parametrize(("edit", "expected"), [
    ({"genes": ["GENE_A", "NOT_A_GENE"]}, ["genes.tsv", "NOT_A_GENE"]),
    ({"window_length": "wide"}, ["study.yaml", "window_length"]),
    ({"ref_mismatch": "ignore"}, ["study.yaml", "ref_mismatch"]),
    ({"unknown_field": 1}, ["study.yaml", "unknown_field"]),
])
def test_bad_study_file_names_the_field(tiny: TinyStudy, edit: dict, expected: list[str]
                                        ) -> None:
    _set_study(tiny, **edit)
    with pytest.raises((StudyError, InputError)) as error:
        load_study(tiny.study).gene_table  # noqa: B018 - resolving genes is the check
    for text in expected:
        assert text in str(error.value)


def test_invalid_yaml_names_the_file(tiny: TinyStudy) -> None:
    tiny.study.write_text("name: [unclosed\n")
    with pytest.raises(StudyError, match=r"study\.yaml: invalid YAML"):
        load_study(tiny.study)


def test_requested_samples_subset_every_table(tiny: TinyStudy,
                                              instance: dg.DagsterInstance) -> None:
    _set_study(tiny, samples=["s5", "s2", "s3"], folds=3)
    assert all(r.success for r in materialise(tiny.study, instance))
    stored = read_genotypes(tiny.storage / "genotypes" / "chr1.genotypes")
    assert stored.samples == ["s2", "s3", "s5"]  # VCF order
    expression = pd.read_parquet(tiny.storage / "expression.parquet")
    assert list(expression.columns) == ["s2", "s3", "s5"]
