"""The per-fold training scans behind the PRS weights: made once (``cis_eqtl``), stored as one
long table with each scan's fingerprint, and read back for reuse (``prs_scores``).

The stored table has one block per scan: ``fold`` <NA> for the scan of every fold sample (for
reports), else the outer fold whose training samples were scanned. The fingerprints, counts and
notes of the scans ride in the table's ``attrs`` (the Parquet file's metadata), so a reader can
tell a stale table from a current one without scanning again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd

from apoe_assets.ml.folds import FOLD, fold_ids, split
from apoe_assets.stats.eqtl import CisWindow, EqtlResult, map_cis_nominal
from apoe_assets.stats.provenance import (
    StaleScan,
    StoredScan,
    attach_records,
    scan_fingerprint,
    stored_records,
)

ALL_SAMPLES = "all"
"""Record name of the scan of every fold sample (fold scans are named by their fold)."""


@dataclass(frozen=True)
class FoldScans:
    """One gene's scan of every fold sample and each outer fold's training scan."""

    full: EqtlResult
    fingerprint: dict[str, str]
    per_fold: dict[int, StoredScan]

    def table(self) -> pd.DataFrame:
        """The long stored table, records in its ``attrs``."""
        parts = [self.full.table.assign(**{FOLD: pd.NA})]
        parts += [scan.table.assign(**{FOLD: fold}) for fold, scan in self.per_fold.items()]
        table = pd.concat(parts, ignore_index=True).astype({FOLD: "Int64"})
        return attach_records(table, {
            ALL_SAMPLES: StoredScan.of(self.full, self.fingerprint),
            **{str(fold): scan for fold, scan in self.per_fold.items()}})


def scan_folds(window: CisWindow, phenotype: pd.Series, covariates: pd.DataFrame,
               folds: pd.Series, *, gene_id: str, tss: int, maf_threshold: float) -> FoldScans:
    """Nominal scans of every fold sample and of each outer fold's training samples."""

    def scan(samples: list[str]) -> tuple[EqtlResult, dict[str, str]]:
        result = map_cis_nominal(window, phenotype, covariates, gene_id=gene_id, tss=tss,
                                 maf_threshold=maf_threshold, samples=samples)
        return result, scan_fingerprint(window, phenotype, covariates, samples, maf_threshold)

    full, fingerprint = scan(folds.index.tolist())
    per_fold = {fold: StoredScan.of(*scan(split(folds, fold)[0])) for fold in fold_ids(folds)}
    return FoldScans(full, fingerprint, per_fold)


@dataclass(frozen=True)
class StoredFoldScans:
    """A stored table read back: the scan of every fold sample and each fold's training
    scan, each with its fingerprint."""

    full: StoredScan
    per_fold: dict[int, StoredScan]


def stored_fold_scans(table: pd.DataFrame, folds: list[int], what: str = "the eQTL table"
                      ) -> StoredFoldScans:
    """The all-sample scan and the training scans of ``folds`` in a stored table (a scan that
    tested nothing has no rows: an empty table); :class:`StaleScan` when one is missing."""
    records = stored_records(table, what)
    columns = table.drop(columns=FOLD)
    scans = {}
    for name in (ALL_SAMPLES, *map(str, folds)):
        if name not in records:
            raise StaleScan(f"{what} has no scan of {_label(name)} (it has "
                            f"{', '.join(sorted(records))}); re-materialise it")
        rows = (table[FOLD].isna() if name == ALL_SAMPLES
                else (table[FOLD] == int(name)).fillna(False)).to_numpy()
        scans[name] = StoredScan.from_record(columns[rows], records[name])
    return StoredFoldScans(scans.pop(ALL_SAMPLES), {int(k): v for k, v in scans.items()})


def _label(name: str) -> str:
    return "all fold samples" if name == ALL_SAMPLES else f"fold {name}'s training samples"


def fingerprint_digest(table: pd.DataFrame) -> str:
    """One digest of every scan's fingerprint in a stored table: what made it, not the floats
    it holds (so another CPU's last bits do not make it new). Dagster's data version."""
    records: Mapping[str, dict] = stored_records(table, "the eQTL table")
    text = json.dumps({k: r["fingerprint"] for k, r in records.items()}, sort_keys=True)
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()
