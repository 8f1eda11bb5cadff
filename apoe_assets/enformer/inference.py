"""Batched, jit-compiled Enformer prediction, data-parallel over the local devices.

One compiled function per (batch size, precision, number of tracks and bins): every batch has
the same shape (the last one is padded with N rows whose outputs are dropped), the batch axis
is sharded over a 1-D device mesh with ``jax.sharding`` and the parameters are replicated.
Only the requested tracks and bins leave the device. Batches are dispatched asynchronously, so
the host encodes batch k+1 while the devices compute batch k. Sequences given with keys (e.g.
the content hashes of the personal-sequences manifest) are computed once per unique key.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from apoe_assets.enformer.haplotypes import unique_keys
from apoe_assets.enformer.model import ALPHABET, EnformerConfig, build
from apoe_assets.genomics.onehot import IUPAC, as_codes, one_hot

Precision = Literal["float32", "bfloat16"]
DeviceKind = Literal["auto", "cpu", "gpu", "tpu"]
PRECISIONS: tuple[str, ...] = ("float32", "bfloat16")
DEVICE_KINDS: tuple[str, ...] = ("auto", "cpu", "gpu", "tpu")
SequenceInput = np.ndarray | str | bytes
ProgressCallback = Callable[[int, int, float], None]
"""``progress(done, total, sequences_per_second)``, called after each batch."""
DATA_AXIS = "data"

_ALLOWED = np.zeros(256, bool)
for _code in [*IUPAC, "N"]:
    _ALLOWED[ord(_code)] = _ALLOWED[ord(_code.lower())] = True


def enable_compilation_cache(directory: str | os.PathLike[str]) -> None:
    """Use JAX's persistent compilation cache in ``directory`` (created), for every compile.

    Every compiled function is stored (no minimum compile time or size), so a later process
    with the same model, shapes and JAX version loads it instead of compiling.
    """
    os.makedirs(directory, exist_ok=True)
    directory = os.fspath(directory)
    previous = jax.config.jax_compilation_cache_dir
    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    if previous and previous != directory:  # JAX opens the cache once; point it elsewhere
        from jax.experimental.compilation_cache import compilation_cache
        compilation_cache.reset_cache()


def select_devices(kind: DeviceKind = "auto") -> list[jax.Device]:
    """The local devices of ``kind``: ``auto`` is JAX's default backend (an accelerator when
    one is installed, else the CPU). Asking for an absent accelerator is a clear error."""
    if kind not in DEVICE_KINDS:
        raise ValueError(f"device must be one of {DEVICE_KINDS}, got {kind!r}")
    if kind == "auto":
        return jax.local_devices()
    try:
        return jax.local_devices(backend=kind)
    except RuntimeError as error:
        extra = {"gpu": "jax[cuda12]", "tpu": "jax[tpu]"}.get(kind, "jax")
        raise RuntimeError(
            f"Enformer device {kind!r} was requested but JAX finds no {kind.upper()} here "
            f"(available: {', '.join(sorted({d.platform for d in jax.devices()}))}). Install "
            f"JAX with {kind.upper()} support (e.g. pip install '{extra}') on a machine that "
            f"has one, or set the device to 'auto' or 'cpu'. JAX said: {error}") from error


def reverse_complement(x: jax.Array) -> jax.Array:
    """Reverse complement of one-hot ``[..., L, 4]`` in A, C, G, T order (flip both axes)."""
    return x[..., ::-1, ::-1]


def encode(sequence: SequenceInput, length: int, out: np.ndarray | None = None) -> np.ndarray:
    """One sequence as float32 one-hot ``[length, 4]``, checked (written into ``out``).

    Strings/bytes may hold A, C, G, T, N and IUPAC codes (either case); arrays must be
    ``[length, 4]``.
    """
    if isinstance(sequence, np.ndarray):
        if sequence.shape != (length, ALPHABET):
            raise ValueError(f"one-hot sequence has shape {sequence.shape}, the model needs "
                             f"({length}, {ALPHABET})")
        if out is None:
            return sequence.astype(np.float32, copy=False)
        out[...] = sequence
        return out
    codes = as_codes(sequence)
    if codes.shape[1] != length:
        raise ValueError(f"sequence has {codes.shape[1]:,} bp, the model needs {length:,}")
    bad = ~_ALLOWED[codes[0]]
    if bad.any():
        position = int(np.flatnonzero(bad)[0])
        raise ValueError(f"sequence has {chr(codes[0, position])!r} at position {position}; "
                         "only A, C, G, T, N and IUPAC ambiguity codes are allowed")
    if out is None:
        return one_hot(codes)[0]
    one_hot(codes, out=out[None])
    return out


class Predictor:
    """Predict one head's selected tracks and bins for many sequences.

    ``predict(sequences)`` returns float32 ``[N, len(bins), len(tracks)]``. ``batch_size`` is
    the global batch (rounded up to a multiple of the device count). ``precision="bfloat16"``
    casts parameters and inputs (norms and softmaxes still run in float32); outputs are
    float32. ``reverse_complement`` averages each prediction with that of the reverse
    complement, its bins flipped back. ``tracks`` and ``bins`` are the defaults of
    :meth:`predict`, which may choose others per call (one compile per selection size).
    ``sequences_computed`` counts the sequences run through the model (padding excluded).
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
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be float32 or bfloat16, got {precision!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
        self.config = config
        self.head = head
        self.tracks = _indices(tracks, heads[head], "track")
        self.bins = _indices(bins, config.target_length, "bin")
        self.precision = precision
        self.dtype = jnp.bfloat16 if precision == "bfloat16" else jnp.float32
        self.reverse_complement = reverse_complement
        self.sequences_computed = 0
        if compilation_cache_dir is not None:
            enable_compilation_cache(compilation_cache_dir)

        self.devices = list(devices) if devices is not None else jax.local_devices()
        if not self.devices:
            raise ValueError("no devices to run on")
        self.mesh = Mesh(np.array(self.devices), (DATA_AXIS,))
        n = len(self.devices)
        self.batch_size = -(-batch_size // n) * n
        self._batch_sharding = NamedSharding(self.mesh, PartitionSpec(DATA_AXIS))
        self._replicated = NamedSharding(self.mesh, PartitionSpec())
        self.params = jax.device_put(
            jax.tree.map(lambda a: np.asarray(a, self.dtype), params), self._replicated)
        self._forward = _compiled_forward(config, head, precision, reverse_complement,
                                          tuple(self.devices))

    def predict(self, sequences: Iterable[SequenceInput],
                progress: ProgressCallback | None = None, *,
                keys: Sequence[Hashable] | None = None,
                tracks: Sequence[int] | np.ndarray | None = None,
                bins: Sequence[int] | np.ndarray | None = None,
                total: int | None = None) -> np.ndarray:
        """Predictions ``[N, bins, tracks]`` for ``sequences`` (one-hot ``[L, 4]`` or text).

        With ``keys`` (one per sequence, e.g. a content hash) each unique key is computed once,
        from its first sequence, and its prediction is returned for every row that has it;
        ``progress`` then counts unique sequences. ``sequences`` may be any iterable (streamed
        batch by batch); ``total`` sizes the output when it has no ``len``.
        """
        tracks_idx = self.tracks if tracks is None else _indices(
            tracks, self.config.heads[self.head], "track")
        bins_idx = self.bins if bins is None else _indices(bins, self.config.target_length,
                                                          "bin")
        if keys is not None:
            items = list(sequences)
            if len(keys) != len(items):
                raise ValueError(f"{len(keys)} keys for {len(items)} sequences")
            first, inverse = unique_keys(keys)
            unique = self._run((items[i] for i in first), len(first), tracks_idx, bins_idx,
                               progress)
            return unique[inverse]
        if total is None:
            if not hasattr(sequences, "__len__"):
                sequences = list(sequences)
            total = len(sequences)  # type: ignore[arg-type]
        return self._run(iter(sequences), total, tracks_idx, bins_idx, progress)

    def _run(self, items: Iterator[SequenceInput], total: int, tracks: np.ndarray,
             bins: np.ndarray, progress: ProgressCallback | None) -> np.ndarray:
        out = np.empty((total, len(bins), len(tracks)), np.float32)
        length = self.config.sequence_length
        device_tracks = jax.device_put(tracks, self._replicated)
        device_bins = jax.device_put(bins, self._replicated)
        started = time.perf_counter()
        pending: tuple[int, int, jax.Array] | None = None
        start = 0
        while start < total:
            batch = np.zeros((self.batch_size, length, ALPHABET), np.float32)
            rows = 0
            for item in items:
                encode(item, length, out=batch[rows])
                rows += 1
                if rows == self.batch_size or start + rows == total:
                    break
            if rows == 0 or (start + rows < total and rows < self.batch_size):
                raise ValueError(f"got {start + rows} sequences, expected {total}")
            result = self._forward(self.params, jax.device_put(batch, self._batch_sharding),
                                   device_tracks, device_bins)
            if pending is not None:
                self._collect(out, pending, total, started, progress)
            pending = (start, start + rows, result)
            start += rows
        if pending is not None:
            self._collect(out, pending, total, started, progress)
        return out

    def _collect(self, out: np.ndarray, pending: tuple[int, int, jax.Array], total: int,
                 started: float, progress: ProgressCallback | None) -> None:
        start, stop, result = pending
        out[start:stop] = np.asarray(result)[:stop - start]
        self.sequences_computed += stop - start
        if progress is not None:
            elapsed = time.perf_counter() - started
            progress(stop, total, stop / elapsed if elapsed > 0 else float("inf"))


@functools.lru_cache(maxsize=16)
def _compiled_forward(config: EnformerConfig, head: str, precision: Precision,
                      average_reverse_complement: bool, devices: tuple[jax.Device, ...]
                      ) -> Callable[..., jax.Array]:
    """``forward(params, x, tracks, bins)`` → ``[B, bins, tracks]`` float32, jit-compiled with
    the batch sharded over ``devices`` and everything else replicated. Shared by every
    :class:`Predictor` with the same settings, so a second one compiles nothing."""
    mesh = Mesh(np.array(devices), (DATA_AXIS,))
    batch, replicated = NamedSharding(mesh, PartitionSpec(DATA_AXIS)), NamedSharding(
        mesh, PartitionSpec())
    apply = build(config).apply
    dtype = jnp.bfloat16 if precision == "bfloat16" else jnp.float32

    def forward(params: Any, x: jax.Array, tracks: jax.Array, bins: jax.Array) -> jax.Array:
        def run(inputs: jax.Array) -> jax.Array:
            return apply(params, inputs.astype(dtype))[head].astype(jnp.float32)

        y = run(x)
        if average_reverse_complement:
            y = 0.5 * (y + run(reverse_complement(x))[:, ::-1])
        return jnp.take(jnp.take(y, bins, axis=1), tracks, axis=2)

    return jax.jit(forward, in_shardings=(replicated, batch, replicated, replicated),
                   out_shardings=batch)


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
