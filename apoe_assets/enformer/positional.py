"""Enformer's relative positional features: exponential, central-mask and gamma basis functions.

For a transformer over ``n`` positions the distances run from ``-(n - 1)`` to ``n - 1``
(``2n - 1`` rows). Each basis class contributes ``feature_size / 6`` functions of ``|distance|``;
the three classes are concatenated and then doubled with a copy multiplied by
``sign(distance)``, so the features see direction as well as distance (Avsec et al. 2021).

The gamma basis is normalised per feature across positions (each column peaks at 1), as
TensorFlow's reference does. It is computed here in float64 and rounded once: TensorFlow
evaluated it in float32, where the log-density terms (~3·10⁴ at full size) lose ~2·10⁻³ to
rounding, so its table differs from the exact function by that much (see the tests).
"""

from __future__ import annotations

import math

import numpy as np

BASIS_CLASSES = 3
"""Exponential, central mask, gamma."""

SYMMETRY_COPIES = 2
"""The features and their sign-flipped copy."""

MIN_HALF_LIFE_LOG2 = 3.0
"""The shortest exponential half-life is 2**3 positions."""

GAMMA_EPS = 1e-8
"""Added to the gamma densities before normalising (as in the reference)."""


def distances(length: int) -> np.ndarray:
    """Relative distances ``-(length - 1) … length - 1`` as float64 ``[2·length - 1]``."""
    return np.arange(-length + 1, length, dtype=np.float64)


def exponential_features(dist: np.ndarray, num: int, length: int) -> np.ndarray:
    """``exp(-ln2 · |d| / half_life)`` with half-lives ``2**linspace(3, log2(length), num)``."""
    half_life = 2.0 ** np.linspace(MIN_HALF_LIFE_LOG2, math.log2(length), num)
    return np.exp(-math.log(2.0) * np.abs(dist)[:, None] / half_life[None, :])


def central_mask_features(dist: np.ndarray, num: int) -> np.ndarray:
    """``1`` where ``|d| < 2**k - 1`` for ``k = 1 … num``, else ``0``."""
    widths = 2.0 ** np.arange(1, num + 1) - 1.0
    return (np.abs(dist)[:, None] < widths[None, :]).astype(np.float64)


def gamma_features(dist: np.ndarray, num: int, length: int) -> np.ndarray:
    """Gamma densities of ``|d|`` with means ``linspace(length/num, length, num)``.

    The standard deviation is ``length/(2num)``; each feature (column) is divided by its
    maximum over positions.
    """
    stddev = length / (2 * num)
    mean = np.linspace(length / num, length, num)
    concentration = (mean / stddev) ** 2
    rate = mean / stddev**2
    x = np.abs(dist)[:, None]
    with np.errstate(divide="ignore"):
        log_x = np.log(x)  # -inf at 0: the density vanishes there (concentration ≥ 4 > 1)
    log_norm = np.array([math.lgamma(c) for c in concentration]) - concentration * np.log(rate)
    log_density = (concentration - 1.0) * log_x - rate * x - log_norm
    density = np.exp(log_density) + GAMMA_EPS
    return density / density.max(axis=0, keepdims=True)


def relative_position_features(length: int, feature_size: int,
                               dtype: np.dtype | type = np.float32) -> np.ndarray:
    """All relative positional features, ``[2·length - 1, feature_size]``.

    Column blocks: exponential, central mask, gamma (``feature_size / 6`` each), then the same
    three multiplied by ``sign(distance)``.
    """
    per_class, remainder = divmod(feature_size, BASIS_CLASSES * SYMMETRY_COPIES)
    if remainder or per_class == 0:
        raise ValueError(f"feature_size {feature_size} must be a positive multiple of "
                         f"{BASIS_CLASSES * SYMMETRY_COPIES}")
    dist = distances(length)
    basis = np.concatenate([
        exponential_features(dist, per_class, length),
        central_mask_features(dist, per_class),
        gamma_features(dist, per_class, length),
    ], axis=-1)
    features = np.concatenate([basis, np.sign(dist)[:, None] * basis], axis=-1)
    return features.astype(dtype)
