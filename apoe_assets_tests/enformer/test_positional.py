"""Relative positional features, the gamma basis against TensorFlow's own table."""

from __future__ import annotations

import numpy as np
import pytest

from apoe_assets.enformer.positional import (
    distances,
    gamma_features,
    relative_position_features,
)
from apoe_assets_tests.requirements import reference_file, require_module

FULL_LENGTH = 1536
FULL_FEATURES = 192  # channels / heads at full size; 32 per basis class


def test_gamma_matches_tensorflow_table() -> None:
    """Max abs difference to TF's table (float32, [3071 positions, 32 features]).

    Ours is the exact function rounded once; TF evaluated it in float32, where log-density
    terms of ~3·10⁴ keep only ~2·10⁻³ absolute precision, so the table carries that much
    rounding noise (float32 NumPy/JAX/torch re-evaluations land 1.95·10⁻³ away as well).
    """
    table = np.load(reference_file("enformer/tf_gammas.npy"))
    assert table.shape == (2 * FULL_LENGTH - 1, FULL_FEATURES // 6)
    ours = gamma_features(distances(FULL_LENGTH), FULL_FEATURES // 6, FULL_LENGTH)
    diff = np.abs(ours.astype(np.float32) - table)
    print(f"\ngamma vs tf_gammas.npy: max abs diff {diff.max():.3e}, "
          f"max rel diff {(diff / table).max():.3e}, mean abs diff {diff.mean():.3e}")
    assert diff.max() < 2.6e-3
    assert (diff / table).max() < 3.0e-3
    # normalised like TF (per feature across positions), not per position
    np.testing.assert_array_equal(ours.max(axis=0), 1.0)
    assert ours.max(axis=1).min() < 0.5


def test_layout_and_symmetry() -> None:
    n, f = 40, 24
    features = relative_position_features(n, f)
    assert features.shape == (2 * n - 1, f) and features.dtype == np.float32
    d = distances(n)
    half = f // 2
    np.testing.assert_array_equal(features[:, half:], np.sign(d)[:, None] * features[:, :half])
    np.testing.assert_array_equal(features[::-1, :half], features[:, :half])  # |d| only
    # central mask: 1 where |d| < 2**k - 1
    mask = features[:, f // 6:2 * f // 6]
    np.testing.assert_array_equal(mask[:, 0], (np.abs(d) < 1).astype(np.float32))
    np.testing.assert_array_equal(mask[:, 2], (np.abs(d) < 7).astype(np.float32))
    with pytest.raises(ValueError, match="multiple of 6"):
        relative_position_features(n, 20)


def test_exponential_and_mask_match_peer() -> None:
    """The non-gamma classes equal enformer-pytorch's (whose gamma differs by axis)."""
    torch = require_module("torch")
    modeling = require_module("enformer_pytorch.modeling_enformer")
    n, f = 48, 12
    theirs = modeling.get_positional_embed(n, f, torch.device("cpu"), False).numpy()
    ours = relative_position_features(n, f)
    per = f // 6
    for block in (0, 1, 3, 4):  # exponential, mask and their signed copies
        cols = slice(block * per, (block + 1) * per)
        np.testing.assert_allclose(ours[:, cols], theirs[:, cols], rtol=1e-6, atol=1e-7)
    del torch
