"""Reading VCFs into a GenotypeMatrix: splitting, missing and unphased calls, REF checks,
region reads and the errors a bad file gives."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from apoe_assets.genomics.bgzf import bgzf_compress
from apoe_assets.genomics.coordinates import Interval, from_one_based
from apoe_assets.genomics.errors import InputError
from apoe_assets.genomics.fasta import ReferenceGenome, write_indexed_fasta
from apoe_assets.genomics.genotypes import MISSING
from apoe_assets.genomics.vcf import merge_intervals, read_genotypes, vcf_samples
from apoe_assets_tests.requirements import require_tools
from apoe_assets_tests.studies import Record, reference_sequence, vcf_text, write_vcf

LENGTH = 2_000
SAMPLES = ["s1", "s2", "s3", "s4", "s5", "s6"]


@pytest.fixture(scope="module")
def sequence() -> bytes:
    seq = bytearray(reference_sequence(11, LENGTH))
    seq[0], seq[-1] = ord("T"), ord("G")  # distinctive ends
    return bytes(seq)


@pytest.fixture(scope="module")
def genome(tmp_path_factory: pytest.TempPathFactory, sequence: bytes):
    path = tmp_path_factory.mktemp("ref") / "ref.fa.gz"
    write_indexed_fasta(path, [("chr1", sequence), ("chr2", reference_sequence(12, 500))])
    reference = ReferenceGenome(path)
    yield reference
    reference.close()


def other_bases(base: str) -> list[str]:
    return [b for b in "ACGT" if b != base]


def header(samples: list[str], contigs: dict[str, int]) -> str:
    lines = ["##fileformat=VCFv4.2"]
    lines += [f"##contig=<ID={name},length={length}>" for name, length in contigs.items()]
    lines += ['##ALT=<ID=DEL,Description="Deletion">',
              '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">',
              "\t".join(["#CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO",
                         "FORMAT", *samples])]
    return "\n".join(lines) + "\n"


def line(chrom: str, pos: int, ref: str, alt: str, genotypes: list[str]) -> str:
    return "\t".join([chrom, str(pos), ".", ref, alt, ".", "PASS", ".", "GT", *genotypes]) + "\n"


# --- multi-allelic records, missing and unphased calls -----------------------------------------


@pytest.fixture
def multiallelic(tmp_path: Path, sequence: bytes) -> tuple[Path, int, str, list[str]]:
    pos = 200
    ref = chr(sequence[pos - 1])
    alts = other_bases(ref)[:2]
    genotypes = ["1|2", "0|0", "2|2", "0|1", "./.", "1/1"]
    text = vcf_text([Record(pos, alts, genotypes)], sequence, samples=SAMPLES)
    return write_vcf(tmp_path / "multi.vcf.gz", text), pos, ref, alts


def test_multiallelic_record_is_split(multiallelic, genome: ReferenceGenome) -> None:
    path, pos, ref, alts = multiallelic
    matrix, report = read_genotypes(path, "chr1", genome)
    assert matrix.n_variants == 2
    assert report.records == 1
    assert report.split_records == 1
    variants = matrix.variants
    assert list(variants["variant_id"]) == [f"chr1:{pos}:{ref}:{alt}" for alt in alts]
    assert list(variants["alt"]) == alts
    assert list(variants["pos"]) == [pos, pos]
    assert variants["site"].nunique() == 1
    h = matrix.haplotypes.reshape(2, len(SAMPLES), 2)
    assert h[0, 0].tolist() == [1, 0]  # 1|2 in the ALT1 record
    assert h[1, 0].tolist() == [0, 1]  # 1|2 in the ALT2 record
    assert h[0, 2].tolist() == [0, 0]  # 2|2 carries no ALT1
    assert h[1, 2].tolist() == [1, 1]
    assert h[0, 5].tolist() == [1, 1]
    assert h[1, 5].tolist() == [0, 0]


def test_missing_genotype_is_minus_one_on_both_haplotypes(multiallelic, genome) -> None:
    path, *_ = multiallelic
    matrix, _ = read_genotypes(path, "chr1", genome)
    h = matrix.haplotypes.reshape(2, len(SAMPLES), 2)
    assert (h[:, 4] == MISSING).all()
    assert MISSING == -1
    assert (matrix.haplotypes[:, [0, 1, 2, 3, 4, 5, 6, 7, 10, 11]] >= 0).all()


def test_unphased_genotypes_are_flagged(multiallelic, genome) -> None:
    path, *_ = multiallelic
    matrix, _ = read_genotypes(path, "chr1", genome)
    assert matrix.phased.dtype == bool
    assert matrix.phased[0].tolist() == [True, True, True, True, False, False]
    assert (matrix.phased[0] == matrix.phased[1]).all()


def test_af_and_missing_hand_computed(multiallelic, genome) -> None:
    path, *_ = multiallelic
    matrix, _ = read_genotypes(path, "chr1", genome)
    # ALT1: 1|2 0|0 2|2 0|1 ./. 1/1 → ALT1 alleles 1+0+0+1+2 = 4 of 10 called
    # ALT2: 1+0+2+0+0 = 3 of 10 called; one sample missing in both
    assert matrix.variants["af"].tolist() == pytest.approx([0.4, 0.3])
    assert matrix.variants["missing"].tolist() == [1, 1]


def test_partly_missing_calls(tmp_path: Path, sequence: bytes, genome) -> None:
    genotypes = ["0|1", "1|1", ".|1", "0/0", "./.", "1|0"]
    text = vcf_text([Record(300, ["A" if chr(sequence[299]) != "A" else "C"], genotypes)],
                    sequence, samples=SAMPLES)
    matrix, _ = read_genotypes(write_vcf(tmp_path / "m.vcf.gz", text), "chr1", genome)
    assert matrix.haplotypes[0].tolist() == [0, 1, 1, 1, -1, 1, 0, 0, -1, -1, 1, 0]
    assert matrix.variants.loc[0, "af"] == pytest.approx(5 / 9)
    assert matrix.variants.loc[0, "missing"] == 2
    assert matrix.phased[0, 3] == np.False_  # 0/0
    assert matrix.phased[0, 0] == np.True_  # 0|1
    assert np.isnan(matrix.dosages()[0, 2])
    assert matrix.dosages()[0].tolist()[:2] == [1.0, 2.0]


def test_haplotype_columns_are_sample_major(tmp_path: Path, sequence: bytes, genome) -> None:
    alt = other_bases(chr(sequence[99]))[0]
    text = vcf_text([Record(100, [alt], ["0|1", "1|0", "1|1"])], sequence,
                    samples=["b", "a", "c"])
    matrix, _ = read_genotypes(write_vcf(tmp_path / "o.vcf.gz", text), "chr1", genome)
    assert matrix.samples == ["b", "a", "c"]  # file order, not sorted
    assert matrix.haplotypes.dtype == np.int8
    assert matrix.haplotypes.tolist() == [[0, 1, 1, 0, 1, 1]]  # s0_h1 s0_h2 s1_h1 …


# --- kinds, ids and positions --------------------------------------------------------------------


def test_symbolic_and_indel_records_are_classified(tmp_path: Path, sequence: bytes,
                                                   genome) -> None:
    def ref_at(pos: int, length: int = 1) -> str:
        return sequence[pos - 1 : pos - 1 + length].decode()

    gts = ["0|1"] * 3
    body = [
        line("1", 50, ref_at(50), other_bases(ref_at(50))[0], gts),
        line("1", 60, ref_at(60, 2), "".join(other_bases(ref_at(60))[0] for _ in "xx"), gts),
        line("1", 70, ref_at(70), ref_at(70) + "TTG", gts),
        line("1", 80, ref_at(80, 4), ref_at(80), gts),
        line("1", 90, ref_at(90, 3), other_bases(ref_at(90))[0] + "A", gts),
        line("1", 100, ref_at(100), "<DEL>", gts),
        line("1", 110, ref_at(110), f"{other_bases(ref_at(110))[0]},*", ["1|2"] * 3),
        line("1", 120, ref_at(120), ref_at(120) + "]chr2:198]", gts),
    ]
    path = write_vcf(tmp_path / "kinds.vcf.gz",
                     header(["a", "b", "c"], {"1": LENGTH}) + "".join(body))
    matrix, _ = read_genotypes(path, "chr1", genome)
    kinds = dict(zip(matrix.variants["variant_id"], matrix.variants["kind"], strict=True))
    assert list(kinds.values()) == ["snv", "mnv", "ins", "del", "complex", "symbolic", "snv",
                                    "symbolic", "symbolic"]
    assert f"chr1:100:{ref_at(100)}:<DEL>" in kinds
    assert f"chr1:110:{ref_at(110)}:*" in kinds
    # ALT1 of the 1|2 record at 110 is ALT1 on h1 only; the '*' allele on h2 only
    h = matrix.haplotypes[matrix.variants["pos"].to_numpy() == 110]
    assert h.tolist() == [[1, 0] * 3, [0, 1] * 3]


def test_variants_on_the_first_and_last_base_of_a_contig(tmp_path: Path, genome,
                                                        sequence: bytes) -> None:
    first, last = chr(sequence[0]), chr(sequence[-1])
    assert (first, last) == ("T", "G")
    text = vcf_text([Record(1, ["A"], ["0|1"] * 6), Record(LENGTH, ["C"], ["1|1"] * 6)],
                    sequence, samples=SAMPLES)
    path = write_vcf(tmp_path / "ends.vcf.gz", text)
    for intervals in (None, [Interval("chr1", -100, 1), Interval("chr1", LENGTH - 1, LENGTH)]):
        matrix, _ = read_genotypes(path, "chr1", genome, intervals=intervals)
        variants = matrix.variants
        assert variants["pos"].tolist() == [1, LENGTH]
        assert variants["ref"].tolist() == ["T", "G"]
        assert variants["variant_id"].tolist() == ["chr1:1:T:A", f"chr1:{LENGTH}:G:C"]
        for pos, ref in zip(variants["pos"], variants["ref"], strict=True):
            assert genome.fetch(Interval("chr1", *from_one_based(int(pos)))).decode() == ref
    inner, _ = read_genotypes(path, "chr1", genome, intervals=[Interval("chr1", 1, LENGTH - 1)])
    assert inner.n_variants == 0


def test_vcf_saying_1_is_read_for_chr1_under_either_name(tmp_path: Path, sequence, genome
                                                         ) -> None:
    text = vcf_text([Record(10, ["A" if chr(sequence[9]) != "A" else "C"], ["0|1"] * 6)],
                    sequence, contig="1", samples=SAMPLES)
    path = write_vcf(tmp_path / "one.vcf.gz", text)
    for chrom in ("chr1", "1"):
        matrix, _ = read_genotypes(path, chrom, genome)
        assert matrix.variants["chrom"].tolist() == ["chr1"]
        assert matrix.variants["variant_id"].iloc[0].startswith("chr1:10:")


def test_vcf_saying_chr1_against_a_reference_saying_1(tmp_path: Path, sequence: bytes) -> None:
    write_indexed_fasta(tmp_path / "ens.fa.gz", [("1", sequence)])
    reference = ReferenceGenome(tmp_path / "ens.fa.gz")
    alt = other_bases(chr(sequence[9]))[0]
    text = vcf_text([Record(10, [alt], ["0|1"] * 6)], sequence, contig="chr1", samples=SAMPLES)
    matrix, _ = read_genotypes(write_vcf(tmp_path / "u.vcf.gz", text), "1", reference)
    assert matrix.variants["variant_id"].tolist() == [f"chr1:10:{chr(sequence[9])}:{alt}"]
    reference.close()


def test_only_the_asked_chromosome_is_read(tmp_path: Path, sequence, genome) -> None:
    chr2 = reference_sequence(12, 500)
    body = [line("1", 10, chr(sequence[9]), other_bases(chr(sequence[9]))[0], ["0|1"]),
            line("2", 20, chr(chr2[19]), other_bases(chr(chr2[19]))[0], ["1|1"])]
    text = header(["a"], {"1": LENGTH, "2": 500}) + "".join(body)
    path = tmp_path / "two.vcf"
    path.write_text(text)  # plain text VCF: no index needed without regions
    one, _ = read_genotypes(path, "chr1", genome)
    two, _ = read_genotypes(path, "chr2", genome)
    assert one.variants["pos"].tolist() == [10]
    assert two.variants["pos"].tolist() == [20]
    assert two.haplotypes.tolist() == [[1, 1]]


# --- region reads ------------------------------------------------------------------------------


def test_region_reads_return_overlapping_records_once(tmp_path: Path, sequence, genome) -> None:
    positions = [5, 96, 100, 105, 106, 118, 120, 121, 400, 499, 500, 510, 511, 1_500]
    records = [Record(p, ["*"], ["0|1"] * 6) for p in positions]
    records.append(Record(300, ["*"], ["1|0"] * 6, ref_length=10))  # deletion over 300..309
    records.sort(key=lambda r: r.pos)
    path = write_vcf(tmp_path / "regions.vcf.gz", vcf_text(records, sequence, samples=SAMPLES))
    regions = [
        Interval("chr1", 95, 110), Interval("chr1", 100, 120),  # overlapping
        Interval("chr1", 499, 510), Interval("chr1", 505, 506),  # one inside the other
        Interval("chr1", 302, 303), Interval("chr1", 306, 307),  # both inside the deletion
    ]
    matrix, report = read_genotypes(path, "chr1", genome, intervals=regions)
    ids = matrix.variants["variant_id"].tolist()
    assert len(ids) == len(set(ids))
    assert matrix.variants["pos"].tolist() == [96, 100, 105, 106, 118, 120, 300, 500, 510]
    assert report.records == 9


def test_region_reads_match_a_full_read_filtered(tmp_path: Path, sequence, genome) -> None:
    rng = np.random.default_rng(5)
    positions = sorted(int(p) for p in rng.choice(np.arange(1, LENGTH + 1), 80, replace=False))
    records = [Record(p, ["*"], ["0|1"] * 6) for p in positions]
    path = write_vcf(tmp_path / "r.vcf.gz", vcf_text(records, sequence, samples=SAMPLES))
    full, _ = read_genotypes(path, "chr1", genome)
    starts = rng.integers(-50, LENGTH, 6)
    regions = [Interval("chr1", int(s), int(s) + int(rng.integers(1, 300))) for s in starts]
    part, _ = read_genotypes(path, "chr1", genome, intervals=regions)
    pos0 = full.variants["pos"].to_numpy() - 1
    inside = np.zeros(len(pos0), bool)
    for region in regions:
        inside |= (pos0 >= region.start) & (pos0 < region.end)
    assert part.variants["variant_id"].tolist() == full.variants["variant_id"][inside].tolist()
    assert (part.haplotypes == full.haplotypes[inside]).all()


def test_merge_intervals() -> None:
    merged = merge_intervals([Interval("chr1", 50, 60), Interval("chr1", 0, 10),
                              Interval("chr1", 10, 20), Interval("chr1", 55, 58),
                              Interval("chr1", 30, 31)])
    assert merged == [Interval("chr1", 0, 20), Interval("chr1", 30, 31),
                      Interval("chr1", 50, 60)]


# --- REF checks --------------------------------------------------------------------------------


@pytest.fixture
def mismatched(tmp_path: Path, sequence: bytes) -> Path:
    def wrong(pos: int) -> str:
        return other_bases(chr(sequence[pos - 1]))[0]

    records = [Record(10, ["*"], ["0|1"] * 6), Record(20, ["*"], ["0|1"] * 6, ref=wrong(20)),
               Record(30, ["*"], ["1|1"] * 6), Record(40, ["*"], ["0|1"] * 6, ref=wrong(40)),
               Record(50, ["*"], ["0|1"] * 6, ref=chr(sequence[49]).lower())]
    return write_vcf(tmp_path / "mismatch.vcf.gz", vcf_text(records, sequence, samples=SAMPLES))


def test_ref_mismatch_fails_naming_file_record_and_count(mismatched: Path, genome) -> None:
    with pytest.raises(InputError) as excinfo:
        read_genotypes(mismatched, "chr1", genome)
    message = str(excinfo.value)
    assert str(mismatched) in message
    assert "chr1:20" in message
    assert re.search(r"\b2 records\b", message)
    assert "ref_mismatch: drop" in message


def test_ref_mismatch_drop_drops_and_counts(mismatched: Path, genome) -> None:
    matrix, report = read_genotypes(mismatched, "chr1", genome, ref_mismatch="drop")
    assert matrix.variants["pos"].tolist() == [10, 30, 50]  # a lower-case REF still matches
    assert len(report.ref_mismatches) == 2
    assert report.ref_mismatches[0].startswith("chr1:20 ")
    metadata = report.as_metadata()
    assert metadata["ref_mismatches"] == 2
    assert metadata["vcf_records"] == 5
    assert "chr1:40" in metadata["ref_mismatch_examples"]
    assert matrix.haplotypes.shape == (3, 12)


def test_ref_running_past_the_contig_end_is_a_mismatch(tmp_path: Path, sequence, genome) -> None:
    ref = sequence[-2:].decode() + "A"  # one base past the end, where the reference reads N
    text = header(["a"], {"1": LENGTH}) + line("1", LENGTH - 1, ref, ref[0], ["0|1"])
    path = write_vcf(tmp_path / "past.vcf.gz", text)
    with pytest.raises(InputError, match=f"chr1:{LENGTH - 1}"):
        read_genotypes(path, "chr1", genome)


# --- bad files ---------------------------------------------------------------------------------


def test_malformed_line_names_the_file_and_previous_record(tmp_path: Path, sequence, genome
                                                           ) -> None:
    records = [Record(10, ["*"], ["0|1"] * 6), Record(20, ["*"], ["0|1"] * 6),
               Record(30, ["*"], ["0|1"] * 6)]
    text = vcf_text(records, sequence, samples=SAMPLES).replace("1\t30\t", "1\txx\t")
    path = write_vcf(tmp_path / "bad.vcf.gz", text, index=False)
    with pytest.raises(InputError) as excinfo:
        read_genotypes(path, "chr1", genome)
    assert str(path) in str(excinfo.value)
    assert re.search(r"after (chr)?1:20\b", str(excinfo.value))


def test_wrong_number_of_genotype_columns(tmp_path: Path, sequence, genome) -> None:
    ref = chr(sequence[9])
    text = header(["a", "b"], {"1": LENGTH}) + line("1", 10, ref, other_bases(ref)[0], ["0|1"])
    path = write_vcf(tmp_path / "cols.vcf.gz", text, index=False)
    with pytest.raises(InputError) as excinfo:
        read_genotypes(path, "chr1", genome)
    assert str(path) in str(excinfo.value)


def test_truncated_bgzip_file_names_the_file(tmp_path: Path, sequence, genome) -> None:
    samples = [f"s{i}" for i in range(40)]
    records = [Record(p, ["*"], ["0|1"] * 40) for p in range(2, 1_800, 2)]
    compressed, offsets = bgzf_compress(vcf_text(records, sequence, samples=samples).encode())
    assert len(offsets) >= 2  # several blocks, so the header still reads
    path = tmp_path / "cut.vcf.gz"
    path.write_bytes(compressed[: len(compressed) // 2])
    with pytest.raises(InputError) as excinfo:
        read_genotypes(path, "chr1", genome)
    assert str(path) in str(excinfo.value)


@pytest.mark.parametrize("keep", [20, 100])
def test_file_cut_inside_the_header_names_the_file(tmp_path: Path, sequence, genome,
                                                    keep: int) -> None:
    compressed, _ = bgzf_compress(vcf_text([Record(10, ["*"], ["0|1"])], sequence,
                                           samples=["a"]).encode())
    path = tmp_path / "cut.vcf.gz"
    path.write_bytes(compressed[:keep])
    with pytest.raises(InputError) as excinfo:
        read_genotypes(path, "chr1", genome)
    assert str(path) in str(excinfo.value)


def test_vcf_without_samples(tmp_path: Path, genome) -> None:
    path = tmp_path / "sites.vcf"
    path.write_text("##fileformat=VCFv4.2\n##contig=<ID=1,length=2000>\n"
                    "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n1\t10\t.\tA\tC\t.\t.\t.\n")
    with pytest.raises(InputError, match="no samples") as excinfo:
        read_genotypes(path, "chr1", genome)
    assert str(path) in str(excinfo.value)


def test_duplicate_sample_ids_are_an_input_error(tmp_path: Path, sequence, genome) -> None:
    text = vcf_text([Record(10, ["*"], ["0|1"] * 3)], sequence, samples=["a", "dupe", "dupe"])
    path = write_vcf(tmp_path / "dup.vcf.gz", text, index=False)
    for read in (lambda: read_genotypes(path, "chr1", genome), lambda: vcf_samples(path)):
        with pytest.raises(InputError, match=r"duplicate sample IDs.*dupe") as excinfo:
            read()
        assert str(path) in str(excinfo.value)


def test_vcf_samples_in_file_order(tmp_path: Path, sequence) -> None:
    text = vcf_text([Record(10, ["*"], ["0|1"] * 3)], sequence, samples=["z", "a", "m"])
    assert vcf_samples(write_vcf(tmp_path / "s.vcf.gz", text)) == ["z", "a", "m"]


def test_region_read_without_index_says_how_to_build_one(tmp_path: Path, sequence, genome
                                                         ) -> None:
    text = vcf_text([Record(10, ["*"], ["0|1"] * 6)], sequence, samples=SAMPLES)
    path = write_vcf(tmp_path / "noindex.vcf.gz", text, index=False)
    with pytest.raises(InputError) as excinfo:
        read_genotypes(path, "chr1", genome, intervals=[Interval("chr1", 0, 100)])
    assert f"tabix -p vcf {path}" in str(excinfo.value)
    matrix, _ = read_genotypes(path, "chr1", genome)  # a whole-chromosome read needs none
    assert matrix.n_variants == 1


def test_unsorted_vcf_gets_a_command_that_works(tmp_path: Path, sequence, genome) -> None:
    """tabix refuses unsorted input, so "build an index with tabix" would not help: the error
    names the first record out of order and gives `bcftools sort … && tabix …`, which is run
    here and makes the read work. A whole-chromosome read (no index needed) fails at that
    record instead of returning variants out of order. Catches the order check removed."""
    records = [Record(50, ["*"], ["0|1"] * 6), Record(10, ["*"], ["1|0"] * 6),
               Record(70, ["*"], ["1|1"] * 6)]
    path = write_vcf(tmp_path / "unsorted.vcf.gz", vcf_text(records, sequence), index=False)
    region = [Interval("chr1", 0, 100)]
    with pytest.raises(InputError, match=r"1:10 after 1:50: .*not sorted.*bcftools sort"
                       ) as excinfo:
        read_genotypes(path, "chr1", genome, intervals=region)
    with pytest.raises(InputError, match=r"1:10 after 1:50: records are not sorted"):
        read_genotypes(path, "chr1", genome)
    require_tools("bcftools", "tabix")
    command = str(excinfo.value).split("`")[1]
    subprocess.run(command, shell=True, check=True, capture_output=True)
    matrix, _ = read_genotypes(tmp_path / "sorted.unsorted.vcf.gz", "chr1", genome,
                               intervals=region)
    assert matrix.variants["pos"].tolist() == [10, 50, 70]


def test_missing_vcf(tmp_path: Path, genome) -> None:
    path = tmp_path / "absent.vcf.gz"
    with pytest.raises(InputError, match="not found") as excinfo:
        read_genotypes(path, "chr1", genome)
    assert str(path) in str(excinfo.value)


# --- haploid calls (chrX and chrY of males) ----------------------------------------------------


def haploid_records(sequence: bytes) -> list[Record]:
    """Samples a, b, c: an all-haploid record, a mixed-ploidy one, a multi-allelic mixed one
    (5 called haploid genotypes, 2 lone ``.``)."""
    first, second = other_bases(chr(sequence[29]))[:2]
    return [Record(10, ["*"], ["0", "1", "."]),
            Record(20, ["*"], ["0|1", "1", "."]),
            Record(30, [first, second], ["2", "1|2", "1"])]


@pytest.mark.parametrize(("rule", "expected"), [
    ("bcftools", [[0, 0, 1, 1, -1, -1], [0, 1, 1, 0, -1, -1],
                  [0, 0, 1, 0, 1, 0], [1, 0, 0, 1, 0, 0]]),
    ("both", [[0, 0, 1, 1, -1, -1], [0, 1, 1, 1, -1, -1],
              [0, 0, 1, 0, 1, 1], [1, 1, 0, 1, 0, 0]]),
])
def test_haploid_calls_follow_the_rule(tmp_path: Path, sequence, genome, rule: str,
                                       expected: list[list[int]]) -> None:
    """``bcftools`` (the default): a haploid allele on both haplotypes in an all-haploid
    record, on haplotype 1 with haplotype 2 REF in a mixed-ploidy record (dosage 2 or 1, as
    bcftools consensus -H 1pIu/2pIu build them); ``both``: on both everywhere (dosage 2); a
    lone ``.`` missing on both either way; haploid calls marked phased (one allele has no
    phase; cyvcf2 marks those of an all-haploid record unphased); the report counts the 5
    called haploid genotypes. Catches the rule ignored or swapped, the allele duplicated in a
    mixed record under ``bcftools`` (the old reading) or kept off haplotype 2 of an
    all-haploid one (the issue's reading), a ``.`` made REF, the phased flag left as cyvcf2
    gives it, and a wrong count."""
    text = vcf_text(haploid_records(sequence), sequence, samples=["a", "b", "c"])
    path = write_vcf(tmp_path / "haploid.vcf.gz", text)
    matrix, report = read_genotypes(path, "chr1", genome, haploid=rule)
    assert matrix.haplotypes.tolist() == expected
    assert matrix.phased.all()
    assert report.haploid_calls == 5
    assert report.as_metadata()["haploid_calls"] == 5
    dosages = matrix.dosages()
    assert dosages[1, :2].tolist() == [1, 2 if rule == "both" else 1]  # b haploid ALT, mixed
    assert dosages[0, 1] == 2 and np.isnan(dosages[0, 2])  # all-haploid record; lone "."
    default, _ = read_genotypes(path, "chr1", genome)
    assert (default.haplotypes.tolist() == expected) == (rule == "bcftools")


def test_haploid_rule_sees_the_whole_record_when_samples_are_kept(tmp_path: Path, sequence,
                                                                   genome) -> None:
    """Keeping only the haploid samples b and c of a mixed-ploidy record does not make it an
    all-haploid one: bcftools decides by every sample of the file, so b's haplotype 2 stays
    REF, and the kept columns equal those of the full read. Catches the sample subset left to
    htslib (which drops the other samples' ploidy) and columns picked out of order."""
    text = vcf_text(haploid_records(sequence), sequence, samples=["a", "b", "c"])
    path = write_vcf(tmp_path / "haploid.vcf.gz", text)
    full, _ = read_genotypes(path, "chr1", genome)
    kept, report = read_genotypes(path, "chr1", genome, samples=["c", "b"])
    assert kept.samples == ["b", "c"]
    assert kept.haplotypes[1].tolist() == [1, 0, -1, -1]
    np.testing.assert_array_equal(kept.haplotypes, full.haplotypes[:, 2:])
    np.testing.assert_array_equal(kept.phased, full.phased[:, 1:])
    assert report.haploid_calls == 3


def test_diploid_records_count_no_haploid_calls(multiallelic, genome) -> None:
    """A diploid VCF (with ``./.``) reports 0 haploid calls and reads the same under both
    rules. Catches diploid or missing diploid calls counted or changed by the rule."""
    path, *_ = multiallelic
    parity, report = read_genotypes(path, "chr1", genome, haploid="bcftools")
    both, _ = read_genotypes(path, "chr1", genome, haploid="both")
    assert report.haploid_calls == 0
    np.testing.assert_array_equal(parity.haplotypes, both.haplotypes)


def test_unknown_haploid_rule_is_refused(tmp_path: Path, sequence, genome) -> None:
    """A rule other than ``bcftools``/``both`` raises instead of silently reading as
    ``bcftools``. Catches the check removed."""
    text = vcf_text(haploid_records(sequence), sequence, samples=["a", "b", "c"])
    path = write_vcf(tmp_path / "haploid.vcf.gz", text)
    with pytest.raises(ValueError, match="haploid must be 'bcftools' or 'both', not 'copy'"):
        read_genotypes(path, "chr1", genome, haploid="copy")


# --- known bugs --------------------------------------------------------------------------------


def test_vcf_without_contig_lines_naming_chr1(tmp_path: Path, sequence, genome) -> None:
    alt = other_bases(chr(sequence[9]))[0]
    text = header(["a"], {}) + line("chr1", 10, chr(sequence[9]), alt, ["0|1"])
    path = tmp_path / "nocontig.vcf"
    path.write_text(text)
    matrix, _ = read_genotypes(path, "chr1", genome)
    assert matrix.variants["pos"].tolist() == [10]
