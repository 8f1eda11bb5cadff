"""FASTA writing (bgzip + .fai + .gzi as samtools makes them) and windowed reading."""

from __future__ import annotations

import gzip
import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pyfaidx
import pysam
import pytest

from apoe_assets.genomics.coordinates import Interval, centred_window, from_one_based
from apoe_assets.genomics.errors import InputError
from apoe_assets.genomics.fasta import ReferenceGenome, fasta_bytes, write_indexed_fasta
from apoe_assets_tests.studies import reference_sequence

LONG = 150_001  # several BGZF blocks; the last line is one base long


def distinctive(length: int, seed: int) -> bytes:
    """First base T, last base G, the rest lower-case a/c: an off-by-one shows at once."""
    rng = np.random.default_rng(seed)
    inner = rng.choice(np.frombuffer(b"ac", np.uint8), length - 2).tobytes()
    return b"T" + inner + b"G"


@pytest.fixture(scope="module")
def records() -> list[tuple[str, bytes]]:
    return [
        ("chr1", distinctive(LONG, 1)),
        ("chr2", distinctive(120, 2)),  # exactly two full lines
        ("chrM", distinctive(16_569, 3)),
    ]


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory, records: list[tuple[str, bytes]]) -> Path:
    path = tmp_path_factory.mktemp("fasta") / "reference.fa.gz"
    write_indexed_fasta(path, records, threads=2)
    return path


@pytest.fixture
def genome(written: Path):
    reference = ReferenceGenome(written)
    yield reference
    reference.close()


# --- writing -----------------------------------------------------------------------------------


def test_written_fasta_decompresses_to_plain_fasta(written: Path, records) -> None:
    text = gzip.decompress(written.read_bytes())
    expected = b""
    for name, seq in records:
        expected += b">" + name.encode() + b"\n"
        expected += b"".join(seq[i : i + 60] + b"\n" for i in range(0, len(seq), 60))
    assert text == expected


def test_writing_leaves_exactly_the_fasta_and_its_indexes(written: Path) -> None:
    names = sorted(p.name for p in written.parent.iterdir())
    assert names == ["reference.fa.gz", "reference.fa.gz.fai", "reference.fa.gz.gzi"]


def test_threads_give_identical_files(tmp_path: Path, records) -> None:
    write_indexed_fasta(tmp_path / "one.fa.gz", records, threads=1)
    write_indexed_fasta(tmp_path / "two.fa.gz", records, threads=2)
    for suffix in ("", ".fai", ".gzi"):
        one = Path(f"{tmp_path / 'one.fa.gz'}{suffix}").read_bytes()
        two = Path(f"{tmp_path / 'two.fa.gz'}{suffix}").read_bytes()
        assert one == two


def test_indexes_are_byte_identical_to_samtools(tmp_path: Path, written: Path) -> None:
    copy = tmp_path / "copy.fa.gz"
    shutil.copy(written, copy)
    pysam.faidx(str(copy))
    assert Path(f"{written}.fai").read_bytes() == Path(f"{copy}.fai").read_bytes()
    assert Path(f"{written}.gzi").read_bytes() == Path(f"{copy}.gzi").read_bytes()


def test_fai_of_a_contig_shorter_than_a_line_matches_samtools(tmp_path: Path) -> None:
    path = tmp_path / "short.fa.gz"
    write_indexed_fasta(path, [("chr1", b"ACGTACGTAC" * 10), ("chrS", b"TACGTACGTG")])
    copy = tmp_path / "copy.fa.gz"
    shutil.copy(path, copy)
    pysam.faidx(str(copy))
    assert Path(f"{path}.fai").read_text() == Path(f"{copy}.fai").read_text()


def test_short_contigs_still_read_correctly(tmp_path: Path) -> None:
    path = tmp_path / "short.fa.gz"
    seqs = [("chrS", b"TACGTACGTG"), ("chrT", b"GA"), ("chr1", b"ACGT" * 40)]
    write_indexed_fasta(path, seqs)
    with pysam.FastaFile(str(path)) as fasta:
        for name, seq in seqs:
            assert fasta.fetch(name).encode() == seq
    reference = ReferenceGenome(path)
    assert reference.fetch(Interval("chrS", 0, 10)) == b"TACGTACGTG"
    assert reference.fetch(Interval("chrT", 1, 2)) == b"A"
    reference.close()


def test_fai_lines_are_computed_from_the_text() -> None:
    text, fai = fasta_bytes([("a", b"ACGTA"), ("b", b"C" * 7)], line_width=3)
    assert text == b">a\nACG\nTA\n>b\nCCC\nCCC\nC\n"
    assert fai == ["a\t5\t3\t3\t4", "b\t7\t13\t3\t4"]


def test_pyfaidx_and_pysam_read_the_right_bases(written: Path, records) -> None:
    rng = np.random.default_rng(0)
    fasta = pyfaidx.Fasta(str(written), build_index=False)
    with pysam.FastaFile(str(written)) as htslib:
        for name, seq in records:
            assert htslib.get_reference_length(name) == len(seq)
            assert str(fasta[name][:]).encode() == seq
            for start in rng.integers(0, len(seq), 20):
                end = min(int(start) + int(rng.integers(1, 5_000)), len(seq))
                assert htslib.fetch(name, int(start), end).encode() == seq[start:end]
                assert str(fasta[name][int(start) : end]).encode() == seq[start:end]
    fasta.close()


# --- reading -----------------------------------------------------------------------------------


def test_first_and_last_base_of_each_contig(genome: ReferenceGenome, records) -> None:
    for name, seq in records:
        assert genome.fetch(Interval(name, *from_one_based(1))) == b"T"
        assert genome.fetch(Interval(name, *from_one_based(len(seq)))) == b"G"
        assert genome.fetch(Interval(name, *from_one_based(2, len(seq) - 1))) == (
            seq[1:-1].upper())


def test_fetch_upper_cases_soft_masked_bases(genome: ReferenceGenome, records) -> None:
    seq = dict(records)["chr1"]
    assert genome.fetch(Interval("chr1", 1_000, 1_100)) == seq[1_000:1_100].upper()


def test_window_straddling_both_ends_is_padded_with_n(genome: ReferenceGenome, records) -> None:
    seq = dict(records)["chr2"]
    window = genome.fetch(Interval("chr2", -5, len(seq) + 7))
    assert window == b"N" * 5 + seq.upper() + b"N" * 7


def test_centred_window_at_the_first_and_last_base(genome: ReferenceGenome, records) -> None:
    seq = dict(records)["chrM"].upper()
    first = genome.fetch(centred_window("chrM", 0, 16))
    assert first == b"N" * 8 + seq[:8]
    assert first[8:9] == b"T"  # the centre, index L/2, is the first base
    last = genome.fetch(centred_window("chrM", len(seq) - 1, 16))
    assert last == seq[-9:] + b"N" * 7
    assert last[8:9] == b"G"


@pytest.mark.parametrize(("start", "end"), [(-10, -2), (-3, 0), (LONG, LONG + 4),
                                            (LONG + 100, LONG + 150), (0, 0)])
def test_windows_wholly_off_the_contig_are_all_n(genome: ReferenceGenome, start: int,
                                                 end: int) -> None:
    assert genome.fetch(Interval("chr1", start, end)) == b"N" * (end - start)


def test_window_across_block_boundaries(genome: ReferenceGenome, records) -> None:
    seq = dict(records)["chr1"].upper()
    assert genome.fetch(Interval("chr1", 64_000, 132_000)) == seq[64_000:132_000]


def test_contig_lengths_and_names(genome: ReferenceGenome) -> None:
    assert {name: c.length for name, c in genome.contigs.items()} == {
        "chr1": LONG, "chr2": 120, "chrM": 16_569}


def test_unknown_contig_names_the_contig_and_file(genome: ReferenceGenome, written) -> None:
    with pytest.raises(InputError) as excinfo:
        genome.fetch(Interval("chr7", 0, 10))
    assert "'chr7'" in str(excinfo.value)
    assert str(written) in str(excinfo.value)


# --- naming ------------------------------------------------------------------------------------


def test_fasta_naming_its_contig_19_is_read_as_chr19(tmp_path: Path) -> None:
    seq = reference_sequence(4, 500)
    write_indexed_fasta(tmp_path / "ensembl.fa.gz", [("19", seq), ("MT", seq[:50])])
    reference = ReferenceGenome(tmp_path / "ensembl.fa.gz")
    assert set(reference.contigs) == {"chr19", "chrM"}
    assert reference.contig("chr19").native == "19"
    for name in ("chr19", "19", "Chr19"):
        assert reference.fetch(Interval(name, 10, 20)) == seq[10:20]
    assert reference.fetch(Interval("chrM", 0, 5)) == seq[:5]
    reference.close()


def test_fasta_naming_its_contig_chr19_is_read_for_19(tmp_path: Path) -> None:
    seq = reference_sequence(5, 500)
    write_indexed_fasta(tmp_path / "ucsc.fa.gz", [("chr19", seq)])
    reference = ReferenceGenome(tmp_path / "ucsc.fa.gz")
    assert reference.fetch(Interval("19", 490, 500)) == seq[490:]
    assert reference.contig("19").length == 500
    reference.close()


def test_fasta_with_both_19_and_chr19_is_rejected(tmp_path: Path) -> None:
    write_indexed_fasta(tmp_path / "both.fa.gz", [("19", b"ACGT"), ("chr19", b"ACGT")])
    with pytest.raises(ValueError, match="both mean 'chr19'"):
        ReferenceGenome(tmp_path / "both.fa.gz")


# --- indexes -----------------------------------------------------------------------------------


def test_missing_fasta(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found") as excinfo:
        ReferenceGenome(tmp_path / "nope.fa")
    assert str(tmp_path / "nope.fa") in str(excinfo.value)


def test_plain_fasta_without_fai_gets_one(tmp_path: Path) -> None:
    path = tmp_path / "plain.fa"
    path.write_bytes(b">1\nTACGTACG\nTTGA\n>2\nGGGG\n")
    reference = ReferenceGenome(path)
    assert Path(f"{path}.fai").exists()
    assert reference.fetch(Interval("chr1", -1, 13)) == b"NTACGTACGTTGAN"
    assert reference.fetch(Interval("chr2", 3, 4)) == b"G"
    reference.close()


def test_bgzipped_fasta_without_indexes_gets_them(tmp_path: Path, written: Path, records) -> None:
    path = tmp_path / "bare.fa.gz"
    shutil.copy(written, path)
    reference = ReferenceGenome(path)
    assert Path(f"{path}.fai").read_bytes() == Path(f"{written}.fai").read_bytes()
    assert Path(f"{path}.gzi").read_bytes() == Path(f"{written}.gzi").read_bytes()
    seq = dict(records)["chr1"]
    assert reference.fetch(Interval("chr1", LONG - 3, LONG)) == seq[-3:].upper()
    reference.close()


def test_plain_gzip_fasta_says_how_to_index_it(tmp_path: Path) -> None:
    path = tmp_path / "gzip.fa.gz"
    path.write_bytes(gzip.compress(b">chr1\nACGT\n"))
    with pytest.raises(InputError) as excinfo:
        ReferenceGenome(path)
    message = str(excinfo.value)
    assert str(path) in message
    assert f"samtools faidx {path}" in message
    assert "bgzip" in message


def test_fasta_in_read_only_folder_without_index(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    path = folder / "plain.fa"
    path.write_bytes(b">chr1\nACGT\n")
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        if os.access(folder, os.W_OK):
            pytest.skip("running as root: chmod does not stop writes")
        with pytest.raises(InputError) as excinfo:
            ReferenceGenome(path)
        message = str(excinfo.value)
        assert str(path) in message
        assert f"samtools faidx {path}" in message
    finally:
        folder.chmod(stat.S_IRWXU)
