"""The study as a Dagster resource."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import dagster as dg

from apoe_assets.study import Study, load_study


@lru_cache(maxsize=8)
def _cached(path: str, mtime_ns: int) -> Study:
    return load_study(path)


class StudyResource(dg.ConfigurableResource):
    """The study file the assets read (parsed once per process and file version)."""

    path: str

    def load(self) -> Study:
        return _cached(self.path, Path(self.path).stat().st_mtime_ns)
