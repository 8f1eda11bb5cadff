"""Linkage disequilibrium and LD clumping, as ``plink1.9 --clump`` computes them.

PLINK 1.9's clumping r² is not the correlation of dosages: from the 3×3 table of the two
variants' hard-call genotypes (samples called at both), it estimates the haplotype frequencies
by maximum likelihood — phase is known except in double heterozygotes, whose split is the root
of a cubic (Gaunt, Rodríguez & Day 2007) — and reports r² = D²/(p₁p₂q₁q₂). Where several
roots are admissible PLINK keeps the last one whose likelihood beats the first one's; that
choice, its tolerances and ``|r²| > r2`` (strict) are reproduced here.

Clumping (greedy, as PLINK): variants with p ≤ p1, in ascending p (ties in input order), each
becomes an index variant unless an earlier index variant already took it; it then takes every
not-yet-taken variant within ``kb`` (|Δpos| < kb·1000) whose r² with it exceeds ``r2``.
PLINK's ``--clump-p2`` only changes which members are listed, never the index variants.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

SMALL_EPSILON = 2.0 ** -44
"""|D| below this is taken as zero (PLINK's SMALL_EPSILON)."""
ROOT_EPSILON = 2.0 ** -35
"""Slack for cubic roots just outside [0, double-heterozygote share] (PLINK's
SMALLISH_EPSILON)."""
DEFAULT_P1 = 1.0
DEFAULT_R2 = 0.1
DEFAULT_KB = 250.0
CLUMP_BATCH = 32
"""Candidate index variants whose r² are computed together."""
TABLE_CHUNK_WORDS = 1 << 21
"""Bound on the ``uint64`` temporaries of one batch of two-locus tables (16 MiB)."""
BOUND_SLACK = 1e-9
"""Relative slack on the upper bounds of r² that skip pairs, so rounding never skips a pair
at the threshold."""


def genotype_codes(dosages: np.ndarray) -> np.ndarray:
    """Hard-call genotype codes ``int8`` 0/1/2 (ALT copies), −1 where missing (NaN)."""
    dosages = np.asarray(dosages, dtype=np.float64)
    codes = np.full(dosages.shape, -1, dtype=np.int8)
    called = ~np.isnan(dosages)
    values = dosages[called]
    if values.size and not np.all(np.isin(values, (0.0, 1.0, 2.0))):
        raise ValueError("LD needs hard-call dosages (0, 1, 2 or missing)")
    codes[called] = values.astype(np.int8)
    return codes


def _popcount(words: np.ndarray) -> np.ndarray:
    """Set bits per element of a ``uint64`` array."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(words)
    as_bytes = words.view(np.uint8).reshape(*words.shape, 8)
    return _BYTE_POPCOUNT[as_bytes].sum(axis=-1, dtype=np.uint8)


_BYTE_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


class PackedGenotypes:
    """Genotype classes as bit sets ``[variants, 3, words]`` (one ``uint64`` bit per sample;
    missing is in no class), so a two-locus table is nine AND + popcount sums."""

    def __init__(self, codes: np.ndarray):
        m, n = codes.shape
        words = max((n + 63) // 64, 1)
        bits = np.zeros((m, 3, words * 64), dtype=bool)
        for k in range(3):
            bits[:, k, :n] = codes == k
        self.bits = np.packbits(bits, axis=-1, bitorder="little").view(np.uint64)
        called = codes >= 0
        padded = np.zeros((m, words * 64), dtype=bool)
        padded[:, :n] = called
        self.called_bits = np.packbits(padded, axis=-1, bitorder="little").view(np.uint64)
        self.class_counts = _word_sums(self.bits)  # [variants, 3]
        self.n_samples = n
        self.alt = np.where(called, codes, 0).sum(axis=1).astype(np.float64)
        self.called = called.sum(axis=1).astype(np.float64)
        self.missing = n - self.called

    def may_exceed(self, anchors: np.ndarray, others: np.ndarray, threshold: float
                   ) -> np.ndarray:
        """False for pairs whose r² cannot exceed ``threshold`` whatever the samples missing
        at the other variant carry: the pair's allele frequencies lie in intervals around
        each variant's own, and r² ≤ D²max/(p₁q₁p₂q₂) over those intervals."""
        lo_a, hi_a = self._minor_interval(anchors, self.missing[others])
        lo_b, hi_b = self._minor_interval(others, self.missing[anchors])
        # order each pair so that interval "p" lies below interval "q"
        swap = lo_a > lo_b
        p_hi = np.where(swap, hi_b, hi_a)
        q_lo, q_hi = np.where(swap, lo_a, lo_b), np.where(swap, hi_a, hi_b)
        with np.errstate(divide="ignore", invalid="ignore"):
            coupling = p_hi * (1 - q_lo) / (q_lo * (1 - p_hi))
            repulsion = p_hi * q_hi / ((1 - p_hi) * (1 - q_hi))
            bound = np.maximum(coupling, repulsion)
        unsure = np.isnan(lo_a) | np.isnan(lo_b) | (p_hi >= q_lo) | ~np.isfinite(bound)
        return unsure | (bound > threshold * (1 - BOUND_SLACK))

    def _minor_interval(self, rows: np.ndarray, dropped: np.ndarray
                        ) -> tuple[np.ndarray, np.ndarray]:
        """Range of the minor-allele frequency of ``rows`` over its samples called at the
        other variant (up to ``dropped`` called samples removed); NaN if it may cross ½."""
        alt, called = self.alt[rows], self.called[rows]
        kept = np.maximum(called - dropped, 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            low = np.maximum(alt - 2 * dropped, 0) / (2 * kept)
            high = np.minimum(alt / (2 * kept), 1.0)
        flip = low >= 0.5
        low, high = np.where(flip, 1 - high, low), np.where(flip, 1 - low, high)
        crosses = (high >= 0.5) | (kept <= 0)
        return np.where(crosses, np.nan, low), np.where(crosses, np.nan, high)

    def tables(self, anchors: np.ndarray, others: np.ndarray) -> np.ndarray:
        """``[pairs, 9]`` genotype counts of each (anchor, other) variant pair, row-major by
        (anchor genotype, other genotype), over samples called at both.

        Only the four heterozygous/hom-ALT cells are ANDed; the REF cells follow from the
        margins, which are each variant's own class counts unless one of the pair has missing
        calls (then they are counted over the samples called at both)."""
        anchors = np.asarray(anchors, dtype=np.int64)
        others = np.asarray(others, dtype=np.int64)
        out = np.empty((len(anchors), 9), dtype=np.int64)
        words = self.bits.shape[-1]
        step = max(TABLE_CHUNK_WORDS // (4 * words), 1)
        for start in range(0, len(anchors), step):
            ia, ib = anchors[start:start + step], others[start:start + step]
            a = self.bits[ia, 1:]  # [pairs, 2 (het, hom-ALT), words]
            b = self.bits[ib, 1:]
            core = _word_sums(a[:, :, None, :] & b[:, None, :, :]).reshape(-1, 2, 2)
            rows = self.class_counts[ia, 1:].copy()
            cols = self.class_counts[ib, 1:].copy()
            both = np.full(len(ia), self.n_samples, dtype=np.int64)
            dirty = np.flatnonzero((self.missing[ia] > 0) | (self.missing[ib] > 0))
            if len(dirty):
                called_a, called_b = self.called_bits[ia[dirty]], self.called_bits[ib[dirty]]
                rows[dirty] = _word_sums(a[dirty] & called_b[:, None, :])
                cols[dirty] = _word_sums(b[dirty] & called_a[:, None, :])
                both[dirty] = _word_sums(called_a & called_b)
            t = out[start:start + step]
            t[:, [4, 5, 7, 8]] = core.reshape(-1, 4)
            t[:, 3] = rows[:, 0] - core[:, 0, 0] - core[:, 0, 1]
            t[:, 6] = rows[:, 1] - core[:, 1, 0] - core[:, 1, 1]
            t[:, 1] = cols[:, 0] - core[:, 0, 0] - core[:, 1, 0]
            t[:, 2] = cols[:, 1] - core[:, 0, 1] - core[:, 1, 1]
            t[:, 0] = both - rows.sum(axis=1) - t[:, 1] - t[:, 2]
        return out


def _word_sums(words: np.ndarray) -> np.ndarray:
    """Set bits of each ``uint64`` row over its last axis, as int64 ``words.shape[:-1]``."""
    counts = _popcount(words.reshape(-1, words.shape[-1]))
    total = counts[:, 0].astype(np.int32)
    for word in range(1, counts.shape[1]):  # faster than a reduction over a short axis
        total += counts[:, word]
    return total.astype(np.int64).reshape(words.shape[:-1])


def _cubic_real_roots(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Real roots of x³ + a x² + b x + c, ascending, ``[m, 3]`` NaN-padded."""
    q = (a * a - 3.0 * b) / 9.0
    r = (2.0 * a ** 3 - 9.0 * a * b + 27.0 * c) / 54.0
    roots = np.full((len(a), 3), np.nan)
    three = r * r < q ** 3
    if three.any():
        sq = np.sqrt(q[three])
        theta = np.arccos(np.clip(r[three] / sq ** 3, -1.0, 1.0))
        shift = a[three] / 3.0
        trio = np.stack([-2 * sq * np.cos(theta / 3) - shift,
                         -2 * sq * np.cos((theta + 2 * np.pi) / 3) - shift,
                         -2 * sq * np.cos((theta - 2 * np.pi) / 3) - shift], axis=1)
        roots[three] = np.sort(trio, axis=1)
    one = ~three
    if one.any():
        big_a = -np.sign(r[one]) * np.cbrt(np.abs(r[one]) + np.sqrt(r[one] ** 2 - q[one] ** 3))
        big_b = np.divide(q[one], big_a, out=np.zeros_like(big_a), where=big_a != 0)
        roots[one, 0] = big_a + big_b - a[one] / 3.0
    return roots


def _lnlike(known: np.ndarray, centre: np.ndarray, freqs: np.ndarray, half: np.ndarray,
            incr: np.ndarray) -> np.ndarray:
    """Log-likelihood of assigning ``incr`` of the double-heterozygote share to 11/22."""
    f11, f12, f21, f22 = (freqs[:, 0] + incr, freqs[:, 1] + half - incr,
                          freqs[:, 2] + half - incr, freqs[:, 3] + incr)
    with np.errstate(divide="ignore", invalid="ignore"):
        ll = centre * np.log(f11 * f22 + f12 * f21)
        for k, f in enumerate((f11, f12, f21, f22)):
            ll = ll + np.where(known[:, k] != 0, known[:, k] * np.log(f), 0.0)
    return ll


def _phase_shares(t: np.ndarray) -> tuple[np.ndarray, ...]:
    """From ``[m, 9]`` float tables: the haplotype counts known without phase (11, 12, 21,
    22), the double heterozygotes, twice the samples, the known haplotype frequencies, the
    double heterozygotes' share ``half`` (each phase gets part of it) and the two allele-1
    frequencies (which do not depend on that split)."""
    known = np.stack([2 * t[:, 0] + t[:, 1] + t[:, 3], 2 * t[:, 2] + t[:, 1] + t[:, 5],
                      2 * t[:, 6] + t[:, 3] + t[:, 7], 2 * t[:, 8] + t[:, 5] + t[:, 7]], axis=1)
    centre = t[:, 4]
    twice = known.sum(axis=1) + 2 * centre
    with np.errstate(divide="ignore", invalid="ignore"):
        freqs = known / twice[:, None]
        half = centre / twice
    f1x = freqs[:, 0] + freqs[:, 1] + half
    fx1 = freqs[:, 0] + freqs[:, 2] + half
    return known, centre, twice, freqs, half, f1x, fx1


def haplotype_r2(tables: np.ndarray) -> np.ndarray:
    """Signed r² (sign of D) from ``[m, 9]`` two-locus genotype tables; NaN where either
    variant is monomorphic among the samples called at both."""
    t = np.asarray(tables, dtype=np.float64)
    known, centre, twice, freqs, half, f1x, fx1 = _phase_shares(t)
    prod_1122, prod_1221 = freqs[:, 0] * freqs[:, 3], freqs[:, 1] * freqs[:, 2]
    products = (prod_1122 != 0) | (prod_1221 != 0)
    undefined = (twice == 0) | ((centre == 0) & ~products)
    candidates = np.full((len(t), 3), np.nan)
    candidates[(centre == 0) & products, 0] = 0.0
    cubic = (centre > 0) & products
    if cubic.any():
        f, h = freqs[cubic], half[cubic]
        roots = _cubic_real_roots(
            0.5 * (f[:, 0] + f[:, 3] - f[:, 1] - f[:, 2] - 3 * h),
            0.5 * (prod_1122[cubic] + prod_1221[cubic] + h * (f[:, 1] + f[:, 2] - f[:, 0]
                                                               - f[:, 3] + h)),
            -0.5 * h * prod_1122[cubic])
        inside = (roots >= -ROOT_EPSILON) & (roots <= h[:, None] + ROOT_EPSILON)
        roots = np.where(inside, np.clip(roots, 0.0, h[:, None]), np.nan)
        lost = ~inside.any(axis=1)
        roots[lost] = np.stack([np.zeros(lost.sum()), h[lost], np.full(lost.sum(), np.nan)], 1)
        candidates[cubic] = roots
    boundary = (centre > 0) & ~products
    if boundary.any():
        f, h = freqs[boundary], half[boundary]
        xx, xy = f[:, 0] + f[:, 3], f[:, 1] + f[:, 2]
        middle = (xx + ROOT_EPSILON < h + xy) & (xy + ROOT_EPSILON < h + xx)
        candidates[boundary] = np.stack([np.zeros(len(h)),
                                         np.where(middle, (h + xy - xx) * 0.5, h),
                                         np.where(middle, h, np.nan)], axis=1)
    # PLINK's choice: the first admissible root, replaced by any later one whose likelihood
    # beats the first's (compared with the first's, not with the running best).
    order = np.argsort(np.isnan(candidates), axis=1, kind="stable")
    candidates = np.take_along_axis(candidates, order, axis=1)
    best = candidates[:, 0].copy()
    several = np.flatnonzero(~np.isnan(candidates[:, 1]))
    if len(several):
        args = (known[several], centre[several], freqs[several], half[several])
        first_ll = _lnlike(*args, candidates[several, 0])
        for k in (1, 2):
            other = candidates[several, k]
            ll = _lnlike(*args, np.nan_to_num(other))
            better = ~np.isnan(other) & (ll > first_ll)
            best[several[better]] = other[better]
    freq11 = freqs[:, 0] + np.nan_to_num(best)
    with np.errstate(divide="ignore", invalid="ignore"):
        d = freq11 - f1x * fx1
        r2 = np.where(np.abs(d) < SMALL_EPSILON, 0.0,
                      d * np.abs(d) / (f1x * fx1 * (1 - f1x) * (1 - fx1)))
    r2[undefined] = np.nan
    return r2


def _r2_exceeding(tables: np.ndarray, threshold: float) -> np.ndarray:
    """|r²| of each table where it may exceed ``threshold``, 0 where it cannot: D is linear
    in the share of the double heterozygotes given to the 11/22 phase, which the likelihood
    picks in [0, that share], and r²'s denominator does not depend on it, so r² is at most
    the larger of its values at the two ends (no cubic needed for those pairs)."""
    t = tables.astype(np.float64)
    _, _, _, freqs, half, f1x, fx1 = _phase_shares(t)
    with np.errstate(divide="ignore", invalid="ignore"):
        d_none = freqs[:, 0] - f1x * fx1
        bound = (np.maximum(d_none ** 2, (d_none + half) ** 2)
                 / (f1x * fx1 * (1 - f1x) * (1 - fx1)))
    values = np.zeros(len(t))
    maybe = np.flatnonzero(~(bound <= threshold * (1 - BOUND_SLACK)))  # NaN: compute it
    values[maybe] = np.abs(np.nan_to_num(haplotype_r2(t[maybe])))
    return values


def pairwise_r2(codes: np.ndarray, index: int, others: Sequence[int] | np.ndarray
                ) -> np.ndarray:
    """PLINK-style haplotype r² (signed) of variant ``index`` with each of ``others``."""
    others = np.asarray(others, dtype=np.int64)
    return haplotype_r2(PackedGenotypes(codes).tables(np.full(len(others), index), others))


@dataclass(frozen=True)
class ClumpResult:
    """Index variants and, for every input variant, the index variant that took it."""

    index: np.ndarray
    """Rows of the index variants, in the order they were chosen (ascending p)."""
    clump_of: np.ndarray
    """Per input row: the row of its index variant (itself for an index), −1 if in none."""

    def table(self, variant_ids: Sequence[str], pvalues: np.ndarray) -> pd.DataFrame:
        """One row per clump: index variant, its p-value and the number of members."""
        members = np.bincount(self.clump_of[self.clump_of >= 0], minlength=len(self.clump_of))
        ids = np.asarray(variant_ids)
        return pd.DataFrame({"variant_id": ids[self.index], "p": np.asarray(pvalues)[self.index],
                             "members": members[self.index]})


def clump(codes: np.ndarray, positions: np.ndarray, pvalues: np.ndarray, *,
          p1: float = DEFAULT_P1, r2: float = DEFAULT_R2, kb: float = DEFAULT_KB
          ) -> ClumpResult:
    """Greedy LD clumping of variants (rows of ``codes``, from :func:`genotype_codes`) on one
    chromosome, with 1-based ``positions`` (ascending) and p-values (NaN: not in the report)."""
    positions = np.asarray(positions, dtype=np.int64)
    pvalues = np.asarray(pvalues, dtype=np.float64)
    m = len(positions)
    if codes.shape[0] != m or len(pvalues) != m:
        raise ValueError("codes, positions and p-values must have one row per variant")
    if m and np.any(np.diff(positions) < 0):
        raise ValueError("positions must be sorted ascending")
    radius = int(kb * 1000 * (1 + 1e-12)) - 1
    reported = ~np.isnan(pvalues)
    candidates = np.flatnonzero(reported & (pvalues <= p1))
    candidates = candidates[np.lexsort((candidates, pvalues[candidates]))]
    packed = PackedGenotypes(codes)
    lows = np.searchsorted(positions, positions - radius, side="left")
    highs = np.searchsorted(positions, positions + radius, side="right")
    taken = ~reported  # variants not in the report never join a clump
    clump_of = np.full(m, -1, dtype=np.int64)
    index_rows: list[int] = []
    cursor = 0
    while cursor < len(candidates):
        # Speculative batch: r² of the next untaken candidates with their untaken neighbours.
        # A pair's r² does not depend on the clumping state, so results are exact; candidates
        # taken by an earlier member of the batch are skipped below.
        batch: list[int] = []
        while len(batch) < CLUMP_BATCH and cursor < len(candidates):
            row = int(candidates[cursor])
            cursor += 1
            if not taken[row]:
                batch.append(row)
        members = []
        for row in batch:
            lo, hi = lows[row], highs[row]
            free = ~taken[lo:hi]
            free[row - lo] = False
            members.append(lo + np.flatnonzero(free))
        sizes = [len(x) for x in members]
        others = np.concatenate(members) if members else np.zeros(0, dtype=np.int64)
        anchors = np.repeat(np.array(batch, dtype=np.int64), sizes)
        values = np.zeros(len(others))
        check = np.flatnonzero(packed.may_exceed(anchors, others, r2))
        values[check] = _r2_exceeding(packed.tables(anchors[check], others[check]), r2)
        offsets = np.cumsum([0, *sizes])
        for k, row in enumerate(batch):
            if taken[row]:
                continue
            taken[row] = True
            clump_of[row] = row
            index_rows.append(row)
            joined = members[k][values[offsets[k]:offsets[k + 1]] > r2]
            joined = joined[~taken[joined]]
            taken[joined] = True
            clump_of[joined] = row
    return ClumpResult(np.array(index_rows, dtype=np.int64), clump_of)
