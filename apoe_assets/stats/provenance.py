"""What a stored cis-eQTL scan was made from, so a later step can reuse it or refuse it.

A scan's fingerprint hashes each of its inputs separately — the samples (in order), the
window's variant IDs, their dosages, the expression and covariates of those samples, the
settings and the code version of :func:`~apoe_assets.stats.eqtl.map_cis_nominal` — so a
mismatch can say *what* differs. Hashes are of the stored inputs, never of computed floats:
the same inputs give the same fingerprint on any CPU or BLAS, which bit-exact comparison of
recomputed tables does not.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from apoe_assets.stats.eqtl import NOMINAL_VERSION, CisWindow, EqtlResult

DIGEST_BYTES = 8
FINGERPRINT_PARTS = ("samples", "variants", "genotypes", "expression", "covariates", "settings",
                     "code")


class StaleScan(ValueError):
    """A stored scan whose fingerprint is not that of the inputs at hand, or that has none."""


def _digest(*parts: bytes) -> str:
    hasher = hashlib.blake2b(digest_size=DIGEST_BYTES)
    for part in parts:
        hasher.update(len(part).to_bytes(8, "little"))
        hasher.update(part)
    return hasher.hexdigest()


def _text(values: Sequence[object]) -> bytes:
    return "\n".join(map(str, values)).encode()


def _floats(values: np.ndarray) -> bytes:
    return np.ascontiguousarray(values, dtype=np.float64).tobytes()


def scan_fingerprint(window: CisWindow, phenotype: pd.Series, covariates: pd.DataFrame,
                     samples: Sequence[str], maf_threshold: float) -> dict[str, str]:
    """One digest per input of a :func:`~apoe_assets.stats.eqtl.map_cis_nominal` call on
    ``samples`` (keys :data:`FINGERPRINT_PARTS`)."""
    samples = list(samples)
    return {
        "samples": _digest(_text(samples)),
        "variants": _digest(_text(window.variants["variant_id"])),
        "genotypes": _digest(_floats(window.subset(samples))),
        "expression": _digest(_floats(phenotype.loc[samples].to_numpy(np.float64))),
        "covariates": _digest(_text(covariates.index),
                              _floats(covariates.loc[:, samples].to_numpy(np.float64))),
        "settings": _digest(json.dumps({"maf_threshold": float(maf_threshold)}).encode()),
        "code": NOMINAL_VERSION,
    }


@dataclass(frozen=True)
class StoredScan:
    """A scan's table as stored, with what is needed to trust and reuse it."""

    table: pd.DataFrame
    fingerprint: dict[str, str]
    n_samples: int
    dof: int
    counts: dict[str, int]
    notes: tuple[str, ...]

    @classmethod
    def of(cls, result: EqtlResult, fingerprint: Mapping[str, str]) -> StoredScan:
        return cls(result.table, dict(fingerprint), result.n_samples, result.dof,
                   dict(result.counts), tuple(result.notes))

    def record(self) -> dict:
        """Everything but the table, JSON-ready (stored beside it)."""
        return {"fingerprint": self.fingerprint, "n_samples": self.n_samples, "dof": self.dof,
                "counts": self.counts, "notes": list(self.notes)}

    @classmethod
    def from_record(cls, table: pd.DataFrame, record: Mapping) -> StoredScan:
        return cls(table.reset_index(drop=True), dict(record["fingerprint"]),
                   int(record["n_samples"]), int(record["dof"]),
                   {str(k): int(v) for k, v in record["counts"].items()},
                   tuple(record["notes"]))

    def differences(self, expected: Mapping[str, str]) -> list[str]:
        """The inputs whose digest differs from ``expected`` (empty: the same scan)."""
        return [k for k in FINGERPRINT_PARTS if self.fingerprint.get(k) != expected.get(k)]

    def result(self, window: CisWindow) -> EqtlResult:
        """The stored scan as an :class:`EqtlResult` over ``window`` (whose variants its
        fingerprint matched): each table variant's window row, in window order."""
        ids = window.variants["variant_id"].to_numpy()
        rows = np.empty(len(self.table), dtype=np.int64)
        j = 0
        for i, variant in enumerate(self.table["variant_id"].to_numpy()):
            while j < len(ids) and ids[j] != variant:
                j += 1
            if j == len(ids):
                raise StaleScan(f"stored eQTL variant {variant} is not in the cis window (or "
                                "not in window order)")
            rows[i] = j
            j += 1
        return EqtlResult(self.table, rows, self.n_samples, self.dof, self.counts, self.notes)


SCANS_ATTR = "scans"
"""Key of a stored table's ``attrs`` (kept in the Parquet file's metadata) that holds the
:meth:`StoredScan.record` of each scan in it."""


def attach_records(table: pd.DataFrame, scans: Mapping[str, StoredScan]) -> pd.DataFrame:
    """``table`` with each scan's record (by name) in its ``attrs``."""
    table.attrs[SCANS_ATTR] = {name: scan.record() for name, scan in scans.items()}
    return table


def stored_records(table: pd.DataFrame, what: str) -> dict[str, dict]:
    """The scan records of a stored table; :class:`StaleScan` when it has none (``what``
    names the table in the message)."""
    records = table.attrs.get(SCANS_ATTR)
    if not records:
        raise StaleScan(f"{what} carries no scan fingerprints (stored by an older version); "
                        "re-materialise it")
    return records
