"""Deterministic, atomic writing of the demo's text tables."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from apoe_assets.genomics.bgzf import write_bgzf

DECIMALS = 6


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` beside ``path`` and rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_bgzf_atomic(path: Path, data: bytes) -> None:
    """BGZF-compress ``data`` to ``path`` via a temporary file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    write_bgzf(tmp, data)
    os.replace(tmp, path)


def format_row(values: np.ndarray, decimals: int = DECIMALS) -> list[str]:
    """Values as text: integers bare when the whole row is whole numbers, else fixed decimals
    (never ``-0.000000``)."""
    if np.all(values == np.round(values)):
        return [str(int(v)) for v in values]
    zero = f"{0.0:.{decimals}f}"
    texts = [f"{v:.{decimals}f}" for v in values]
    return [zero if text.lstrip("-") == zero else text for text in texts]


def matrix_text(header: Sequence[str], labels: Sequence[Sequence[object]], values: np.ndarray
                ) -> bytes:
    """A TSV whose rows are ``labels`` (leading columns) followed by a row of ``values``."""
    lines = ["\t".join(header)]
    for label, row in zip(labels, values, strict=True):
        lines.append("\t".join([*map(str, label), *format_row(row)]))
    return ("\n".join(lines) + "\n").encode()


def table_text(table: pd.DataFrame, decimals: int = DECIMALS) -> bytes:
    """A TSV of ``table`` (no index) with floats at fixed decimals."""
    return table.to_csv(sep="\t", index=False, float_format=f"%.{decimals}f",
                        lineterminator="\n").encode()
