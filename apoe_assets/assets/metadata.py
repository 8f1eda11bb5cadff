"""Small helpers for materialisation metadata."""

from __future__ import annotations

import dagster as dg
import pandas as pd


def preview(table: pd.DataFrame, rows: int = 8, columns: int = 10) -> dg.MetadataValue:
    """The first rows and columns of a table, as Markdown for the UI."""
    return dg.MetadataValue.md(table.iloc[:rows, :columns].to_markdown())


def scalars(values: dict) -> dict:
    """Metadata from a mapping of NumPy or Python scalars (NaN and None left out)."""
    out = {}
    for key, value in values.items():
        value = value.item() if hasattr(value, "item") else value
        if value is None or (isinstance(value, float) and value != value):
            continue
        out[key] = value
    return out
