"""The demo gene table: real identities and TSS, placeholder gene bodies, study gene lists."""

from __future__ import annotations

import pandas as pd

from apoe_assets.demo.facts import CHROM, FOCUS_GENE, GENES, REGION_FIRST, REGION_LAST

GENE_BODY = 10_000
"""Placeholder gene length (bp): only the TSS is real; the other end is TSS ± this, clipped."""
DEFAULT_GENE_COUNT = 12
GENE_SETS = ("default", "all")


def gene_table() -> pd.DataFrame:
    """All demo genes in genomic order: gene_id, symbol, chrom, start, end (1-based
    inclusive), strand and tss (1-based)."""
    rows = []
    for gene in GENES:
        if gene.strand == "+":
            start, end = gene.tss, min(gene.tss + GENE_BODY - 1, REGION_LAST)
        else:
            start, end = max(gene.tss - GENE_BODY + 1, REGION_FIRST), gene.tss
        rows.append((gene.gene_id, gene.symbol, CHROM, start, end, gene.strand, gene.tss))
    table = pd.DataFrame(rows, columns=["gene_id", "symbol", "chrom", "start", "end", "strand",
                                        "tss"])
    return table.sort_values(["tss", "gene_id"], kind="stable").reset_index(drop=True)


def nearest_genes(table: pd.DataFrame, anchor: str = FOCUS_GENE,
                  count: int = DEFAULT_GENE_COUNT) -> list[str]:
    """Symbols of the ``count`` genes whose TSS is nearest the anchor gene's (anchor first)."""
    anchor_tss = int(table.loc[table["symbol"] == anchor, "tss"].iloc[0])
    distance = (table["tss"] - anchor_tss).abs()
    order = table.assign(distance=distance).sort_values(["distance", "tss"], kind="stable")
    return order["symbol"].head(count).tolist()


def study_genes(table: pd.DataFrame, genes: str) -> list[str]:
    """The gene list of study.yaml: ``default`` (nearest APOE) or ``all`` (genomic order)."""
    if genes == "default":
        return nearest_genes(table)
    if genes == "all":
        return table["symbol"].tolist()
    raise ValueError(f"genes must be one of {', '.join(GENE_SETS)}, got {genes!r}")


def annotation_tsv(table: pd.DataFrame) -> bytes:
    """The annotation TSV (``gene_id symbol chrom start end strand``, 1-based inclusive)."""
    columns = ["gene_id", "symbol", "chrom", "start", "end", "strand"]
    return table[columns].to_csv(sep="\t", index=False, lineterminator="\n").encode()
