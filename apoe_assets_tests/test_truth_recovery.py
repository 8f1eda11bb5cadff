"""Demo-only truth: the planted truth reaches one asset, ``truth_recovery``, as its input
``planted_truth``, and nothing else; a study without ``truth:`` has neither. The recovery
table itself is checked on a hand-made case whose answers are written out below."""

from __future__ import annotations

import re
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest

import apoe_assets.assets as assets_package
from apoe_assets.assets.truth import PLANTED_TRUTH
from apoe_assets.definitions import build_definitions
from apoe_assets.genomics.truth import PlantedTruth, read_truth, recovery_table
from apoe_assets.study import DEMO_STUDY, load_study
from apoe_assets_tests.studies import write_tiny_study

GENOTYPE, ENFORMER, STACK = ("baseline_prs", "pt_prs"), ("enformer_linear",), "stack"


def _case() -> tuple[PlantedTruth, pd.DataFrame, dict[str, pd.DataFrame], pd.DataFrame]:
    planted = pd.DataFrame({"gene_id": ["G1", "G2", "G3", "G4"],
                            "h2_realised": [0.3, 0.2, 0.0, 0.1],
                            "enformer_realised": [0.1, 0.0, 0.0, 0.0],
                            "cross_gene_realised": [0.0, 0.05, 0.0, 0.0]}).set_index("gene_id")
    causal = pd.DataFrame({"gene_id": ["G1", "G2", "G2"], "variant_id": ["a2", "b3", "b9"],
                           "effect": [1.0, 0.5, -0.5]})
    genes = pd.DataFrame({"partition_key": ["A", "B", "C", "D"],
                          "gene_id": ["G1", "G2", "G3", "G4"]})
    scans = {
        # the causal a2 ties with a0 (listed first) for the lead
        "A": pd.DataFrame({"variant_id": ["a0", "a1", "a2", "a3"],
                           "pval_nominal": [1e-8, 0.5, 1e-8, 0.01]}),
        # b1 leads; the causal b3 ties with b2 for second; b9 was never tested
        "B": pd.DataFrame({"variant_id": ["b1", "b2", "b3"], "pval_nominal": [1e-6, 1e-5, 1e-5]}),
        "C": pd.DataFrame({"variant_id": ["c1"], "pval_nominal": [0.2]}),
    }
    comparison = pd.DataFrame({
        "gene": ["A"] * 4 + ["B"] * 2,
        "model": ["baseline_prs", "pt_prs", "enformer_linear", "stack", "baseline_prs",
                  "stacking_ridge"],
        "r2": [0.1, 0.25, 0.05, 0.3, -0.02, 0.4]})
    return PlantedTruth(planted, causal), genes, scans, comparison


def test_recovery_table_on_a_hand_made_case() -> None:
    """Lead, ranks (ties share the best; a causal variant tied for the lead counts as the
    lead), untested causal variants, best R² per model kind and genes without a scan (left
    out), each as worked out by hand."""
    table = recovery_table(*_case(), GENOTYPE, ENFORMER, STACK).set_index("gene")
    assert table.index.tolist() == ["A", "B", "C"]
    assert table.loc["A", ["lead_variant", "lead_is_causal", "best_causal_rank"]].tolist() == [
        "a0", True, 1.0]
    assert table.loc["B", ["lead_variant", "lead_is_causal", "best_causal_rank", "n_causal",
                           "causal_tested"]].tolist() == ["b1", False, 2.0, 2, 1]
    assert not table.loc["C", "lead_is_causal"] and np.isnan(table.loc["C", "best_causal_rank"])
    assert table.loc["A", ["r2_genotype", "r2_enformer", "r2_stack"]].tolist() == [0.25, 0.05,
                                                                                     0.3]
    assert table.loc["B", "r2_genotype"] == -0.02
    assert np.isnan(table.loc["B", "r2_enformer"]) and np.isnan(table.loc["B", "r2_stack"])
    assert table.loc["B", "h2_realised"] == 0.2 and table.loc["B", "cross_gene_realised"] == 0.05


def test_a_truth_folder_without_its_tables_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"lacks genes.tsv, causal_variants.tsv"):
        read_truth(tmp_path)


def test_only_truth_recovery_reads_the_planted_truth() -> None:
    """In the demo's graph ``planted_truth`` has one child, ``truth_recovery``; no other asset
    module reads the study's ``truth`` field (so no real asset can lean on it)."""
    graph = build_definitions(load_study(DEMO_STUDY)).resolve_asset_graph()
    assert graph.get(PLANTED_TRUTH).child_keys == {dg.AssetKey("truth_recovery")}
    readers = [p.name for p in Path(assets_package.__file__).parent.glob("*.py")
               if re.search(r"\.truth\b", p.read_text())]
    assert readers == ["truth.py"]


def test_a_study_without_truth_has_no_truth_assets(tmp_path: Path) -> None:
    study = load_study(write_tiny_study(tmp_path).study)
    assert study.truth is None
    keys = {k.to_user_string() for k in
            build_definitions(study).resolve_asset_graph().get_all_asset_keys()}
    assert not keys & {"planted_truth", "truth_recovery"}
