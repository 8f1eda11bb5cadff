"""A snapshot of the demo study's definitions, so that a change to the graph shows in review:
every asset with its group, partitions, dependencies, kinds, pool, code version, automation
and backfill policy; every check with its asset and blocking flag; the gene → chromosome
mapping; the jobs, schedules and sensors.

When the change is intended, rewrite the snapshot and commit it with the change::

    APOE_UPDATE_SNAPSHOT=1 .venv/bin/python -m pytest apoe_assets_tests/test_definitions_snapshot.py
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import dagster as dg

from apoe_assets.definitions import build_definitions
from apoe_assets.partitions import study_partitions
from apoe_assets.study import load_study

SNAPSHOT = Path(__file__).with_name("snapshots") / "demo_definitions.json"
UPDATE = "APOE_UPDATE_SNAPSHOT"


def _partitions(node, parts) -> str | None:
    if node.partitions_def is None:
        return None
    return {parts.genes: "genes", parts.chromosomes: "chromosomes"}.get(node.partitions_def,
                                                                        "other")


def snapshot() -> dict:
    """The demo definitions as plain data, keys sorted."""
    study = load_study()
    parts = study_partitions(study)
    defs = build_definitions(study)
    graph = defs.resolve_asset_graph()
    repository = defs.get_repository_def()
    assets = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        policy = node.backfill_policy
        assets[key.to_user_string()] = {
            "group": node.group_name,
            "source": node.is_observable,
            "partitions": _partitions(node, parts),
            "deps": sorted(k.to_user_string() for k in node.parent_keys),
            "kinds": sorted(node.kinds),
            "pools": sorted(node.pools or []),
            "code_version": node.code_version,
            "automation": node.automation_condition.get_label()
            if node.automation_condition else None,
            "backfill": policy.max_partitions_per_run if policy else None,
        }
    checks = {}
    for key in sorted(graph.asset_check_keys, key=lambda k: (k.asset_key.to_user_string(),
                                                              k.name)):
        spec = graph.get_check_spec(key)
        checks[f"{key.asset_key.to_user_string()}:{key.name}"] = {"blocking": spec.blocking}
    mapping = parts.gene_chromosome.downstream_partition_keys_by_upstream_partition_key
    return {
        "assets": assets,
        "checks": checks,
        "gene_chromosome": {c: sorted(g) for c, g in sorted(mapping.items())},
        "jobs": sorted(j.name for j in defs.resolve_all_job_defs() if j.name != "__ASSET_JOB"),
        "schedules": {s.name: {"cron": s.cron_schedule, "status": s.default_status.value}
                      for s in sorted(repository.schedule_defs, key=lambda s: s.name)},
        "sensors": {s.name: {"status": s.default_status.value}
                    for s in sorted(repository.sensor_defs, key=lambda s: s.name)},
    }


def test_definitions_match_the_reviewed_snapshot() -> None:
    current = json.loads(json.dumps(snapshot()))
    if os.environ.get(UPDATE):
        SNAPSHOT.write_text(json.dumps(current, indent=1, sort_keys=True) + "\n")
    recorded = json.loads(SNAPSHOT.read_text())
    changed = sorted(f"{part}: {name}" for part in current
                     for name in set(current[part]) | set(recorded.get(part, {}))
                     if isinstance(current[part], dict)
                     and current[part].get(name) != recorded.get(part, {}).get(name))
    assert current == recorded, (
        f"the definitions differ from {SNAPSHOT.name} in: {'; '.join(changed) or 'job list'}."
        f" If intended, rerun with {UPDATE}=1 and commit the snapshot.")


def test_snapshot_names_every_partitioned_asset_and_check() -> None:
    """The snapshot is not vacuous: the demo's gene assets, Enformer's pool and the blocking
    checks are in it."""
    recorded = json.loads(SNAPSHOT.read_text())
    assert recorded["assets"]["enformer_predictions"]["pools"] == ["accelerator"]
    assert recorded["assets"]["personal_sequences"]["partitions"] == "genes"
    assert recorded["assets"]["genotype_file"]["source"] is True
    assert recorded["checks"]["genotypes:ref_matches_reference"]["blocking"] is True
    assert dg.AssetKey("snp_effects").to_user_string() in recorded["assets"]
