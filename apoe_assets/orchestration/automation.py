"""When the assets run without anyone calling a function: jobs, schedules, sensors and
declarative automation for one study.

- **Jobs**: one per stage (asset group) and ``locus``, every gene-partitioned asset, for the
  genes picked in the launchpad; ``observe_inputs`` fingerprints the study's input files.
- **Cheap assets** (ingestion, ``cv_folds``, ``gene_locus``) follow
  ``AutomationCondition.eager()``: built when missing and rebuilt when an input file's
  observed fingerprint changes, by the ``cheap_assets`` automation sensor. Nothing that runs
  Enformer is automated this way: one changed VCF would launch a GPU run per gene.
- **``refresh_stale_genes``** (cron ``orchestration.refresh_cron``, default weekly): runs for
  every gene partition missing or stale (Dagster's staleness: code version or an upstream data
  version changed), whose upstream outside the gene stage is fresh, in contiguous ranges of at
  most ``genes_per_run`` genes (the gene assets' backfill policy), genes needing the same
  assets together.
- **``input_files_changed``** (sensor): when an input file's observed data version changes, the
  gene partitions built from it are noted; once the cheap assets between them and the file
  have been rebuilt, the ones that went stale are requested, batched the same way (a file
  rewritten with the same content leaves the genotypes' digest, so nothing, stale).
- **``refresh_all_genes_assets``** (sensor): the assets that read every gene (stacking, model
  comparison, SNP-effect summary) once none of their gene inputs is out of date or being built.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterable, Sequence

import dagster as dg
from dagster._core.definitions.data_version import DATA_VERSION_TAG, StaleStatus

from apoe_assets.assets.sources import GROUP as SOURCES_GROUP
from apoe_assets.orchestration.freshness import (
    OUT_OF_DATE,
    Freshness,
    batches,
    by_asset,
    downstream_partitions,
)
from apoe_assets.partitions import StudyPartitions
from apoe_assets.study import Study

STAGES = ("ingestion", "genes", "statistics", "enformer", "models")
"""Asset groups, one job each (``stage_<group>``)."""
CHEAP_ASSETS = ("reference_genome", "gene_annotation", "genotypes", "expression", "covariates",
                "cv_folds", "gene_locus")
"""Assets cheap enough to build on every change: declarative automation, ``eager``."""
LOCUS_JOB = "locus"
OBSERVE_JOB = "observe_inputs"
RANGE_START, RANGE_END = ("dagster/asset_partition_range_start",
                          "dagster/asset_partition_range_end")
IN_FLIGHT = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED,
             dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]
REASON_TAG = "apoe/requested_by"


def gene_assets(graph, parts: StudyPartitions) -> list[dg.AssetKey]:
    """Materialisable assets partitioned by gene, in topological order."""
    return [key for key in graph.toposorted_asset_keys
            if graph.get(key).is_materializable and graph.get(key).partitions_def == parts.genes]


def all_genes_assets(graph, parts: StudyPartitions) -> list[dg.AssetKey]:
    """Unpartitioned assets downstream of a gene asset (they read every gene)."""
    genes = set(gene_assets(graph, parts))
    return [key for key in graph.toposorted_asset_keys
            if graph.get(key).is_materializable and graph.get(key).partitions_def is None
            and graph.get(key).parent_keys & genes]


def run_size(graph, keys: Iterable[dg.AssetKey], partitions: int) -> int:
    """Most gene partitions one run of ``keys`` may take: the smallest of their backfill
    policies (no policy: one partition a run, as Dagster's backfills run it)."""
    sizes = [partitions]
    for key in keys:
        policy = graph.get(key).backfill_policy
        if policy is None:
            return 1
        sizes.append(policy.max_partitions_per_run or partitions)
    return min(sizes)


def gene_run_requests(fresh: Freshness, parts: StudyPartitions, keys: Sequence[dg.AssetKey],
                      genes: Sequence[str], reason: str, occasion: str,
                      statuses: Sequence[StaleStatus] = OUT_OF_DATE
                      ) -> tuple[list[dg.RunRequest], list[str]]:
    """Runs of the ``locus`` job for the assets of ``keys`` whose status in ``genes`` is one
    of ``statuses`` (default: missing or stale): genes needing the same assets together, in
    contiguous ranges as long as every needed asset's backfill policy allows (:func:`run_size`).
    Each run key names the ``occasion`` (a tick, a set of input versions), the genes and the
    assets, so the same request on the same occasion is launched once. Returns the requests
    and the genes left waiting for upstream outside the gene stage."""
    order = parts.genes.get_partition_keys()
    stale = fresh.out_of_date_partitions(keys, genes, statuses)
    outside = set(fresh.graph.materializable_asset_keys) - set(keys)
    waiting = [g for g, ks in stale.items()
               if not all(fresh.upstream_ready(k, g, outside) for k in ks)]
    by_need: dict[tuple[dg.AssetKey, ...], list[str]] = {}
    for gene, needed in stale.items():
        if gene not in waiting:
            by_need.setdefault(tuple(needed), []).append(gene)
    requests = []
    for needed, group in by_need.items():
        assets = zlib.crc32(",".join(k.to_user_string() for k in needed).encode())
        for run in batches(group, order, run_size(fresh.graph, needed, len(order))):
            run_key = f"{occasion}:{run[0]}..{run[-1]}:{assets:08x}"
            if len(run) == 1:
                requests.append(dg.RunRequest(run_key=run_key, asset_selection=list(needed),
                                              partition_key=run[0], tags={REASON_TAG: reason}))
            else:
                requests.append(dg.RunRequest(run_key=run_key, asset_selection=list(needed),
                                              tags={RANGE_START: run[0], RANGE_END: run[-1],
                                                    REASON_TAG: reason}))
    return requests, waiting


def latest_source_versions(instance: dg.DagsterInstance, graph) -> dict[str, str]:
    """The latest observed data version of every source asset partition, by
    ``key`` or ``key/partition``."""
    versions = {}
    for key in graph.observable_asset_keys:
        node = graph.get(key)
        for partition in (node.partitions_def.get_partition_keys() if node.partitions_def
                          else [None]):
            record = instance.get_latest_data_version_record(key, is_source=True,
                                                             partition_key=partition)
            if record is None:
                continue
            observation = record.asset_observation
            version = observation.tags.get(DATA_VERSION_TAG) if observation else None
            if version is not None:
                label = key.to_user_string() + (f"/{partition}" if partition else "")
                versions[label] = version
    return versions


def _changed_sources(before: dict[str, str], now: dict[str, str]
                     ) -> list[tuple[dg.AssetKey, str | None]]:
    changed = []
    for label, version in now.items():
        if label in before and before[label] != version:
            key, _, partition = label.partition("/")
            changed.append((dg.AssetKey(key), partition or None))
    return changed


def runs_in_flight(instance: dg.DagsterInstance) -> bool:
    """Whether any run is queued or running."""
    return bool(instance.get_run_ids(dg.RunsFilter(statuses=IN_FLIGHT), limit=1))


def automation_definitions(study: Study, parts: StudyPartitions,
                           graph) -> tuple[list, list, list]:
    """The jobs, schedules and sensors of a study (``graph``: its resolved asset graph)."""
    settings = study.orchestration
    genes = gene_assets(graph, parts)
    aggregates = all_genes_assets(graph, parts)
    locus = dg.define_asset_job(LOCUS_JOB, selection=dg.AssetSelection.assets(*genes),
                                partitions_def=parts.genes,
                                description="Every gene-partitioned asset, for the genes "
                                            "picked in the launchpad.")
    observe = dg.define_asset_job(OBSERVE_JOB, selection=dg.AssetSelection.groups(
        SOURCES_GROUP, include_sources=True), description="Fingerprint the study's input files.")
    aggregate = dg.define_asset_job("all_genes_assets",
                                    selection=dg.AssetSelection.assets(*aggregates))
    stages = [dg.define_asset_job(f"stage_{group}", selection=dg.AssetSelection.groups(group),
                                  description=f"The {group} stage.")
              for group in STAGES]

    @dg.schedule(name="refresh_stale_genes", job=locus, cron_schedule=settings.refresh_cron,
                 default_status=dg.DefaultScheduleStatus.RUNNING,
                 description="Runs for every gene partition that is missing or stale.")
    def refresh_stale_genes(context: dg.ScheduleEvaluationContext):
        fresh = Freshness(context.instance, context.repository_def.asset_graph)
        requests, waiting = gene_run_requests(
            fresh, parts, genes, parts.genes.get_partition_keys(), "schedule",
            context.scheduled_execution_time.isoformat())
        if waiting:
            context.log.info(f"waiting for upstream of {len(waiting)} gene(s): "
                             f"{', '.join(waiting[:10])}")
        return requests or dg.SkipReason("no gene partition is missing or stale"
                                         + (f" with fresh upstream ({len(waiting)} waiting)"
                                            if waiting else ""))

    observe_schedule = dg.ScheduleDefinition(
        name="observe_input_files", job=observe, cron_schedule=settings.observe_cron,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Fingerprint the input files, so a changed file marks its assets stale.")

    @dg.sensor(name="input_files_changed", jobs=[locus],
               minimum_interval_seconds=settings.sensor_seconds,
               default_status=dg.DefaultSensorStatus.RUNNING,
               description="Gene partitions built from an input file whose fingerprint "
                           "changed, once the cheap assets in between are rebuilt.")
    def input_files_changed(context: dg.SensorEvaluationContext):
        graph_now = context.repository_def.asset_graph
        state = json.loads(context.cursor) if context.cursor else {"versions": {},
                                                                     "pending": []}
        now = latest_source_versions(context.instance, graph_now)
        changed = _changed_sources(state["versions"], now)
        pending = set(state["pending"])
        touched = by_asset(downstream_partitions(graph_now, changed))
        for key in genes:
            pending |= {p for p in touched.get(key, ()) if p is not None}
        fresh = Freshness(context.instance, graph_now)
        outside = set(graph_now.materializable_asset_keys) - set(genes)
        occasion = f"{zlib.crc32(json.dumps(now, sort_keys=True).encode()):08x}"
        waiting = [g for g in _ordered(parts, pending)
                   if not _built_upstream_ready(fresh, genes, g, outside)]
        ready = [g for g in _ordered(parts, pending) if g not in waiting]
        requests, _ = (gene_run_requests(fresh, parts, genes, ready, "input file changed",
                                         occasion, statuses=[StaleStatus.STALE])
                       if ready else ([], []))
        context.update_cursor(json.dumps({"versions": now, "pending": sorted(waiting)}))
        if changed:
            context.log.info("changed: " + ", ".join(
                k.to_user_string() + (f"[{p}]" if p else "") for k, p in changed))
        return requests or dg.SkipReason(
            f"{len(waiting)} gene(s) waiting for upstream" if waiting
            else "no input file changed")

    @dg.sensor(name="refresh_all_genes_assets", job=aggregate,
               minimum_interval_seconds=5 * settings.sensor_seconds,
               default_status=dg.DefaultSensorStatus.RUNNING,
               description="The all-genes assets, once no gene input is out of date and "
                           "nothing runs.")
    def refresh_all_genes_assets(context: dg.SensorEvaluationContext):
        fresh = Freshness(context.instance, context.repository_def.asset_graph)
        out = [k for k in aggregates if fresh.out_of_date(k)]
        if not out:
            return dg.SkipReason("the all-genes assets are up to date")
        if runs_in_flight(context.instance):
            return dg.SkipReason("runs in flight")
        partitions = parts.genes.get_partition_keys()
        blocked = fresh.out_of_date_partitions(genes, partitions)
        if blocked:
            return dg.SkipReason(f"{len(blocked)} gene partition(s) out of date")
        return dg.RunRequest(asset_selection=out)

    cheap = dg.AutomationConditionSensorDefinition(
        "cheap_assets", target=dg.AssetSelection.assets(*CHEAP_ASSETS),
        minimum_interval_seconds=settings.sensor_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Declarative automation of the cheap assets (eager).")
    return ([locus, observe, aggregate, *stages], [refresh_stale_genes, observe_schedule],
            [input_files_changed, refresh_all_genes_assets, cheap])


def _built_upstream_ready(fresh: Freshness, keys: Sequence[dg.AssetKey], gene: str,
                          outside: set[dg.AssetKey]) -> bool:
    """Whether every asset of ``keys`` built for ``gene`` has its upstream outside the gene
    stage fresh (so a stale one can be rebuilt now)."""
    return all(fresh.upstream_ready(k, gene, outside) for k in keys
               if fresh.status(k, gene) != StaleStatus.MISSING)


def _ordered(parts: StudyPartitions, genes: Iterable[str]) -> list[str]:
    wanted = set(genes)
    return [g for g in parts.genes.get_partition_keys() if g in wanted]


def with_automation(assets: Sequence) -> list:
    """The :data:`CHEAP_ASSETS` with ``AutomationCondition.eager()``; the others unchanged."""
    def condition(spec: dg.AssetSpec) -> dg.AssetSpec:
        if spec.key.to_user_string() in CHEAP_ASSETS:
            return spec.replace_attributes(automation_condition=dg.AutomationCondition.eager())
        return spec

    return dg.map_asset_specs(condition, assets)
