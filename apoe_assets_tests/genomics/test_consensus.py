"""Personal haplotypes checked byte for byte against `bcftools consensus -H 1pIu` / `2pIu`.

Every peer case writes a VCF, reads it with our reader, builds both haplotypes of every sample
and runs ``samtools faidx ref.fa CHR:BEG-END | bcftools consensus -s S -H {1,2}pIu calls.vcf.gz``
on the same window: sequences, the FASTA header and bcftools' "Applied N variants" must agree.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from apoe_assets.genomics.consensus import (
    Haplotypes,
    VariantIndex,
    anchored_indel,
    build_haplotypes,
    centre_on_tss,
    iupac_union,
    sample_chunks,
)
from apoe_assets.genomics.coordinates import Interval
from apoe_assets.genomics.fasta import ReferenceGenome, write_indexed_fasta
from apoe_assets.genomics.genotypes import VARIANT_COLUMNS, GenotypeMatrix, variant_id, variant_kind
from apoe_assets.genomics.personal import SequenceFolder, SequenceSpec, write_personal_sequences
from apoe_assets.genomics.vcf import HAPLOID_RULE, HaploidRule, read_genotypes
from apoe_assets_tests.requirements import needs_tools
from apoe_assets_tests.studies import reference_sequence, write_vcf

LENGTH = 8_000
SAMPLES = ["s0", "s1", "s2", "s3", "s4", "s5"]
needs_peer = needs_tools("bcftools", "samtools")
SNP_FILTER = 'TYPE="snp" || TYPE="mnp"'


@dataclass
class Site:
    """One VCF record: 1-based POS, ALTs, a GT per sample; REF read from the reference
    (``ref_length`` bases) unless given; ``info`` as written."""

    pos: int
    alts: list[str]
    gts: list[str]
    ref_length: int = 1
    ref: str | None = None
    info: str = "."


@pytest.fixture(scope="module")
def sequence() -> bytes:
    return reference_sequence(21, LENGTH)


@pytest.fixture(scope="module")
def fasta(tmp_path_factory: pytest.TempPathFactory, sequence: bytes) -> Path:
    path = tmp_path_factory.mktemp("reference") / "ref.fa.gz"
    write_indexed_fasta(path, [("chr1", sequence)])
    return path


@pytest.fixture(scope="module")
def genome(fasta: Path):
    reference = ReferenceGenome(fasta)
    yield reference
    reference.close()


def ref_of(sequence: bytes, site: Site) -> str:
    return site.ref or sequence[site.pos - 1 : site.pos - 1 + site.ref_length].decode()


def other(base: str, shift: int = 1) -> str:
    return "ACGT"[("ACGT".index(base) + shift) % 4]


def vcf_text(sites: list[Site], sequence: bytes, samples: list[str], contig: str = "chr1"
             ) -> str:
    header = [
        "##fileformat=VCFv4.2",
        f"##contig=<ID={contig},length={len(sequence)}>",
        '##ALT=<ID=DEL,Description="Deletion">',
        '##ALT=<ID=INS,Description="Insertion">',
        '##INFO=<ID=END,Number=1,Type=Integer,Description="End">',
        '##INFO=<ID=SVTYPE,Number=1,Type=String,Description="SV type">',
        '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">',
        "\t".join(["#CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO", "FORMAT",
                   *samples]),
    ]
    body = ["\t".join([contig, str(s.pos), ".", ref_of(sequence, s), ",".join(s.alts), ".",
                       "PASS", s.info, "GT", *s.gts]) for s in sites]
    return "\n".join(header + body) + "\n"


def bcftools_consensus(fasta: Path, vcf: Path, region: str, sample: str, haplotype: int,
                       options: tuple[str, ...] = ()) -> tuple[str, bytes, int]:
    """FASTA header, sequence and applied count of
    ``samtools faidx FASTA REGION | bcftools consensus -s SAMPLE -H {h}pIu [options] VCF``."""
    window = subprocess.run(["samtools", "faidx", str(fasta), region], capture_output=True,
                            check=True).stdout
    run = subprocess.run(["bcftools", "consensus", "-s", sample, "-H", f"{haplotype}pIu",
                          *options, str(vcf)], input=window, capture_output=True)
    assert run.returncode == 0, run.stderr.decode(errors="replace")
    header, *lines = run.stdout.decode().split("\n")
    applied = next(int(line.split()[1]) for line in run.stderr.decode().splitlines()
                   if line.startswith("Applied "))
    return header, "".join(lines).encode(), applied


def build(folder: Path, genome: ReferenceGenome, sites: list[Site], sequence: bytes,
          window: Interval, samples: list[str], haploid: HaploidRule = HAPLOID_RULE,
          **options) -> Haplotypes:
    vcf = write_vcf(folder / "calls.vcf.gz", vcf_text(sites, sequence, samples))
    matrix, _ = read_genotypes(vcf, "chr1", genome, intervals=[window], haploid=haploid)
    return build_haplotypes(genome.fetch(window), window, matrix, **options)


def assert_matches_bcftools(folder: Path, fasta: Path, genome: ReferenceGenome, sequence: bytes,
                            sites: list[Site], window: Interval, samples: list[str] = SAMPLES,
                            peer_sites: list[Site] | None = None,
                            peer_options: tuple[str, ...] = (),
                            haploid: HaploidRule = HAPLOID_RULE, **options) -> Haplotypes:
    """Build with our code from ``sites`` (haploid calls read by ``haploid``) and with
    bcftools from ``peer_sites`` (default the same) and require identical sequences, headers
    and applied counts for every haplotype."""
    folder.mkdir(parents=True, exist_ok=True)
    ours = build(folder, genome, sites, sequence, window, samples, haploid, **options)
    peer_vcf = write_vcf(folder / "peer.vcf.gz",
                         vcf_text(peer_sites if peer_sites is not None else sites, sequence,
                                  samples))
    if options.get("missing") == "N":
        peer_options = ("-M", "N", *peer_options)
    for i, sample in enumerate(samples):
        for h in (1, 2):
            header, expected, applied = bcftools_consensus(fasta, peer_vcf, window.to_region(),
                                                           sample, h, peer_options)
            assert header == f">{window.to_region()}"
            got = ours.sequences[2 * i + h - 1]
            assert got == expected, f"{sample} h{h}:\n ours {got.decode()}\n bcf  " \
                                    f"{expected.decode()}"
            assert ours.applied[2 * i + h - 1] == applied, f"{sample} h{h} applied"
    return ours


WINDOW = Interval("chr1", 1_000, 1_100)  # 1-based 1001-1100


# --- edges of the window -------------------------------------------------------------------


@needs_peer
def test_indels_at_the_first_and_last_base_of_the_window(tmp_path, fasta, genome, sequence):
    first, last = WINDOW.start + 1, WINDOW.end  # 1-based
    sites = [
        Site(first - 2, ["X"], ["1|0", "0|0", "0|0", "0|0", "0|0", "0|0"], ref_length=4),
        Site(first, ["X"], ["0|0", "0|0", "1|0", "0|0", "0|0", "0|0"]),  # SNV
        Site(first, ["X+GGA"], ["0|0", "1|0", "0|0", "0|0", "0|0", "0|0"]),  # insertion
        Site(first, ["X"], ["0|0", "0|1", "0|0", "0|0", "0|0", "0|0"], ref_length=3),
        Site(last - 1, ["X"], ["0|0", "0|0", "0|0", "0|1", "0|0", "0|0"], ref_length=4),
        Site(last - 1, ["MNP"], ["0|0", "0|0", "0|0", "0|0", "1|0", "0|0"], ref_length=3),
        Site(last, ["X"], ["0|0", "0|0", "0|0", "0|0", "0|0", "1|1"]),  # SNV
        Site(last, ["X+TTTT"], ["0|0", "0|0", "0|0", "1|0", "0|0", "0|0"]),  # insertion
        Site(last, ["X"], ["0|0", "0|0", "0|0", "0|0", "0|1", "0|0"], ref_length=3),
    ]
    sites = concrete(sites, sequence)
    ours = assert_matches_bcftools(tmp_path, fasta, genome, sequence, sites, WINDOW)
    reference = genome.fetch(WINDOW)
    # the deletion starting before the window is skipped, not trimmed
    assert ours.sequence("s0", 1) == reference
    assert ours.skipped["window_start"][0] == 1
    # an ALT lands exactly at its 1-based POS: first and last base of the window
    assert ours.sequence("s2", 1)[0:1].decode() == sites[1].alts[0] != chr(reference[0])
    assert ours.sequence("s5", 1)[-1:].decode() == sites[6].alts[0] != chr(reference[-1])
    assert ours.sequence("s1", 1) == reference[:1] + b"GGA" + reference[1:]
    assert ours.sequence("s1", 2) == reference[:1] + reference[3:]
    # an insertion on the last base is applied whole; a deletion past the end is cut there
    assert ours.sequence("s3", 1) == reference + b"TTTT"
    assert ours.sequence("s3", 2) == reference[:-1]


def concrete(sites: list[Site], sequence: bytes) -> list[Site]:
    """Fill placeholder ALTs: ``X`` = another base (SNV) or the anchor base (deletion),
    ``X+SEQ`` = insertion of SEQ after the anchor, ``MNP`` = every REF base changed."""
    out = []
    for site in sites:
        ref = ref_of(sequence, site)
        alts = []
        for alt in site.alts:
            if alt == "X":
                alt = other(ref) if len(ref) == 1 else ref[0]
            elif alt.startswith("X+"):
                alt = ref[0] + alt[2:]
            elif alt == "MNP":
                alt = "".join(other(b) for b in ref)
            alts.append(alt)
        out.append(replace(site, alts=alts))
    return out


@needs_peer
def test_window_at_the_contig_start(tmp_path, fasta, genome, sequence):
    window = Interval("chr1", 0, 60)
    sites = concrete([Site(1, ["X"], ["1|0", "0|1", "1/0", "0|0", "1|1", "0|0"]),
                      Site(1, ["X+AC"], ["0|1", "0|0", "0|0", "1|0", "0|0", "0|0"]),
                      Site(60, ["X"], ["0|0", "0|0", "0|0", "0|0", "1|1", "0|1"], ref_length=2)],
                     sequence)
    ours = assert_matches_bcftools(tmp_path, fasta, genome, sequence, sites, window)
    assert ours.sequence("s0", 1)[:1].decode() == sites[0].alts[0]


# --- overlaps --------------------------------------------------------------------------------


@needs_peer
def test_overlapping_variants_first_applied_wins(tmp_path, fasta, genome, sequence):
    p = WINDOW.start + 1
    sites = concrete([
        Site(p + 10, ["X"], ["1|1", "0|0", "0|0", "0|0", "0|0", "0|0"], ref_length=5),
        Site(p + 12, ["X"], ["1|1", "0|0", "0|0", "0|0", "0|0", "1|0"]),  # inside the deletion
        Site(p + 20, ["X"], ["0|0", "1|1", "0|0", "0|0", "0|0", "0|0"], ref_length=4),
        Site(p + 22, ["X"], ["0|0", "1|0", "0|0", "0|0", "0|0", "0|0"], ref_length=3),
        Site(p + 30, ["X"], ["0|0", "0|0", "1|1", "0|0", "0|0", "0|0"]),  # SNV then deletion
        Site(p + 30, ["X"], ["0|0", "0|0", "1|0", "0|0", "0|0", "0|0"], ref_length=3),
        Site(p + 40, ["X"], ["0|0", "0|0", "0|0", "1|1", "0|0", "0|0"], ref_length=3),
        Site(p + 40, ["X"], ["0|0", "0|0", "0|0", "1|0", "0|0", "0|0"]),  # deletion then SNV
        Site(p + 50, ["X+TT"], ["0|0", "0|0", "0|0", "0|0", "1|1", "0|0"]),
        Site(p + 50, ["X"], ["0|0", "0|0", "0|0", "0|0", "1|0", "0|0"], ref_length=3),
        Site(p + 60, ["X"], ["0|0", "0|0", "0|0", "0|0", "0|0", "1|1"], ref_length=3),
        Site(p + 62, ["X+GG"], ["0|0", "0|0", "0|0", "0|0", "0|0", "1|0"]),  # on its last base
    ], sequence)
    ours = assert_matches_bcftools(tmp_path, fasta, genome, sequence, sites, WINDOW)
    overlap = dict(zip(ours.names(), ours.skipped["overlap"].tolist(), strict=True))
    assert overlap == {"s0_h1": 1, "s0_h2": 1, "s1_h1": 1, "s1_h2": 0, "s2_h1": 0, "s2_h2": 0,
                       "s3_h1": 1, "s3_h2": 0, "s4_h1": 1, "s4_h2": 0, "s5_h1": 0, "s5_h2": 0}
    reference = genome.fetch(WINDOW)
    snv = sites[4].alts[0].encode()
    # the deletion at the SNV's position is applied past the SNV's base
    assert ours.sequence("s2", 1) == reference[:30] + snv + reference[33:]


def test_anchored_indel_rule() -> None:
    assert anchored_indel(b"C", b"CTT") and anchored_indel(b"CGC", b"C")
    assert anchored_indel(b"CA", b"CTA") and anchored_indel(b"CGC", b"CC")
    assert not anchored_indel(b"C", b"GAC")  # pure insertion, first base differs
    assert not anchored_indel(b"CG", b"G")
    assert not anchored_indel(b"CGC", b"CTTTT")  # anchored but not pure
    assert not anchored_indel(b"CG", b"TA")


# --- genotypes: unphased, multi-allelic, missing ---------------------------------------------


@needs_peer
def test_unphased_genotypes(tmp_path, fasta, genome, sequence):
    p = WINDOW.start + 1
    gts = ["0/1", "1/0", "1/1", "0/0", "./1", "0/."]
    sites = concrete([
        Site(p + 10, ["X"], gts),
        Site(p + 20, ["MNP"], gts, ref_length=2),
        Site(p + 30, ["X+GAT"], gts),
        Site(p + 40, ["X"], gts, ref_length=3),
        Site(p + 50, ["X", "MNP"], ["1/2", "0/2", "2/1", "2/2", "./2", "1|2"],
             ref_length=3),  # a deletion and an MNP
        Site(p + 60, ["X+CC", "X+G"], ["1/2", "0/2", "2/1", "2/2", "./2", "1|2"]),
    ], sequence)
    ours = assert_matches_bcftools(tmp_path, fasta, genome, sequence, sites, WINDOW)
    reference = genome.fetch(WINDOW)
    ref_base, alt_base = chr(reference[10]), sites[0].alts[0]
    code = iupac_union([ref_base.encode(), alt_base.encode()], 1)
    assert code not in (b"A", b"C", b"G", b"T", b"N")
    for h in (1, 2):  # an unphased heterozygous SNV is its IUPAC code on both haplotypes
        assert ours.sequence("s0", h)[10:11] == code
    # an unphased heterozygous insertion is applied to both haplotypes
    assert ours.sequence("s0", 1) == ours.sequence("s0", 2)
    assert b"GAT" in ours.sequence("s0", 1)[29:35]


@needs_peer
@pytest.mark.parametrize("missing", ["ref", "N"])
def test_missing_genotypes(tmp_path, fasta, genome, sequence, missing):
    p = WINDOW.start + 1
    gts = [".|.", "./.", ".|1", "1|.", "./1", "0/."]
    sites = concrete([Site(p + 10, ["X"], gts), Site(p + 20, ["X"], gts, ref_length=3),
                      Site(p + 21, ["X"], ["1|1"] * 6),
                      Site(p + 30, ["X+TT"], gts), Site(p + 30, ["X"], ["1|1"] * 6, ref_length=2)],
                     sequence)
    ours = assert_matches_bcftools(tmp_path, fasta, genome, sequence, sites, WINDOW,
                                   missing=missing)
    first = ours.sequence("s0", 1)
    assert first[10:11] == (b"N" if missing == "N" else genome.fetch(WINDOW)[10:11])


@needs_peer
def test_multiallelic_sites_are_split_and_rejoined(tmp_path, fasta, genome, sequence):
    p = WINDOW.start + 1
    sites = concrete([
        Site(p + 10, ["X", "X"], ["1|2", "2|1", "0|2", "2|2", "1/2", "0/2"]),
        Site(p + 20, ["X", "X+AAA", "MNP"], ["1|2", "3|1", "2|3", "0|3", "3/2", "1/3"],
             ref_length=3),
    ], sequence)
    sites[0].alts[1] = other(ref_of(sequence, sites[0]), 2)
    sites[1].alts[1] = sites[1].alts[1] + ref_of(sequence, sites[1])[1:]
    ours = assert_matches_bcftools(tmp_path, fasta, genome, sequence, sites, WINDOW)
    assert ours.sequence("s0", 1)[10:11].decode() == sites[0].alts[0]
    assert ours.sequence("s0", 2)[10:11].decode() == sites[0].alts[1]


# --- haploid calls (chrX and chrY of males) --------------------------------------------------


def haploid_sites(sequence: bytes) -> list[Site]:
    """s0 haploid everywhere (a male's chrX), s1 haploid REF or ALT, s3 with lone ``.``; the
    rest diploid, phased and unphased: SNVs, an insertion, a deletion, an MNV and a
    multi-allelic record, all-haploid and mixed-ploidy records."""
    p = WINDOW.start + 1
    sites = concrete([
        Site(p + 10, ["X"], ["1", "0", "0|1", ".", "1|1", "0/1"]),
        Site(p + 20, ["X"], ["1", "0", "1", "0", "1", "."]),  # every call haploid
        Site(p + 30, ["X+GA"], ["1", "1", "0|1", "1", "0|0", "1/0"]),
        Site(p + 40, ["X"], ["1", "0", "1|0", ".", "1|1", "0"], ref_length=3),
        Site(p + 50, ["X", "X"], ["2", "1", "1|2", ".", "2|2", "2"]),
        Site(p + 60, ["MNP"], ["1", "1", "0|0", "0", "1|0", "0/1"], ref_length=2),
    ], sequence)
    sites[4].alts[1] = other(ref_of(sequence, sites[4]), 2)
    return sites


def as_diploid(sites: list[Site], rule: HaploidRule) -> list[Site]:
    """``sites`` with every haploid call written out as the rule reads it: ``a`` as ``a|a``
    (``both``, or ``bcftools`` in an all-haploid record) or ``a|0`` (``bcftools`` in a
    mixed-ploidy record), a lone ``.`` as ``.|.``."""
    def diploid(gt: str, copy: bool) -> str:
        if "|" in gt or "/" in gt:
            return gt
        return ".|." if gt == "." else f"{gt}|{gt if copy else 0}"
    out = []
    for site in sites:
        copy = rule == "both" or not any("|" in g or "/" in g for g in site.gts)
        out.append(replace(site, gts=[diploid(g, copy) for g in site.gts]))
    return out


@needs_peer
def test_haploid_calls_match_bcftools(tmp_path, fasta, genome, sequence):
    """The default rule on a VCF with haploid and mixed-ploidy records is byte-identical to
    ``bcftools consensus -H 1pIu``/``2pIu`` on the same file: a haploid allele on haplotype 1,
    haplotype 2 REF in a mixed record, and the allele on both in the all-haploid record.
    Catches the allele duplicated onto haplotype 2 of a mixed record (the old reading), left
    off haplotype 2 of an all-haploid record (the issue's reading), and the default
    changed."""
    sites = haploid_sites(sequence)
    ours = assert_matches_bcftools(tmp_path, fasta, genome, sequence, sites, WINDOW)
    reference = genome.fetch(WINDOW)
    alt = sites[1].alts[0].encode()  # the all-haploid record, 0-based offset 20
    assert ours.sequence("s0", 2) == reference[:20] + alt + reference[21:]


@needs_peer
@pytest.mark.parametrize("missing", ["ref", "N"])
@pytest.mark.parametrize("rule", ["bcftools", "both"])
def test_haploid_rule_as_written_out(tmp_path, fasta, genome, sequence, rule, missing):
    """Each rule equals bcftools on the VCF with every haploid call written out as the rule
    says (:func:`as_diploid`), under both missing-genotype policies; under ``both`` the
    all-haploid sample's two haplotypes are the same sequence, carrying every allele. Catches
    a rule that does something else than it states (e.g. ``both`` leaving haplotype 2 REF, a
    ``.`` half REF, ``bcftools`` copying the allele in a mixed record)."""
    sites = haploid_sites(sequence)
    ours = assert_matches_bcftools(tmp_path, fasta, genome, sequence, sites, WINDOW,
                                   peer_sites=as_diploid(sites, rule), haploid=rule,
                                   missing=missing)
    if rule == "both":
        assert ours.sequence("s0", 1) == ours.sequence("s0", 2) != genome.fetch(WINDOW)
        assert ours.applied[0] == ours.applied[1] == len(sites)
    else:
        assert ours.applied[0] == len(sites) and ours.applied[1] == 1


@needs_peer
def test_haploid_rule_keeps_ref_where_bcftools_minus_m_n_writes_n(tmp_path, fasta, genome,
                                                                  sequence):
    """The one place the default rule is not bcftools: under ``-M N`` bcftools reads the
    absent second allele of a haploid call in a mixed-ploidy record as missing and writes N
    there on haplotype 2; we keep REF (the README says so). Haplotype 1 is identical; the
    all-haploid sample's haplotype 2 differs only by N at the first base of each mixed
    record. Catches a change on either side that would make the README wrong."""
    sites = haploid_sites(sequence)
    ours = build(tmp_path, genome, sites, sequence, WINDOW, SAMPLES, missing="N")
    peer = write_vcf(tmp_path / "peer.vcf.gz", vcf_text(sites, sequence, SAMPLES))
    region = WINDOW.to_region()
    _, first, _ = bcftools_consensus(fasta, peer, region, "s0", 1, ("-M", "N"))
    _, second, _ = bcftools_consensus(fasta, peer, region, "s0", 2, ("-M", "N"))
    assert ours.sequence("s0", 1) == first
    got = ours.sequence("s0", 2)
    assert len(second) == len(got)
    differ = {i for i in range(len(got)) if second[i] != got[i]}
    mixed = [s for s in sites if any("|" in g or "/" in g for g in s.gts)]
    assert differ == {s.pos - 1 - WINDOW.start for s in mixed}
    assert {second[i : i + 1] for i in differ} == {b"N"}


# --- symbolic alleles, chromosome names, SNPs only -------------------------------------------


@needs_peer
def test_symbolic_alleles_are_skipped_and_counted(tmp_path, fasta, genome, sequence):
    p = WINDOW.start + 1
    base = ref_of(sequence, Site(p + 30, [], []))
    sites = concrete([
        Site(p + 10, ["<DEL>"], ["1|0", "0|1", "1/1", "./.", "0|0", "1|1"],
             info="SVTYPE=DEL;END=" + str(p + 15)),
        Site(p + 20, ["*"], ["0|1", "1|1", "0/1", "./.", "1|0", "0|0"]),
        Site(p + 30, [base + "[chr1:2000["], ["1|1", "0|0", "1|0", "./.", "0|0", "0|1"]),
        Site(p + 40, ["<INS>"], ["1|0", "1|0", "0|1", "./.", "1|1", "0|0"]),
        Site(p + 50, ["X", "*"], ["2|1", "1|2", "2/0", "./.", "2|2", "0|1"]),
        Site(p + 60, ["X."], ["1|0", "0|0", "0|0", "./.", "0|0", "0|1"]),  # single breakend
        Site(p + 70, ["X"], ["1|1", "0|1", "1/0", "./.", "0|0", "1|1"]),
    ], sequence)
    sites[5].alts[0] = ref_of(sequence, sites[5]) + "."
    # the peer sees what we do: records with only symbolic ALTs gone, a symbolic allele = REF
    peer = [replace(sites[4], alts=sites[4].alts[:1],
                    gts=[g.replace("2", "0") for g in sites[4].gts]), sites[6]]
    ours = assert_matches_bcftools(tmp_path, fasta, genome, sequence, sites, WINDOW,
                                   peer_sites=peer, missing="N")
    symbolic_per_hap = []
    for i in range(6):
        for h in range(2):
            n = 0
            for k, s in enumerate(sites[:6]):
                allele = s.gts[i].replace("/", "|").split("|")[h]
                n += allele == ("2" if k == 4 else "1")
            symbolic_per_hap.append(n)
    assert ours.skipped["symbolic"].tolist() == symbolic_per_hap


@needs_peer
def test_chromosome_named_1_in_the_vcf_and_chr1_in_the_fasta(tmp_path, fasta, genome, sequence):
    """Our reader maps ``1`` to ``chr1``; bcftools needs equal names, so its copy is renamed
    with ``bcftools annotate --rename-chrs``."""
    rng = np.random.default_rng(5)
    sites = random_sites(rng, sequence, 30, WINDOW.start - 5, WINDOW.end + 5, 6)
    vcf = write_vcf(tmp_path / "calls.vcf.gz", vcf_text(sites, sequence, SAMPLES, contig="1"))
    matrix, _ = read_genotypes(vcf, "chr1", genome, intervals=[WINDOW])
    ours = build_haplotypes(genome.fetch(WINDOW), WINDOW, matrix)
    (tmp_path / "names.txt").write_text("1\tchr1\n")
    peer = tmp_path / "renamed.vcf.gz"
    subprocess.run(["bcftools", "annotate", "--rename-chrs", str(tmp_path / "names.txt"),
                    "-Oz", "-o", str(peer), str(vcf)], check=True, capture_output=True)
    subprocess.run(["bcftools", "index", "-t", str(peer)], check=True)
    for i, sample in enumerate(SAMPLES):
        for h in (1, 2):
            header, expected, _ = bcftools_consensus(fasta, peer, WINDOW.to_region(), sample, h)
            assert header == ">chr1:1001-1100"
            assert ours.sequences[2 * i + h - 1] == expected


@needs_peer
def test_snps_only_matches_bcftools_type_filter(tmp_path, fasta, genome, sequence):
    rng = np.random.default_rng(11)
    sites = [s for s in random_sites(rng, sequence, 60, 990, 1_110, 6) if len(s.alts) == 1]
    ours = assert_matches_bcftools(tmp_path, fasta, genome, sequence, sites, WINDOW,
                                   peer_options=("-i", SNP_FILTER), snps_only=True,
                                   missing="N")
    assert ours.skipped["not_snp"].sum() > 0


def test_snps_only_keeps_the_snv_allele_of_a_mixed_site(genome) -> None:
    window = Interval("chr1", 100, 120)
    reference = genome.fetch(window)
    ref = chr(reference[5])
    snv, ins = other(ref), ref + "GG"
    matrix = hand_matrix([(106, ref, snv, 0), (106, ref, ins, 0)],
                         np.array([[1, 0], [0, 1]], np.int8))
    ours = build_haplotypes(reference, window, matrix, snps_only=True)
    assert ours.sequences[0][5:6].decode() == snv
    assert ours.sequences[1] == reference
    assert ours.skipped["not_snp"].tolist() == [0, 1]


# --- TSS -------------------------------------------------------------------------------------


@needs_peer
def test_tss_index_and_centring_with_indels(tmp_path, fasta, genome, sequence):
    window = Interval("chr1", 1_000, 1_200)
    tss = 1_100  # 0-based; 1-based 1101
    sites = concrete([
        Site(1_020, ["X+ACG"], ["1|0", "1|1", "0|0", "0|0", "0|0", "0|0"]),
        Site(1_050, ["X"], ["0|1", "1|0", "0|0", "0|0", "0|0", "0|0"], ref_length=3),
        Site(1_098, ["X"], ["0|0", "0|0", "1|0", "0|0", "0|0", "0|0"], ref_length=6),
        Site(1_101, ["X"], ["0|0", "0|0", "0|0", "1|0", "0|0", "0|0"]),
        Site(1_101, ["X+TTTT"], ["0|0", "0|0", "0|0", "0|0", "1|0", "0|0"]),
        Site(1_150, ["X+GGGGG"], ["0|0", "0|0", "0|0", "0|0", "0|0", "1|0"]),
    ], sequence)
    ours = assert_matches_bcftools(tmp_path, fasta, genome, sequence, sites, window, tss=tss)
    reference = genome.fetch(window)
    at = tss - window.start
    shifts = {"s0_h1": 3, "s0_h2": -2, "s1_h1": 1, "s1_h2": 3, "s3_h1": 0, "s4_h1": 0,
              "s5_h1": 0}
    index = dict(zip(ours.names(), ours.tss_index.tolist(), strict=True))
    for name, shift in shifts.items():
        assert index[name] == at + shift, name
    for name, seq in zip(ours.names(), ours.sequences, strict=True):
        if name not in ("s2_h1", "s3_h1"):  # the TSS base itself is unchanged elsewhere
            assert seq[index[name]] == reference[at], name
    assert ours.sequence("s3", 1)[index["s3_h1"]:][:1].decode() == sites[3].alts[0]
    # a deletion spanning the TSS: the TSS maps to the deletion's anchor base
    assert index["s2_h1"] == 1_097 - window.start
    assert ours.sequence("s2", 1)[index["s2_h1"]] == reference[1_097 - window.start]
    length = 64
    for name, centred in zip(ours.names(), ours.centred(length), strict=True):
        assert len(centred) == length
        if name not in ("s2_h1", "s3_h1"):
            assert centred[length // 2] == reference[at], name
    # upstream indels moved the sequence, centring undoes it
    centred = dict(zip(ours.names(), ours.centred(length), strict=True))
    assert centred["s0_h1"] == centred["s0_h2"] == reference[at - 32 : at + 32]


def test_centre_on_tss_pads_with_n_near_the_ends() -> None:
    seq = b"ACGTACGTAC"
    assert centre_on_tss(seq, 2, 8) == b"NNACGTAC"
    assert centre_on_tss(seq, 2, 8)[4:5] == seq[2:3]
    assert centre_on_tss(seq, 9, 8) == b"CGTACNNN"
    assert centre_on_tss(seq, 5, 4) == b"TACG"
    assert centre_on_tss(seq, 4, 20) == b"NNNNNN" + seq + b"NNNN"
    assert centre_on_tss(seq, 4, 5) == b"GTACG"
    assert centre_on_tss(seq, 40, 6) == b"NNNNNN"
    with pytest.raises(ValueError):
        centre_on_tss(seq, 4, 0)


def test_window_reaching_past_the_contig_start(genome, sequence) -> None:
    window = Interval("chr1", -50, 50)
    reference = genome.fetch(window)
    assert reference[:50] == b"N" * 50
    ref = chr(sequence[0])
    matrix = hand_matrix([(1, ref, other(ref), 0), (3, chr(sequence[2]), chr(sequence[2]) + "AA",
                                                   1)], np.array([[1, 0], [1, 1]], np.int8))
    ours = build_haplotypes(reference, window, matrix, tss=0)
    assert ours.sequences[0][50:51].decode() == other(ref)
    assert ours.sequences[0][50:56] == other(ref).encode() + sequence[1:3] + b"AA" + \
        sequence[3:4]
    assert ours.tss_index.tolist() == [50, 50]
    assert centre_on_tss(ours.sequences[1], 50, 200)[:100] == b"N" * 100


# --- the earlier study's bugs, and a large random case ---------------------------------------


def test_alt_lands_at_its_one_based_position(genome, sequence) -> None:
    window = Interval("chr1", 2_000, 2_050)  # 1-based 2001-2050
    reference = genome.fetch(window)
    rows = [(pos, chr(sequence[pos - 1]), other(chr(sequence[pos - 1])), k)
            for k, pos in enumerate((2_001, 2_025, 2_050))]
    matrix = hand_matrix(rows, np.ones((3, 2), np.int8))
    seq = build_haplotypes(reference, window, matrix).sequences[0]
    for pos, _, alt, _ in rows:
        assert seq[pos - 1 - window.start : pos - window.start].decode() == alt
    changed = [i for i in range(len(seq)) if seq[i] != reference[i]]
    assert changed == [0, 24, 49]


@needs_peer
@pytest.mark.parametrize("missing", ["ref", "N"])
def test_random_medium_case(tmp_path, fasta, genome, sequence, missing):
    """40 samples, ~100 records (~10% indels, multi-allelic, unphased and missing calls) in a
    5-kb window, with records straddling both ends."""
    rng = np.random.default_rng(2024)
    samples = [f"p{i:02d}" for i in range(40)]
    window = Interval("chr1", 1_500, 6_500)
    sites = random_sites(rng, sequence, 100, window.start - 3, window.end + 2, len(samples),
                         indel=0.1)
    ours = assert_matches_bcftools(tmp_path, fasta, genome, sequence, sites, window, samples,
                                   missing=missing, tss=4_000)
    assert ours.distinct <= len(ours.sequences)
    assert ours.applied.sum() > 0


def random_sites(rng: np.random.Generator, sequence: bytes, n: int, lo: int, hi: int,
                 n_samples: int, indel: float = 0.3) -> list[Site]:
    """Seeded records between 1-based ``lo`` and ``hi``: SNVs, MNVs, anchored and
    unanchored insertions and deletions, complex and multi-allelic records."""
    sites, seen = [], set()
    for pos in np.sort(rng.integers(max(lo, 1), hi, n)).tolist():
        n_alts = 1 if rng.random() < 0.85 else int(rng.integers(2, 4))
        ref_length = int(rng.integers(1, 5)) if rng.random() < indel else 1
        ref = sequence[pos - 1 : pos - 1 + ref_length].decode()
        alts: list[str] = []
        for _ in range(n_alts):
            alt = random_alt(rng, ref, indel)
            if alt != ref and alt not in alts:
                alts.append(alt)
        if not alts or (pos, ref, tuple(alts)) in seen:
            continue
        seen.add((pos, ref, tuple(alts)))
        sites.append(Site(pos, alts, [random_gt(rng, len(alts)) for _ in range(n_samples)],
                          ref=ref))
    return sites


def random_alt(rng: np.random.Generator, ref: str, indel: float) -> str:
    bases = "ACGT"
    if rng.random() >= indel:
        return "".join(other(b, int(rng.integers(1, 4))) for b in ref)  # SNV / MNV
    kind = rng.integers(0, 4)
    extra = "".join(rng.choice(list(bases), int(rng.integers(1, 4))))
    if kind == 0:
        return ref[0] + extra + ref[1:]  # anchored insertion
    if kind == 1 and len(ref) > 1:
        return ref[0]  # anchored deletion
    if kind == 2:
        return extra + ref[-1]  # complex
    return ref[0] + extra[:1] + ref[2:] if len(ref) > 2 else ref + extra


def random_gt(rng: np.random.Generator, n_alts: int) -> str:
    alleles = [str(int(rng.integers(1, n_alts + 1))) if rng.random() < 0.3 else "0"
               for _ in range(2)]
    alleles = ["." if rng.random() < 0.03 else a for a in alleles]
    return alleles[0] + ("/" if rng.random() < 0.1 else "|") + alleles[1]


# --- pure properties -------------------------------------------------------------------------


def hand_matrix(rows: list[tuple[int, str, str, int]], haplotypes: np.ndarray,
                phased: np.ndarray | None = None) -> GenotypeMatrix:
    """A genotype matrix from ``(pos, ref, alt, site)`` rows, without a VCF."""
    table = pd.DataFrame(
        [(variant_id("chr1", p, r, a), "chr1", p, r, a, variant_kind(r, a), s, 0.0, 0)
         for p, r, a, s in rows], columns=VARIANT_COLUMNS)
    n_samples = haplotypes.shape[1] // 2
    if phased is None:
        phased = np.ones((len(rows), n_samples), bool)
    return GenotypeMatrix([f"s{i}" for i in range(n_samples)], table, haplotypes, phased)


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_snv_haplotypes_differ_from_the_reference_exactly_where_they_carry_alt(seed) -> None:
    rng = np.random.default_rng(seed)
    length = int(rng.integers(5, 400))
    sequence = reference_sequence(int(rng.integers(0, 1000)), length)
    positions = np.sort(rng.choice(np.arange(1, length + 1), int(rng.integers(0, min(length,
                                                                                   40))),
                                   replace=False))
    rows = [(int(p), chr(sequence[p - 1]), other(chr(sequence[p - 1]), int(rng.integers(1, 4))),
             k) for k, p in enumerate(positions)]
    n_samples = int(rng.integers(1, 6))
    haps = (rng.random((len(rows), 2 * n_samples)) < 0.4).astype(np.int8)
    start = int(rng.integers(0, length))
    window = Interval("chr1", start, int(rng.integers(start + 1, length + 1)))
    reference = sequence[window.start : window.end]
    built = build_haplotypes(reference, window, hand_matrix(rows, haps))
    for column, seq in enumerate(built.sequences):
        assert len(seq) == len(window)
        differs = {i for i in range(len(seq)) if seq[i] != reference[i]}
        carried = {p - 1 - window.start: alt for (p, _, alt, _), c in zip(rows, haps[:, column],
                                                                          strict=True)
                   if c == 1 and window.contains(p - 1)}
        assert differs == set(carried)
        assert all(chr(seq[i]) == alt for i, alt in carried.items())
        assert built.applied[column] == len(carried)


def test_sample_subsets_and_chunks_equal_the_full_build(genome, sequence) -> None:
    rng = np.random.default_rng(8)
    window = Interval("chr1", 3_000, 3_400)
    sites = random_sites(rng, sequence, 40, 2_990, 3_410, 9)
    rows, haps, site_ids = [], [], []
    for k, s in enumerate(sites):
        alleles = np.array([[int(a) if a != "." else -1 for a in g.replace("/", "|").split("|")]
                            for g in s.gts]).reshape(-1)
        for j, alt in enumerate(s.alts, start=1):
            rows.append((s.pos, s.ref, alt, k))
            haps.append(np.where(alleles < 0, -1, alleles == j).astype(np.int8))
            site_ids.append(k)
    phased = np.array([["/" not in g for g in sites[k].gts] for k in site_ids])
    matrix = hand_matrix(rows, np.stack(haps), phased)
    reference = genome.fetch(window)
    index = VariantIndex.of(matrix)
    full = build_haplotypes(reference, window, matrix, index=index, tss=3_200, missing="N")
    joined: list[bytes] = []
    for chunk in sample_chunks(len(matrix.samples), 4):
        part = build_haplotypes(reference, window, matrix, samples=chunk, index=index,
                                tss=3_200, missing="N")
        assert part.samples == [matrix.samples[i] for i in chunk]
        joined += part.sequences
    assert joined == full.sequences
    odd = build_haplotypes(reference, window, matrix, samples=[7, 2], tss=3_200, missing="N")
    assert odd.sequences == full.sequences[14:16] + full.sequences[4:6]
    assert odd.tss_index.tolist() == full.tss_index[[14, 15, 4, 5]].tolist()


def test_identical_haplotypes_are_built_once(genome, sequence) -> None:
    window = Interval("chr1", 500, 600)
    ref = chr(sequence[549])
    matrix = hand_matrix([(550, ref, other(ref), 0)],
                         np.array([[1, 0] * 50], np.int8))
    built = build_haplotypes(genome.fetch(window), window, matrix)
    assert built.distinct == 2
    assert len(set(built.sequences)) == 2 and len(built.sequences) == 100
    assert built.sequences[0] is built.sequences[2]


def test_ref_disagreeing_with_the_reference_raises_when_applied(genome, sequence) -> None:
    window = Interval("chr1", 500, 600)
    wrong = other(chr(sequence[549]))
    matrix = hand_matrix([(550, wrong, other(wrong), 0)], np.array([[1, 0]], np.int8))
    with pytest.raises(ValueError, match=f"chr1:550:{wrong}:{other(wrong)}"):
        build_haplotypes(genome.fetch(window), window, matrix)
    unused = hand_matrix([(550, wrong, other(wrong), 0)], np.array([[0, 0]], np.int8))
    assert build_haplotypes(genome.fetch(window), window, unused).sequences[0] == \
        genome.fetch(window)


def test_bad_arguments_raise(genome) -> None:
    window = Interval("chr1", 500, 600)
    matrix = hand_matrix([], np.zeros((0, 2), np.int8))
    with pytest.raises(ValueError, match="bases"):
        build_haplotypes(b"A" * 10, window, matrix)
    with pytest.raises(ValueError, match="missing"):
        build_haplotypes(genome.fetch(window), window, matrix, missing="X")
    with pytest.raises(ValueError, match="outside"):
        build_haplotypes(genome.fetch(window), window, matrix, tss=700)
    empty = build_haplotypes(genome.fetch(window), window, matrix, tss=550)
    assert empty.sequences == [genome.fetch(window)] * 2 and empty.tss_index.tolist() == [50, 50]
    other_chrom = hand_matrix([(550, "A", "C", 0)], np.zeros((1, 2), np.int8))
    with pytest.raises(ValueError, match="chr2"):
        build_haplotypes(b"A" * 100, Interval("chr2", 500, 600), other_chrom)


def test_tss_check_leaves_out_haplotypes_an_unphased_het_alters(tmp_path, genome,
                                                                 sequence) -> None:
    """An unphased heterozygote 8 bp from the TSS writes an IUPAC code into both haplotypes
    (``-H 1pIu``/``2pIu``), the one carrying REF included: the TSS check cannot test them, so
    they are NaN, not failures; a phased REF haplotype and hom-REF samples are checked."""
    window, tss = Interval("chr1", 1_000, 1_200), 1_100
    pos = tss + 8 + 1  # 1-based
    ref = chr(sequence[pos - 1])
    genotypes = hand_matrix([(pos, ref, other(ref), 0)], np.array([[0, 1, 0, 1, 0, 0]]),
                            phased=np.array([[False, True, True]]))
    spec = SequenceSpec(window, tss)
    manifest = write_personal_sequences(tmp_path / "seqs", genome.fetch(window), genotypes,
                                        spec).set_index("record")
    checks = manifest["tss_matches_reference"]
    assert checks[["s0_h1", "s0_h2", "s1_h2"]].isna().all()
    assert (checks[["s1_h1", "s2_h1", "s2_h2"]] == 1).all()
    folder = SequenceFolder(tmp_path / "seqs")
    iupac = folder.model_inputs(64, ["s0_h1"])[0]
    assert iupac[32 + 8] not in b"ACGT"  # the REF haplotype really carries the IUPAC code
