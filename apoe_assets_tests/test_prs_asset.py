"""prs_scores / prs_weights on the demo study, materialised for real: the stored tables are what
the core computes, the stored weights reproduce the stored predictions, the metadata carries
the thresholds and R², the eQTL scans carry their fingerprints and data version, and a stale
eQTL table stops the run without touching earlier outputs."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from apoe_assets.definitions import build_definitions
from apoe_assets.materialize import materialize_all
from apoe_assets.ml.gene_models import MODELS, WEIGHT_COLUMNS
from apoe_assets.stats.prs import score
from apoe_assets.study import load_study
from apoe_assets_tests.conftest import failure_message, snapshot
from apoe_assets_tests.ml.demo import Demo, shared_demo
from apoe_assets_tests.studies import demo_copy

GENE = "NECTIN2"
PRS_ASSETS = ("prs_scores", "prs_weights", "prs_fold_scores")
SELECTION = dg.AssetSelection.assets(*PRS_ASSETS).upstream()
REPRODUCE_TOLERANCE = 1e-9


def _materialise(study_file: Path, selection: dg.AssetSelection = SELECTION
                 ) -> list[dg.ExecuteInProcessResult]:
    with dg.instance_for_test() as instance:
        return materialize_all(build_definitions(load_study(study_file)), instance,
                               report=lambda _: None, selection=selection)


@pytest.fixture(scope="module")
def materialised(tmp_path_factory: pytest.TempPathFactory
                 ) -> tuple[Path, list[dg.ExecuteInProcessResult]]:
    study_file = demo_copy(tmp_path_factory.mktemp("prs"), genes=[GENE],
                           eqtl={"permutations": 20})
    results = _materialise(study_file)
    assert all(r.success for r in results)
    return study_file, results


@pytest.fixture(scope="module")
def demo() -> Demo:
    return shared_demo()


def _stored(study_file: Path, asset: str) -> pd.DataFrame:
    return pd.read_parquet(Path(load_study(study_file).storage_root) / asset / f"{GENE}.parquet")


def test_stored_predictions_are_the_core_result(materialised, demo: Demo) -> None:
    direct = demo.models(GENE)
    stored = _stored(materialised[0], "prs_scores")
    assert list(stored.columns) == ["fold", "observed", *MODELS]
    pd.testing.assert_frame_equal(stored, direct.predictions)
    pd.testing.assert_frame_equal(_stored(materialised[0], "prs_weights"),
                                  direct.weight_table())
    pd.testing.assert_frame_equal(_stored(materialised[0], "prs_fold_scores"),
                                  direct.stacking_scores())


def test_stored_weights_reproduce_the_predictions(materialised, demo: Demo) -> None:
    """intercept + scale × Σ weight × dosage (missing → mean_dosage) over the fold's stored
    weights gives each held-out sample's stored prediction, for every model and fold."""
    scores = _stored(materialised[0], "prs_scores")
    weights = _stored(materialised[0], "prs_weights")
    assert list(weights.columns) == WEIGHT_COLUMNS
    window = demo.window(GENE)
    row_of = {v: i for i, v in enumerate(window.variants["variant_id"])}
    for (fold, model), part in weights.groupby(["fold", "model"]):
        test = scores.index[scores["fold"] == fold].tolist()
        used = part.dropna(subset=["variant_id"])
        dosages = window.subset(test)[[row_of[v] for v in used["variant_id"]]]
        total = score(dosages, used["weight"].to_numpy(), used["mean_dosage"].to_numpy())
        rebuilt = part["intercept"].iloc[0] + part["scale"].iloc[0] * total
        np.testing.assert_allclose(rebuilt, scores.loc[test, model], rtol=0,
                                   atol=REPRODUCE_TOLERANCE, err_msg=f"{model} fold {fold}")
    baseline = weights[weights["model"] == "baseline_prs"]
    tested = {f.fold: len(f.eqtl.rows) for f in demo.models(GENE).folds}
    assert baseline.groupby("fold").size().to_dict() == tested  # every tested SNP weighted


def test_metadata_carries_thresholds_and_r2(materialised, demo: Demo) -> None:
    events = {e.asset_key.to_user_string(): e.materialization.metadata
              for r in materialised[1] for e in r.get_asset_materialization_events()}
    metadata = events["prs_scores"]
    direct = demo.models(GENE)
    summary, metrics = direct.fold_summary(), direct.metrics()
    assert metadata["pt_thresholds"].value == ", ".join(
        f"{f}: {t:g}" for f, t in summary["pt_threshold"].items())
    for model in MODELS:
        assert metadata[f"r2_{model}"].value == pytest.approx(metrics.loc[model, "r2"])
        assert model in metadata["metrics"].value
    assert "pt_threshold" in metadata["folds"].value
    # the demo's planted truth reaches truth_recovery only, never a real asset's metadata
    assert not {"h2_planted", "h2_realised"} & set(metadata)
    assert metadata["prediction_plot"].value.startswith("![")
    assert "prs_weights" in events


def _outputs(storage: Path) -> dict[str, str]:
    return {f"{asset}/{name}": digest for asset in PRS_ASSETS
            for name, digest in snapshot(storage / asset).items()}


def test_stale_eqtl_table_fails_and_keeps_outputs(materialised) -> None:
    """The study's MAF threshold changes after ``cis_eqtl`` was stored and only the PRS assets
    are re-run: the stored fold scans' fingerprints no longer match, so ``prs_scores`` stops
    with an error naming the fold and what differs (settings), without rescanning, and the
    stored outputs stay as they were. Catches reuse without the fingerprint check (the PRS
    would quietly be weighted by scans made with the old filter)."""
    study_file = materialised[0]
    storage = Path(load_study(study_file).storage_root)
    before = _outputs(storage)
    demo_copy(study_file.parent, genes=[GENE], eqtl={"permutations": 20, "maf_threshold": 0.02})
    try:
        results = _materialise(study_file, dg.AssetSelection.assets(*PRS_ASSETS))
    finally:
        demo_copy(study_file.parent, genes=[GENE], eqtl={"permutations": 20})
    assert not results[-1].success
    message = failure_message(results)
    assert "all samples: the stored eQTL table was made from other settings" in message
    assert "re-materialise cis_eqtl" in message
    assert _outputs(storage) == before
