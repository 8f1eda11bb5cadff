"""Gene annotation: GENCODE GTF or a simple TSV, reduced to one row per gene with its TSS."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from apoe_assets.genomics.contigs import canonical_chrom
from apoe_assets.genomics.coordinates import Interval, centred_window, parse_region
from apoe_assets.genomics.errors import InputError

ANNOTATION_VERSION = "1"
"""Code version of the ``gene_annotation`` table (genes, TSS, windows): bump it when they change
for the same inputs."""

TSV_COLUMNS = ["gene_id", "symbol", "chrom", "start", "end", "strand"]
GENE_COLUMNS = ["gene_id", "symbol", "chrom", "start", "end", "strand", "tss"]
"""Columns of an annotation table: ``start``/``end`` 0-based half-open, ``tss`` the 0-based
position of the transcription start (``start`` on +, ``end − 1`` on −)."""

_GTF_ATTRIBUTE = re.compile(r'(\w+) "([^"]*)"')


def read_annotation(path: Path | str) -> pd.DataFrame:
    """Read every gene of a GTF (``.gtf``/``.gtf.gz``, ``gene`` records) or a TSV with columns
    gene_id, symbol, chrom, start, end, strand (1-based inclusive)."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "annotation file not found")
    is_gtf = ".gtf" in path.suffixes
    genes = _read_gtf(path) if is_gtf else _read_tsv(path)
    _require_integers(genes, path, line_offset=None if is_gtf else 2)
    bad_strand = genes.index[~genes["strand"].isin(["+", "-"])]
    if len(bad_strand):
        row = genes.loc[bad_strand[0]]
        raise InputError(path, f"strand must be + or -, got {row['strand']!r}",
                         record=f"gene {row['gene_id']}")
    bad_span = genes.index[(genes["start"] < 1) | (genes["end"] < genes["start"])]
    if len(bad_span):
        row = genes.loc[bad_span[0]]
        raise InputError(path, f"start {row['start']} / end {row['end']} is not a valid "
                         "1-based inclusive span", record=f"gene {row['gene_id']}")
    genes["chrom"] = genes["chrom"].map(canonical_chrom)
    genes["start"] = genes["start"] - 1  # 1-based inclusive → 0-based half-open
    genes["tss"] = genes["start"].where(genes["strand"] == "+", genes["end"] - 1)
    return genes[GENE_COLUMNS].reset_index(drop=True)


def _read_tsv(path: Path) -> pd.DataFrame:
    try:
        table = pd.read_csv(path, sep="\t", dtype={"chrom": str, "gene_id": str, "symbol": str})
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise InputError(path, f"cannot parse as TSV: {exc}") from exc
    missing = [c for c in TSV_COLUMNS if c not in table.columns]
    if missing:
        raise InputError(path, f"missing column(s) {', '.join(missing)}; expected "
                         f"{', '.join(TSV_COLUMNS)}")
    return table[TSV_COLUMNS].copy()


def _require_integers(genes: pd.DataFrame, path: Path, line_offset: int | None) -> None:
    """Make start/end integers, or name the first row whose value is not a whole number."""
    for column in ("start", "end"):
        values = pd.to_numeric(genes[column], errors="coerce")
        bad = values.isna() | (values % 1 != 0)
        if bad.any():
            index = bad.idxmax()
            where = (f"line {index + line_offset}" if line_offset is not None
                     else f"gene {genes.loc[index, 'gene_id']}")
            raise InputError(path, f"column {column} must be an integer, got "
                             f"{genes.loc[index, column]!r}", record=where)
        genes[column] = values.astype("int64")


def _read_gtf(path: Path) -> pd.DataFrame:
    columns = ["chrom", "source", "feature", "start", "end", "score", "strand", "frame", "attrs"]
    try:
        gtf = pd.read_csv(path, sep="\t", comment="#", header=None, names=columns,
                          dtype={"chrom": str}, usecols=[0, 2, 3, 4, 6, 8])
    except (pd.errors.ParserError, ValueError) as exc:
        raise InputError(path, f"cannot parse as GTF: {exc}") from exc
    gtf = gtf[gtf["feature"] == "gene"]
    attrs = gtf["attrs"].map(lambda text: dict(_GTF_ATTRIBUTE.findall(text)))
    gtf = gtf.assign(gene_id=attrs.map(lambda a: a.get("gene_id")),
                     symbol=attrs.map(lambda a: a.get("gene_name", a.get("gene_id"))))
    if gtf["gene_id"].isna().any():
        raise InputError(path, "a gene record has no gene_id attribute")
    return gtf[TSV_COLUMNS].copy()


def _strip_version(gene_id: str) -> str:
    return gene_id.split(".", 1)[0] if gene_id.startswith("ENS") else gene_id


def select_genes(annotation: pd.DataFrame, genes: Sequence[str], regions: Sequence[str],
                 source: Path | str) -> pd.DataFrame:
    """The study's genes: each named gene (symbol, ID, or ID without version) plus every gene
    whose TSS lies in one of ``regions``; adds a readable, unique ``partition_key``.

    ``source`` is the annotation file, named in errors.
    """
    by_name: dict[str, list[int]] = {}
    for index, row in annotation.iterrows():
        for key in {row["symbol"], row["gene_id"], _strip_version(row["gene_id"])}:
            by_name.setdefault(str(key), []).append(index)
    chosen: list[int] = []
    for name in genes:
        hits = by_name.get(name) or by_name.get(_strip_version(name))
        if not hits:
            raise InputError(source, f"study gene {name!r} is not in the annotation "
                             "(looked up as symbol and gene_id)")
        if len(set(hits)) > 1:
            ids = ", ".join(annotation.loc[sorted(set(hits)), "gene_id"])
            raise InputError(source, f"study gene {name!r} is ambiguous ({ids}); name it by ID")
        chosen.append(hits[0])
    for region in regions:
        interval = parse_region(region)
        chrom = canonical_chrom(interval.chrom)
        inside = annotation.index[(annotation["chrom"] == chrom)
                                  & (annotation["tss"] >= interval.start)
                                  & (annotation["tss"] < interval.end)]
        if not len(inside):
            raise InputError(source, f"no annotated gene has its TSS in region {region!r}")
        chosen.extend(inside)
    selected = annotation.loc[list(dict.fromkeys(chosen))].copy()
    selected = selected.sort_values(["chrom", "tss", "gene_id"]).reset_index(drop=True)
    clash = selected["symbol"].duplicated(keep=False) | selected["symbol"].isna()
    selected["partition_key"] = selected["symbol"].where(~clash, selected["gene_id"])
    return selected


def gene_window(gene: pd.Series, length: int) -> Interval:
    """The model window of ``length`` bases centred on the gene's TSS."""
    return centred_window(gene["chrom"], int(gene["tss"]), length)


def cis_window(gene: pd.Series, flank: int, contig_length: int) -> Interval:
    """TSS ± ``flank`` clipped to the contig: the variants a gene's eQTL scan looks at."""
    tss = int(gene["tss"])
    return Interval(gene["chrom"], max(tss - flank, 0), min(tss + flank + 1, contig_length))


def with_windows(genes: pd.DataFrame, window_length: int, cis_flank: int,
                 contig_lengths: dict[str, int], source: Path | str) -> pd.DataFrame:
    """Add model-window and cis-window columns (0-based half-open) to a gene table, checking
    that every TSS lies on its contig."""
    genes = genes.copy()
    for _, gene in genes.iterrows():
        length = contig_lengths.get(gene["chrom"])
        if length is None:
            raise InputError(source, f"chromosome {gene['chrom']} is not in the reference",
                             record=f"gene {gene['gene_id']}")
        if not 0 <= gene["tss"] < length:
            raise InputError(source, f"TSS {gene['tss'] + 1} lies outside {gene['chrom']} "
                             f"(length {length})", record=f"gene {gene['gene_id']}")
    windows = [gene_window(g, window_length) for _, g in genes.iterrows()]
    cis = [cis_window(g, cis_flank, contig_lengths[g["chrom"]]) for _, g in genes.iterrows()]
    genes["window_start"] = [w.start for w in windows]
    genes["window_end"] = [w.end for w in windows]
    genes["cis_start"] = [w.start for w in cis]
    genes["cis_end"] = [w.end for w in cis]
    return genes


def genotype_regions(genes: pd.DataFrame, chrom: str) -> list[Interval]:
    """Regions of ``chrom`` whose variants the study needs: each gene's cis and model window."""
    on_chrom = genes[genes["chrom"] == chrom]
    return [Interval(chrom, max(min(g.window_start, g.cis_start), 0),
                     max(g.window_end, g.cis_end)) for g in on_chrom.itertuples()]
