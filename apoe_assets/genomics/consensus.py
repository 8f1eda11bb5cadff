"""Personal haplotype sequences, byte-identical to ``bcftools consensus -H 1pIu`` / ``2pIu``.

For a window ``[start, end)`` the output of
``samtools faidx ref.fa CHR:BEG-END | bcftools consensus -s SAMPLE -H 1pIu calls.vcf.gz``
(``2pIu`` for the second haplotype, ``-M N`` for ``missing="N"``) is reproduced, as checked
against bcftools 1.16 (``apoe_assets_tests/genomics/test_consensus.py``). Its rules, all seen by
running it:

- Records are taken in VCF order. A haplotype applies the allele it carries (phased ``|``); an
  unphased (``/``) genotype gives both haplotypes one allele built position by position from the
  IUPAC union of the called alleles (REF included when called), as long as the longest called
  ALT; so ``0/1`` SNV → ``M``/``R``/…, ``0/1`` insertion or deletion → the ALT itself, ``1/2``
  → ``W`` etc. A half-missing unphased call (``./1``) uses its called allele.
- Overlaps: after applying a variant, reference positions up to its last REF base are frozen.
  A later variant starting inside is skipped, except one starting exactly on the last frozen
  base that is a pure insertion/deletion sharing its first base with REF (``C>CTT``,
  ``CGC>C``, ``CA>CTA``), unless the previous applied variant lengthened the sequence; it is
  applied past that first base. Only variants a haplotype applies freeze anything.
- A missing allele gives nothing by default; with ``missing="N"`` it writes one ``N`` over the
  first REF base (deletions are not applied), like an SNV.
- Window edges: a variant starting before the window is skipped (bcftools: "ignoring
  overlapping variant"); one running past the end has its REF cut at the end and its ALT cut
  to the same length when longer (bcftools: "trimming variant"); an insertion on the last base
  is applied whole. (When a second indel then starts on that last, frozen base, bcftools 1.16
  may read past its buffer and stop with a REF mismatch; here it is applied like any other.)
- The ALT takes the case of the reference base it starts on (soft-masked input stays
  soft-masked). ``ReferenceGenome.fetch`` gives upper case; with soft-masked bases, bcftools
  applies a lengthening variant that starts on a frozen lower-case base without skipping its
  first base (overwriting the earlier variant, or after a deletion at a shifted place): that
  quirk is not reproduced.

Where this module departs from bcftools, on purpose: symbolic and breakend alleles (``<DEL>``,
``<INS>``, ``*``, ``A[chr1:5[``, ``C.``; any ALT with characters outside the IUPAC nucleotide
codes) count as REF and are reported as skipped. bcftools 1.16 writes ``*``, ``.`` and
breakend text literally into the sequence, applies ``<DEL>`` from ``INFO/END`` (which the
genotype matrix does not keep), ignores ``<*>``/``<NON_REF>`` and stops with an error on any
other ``<…>`` allele. With ``snps_only`` only SNV/MNV alleles are used (as
``bcftools consensus -i 'TYPE="snp" || TYPE="mnp"'`` on biallelic records); other alleles count
as REF. Records whose every ALT is unusable are ignored, missing calls included.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from apoe_assets.genomics.contigs import canonical_chrom
from apoe_assets.genomics.coordinates import Interval
from apoe_assets.genomics.genotypes import MISSING, GenotypeMatrix

MissingPolicy = Literal["ref", "N"]

NUCLEOTIDES = b"ACGTNRYSWKMBDHV"
"""Characters an applicable allele may hold (either case); others make an allele symbolic."""

_BITS = {"A": 1, "C": 2, "G": 4, "T": 8, "R": 5, "Y": 10, "S": 6, "W": 9, "K": 12, "M": 3,
         "B": 14, "D": 13, "H": 11, "V": 7, "N": 15}
_MASK = np.zeros(256, np.uint8)
for _code, _bits in _BITS.items():
    _MASK[ord(_code)] = _MASK[ord(_code.lower())] = _bits
_MASK_OF = _MASK.tobytes()  # bytes.translate table: byte → its 4-bit mask
_CODE_OF_MASK = b"NACMGRSVTWYHKDBN".ljust(256, b"N")  # 4-bit union (A=1 … T=8) → IUPAC letter
_VALID = np.zeros(256, bool)
_VALID[np.frombuffer(NUCLEOTIDES + NUCLEOTIDES.lower(), np.uint8)] = True
_SUBSTITUTIONS = ("snv", "mnv")
SKIP_REASONS = ("overlap", "window_start", "symbolic", "not_snp")
"""Keys of :attr:`Haplotypes.skipped`."""


def iupac_union(alleles: Sequence[bytes], length: int) -> bytes:
    """Per position, the IUPAC code of the union of the alleles that reach that position."""
    masks = bytearray(length)
    for allele in alleles:
        for i, bits in enumerate(allele[:length].translate(_MASK_OF)):
            masks[i] |= bits
    return bytes(masks).translate(_CODE_OF_MASK)


def is_applicable(alt: str, kind: str) -> bool:
    """Whether an ALT is a plain sequence (not symbolic, ``*``, a breakend or ``.``)."""
    if kind == "symbolic" or not alt:
        return False
    return bool(_VALID[np.frombuffer(alt.encode(), np.uint8)].all())


def anchored_indel(ref: bytes, alt: bytes) -> bool:
    """A pure insertion or deletion (one allele is the other with one stretch added) whose
    alleles share their first base: the only kind bcftools applies on a frozen last base."""
    if len(ref) == len(alt) or not ref or not alt or ref[:1].upper() != alt[:1].upper():
        return False
    r, a = ref.upper(), alt.upper()
    short = min(len(r), len(a))
    prefix = next((i for i in range(short) if r[i] != a[i]), short)
    suffix = next((i for i in range(short) if r[-1 - i] != a[-1 - i]), short)
    return prefix + suffix >= short


@dataclass(frozen=True)
class VariantIndex:
    """Positions of a genotype matrix's records, built once per chromosome so each window's
    records are found with a binary search."""

    chrom: str | None
    pos0: np.ndarray
    end0: np.ndarray
    longest: int
    ordered: bool

    @classmethod
    def of(cls, genotypes: GenotypeMatrix) -> VariantIndex:
        """Index the records of ``genotypes`` (one chromosome)."""
        table = genotypes.variants
        chroms = table["chrom"].unique()
        if len(chroms) > 1:
            raise ValueError(f"genotypes hold several chromosomes: {', '.join(chroms[:5])}")
        pos0 = table["pos"].to_numpy(np.int64) - 1
        end0 = pos0 + table["ref"].str.len().to_numpy(np.int64)
        longest = int((end0 - pos0).max()) if len(pos0) else 1
        ordered = bool(np.all(np.diff(pos0) >= 0))
        chrom = canonical_chrom(str(chroms[0])) if len(chroms) else None
        return cls(chrom, pos0, end0, longest, ordered)

    def rows(self, window: Interval) -> np.ndarray:
        """Rows whose REF overlaps ``window``, in file order."""
        if self.chrom is None:
            return np.zeros(0, np.int64)
        if canonical_chrom(window.chrom) != self.chrom:
            raise ValueError(f"window on {window.chrom} but genotypes are for {self.chrom}")
        if self.ordered:
            lo = int(np.searchsorted(self.pos0, window.start - self.longest + 1, "left"))
            hi = int(np.searchsorted(self.pos0, window.end, "left"))
            rows = np.arange(lo, hi)
            return rows[self.end0[lo:hi] > window.start]
        return np.flatnonzero((self.pos0 < window.end) & (self.end0 > window.start))


@dataclass
class Haplotypes:
    """Both haplotype sequences of some samples over one window.

    ``sequences``, ``applied``, every ``skipped[reason]`` and ``tss_index`` run over
    haplotypes in the order ``s0_h1, s0_h2, s1_h1, …``. ``tss_index`` is where the reference
    TSS base lands in each haplotype (see :func:`build_haplotypes`); ``distinct`` is how many
    different haplotypes were actually built.
    """

    samples: list[str]
    window: Interval
    sequences: list[bytes]
    applied: np.ndarray
    skipped: dict[str, np.ndarray]
    tss_index: np.ndarray | None
    distinct: int

    def names(self) -> list[str]:
        """Haplotype names ``{sample}_h1``, ``{sample}_h2``, … in sequence order."""
        return [f"{s}_h{h}" for s in self.samples for h in (1, 2)]

    def sequence(self, sample: str, haplotype: int) -> bytes:
        """The sequence of ``sample``'s haplotype 1 or 2."""
        if haplotype not in (1, 2):
            raise ValueError(f"haplotype must be 1 or 2, got {haplotype}")
        return self.sequences[2 * self.samples.index(sample) + haplotype - 1]

    def centred(self, length: int) -> list[bytes]:
        """Every haplotype re-centred on its own TSS and cut or N-padded to ``length``."""
        if self.tss_index is None:
            raise ValueError("built without a TSS; pass tss= to build_haplotypes")
        return [centre_on_tss(s, int(t), length)
                for s, t in zip(self.sequences, self.tss_index, strict=True)]


def sample_chunks(n_samples: int, size: int) -> Iterator[np.ndarray]:
    """Sample indices in chunks of at most ``size``, to bound the memory of a build."""
    if size <= 0:
        raise ValueError(f"chunk size must be positive, got {size}")
    for first in range(0, n_samples, size):
        yield np.arange(first, min(first + size, n_samples))


def centre_on_tss(sequence: bytes, tss_index: int, length: int) -> bytes:
    """``sequence`` re-centred so that index ``tss_index`` lands at ``length // 2``: the bases
    ``[tss_index - length // 2, tss_index + length - length // 2)``, N past either end."""
    if length <= 0:
        raise ValueError(f"length must be positive, got {length}")
    first = tss_index - length // 2
    lo, hi = max(first, 0), min(first + length, len(sequence))
    if hi <= lo:
        return b"N" * length
    return b"N" * (lo - first) + sequence[lo:hi] + b"N" * (first + length - hi)


def build_haplotypes(
    reference: bytes,
    window: Interval,
    genotypes: GenotypeMatrix,
    *,
    samples: Sequence[int] | np.ndarray | None = None,
    missing: MissingPolicy = "ref",
    snps_only: bool = False,
    tss: int | None = None,
    index: VariantIndex | None = None,
) -> Haplotypes:
    """Both haplotypes of every sample (or of the sample indices ``samples``) over ``window``.

    ``reference`` holds the window's bases (:meth:`ReferenceGenome.fetch`). ``missing`` is
    ``"ref"`` (bcftools' default) or ``"N"`` (``-M N``); ``snps_only`` uses SNV/MNV alleles
    only. The rules are bcftools' (module docstring).

    ``tss`` is a 0-based reference position inside the window; its index in each haplotype is
    reported: shifted by the indels before it; where a variant replaces it, the matching base
    of the ALT (same offset from the variant start, at most the ALT's last base — for a
    deletion, its anchor base); where a deletion applied past a frozen base removes it, the
    base before.
    Pass ``index`` (:meth:`VariantIndex.of`) when building many windows of one matrix.
    Raises ``ValueError`` when an applied REF disagrees with ``reference``.
    """
    if missing not in ("ref", "N"):
        raise ValueError(f"missing must be 'ref' or 'N', got {missing!r}")
    if len(reference) != len(window):
        raise ValueError(f"reference has {len(reference)} bases for a {len(window)}-bp window")
    if tss is not None and not window.contains(tss):
        raise ValueError(f"TSS {tss} is outside the window {window}")
    index = index or VariantIndex.of(genotypes)
    if len(index.pos0) != genotypes.n_variants:
        raise ValueError("index was built from another genotype matrix")
    picked = (np.arange(len(genotypes.samples)) if samples is None
              else np.asarray(samples, dtype=np.int64).reshape(-1))
    columns = np.stack([2 * picked, 2 * picked + 1], axis=1).reshape(-1)
    skipped = {reason: np.zeros(len(columns), np.int32) for reason in SKIP_REASONS}
    rows = index.rows(window)
    table = genotypes.variants.iloc[rows]
    starts, n_alts, codes = _site_codes(table, genotypes.haplotypes[np.ix_(rows, columns)],
                                        snps_only, skipped)
    base = int(n_alts.max(initial=1)) + 1
    codes = _unphased_codes(codes, genotypes.phased[np.ix_(rows[starts], picked)], base)
    if missing == "ref":
        codes[codes == -1] = 0
    if codes.shape[0]:  # identical haplotypes are built once
        distinct, inverse = np.unique(codes.T, axis=0, return_inverse=True)
        distinct = np.ascontiguousarray(distinct.T)
    else:
        distinct, inverse = np.zeros((0, 1), np.int32), np.zeros(len(columns), np.int64)
    inverse = inverse.reshape(-1)

    pos0 = index.pos0[rows[starts]]
    edits = _Edits.of(reference, window, distinct, pos0, base,
                      [r.encode() for r in table["ref"].iloc[starts]],
                      [a.encode() for a in table["alt"]], starts)
    applied, trimmed, overlap, early = _freeze(distinct != 0, pos0, window, edits)
    bad = np.flatnonzero((applied & ~edits.ref_ok[edits.entry]).any(axis=1))
    if len(bad):
        raise ValueError(f"REF of {table['variant_id'].iloc[starts[bad[0]]]} does not match "
                         f"the reference {window.to_region()} (bcftools stops there)")
    sequences, tss_distinct = _assemble(reference, window, applied, trimmed, pos0, edits, tss)
    skipped["overlap"] += overlap.sum(axis=0, dtype=np.int32)[inverse]
    skipped["window_start"] += early.sum(axis=0, dtype=np.int32)[inverse]
    return Haplotypes(
        samples=[genotypes.samples[i] for i in picked],
        window=window,
        sequences=[sequences[i] for i in inverse],
        applied=applied.sum(axis=0, dtype=np.int32)[inverse],
        skipped=skipped,
        tss_index=None if tss_distinct is None else tss_distinct[inverse],
        distinct=distinct.shape[1],
    )


def _site_codes(table: pd.DataFrame, haps: np.ndarray, snps_only: bool,
                skipped: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rejoin split records into sites: each site's first row, its number of ALTs, and the
    ALT number each haplotype carries there (0 REF, -1 missing) ``[sites, haplotypes]``.

    Unusable alleles (symbolic; not SNV/MNV under ``snps_only``) count as REF and are
    tallied in ``skipped``; sites without a usable allele are dropped.
    """
    usable = np.array([is_applicable(a, k) for a, k in zip(table["alt"], table["kind"],
                                                           strict=True)], bool)
    symbolic = ~usable
    if snps_only:
        usable &= table["kind"].isin(_SUBSTITUTIONS).to_numpy()
    carries = haps == 1
    for reason, mask in (("symbolic", symbolic), ("not_snp", ~usable & ~symbolic)):
        skipped[reason] += carries[mask].sum(axis=0, dtype=np.int32)
    carries &= usable[:, None]
    if not len(table):
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(haps.shape, np.int32)
    site = table["site"].to_numpy()
    starts = np.flatnonzero(np.r_[True, site[1:] != site[:-1]])
    n_alts = np.diff(np.r_[starts, len(site)])
    rank = np.arange(len(site)) - np.repeat(starts, n_alts) + 1
    if np.any(np.add.reduceat(carries.astype(np.int16), starts, axis=0) > 1):
        raise ValueError("a haplotype carries two ALT alleles of one site")
    codes = np.add.reduceat(carries * rank[:, None], starts, axis=0).astype(np.int32)
    codes[np.logical_or.reduceat(haps == MISSING, starts, axis=0)] = -1
    keep = np.logical_or.reduceat(usable, starts)
    return starts[keep], n_alts[keep], codes[keep]


def _unphased_codes(codes: np.ndarray, phased: np.ndarray, base: int) -> np.ndarray:
    """Replace both haplotypes' codes of unphased calls by one code for the allele pair:
    ``a`` for a single called allele (or -1, none called), ``base + lo * base + hi`` for two."""
    first, second = codes[:, 0::2], codes[:, 1::2]
    x = np.where(first < 0, second, first)
    y = np.where(second < 0, first, second)
    lo, hi = np.minimum(x, y), np.maximum(x, y)
    pair = np.where(lo == hi, lo, base + lo * base + hi)
    out = codes.copy()
    out[:, 0::2] = np.where(phased, first, pair)
    out[:, 1::2] = np.where(phased, second, pair)
    return out


@dataclass
class _Edits:
    """Every distinct (site, allele code) of a window, one entry each, and what applying it
    does: the replacement (``alt``; ``alt[n + k]`` is entry k without its first base), the REF
    span after cutting at the window end, whether it may start on a frozen base, whether it
    lengthens the sequence, whether its REF matches the reference. ``entry[site, haplotype]``
    is the entry of each distinct haplotype."""

    entry: np.ndarray
    alt: np.ndarray
    size: np.ndarray
    span: np.ndarray
    anchored: np.ndarray
    lengthens: np.ndarray
    ref_ok: np.ndarray

    @classmethod
    def of(cls, reference: bytes, window: Interval, distinct: np.ndarray, pos0: np.ndarray,
           base: int, refs: list[bytes], alts: list[bytes], starts: np.ndarray) -> _Edits:
        n_sites = distinct.shape[0]
        shifted = distinct.astype(np.int64) + 1  # codes from -1
        present = np.zeros((n_sites, int(shifted.max(initial=0)) + 1), bool)
        present[np.arange(n_sites)[:, None], shifted] = True
        entry = (np.cumsum(present.reshape(-1)) - 1).reshape(present.shape)
        entry = entry[np.arange(n_sites)[:, None], shifted]
        sites, codes = np.nonzero(present)
        n = len(sites)
        out = cls(entry, np.empty(2 * n, object), np.zeros(2 * n, np.int64),
                  np.zeros(n, np.int64), np.zeros(n, bool), np.zeros(n, bool), np.ones(n, bool))
        for k, (i, code) in enumerate(zip(sites.tolist(), (codes - 1).tolist(), strict=True)):
            first = int(starts[i])
            alt, span, anchored, ok = _edit(reference, window, int(pos0[i]), refs[i],
                                            alts[first:first + base], code, base)
            out.alt[k], out.alt[n + k] = alt, alt[1:]
            out.size[k], out.size[n + k] = len(alt), max(len(alt) - 1, 0)
            out.span[k], out.anchored[k], out.ref_ok[k] = span, anchored, ok
            out.lengthens[k] = len(alt) > span
        return out


def _edit(reference: bytes, window: Interval, pos0: int, ref: bytes, alts: list[bytes],
          code: int, base: int) -> tuple[bytes, int, bool, bool]:
    """Replacement, REF span, may-follow-a-frozen-base and REF-matches of one allele code."""
    span, anchored = len(ref), False
    if code == 0:
        alt = ref
    elif code == -1:
        alt, span = b"N", 1
    elif code < base:
        alt = alts[code - 1]
        anchored = anchored_indel(ref, alt)
    else:
        lo, hi = divmod(code - base, base)
        called = [alts[hi - 1]] if lo == 0 else [alts[lo - 1], alts[hi - 1]]
        alt = iupac_union([*called, ref] if lo == 0 else called, max(map(len, called)))
        anchored = anchored_indel(ref, alt)
    room = window.end - pos0
    if span > room:
        span, alt = room, alt[:room]
    offset = pos0 - window.start
    ok = offset < 0 or reference[offset:offset + span].upper() == ref[:span].upper()
    lower = 0 <= offset < len(reference) and reference[offset:offset + 1].islower()
    return (alt.lower() if lower else alt.upper()), span, anchored, ok


def _freeze(active: np.ndarray, pos0: np.ndarray, window: Interval, edits: _Edits
            ) -> tuple[np.ndarray, ...]:
    """bcftools' overlap rule, run for all distinct haplotypes at once, site by site:
    masks ``[sites, haplotypes]`` of applied, applied past a frozen base (its first base
    kept), skipped as an overlap, and skipped for starting before the window."""
    applied = np.zeros(active.shape, bool)
    trimmed, overlap, early = (np.zeros_like(applied) for _ in range(3))
    frozen = np.full(active.shape[1], np.iinfo(np.int64).min, np.int64)
    lengthened = np.zeros(active.shape[1], bool)
    span, anchored = edits.span[edits.entry], edits.anchored[edits.entry]
    lengthens = edits.lengthens[edits.entry]
    for i, p in enumerate(pos0.tolist()):
        if p < window.start:
            early[i] = active[i]
            continue
        free = p > frozen
        ok = active[i] & (free | ((p == frozen) & anchored[i] & ~lengthened))
        applied[i], trimmed[i], overlap[i] = ok, ok & ~free, active[i] & ~ok
        frozen = np.where(ok, p + span[i] - 1, frozen)
        lengthened = np.where(ok, lengthens[i], lengthened)
    return applied, trimmed, overlap, early


def _assemble(reference: bytes, window: Interval, applied: np.ndarray, trimmed: np.ndarray,
              pos0: np.ndarray, edits: _Edits, tss: int | None
              ) -> tuple[list[bytes], np.ndarray | None]:
    """Join reference stretches and replacements for each distinct haplotype, and place the
    TSS (see :func:`build_haplotypes`)."""
    cut = trimmed.astype(np.int64)
    offsets = (pos0 - window.start)[:, None]
    first = (offsets + cut).T.copy()
    last = (offsets + edits.span[edits.entry]).T.copy()
    which = (edits.entry + cut * len(edits.span)).T.copy()
    mask = applied.T.copy()
    view, n = memoryview(reference), len(reference)
    sequences: list[bytes] = []
    for u in range(mask.shape[0]):
        rows = np.flatnonzero(mask[u])
        starts, ends = first[u, rows].tolist(), last[u, rows].tolist()
        pieces: list[object] = [None] * (2 * len(rows) + 1)
        pieces[0::2] = [view[a:b] for a, b in zip([0, *ends], [*starts, n], strict=True)]
        pieces[1::2] = edits.alt[which[u, rows]].tolist()
        sequences.append(b"".join(pieces))
    if tss is None:
        return sequences, None
    target = tss - window.start
    size = edits.size[which]
    delta = np.where(mask, size - (last - first), 0)
    shift = np.where(last <= target, delta, 0).sum(axis=1)
    cover = mask & (first <= target) & (last > target)
    tss_index = target + shift
    hit = np.flatnonzero(cover.any(axis=1))
    if len(hit):
        row = cover[hit].argmax(axis=1)
        f, k = first[hit, row], size[hit, row]
        tss_index[hit] = f + shift[hit] + np.minimum(target - f, k - 1)
    return sequences, tss_index
