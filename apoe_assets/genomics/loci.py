"""A gene's locus: its windows and what the data hold inside them."""

from __future__ import annotations

import numpy as np
import pandas as pd

from apoe_assets.genomics.genotypes import GenotypeMatrix

LOCUS_VERSION = "1"
"""Code version of the ``gene_locus`` summaries: bump it when they change
for the same inputs."""


def variants_in(genotypes: GenotypeMatrix, start: int, end: int) -> np.ndarray:
    """Bool mask of variants whose first REF base lies in 0-based ``[start, end)``."""
    start0 = genotypes.positions() - 1
    return (start0 >= start) & (start0 < end)


def locus_summary(gene: pd.Series, genotypes: GenotypeMatrix, expression: pd.Series | None
                  ) -> pd.DataFrame:
    """One row describing a gene's locus: windows, variant counts, expression summary."""
    def polymorphic(start: int, end: int) -> int:
        af = genotypes.window(int(start), int(end)).variants["af"].to_numpy()
        return int(((af > 0) & (af < 1)).sum())

    row = {
        **{k: gene[k] for k in ("gene_id", "symbol", "chrom", "strand", "tss", "window_start",
                                "window_end", "cis_start", "cis_end")},
        "variants_in_window": polymorphic(gene["window_start"], gene["window_end"]),
        "variants_in_cis": polymorphic(gene["cis_start"], gene["cis_end"]),
        "expression_samples": 0 if expression is None else int(expression.notna().sum()),
        "expression_mean": np.nan if expression is None else float(expression.mean()),
        "expression_sd": np.nan if expression is None else float(expression.std()),
    }
    return pd.DataFrame([row]).set_index("gene_id")
