"""The simulator is a pure function of its arguments, and the bundled study is its output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from apoe_assets.demo import simulate_study
from apoe_assets.demo.__main__ import main
from apoe_assets_tests.demo.conftest import BUNDLED, SMALL_SAMPLES, SMALL_SEED
from apoe_assets_tests.demo.reading import snapshot

EXPECTED_FILES = {
    "README.md", "study.yaml", "annotation/genes.tsv", "expression/covariates.tsv",
    "expression/expression.bed.gz", "genotypes/chr19.vcf.gz", "genotypes/chr19.vcf.gz.tbi",
    "reference/chr19.fa.gz", "reference/chr19.fa.gz.fai", "reference/chr19.fa.gz.gzi",
    "truth/causal_variants.tsv", "truth/covariate_effects.tsv", "truth/genes.tsv",
    "truth/simulation.json",
}


def test_same_seed_gives_byte_identical_files(small_study: Path, tmp_path: Path) -> None:
    again = simulate_study(tmp_path / "again", seed=SMALL_SEED, n_samples=SMALL_SAMPLES,
                           threads=3).parent
    assert set(snapshot(again)) == EXPECTED_FILES
    assert snapshot(again) == snapshot(small_study)


def test_other_seed_gives_other_genotypes(small_study: Path, tmp_path: Path) -> None:
    other = simulate_study(tmp_path / "other", seed=SMALL_SEED + 1,
                           n_samples=SMALL_SAMPLES).parent
    ours, theirs = snapshot(small_study), snapshot(other)
    for name in ("genotypes/chr19.vcf.gz", "reference/chr19.fa.gz",
                 "expression/expression.bed.gz"):
        assert ours[name] != theirs[name], name


def _installed_versions() -> dict[str, str]:
    import msprime
    import numpy
    import tskit

    return {"msprime": msprime.__version__, "tskit": tskit.__version__,
            "numpy": numpy.__version__}


def test_bundled_study_is_the_default_regeneration(tmp_path: Path) -> None:
    recorded = json.loads((BUNDLED / "truth" / "simulation.json").read_text())["versions"]
    if recorded != _installed_versions():
        pytest.skip(f"data/demo was made with {recorded}, this environment has "
                    f"{_installed_versions()}: run `make data` to regenerate it")
    fresh = simulate_study(tmp_path / "demo").parent
    assert snapshot(fresh) == snapshot(BUNDLED)


def test_command_line_writes_all_genes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    main(["--out", str(tmp_path / "cli"), "--seed", "3", "--samples", "20", "--genes", "all"])
    study = yaml.safe_load((tmp_path / "cli" / "study.yaml").read_text())
    assert study["seed"] == 3
    assert len(study["genes"]) == 30
    assert "done" in capsys.readouterr().out


def test_too_few_samples_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least"):
        simulate_study(tmp_path / "tiny", n_samples=5)
