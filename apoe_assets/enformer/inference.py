"""Batched, jit-compiled Enformer prediction, data-parallel over the local devices.

One compiled function per (batch size, precision, selection): every batch has the same shape
(the last one is padded with N rows and its padding dropped), the batch axis is sharded over a
1-D device mesh with ``jax.sharding`` and the parameters are replicated. Only the requested
tracks and bins leave the device. Batches are dispatched asynchronously, so the host encodes
batch k+1 while the device computes batch k.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from apoe_assets.enformer.model import ALPHABET, EnformerConfig, build
from apoe_assets.genomics.onehot import IUPAC, as_codes, one_hot

Precision = Literal["float32", "bfloat16"]
SequenceInput = np.ndarray | str | bytes
DATA_AXIS = "data"

_ALLOWED = np.zeros(256, bool)
for _code in [*IUPAC, "N"]:
    _ALLOWED[ord(_code)] = _ALLOWED[ord(_code.lower())] = True


def enable_compilation_cache(directory: str | os.PathLike[str]) -> None:
    """Use JAX's persistent compilation cache in ``directory`` (created), for every compile."""
    os.makedirs(directory, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", os.fspath(directory))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def reverse_complement(x: jax.Array) -> jax.Array:
    """Reverse complement of one-hot ``[..., L, 4]`` in A, C, G, T order (flip both axes)."""
    return x[..., ::-1, ::-1]


def encode(sequence: SequenceInput, length: int) -> np.ndarray:
    """One sequence as float32 one-hot ``[length, 4]``, checked.

    Strings/bytes may hold A, C, G, T, N and IUPAC codes (either case); arrays must be
    ``[length, 4]``.
    """
    if isinstance(sequence, np.ndarray):
        if sequence.shape != (length, ALPHABET):
            raise ValueError(f"one-hot sequence has shape {sequence.shape}, the model needs "
                             f"({length}, {ALPHABET})")
        return sequence.astype(np.float32, copy=False)
    codes = as_codes(sequence)[0]
    if codes.shape[0] != length:
        raise ValueError(f"sequence has {codes.shape[0]:,} bp, the model needs {length:,}")
    bad = ~_ALLOWED[codes]
    if bad.any():
        position = int(np.flatnonzero(bad)[0])
        raise ValueError(f"sequence has {chr(codes[position])!r} at position {position}; only "
                         "A, C, G, T, N and IUPAC ambiguity codes are allowed")
    return one_hot(codes[None])[0]


class Predictor:
    """Predict one head's selected tracks and bins for many sequences.

    ``predict(sequences)`` returns float32 ``[N, len(bins), len(tracks)]``. ``batch_size`` is
    the global batch (rounded up to a multiple of the device count). ``precision="bfloat16"``
    casts parameters and inputs (norms and softmaxes still run in float32); outputs are
    float32. ``reverse_complement`` averages each prediction with that of the reverse
    complement, its bins flipped back.
    """

    def __init__(self, config: EnformerConfig, params: Any, *, head: str = "human",
                 tracks: Sequence[int] | np.ndarray | None = None,
                 bins: Sequence[int] | np.ndarray | None = None, batch_size: int = 1,
                 precision: Precision = "float32", reverse_complement: bool = False,
                 devices: Sequence[jax.Device] | None = None,
                 compilation_cache_dir: str | os.PathLike[str] | None = None):
        heads = config.heads
        if head not in heads:
            raise ValueError(f"head {head!r} not in the model's heads {sorted(heads)}")
        if precision not in ("float32", "bfloat16"):
            raise ValueError(f"precision must be float32 or bfloat16, got {precision!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
        self.config = config
        self.head = head
        self.tracks = _indices(tracks, heads[head], "track")
        self.bins = _indices(bins, config.target_length, "bin")
        self.dtype = jnp.bfloat16 if precision == "bfloat16" else jnp.float32
        self.reverse_complement = reverse_complement
        if compilation_cache_dir is not None:
            enable_compilation_cache(compilation_cache_dir)

        self.devices = list(devices) if devices is not None else jax.local_devices()
        self.mesh = Mesh(np.array(self.devices), (DATA_AXIS,))
        n = len(self.devices)
        self.batch_size = -(-batch_size // n) * n
        self._batch_sharding = NamedSharding(self.mesh, PartitionSpec(DATA_AXIS))
        replicated = NamedSharding(self.mesh, PartitionSpec())
        cast = jax.jit(lambda p: jax.tree.map(lambda a: jnp.asarray(a, self.dtype), p),
                       out_shardings=replicated)
        self.params = cast(params)
        self._forward = jax.jit(self._select, in_shardings=(replicated, self._batch_sharding),
                                out_shardings=self._batch_sharding)

    def _select(self, params: Any, x: jax.Array) -> jax.Array:
        apply = build(self.config).apply
        tracks, bins = jnp.asarray(self.tracks), jnp.asarray(self.bins)

        def run(inputs: jax.Array) -> jax.Array:
            return apply(params, inputs.astype(self.dtype))[self.head].astype(jnp.float32)

        y = run(x)
        if self.reverse_complement:
            y = 0.5 * (y + run(reverse_complement(x))[:, ::-1])
        return y[:, bins][:, :, tracks]

    def predict(self, sequences: Iterable[SequenceInput],
                progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        """Predictions ``[N, bins, tracks]`` for ``sequences`` (one-hot ``[L, 4]`` or text)."""
        items = list(sequences)
        total = len(items)
        out = np.empty((total, len(self.bins), len(self.tracks)), np.float32)
        length = self.config.sequence_length
        pending: tuple[int, int, jax.Array] | None = None
        for start in range(0, total, self.batch_size):
            stop = min(start + self.batch_size, total)
            batch = np.zeros((self.batch_size, length, ALPHABET), np.float32)
            for row, item in enumerate(items[start:stop]):
                batch[row] = encode(item, length)
            result = self._forward(self.params, jax.device_put(batch, self._batch_sharding))
            if pending is not None:
                self._collect(out, pending, total, progress)
            pending = (start, stop, result)
        if pending is not None:
            self._collect(out, pending, total, progress)
        return out

    @staticmethod
    def _collect(out: np.ndarray, pending: tuple[int, int, jax.Array], total: int,
                 progress: Callable[[int, int], None] | None) -> None:
        start, stop, result = pending
        out[start:stop] = np.asarray(result)[:stop - start]
        if progress is not None:
            progress(stop, total)


def _indices(values: Sequence[int] | np.ndarray | None, size: int, what: str) -> np.ndarray:
    if values is None:
        return np.arange(size, dtype=np.int32)
    array = np.asarray(values, np.int64).reshape(-1)
    if array.size == 0 or array.min() < 0 or array.max() >= size:
        raise ValueError(f"{what} indices must be non-empty and within 0 … {size - 1}")
    return array.astype(np.int32)


def predict(config: EnformerConfig, params: Any, sequences: Iterable[SequenceInput],
            **options: Any) -> np.ndarray:
    """One-shot :class:`Predictor` ``(config, params, **options).predict(sequences)``."""
    return Predictor(config, params, **options).predict(sequences)
