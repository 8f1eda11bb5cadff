"""Command line: ``python -m apoe_assets.demo [--out data/demo] [--seed N] [--samples N]
[--genes default|all] [--enformer-genes APOE,TOMM40,APOC1|none]``."""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

from apoe_assets.demo.enformer_component import ENFORMER_GENES
from apoe_assets.demo.genes import GENE_SETS
from apoe_assets.demo.study import DEFAULT_SAMPLES, DEFAULT_SEED, simulate_study

DEFAULT_OUT = Path("data/demo")
NO_GENES = "none"


def gene_list(text: str) -> tuple[str, ...]:
    """``APOE,TOMM40`` → ``("APOE", "TOMM40")``; ``none`` → ``()``."""
    if text.strip().lower() == NO_GENES:
        return ()
    symbols = tuple(s.strip() for s in text.split(",") if s.strip())
    if not symbols:
        raise argparse.ArgumentTypeError(f"expected gene symbols separated by commas or "
                                         f"{NO_GENES!r}, got {text!r}")
    return symbols


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m apoe_assets.demo",
        description="Write the planted-truth APOE demo study (byte-identical for equal "
                    "arguments).")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"study folder (default {DEFAULT_OUT})")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED,
                        help=f"random seed (default {DEFAULT_SEED})")
    parser.add_argument("--samples", type=int, default=DEFAULT_SAMPLES,
                        help=f"diploid samples (default {DEFAULT_SAMPLES})")
    parser.add_argument("--genes", choices=GENE_SETS, default="default",
                        help="study genes: the 12 nearest APOE (default) or all 30")
    parser.add_argument("--enformer-genes", type=gene_list, default=ENFORMER_GENES,
                        help="study genes given an expression component predicted by the demo "
                             f"Enformer weights, comma-separated, or {NO_GENES!r} (default "
                             f"{','.join(ENFORMER_GENES)})")
    parser.add_argument("--threads", type=int, default=2,
                        help="compression threads (output is the same for any number)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the simulator with progress lines on stdout."""
    args = parse_args(argv)
    started = time.perf_counter()

    def progress(message: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f}s] {message}", flush=True)

    study = simulate_study(args.out, seed=args.seed, n_samples=args.samples, genes=args.genes,
                           progress=progress, threads=args.threads,
                           enformer_genes=args.enformer_genes)
    progress(f"done: {study}")


if __name__ == "__main__":
    main()
