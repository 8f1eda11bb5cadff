"""Enformer (Avsec et al. 2021) in Haiku, inference only, one code path for every size.

Input: one-hot DNA ``[B, L, 4]`` (A, C, G, T). Trunk: stem → conv tower → transformer → crop →
final pointwise block; heads: ``softplus(Linear)`` per organism. The structure and constants
follow DeepMind's Sonnet reference; dropout exists only in training and is absent here.
BatchNorm uses its moving statistics, held as ordinary parameters (never updated).

Parameter names (``module/param``) are what :mod:`apoe_assets.enformer.convert` writes, e.g.
``enformer/stem/conv/w`` ``[15, 4, C/2]`` or ``enformer/transformer/layer_0/mha/q/w``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

from apoe_assets.enformer.positional import (
    BASIS_CLASSES,
    SYMMETRY_COPIES,
    relative_position_features,
)

Array = jax.Array
Params = Mapping[str, Mapping[str, Array]]

# Constants of the reference architecture.
STEM_KERNEL = 15
TOWER_KERNEL = 5
POOL_SIZE = 2
"""Attention pooling combines pairs of neighbours (AttentionPool relies on pairs)."""
BATCH_NORM_EPS = 1e-5
LAYER_NORM_EPS = 1e-5
GELU_SHARPNESS = 1.702
POOL_INIT_GAIN = 2.0
MLP_EXPANSION = 2
FINAL_EXPANSION = 2
ALPHABET = 4
"""One-hot channels A, C, G, T."""
FULL_CROP_FRACTION = 896 / 1536
"""The full model keeps the central 896 of 1536 bins; small presets keep the same fraction."""

HUMAN_TRACKS = 5313
MOUSE_TRACKS = 1643


def exponential_channels(start: int, end: int, num: int, divisor: int) -> tuple[int, ...]:
    """``num`` channel counts spaced geometrically from ``start`` to ``end``, each rounded to a
    multiple of ``divisor`` (Python's round half to even, as the reference)."""
    if num == 1:
        return (int(round(end / divisor) * divisor),)
    ratio = (end / start) ** (1.0 / (num - 1))
    return tuple(int(round(start * ratio**i / divisor) * divisor) for i in range(num))


@dataclass(frozen=True)
class EnformerConfig:
    """Sizes of one Enformer; ``full()`` is the published model."""

    channels: int = 1536
    num_transformer_layers: int = 11
    num_heads: int = 8
    key_size: int = 64
    sequence_length: int = 196_608
    target_length: int = 896
    channel_divisor: int = 128
    """Tower channels are rounded to multiples of this (enformer-pytorch ``dim_divisible_by``)."""
    num_downsamples: int = 7
    """Stem pool plus tower blocks; one output bin is ``2**num_downsamples`` bp."""
    output_heads: tuple[tuple[str, int], ...] = (("human", HUMAN_TRACKS), ("mouse", MOUSE_TRACKS))

    def __post_init__(self) -> None:
        problems = []
        if self.channels % 2 or self.channels <= 0:
            problems.append(f"channels {self.channels} must be positive and even")
        features = self.num_heads * BASIS_CLASSES * SYMMETRY_COPIES
        if self.channels % features:
            problems.append(f"channels {self.channels} must be a multiple of num_heads × 6 = "
                            f"{features} (relative position features per head)")
        if self.num_downsamples < 2:
            problems.append("num_downsamples must be at least 2 (stem pool + one tower block)")
        elif self.sequence_length % self.bin_size or self.sequence_length <= 0:
            problems.append(f"sequence_length {self.sequence_length} must be a positive "
                            f"multiple of the bin size {self.bin_size}")
        else:
            excess = self.transformer_length - self.target_length
            if self.target_length <= 0 or excess < 0 or excess % 2:
                problems.append(f"target_length {self.target_length} must be positive, at most "
                                f"{self.transformer_length} bins and differ from it by an even "
                                "number (symmetric crop)")
            tower = self.tower_channels
            if min(tower) <= 0 or tower[-1] != self.channels:
                problems.append(f"tower channels {tower} (divisor {self.channel_divisor}) must "
                                f"be positive and end at channels {self.channels}")
        if not self.output_heads or any(n <= 0 for _, n in self.output_heads):
            problems.append(f"output_heads {self.output_heads} must be non-empty, sizes > 0")
        if problems:
            raise ValueError("invalid EnformerConfig: " + "; ".join(problems))

    @property
    def bin_size(self) -> int:
        """Base pairs per output bin (128 at full size)."""
        return POOL_SIZE**self.num_downsamples

    @property
    def transformer_length(self) -> int:
        """Bins entering the transformer (1536 at full size)."""
        return self.sequence_length // self.bin_size

    @property
    def tower_channels(self) -> tuple[int, ...]:
        """Output channels of each conv-tower block (768 … 1536 at full size)."""
        return exponential_channels(self.channels // 2, self.channels,
                                    self.num_downsamples - 1, self.channel_divisor)

    @property
    def value_size(self) -> int:
        """Value width per attention head."""
        return self.channels // self.num_heads

    @property
    def num_relative_position_features(self) -> int:
        """Relative positional features (all basis classes, both sign copies)."""
        return self.channels // self.num_heads

    @property
    def heads(self) -> dict[str, int]:
        """Output tracks per organism head."""
        return dict(self.output_heads)

    def replace(self, **changes: Any) -> EnformerConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (heads as a mapping)."""
        fields = dataclasses.asdict(self)
        fields["output_heads"] = dict(self.output_heads)
        return fields

    @classmethod
    def from_dict(cls, fields: Mapping[str, Any]) -> EnformerConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(fields) - known
        if unknown:
            raise ValueError(f"unknown EnformerConfig fields: {sorted(unknown)}")
        fields = dict(fields)
        if "output_heads" in fields:
            heads = fields["output_heads"]
            items = heads.items() if isinstance(heads, Mapping) else heads
            fields["output_heads"] = tuple((str(k), int(v)) for k, v in items)
        return cls(**fields)

    @classmethod
    def full(cls) -> EnformerConfig:
        """The published model: C = 1536, 11 layers, 196,608 bp in, 896 bins out."""
        return cls()

    @classmethod
    def small(cls, output_heads: tuple[tuple[str, int], ...] = (("human", 12),)
              ) -> EnformerConfig:
        """Demo size: C = 96, 2 layers, 24,576 bp in (192 bins), 112 bins out."""
        return cls.scaled(channels=96, num_transformer_layers=2, transformer_length=192,
                          output_heads=output_heads)

    @classmethod
    def tiny(cls, output_heads: tuple[tuple[str, int], ...] = (("human", 10), ("mouse", 6))
             ) -> EnformerConfig:
        """Test size: C = 96, 2 layers, 6,144 bp in (48 bins), 28 bins out."""
        return cls.scaled(channels=96, num_transformer_layers=2, transformer_length=48,
                          output_heads=output_heads)

    @classmethod
    def scaled(cls, channels: int, num_transformer_layers: int, transformer_length: int,
               output_heads: tuple[tuple[str, int], ...], channel_divisor: int = 16,
               ) -> EnformerConfig:
        """A smaller model whose crop keeps the full model's fraction of bins (896/1536)."""
        target = round(transformer_length * FULL_CROP_FRACTION)
        target -= (transformer_length - target) % 2
        return cls(channels=channels, num_transformer_layers=num_transformer_layers,
                   sequence_length=transformer_length * POOL_SIZE**7, target_length=target,
                   channel_divisor=channel_divisor, output_heads=output_heads)


# Building blocks -------------------------------------------------------------------------------

def gelu(x: Array) -> Array:
    """The reference's GELU approximation ``x · sigmoid(1.702 x)``."""
    return x * jax.nn.sigmoid(GELU_SHARPNESS * x)


class BatchNorm(hk.Module):
    """Inference BatchNorm over the last axis with moving statistics (computed in float32)."""

    def __call__(self, x: Array) -> Array:
        c = x.shape[-1]
        scale = hk.get_parameter("scale", [c], init=jnp.ones)
        offset = hk.get_parameter("offset", [c], init=jnp.zeros)
        mean = hk.get_parameter("moving_mean", [c], init=jnp.zeros)
        variance = hk.get_parameter("moving_variance", [c], init=jnp.ones)
        f32 = jnp.float32
        inv = scale.astype(f32) * jax.lax.rsqrt(variance.astype(f32) + BATCH_NORM_EPS)
        shift = offset.astype(f32) - mean.astype(f32) * inv
        return (x.astype(f32) * inv + shift).astype(x.dtype)


class LayerNorm(hk.Module):
    """LayerNorm over the last axis with scale and offset (computed in float32)."""

    def __call__(self, x: Array) -> Array:
        c = x.shape[-1]
        scale = hk.get_parameter("scale", [c], init=jnp.ones)
        offset = hk.get_parameter("offset", [c], init=jnp.zeros)
        h = x.astype(jnp.float32)
        mean = h.mean(-1, keepdims=True)
        variance = jnp.square(h - mean).mean(-1, keepdims=True)
        h = (h - mean) * jax.lax.rsqrt(variance + LAYER_NORM_EPS)
        return (h * scale.astype(jnp.float32) + offset.astype(jnp.float32)).astype(x.dtype)


class ConvBlock(hk.Module):
    """BatchNorm → GELU → Conv1D (same padding)."""

    def __init__(self, channels: int, kernel: int, name: str | None = None):
        super().__init__(name=name)
        self.channels = channels
        self.kernel = kernel

    def __call__(self, x: Array) -> Array:
        h = gelu(BatchNorm(name="batch_norm")(x))
        return hk.Conv1D(self.channels, self.kernel, padding="SAME", name="conv")(h)


class AttentionPool(hk.Module):
    """Softmax pooling of each pair of neighbours (``POOL_SIZE`` = 2) with per-channel logits
    ``x · W``.

    For a pair (``POOL_SIZE`` = 2) the softmax weight of the first is
    ``sigmoid(l₀ − l₁) = sigmoid((x₀ − x₁) · W)``, so the output ``x₁ + w₀ (x₀ − x₁)`` needs one
    matrix product per pair instead of one per position, and no reduction over a size-2 axis
    (the step XLA's CPU backend runs slowest). The same function, in about a third of the time.
    """

    def __call__(self, x: Array) -> Array:
        b, n, c = x.shape
        w = hk.get_parameter("w", [c, c], x.dtype,
                             init=lambda s, d: POOL_INIT_GAIN * jnp.eye(s[0], dtype=d))
        pairs = x.reshape(b, n // POOL_SIZE, POOL_SIZE * c)
        first, second = pairs[..., :c], pairs[..., c:]
        difference = first - second
        logit = jnp.einsum("bnc,cd->bnd", difference, w)
        weight = jax.nn.sigmoid(logit.astype(jnp.float32)).astype(x.dtype)
        return second + weight * difference


def relative_shift(logits: Array) -> Array:
    """``[..., n, 2n-1]`` logits by relative distance → ``[..., n, n]`` by key position.

    Column ``r`` of the input stands for distance ``r - (n - 1)``; output ``[i, j]`` takes the
    column for distance ``j - i``, i.e. flat index ``i(2n-1) + n-1 - i + j = n-1 + i(2n-2) + j``:
    a flat slice read with row stride ``2n - 2``.
    """
    *lead, n, width = logits.shape
    if width != 2 * n - 1:
        raise ValueError(f"expected [..., n, 2n-1] logits, got {logits.shape}")
    if n == 1:
        return logits
    flat = logits.reshape(*lead, n * width)[..., n - 1:n - 1 + n * (2 * n - 2)]
    return flat.reshape(*lead, n, 2 * n - 2)[..., :n]


class MultiHeadAttention(hk.Module):
    """Multi-head attention with relative positions (Transformer-XL style biases)."""

    def __init__(self, config: EnformerConfig, name: str | None = None):
        super().__init__(name=name)
        self.config = config

    def __call__(self, x: Array) -> Array:
        cfg = self.config
        b, n, c = x.shape
        h, k, v = cfg.num_heads, cfg.key_size, cfg.value_size

        def project(width: int, name: str, inputs: Array) -> Array:
            return hk.Linear(h * width, with_bias=False, name=name)(inputs)

        q = project(k, "q", x).reshape(b, n, h, k) * (k ** -0.5)
        keys = project(k, "k", x).reshape(b, n, h, k)
        values = project(v, "v", x).reshape(b, n, h, v)
        bias_init = hk.initializers.VarianceScaling(1.0, "fan_in", "truncated_normal")
        r_w_bias = hk.get_parameter("r_w_bias", [h, k], x.dtype, init=bias_init)
        r_r_bias = hk.get_parameter("r_r_bias", [h, k], x.dtype, init=bias_init)

        content = jnp.einsum("bihd,bjhd->bhij", q + r_w_bias, keys)
        positions = jnp.asarray(relative_position_features(n, cfg.num_relative_position_features),
                                x.dtype)
        rel_keys = project(k, "rel_k", positions).reshape(2 * n - 1, h, k)
        relative = relative_shift(jnp.einsum("bihd,rhd->bhir", q + r_r_bias, rel_keys))

        weights = jax.nn.softmax((content + relative).astype(jnp.float32), axis=-1)
        out = jnp.einsum("bhij,bjhd->bihd", weights.astype(x.dtype), values)
        return hk.Linear(c, w_init=jnp.zeros, name="output")(out.reshape(b, n, h * v))


class TransformerLayer(hk.Module):
    """Pre-LayerNorm attention and MLP (C → 2C → ReLU → C), each residual."""

    def __init__(self, config: EnformerConfig, name: str | None = None):
        super().__init__(name=name)
        self.config = config

    def __call__(self, x: Array) -> Array:
        c = self.config.channels
        x = x + MultiHeadAttention(self.config, name="mha")(LayerNorm(name="mha_norm")(x))
        h = LayerNorm(name="mlp_norm")(x)
        h = jax.nn.relu(hk.Linear(MLP_EXPANSION * c, name="mlp_1")(h))
        return x + hk.Linear(c, name="mlp_2")(h)


def crop(x: Array, target_length: int) -> Array:
    """The central ``target_length`` positions of ``[B, N, C]``."""
    trim = (x.shape[1] - target_length) // 2
    return x[:, trim:trim + target_length]


class Stem(hk.Module):
    """Conv1D(C/2, 15) → residual ConvBlock(C/2, 1) → attention pooling."""

    def __call__(self, x: Array, channels: int) -> Array:
        x = hk.Conv1D(channels, STEM_KERNEL, padding="SAME", name="conv")(x)
        x = x + ConvBlock(channels, 1, name="pointwise")(x)
        return AttentionPool(name="pool")(x)


class ConvTower(hk.Module):
    """Blocks of ConvBlock(c, 5) → residual ConvBlock(c, 1) → attention pooling."""

    def __call__(self, x: Array, channels: tuple[int, ...], acts: dict[str, Array]) -> Array:
        for i, c in enumerate(channels):
            with hk.experimental.name_scope(f"block_{i}"):
                x = ConvBlock(c, TOWER_KERNEL, name="conv")(x)
                x = x + ConvBlock(c, 1, name="pointwise")(x)
                x = AttentionPool(name="pool")(x)
            acts[f"tower_{i}"] = x
        return x


class Transformer(hk.Module):
    """A stack of :class:`TransformerLayer`."""

    def __call__(self, x: Array, config: EnformerConfig, acts: dict[str, Array]) -> Array:
        for i in range(config.num_transformer_layers):
            x = TransformerLayer(config, name=f"layer_{i}")(x)
            acts[f"transformer_{i}"] = x
        return x


Stage = Literal["all", "tower", "trunk"]
STAGES: tuple[str, ...] = ("all", "tower", "trunk")


class Enformer(hk.Module):
    """The whole model; ``__call__`` returns ``{head: [B, target_length, tracks]}``.

    With ``return_intermediates`` also the activations after the stem (``stem``), each tower
    block (``tower_i``), each transformer layer (``transformer_i``), the transformer
    (``transformer``), the crop (``crop``) and the final pointwise block (``final``).

    ``stage`` runs one part with the same parameters (the same ``enformer/...`` names):
    ``"tower"`` is the stem and conv tower alone, on one-hot ``[B, L', 4]`` of any length
    ``L'`` that is a positive multiple of ``bin_size``, returning ``[B, L'/bin_size, C]`` (the
    transformer's input); ``"trunk"`` is the rest (transformer, crop, final block, heads) on a
    tower output ``[B, transformer_length, C]``. ``trunk(tower(x))`` is ``all(x)``, step by
    step the same operations (:mod:`apoe_assets.enformer.incremental` relies on it).
    """

    def __init__(self, config: EnformerConfig, name: str = "enformer"):
        super().__init__(name=name)
        self.config = config

    def __call__(self, x: Array, return_intermediates: bool = False, stage: Stage = "all"
                 ) -> Any:
        cfg = self.config
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
        acts: dict[str, Array] = {}
        if stage == "trunk":
            if x.ndim != 3 or x.shape[1] != cfg.transformer_length or x.shape[2] != cfg.channels:
                raise ValueError(f"expected tower output [B, {cfg.transformer_length}, "
                                 f"{cfg.channels}], got {x.shape}")
        else:
            if stage == "all":
                if x.ndim != 3 or x.shape[1] != cfg.sequence_length or x.shape[2] != ALPHABET:
                    raise ValueError(f"expected one-hot [B, {cfg.sequence_length}, {ALPHABET}], "
                                     f"got {x.shape}")
            elif (x.ndim != 3 or x.shape[2] != ALPHABET or x.shape[1] <= 0
                  or x.shape[1] % cfg.bin_size):
                raise ValueError(f"expected one-hot [B, L', {ALPHABET}] with L' a positive "
                                 f"multiple of {cfg.bin_size}, got {x.shape}")
            x = acts["stem"] = Stem(name="stem")(x, cfg.channels // 2)
            x = ConvTower(name="tower")(x, cfg.tower_channels, acts)
            if stage == "tower":
                return (x, acts) if return_intermediates else x
        x = acts["transformer"] = Transformer(name="transformer")(x, cfg, acts)
        x = acts["crop"] = crop(x, cfg.target_length)
        x = acts["final"] = gelu(ConvBlock(FINAL_EXPANSION * cfg.channels, 1, name="final")(x))
        outputs = {head: jax.nn.softplus(hk.Linear(tracks, name=f"head_{head}")(x))
                   for head, tracks in cfg.output_heads}
        return (outputs, acts) if return_intermediates else outputs


def build(config: EnformerConfig) -> hk.Transformed:
    """``init(rng, x)`` and ``apply(params, x, return_intermediates=False, stage="all")`` (no
    RNG needed); ``stage`` as in :class:`Enformer`."""

    def forward(x: Array, return_intermediates: bool = False, stage: Stage = "all") -> Any:
        return Enformer(config)(x, return_intermediates=return_intermediates, stage=stage)

    return hk.without_apply_rng(hk.transform(forward))


def init_params(config: EnformerConfig, seed: int = 0) -> dict[str, dict[str, Array]]:
    """Parameters with the reference initialisers (attention output zero, pooling 2·I).

    Shapes do not depend on the input length, so this traces a one-bin input.
    """
    short = config.replace(sequence_length=config.bin_size, target_length=1)
    x = jnp.zeros((1, short.sequence_length, ALPHABET), jnp.float32)
    return jax.jit(build(short).init)(jax.random.key(seed), x)


def param_shapes(config: EnformerConfig) -> dict[str, tuple[int, ...]]:
    """Flat ``module/param`` name → shape, without allocating anything."""
    x = jax.ShapeDtypeStruct((1, config.sequence_length, ALPHABET), jnp.float32)
    tree = jax.eval_shape(build(config).init, jax.random.key(0), x)
    return {f"{module}/{name}": tuple(leaf.shape)
            for module, leaves in tree.items() for name, leaf in leaves.items()}


def random_params(config: EnformerConfig, seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
    """Every tensor random and non-trivial (float32 NumPy), for demos and tests.

    Weights ~ N(0, 1/fan_in); biases, offsets and moving means ~ N(0, 0.1²); scales ~ U(0.5, 1.5);
    moving variances ~ U(0.5, 2); pooling weights 2·I + N(0, 0.1²).
    """
    rng = np.random.default_rng(seed)
    params: dict[str, dict[str, np.ndarray]] = {}
    for key, shape in sorted(param_shapes(config).items()):
        module, name = key.rsplit("/", 1)
        if name in ("scale",):
            value = rng.uniform(0.5, 1.5, shape)
        elif name == "moving_variance":
            value = rng.uniform(0.5, 2.0, shape)
        elif name in ("b", "offset", "moving_mean", "r_w_bias", "r_r_bias"):
            value = rng.normal(0.0, 0.1, shape)
        elif module.endswith("/pool"):
            value = POOL_INIT_GAIN * np.eye(shape[0]) + rng.normal(0.0, 0.1, shape)
        else:
            fan_in = math.prod(shape[:-1])
            value = rng.normal(0.0, 1.0 / math.sqrt(fan_in), shape)
        params.setdefault(module, {})[name] = value.astype(np.float32)
    return params
