"""Materialise every asset of a study, partition by partition, into a Dagster instance.

``make demo`` runs this on the bundled study into the persistent instance under
``$DAGSTER_HOME``, so the UI later shows the whole history.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass

import dagster as dg

from apoe_assets.definitions import build_definitions
from apoe_assets.orchestration.automation import OBSERVE_JOB, RANGE_END, RANGE_START, run_size
from apoe_assets.study import load_study

QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


@dataclass(frozen=True)
class Step:
    """One run: the assets of one partitions definition, for a contiguous range of its
    partition keys (empty: unpartitioned)."""

    assets: tuple[dg.AssetKey, ...]
    partition_keys: tuple[str, ...] = ()

    def label(self) -> str:
        names = ", ".join(k.to_user_string() for k in self.assets)
        if not self.partition_keys:
            return names
        first, last = self.partition_keys[0], self.partition_keys[-1]
        return f"{names} [{first}{'' if first == last else f'…{last}'}]"

    def execution(self) -> dict:
        """``execute_in_process`` arguments that select this step's partitions."""
        if len(self.partition_keys) == 1:
            return {"partition_key": self.partition_keys[0]}
        if self.partition_keys:
            return {"tags": {RANGE_START: self.partition_keys[0],
                             RANGE_END: self.partition_keys[-1]}}
        return {}


def plan(defs: dg.Definitions, selection: dg.AssetSelection | None = None) -> list[Step]:
    """Runs that materialise everything (or ``selection``) in dependency order, as few as
    possible: assets that share a partitions definition run together (unpartitioned first),
    over ranges of keys as long as every asset's backfill policy allows (a model is then
    loaded and compiled, a chromosome read, once a range, not once a gene)."""
    graph = defs.resolve_asset_graph()
    remaining = set(graph.materializable_asset_keys)
    if selection is not None:
        remaining &= selection.resolve(graph)
    segments: list[tuple[dg.PartitionsDefinition | None, list[dg.AssetKey]]] = []
    while remaining:
        ready = sorted((k for k in remaining if not graph.get(k).parent_keys & remaining),
                       key=lambda k: (graph.get(k).partitions_def is not None, k.to_string()))
        current = segments[-1][0] if segments else None
        same = [k for k in ready if graph.get(k).partitions_def == current]
        if segments and same:
            segments[-1][1].extend(same)
        else:
            same = [k for k in ready if graph.get(k).partitions_def == graph.get(ready[0])
                    .partitions_def]
            segments.append((graph.get(ready[0]).partitions_def, same))
        remaining -= set(same)
    steps = []
    for partitions_def, keys in segments:
        if partitions_def is None:
            steps.append(Step(tuple(keys)))
            continue
        order = partitions_def.get_partition_keys()
        size = run_size(graph, keys, len(order))
        steps += [Step(tuple(keys), tuple(order[i:i + size]))
                  for i in range(0, len(order), size)]
    return steps


def materialize_all(defs: dg.Definitions, instance: dg.DagsterInstance,
                    report: Callable[[str], None] = print,
                    selection: dg.AssetSelection | None = None
                    ) -> list[dg.ExecuteInProcessResult]:
    """Run every :func:`plan` step; stop at the first failure (earlier outputs stay). A run
    of everything first observes the input files (their fingerprints are the data versions
    the UI's staleness starts from)."""
    job = defs.resolve_implicit_global_asset_job_def()
    results = []
    if selection is None:
        started = time.perf_counter()
        observed = defs.resolve_job_def(OBSERVE_JOB).execute_in_process(
            instance=instance, run_config=QUIET, raise_on_error=False)
        results.append(observed)
        report(f"[0] observe input files: {'ok' if observed.success else 'FAILED'} "
               f"({time.perf_counter() - started:.1f} s)")
        if not observed.success:
            return results
    steps = plan(defs, selection)
    for number, step in enumerate(steps, start=1):
        started = time.perf_counter()
        result = job.execute_in_process(instance=instance, asset_selection=list(step.assets),
                                        run_config=QUIET, raise_on_error=False,
                                        **step.execution())
        results.append(result)
        status = "ok" if result.success else "FAILED"
        report(f"[{number}/{len(steps)}] {step.label()}: {status} "
               f"({time.perf_counter() - started:.1f} s)")
        if not result.success:
            break
    return results


def main() -> None:
    """Materialise the study of ``APOE_STUDY`` (default: the demo) into ``$DAGSTER_HOME``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", help="study YAML (default: $APOE_STUDY or the demo)")
    args = parser.parse_args()
    study = load_study(args.study)
    defs = build_definitions(study)
    instance = dg.DagsterInstance.get()
    print(f"study {study.name}: {len(study.gene_table)} genes on "
          f"{', '.join(study.chromosomes)}; storage {study.storage_root}")
    results = materialize_all(defs, instance)
    if not all(r.success for r in results):
        raise SystemExit("materialisation failed; earlier outputs are intact")
    print(summary(results))


def summary(results: list[dg.ExecuteInProcessResult]) -> str:
    """A short table of what was made: materialisations per asset, checks passed."""
    made: dict[str, int] = {}
    checks = passed = 0
    failed = []
    for result in results:
        for event in result.get_asset_materialization_events():
            key = event.asset_key.to_user_string()
            made[key] = made.get(key, 0) + 1
        for evaluation in result.get_asset_check_evaluations():
            checks += 1
            passed += evaluation.passed
            if not evaluation.passed:
                partition = f" [{evaluation.partition}]" if evaluation.partition else ""
                failed.append(f"  {evaluation.severity.value.lower()}: "
                              f"{evaluation.asset_key.to_user_string()} "
                              f"{evaluation.check_name}{partition}")
    lines = ["made:"] + [f"  {key:<20} {n} partition(s)" for key, n in made.items()]
    lines.append(f"checks: {passed}/{checks} passed")
    return "\n".join(lines + failed)


if __name__ == "__main__":
    main()
