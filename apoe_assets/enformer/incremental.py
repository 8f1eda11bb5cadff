"""Incremental ALT inference: recompute the conv tower only where a variant can reach.

Scoring a variant needs the model's outputs for the reference window and for the same window
with the ALT allele. The stem and the convolution tower are local: a base changes only the
few tower bins (the transformer's input) within its receptive field, and a tower bin reads
only a few hundred bases. Only the transformer and the heads see the whole window. So, per
gene, :meth:`IncrementalScorer.reference` runs the stem and tower over the reference once and
keeps their output (``[transformer_length, C]``); per ALT, :meth:`IncrementalScorer.alt_outputs`
recomputes the stem and tower over a short slice of the input around the variant, splices the
bins it changed into the reference's tower output, and runs the transformer and heads
(batched over ALTs, jit-compiled). Both paths use the same parameters through
``build(config).apply(..., stage="tower" | "trunk")`` (:class:`~apoe_assets.enformer.model.
Enformer`), so the result is a full forward of the ALT sequence up to float rounding.

Receptive-field arithmetic (:class:`ReceptiveField`, derived from the config, nothing
hard-coded). The stem and tower are, in order, at input resolution: Conv(15) → Conv(1) → pool
2, then per tower block Conv(5) → Conv(1) → pool 2 (``num_downsamples − 1`` blocks); BatchNorm,
GELU and the residual sums are pointwise. Haiku's ``SAME`` convolution with kernel K (stride 1)
pads ``(K−1)//2`` zeros on the left and the rest on the right, so output i reads inputs
``[i − pad_lo, i + pad_hi]``; pooling output i reads inputs 2i and 2i + 1. With D =
``num_downsamples`` and bin size B = 2^D:

- *Backward* (what a tower bin reads): bins ``[a, b]`` read input bases
  ``[a·B − M_lo, (b+1)·B − 1 + M_hi]`` with ``M = 7 + Σ_{i=1}^{D−1} 2·2^i = 2^(D+1) + 3``
  bases on each side (the stem conv's 7, plus each tower conv's 2 at resolution 2^i): 259 bp at
  D = 7, which holds for the full, small and tiny presets (bin 128 bp). In whole bins that is
  ``margin_bins = ceil(M / B) = 3``.
- *Forward* (what a base changes): base p reaches the tower bins obtained by pushing the
  interval ``[p, p]`` forward (conv: ``[lo − pad_hi, hi + pad_lo]``, pool: halve, floor); the
  widest such span over the B offsets of p in a bin is ``affected_bins`` = 6 at D = 7 (it
  spans ``2·259 + 1`` bp, 4.05 bins, so 5 or 6 bins depending on p's offset).
- *Slice*: the spliced bins are ``[A, A + affected_bins)`` with A the first bin p reaches
  (clipped into the window); their inputs lie within bins ``[A − margin_bins, A +
  affected_bins + margin_bins)``, so the slice is ``slice_bins = affected_bins +
  2·margin_bins`` = 12 bins (1,536 bp) at D = 7, shifted to stay inside the window. The
  slice starts on a bin boundary, a multiple of 2^D bases, so every one of the D pooling
  windows of the slice is one of the full run's (pairs coincide at every resolution). Where
  the slice touches the window's first or last base its convolutions pad with zeros exactly
  where the full run's do; elsewhere the zero padding at the slice's edges corrupts only bins
  outside the spliced span (the margin absorbs it). Presets: full 1,536 tower bins
  (slice 12 = 0.8 % of the window), small 192 (6.3 %), tiny 48 (25 %).

An ALT may hold several substitutions (positions ``[n_alt, k]``): each gets its own slice, and
every slice carries all of the ALT's substitutions that fall in it, so each spliced span is the
ALT sequence's own tower output. An ALT whose bases all equal the reference's rows returns
the reference outputs themselves (exactly, no computation) unless ``skip_unchanged=False``.

Cost: the stem and tower are about three quarters of a full forward's multiply-adds at full
size; an ALT here costs the transformer and heads plus a 12-bin tower slice.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from apoe_assets.enformer.model import (
    ALPHABET,
    POOL_SIZE,
    STEM_KERNEL,
    TOWER_KERNEL,
    EnformerConfig,
    build,
)

DATA_AXIS = "data"


def tower_ops(config: EnformerConfig) -> list[tuple[str, int, int]]:
    """The stem and tower's spatial operations in order: ``("conv", pad_lo, pad_hi)`` for a
    ``SAME`` convolution (pointwise ones included) and ``("pool", 0, 0)`` for pooling by 2."""

    def conv(kernel: int) -> tuple[str, int, int]:
        total = kernel - 1
        return ("conv", total // 2, total - total // 2)

    ops = [conv(STEM_KERNEL), conv(1), ("pool", 0, 0)]
    for _ in config.tower_channels:
        ops += [conv(TOWER_KERNEL), conv(1), ("pool", 0, 0)]
    return ops


def forward_span(config: EnformerConfig, lo: int, hi: int) -> tuple[int, int]:
    """Tower bins ``[a, b]`` (inclusive, not clipped) that input bases ``[lo, hi]`` reach."""
    for kind, pad_lo, pad_hi in tower_ops(config):
        if kind == "conv":
            lo, hi = lo - pad_hi, hi + pad_lo
        else:
            lo, hi = lo // POOL_SIZE, hi // POOL_SIZE
    return lo, hi


def backward_span(config: EnformerConfig, a: int, b: int) -> tuple[int, int]:
    """Input bases ``[lo, hi]`` (inclusive, not clipped: outside the window is zero padding)
    that tower bins ``[a, b]`` read."""
    for kind, pad_lo, pad_hi in reversed(tower_ops(config)):
        if kind == "conv":
            a, b = a - pad_lo, b + pad_hi
        else:
            a, b = POOL_SIZE * a, POOL_SIZE * b + POOL_SIZE - 1
    return a, b


@dataclass(frozen=True)
class ReceptiveField:
    """The slice geometry of one config (see the module docstring)."""

    bin_size: int
    bins: int
    """Tower output bins of the window (``transformer_length``)."""
    margin_bp: tuple[int, int]
    """Bases a bin span reads beyond itself, left and right (259, 259 at D = 7)."""
    margin_bins: int
    """``ceil(max(margin_bp) / bin_size)``: whole bins of context each side of a splice."""
    affected_bins: int
    """Most tower bins one base can change; the span spliced per variant."""
    slice_bins: int
    """Bins recomputed per variant: ``affected_bins + 2·margin_bins`` (at most ``bins``)."""

    @classmethod
    def of(cls, config: EnformerConfig) -> ReceptiveField:
        b = config.bin_size
        lo, hi = backward_span(config, 0, 0)
        margin = (-lo, hi - (b - 1))
        margin_bins = -(-max(margin) // b)
        affected = max(forward_span(config, p, p)[1] - forward_span(config, p, p)[0] + 1
                       for p in range(b))  # the arithmetic repeats every bin (b = 2^D)
        n = config.transformer_length
        affected = min(affected, n)
        return cls(bin_size=b, bins=n, margin_bp=margin, margin_bins=margin_bins,
                   affected_bins=affected, slice_bins=min(affected + 2 * margin_bins, n))

    @property
    def slice_bp(self) -> int:
        return self.slice_bins * self.bin_size

    def splice_starts(self, config: EnformerConfig, positions: np.ndarray) -> np.ndarray:
        """First spliced bin per position: the first bin the base reaches, clipped so the span
        ``[A, A + affected_bins)`` lies in the window (it covers every bin the base reaches)."""
        lo = np.array([forward_span(config, int(p), int(p))[0] for p in positions.ravel()],
                      np.int64).reshape(positions.shape)
        return np.clip(lo, 0, self.bins - self.affected_bins)

    def slice_starts(self, splice: np.ndarray) -> np.ndarray:
        """First recomputed bin per splice start, shifted to keep the slice in the window."""
        return np.clip(splice - self.margin_bins, 0, self.bins - self.slice_bins)


@dataclass
class RefState:
    """One reference window: its one-hot (on device), tower output ``[bins, C]`` (on device)
    and outputs ``{head: [target_length, tracks]}`` (float32 NumPy)."""

    onehot: jax.Array
    tower: jax.Array
    outputs: dict[str, np.ndarray]
    onehot_host: np.ndarray


class IncrementalScorer:
    """Reference once, ALTs by tower splicing; outputs equal full forwards (float32).

    ``heads`` picks the heads returned (default all; unused heads are not computed).
    ``field`` overrides the slice geometry (tests break it on purpose). ``devices``: the batch
    of ALTs is sharded over them (parameters and the reference replicated); default JAX's
    default device.
    """

    def __init__(self, params: Any, config: EnformerConfig, *,
                 heads: Sequence[str] | None = None, field: ReceptiveField | None = None,
                 devices: Sequence[jax.Device] | None = None):
        self.config = config
        self.heads = tuple(heads) if heads is not None else tuple(config.heads)
        unknown = set(self.heads) - set(config.heads)
        if unknown or not self.heads:
            raise ValueError(f"heads {sorted(unknown) or '[]'} not among the model's "
                             f"{sorted(config.heads)}")
        self.field = field or ReceptiveField.of(config)
        self.devices = list(devices) if devices is not None else [jax.devices()[0]]
        self.mesh = Mesh(np.array(self.devices), (DATA_AXIS,))
        self._batch = NamedSharding(self.mesh, PartitionSpec(DATA_AXIS))
        self._replicated = NamedSharding(self.mesh, PartitionSpec())
        self.params = jax.device_put(jax.tree.map(lambda a: np.asarray(a, np.float32), params),
                                     self._replicated)
        self.alts_computed = 0
        self._tower, self._trunk, self._alt, self._alt_tower = _compiled(
            config, self.heads, self.field, tuple(self.devices))

    def reference(self, onehot: np.ndarray) -> RefState:
        """Tower output and outputs of the reference window (one-hot ``[L, 4]``)."""
        cfg = self.config
        x = np.asarray(onehot, np.float32)
        if x.shape != (cfg.sequence_length, ALPHABET):
            raise ValueError(f"reference one-hot has shape {x.shape}, the model needs "
                             f"({cfg.sequence_length}, {ALPHABET})")
        device_x = jax.device_put(x, self._replicated)
        tower = self._tower(self.params, device_x[None])[0]
        outputs = self._trunk(self.params, tower[None])
        return RefState(onehot=device_x, tower=tower, onehot_host=x,
                        outputs={h: np.asarray(v[0]) for h, v in outputs.items()})

    def alt_outputs(self, state: RefState, positions: Sequence[int] | np.ndarray,
                    alt_onehot_bases: np.ndarray, batch_size: int = 8, *,
                    skip_unchanged: bool = True) -> dict[str, np.ndarray]:
        """``{head: [n_alt, target_length, tracks]}`` for the reference with substitutions.

        ``positions``: ``[n_alt]`` 0-based window positions (one SNV per ALT) or ``[n_alt, k]``
        (k substitutions per ALT; a position repeated within an ALT must carry the same base).
        ``alt_onehot_bases``: the new one-hot rows, ``[n_alt, 4]`` or ``[n_alt, k, 4]``.
        ``batch_size`` ALTs run per compiled call (rounded up to a multiple of the devices;
        the last batch is padded). ``skip_unchanged``: ALTs equal to the reference return its
        outputs without computing.
        """
        cfg = self.config
        pos, bases = self._variants(positions, alt_onehot_bases)
        out = {h: np.empty((len(pos), cfg.target_length, cfg.heads[h]), np.float32)
               for h in self.heads}
        changed = np.any(state.onehot_host[pos] != bases, axis=(1, 2))
        todo = np.flatnonzero(changed) if skip_unchanged else np.arange(len(pos))
        for h in self.heads:
            out[h][np.setdiff1d(np.arange(len(pos)), todo)] = state.outputs[h]

        def collect(rows: np.ndarray, result: dict[str, jax.Array]) -> None:
            for h, value in result.items():
                out[h][rows] = np.asarray(value)[:len(rows)]
            self.alts_computed += len(rows)

        self._run(self._alt, state, pos[todo], bases[todo], todo, batch_size, collect)
        return out

    def alt_towers(self, state: RefState, positions: Sequence[int] | np.ndarray,
                   alt_onehot_bases: np.ndarray, batch_size: int = 8) -> np.ndarray:
        """The spliced tower outputs ``[n_alt, bins, C]`` (the transformer's inputs) that
        :meth:`alt_outputs` feeds on; for checking the splice itself."""
        pos, bases = self._variants(positions, alt_onehot_bases)
        out = np.empty((len(pos), *state.tower.shape), np.float32)

        def collect(rows: np.ndarray, result: jax.Array) -> None:
            out[rows] = np.asarray(result)[:len(rows)]

        self._run(self._alt_tower, state, pos, bases, np.arange(len(pos)), batch_size,
                  collect)
        return out

    def _variants(self, positions: Sequence[int] | np.ndarray, alt_onehot_bases: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
        """Checked ``positions [n, k]`` and ``bases [n, k, 4]``."""
        length = self.config.sequence_length
        pos = np.asarray(positions, np.int64)
        bases = np.asarray(alt_onehot_bases, np.float32)
        if pos.ndim == 1 and bases.ndim == 2:
            pos, bases = pos[:, None], bases[:, None, :]
        if pos.ndim != 2 or bases.shape != (*pos.shape, ALPHABET):
            raise ValueError(f"positions {np.shape(positions)} and bases "
                             f"{np.shape(alt_onehot_bases)} must be [n] and [n, 4], or "
                             f"[n, k] and [n, k, 4]")
        if pos.size and (pos.min() < 0 or pos.max() >= length):
            raise ValueError(f"positions must lie in the window 0 … {length - 1}")
        k = pos.shape[1]
        for a in range(k):
            for c in range(a + 1, k):
                clash = (pos[:, a] == pos[:, c]) & np.any(bases[:, a] != bases[:, c], axis=-1)
                if clash.any():
                    row = int(np.flatnonzero(clash)[0])
                    raise ValueError(f"ALT {row} sets position {int(pos[row, a])} to two "
                                     "different bases")
        return pos, bases

    def _run(self, fn: Any, state: RefState, pos: np.ndarray, bases: np.ndarray,
             rows: np.ndarray, batch_size: int, collect: Any) -> None:
        """``fn`` over ``pos``/``bases`` in padded batches, one batch in flight while the
        previous one is collected (``collect(rows, result)``)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
        if not len(pos):
            return
        r = self.field
        splices = r.splice_starts(self.config, pos)
        slices = r.slice_starts(splices)
        devices = len(self.devices)
        size = math.ceil(batch_size / devices) * devices
        pending: list[tuple[np.ndarray, Any]] = []
        for begin in range(0, len(pos), size):
            index = np.arange(begin, min(begin + size, len(pos)))
            pad = np.concatenate([index, np.full(size - len(index), index[-1])])
            result = fn(self.params, state.onehot, state.tower,
                        *(jax.device_put(a[pad], self._batch)
                          for a in (slices, splices, pos, bases)))
            pending.append((rows[index], result))
            if len(pending) > 1:
                collect(*pending.pop(0))
        for item in pending:
            collect(*item)


@functools.lru_cache(maxsize=8)
def _compiled(config: EnformerConfig, heads: tuple[str, ...], field: ReceptiveField,
              devices: tuple[jax.Device, ...]) -> tuple[Any, Any, Any, Any]:
    """``(tower, trunk, alt, alt_tower)`` jit-compiled, shared by every scorer with the same
    settings (a scorer per gene compiles nothing new)."""
    apply = build(config).apply
    heads_kept = heads

    def tower(p: Any, x: jax.Array) -> jax.Array:
        return apply(p, x, stage="tower")

    def trunk(p: Any, t: jax.Array) -> dict[str, jax.Array]:
        out = apply(p, t, stage="trunk")
        return {h: out[h] for h in heads_kept}

    r = field
    width, spliced, b = r.slice_bp, r.affected_bins, r.bin_size

    def alt_tower(p: Any, ref_x: jax.Array, ref_tower: jax.Array, slices: jax.Array,
                  splices: jax.Array, positions: jax.Array, bases: jax.Array) -> jax.Array:
        n, k = positions.shape
        starts = slices * b                                        # [n, k] bases
        take = jax.vmap(jax.vmap(lambda s: jax.lax.dynamic_slice(ref_x, (s, 0),
                                                                 (width, ALPHABET))))
        x = take(starts)                                           # [n, k, width, 4]
        local = positions[:, None, :] - starts[:, :, None]         # [n, slice, variant]
        inside = (local >= 0) & (local < width)
        local = jnp.clip(local, 0, width - 1)
        rows, cols = jnp.arange(n)[:, None], jnp.arange(k)[None, :]
        for i in range(k):
            at = local[:, :, i]
            current = x[rows, cols, at]                            # [n, k, 4]
            x = x.at[rows, cols, at].set(
                jnp.where(inside[:, :, i, None], bases[:, None, i, :], current))
        t = tower(p, x.reshape(n * k, width, ALPHABET))
        t = t.reshape(n, k, r.slice_bins, t.shape[-1])
        out = jnp.broadcast_to(ref_tower, (n, *ref_tower.shape))
        cut = jax.vmap(lambda tt, o: jax.lax.dynamic_slice_in_dim(tt, o, spliced, 0))
        put = jax.vmap(lambda tw, piece, a: jax.lax.dynamic_update_slice_in_dim(
            tw, piece, a, 0))
        for j in range(k):
            out = put(out, cut(t[:, j], splices[:, j] - slices[:, j]), splices[:, j])
        return out

    def alt_forward(p: Any, *args: jax.Array) -> dict[str, jax.Array]:
        return trunk(p, alt_tower(p, *args))

    mesh = Mesh(np.array(devices), (DATA_AXIS,))
    rep, bat = NamedSharding(mesh, PartitionSpec()), NamedSharding(mesh, PartitionSpec(DATA_AXIS))
    shardings = dict(in_shardings=(rep, rep, rep, bat, bat, bat, bat), out_shardings=bat)
    return (jax.jit(tower, in_shardings=(rep, rep), out_shardings=rep),
            jax.jit(trunk, in_shardings=(rep, rep), out_shardings=rep),
            jax.jit(alt_forward, **shardings), jax.jit(alt_tower, **shardings))

