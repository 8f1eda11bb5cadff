"""The planted truth of a simulated study (``truth:`` in the study file), and how much of it
the pipeline recovered. Demo only: no real asset reads it (``truth_recovery`` alone)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

GENES_FILE = "genes.tsv"
CAUSAL_FILE = "causal_variants.tsv"


@dataclass(frozen=True)
class PlantedTruth:
    """What a simulated study planted: per gene (index ``gene_id``) the realised variance
    shares, and per gene its causal variants (``gene_id``, ``variant_id``, ``effect``)."""

    genes: pd.DataFrame
    causal: pd.DataFrame


def read_truth(folder: Path) -> PlantedTruth:
    """The planted truth in ``folder`` (the study's ``truth:``); a clear error when a file is
    missing."""
    missing = [name for name in (GENES_FILE, CAUSAL_FILE) if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{folder}: the planted truth lacks {', '.join(missing)}")
    return PlantedTruth(pd.read_csv(folder / GENES_FILE, sep="\t").set_index("gene_id"),
                        pd.read_csv(folder / CAUSAL_FILE, sep="\t"))


RECOVERY_COLUMNS = [
    "gene", "gene_id", "h2_realised", "enformer_realised", "cross_gene_realised", "n_causal",
    "causal_tested", "lead_variant", "lead_is_causal", "best_causal_rank", "r2_genotype",
    "r2_enformer", "r2_stack"]
"""Columns of :func:`recovery_table`: the planted shares of expression variance beside the
out-of-fold R² recovered (best genotype model, best Enformer model, the stack), and where the
planted causal variants rank in the gene's all-samples scan."""


def recovery_table(truth: PlantedTruth, genes: pd.DataFrame, scans: Mapping[str, pd.DataFrame],
                   comparison: pd.DataFrame, genotype_models: Sequence[str],
                   enformer_models: Sequence[str], stack: str) -> pd.DataFrame:
    """Per gene of ``genes`` (``partition_key``, ``gene_id``) with a scan in ``scans``
    (partition key → all-samples cis-eQTL table: ``variant_id``, ``pval_nominal``), what was
    planted beside what was recovered (:data:`RECOVERY_COLUMNS`). ``comparison`` holds the
    pooled out-of-fold R² per (``gene``, ``model``); a model absent there gives NaN. Ranks
    are 1 for the smallest p (ties share the best rank); a causal variant not tested (e.g.
    below the MAF threshold) has no rank. ``lead_is_causal``: a causal variant has rank 1
    (``lead_variant``, the first of the smallest p, may be another variant in perfect LD)."""
    r2 = comparison.set_index(["gene", "model"])["r2"]
    rows = []
    for key, gene_id in zip(genes["partition_key"], genes["gene_id"], strict=True):
        if key not in scans:
            continue
        planted = truth.genes.loc[gene_id] if gene_id in truth.genes.index else None
        causal = set(truth.causal.loc[truth.causal["gene_id"] == gene_id, "variant_id"])
        scan = scans[key]
        ranks = scan["pval_nominal"].rank(method="min").to_numpy()
        is_causal = scan["variant_id"].isin(causal).to_numpy()
        lead = (scan["variant_id"].iloc[int(np.argmin(scan["pval_nominal"].to_numpy()))]
                if len(scan) else None)
        rows.append({
            "gene": key, "gene_id": gene_id,
            **{c: float(planted[c]) if planted is not None else np.nan
               for c in ("h2_realised", "enformer_realised", "cross_gene_realised")},
            "n_causal": len(causal), "causal_tested": int(is_causal.sum()),
            "lead_variant": lead,
            "lead_is_causal": bool(is_causal.any() and ranks[is_causal].min() == 1),
            "best_causal_rank": float(ranks[is_causal].min()) if is_causal.any() else np.nan,
            "r2_genotype": _best(r2, key, genotype_models),
            "r2_enformer": _best(r2, key, enformer_models),
            "r2_stack": float(r2.get((key, stack), np.nan)),
        })
    return pd.DataFrame(rows, columns=RECOVERY_COLUMNS)


def _best(r2: pd.Series, gene: str, models: Sequence[str]) -> float:
    """The largest R² of ``models`` for ``gene`` (NaN when none was scored)."""
    values = np.array([r2.get((gene, m), np.nan) for m in models], dtype=np.float64)
    return float(np.nanmax(values)) if np.isfinite(values).any() else np.nan
