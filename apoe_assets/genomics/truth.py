"""The planted truth of a simulated study (``truth:`` in the study file), read for reports."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

GENES_FILE = "genes.tsv"
CAUSAL_FILE = "causal_variants.tsv"


def planted_genes(truth: Path | None) -> pd.DataFrame | None:
    """Per gene (index ``gene_id``): planted h² and its shares, or None without a truth."""
    if truth is None or not (truth / GENES_FILE).exists():
        return None
    return pd.read_csv(truth / GENES_FILE, sep="\t").set_index("gene_id")


def causal_positions(truth: Path | None, gene_id: str) -> list[int]:
    """1-based positions of the gene's planted causal variants (empty without a truth)."""
    if truth is None or not (truth / CAUSAL_FILE).exists():
        return []
    causal = pd.read_csv(truth / CAUSAL_FILE, sep="\t")
    ids = causal.loc[causal["gene_id"] == gene_id, "variant_id"]
    return [int(v.split(":")[1]) for v in ids]
