"""Enformer output tracks: read a targets table, select tracks by index or description.

The table is the tab-separated layout of Basenji/Enformer's ``targets_human.txt``: columns
``index genome identifier file clip scale sum_stat description``, one row per output track in
head order. A description reads ``ASSAY:details``, e.g. ``CAGE:brain, adult,`` or
``CHIP:H3K27me3:K562``.

Selectors: an ``int`` (or a string of digits) is a track index; ``re:PATTERN`` is a regular
expression searched in the description; any other string selects the descriptions that start
with it (``CAGE:`` → every CAGE track, ``CAGE:brain`` → the brain CAGE tracks).
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

COLUMNS = ("index", "genome", "identifier", "file", "clip", "scale", "sum_stat", "description")
REGEX_PREFIX = "re:"

Selector = int | str


def read_targets(path: str | os.PathLike[str]) -> pd.DataFrame:
    """The targets table, checked: the needed columns, and ``index`` = 0, 1, … in order."""
    table = pd.read_csv(path, sep="\t", dtype={"description": str, "identifier": str},
                        keep_default_na=False)
    return validate_targets(table, source=str(path))


def validate_targets(table: pd.DataFrame, source: str = "targets table") -> pd.DataFrame:
    """Raise ``ValueError`` unless ``table`` has ``index`` 0 … n-1 and a ``description``."""
    missing = [c for c in ("index", "description") if c not in table.columns]
    if missing:
        raise ValueError(f"{source}: missing column(s) {missing}; expected the tab-separated "
                         f"layout {' '.join(COLUMNS)}")
    if not np.array_equal(table["index"].to_numpy(), np.arange(len(table))):
        raise ValueError(f"{source}: the index column must run 0, 1, … {len(table) - 1} in order")
    return table.reset_index(drop=True)


def check_head_size(table: pd.DataFrame, tracks: int, head: str = "human") -> None:
    """Raise ``ValueError`` when the table's row count is not the model head's track count."""
    if len(table) != tracks:
        raise ValueError(f"the targets table has {len(table)} tracks but the model's {head!r} "
                         f"head predicts {tracks}; use the targets file of these weights")


def _matches(descriptions: pd.Series, selector: str) -> np.ndarray:
    if selector.startswith(REGEX_PREFIX):
        pattern = re.compile(selector[len(REGEX_PREFIX):])
        return descriptions.map(lambda d: pattern.search(d) is not None).to_numpy(bool)
    return descriptions.str.startswith(selector).to_numpy(bool)


def select_tracks(table: pd.DataFrame, selectors: Selector | Iterable[Selector]) -> np.ndarray:
    """Indices (int64, ascending, unique) of the tracks any selector picks.

    A selector that picks nothing, or an index out of range, is a ``ValueError``.
    """
    if isinstance(selectors, int | str):
        selectors = [selectors]
    n = len(table)
    descriptions = table["description"].astype(str)
    chosen = np.zeros(n, bool)
    for selector in selectors:
        if isinstance(selector, bool):
            raise TypeError(f"track selector {selector!r} is neither an index nor a pattern")
        if isinstance(selector, int | np.integer) or (isinstance(selector, str)
                                                       and selector.isdigit()):
            index = int(selector)
            if not 0 <= index < n:
                raise ValueError(f"track index {index} is out of range (0 … {n - 1})")
            chosen[index] = True
            continue
        hits = _matches(descriptions, str(selector))
        if not hits.any():
            raise ValueError(f"no track description matches {selector!r}")
        chosen |= hits
    if not chosen.any():
        raise ValueError("no tracks selected")
    return np.flatnonzero(chosen).astype(np.int64)


def track_descriptions(table: pd.DataFrame, indices: Sequence[int] | np.ndarray) -> list[str]:
    """The descriptions of ``indices``, in that order."""
    return table["description"].iloc[np.asarray(indices, np.int64)].astype(str).tolist()


# The demo's small model -----------------------------------------------------------------------

DEMO_TRACKS: tuple[tuple[str, str], ...] = (
    ("DNASE", "DNASE:brain, demo"),
    ("DNASE", "DNASE:liver, demo"),
    ("DNASE", "DNASE:GM12878, demo"),
    ("ATAC", "ATAC:brain, demo"),
    ("CHIP", "CHIP:H3K27ac:brain, demo"),
    ("CHIP", "CHIP:H3K4me3:brain, demo"),
    ("CHIP", "CHIP:H3K27me3:brain, demo"),
    ("CHIP", "CHIP:CTCF:GM12878, demo"),
    ("CAGE", "CAGE:brain, adult, demo"),
    ("CAGE", "CAGE:liver, adult, demo"),
    ("CAGE", "CAGE:B lymphoblastoid cell line: GM12878, demo"),
    ("CAGE", "CAGE:astrocyte, demo"),
)
"""``(assay, description)`` of the demo model's human head, in head order."""

_ASSAY_STATS = {"CAGE": (384, 1, "sum")}
_DEFAULT_STATS = (32, 2, "mean")


def demo_targets() -> pd.DataFrame:
    """The demo model's targets table (12 tracks) in the ``targets_human.txt`` layout."""
    rows = []
    for i, (assay, description) in enumerate(DEMO_TRACKS):
        clip, scale, stat = _ASSAY_STATS.get(assay, _DEFAULT_STATS)
        rows.append((i, 0, f"DEMO{i:03d}", f"synthetic/{assay.lower()}/{i}", clip, scale, stat,
                     description))
    return pd.DataFrame(rows, columns=list(COLUMNS))


def write_targets(table: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Write a targets table (tab-separated, header line) atomically."""
    path = Path(path)
    validate_targets(table, source=str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", newline="") as handle:
            table.to_csv(handle, sep="\t", index=False, lineterminator="\n")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def resolve_tracks(selectors: Selector | Iterable[Selector], head_size: int,
                   targets: str | os.PathLike[str] | pd.DataFrame | None = None,
                   head: str = "human") -> np.ndarray:
    """Track indices for ``selectors`` on a head of ``head_size`` tracks.

    With a targets table (a path or a frame) its row count must equal ``head_size`` and
    descriptions may be used; without one only indices are allowed.
    """
    if isinstance(selectors, int | str):
        selectors = [selectors]
    selectors = list(selectors)
    if targets is None:
        named = [s for s in selectors if not (isinstance(s, int | np.integer)
                                              or (isinstance(s, str) and s.isdigit()))]
        if named:
            raise ValueError(f"track selector {named[0]!r} is a description: it needs a "
                             "targets table (enformer.targets in the study file)")
        table = pd.DataFrame({"index": np.arange(head_size), "description": ""})
    elif isinstance(targets, pd.DataFrame):
        table = validate_targets(targets)
    else:
        table = read_targets(targets)
    check_head_size(table, head_size, head)
    return select_tracks(table, selectors)
