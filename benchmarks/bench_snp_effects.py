"""SNP effects: incremental ALT inference vs naive full forwards of every ALT sequence.

Both paths are our own model (:mod:`apoe_assets.enformer.model`) with the same parameters, in
float32 on this CPU, every head computed. The naive path runs a full forward of each ALT
sequence (the reference window with one SNV written in), batched and jit-compiled. The
incremental path (:class:`~apoe_assets.enformer.incremental.IncrementalScorer`) computes the
reference's stem + tower once, and per ALT recomputes the tower over a 12-bin slice around the
variant, splices it in and runs the transformer and heads. Outputs are checked equal
(``max |incremental − full| / max |full|`` per head ≤ 1e-5), else the script exits non-zero.

Two windows:

- ``demo``: every SNV of the cohort (the demo VCF) inside one demo gene's model window (APOE
  by default; demo weights ``data/demo/enformer/weights.safetensors``, the small model, 24,576
  bp); prints variants/s of both paths.
- ``full``: the published size (C = 1536, 11 layers, 196,608 bp, 5,313 + 1,643 tracks), random
  weights and a random window, ``--full-variants`` SNVs (the first and last base, the TSS at
  the centre, the rest at random).

Timing: every compiled function is called once before timing (its compile is not counted);
each path then runs once, timed. Both paths need the reference's outputs once per gene (the
naive path: a full forward of REF; the incremental one: the tower and trunk of REF, the same
work), so the ratio compares the ALT work: ``F`` = seconds of the naive full forwards of the
ALT sequences, ``S`` = seconds of the incremental ALT outputs given the reference. A line
above it also gives the per-window ratio with the one reference forward added to both.

The last line (the full window; the demo's with ``--windows demo``):

    snp_effects: ratio=X (incremental S s, full forwards F s)

Run: .venv/bin/python benchmarks/bench_snp_effects.py [--windows demo,full] [--gene APOE]
     [--full-variants 8] [--batch 8] [--full-batch 2]

On 2 CPU cores the full window dominates: one full forward is ~30–60 s, so 8 variants take
about 10 minutes in all (the warm-up runs included).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from apoe_assets.enformer.convert import load_params
from apoe_assets.enformer.incremental import IncrementalScorer, ReceptiveField
from apoe_assets.enformer.model import EnformerConfig, build, random_params
from apoe_assets.genomics.annotation import gene_window, read_annotation
from apoe_assets.genomics.fasta import ReferenceGenome
from apoe_assets.genomics.onehot import ORDER, one_hot
from apoe_assets.genomics.vcf import open_vcf
from apoe_assets.study import load_study

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "data" / "demo" / "study.yaml"
TOLERANCE = 1e-5
"""``max |incremental − full| / max |full|`` per head above which the outputs disagree."""


def relative_max_error(ours: np.ndarray, full: np.ndarray) -> float:
    ours64, full64 = np.asarray(ours, np.float64), np.asarray(full, np.float64)
    return float(np.abs(ours64 - full64).max() / max(np.abs(full64).max(), 1e-30))


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def demo_window(gene: str) -> tuple[EnformerConfig, Any, np.ndarray, np.ndarray, np.ndarray]:
    """``(config, params, reference one-hot, SNV positions, ALT one-hot rows)`` of one gene."""
    study = load_study(STUDY)
    config, params = load_params(study.enformer.weights)
    genes = read_annotation(study.annotation)
    row = genes[genes["symbol"] == gene]
    if row.empty:
        raise SystemExit(f"gene {gene} not in {study.annotation}")
    window = gene_window(row.iloc[0], config.sequence_length)
    reference = ReferenceGenome(study.reference_fasta)
    bases = reference.fetch(window)
    reference.close()
    vcf_path = (study.genotypes if isinstance(study.genotypes, Path)
                else Path(str(study.genotypes)))
    vcf = open_vcf(vcf_path, need_index=True)
    positions, alts = [], []
    for record in vcf(f"{window.chrom}:{window.start + 1}-{window.end}"):
        pos0 = record.POS - 1
        if not window.start <= pos0 < window.end or len(record.REF) != 1:
            continue
        if chr(bases[pos0 - window.start]) != record.REF.upper():
            continue  # REF disagrees with the reference: snp_effects skips these too
        for alt in record.ALT:
            if len(alt) == 1 and alt.upper() in ORDER:
                positions.append(pos0 - window.start)
                alts.append(alt.upper())
    vcf.close()
    print(f"\n[demo] {gene}: window {window.chrom}:{window.start + 1:,}-{window.end:,} "
          f"({config.sequence_length:,} bp), {len(positions)} SNVs; C={config.channels}, "
          f"layers={config.num_transformer_layers}, heads {config.heads}", flush=True)
    alt_rows = one_hot("".join(alts))[0] if alts else np.zeros((0, 4), np.float32)
    return config, params, one_hot(bases)[0], np.asarray(positions, np.int64), alt_rows


def full_window(variants: int, seed: int = 0
                ) -> tuple[EnformerConfig, Any, np.ndarray, np.ndarray, np.ndarray]:
    """The published size, random weights and window, SNVs at both ends, the TSS and random."""
    config = EnformerConfig.full()
    started = time.perf_counter()
    params = random_params(config, seed=seed)
    rng = np.random.default_rng(seed)
    ref = np.eye(4, dtype=np.float32)[rng.integers(0, 4, config.sequence_length)]
    length = config.sequence_length
    fixed = [0, length - 1, length // 2]
    positions = np.array((fixed + list(rng.integers(0, length, max(variants - 3, 0))))
                         [:variants], np.int64)
    new = (ref[positions].argmax(-1) + rng.integers(1, 4, len(positions))) % 4
    print(f"\n[full] C={config.channels}, layers={config.num_transformer_layers}, "
          f"L={length:,} bp, heads {config.heads}; {len(positions)} SNVs; random weights "
          f"({time.perf_counter() - started:.0f} s)", flush=True)
    return config, params, ref, positions, np.eye(4, dtype=np.float32)[new]


def naive_forwards(config: EnformerConfig, params: Any, ref: np.ndarray,
                   positions: np.ndarray, alts: np.ndarray, batch: int,
                   forward: Callable[..., Any]) -> dict[str, np.ndarray]:
    """Full forwards of every ALT sequence, ``batch`` at a time (last batch padded)."""
    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(positions), batch):
        rows = np.arange(start, min(start + batch, len(positions)))
        x = np.repeat(ref[None], batch, axis=0)
        x[np.arange(len(rows)), positions[rows]] = alts[rows]
        for head, value in forward(params, jnp.asarray(x)).items():
            parts.setdefault(head, []).append(np.asarray(value)[:len(rows)])
    return {h: np.concatenate(v) for h, v in parts.items()}


def bench(name: str, config: EnformerConfig, params: Any, ref: np.ndarray,
          positions: np.ndarray, alts: np.ndarray, batch: int) -> tuple[float, float, float]:
    """``(S, F, R)``: incremental ALT seconds, naive ALT seconds, one reference forward."""
    field = ReceptiveField.of(config)
    print(f"  receptive field: ±{field.margin_bp[0]} bp → splice {field.affected_bins} bins, "
          f"recompute {field.slice_bins} of {field.bins} bins ({field.slice_bp:,} bp) per ALT",
          flush=True)
    device_params = jax.device_put(params)
    forward = jax.jit(build(config).apply)
    scorer = IncrementalScorer(device_params, config)
    n = len(positions)

    # warm-up: compile every function (the first reference call is also the REF check)
    warm_ref_s, state = _timed(lambda: scorer.reference(ref))
    warm_alt_s, _ = _timed(lambda: scorer.alt_outputs(state, positions[:batch], alts[:batch],
                                                      batch_size=batch))
    warm_full_s, full_ref = _timed(lambda: naive_forwards(config, device_params, ref,
                                                          positions[:1], ref[positions[:1]],
                                                          batch, forward))
    ref_error = max(relative_max_error(state.outputs[h], full_ref[h][0]) for h in full_ref)
    print(f"  warm-up (compiles): reference {warm_ref_s:.1f} s, ALT batch {warm_alt_s:.1f} s, "
          f"full forward batch {warm_full_s:.1f} s; reference via tower+trunk vs full "
          f"forward: {ref_error:.1e}", flush=True)

    ref_s, state = _timed(lambda: scorer.reference(ref))
    inc_s, ours = _timed(lambda: scorer.alt_outputs(state, positions, alts, batch_size=batch))
    full_s, theirs = _timed(lambda: naive_forwards(config, device_params, ref, positions, alts,
                                                   batch, forward))
    errors = {h: relative_max_error(ours[h], theirs[h]) for h in theirs}
    effects = {h: float(np.abs(theirs[h] - state.outputs[h][None]).max()
                        / np.abs(theirs[h]).max()) for h in theirs}
    agree = all(e <= TOLERANCE for e in errors.values())
    error_text = ", ".join(f"{h} {e:.1e}" for h, e in errors.items())
    effect_text = ", ".join(f"{h} {e:.1e}" for h, e in effects.items())
    print(f"  outputs: max|Δ|/max|full| per head {error_text} ({'equal' if agree else 'DIFFER'}"
          f", tolerance {TOLERANCE:g}); largest ALT effect, max|ALT − REF|/max|full|, "
          f"{effect_text}", flush=True)
    if not agree:
        raise SystemExit(f"{name}: incremental outputs differ from full forwards: {errors}")
    print(f"  {n} ALTs: incremental {inc_s:.2f} s ({n / inc_s:.2f} variants/s), full forwards "
          f"{full_s:.2f} s ({n / full_s:.2f} variants/s), batch {batch}; reference "
          f"(tower + trunk) {ref_s:.2f} s", flush=True)
    per_ref = full_s / n  # a full forward of REF costs what one of an ALT does
    print(f"  ratio ALT work {full_s / inc_s:.2f}; per window with the reference forward "
          f"added to both {(full_s + per_ref) / (inc_s + ref_s):.2f}", flush=True)
    return inc_s, full_s, ref_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", default="demo,full")
    parser.add_argument("--gene", default="APOE")
    parser.add_argument("--batch", type=int, default=8, help="ALTs per call (demo)")
    parser.add_argument("--full-variants", type=int, default=8)
    parser.add_argument("--full-batch", type=int, default=2,
                        help="ALTs per call at full size (the CPU is compute-bound at 1–2)")
    args = parser.parse_args()
    results = {}
    for name in args.windows.split(","):
        if name == "demo":
            window = demo_window(args.gene)
            results[name] = bench(name, *window, batch=args.batch)
        elif name == "full":
            window = full_window(args.full_variants)
            results[name] = bench(name, *window, batch=args.full_batch)
        else:
            raise SystemExit(f"unknown window {name!r} (demo, full)")
    name = "full" if "full" in results else next(iter(results))
    inc_s, full_s, _ = results[name]
    note = "" if name == "full" else f" [{name} window]"
    print(f"snp_effects: ratio={full_s / inc_s:.2f} (incremental {inc_s:.2f} s, full forwards "
          f"{full_s:.2f} s){note}")


if __name__ == "__main__":
    main()
