"""Reading phased VCF/BCF with cyvcf2 into a :class:`GenotypeMatrix`, multi-allelics split."""

from __future__ import annotations

import gzip
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import cyvcf2
import numpy as np
import pandas as pd

from apoe_assets.genomics.contigs import canonical_chrom, native_names
from apoe_assets.genomics.coordinates import Interval, from_one_based
from apoe_assets.genomics.errors import InputError
from apoe_assets.genomics.fasta import ReferenceGenome
from apoe_assets.genomics.genotypes import (
    MISSING,
    VARIANT_COLUMNS,
    GenotypeMatrix,
    variant_id,
    variant_kind,
)

GENOTYPES_VERSION = "1"
"""Code version of the ``genotypes`` matrices read from a VCF/BCF: bump it when they change
for the same inputs."""

RefMismatchPolicy = Literal["fail", "drop"]
HaploidRule = Literal["bcftools", "both"]
HAPLOID_RULE: HaploidRule = "bcftools"
"""How a haploid call (``1`` rather than ``1|1``, as VCFs write chrX and chrY of males) fills
the two haplotypes; the dosage is hap1 + hap2.

``bcftools``: what ``bcftools consensus -H 1pIu``/``2pIu`` write, which depends on the record.
Where the record also holds diploid calls (chrX of males and females), the allele goes on
haplotype 1 and haplotype 2 is REF: dosage 1. Where every call of the record, over all the
VCF's samples, is haploid (chrY; chrX of a VCF of males only), the allele goes on both (bcftools
finds no phase bit and takes the call as an unphased homozygote): dosage 2.
``both``: the allele on both haplotypes everywhere (the one chromosome copied): dosage 2.

Either way a haploid call counts as phased, and a haploid missing call (``.``) is missing on
both haplotypes. Under ``-M N`` bcftools writes N at a haploid call of a mixed record on
haplotype 2 (it reads the absent allele as missing); ``bcftools`` here keeps REF there, so that
the dosage stays defined."""
_HAPLOID_PAD = -2  # cyvcf2's code for the absent second allele of a haploid call
_EXAMPLES = 5
REFERENCE_BLOCK = 1 << 20
"""Reference bases read at a time while checking REF alleles."""


@dataclass
class ReadReport:
    """What happened while reading: records seen, split, dropped, and why."""

    records: int = 0
    split_records: int = 0
    haploid_calls: int = 0
    """Called haploid genotypes (one per VCF record and sample; a lone ``.`` not counted)."""
    ref_mismatches: list[str] = field(default_factory=list)

    def as_metadata(self) -> dict[str, int | str]:
        return {
            "vcf_records": self.records,
            "multiallelic_records_split": self.split_records,
            "haploid_calls": self.haploid_calls,
            "ref_mismatches": len(self.ref_mismatches),
            "ref_mismatch_examples": ", ".join(self.ref_mismatches[:_EXAMPLES]) or "none",
        }


def _index_of(path: Path) -> Path | None:
    for suffix in (".tbi", ".csi"):
        if Path(f"{path}{suffix}").exists():
            return Path(f"{path}{suffix}")
    return None


def sort_command(path: Path) -> str:
    """The commands that sort and index ``path`` (tabix refuses unsorted input)."""
    sorted_path = path.with_name(f"sorted.{path.name}")
    form, index = ("-Ob", "bcftools index") if path.suffix == ".bcf" else ("-Oz", "tabix -p vcf")
    return f"bcftools sort {form} -o {sorted_path} {path} && {index} {sorted_path}"


def first_unsorted_record(path: Path | str) -> str | None:
    """``"chrom:pos after chrom:pos"`` for the first record out of order (a position below
    the previous one on its contig, or a contig met again after another), else None."""
    vcf = cyvcf2.VCF(str(path), lazy=True, threads=1)
    done: set[str] = set()
    chrom, pos = None, 0
    try:
        for record in vcf:
            contig, position = record.CHROM, record.POS
            if contig != chrom:
                if contig in done:
                    return f"{contig}:{position} after {chrom}:{pos}"
                done.add(contig)
            elif position < pos:
                return f"{contig}:{position} after {chrom}:{pos}"
            chrom, pos = contig, position
    finally:
        vcf.close()
    return None


def open_vcf(path: Path | str, need_index: bool = False) -> cyvcf2.VCF:
    """Open a VCF/BCF, checking that it exists, has unique samples and (if asked) an index."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "VCF not found")
    if need_index and path.suffix in {".gz", ".bgz", ".bcf"} and _index_of(path) is None:
        if unsorted := first_unsorted_record(path):
            raise InputError(path, f"no index (.tbi or .csi) beside the VCF, and its records "
                             f"are not sorted by position, which an index needs; sort and "
                             f"index it with `{sort_command(path)}`", record=unsorted)
        how = "bcftools index" if path.suffix == ".bcf" else "tabix -p vcf"
        raise InputError(path, f"no index (.tbi or .csi) beside the VCF; build it with "
                         f"`{how} {path}`")
    try:
        vcf = cyvcf2.VCF(str(path), lazy=True, threads=1)
    except Exception as exc:  # cyvcf2 raises a bare Exception for a bad header
        _check_samples(path, _text_header_samples(path))
        raise InputError(path, f"cannot read as VCF/BCF (truncated or not a VCF?): {exc}"
                         ) from exc
    _check_samples(path, list(vcf.samples))
    return vcf


def _check_samples(path: Path, samples: list[str] | None) -> None:
    if samples is None:
        return
    if not samples:
        raise InputError(path, "the VCF has no samples (no genotype columns after FORMAT)")
    duplicates = [s for s, n in Counter(samples).items() if n > 1]
    if duplicates:
        raise InputError(path, f"duplicate sample IDs in the header: {', '.join(duplicates[:5])}")


def _text_header_samples(path: Path) -> list[str] | None:
    """Samples of the ``#CHROM`` line, read as text, to explain why htslib refused a header
    (it rejects duplicate sample names without saying so). None if unreadable."""
    try:
        with gzip.open(path, "rt") if path.suffix in {".gz", ".bgz"} else path.open() as handle:
            for line in handle:
                if line.startswith("#CHROM"):
                    return line.rstrip("\n").split("\t")[9:]
                if not line.startswith("##"):
                    return None
    except (OSError, EOFError, UnicodeDecodeError):
        return None
    return None


def select_samples(available: list[str], requested: Sequence[str], path: Path | str
                   ) -> list[str]:
    """The ``requested`` samples in file order; an error names those the file lacks."""
    absent = sorted(set(requested) - set(available))
    if absent:
        raise InputError(path, f"{len(absent)} requested sample(s) not in the VCF: "
                         f"{', '.join(absent[:5])}")
    wanted = set(requested)
    return [s for s in available if s in wanted]


def vcf_samples(path: Path | str) -> list[str]:
    """Sample IDs of a VCF/BCF, in file order, after the header checks of :func:`open_vcf`."""
    vcf = open_vcf(path)
    samples = list(vcf.samples)
    vcf.close()
    return samples


def merge_intervals(intervals: Iterable[Interval]) -> list[Interval]:
    """Sort and merge overlapping or touching intervals (one chromosome)."""
    merged: list[Interval] = []
    for iv in sorted(intervals):
        if merged and iv.chrom == merged[-1].chrom and iv.start <= merged[-1].end:
            last = merged[-1]
            merged[-1] = Interval(last.chrom, last.start, max(last.end, iv.end))
        else:
            merged.append(iv)
    return merged


def _records(vcf: cyvcf2.VCF, path: Path, native: str, intervals: list[Interval] | None
             ) -> Iterator[cyvcf2.Variant]:
    """Records of one chromosome (inside ``intervals`` if given), each once, with errors that
    name the record before the one that failed to parse."""
    queries: list[str | None] = (
        [f"{native}:{max(iv.start, 0) + 1}-{iv.end}" for iv in intervals] if intervals else [None]
    )
    seen: set[tuple[int, str, tuple[str, ...]]] = set()
    last, last_pos = "the first record", 0
    for query in queries:
        iterator = vcf(query) if query else vcf
        while True:
            try:
                record = next(iterator)
            except StopIteration:
                break
            except Exception as exc:  # cyvcf2 raises a bare Exception on a malformed line
                raise InputError(path, f"malformed or truncated VCF line: {exc}",
                                 record=f"after {last}") from exc
            if query is None and canonical_chrom(record.CHROM) != canonical_chrom(native):
                continue
            position = record.POS
            if position < last_pos:
                raise InputError(path, f"records are not sorted by position; sort and index "
                                 f"the VCF with `{sort_command(path)}`",
                                 record=f"{record.CHROM}:{position} after {last}")
            last_pos = position
            key = (record.POS, record.REF, tuple(record.ALT))
            if key in seen:
                continue
            seen.add(key)
            last = f"{record.CHROM}:{record.POS}"
            yield record


class _ReferenceBlocks:
    """The reference bases of records met in position order, read a block at a time (one
    FASTA read per :data:`REFERENCE_BLOCK` bases instead of one per record)."""

    def __init__(self, reference: ReferenceGenome, chrom: str):
        self.reference, self.chrom = reference, chrom
        self.start, self.bases = 0, ""

    def fetch(self, start: int, end: int) -> str:
        """Bases ``[start, end)`` (0-based), as :meth:`ReferenceGenome.fetch` gives them."""
        if not (self.start <= start and end <= self.start + len(self.bases)):
            self.start = start
            self.bases = self.reference.fetch(
                Interval(self.chrom, start, max(end, start + REFERENCE_BLOCK))).decode()
        return self.bases[start - self.start:end - self.start]


def read_genotypes(
    path: Path | str,
    chrom: str,
    reference: ReferenceGenome,
    intervals: list[Interval] | None = None,
    ref_mismatch: RefMismatchPolicy = "fail",
    samples: Sequence[str] | None = None,
    haploid: HaploidRule = HAPLOID_RULE,
) -> tuple[GenotypeMatrix, ReadReport]:
    """Read chromosome ``chrom`` (any naming style) of a VCF/BCF as split biallelic records.

    Only records overlapping ``intervals`` are read when given (this needs an index). Each REF
    is compared with ``reference``: ``fail`` raises naming the first mismatches, ``drop`` drops
    them and reports the count. ``samples`` keeps only those samples (in VCF order); one
    the VCF lacks is an error. ``haploid`` says how a haploid call fills the two haplotypes
    (:data:`HAPLOID_RULE`); the report counts the haploid calls read.
    """
    if haploid not in ("bcftools", "both"):
        raise ValueError(f"haploid must be 'bcftools' or 'both', not {haploid!r}")
    path = Path(path)
    chrom = canonical_chrom(chrom)
    vcf = open_vcf(path, need_index=intervals is not None)
    natives = native_names(vcf.seqnames) if vcf.seqnames else {}
    native = natives.get(chrom, chrom[3:] if chrom.startswith("chr") else chrom)
    in_file = list(vcf.samples)
    samples = select_samples(in_file, samples, path) if samples else in_file
    # every sample is decoded and the kept ones picked here, not by htslib's sample subsetting:
    # bcftools reads a haploid call by the ploidy of the whole record (HAPLOID_RULE)
    columns = (None if len(samples) == len(in_file)
               else np.flatnonzero(np.isin(in_file, samples)))
    n_samples = len(samples)
    report = ReadReport()
    bases = _ReferenceBlocks(reference, chrom)
    rows: list[tuple] = []
    haps: list[np.ndarray] = []
    phased: list[np.ndarray] = []
    for site, record in enumerate(_records(vcf, path, native,
                                           merge_intervals(intervals) if intervals else None)):
        report.records += 1
        where = f"{chrom}:{record.POS}"
        ref = record.REF.upper()
        genotype = record.genotype
        if genotype is None:
            raise InputError(path, "no GT field", record=where)
        gt = genotype.array()
        if gt.shape[0] != len(in_file):
            raise InputError(path, f"{gt.shape[0]} genotypes for {len(in_file)} samples",
                             record=where)
        alleles, is_phased, haploid_calls = _diploid(gt, haploid, columns)
        report.haploid_calls += haploid_calls
        start, end = from_one_based(record.POS, record.POS + len(ref) - 1)
        actual = bases.fetch(start, end)
        if actual != ref:
            report.ref_mismatches.append(f"{where} REF {ref} but reference {actual}")
            continue
        alts = record.ALT or ["."]
        if len(alts) > 1:
            report.split_records += 1
        flat = alleles.reshape(-1)
        for index, alt in enumerate(alts, start=1):
            alt = alt.upper()
            code = np.where(flat == index, 1, 0).astype(np.int8)
            code[flat < 0] = MISSING
            rows.append((variant_id(chrom, record.POS, ref, alt), chrom, record.POS, ref, alt,
                         variant_kind(ref, alt), site))
            haps.append(code)
            phased.append(is_phased)
    vcf.close()
    if report.ref_mismatches and ref_mismatch == "fail":
        shown = "; ".join(report.ref_mismatches[:_EXAMPLES])
        raise InputError(path, f"{len(report.ref_mismatches)} records have a REF that does not "
                         f"match the reference {reference.path.name} (first: {shown}); set "
                         "ref_mismatch: drop in the study file to drop them")
    return _matrix(samples, rows, haps, phased, n_samples), report


def _diploid(gt: np.ndarray, rule: HaploidRule, columns: np.ndarray | None
             ) -> tuple[np.ndarray, np.ndarray, int]:
    """Two allele columns and the phased flags of the ``columns`` samples (default all) of a
    record's ``genotype.array()`` (alleles, then the phased flag), haploid calls filled by
    ``rule`` (:data:`HAPLOID_RULE`); and how many haploid calls were called."""
    all_haploid = gt.shape[1] == 2  # one allele column: no sample of the record is diploid
    if columns is not None:
        gt = gt[columns]
    alleles = gt[:, :-1].astype(np.int16)
    is_phased = gt[:, -1].astype(bool)
    if all_haploid:
        alleles = np.column_stack([alleles[:, 0], np.full(len(alleles), _HAPLOID_PAD)])
    haploid = alleles[:, 1] == _HAPLOID_PAD
    called = haploid & (alleles[:, 0] >= 0)
    alleles[haploid & ~called, 1] = MISSING
    alleles[called, 1] = alleles[called, 0] if rule == "both" or all_haploid else 0
    is_phased[haploid] = True  # one allele: nothing to phase (cyvcf2 says unphased when all are)
    return alleles, is_phased, int(called.sum())


def _matrix(samples: list[str], rows: list[tuple], haps: list[np.ndarray],
            phased: list[np.ndarray], n_samples: int) -> GenotypeMatrix:
    haplotypes = np.stack(haps) if haps else np.zeros((0, 2 * n_samples), np.int8)
    phased_matrix = np.stack(phased) if phased else np.zeros((0, n_samples), bool)
    variants = pd.DataFrame(rows, columns=VARIANT_COLUMNS[:7])
    called = haplotypes != MISSING
    with np.errstate(invalid="ignore", divide="ignore"):
        variants["af"] = np.where(called.sum(1) > 0,
                                  (haplotypes == 1).sum(1) / np.maximum(called.sum(1), 1), np.nan)
    variants["missing"] = (~called).reshape(len(rows), n_samples, 2).any(2).sum(1)
    variants = variants.astype({"pos": "int64", "site": "int64", "missing": "int64"})
    return GenotypeMatrix(samples, variants[VARIANT_COLUMNS], haplotypes, phased_matrix)
