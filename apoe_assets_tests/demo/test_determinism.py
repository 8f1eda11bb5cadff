"""The simulator is a pure function of its arguments, and the bundled study is its output."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from apoe_assets.demo import simulate_study
from apoe_assets.demo.__main__ import main
from apoe_assets_tests.demo.conftest import (
    BUNDLED,
    SMALL_ENFORMER_GENES,
    SMALL_SAMPLES,
    SMALL_SEED,
)
from apoe_assets_tests.demo.reading import read_truth, snapshot

EXPECTED_FILES = {
    "README.md", "study.yaml", "annotation/genes.tsv", "expression/covariates.tsv",
    "expression/expression.bed.gz", "genotypes/chr19.vcf.gz", "genotypes/chr19.vcf.gz.tbi",
    "reference/chr19.fa.gz", "reference/chr19.fa.gz.fai", "reference/chr19.fa.gz.gzi",
    "truth/causal_variants.tsv", "truth/covariate_effects.tsv", "truth/genes.tsv",
    "truth/simulation.json", "truth/enformer_features.tsv", "enformer/weights.safetensors",
    "enformer/targets.txt",
}
ENFORMER_DERIVED = {"expression/expression.bed.gz", "truth/enformer_features.tsv",
                    "truth/genes.tsv", "truth/simulation.json"}
"""Files whose numbers pass through the Enformer's float32 arithmetic."""
FLOAT32_FEATURE_TOLERANCE = 1e-6
"""Haplotype features (≈ 2.5, sums of 3 float32 outputs) agree to this across CPUs."""


def test_same_seed_gives_byte_identical_files(small_study: Path, tmp_path: Path) -> None:
    again = simulate_study(tmp_path / "again", seed=SMALL_SEED, n_samples=SMALL_SAMPLES,
                           threads=3, enformer_genes=SMALL_ENFORMER_GENES).parent
    assert set(snapshot(again)) == EXPECTED_FILES
    assert snapshot(again) == snapshot(small_study)


def test_other_seed_gives_other_genotypes(small_study: Path, tmp_path: Path) -> None:
    other = simulate_study(tmp_path / "other", seed=SMALL_SEED + 1,
                           n_samples=SMALL_SAMPLES, enformer_genes=()).parent
    ours, theirs = snapshot(small_study), snapshot(other)
    for name in ("genotypes/chr19.vcf.gz", "reference/chr19.fa.gz",
                 "expression/expression.bed.gz", "enformer/weights.safetensors"):
        assert ours[name] != theirs[name], name


def _installed_versions() -> dict[str, str]:
    import jax
    import jaxlib
    import msprime
    import numpy
    import tskit

    return {"msprime": msprime.__version__, "tskit": tskit.__version__,
            "numpy": numpy.__version__, "jax": jax.__version__, "jaxlib": jaxlib.__version__}


@pytest.mark.slow
def test_bundled_study_is_the_default_regeneration(tmp_path: Path) -> None:
    recorded = json.loads((BUNDLED / "truth" / "simulation.json").read_text())["versions"]
    if recorded != _installed_versions():
        pytest.skip(f"data/demo was made with {recorded}, this environment has "
                    f"{_installed_versions()}: run `make data` to regenerate it")
    fresh = simulate_study(tmp_path / "demo").parent
    ours, bundled = snapshot(fresh), snapshot(BUNDLED)
    assert set(ours) == set(bundled) == EXPECTED_FILES
    differing = {name for name in ours if ours[name] != bundled[name]}
    assert differing <= ENFORMER_DERIVED, sorted(differing - ENFORMER_DERIVED)
    if differing:  # only the float32 arithmetic of this CPU can explain it
        columns = ["haplotype_1", "haplotype_2"]
        shift = np.abs(read_truth(fresh, "enformer_features.tsv")[columns].to_numpy()
                       - read_truth(BUNDLED, "enformer_features.tsv")[columns].to_numpy())
        assert shift.max() <= FLOAT32_FEATURE_TOLERANCE, shift.max()
        pytest.skip(f"{sorted(differing)} differ in the last digits: this CPU's float32 "
                    f"Enformer outputs differ from the recording machine's by up to "
                    f"{shift.max():.1e}; everything else is byte-identical")


def test_command_line_writes_all_genes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    main(["--out", str(tmp_path / "cli"), "--seed", "3", "--samples", "20", "--genes", "all",
          "--enformer-genes", "none"])
    study = yaml.safe_load((tmp_path / "cli" / "study.yaml").read_text())
    assert study["seed"] == 3
    assert len(study["genes"]) == 30
    assert "done" in capsys.readouterr().out
    assert (read_truth(tmp_path / "cli", "genes.tsv")["enformer_share"] == 0).all()
    assert len(read_truth(tmp_path / "cli", "enformer_features.tsv")) == 0


def test_command_line_refuses_an_empty_enformer_gene_list(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "cli"), "--enformer-genes", ","])


def test_enformer_genes_must_be_study_genes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\['ERCC2'\] are not study genes"):
        simulate_study(tmp_path / "bad", n_samples=20, enformer_genes=("ERCC2",))


def test_too_few_samples_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least"):
        simulate_study(tmp_path / "tiny", n_samples=5)
