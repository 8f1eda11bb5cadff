"""Our Enformer against enformer-pytorch with the same (converted) random weights.

The peer's own gamma basis normalises along the wrong axis (per position, across features);
TensorFlow's — and ours — normalises per feature across positions. Where the peer would use its
formula (any length but the full 1536 bins), both sides are given the same features: the
peer's ``get_positional_features_gamma`` (looked up at call time) is patched with the TF-axis
formula. At full size the peer uses TensorFlow's own table (``use_tf_gamma=True``) and we use
our computation, unpatched.
"""

from __future__ import annotations

import time
from pathlib import Path

import jax
import pytest

from apoe_assets.enformer import debug
from apoe_assets.enformer.convert import convert, load_params
from apoe_assets.enformer.model import EnformerConfig
from apoe_assets_tests.enformer.peer import (
    modeling,
    random_one_hot,
    random_peer,
    save_checkpoint,
    tf_axis_gamma,
)

TOLERANCE = 1e-5
SMALL = dict(dim=96, depth=2, heads=8, target_length=28, dim_divisible_by=16,
             output_heads=dict(human=10, mouse=6), use_tf_gamma=False)


@pytest.fixture(autouse=True)
def highest_precision():
    previous = jax.config.jax_default_matmul_precision
    jax.config.update("jax_default_matmul_precision", "highest")
    yield
    jax.config.update("jax_default_matmul_precision", previous)


@pytest.fixture(scope="module")
def small_pair(tmp_path_factory: pytest.TempPathFactory):
    """The random peer and our converted params of the same weights."""
    folder = tmp_path_factory.mktemp("peer")
    peer = random_peer(seed=3, **SMALL)
    save_checkpoint(peer, folder / "ckpt")
    convert(folder / "ckpt", folder / "ours.safetensors")
    config, params = load_params(folder / "ours.safetensors")
    return peer, config, params


def _compare(peer, config, params, x) -> list[debug.LayerDiff]:
    return debug.compare_with_torch(config, params, peer, x)


def test_small_model_matches_peer(small_pair, monkeypatch: pytest.MonkeyPatch) -> None:
    """Relative error of every head ≤ 1e-5 (float32, highest matmul precision)."""
    peer, config, params = small_pair
    monkeypatch.setattr(modeling, "get_positional_features_gamma", tf_axis_gamma)
    x = random_one_hot(3, config.sequence_length, seed=11)
    diffs = _compare(peer, config, params, x)
    table = debug.report(diffs, TOLERANCE)
    print(f"\nsmall model (C={config.channels}, L={config.sequence_length}) vs "
          f"enformer-pytorch:\n{table}")
    assert debug.first_mismatch(diffs, TOLERANCE) is None, table
    heads = {d.name: d.relative_error for d in diffs if d.name.startswith("head_")}
    assert set(heads) == {"head_human", "head_mouse"}
    assert max(heads.values()) <= TOLERANCE


def test_demo_size_matches_peer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The demo's size (C=96, 2 layers, 24,576 bp, 112 bins) agrees as well."""
    monkeypatch.setattr(modeling, "get_positional_features_gamma", tf_axis_gamma)
    peer = random_peer(seed=4, dim=96, depth=2, heads=8, target_length=112, dim_divisible_by=16,
                       output_heads=dict(human=12), use_tf_gamma=False)
    save_checkpoint(peer, tmp_path / "ckpt")
    convert(tmp_path / "ckpt", tmp_path / "ours.safetensors")
    config, params = load_params(tmp_path / "ours.safetensors")
    assert config == EnformerConfig.small()
    diffs = _compare(peer, config, params, random_one_hot(2, config.sequence_length, seed=15))
    table = debug.report(diffs, TOLERANCE)
    print(f"\ndemo-size model vs enformer-pytorch:\n{table}")
    assert debug.first_mismatch(diffs, TOLERANCE) is None, table


def test_mismatch_is_located(small_pair) -> None:
    """Negative control: with the peer's own (mis-normalised) gamma the comparison fails, and
    the debug helper places the first mismatch at the first transformer layer."""
    peer, config, params = small_pair
    x = random_one_hot(1, config.sequence_length, seed=12)
    diffs = _compare(peer, config, params, x)
    first = debug.first_mismatch(diffs, TOLERANCE)
    assert first is not None and first.name == "transformer_0", debug.report(diffs, TOLERANCE)


def test_mapped_batch_norm_statistics_matter(small_pair, monkeypatch: pytest.MonkeyPatch
                                             ) -> None:
    """Swapping a BatchNorm moving variance with its scale breaks agreement at that layer."""
    peer, config, params = small_pair
    monkeypatch.setattr(modeling, "get_positional_features_gamma", tf_axis_gamma)
    swapped = {m: dict(v) for m, v in params.items()}
    bn = swapped["enformer/tower/block_2/pointwise/batch_norm"]
    bn["scale"], bn["moving_variance"] = bn["moving_variance"], bn["scale"]
    x = random_one_hot(1, config.sequence_length, seed=13)
    first = debug.first_mismatch(_compare(peer, config, swapped, x), TOLERANCE)
    assert first is not None and first.name == "tower_2"


@pytest.mark.slow
def test_full_model_matches_peer(tmp_path: Path) -> None:
    """Full size (C=1536, 11 layers, 196,608 bp), random weights, peer with TF's gamma table."""
    clock = [time.perf_counter()]

    def lap() -> float:
        clock.append(time.perf_counter())
        return clock[-1] - clock[-2]

    peer = random_peer(seed=5, use_tf_gamma=True)  # the published configuration
    save_checkpoint(peer, tmp_path / "ckpt")
    convert(tmp_path / "ckpt", tmp_path / "ours.safetensors")
    config, params = load_params(tmp_path / "ours.safetensors")
    setup = lap()
    assert (config.channels, config.sequence_length, config.target_length) == (
        1536, 196_608, 896)
    x = random_one_hot(1, config.sequence_length, seed=14)
    ours = debug.our_activations(config, params, x)
    ours_s = lap()
    theirs = debug.torch_activations(peer, x)
    theirs_s = lap()
    diffs = debug.compare(ours, theirs)
    table = debug.report(diffs, TOLERANCE)
    print(f"\nfull model vs enformer-pytorch (use_tf_gamma=True): build+save+convert+load "
          f"{setup:.0f} s, ours (compile+run) {ours_s:.0f} s, peer {theirs_s:.0f} s, total "
          f"{clock[-1] - clock[0]:.0f} s\n{table}")
    heads = [d.relative_error for d in diffs if d.name.startswith("head_")]
    assert len(heads) == 2
    assert max(heads) <= TOLERANCE, table
