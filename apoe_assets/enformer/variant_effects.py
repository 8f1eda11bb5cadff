"""Variant effects on Enformer's predictions: REF against ALT for every variant of a window.

For one gene the reference sequence is centred on the TSS (``[tss0 − L/2, tss0 + L/2)``, the
TSS base at index ``L // 2``, as :func:`~apoe_assets.genomics.consensus.centre_on_tss` puts it
in personal sequences) and predicted once; each variant's ALT sequence is the same window with
its allele written in (an indel re-centred on the TSS the way ``personal_sequences`` does it:
bases shift, and the TSS base keeps its place at ``L // 2``). Per variant, ``D = ALT − REF``
over every output bin and track of the head gives:

- ``expr_effect``: Σ of ``D`` over the TSS bins and the expression tracks (signed);
- ``full_matrix_l1``: Σ |D| over every bin and track (the full prediction matrix);
- ``tracks_l1``: Σ |D| over every bin of the selected tracks;
- SAD per selected track: Σ over bins of ``D`` (Σ bins ALT − Σ bins REF);

and ranks by |expr_effect|, ``full_matrix_l1`` and ``tracks_l1`` (1 = largest; ties share the
smaller rank). Nothing here reads any association statistic: the ranking is the model's alone.
:func:`variant_centred_effects` scores the same variants with windows centred on each variant
instead (DeepMind's variant scoring), reading the TSS bins wherever the TSS then lies.

ALT predictions come through an :class:`AltModel` (``reference(window)`` and
``alts(window, alleles)``), so a faster ALT path (incremental tower recomputation) plugs in
without touching the scoring; :class:`FullForwards` is the plain one: every ALT a full forward.
"""

from __future__ import annotations

import difflib
import json
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np
import pandas as pd

from apoe_assets.genomics.consensus import centre_on_tss, is_applicable
from apoe_assets.genomics.coordinates import Interval
from apoe_assets.genomics.onehot import one_hot

if TYPE_CHECKING:  # the study model imports this module's defaults without starting JAX
    from apoe_assets.enformer.incremental import IncrementalScorer, RefState
    from apoe_assets.enformer.inference import Predictor

SUBSTITUTIONS = ("snv", "mnv")
"""Variant kinds scored by default (same length: nothing shifts)."""
INDEL_KINDS = ("ins", "del", "complex")
"""Variant kinds scored only when indels are asked for."""
BLOCK_BATCHES = 4
"""ALT sequences handed to the model per block, in batches: bounds the host memory of the
all-bins × all-tracks outputs (a block of 4 batches of 4 is ≈ 300 MB at full size)."""
SNP_EFFECTS_VERSION = "1"
"""Code version of the ``snp_effects`` scores: bump it when they change for the same inputs."""
SKIP_REASONS = ("indel", "ref_mismatch", "symbolic", "not_carried", "tss_outside_output")
"""Keys of :attr:`VariantEffects.counts` ``skipped_*`` (``tss_outside_output``: only when windows
are centred on the variant, see :func:`variant_centred_effects`)."""
COLUMNS = ["variant_id", "pos", "ref", "alt", "kind", "distance_to_tss", "expr_effect",
           "full_matrix_l1", "tracks_l1", "rank_expr_effect", "rank_full_matrix", "rank_tracks"]
"""The effect table's columns, in order."""
RefMismatchPolicy = Literal["fail", "drop"]
ProgressCallback = Callable[[int, int, float], None]
"""``progress(done, total, variants_per_second)``."""


class RefMismatchError(ValueError):
    """A variant's REF disagrees with the reference genome (and the study says fail)."""


# Track selection --------------------------------------------------------------------------------

def close_matches(pattern: str, descriptions: Sequence[str], n: int = 5) -> list[str]:
    """The descriptions most like ``pattern`` (compared with their prefix of its length and
    with the whole description), best first."""
    def score(description: str) -> float:
        return max(difflib.SequenceMatcher(None, pattern, description[:len(pattern)]).ratio(),
                   difflib.SequenceMatcher(None, pattern, description).ratio())

    unique = list(dict.fromkeys(descriptions))
    ranked = sorted(unique, key=lambda d: -score(d))
    return [d for d in ranked[:n] if score(d) >= 0.5]


def match_tracks(targets: pd.DataFrame, patterns: Sequence[str | int]) -> np.ndarray:
    """Head indices (ascending, unique) of the tracks whose description starts with any pattern
    (``re:`` for a regular expression, an integer for an index, as
    :func:`~apoe_assets.enformer.targets.select_tracks`). A pattern that matches nothing is a
    ``ValueError`` naming it and listing the closest descriptions."""
    from apoe_assets.enformer.targets import select_tracks

    descriptions = targets["description"].astype(str).tolist()
    unmatched = []
    for pattern in patterns:
        try:
            select_tracks(targets, [pattern])
        except ValueError:
            unmatched.append(pattern)
    if unmatched:
        lines = [f"{p!r} (closest: {'; '.join(close_matches(str(p), descriptions)) or 'none'})"
                 for p in unmatched]
        raise ValueError(f"no track description matches {', '.join(lines)}; the head has "
                         f"{len(descriptions)} tracks")
    return select_tracks(targets, list(patterns))


# The window and its alleles ----------------------------------------------------------------------

@dataclass(frozen=True)
class AltAllele:
    """One variant to score: 1-based ``pos`` (VCF), ``ref`` and ``alt`` as in the VCF."""

    variant_id: str
    pos: int
    ref: str
    alt: str
    kind: str

    @property
    def pos0(self) -> int:
        return self.pos - 1


@dataclass(frozen=True)
class GeneWindow:
    """The reference around one gene's TSS: ``bases`` cover ``padded`` (the model window plus a
    flank each side, so an indel re-centred on the TSS is filled with real sequence)."""

    chrom: str
    tss0: int
    length: int
    padded: Interval
    bases: bytes

    def __post_init__(self) -> None:
        if len(self.bases) != len(self.padded):
            raise ValueError(f"{len(self.bases)} bases for a {len(self.padded)}-bp window")
        if not (self.padded.start <= self.window.start and self.window.end <= self.padded.end):
            raise ValueError(f"padded {self.padded} does not hold the model window {self.window}")

    @classmethod
    def around(cls, chrom: str, tss0: int, length: int, flank: int,
               fetch: Callable[[Interval], bytes]) -> GeneWindow:
        """The window of ``length`` bp centred on 0-based ``tss0``, ``flank`` bp either side,
        read with ``fetch`` (e.g. :meth:`ReferenceGenome.fetch`; N past a contig end)."""
        padded = Interval(chrom, tss0 - length // 2 - flank,
                          tss0 + length - length // 2 + flank)
        return cls(chrom, tss0, length, padded, fetch(padded))

    @property
    def window(self) -> Interval:
        """The model window ``[tss0 − L/2, tss0 + L − L/2)``."""
        start = self.tss0 - self.length // 2
        return Interval(self.chrom, start, start + self.length)

    def reference_sequence(self) -> bytes:
        """The model input of the reference (the TSS base at index ``L // 2``)."""
        offset = self.window.start - self.padded.start
        return self.bases[offset:offset + self.length]

    def reference_onehot(self) -> np.ndarray:
        """float32 ``[L, 4]`` (A, C, G, T)."""
        return one_hot(self.reference_sequence())[0]

    def ref_matches(self, allele: AltAllele) -> bool:
        """Whether the reference holds ``allele.ref`` at ``allele.pos``."""
        i = allele.pos0 - self.padded.start
        ref = allele.ref.upper().encode()
        return i >= 0 and self.bases[i:i + len(ref)] == ref

    def alt_sequence(self, allele: AltAllele) -> bytes:
        """The model input with ``allele.alt`` in place of its REF, re-centred on the TSS as
        personal sequences are: the TSS index moves with indels before it; where the allele
        covers the TSS, the ALT base at the same offset (at most its last base) is the centre."""
        i = allele.pos0 - self.padded.start
        ref, alt = allele.ref.encode(), allele.alt.upper().encode()
        edited = self.bases[:i] + alt + self.bases[i + len(ref):]
        tss = self.tss0 - self.padded.start
        if allele.pos0 + len(ref) <= self.tss0:
            tss += len(alt) - len(ref)
        elif allele.pos0 <= self.tss0:
            tss = i + min(self.tss0 - allele.pos0, len(alt) - 1)
        return centre_on_tss(edited, tss, self.length)

    def alt_onehot(self, allele: AltAllele, reference: np.ndarray | None = None) -> np.ndarray:
        """float32 ``[L, 4]`` of :meth:`alt_sequence`; a substitution is written into a copy of
        ``reference`` (the reference one-hot) when given."""
        if reference is None or len(allele.ref) != len(allele.alt):
            return one_hot(self.alt_sequence(allele))[0]
        out = reference.copy()
        i = allele.pos0 - self.window.start
        lo, hi = max(i, 0), min(i + len(allele.alt), self.length)
        if hi > lo:
            out[lo:hi] = one_hot(allele.alt.upper()[lo - i:hi - i])[0]
        return out


# Models -----------------------------------------------------------------------------------------

class AltModel(Protocol):
    """What scoring needs from a model: the reference's outputs ``[bins, tracks]`` and, for
    ``alleles`` in order, blocks of ALT outputs ``[k, bins, tracks]`` (all bins and tracks of
    the head; the blocks together hold one row per allele)."""

    def reference(self, window: GeneWindow) -> np.ndarray: ...

    def alts(self, window: GeneWindow, alleles: Sequence[AltAllele]) -> Iterator[np.ndarray]: ...


@dataclass
class FullForwards:
    """Every ALT sequence a full forward through ``predictor``'s batches, every bin and track.
    ``reverse_complement`` averages each output with that of the reverse-complemented input,
    bins flipped back (nothing extra when the predictor averages already)."""

    predictor: Predictor
    reverse_complement: bool = False
    block: int | None = None

    def predict(self, inputs: list[np.ndarray]) -> np.ndarray:
        """Every bin and track of ``inputs`` (one-hot ``[L, 4]`` each): ``[n, bins, tracks]``."""
        config = self.predictor.config
        tracks = np.arange(config.heads[self.predictor.head])
        bins = np.arange(config.target_length)
        extra = self.reverse_complement and not self.predictor.reverse_complement
        if extra:
            inputs = [x for forward in inputs for x in (forward, forward[::-1, ::-1])]
        y = self.predictor.predict(inputs, tracks=tracks, bins=bins, total=len(inputs))
        if extra:
            y = 0.5 * (y[0::2] + y[1::2, ::-1])
        return y

    def reference(self, window: GeneWindow) -> np.ndarray:
        return self.predict([window.reference_onehot()])[0]

    def alts(self, window: GeneWindow, alleles: Sequence[AltAllele]) -> Iterator[np.ndarray]:
        reference = window.reference_onehot()
        size = self.block or BLOCK_BATCHES * self.predictor.batch_size
        for start in range(0, len(alleles), size):
            yield self.predict([window.alt_onehot(a, reference)
                                 for a in alleles[start:start + size]])


@dataclass
class Incremental:
    """SNVs by tower splicing (:class:`~apoe_assets.enformer.incremental.IncrementalScorer`:
    the reference's stem and tower once, per ALT a short tower slice, then the transformer and
    heads), equal to full forwards up to float32 rounding; any other allele (an MNV, an indel
    re-centred on the TSS) by ``fallback``'s full forwards. No reverse-complement averaging:
    use :class:`FullForwards` for that."""

    scorer: IncrementalScorer
    head: str
    fallback: FullForwards
    batch_size: int = 8
    block: int = 16
    """ALTs per yielded block (bounds host memory as :data:`BLOCK_BATCHES` does)."""
    _state: tuple[GeneWindow, RefState] | None = None

    @classmethod
    def of(cls, predictor: Predictor) -> Incremental:
        """The incremental path with ``predictor``'s weights, head, devices and batch size
        (float32: a bfloat16 predictor should score by :class:`FullForwards`)."""
        from apoe_assets.enformer.incremental import IncrementalScorer

        scorer = IncrementalScorer(predictor.params, predictor.config, heads=[predictor.head],
                                   devices=predictor.devices)
        return cls(scorer, predictor.head, FullForwards(predictor), predictor.batch_size)

    def _reference(self, window: GeneWindow) -> RefState:
        if self._state is None or self._state[0] is not window:
            self._state = (window, self.scorer.reference(window.reference_onehot()))
        return self._state[1]

    def reference(self, window: GeneWindow) -> np.ndarray:
        return self._reference(window).outputs[self.head]

    def alts(self, window: GeneWindow, alleles: Sequence[AltAllele]) -> Iterator[np.ndarray]:
        state = self._reference(window)
        start = window.window.start
        for first in range(0, len(alleles), self.block):
            chunk = alleles[first:first + self.block]
            snv = [i for i, a in enumerate(chunk) if len(a.ref) == len(a.alt) == 1
                   and 0 <= a.pos0 - start < window.length]
            shape = (len(chunk), *state.outputs[self.head].shape)
            out = np.empty(shape, np.float32)
            if snv:
                positions = np.array([chunk[i].pos0 - start for i in snv])
                bases = one_hot("".join(chunk[i].alt.upper() for i in snv))[0]
                out[snv] = self.scorer.alt_outputs(state, positions, bases,
                                                   self.batch_size)[self.head]
            rest = [i for i in range(len(chunk)) if i not in set(snv)]
            if rest:
                out[rest] = np.concatenate(list(self.fallback.alts(
                    window, [chunk[i] for i in rest])))
            yield out


# Scoring ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class EffectSettings:
    """What to score: head indices of the expression tracks (``expr_effect``) and of the
    selected tracks (``tracks_l1``, SAD), the TSS bins, indels or not, the REF-mismatch rule."""

    expression_tracks: np.ndarray
    selected_tracks: np.ndarray
    tss_bins: np.ndarray
    indels: bool = False
    ref_mismatch: RefMismatchPolicy = "fail"


@dataclass(frozen=True)
class VariantEffects:
    """One gene's variant effects: ``table`` (:data:`COLUMNS`, one row per scored variant, VCF
    order), ``sad`` float32 ``[variants, selected tracks]`` in table order, ``tracks``
    (``index``, ``description``, ``role``: the expression and selected tracks), ``counts``
    and ``info`` (window, TSS, settings)."""

    table: pd.DataFrame
    sad: np.ndarray
    tracks: pd.DataFrame
    counts: dict[str, int]
    info: dict = field(default_factory=dict)

    def write(self, folder: Path) -> None:
        """A folder: ``effects.parquet``, ``sad.npy``, ``tracks.parquet``, ``summary.json``."""
        folder.mkdir(parents=True)
        self.table.to_parquet(folder / "effects.parquet", index=False)
        with (folder / "sad.npy").open("wb") as handle:
            np.save(handle, self.sad, allow_pickle=False)
        self.tracks.to_parquet(folder / "tracks.parquet", index=False)
        (folder / "summary.json").write_text(json.dumps({"counts": self.counts,
                                                         "info": self.info}))

    @classmethod
    def read(cls, folder: Path) -> VariantEffects:
        """Read a folder written by :meth:`write`."""
        summary = json.loads((folder / "summary.json").read_text())
        return cls(pd.read_parquet(folder / "effects.parquet"),
                   np.load(folder / "sad.npy", allow_pickle=False),
                   pd.read_parquet(folder / "tracks.parquet"), summary["counts"],
                   summary["info"])


def candidate_alleles(window: GeneWindow, variants: pd.DataFrame, settings: EffectSettings
                      ) -> tuple[list[AltAllele], dict[str, int]]:
    """The alleles to score, VCF order: records whose first REF base lies in the model window
    and whose ALT someone in the cohort carries (``af`` > 0 where the table has it), plain
    sequence, substitutions (and indels if asked), REF as in the reference. Returns them with
    counts: ``variants_in_window`` and ``skipped_<reason>`` for :data:`SKIP_REASONS`."""
    model = window.window
    start0 = variants["pos"].to_numpy(np.int64) - 1
    inside = variants[(start0 >= model.start) & (start0 < model.end)]
    counts = {"variants_in_window": len(inside), **{f"skipped_{r}": 0 for r in SKIP_REASONS}}
    alleles, mismatches = [], []
    af = inside["af"].to_numpy(float) if "af" in inside.columns else np.ones(len(inside))
    for row, carried in zip(inside.itertuples(index=False), af, strict=True):
        allele = AltAllele(str(row.variant_id), int(row.pos), str(row.ref), str(row.alt),
                           str(row.kind))
        if not carried > 0:
            counts["skipped_not_carried"] += 1
        elif not is_applicable(allele.alt, allele.kind):
            counts["skipped_symbolic"] += 1
        elif allele.kind not in SUBSTITUTIONS and not settings.indels:
            counts["skipped_indel"] += 1
        elif not window.ref_matches(allele):
            counts["skipped_ref_mismatch"] += 1
            mismatches.append(allele.variant_id)
        else:
            alleles.append(allele)
    if mismatches and settings.ref_mismatch == "fail":
        raise RefMismatchError(f"{len(mismatches)} variant(s) in {model.to_region()} have a REF "
                               f"that is not the reference's (first: {', '.join(mismatches[:3])}"
                               "); set ref_mismatch: drop in the study file to skip them")
    return alleles, counts


def rank_descending(values: np.ndarray) -> np.ndarray:
    """Ranks, 1 = largest; ties share the smallest rank of their group."""
    return pd.Series(values).rank(method="min", ascending=False).to_numpy(np.int64)


def _delta_scores(delta: np.ndarray, tss: np.ndarray, settings: EffectSettings
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``expr_effect``, ``full_matrix_l1``, ``tracks_l1`` ``[k]`` and SAD ``[k, selected]`` of
    ALT − REF outputs ``delta`` ``[k, bins, tracks]``; ``tss``: the TSS bins of each row
    ``[k, count]``."""
    expr, chosen = np.asarray(settings.expression_tracks), np.asarray(settings.selected_tracks)
    rows = np.arange(len(delta))[:, None]
    expr_effect = delta[rows, tss][:, :, expr].sum(axis=(1, 2))
    selected = delta[:, :, chosen]
    return (expr_effect, np.abs(delta).sum(axis=(1, 2)), np.abs(selected).sum(axis=(1, 2)),
            selected.sum(axis=1).astype(np.float32))


def _effect_table(alleles: Sequence[AltAllele], tss0: int, expr_effect: np.ndarray,
                  full_l1: np.ndarray, tracks_l1: np.ndarray) -> pd.DataFrame:
    """The effect table (:data:`COLUMNS`) of scored ``alleles``, ranks included."""
    table = pd.DataFrame({
        "variant_id": pd.Series([a.variant_id for a in alleles], dtype=object),
        "pos": np.array([a.pos for a in alleles], np.int64),
        "ref": pd.Series([a.ref for a in alleles], dtype=object),
        "alt": pd.Series([a.alt for a in alleles], dtype=object),
        "kind": pd.Series([a.kind for a in alleles], dtype=object),
        "distance_to_tss": np.array([a.pos0 - tss0 for a in alleles], np.int64),
        "expr_effect": expr_effect,
        "full_matrix_l1": full_l1,
        "tracks_l1": tracks_l1,
        "rank_expr_effect": rank_descending(np.abs(expr_effect)),
        "rank_full_matrix": rank_descending(full_l1),
        "rank_tracks": rank_descending(tracks_l1),
    })
    return table[COLUMNS]


def score_variants(window: GeneWindow, alleles: Sequence[AltAllele], model: AltModel,
                   settings: EffectSettings, progress: ProgressCallback | None = None
                   ) -> tuple[pd.DataFrame, np.ndarray]:
    """The effect table (:data:`COLUMNS`) and SAD ``[variants, selected tracks]`` of
    ``alleles``: the reference predicted once, the ALTs in blocks through ``model``."""
    n = len(alleles)
    expr_effect, full_l1, tracks_l1 = np.zeros(n), np.zeros(n), np.zeros(n)
    sad = np.zeros((n, len(settings.selected_tracks)), np.float32)
    if n:
        ref = np.asarray(model.reference(window), np.float64)
        started, done = time.perf_counter(), 0
        for block in model.alts(window, alleles):
            rows = slice(done, done + len(block))
            tss = np.broadcast_to(np.asarray(settings.tss_bins), (len(block),
                                                                   len(settings.tss_bins)))
            (expr_effect[rows], full_l1[rows], tracks_l1[rows],
             sad[rows]) = _delta_scores(np.asarray(block, np.float64) - ref, tss, settings)
            done += len(block)
            if progress is not None:
                progress(done, n, done / max(time.perf_counter() - started, 1e-9))
        if done != n:
            raise ValueError(f"the model returned {done} ALT predictions for {n} alleles")
    return _effect_table(alleles, window.tss0, expr_effect, full_l1, tracks_l1), sad


def _assemble(window: GeneWindow, settings: EffectSettings, table: pd.DataFrame,
              sad: np.ndarray, counts: dict[str, int], tracks: pd.DataFrame | None,
              seconds: float, centred_on: str) -> VariantEffects:
    """The :class:`VariantEffects` of a scored table: counts, track roles and info."""
    counts["scored"] = len(table)
    described = (dict(zip(tracks["index"].astype(int), tracks["description"].astype(str),
                          strict=True)) if tracks is not None else {})
    track_table = pd.DataFrame(
        [{"index": int(i), "description": described.get(int(i), f"track {int(i)}"),
          "role": role}
         for role, indices in (("expression", settings.expression_tracks),
                               ("selected", settings.selected_tracks)) for i in indices])
    info = {"chrom": window.chrom, "tss": window.tss0 + 1, "window": window.window.to_region(),
            "tss_bins": np.asarray(settings.tss_bins).tolist(), "indels": settings.indels,
            "centred_on": centred_on, "seconds": round(seconds, 3),
            "variants_per_second": round(len(table) / seconds, 3) if len(table) else None}
    return VariantEffects(table, sad, track_table, counts, info)


def variant_effects(window: GeneWindow, variants: pd.DataFrame, model: AltModel,
                    settings: EffectSettings, tracks: pd.DataFrame | None = None,
                    progress: ProgressCallback | None = None) -> VariantEffects:
    """Score every eligible variant of ``variants`` (a genotype variant table: ``variant_id``,
    ``pos``, ``ref``, ``alt``, ``kind``, optionally ``af``) in ``window``. ``tracks`` maps head
    indices to descriptions (``index``, ``description``); by default ``track {i}``."""
    alleles, counts = candidate_alleles(window, variants, settings)
    started = time.perf_counter()
    table, sad = score_variants(window, alleles, model, settings, progress)
    return _assemble(window, settings, table, sad, counts, tracks,
                     time.perf_counter() - started, "tss")


# Windows centred on each variant -----------------------------------------------------------------

def shifted_tss_bins(tss_bins: np.ndarray, tss0: int, centre0: int, length: int,
                     target_length: int, bin_size: int) -> np.ndarray | None:
    """The output bins holding the gene's TSS (0-based ``tss0``) when the window of ``length``
    bp is centred on ``centre0`` instead: ``tss_bins`` (the bins of a TSS-centred window)
    moved by whole bins; None when any falls outside the ``target_length`` output bins."""
    offset = (length - target_length * bin_size) // 2  # bases cropped before the first bin
    index = tss0 - (centre0 - length // 2)
    shift = (index - offset) // bin_size - target_length // 2
    bins = np.asarray(tss_bins) + shift
    return bins if bins.min() >= 0 and bins.max() < target_length else None


def variant_centred_effects(window: GeneWindow, variants: pd.DataFrame, model: FullForwards,
                            settings: EffectSettings, fetch: Callable[[Interval], bytes],
                            flank: int, tracks: pd.DataFrame | None = None,
                            progress: ProgressCallback | None = None) -> VariantEffects:
    """:func:`variant_effects` with each variant's REF and ALT windows centred on the variant
    (its first REF base at ``L // 2``, as DeepMind's variant-scoring notebook centres them)
    instead of on the TSS: the same candidate variants (those in the gene's TSS-centred
    window), each window read with ``fetch`` (``flank`` bp either side for indels), two full
    forwards per variant. ``expr_effect`` sums the bins that hold the gene's TSS in that
    window (at its reference position); a variant whose TSS falls outside the model's output
    is skipped and counted as ``tss_outside_output``."""
    alleles, counts = candidate_alleles(window, variants, settings)
    config = model.predictor.config
    length = config.sequence_length
    placed = [(a, shifted_tss_bins(settings.tss_bins, window.tss0, a.pos0, length,
                                   config.target_length, config.bin_size)) for a in alleles]
    kept = [(a, bins) for a, bins in placed if bins is not None]
    counts["skipped_tss_outside_output"] = len(alleles) - len(kept)
    n = len(kept)
    expr_effect, full_l1, tracks_l1 = np.zeros(n), np.zeros(n), np.zeros(n)
    sad = np.zeros((n, len(settings.selected_tracks)), np.float32)
    started = time.perf_counter()
    size = model.block or BLOCK_BATCHES * model.predictor.batch_size // 2
    for first in range(0, n, max(size, 1)):
        block = kept[first:first + size]
        inputs = []
        for allele, _ in block:
            own = GeneWindow.around(window.chrom, allele.pos0, length, flank, fetch)
            reference = own.reference_onehot()
            inputs += [reference, own.alt_onehot(allele, reference)]
        outputs = np.asarray(model.predict(inputs), np.float64)
        rows = slice(first, first + len(block))
        (expr_effect[rows], full_l1[rows], tracks_l1[rows],
         sad[rows]) = _delta_scores(outputs[1::2] - outputs[0::2],
                                    np.stack([bins for _, bins in block]), settings)
        if progress is not None:
            done = first + len(block)
            progress(done, n, done / max(time.perf_counter() - started, 1e-9))
    table = _effect_table([a for a, _ in kept], window.tss0, expr_effect, full_l1, tracks_l1)
    return _assemble(window, settings, table, sad, counts, tracks,
                     time.perf_counter() - started, "variant")


def stack_blocks(blocks: Iterable[np.ndarray]) -> np.ndarray:
    """All ALT blocks of an :class:`AltModel` as one array (for tests and small windows)."""
    return np.concatenate(list(blocks), axis=0)
