"""The IO manager: each asset partition at ``<root>/<asset>/<partition>.<ext>``."""

from __future__ import annotations

from typing import Any

import dagster as dg
from upath import UPath

from apoe_assets.resources import formats


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
        partition = context.asset_partition_key if context.has_asset_partitions else None
        path = formats.save(obj, self._stem(context.asset_key, partition))
        context.add_output_metadata({
            "path": dg.MetadataValue.path(str(path)),
            "stored_bytes": formats.stored_size(path),
        })

    def load_input(self, context: dg.InputContext) -> Any:
        key = context.asset_key
        if not context.has_asset_partitions:
            return formats.load(self._stem(key, None))
        partitions = context.asset_partition_keys
        if len(partitions) == 1:
            return formats.load(self._stem(key, partitions[0]))
        return {p: formats.load(self._stem(key, p)) for p in partitions}

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        """Remove what this process fetched from a remote root (a step process started by
        fork may exit without running interpreter exit handlers)."""
        formats.remote_cache().close()
