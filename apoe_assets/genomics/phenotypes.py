"""Expression (tensorQTL/GTEx BED) and covariates (tensorQTL TSV), aligned to genotype samples."""

from __future__ import annotations

import gzip
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from apoe_assets.genomics.errors import InputError

PHENOTYPES_VERSION = "1"
"""Code version of the ``expression`` and ``covariates`` tables: bump it when they change
for the same inputs."""

BED_COLUMNS = ["#chr", "start", "end", "gene_id"]


def _read_table(path: Path, what: str) -> pd.DataFrame:
    if not path.exists():
        raise InputError(path, f"{what} file not found")
    try:
        with gzip.open(path, "rt") if _is_gzip(path) else path.open() as handle:
            header = handle.readline().rstrip("\n").split("\t")
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise InputError(path, f"cannot read {what} as TSV: {exc}") from exc
    duplicates = [c for c, n in Counter(header).items() if n > 1]
    if duplicates:
        raise InputError(path, f"duplicate sample IDs in the header: {', '.join(duplicates[:5])}")
    try:
        return pd.read_csv(path, sep="\t", dtype={header[0]: str})
    except (pd.errors.ParserError, ValueError) as exc:
        raise InputError(path, f"cannot parse {what}: {exc}") from exc


def _is_gzip(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(2) == b"\x1f\x8b"


def _numeric(values: pd.DataFrame, path: Path, what: str) -> pd.DataFrame:
    """Values as float64, or an error naming the first non-numeric cell."""
    converted = values.apply(pd.to_numeric, errors="coerce").astype("float64")
    bad = converted.isna() & values.notna()
    if bad.to_numpy().any():
        row, column = bad.stack().loc[lambda s: s].index[0]
        raise InputError(path, f"value {values.loc[row, column]!r} for sample {column} is not a "
                         "number", record=f"{what} {row}")
    return converted


def read_expression_bed(path: Path | str) -> pd.DataFrame:
    """Read a tensorQTL/GTEx expression BED (``#chr start end gene_id samples…``).

    Returns genes × samples (float64), indexed by gene_id.
    """
    path = Path(path)
    table = _read_table(path, "expression")
    if list(table.columns[:4]) != BED_COLUMNS:
        raise InputError(path, f"header must start with {' '.join(BED_COLUMNS)}, got "
                         f"{' '.join(map(str, table.columns[:4]))}")
    if len(table.columns) == 4:
        raise InputError(path, "expression BED has no sample columns")
    duplicated = table["gene_id"][table["gene_id"].duplicated()]
    if len(duplicated):
        raise InputError(path, "gene_id appears more than once", record=duplicated.iloc[0])
    values = table.set_index("gene_id").drop(columns=BED_COLUMNS[:3])
    return _numeric(values, path, "gene")


def read_covariates(path: Path | str) -> pd.DataFrame:
    """Read tensorQTL covariates (first column the covariate ID, one column per sample)."""
    path = Path(path)
    table = _read_table(path, "covariates")
    values = table.set_index(table.columns[0])
    values.index.name = "covariate"
    return _numeric(values, path, "covariate")


def align_samples(table: pd.DataFrame, samples: Sequence[str], path: Path | str, what: str
                  ) -> tuple[pd.DataFrame, list[str]]:
    """Keep the columns of ``table`` that are in ``samples``, in ``samples`` order.

    Returns the aligned table and the dropped column names; none shared is an error.
    """
    wanted = set(table.columns)
    kept = [s for s in samples if s in wanted]
    if not kept:
        raise InputError(path, f"none of the {len(table.columns)} {what} samples is in the "
                         f"genotypes (e.g. {table.columns[0]!r} vs {samples[0]!r})")
    present = set(kept)
    dropped = [s for s in table.columns if s not in present]
    return table[kept], dropped


def match_gene_ids(values: pd.DataFrame, gene_ids: Sequence[str]) -> pd.DataFrame:
    """Rename expression rows to the annotation's gene IDs where they differ only by the
    Ensembl version suffix (``ENSG…203.17`` ↔ ``ENSG…203``)."""
    by_stem = {g.split(".", 1)[0]: g for g in gene_ids}
    renamed = {g: by_stem[g.split(".", 1)[0]] for g in values.index
               if g not in set(gene_ids) and g.split(".", 1)[0] in by_stem}
    return values.rename(index=renamed)
