"""Gene annotation: TSV and GTF, TSS on both strands, gene selection, windows."""

from __future__ import annotations

import gzip
from pathlib import Path

import pandas as pd
import pytest

from apoe_assets.genomics.annotation import (
    GENE_COLUMNS,
    genotype_regions,
    read_annotation,
    select_genes,
    with_windows,
)
from apoe_assets.genomics.errors import InputError

# gene_id, symbol, chrom as written, 1-based start, end, strand
GENES = [
    ("ENSG00000130203.10", "APOE", "chr19", 1_001, 2_000, "+"),
    ("ENSG00000130202.11", "NECTIN2", "chr19", 3_001, 4_000, "-"),
    ("ENSG00000214855.8", "APOC1P1", "19", 5_001, 5_500, "-"),
    ("ENSG00000000005.6", "TNMD", "chrX", 100, 200, "+"),
]
TSV_HEADER = "gene_id\tsymbol\tchrom\tstart\tend\tstrand\n"


def tsv_text(genes=GENES) -> str:
    return TSV_HEADER + "".join("\t".join(map(str, g)) + "\n" for g in genes)


def gtf_text(genes=GENES) -> str:
    out = ["#!genome-build GRCh38.p14\n", "#!genome-version GRCh38\n"]
    for gene_id, symbol, chrom, start, end, strand in genes:
        attrs = f'gene_id "{gene_id}"; gene_type "protein_coding"; gene_name "{symbol}"; level 2;'
        tx = f'{attrs} transcript_id "ENST{gene_id[4:]}"; transcript_name "{symbol}-201";'
        out.append(f"{chrom}\tHAVANA\tgene\t{start}\t{end}\t.\t{strand}\t.\t{attrs}\n")
        # a transcript that starts elsewhere: only the gene line may define the TSS
        out.append(f"{chrom}\tHAVANA\ttranscript\t{start + 5}\t{end - 5}\t.\t{strand}\t.\t{tx}\n")
        out.append(f"{chrom}\tHAVANA\texon\t{start + 5}\t{start + 50}\t.\t{strand}\t.\t{tx}\n")
    return "".join(out)


@pytest.fixture
def tsv(tmp_path: Path) -> Path:
    path = tmp_path / "genes.tsv"
    path.write_text(tsv_text())
    return path


@pytest.fixture
def annotation(tsv: Path) -> pd.DataFrame:
    return read_annotation(tsv)


# --- reading -----------------------------------------------------------------------------------


def test_tsv_columns_coordinates_and_tss(annotation: pd.DataFrame) -> None:
    assert list(annotation.columns) == GENE_COLUMNS
    rows = annotation.set_index("symbol")
    # + strand: TSS is the first base, 1-based 1001 → 0-based 1000
    assert rows.loc["APOE", ["start", "end", "tss"]].tolist() == [1_000, 2_000, 1_000]
    # − strand: TSS is the last base, 1-based 4000 → 0-based 3999
    assert rows.loc["NECTIN2", ["start", "end", "tss"]].tolist() == [3_000, 4_000, 3_999]
    assert rows.loc["APOC1P1", "tss"] == 5_499
    assert rows.loc["APOC1P1", "chrom"] == "chr19"  # '19' is canonicalised
    assert rows.loc["TNMD", "chrom"] == "chrX"


@pytest.mark.parametrize("name", ["genes.gtf", "genes.gtf.gz"])
def test_gtf_and_tsv_give_the_same_table(tmp_path: Path, annotation: pd.DataFrame,
                                         name: str) -> None:
    path = tmp_path / name
    data = gtf_text().encode()
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    from_gtf = read_annotation(path)
    pd.testing.assert_frame_equal(from_gtf, annotation)
    assert from_gtf["gene_id"].tolist()[0] == "ENSG00000130203.10"  # version kept


def test_gtf_gene_without_name_uses_its_id(tmp_path: Path) -> None:
    path = tmp_path / "a.gtf"
    path.write_text('chr1\tENSEMBL\tgene\t10\t20\t.\t+\t.\tgene_id "ENSG00000000009.1";\n')
    assert read_annotation(path)["symbol"].tolist() == ["ENSG00000000009.1"]


def test_gtf_gene_without_id(tmp_path: Path) -> None:
    path = tmp_path / "a.gtf"
    path.write_text('chr1\tENSEMBL\tgene\t10\t20\t.\t+\t.\tgene_name "X";\n')
    with pytest.raises(InputError, match="gene_id") as excinfo:
        read_annotation(path)
    assert str(path) in str(excinfo.value)


def test_missing_annotation(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        read_annotation(tmp_path / "none.tsv")


def test_bad_strand_names_the_gene(tmp_path: Path) -> None:
    genes = [*GENES[:2], ("ENSG00000000077.1", "BAD", "chr19", 10, 20, ".")]
    path = tmp_path / "genes.tsv"
    path.write_text(tsv_text(genes))
    with pytest.raises(InputError) as excinfo:
        read_annotation(path)
    assert excinfo.value.record == "gene ENSG00000000077.1"
    assert str(path) in str(excinfo.value)
    assert "'.'" in str(excinfo.value)


def test_non_integer_start_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "genes.tsv"
    path.write_text(tsv_text().replace("\t3001\t", "\tabc\t"))
    with pytest.raises(InputError) as excinfo:
        read_annotation(path)
    assert excinfo.value.record == "line 3"  # header is line 1
    assert "'abc'" in str(excinfo.value)
    assert str(path) in str(excinfo.value)


def test_fractional_start_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "genes.tsv"
    path.write_text(tsv_text().replace("\t3001\t", "\t3001.5\t"))
    with pytest.raises(InputError) as excinfo:
        read_annotation(path)
    assert excinfo.value.record == "line 3"


def test_gtf_non_integer_start_is_an_input_error(tmp_path: Path) -> None:
    path = tmp_path / "genes.gtf"
    path.write_text(gtf_text().replace("\tgene\t3001\t", "\tgene\tabc\t"))
    with pytest.raises(InputError):
        read_annotation(path)


@pytest.mark.parametrize(("start", "end"), [(0, 10), (20, 10)])
def test_invalid_span_names_the_gene(tmp_path: Path, start: int, end: int) -> None:
    path = tmp_path / "genes.tsv"
    path.write_text(tsv_text([("G1", "A", "chr1", start, end, "+")]))
    with pytest.raises(InputError) as excinfo:
        read_annotation(path)
    assert excinfo.value.record == "gene G1"


def test_missing_tsv_column_is_named(tmp_path: Path) -> None:
    path = tmp_path / "genes.tsv"
    path.write_text("gene_id\tsymbol\tchrom\tstart\tend\nG1\tA\tchr1\t1\t2\n")
    with pytest.raises(InputError, match=r"missing column.*strand"):
        read_annotation(path)


def test_single_base_gene(tmp_path: Path) -> None:
    path = tmp_path / "genes.tsv"
    path.write_text(tsv_text([("G1", "A", "chr1", 7, 7, "-"), ("G2", "B", "chr1", 7, 7, "+")]))
    table = read_annotation(path)
    assert table["tss"].tolist() == [6, 6]
    assert (table["end"] - table["start"]).tolist() == [1, 1]


# --- select_genes ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["APOE", "ENSG00000130203.10", "ENSG00000130203",
                                  "ENSG00000130203.99"])
def test_select_gene_by_symbol_or_id(annotation: pd.DataFrame, tsv: Path, name: str) -> None:
    selected = select_genes(annotation, [name], [], tsv)
    assert selected["gene_id"].tolist() == ["ENSG00000130203.10"]
    assert selected["partition_key"].tolist() == ["APOE"]


def test_select_genes_sorted_and_once(annotation: pd.DataFrame, tsv: Path) -> None:
    selected = select_genes(annotation, ["TNMD", "NECTIN2", "APOE", "ENSG00000130203"], [], tsv)
    assert selected["symbol"].tolist() == ["APOE", "NECTIN2", "TNMD"]


def test_select_genes_by_region_uses_the_tss(annotation: pd.DataFrame, tsv: Path) -> None:
    # NECTIN2 spans 3001-4000 on −, so its TSS is 1-based 4000; APOE's is 1001.
    assert select_genes(annotation, [], ["chr19:3,500-4,000"], tsv)["symbol"].tolist() == [
        "NECTIN2"]
    assert select_genes(annotation, [], ["19:1001-1001"], tsv)["symbol"].tolist() == ["APOE"]
    both = select_genes(annotation, [], ["chr19:1-5000"], tsv)
    assert both["symbol"].tolist() == ["APOE", "NECTIN2"]
    with pytest.raises(InputError, match="no annotated gene"):
        select_genes(annotation, [], ["chr19:3001-3999"], tsv)  # inside NECTIN2, not its TSS
    with pytest.raises(InputError, match="no annotated gene"):
        select_genes(annotation, [], ["chr19:1002-2000"], tsv)


def test_unknown_gene_names_gene_and_file(annotation: pd.DataFrame, tsv: Path) -> None:
    with pytest.raises(InputError) as excinfo:
        select_genes(annotation, ["APOE", "NOPE1"], [], tsv)
    assert "'NOPE1'" in str(excinfo.value)
    assert str(tsv) in str(excinfo.value)


@pytest.fixture
def clash(tmp_path: Path) -> tuple[pd.DataFrame, Path]:
    genes = [*GENES, ("ENSG00000999999.1", "APOE", "chr19", 8_001, 9_000, "+")]
    path = tmp_path / "clash.tsv"
    path.write_text(tsv_text(genes))
    return read_annotation(path), path


def test_ambiguous_symbol_says_to_use_the_id(clash) -> None:
    annotation, path = clash
    with pytest.raises(InputError, match="ambiguous") as excinfo:
        select_genes(annotation, ["APOE"], [], path)
    assert "ENSG00000130203.10" in str(excinfo.value)
    assert "ENSG00000999999.1" in str(excinfo.value)


def test_symbol_clash_falls_back_to_gene_id(clash) -> None:
    annotation, path = clash
    selected = select_genes(annotation, ["ENSG00000130203", "ENSG00000999999", "NECTIN2"], [],
                            path)
    assert selected["partition_key"].tolist() == [
        "ENSG00000130203.10", "NECTIN2", "ENSG00000999999.1"]
    by_region = select_genes(annotation, [], ["chr19:1-10000"], path)
    keys = dict(zip(by_region["gene_id"], by_region["partition_key"], strict=True))
    assert keys["ENSG00000130203.10"] == "ENSG00000130203.10"
    assert keys["ENSG00000999999.1"] == "ENSG00000999999.1"
    assert keys["ENSG00000130202.11"] == "NECTIN2"
    assert by_region["partition_key"].is_unique


def test_a_symbol_selected_alone_keeps_its_key_despite_a_clash_elsewhere(clash) -> None:
    annotation, path = clash
    selected = select_genes(annotation, ["ENSG00000999999.1"], [], path)
    assert selected["partition_key"].tolist() == ["APOE"]


# --- windows -----------------------------------------------------------------------------------


def test_with_windows(annotation: pd.DataFrame, tsv: Path) -> None:
    genes = select_genes(annotation, ["APOE", "NECTIN2"], [], tsv)
    table = with_windows(genes, 1_024, 1_500, {"chr19": 5_000}, tsv).set_index("symbol")
    assert table.loc["APOE", ["window_start", "window_end"]].tolist() == [1_000 - 512, 1_512]
    assert table.loc["NECTIN2", ["window_start", "window_end"]].tolist() == [3_999 - 512,
                                                                            3_999 + 512]
    assert table.loc["APOE", ["cis_start", "cis_end"]].tolist() == [0, 2_501]  # clipped at 0
    assert table.loc["NECTIN2", ["cis_start", "cis_end"]].tolist() == [2_499, 5_000]
    regions = genotype_regions(table.reset_index(), "chr19")
    assert [(r.start, r.end) for r in regions] == [(0, 2_501), (2_499, 5_000)]
    assert genotype_regions(table.reset_index(), "chrX") == []


def test_window_reaching_past_the_contig_start_is_kept(annotation: pd.DataFrame, tsv) -> None:
    genes = select_genes(annotation, ["TNMD"], [], tsv)
    table = with_windows(genes, 1_024, 10, {"chrX": 10_000}, tsv)
    assert table.loc[0, "window_start"] == 99 - 512
    assert genotype_regions(table, "chrX")[0].start == 0


def test_with_windows_rejects_a_tss_outside_the_contig(annotation: pd.DataFrame, tsv) -> None:
    genes = select_genes(annotation, ["APOE", "NECTIN2"], [], tsv)
    with pytest.raises(InputError) as excinfo:
        with_windows(genes, 1_024, 100, {"chr19": 3_999}, tsv)  # NECTIN2's TSS is 0-based 3999
    assert excinfo.value.record == "gene ENSG00000130202.11"
    with_windows(genes, 1_024, 100, {"chr19": 4_000}, tsv)  # one base more and it fits


def test_with_windows_rejects_a_chromosome_missing_from_the_reference(annotation, tsv) -> None:
    genes = select_genes(annotation, ["TNMD"], [], tsv)
    with pytest.raises(InputError, match="chrX") as excinfo:
        with_windows(genes, 1_024, 100, {"chr19": 10_000}, tsv)
    assert excinfo.value.record == "gene ENSG00000000005.6"
