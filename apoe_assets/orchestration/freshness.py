"""Which asset partitions are missing or stale, and which a changed input file touches.

Staleness is Dagster's own (the resolver behind the UI's "unsynced" badge): a partition is
stale when its code version changed since it was materialised or an upstream data version
differs from the one it was built from (a source file's fingerprint included).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import dagster as dg
from dagster._core.definitions.assets.graph.base_asset_graph import BaseAssetGraph
from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleStatus
from dagster._core.definitions.events import AssetKeyPartitionKey
from dagster._core.loader import LoadingContext

OUT_OF_DATE = (StaleStatus.MISSING, StaleStatus.STALE)


class _Loading(LoadingContext):
    """The per-evaluation cache Dagster's resolver loads records through."""

    def __init__(self, instance: dg.DagsterInstance) -> None:
        self._instance, self._loaders = instance, {}

    @property
    def instance(self) -> dg.DagsterInstance:
        return self._instance

    @property
    def loaders(self) -> dict:
        return self._loaders


class Freshness:
    """Stale status of asset partitions on one instance, cached for one evaluation."""

    def __init__(self, instance: dg.DagsterInstance, graph: BaseAssetGraph) -> None:
        self.graph = graph
        self._resolver = CachingStaleStatusResolver(instance, graph, _Loading(instance))

    def status(self, key: dg.AssetKey, partition: str | None = None) -> StaleStatus:
        return self._resolver.get_status(key, partition)

    def out_of_date(self, key: dg.AssetKey, partition: str | None = None) -> bool:
        """Missing, or stale."""
        return self.status(key, partition) in OUT_OF_DATE

    def out_of_date_partitions(self, keys: Iterable[dg.AssetKey], partitions: Sequence[str],
                               statuses: Sequence[StaleStatus] = OUT_OF_DATE
                               ) -> dict[str, list[dg.AssetKey]]:
        """Per partition (in ``partitions`` order), the assets of ``keys`` whose status there
        is one of ``statuses`` (default: missing or stale); partitions with none are left
        out."""
        found: dict[str, list[dg.AssetKey]] = {}
        for partition in partitions:
            keys_here = [k for k in keys if self.status(k, partition) in statuses]
            if keys_here:
                found[partition] = keys_here
        return found

    def upstream_ready(self, key: dg.AssetKey, partition: str,
                       outside: Iterable[dg.AssetKey]) -> bool:
        """Whether every parent partition of ``key``'s ``partition`` among ``outside`` (the
        assets a run of ``key`` does not build itself) is fresh."""
        outside = set(outside)
        for parent in self.graph.get(key).parent_keys:
            if parent not in outside:
                continue
            node = self.graph.get(parent)
            if node.is_observable or not node.is_materializable:
                continue
            parents = (self.graph.get_parent_partition_keys_for_child(
                partition, parent, key).partitions_subset.get_partition_keys()
                if node.is_partitioned else [None])
            if any(self.out_of_date(parent, p) for p in parents):
                return False
        return True


def downstream_partitions(graph: BaseAssetGraph,
                          changed: Iterable[tuple[dg.AssetKey, str | None]]
                          ) -> set[AssetKeyPartitionKey]:
    """Every asset partition built, directly or not, from the changed source partitions
    (``(source key, partition or None)``), through the graph's partition mappings."""
    frontier = [AssetKeyPartitionKey(k, p) for k, p in changed]
    seen: set[AssetKeyPartitionKey] = set()
    while frontier:
        current = frontier.pop()
        for child in graph.get_children_partitions(current.asset_key, current.partition_key):
            if child not in seen:
                seen.add(child)
                frontier.append(child)
    return seen


def batches(partitions: Sequence[str], order: Sequence[str], size: int) -> list[list[str]]:
    """``partitions`` cut into runs as a multi-run backfill policy cuts them: contiguous ranges
    of the partitions definition's ``order``, at most ``size`` partitions each."""
    position = {p: i for i, p in enumerate(order)}
    ranked = sorted(partitions, key=position.__getitem__)
    runs: list[list[str]] = []
    for partition in ranked:
        if runs and len(runs[-1]) < size and position[partition] == position[runs[-1][-1]] + 1:
            runs[-1].append(partition)
        else:
            runs.append([partition])
    return runs


def by_asset(partitions: Iterable[AssetKeyPartitionKey]) -> Mapping[dg.AssetKey, set[str | None]]:
    """Asset partitions grouped by asset key."""
    grouped: dict[dg.AssetKey, set[str | None]] = {}
    for item in partitions:
        grouped.setdefault(item.asset_key, set()).add(item.partition_key)
    return grouped
