"""Enformer forward: ours (JAX/Haiku, :class:`Predictor`) vs enformer-pytorch on this CPU.

Both run the same configuration with the same random weights: the peer's model is built
with random tensors, saved with ``save_pretrained`` and converted with our converter. For
each configuration and batch size the script times whole forwards (ours: compiled beforehand;
both: the best of ``--repeats`` timed runs, alternating ours and the peer so that load from
other processes hits both alike), reports sequences/s at each tool's best batch size, and
checks that the outputs agree (relative error on the same input). The small configuration is
the demo's (C = 96, 2 layers, 24,576 bp); there the peer's mis-normalised gamma features are
replaced by TensorFlow's formula so both compute the same function. The full configuration is
the published model (C = 1536, 11 layers, 196,608 bp; the peer with ``use_tf_gamma=True``).

The last line compares the full model (the small one with ``--configs small``):

    enformer: ratio=X (ours S s, enformer-pytorch P s)

X = peer seconds per sequence / ours, each at its best batch size (> 1: ours is faster).

Run: .venv/bin/python benchmarks/bench_enformer.py [--configs small,full]
     [--small-batches 1,2,4,8] [--full-batches 1] [--repeats 3] [--full-repeats 2]

On 2 CPU cores the defaults take about 2–3 minutes (the full configuration: building and
converting 251 M random parameters, one compile, two timed forwards of each tool).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np

from apoe_assets.enformer.convert import convert, load_params
from apoe_assets.enformer.debug import relative_error
from apoe_assets.enformer.inference import Predictor
from apoe_assets_tests.enformer.peer import (
    modeling,
    random_one_hot,
    random_peer,
    save_checkpoint,
    tf_axis_gamma,
    torch,
)

CONFIGS: dict[str, dict[str, Any]] = {
    "small": dict(dim=96, depth=2, heads=8, target_length=112, dim_divisible_by=16,
                  output_heads=dict(human=12), use_tf_gamma=False),
    "full": dict(use_tf_gamma=True),
}
HEAD = "human"
AGREEMENT = 1e-4
"""Relative error above which the outputs are said to disagree (default matmul precision)."""


@dataclass
class Timing:
    """Best seconds per forward of one tool at one batch size."""

    batch: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.batch / self.seconds


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Seconds one call takes, and what it returned."""
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def bench_config(name: str, batches: list[int], repeats: int, seed: int = 0
                 ) -> tuple[Timing, Timing, float]:
    """Best timing of ours and of the peer, and their relative error, for one config."""
    hparams = CONFIGS[name]
    if not hparams.get("use_tf_gamma"):
        modeling.get_positional_features_gamma = tf_axis_gamma  # same function both sides
    peer = random_peer(seed=seed, **hparams)
    with tempfile.TemporaryDirectory() as tmp:
        save_checkpoint(peer, Path(tmp) / "ckpt")
        convert(Path(tmp) / "ckpt", Path(tmp) / "ours.safetensors")
        config, params = load_params(Path(tmp) / "ours.safetensors")
    print(f"\n[{name}] C={config.channels}, layers={config.num_transformer_layers}, "
          f"L={config.sequence_length:,} bp, {config.target_length} bins; torch threads "
          f"{torch.get_num_threads()}, JAX devices {jax.device_count()}", flush=True)

    ours_best: dict[int, float] = {}
    peer_best: dict[int, float] = {}
    error = float("nan")
    for batch in batches:
        x = random_one_hot(batch, config.sequence_length, seed=seed + batch)
        inputs = list(x)
        predictor = Predictor(config, params, head=HEAD, batch_size=batch)
        compile_s, _ = _timed(lambda p=predictor, i=inputs: p.predict(i))
        x_torch = torch.from_numpy(x)

        def run_peer(xt: Any = x_torch) -> Any:
            with torch.no_grad():
                return peer(xt, head=HEAD)

        for repeat in range(repeats):
            ours_s, ours_out = _timed(lambda p=predictor, i=inputs: p.predict(i))
            peer_s, peer_out = _timed(run_peer)
            ours_best[batch] = min(ours_best.get(batch, np.inf), ours_s)
            peer_best[batch] = min(peer_best.get(batch, np.inf), peer_s)
            if batch == batches[0] and repeat == 0:  # the timed outputs themselves
                error = relative_error(ours_out, peer_out.numpy())
        print(f"  batch {batch}: ours {batch / ours_best[batch]:.3f} seq/s (first call incl. "
              f"compile {compile_s:.1f} s), enformer-pytorch {batch / peer_best[batch]:.3f} "
              f"seq/s", flush=True)
        del predictor
    ours = max((Timing(b, s) for b, s in ours_best.items()), key=lambda t: t.per_second)
    theirs = max((Timing(b, s) for b, s in peer_best.items()), key=lambda t: t.per_second)
    print(f"  best: ours {ours.per_second:.3f} seq/s (batch {ours.batch}), enformer-pytorch "
          f"{theirs.per_second:.3f} seq/s (batch {theirs.batch}); ratio "
          f"{ours.per_second / theirs.per_second:.2f}; relative error of outputs {error:.2e} "
          f"({'agree' if error <= AGREEMENT else 'DISAGREE'})", flush=True)
    if not error <= AGREEMENT:
        raise SystemExit(f"{name}: outputs disagree (relative error {error:.2e})")
    return ours, theirs, error


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="small,full")
    parser.add_argument("--small-batches", type=_ints, default=[1, 2, 4, 8])
    parser.add_argument("--full-batches", type=_ints, default=[1],
                        help="full size: one forward is ~25–40 s per sequence on 2 cores for "
                        "either tool, so larger batches only add minutes (both are "
                        "compute-bound at batch 1)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs (small)")
    parser.add_argument("--full-repeats", type=int, default=2,
                        help="timed runs (full; best of 2 damps load from other processes)")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    results = {}
    for name in args.configs.split(","):
        batches = args.full_batches if name == "full" else args.small_batches
        repeats = args.full_repeats if name == "full" else args.repeats
        results[name] = bench_config(name, batches, repeats)
    name = "full" if "full" in results else next(iter(results))
    ours, theirs, _ = results[name]
    ours_s, peer_s = 1 / ours.per_second, 1 / theirs.per_second
    note = "" if name == "full" else f" [{name} configuration]"
    print(f"enformer: ratio={peer_s / ours_s:.2f} (ours {ours_s:.2f} s, enformer-pytorch "
          f"{peer_s:.2f} s){note}")


if __name__ == "__main__":
    main()
