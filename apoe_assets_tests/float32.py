"""How far two float32 Enformer outputs reached by different paths may differ.

Exact equality of float32 results holds only for the same operation on the same data on the
same machine. Another batch composition, device count or CPU (XLA picks other kernels for
AVX2, AVX-512 or SSE4.2, and another SIMD width splits every sum differently) reorders the
sums inside each layer, and each reordering moves the result by a few units in the last place
(ulps). Through a network these disagreements add up layer by layer, so the tolerance grows
with the number of reductions a value passes through in sequence.
"""

from __future__ import annotations

import numpy as np

from apoe_assets.enformer.model import EnformerConfig

FLOAT32_EPS = float(np.finfo(np.float32).eps)
"""One ulp at 1.0 (2⁻²³ ≈ 1.19e-7): the relative spacing of float32 numbers."""
ULPS_PER_REDUCTION = 2
"""Relative disagreement one reduction (a convolution, matmul, norm or pooling sum) may add
when its terms are summed in another order, in ulps; layer outputs are normalised, so the
disagreement does not grow with their size."""
REDUCTIONS_PER_TOWER_BLOCK = 3
"""Convolution, residual pointwise convolution, attention pooling (the stem has the same)."""
REDUCTIONS_PER_TRANSFORMER_LAYER = 8
"""Attention: layer norm, q/k/v projection, logits, weighted sum, output projection; MLP:
layer norm and two linear layers."""
REDUCTIONS_AFTER_TRANSFORMER = 2
"""The final pointwise convolution and the output head."""


def network_depth(config: EnformerConfig) -> int:
    """Reductions an output passes through in sequence, input to head (39 for the demo and
    test models, 111 for the published one)."""
    blocks = config.num_downsamples  # the stem and num_downsamples - 1 tower blocks
    return (REDUCTIONS_PER_TOWER_BLOCK * blocks
            + REDUCTIONS_PER_TRANSFORMER_LAYER * config.num_transformer_layers
            + REDUCTIONS_AFTER_TRANSFORMER)


def network_rtol(config: EnformerConfig) -> float:
    """Relative tolerance between outputs of the same network computed along different paths:
    ``ULPS_PER_REDUCTION`` ulps per reduction, added over the depth (9.3e-6 for the demo and
    test models, 2.6e-5 for the published one)."""
    return ULPS_PER_REDUCTION * network_depth(config) * FLOAT32_EPS


def network_atol(config: EnformerConfig, expected: np.ndarray) -> float:
    """Absolute tolerance for a set of outputs (or sums of a few): ``network_rtol`` of their
    largest magnitude, since layer errors are relative to the activations' scale, not to each
    small output."""
    return network_rtol(config) * float(np.max(np.abs(expected)))


def assert_network_close(actual: np.ndarray, expected: np.ndarray,
                         config: EnformerConfig) -> None:
    """``actual`` equals ``expected`` up to :func:`network_atol`, with a message that gives
    the largest difference in ulps of the largest output."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    tolerance = network_atol(config, expected)
    worst = float(np.max(np.abs(actual.astype(np.float64) - expected)))
    ulp = FLOAT32_EPS * float(np.max(np.abs(expected)))
    assert worst <= tolerance, (f"largest difference {worst:.3g} = {worst / ulp:.1f} ulps, "
                                f"over the tolerance {tolerance:.3g} "
                                f"({tolerance / ulp:.0f} ulps)")


def recorded_tolerance(config: EnformerConfig, recorded: np.ndarray, decimals: int) -> float:
    """Absolute tolerance against outputs (or their sums over a few bins) that were computed on
    another machine and written with ``decimals`` decimals, like the demo's truth tables:
    :func:`network_atol` plus half the last written digit."""
    return network_atol(config, recorded) + 0.5 * 10.0**-decimals
