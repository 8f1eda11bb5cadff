"""The model's configuration, shapes and building blocks."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from apoe_assets.enformer.model import (
    EnformerConfig,
    build,
    exponential_channels,
    init_params,
    param_shapes,
    random_params,
    relative_shift,
)
from apoe_assets_tests.requirements import require_module

FULL_PARAMETERS = 251_221_292  # enformer-pytorch's parameter count, BatchNorm buffers aside


def test_full_config() -> None:
    cfg = EnformerConfig.full()
    assert cfg.tower_channels == (768, 896, 1024, 1152, 1280, 1536)
    assert (cfg.bin_size, cfg.transformer_length, cfg.target_length) == (128, 1536, 896)
    assert cfg.value_size == 192 and cfg.num_relative_position_features == 192
    assert cfg.heads == {"human": 5313, "mouse": 1643}
    shapes = param_shapes(cfg)
    trainable = {k: s for k, s in shapes.items() if not k.endswith(("moving_mean",
                                                                    "moving_variance"))}
    assert sum(math.prod(s) for s in trainable.values()) == FULL_PARAMETERS
    assert shapes["enformer/transformer/layer_10/mha/rel_k/w"] == (192, 512)
    assert shapes["enformer/head_human/w"] == (3072, 5313)


def test_presets_keep_the_crop_fraction() -> None:
    small, tiny = EnformerConfig.small(), EnformerConfig.tiny()
    assert (small.channels, small.sequence_length, small.target_length) == (96, 24_576, 112)
    assert (tiny.channels, tiny.sequence_length, tiny.target_length) == (96, 6_144, 28)
    assert EnformerConfig.from_dict(small.to_dict()) == small


@pytest.mark.parametrize(("start", "end", "num", "divisor"),
                         [(768, 1536, 6, 128), (48, 96, 6, 16), (96, 192, 6, 16),
                          (24, 48, 6, 8), (64, 128, 6, 32)])
def test_channel_schedule_matches_peer(start: int, end: int, num: int, divisor: int) -> None:
    modeling = require_module("enformer_pytorch.modeling_enformer")
    assert list(exponential_channels(start, end, num, divisor)) == \
        modeling.exponential_linspace_int(start, end, num, divisor)


@pytest.mark.parametrize("changes", [
    dict(channels=100),                      # not a multiple of heads × 6
    dict(sequence_length=6_000),             # not whole bins
    dict(target_length=29),                  # odd crop
    dict(target_length=60),                  # longer than the transformer
    dict(channel_divisor=128),               # tower rounds to 0
    dict(output_heads=()),
])
def test_invalid_configs(changes: dict) -> None:
    with pytest.raises(ValueError, match="invalid EnformerConfig"):
        EnformerConfig.tiny().replace(**changes)


def test_relative_shift() -> None:
    """Output [i, j] holds the input column for distance j - i (column r ↔ r - (n-1))."""
    n = 7
    rel = np.random.default_rng(0).normal(size=(2, 3, n, 2 * n - 1)).astype(np.float32)
    shifted = np.asarray(relative_shift(jnp.asarray(rel)))
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    np.testing.assert_array_equal(shifted, rel[:, :, i, j - i + n - 1])
    one = np.ones((1, 1, 1, 1), np.float32)
    np.testing.assert_array_equal(relative_shift(jnp.asarray(one)), one)


def test_forward_shapes_and_intermediates() -> None:
    cfg = EnformerConfig.tiny()
    params = random_params(cfg, 0)
    x = jnp.zeros((2, cfg.sequence_length, 4)).at[:, :, 1].set(1.0)
    outputs, acts = jax.jit(build(cfg).apply, static_argnames="return_intermediates")(
        params, x, return_intermediates=True)
    assert {k: v.shape for k, v in outputs.items()} == {"human": (2, 28, 10),
                                                         "mouse": (2, 28, 6)}
    assert bool(jnp.all(outputs["human"] > 0))  # softplus
    expected = {"stem": (2, 3072, 48), "tower_5": (2, 48, 96), "transformer_1": (2, 48, 96),
                "transformer": (2, 48, 96), "crop": (2, 28, 96), "final": (2, 28, 192)}
    for name, shape in expected.items():
        assert acts[name].shape == shape, name
    with pytest.raises(ValueError, match="expected one-hot"):
        build(cfg).apply(params, jnp.zeros((1, 6_000, 4)))


def test_reference_initialisation() -> None:
    cfg = EnformerConfig(channels=48, num_transformer_layers=1, sequence_length=64,
                         target_length=4, channel_divisor=8, num_downsamples=3,
                         output_heads=(("human", 3),))
    assert cfg.tower_channels == (24, 48)
    params = init_params(cfg, 0)
    np.testing.assert_array_equal(params["enformer/stem/pool"]["w"], 2 * np.eye(24))
    np.testing.assert_array_equal(params["enformer/transformer/layer_0/mha/output"]["w"], 0.0)
    bn = params["enformer/final/batch_norm"]
    np.testing.assert_array_equal(bn["moving_variance"], 1.0)
    assert {f"{m}/{n}" for m, ps in params.items() for n in ps} == set(param_shapes(cfg))
