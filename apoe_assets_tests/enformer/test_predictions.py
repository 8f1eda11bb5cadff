"""GenePredictions: distinct sequences stored once, the per-sample TSS feature, storage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from upath import UPath

from apoe_assets.enformer.predictions import assemble, distinct_sequences
from apoe_assets.resources import formats


def _manifest() -> pd.DataFrame:
    hashes = ["a", "b", "a", "c", "b", "b"]  # S1 (a, b), S2 (a, c), S3 (b, b)
    return pd.DataFrame({
        "sample": ["S1", "S1", "S2", "S2", "S3", "S3"], "haplotype": [1, 2] * 3,
        "record": [f"S{i // 2 + 1}_h{i % 2 + 1}" for i in range(6)], "hash": hashes,
        "length": 100})


def _predictions(combination: str = "mean"):
    haplotypes, representatives = distinct_sequences(_manifest())
    rng = np.random.default_rng(0)
    values = rng.random((len(representatives), 6, 2)).astype(np.float32)
    tracks = pd.DataFrame({"index": [4, 9], "description": ["CAGE:x", "CAGE:y"]})
    return assemble(haplotypes, values, tracks, np.arange(6), np.array([2, 3, 4]), combination)


def test_each_distinct_sequence_is_kept_once_in_first_seen_order() -> None:
    haplotypes, representatives = distinct_sequences(_manifest())
    assert representatives == ["S1_h1", "S1_h2", "S2_h2"]
    assert haplotypes["row"].tolist() == [0, 1, 0, 2, 1, 1]


@pytest.mark.parametrize("combination", ["mean", "sum", "max"])
def test_feature_sums_tss_bins_and_tracks_then_combines_haplotypes(combination: str) -> None:
    result = _predictions(combination)
    per_haplotype = result.per_haplotype()
    by_hand = per_haplotype[:, 2:5, :].sum(axis=(1, 2)).reshape(3, 2)
    np.testing.assert_allclose(result.features[["h1", "h2"]].to_numpy(), by_hand, rtol=1e-6)
    combine = {"mean": np.mean, "sum": np.sum, "max": np.max}[combination]
    np.testing.assert_allclose(result.features["feature"], combine(by_hand, axis=1), rtol=1e-6)
    assert result.features.index.tolist() == ["S1", "S2", "S3"]


def test_tss_bins_outside_the_kept_bins_are_an_error() -> None:
    haplotypes, representatives = distinct_sequences(_manifest())
    values = np.zeros((len(representatives), 2, 1), np.float32)
    with pytest.raises(ValueError, match=r"TSS bins \[7\]"):
        assemble(haplotypes, values, pd.DataFrame({"index": [0], "description": ["t"]}),
                 np.array([5, 6]), np.array([6, 7]))


def test_storage_round_trip(tmp_path: Path) -> None:
    result = _predictions()
    path = formats.save(result, UPath(tmp_path) / "APOE")
    assert path.name == "APOE.predictions"
    back = formats.load(UPath(tmp_path) / "APOE")
    np.testing.assert_array_equal(back.values, result.values)
    pd.testing.assert_frame_equal(back.features, result.features)
    pd.testing.assert_frame_equal(back.haplotypes, result.haplotypes)
    np.testing.assert_array_equal(back.tss_bins, result.tss_bins)


def test_same_sequence_centred_elsewhere_is_another_input() -> None:
    """Rows share a model input only when both hash and TSS index agree."""
    manifest = _manifest().assign(tss_index=[50, 50, 50, 50, 50, 49])
    haplotypes, representatives = distinct_sequences(manifest)
    assert representatives == ["S1_h1", "S1_h2", "S2_h2", "S3_h2"]
    assert haplotypes["row"].tolist() == [0, 1, 0, 2, 1, 3]
    with pytest.raises(ValueError, match="no hash column"):
        distinct_sequences(manifest.drop(columns="hash"))
