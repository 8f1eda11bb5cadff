"""The IO manager: each asset partition at ``<root>/<asset>/<partition>.<ext>``."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import dagster as dg
from upath import UPath

from apoe_assets.resources import formats


class ByPartition(dict):
    """An asset's output for a run over several partitions: partition key → that partition's
    value (each stored as its own partition; a plain ``dict`` is a JSON value)."""


@dataclass(frozen=True)
class WithFigures:
    """An output ``value`` with figures to store beside it: each PNG as
    ``<stem>.<name>.png`` next to the value's file, written after it, each atomically; the
    paths join the output's metadata as ``<name>_file``. Loading the asset gives ``value``."""

    value: Any
    figures: Mapping[str, bytes] = field(default_factory=dict)


ALLOW_MISSING = "apoe/allow_missing"
"""``AssetIn`` metadata: a partition of this input that was never stored loads as None (and is
left out of a run over several), for inputs an asset can do without."""


def by_partition(loaded: Any, keys: Iterable[str]) -> dict[str, Any]:
    """An input as partition key → value, whether the run loaded one partition (the value
    itself) or several (a mapping by key)."""
    keys = list(keys)
    if not keys:
        raise ValueError("the run covers no partition of this input (a partition range whose "
                         "start comes after its end in the partitions' order?)")
    return dict(loaded) if len(keys) > 1 else {keys[0]: loaded}


class AssetStorage(dg.ConfigurableIOManager):
    """Stores asset outputs under ``root`` (a folder or any fsspec URL) in open formats.

    Unpartitioned assets live at ``<root>/<asset>.<ext>``, partitions at
    ``<root>/<asset>/<partition>.<ext>``. Writes are atomic; nothing is pickled. From a remote
    root, each stored output is fetched once per process (:func:`formats.remote_cache`) and
    the copies are removed after execution.
    """

    root: str

    def _stem(self, asset_key: dg.AssetKey, partition: str | None) -> UPath:
        stem = UPath(self.root).joinpath(*asset_key.path)
        return stem / partition if partition is not None else stem

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        if obj is None:
            return
        if isinstance(obj, ByPartition):
            self._handle_partitions(context, obj)
            return
        partition = context.asset_partition_key if context.has_asset_partitions else None
        context.add_output_metadata(self._store(context.asset_key, partition, obj))

    def _store(self, asset_key: dg.AssetKey, partition: str | None, obj: Any) -> dict[str, Any]:
        """Write one value (and, for :class:`WithFigures`, its figures after it, each
        atomically) at its partition's path; return its metadata: ``path``, ``stored_bytes``
        and ``<name>_file`` per figure."""
        stem = self._stem(asset_key, partition)
        figures = obj.figures if isinstance(obj, WithFigures) else {}
        path = formats.save(obj.value if isinstance(obj, WithFigures) else obj, stem)
        files = {}
        for name, image in figures.items():
            target = stem.with_name(f"{stem.name}.{name}.png")
            with formats.atomic_target(target) as scratch:
                scratch.write_bytes(image)
            files[f"{name}_file"] = dg.MetadataValue.path(str(target))
        return {"path": dg.MetadataValue.path(str(path)),
                "stored_bytes": formats.stored_size(path), **files}

    def _handle_partitions(self, context: dg.OutputContext, values: ByPartition) -> None:
        """Each partition of a run over several, in partition order, stored (figures
        included) exactly as a one-partition output of it would be. A run of one partition
        gets that output's metadata; a run of several gets ``folder`` and the total
        ``stored_bytes``, and each partition's materialisation its own ``path``,
        ``stored_bytes`` and ``<name>_file`` (see :func:`_add_partition_metadata`)."""
        keys = context.asset_partition_keys if context.has_asset_partitions else []
        if sorted(values) != sorted(keys):
            raise ValueError(f"{context.asset_key.to_user_string()}: values for partitions "
                             f"{sorted(values)} but the run covers {sorted(keys)}")
        stored = {key: self._store(context.asset_key, key, values[key]) for key in keys}
        if len(keys) == 1:
            context.add_output_metadata(stored[keys[0]])
            return
        for key in keys:
            _add_partition_metadata(context, key, stored[key])
        context.add_output_metadata({
            "folder": dg.MetadataValue.path(str(self._stem(context.asset_key, keys[0]).parent)),
            "stored_bytes": sum(m["stored_bytes"] for m in stored.values()),
        })

    def load_input(self, context: dg.InputContext) -> Any:
        key = context.asset_key
        optional = bool((context.definition_metadata or {}).get(ALLOW_MISSING))

        def read(partition: str | None) -> Any:
            try:
                return formats.load(self._stem(key, partition))
            except FileNotFoundError:
                if optional:
                    return None
                raise

        if not context.has_asset_partitions:
            return read(None)
        partitions = context.asset_partition_keys
        if len(partitions) == 1:
            return read(partitions[0])
        loaded = {p: read(p) for p in partitions}
        return {p: value for p, value in loaded.items() if value is not None}

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        """Remove what this process fetched from a remote root (a step process started by
        fork may exit without running interpreter exit handlers)."""
        formats.remote_cache().close()


def _add_partition_metadata(context: dg.OutputContext, key: str, metadata: dict[str, Any]
                            ) -> None:
    """Attach ``metadata`` to the materialisation of partition ``key`` alone.

    Dagster 1.13's ``OutputContext`` can only add metadata to every partition of the output
    (``add_output_metadata``); the step's own context (``OutputContext.step_context``, set
    for every output a run stores) takes partition-scoped asset metadata, which Dagster merges
    into that partition's materialisation event after ``handle_output`` returns. An output
    context built without a step (``dg.build_output_context`` in a test) has no such events:
    there the entries go to the output's metadata as ``<partition>/<name>``."""
    try:
        step = context.step_context
    except dg.DagsterInvariantViolationError:
        step = None
    if step is None:
        context.add_output_metadata({f"{key}/{name}": value for name, value in metadata.items()})
        return
    step.add_asset_metadata(metadata, asset_key=context.asset_key, partition_key=key)
