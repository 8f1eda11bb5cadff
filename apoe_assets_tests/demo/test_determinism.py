"""The simulator is a pure function of its arguments, and the bundled study is its output."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from apoe_assets.demo import simulate_study
from apoe_assets.demo.__main__ import main
from apoe_assets.demo.covariates import DECIMALS
from apoe_assets.demo.enformer_component import CROSS_GENE_TARGET, FEATURE_DECIMALS
from apoe_assets.enformer.model import EnformerConfig
from apoe_assets_tests.demo.conftest import (
    BUNDLED,
    SMALL_ENFORMER_GENES,
    SMALL_SAMPLES,
    SMALL_SEED,
)
from apoe_assets_tests.demo.reading import read_expression, read_truth, read_vcf, snapshot
from apoe_assets_tests.demo.test_enformer import assert_component_recovered
from apoe_assets_tests.demo.test_truth import cross_gene_component
from apoe_assets_tests.float32 import recorded_tolerance
from apoe_assets_tests.requirements import not_compared

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
SIMULATION_LIBRARIES = ("msprime", "tskit", "numpy")
"""Whose random streams make the genotypes and draws: another version may change the bytes."""


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


def test_components_take_no_random_draws(small_study: Path, tmp_path: Path) -> None:
    """The small study's Enformer component (APOE) and cross-gene component (APOE's feature in
    APOC1) change the expression of those two genes only: the same study without Enformer
    genes has every other gene's expression and truth row identical. Catches a component
    (e.g. a cross-gene share) drawn from the expression's random stream, which would shift
    the draws of every later gene."""
    plain = simulate_study(tmp_path / "plain", seed=SMALL_SEED, n_samples=SMALL_SAMPLES,
                           enformer_genes=()).parent
    symbols = read_truth(small_study, "genes.tsv").set_index("symbol")["gene_id"]
    carriers = [symbols[s] for s in (*SMALL_ENFORMER_GENES, CROSS_GENE_TARGET)]
    expression = [read_expression(s).set_index("gene_id") for s in (small_study, plain)]
    pd.testing.assert_frame_equal(expression[0].drop(index=carriers),
                                  expression[1].drop(index=carriers))
    for gene_id in carriers:
        assert not expression[0].loc[gene_id].equals(expression[1].loc[gene_id]), gene_id
    genes = [read_truth(s, "genes.tsv").set_index("gene_id") for s in (small_study, plain)]
    pd.testing.assert_frame_equal(genes[0].drop(index=carriers), genes[1].drop(index=carriers))
    for name in ("causal_variants.tsv", "covariate_effects.tsv"):
        pd.testing.assert_frame_equal(read_truth(small_study, name), read_truth(plain, name))


def _installed_versions() -> dict[str, str]:
    import jax
    import jaxlib
    import msprime
    import numpy
    import tskit

    return {"msprime": msprime.__version__, "tskit": tskit.__version__,
            "numpy": numpy.__version__, "jax": jax.__version__, "jaxlib": jaxlib.__version__}


def _assert_enformer_files_close(fresh: Path, bundled: Path) -> None:
    """The Enformer's float32 outputs are the one source of difference between two generations:
    the haplotype features agree within the demo network's tolerance, and every number
    derived from them moved exactly as the features imply (the component, and the cross-gene
    component of its target, is the standardised feature times √share, and enters the
    expression additively; no random draw depends on it). Rows of genes without a component
    and every other field are identical."""
    record = json.loads((bundled / "truth/simulation.json").read_text())
    stats = record["enformer"]["genes"]
    new, old = (read_truth(s, "enformer_features.tsv") for s in (fresh, bundled))
    numbers = ["haplotype_1", "haplotype_2", "feature", "component"]
    pd.testing.assert_frame_equal(new.drop(columns=numbers), old.drop(columns=numbers))
    feature = recorded_tolerance(EnformerConfig.small(), old[numbers[:2]].to_numpy(),
                                 FEATURE_DECIMALS)
    assert np.abs(new[numbers[:3]] - old[numbers[:3]]).to_numpy().max() <= feature
    for symbol, rows in new.groupby("symbol"):
        z = (rows["feature"] - rows["feature"].mean()) / rows["feature"].std(ddof=0)
        np.testing.assert_allclose(rows["component"], np.sqrt(stats[symbol]["share"]) * z,
                                   rtol=0, atol=1e-7)
    moved = (new.set_index(["gene_id", "sample"])["component"]
             - old.set_index(["gene_id", "sample"])["component"]).unstack()
    for gene_id in read_truth(bundled, "genes.tsv")["gene_id"]:
        cross = [cross_gene_component(s, gene_id) for s in (fresh, bundled)]
        if cross[1] is not None:
            moved = moved.add((cross[0] - cross[1]).to_frame(gene_id).T, fill_value=0)

    expression = [read_expression(s).set_index("gene_id").iloc[:, 3:] for s in (fresh, bundled)]
    gap = expression[0] - expression[1]
    rounding = 10.0**-DECIMALS  # both sides rounded to DECIMALS
    np.testing.assert_allclose(gap.loc[moved.index, moved.columns], moved, rtol=0,
                               atol=rounding + 1e-7)
    assert (gap.drop(index=moved.index) == 0).all().all()  # genes without a component

    # var(term) / var(y) and corr(genetic, term) move by at most ~2·|gap| / sd(y) each
    genes = [read_truth(s, "genes.tsv").set_index("gene_id") for s in (fresh, bundled)]
    ratios = ["h2_realised", "enformer_realised", "enformer_genetic_r", "cross_gene_realised",
              "cross_gene_genetic_r"]
    pd.testing.assert_frame_equal(genes[0].drop(columns=ratios), genes[1].drop(columns=ratios))
    pd.testing.assert_frame_equal(genes[0].drop(index=moved.index),
                                  genes[1].drop(index=moved.index))
    for gene_id in moved.index:
        atol = 4 * gap.loc[gene_id].abs().max() / expression[1].loc[gene_id].std() + 1e-6
        np.testing.assert_allclose(genes[0].loc[gene_id, ratios].astype(float),
                                   genes[1].loc[gene_id, ratios].astype(float), rtol=0,
                                   atol=atol)

    # the features' mean and SD move less than the features themselves; nothing else moves
    fresh_record = json.loads((fresh / "truth/simulation.json").read_text())
    for symbol, old_stats in stats.items():
        new_stats = fresh_record["enformer"]["genes"][symbol]
        for name in ("feature_mean", "feature_sd"):
            assert abs(new_stats.pop(name) - old_stats.pop(name)) <= feature, (symbol, name)
    assert fresh_record == record


@pytest.mark.slow
def test_bundled_study_is_the_default_regeneration(tmp_path: Path) -> None:
    """`make data` with the default arguments gives the bundled study: byte for byte where no
    number passes through the Enformer, within the demo network's float32 tolerance where one
    does (another CPU or XLA build sums in another order), and the planted component is found
    again in the regenerated expression. Catches a change to the simulator (a seed, a draw
    order, a format) that was not followed by `make data`."""
    recorded = json.loads((BUNDLED / "truth" / "simulation.json").read_text())["versions"]
    installed = _installed_versions()
    changed = [name for name in SIMULATION_LIBRARIES if recorded[name] != installed[name]]
    if changed:
        not_compared(f"bundled demo regeneration: data/demo was made with "
                     f"{ {n: recorded[n] for n in changed} }, this environment has "
                     f"{ {n: installed[n] for n in changed} }",
                     "install those versions, or run `make data` and review the diff")
    fresh = simulate_study(tmp_path / "demo").parent
    ours, bundled = snapshot(fresh), snapshot(BUNDLED)
    assert set(ours) == set(bundled) == EXPECTED_FILES
    differing = {name for name in ours if ours[name] != bundled[name]}
    assert differing <= ENFORMER_DERIVED, sorted(differing - ENFORMER_DERIVED)
    _assert_enformer_files_close(fresh, BUNDLED)
    assert_component_recovered(fresh, read_vcf(fresh / "genotypes/chr19.vcf.gz"))


def test_command_line_writes_all_genes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    main(["--out", str(tmp_path / "cli"), "--seed", "3", "--samples", "20", "--genes", "all",
          "--enformer-genes", "none"])
    study = yaml.safe_load((tmp_path / "cli" / "study.yaml").read_text())
    assert study["seed"] == 3
    assert len(study["genes"]) == 30
    assert "done" in capsys.readouterr().out
    genes = read_truth(tmp_path / "cli", "genes.tsv")
    assert (genes[["enformer_share", "cross_gene_share"]] == 0).all().all()
    assert len(read_truth(tmp_path / "cli", "enformer_features.tsv")) == 0
    # no Enformer gene, so no source for the cross-gene component
    assert json.loads((tmp_path / "cli" / "truth/simulation.json").read_text())["cross_gene"] == {}
    assert "No gene carries a cross-gene component" in (tmp_path / "cli" / "README.md").read_text()


def test_command_line_refuses_an_empty_enformer_gene_list(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "cli"), "--enformer-genes", ","])


def test_enformer_genes_must_be_study_genes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\['ERCC2'\] are not study genes"):
        simulate_study(tmp_path / "bad", n_samples=20, enformer_genes=("ERCC2",))


def test_too_few_samples_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least"):
        simulate_study(tmp_path / "tiny", n_samples=5)
