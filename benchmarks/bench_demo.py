"""The whole demo (what `make demo` runs), stage by stage, from Dagster's own step timings.

Materialises every asset of the bundled demo study into a fresh temporary instance and
storage, twice:

- ``ranged`` (ours, what `make demo` does): each gene asset takes up to ``genes_per_run``
  genes a run (its backfill policy), so a model is loaded and compiled, the chromosome read,
  once a range;
- ``per_gene`` (the baseline): one run per gene, as a backfill of assets without a multi-run
  policy would run them.

For each it prints the wall time of every run and, per asset, the summed step time (Dagster's
``get_run_step_stats``; checks are listed as ``<asset>_<check>``), then the total wall time.

The last line:

    demo: ratio=X (ours S s, per-gene runs P s)

Run: .venv/bin/python benchmarks/bench_demo.py [--plans ranged,per_gene]
(about 5 + 11 minutes on 2 cores). ``--plans ranged`` times only ours.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import dagster as dg

from apoe_assets.definitions import build_definitions
from apoe_assets.materialize import materialize_all
from apoe_assets.study import DEMO_STUDY, load_study
from apoe_assets_tests.studies import demo_copy

GOAL_SECONDS = 300


def run_demo(folder: Path, genes_per_run: int | None) -> float:
    """Materialise the demo into ``folder``; print per-run and per-asset times; return the
    wall seconds."""
    fields = {} if genes_per_run is None else {"genes_per_run": genes_per_run}
    study = load_study(demo_copy(folder, **fields))
    home = folder / "dagster_home"
    home.mkdir()
    with dg.DagsterInstance.from_config(str(home)) as instance:
        started = time.perf_counter()
        results = materialize_all(build_definitions(study), instance,
                                  report=lambda line: print(f"  {line}", flush=True))
        wall = time.perf_counter() - started
        if not all(r.success for r in results):
            raise SystemExit("the demo failed; see above")
        by_step: dict[str, float] = defaultdict(float)
        for result in results:
            for stats in instance.get_run_step_stats(result.run_id):
                if stats.end_time and stats.start_time:
                    by_step[stats.step_key] += stats.end_time - stats.start_time
    print("  step time by asset (s):")
    for step, seconds in sorted(by_step.items(), key=lambda item: -item[1]):
        if seconds >= 0.5:
            print(f"    {step:<36} {seconds:7.1f}")
    print(f"  steps {sum(by_step.values()):.1f} s, wall {wall:.1f} s")
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plans", default="ranged,per_gene")
    plans = parser.parse_args().plans.split(",")
    print(f"demo study {DEMO_STUDY}")
    seconds = {}
    for plan in plans:
        print(f"{plan}:", flush=True)
        with tempfile.TemporaryDirectory(prefix=f"apoe-bench-demo-{plan}-") as folder:
            seconds[plan] = run_demo(Path(folder), None if plan == "ranged" else 1)
    ours = seconds.get("ranged")
    if ours is not None:
        print(f"goal: {GOAL_SECONDS} s; ours {ours:.0f} s "
              f"({'within' if ours <= GOAL_SECONDS else 'over'} it)")
    if ours is not None and "per_gene" in seconds:
        peer = seconds["per_gene"]
        print(f"demo: ratio={ours / peer:.2f} (ours {ours:.1f} s, per-gene runs {peer:.1f} s)")


if __name__ == "__main__":
    main()
