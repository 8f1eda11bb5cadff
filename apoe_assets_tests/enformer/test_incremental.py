"""Incremental ALT inference equals full forwards of the ALT sequences.

Tolerance measure, per head: ``max |incremental − full| / max |full|`` over all ALTs, bins and
tracks, ≤ 1e-5 in float32 (the two paths differ only in float rounding).

What the tests catch: a splice margin one bin short (the slice's zero padding then reaches the
spliced bins), a slice start off the 2^D grid (its pooling pairs no longer coincide with the
full run's), wrong padding at the window's first or last base (variants there), a variant's
reach under-estimated (bins it changes left unspliced: variants at every offset within a bin),
multi-variant ALTs whose slices ignore each other's substitutions, and the staged model
(``stage="tower"`` / ``"trunk"``) drifting from the full forward.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from apoe_assets.enformer.incremental import (
    IncrementalScorer,
    ReceptiveField,
    backward_span,
    forward_span,
)
from apoe_assets.enformer.model import EnformerConfig, build, random_params

CONFIG = EnformerConfig.tiny()
TOLERANCE = 1e-5
SEED = 12
BATCH = 8
TOWER = jax.jit(lambda params, x: build(CONFIG).apply(params, x, stage="tower"))


def relative_max_error(ours: np.ndarray, full: np.ndarray) -> float:
    """``max |ours − full| / max |full|`` (float64)."""
    ours64, full64 = np.asarray(ours, np.float64), np.asarray(full, np.float64)
    return float(np.abs(ours64 - full64).max() / max(np.abs(full64).max(), 1e-30))


@pytest.fixture(scope="module")
def setup() -> tuple[IncrementalScorer, np.ndarray, object]:
    params = random_params(CONFIG, seed=SEED)
    rng = np.random.default_rng(SEED)
    ref = np.eye(4, dtype=np.float32)[rng.integers(0, 4, CONFIG.sequence_length)]
    ref[:37] = 0.0  # a run of N at the start, as past a contig end
    full = jax.jit(build(CONFIG).apply)
    return IncrementalScorer(params, CONFIG), ref, (params, full)


def full_forward(setup: tuple, sequences: np.ndarray) -> dict[str, np.ndarray]:
    """Full forwards through the public model, in batches of BATCH (one compile)."""
    params, full = setup[2]
    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(sequences), BATCH):
        chunk = sequences[start:start + BATCH]
        padded = np.concatenate([chunk, np.zeros((BATCH - len(chunk), *chunk.shape[1:]),
                                                 chunk.dtype)])
        for h, v in full(params, jnp.asarray(padded)).items():
            parts.setdefault(h, []).append(np.asarray(v)[:len(chunk)])
    return {h: np.concatenate(v) for h, v in parts.items()}


def full_towers(params: object, sequences: np.ndarray) -> np.ndarray:
    padded = np.concatenate([sequences, np.zeros((BATCH - len(sequences),
                                                  *sequences.shape[1:]), sequences.dtype)])
    return np.asarray(TOWER(params, jnp.asarray(padded)))[:len(sequences)]


def substituted(ref: np.ndarray, positions: np.ndarray, bases: np.ndarray) -> np.ndarray:
    seqs = np.repeat(ref[None], len(positions), axis=0)
    for row, (pos, base) in enumerate(zip(positions, bases, strict=True)):
        seqs[row, np.atleast_1d(pos)] = np.reshape(base, (-1, 4))
    return seqs


def other_base(ref: np.ndarray, positions: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A one-hot base different from the reference's at each position."""
    current = ref[positions].argmax(-1) + ref[positions].sum(-1).astype(int) - 1  # N → -1
    new = (current + rng.integers(1, 4, len(positions))) % 4
    return np.eye(4, dtype=np.float32)[new]


def test_receptive_field_arithmetic() -> None:
    for cfg in (EnformerConfig.full(), EnformerConfig.small(), CONFIG):
        field = ReceptiveField.of(cfg)
        d = cfg.num_downsamples
        assert field.margin_bp == (2 ** (d + 1) + 3,) * 2 == (259, 259)
        assert (field.margin_bins, field.affected_bins, field.slice_bins) == (3, 6, 12)
        assert field.bins == cfg.transformer_length
        # every base's forward reach fits the spliced span, whose inputs fit the slice
        b = cfg.bin_size
        for p in [0, 1, b - 1, b, cfg.sequence_length // 2, cfg.sequence_length - 1]:
            lo, hi = forward_span(cfg, p, p)
            a = int(field.splice_starts(cfg, np.array([p]))[0])
            assert a <= max(lo, 0) and min(hi, field.bins - 1) < a + field.affected_bins
            s = int(field.slice_starts(np.array([a]))[0])
            first, last = backward_span(cfg, a, a + field.affected_bins - 1)
            assert s * b <= max(first, 0) and min(last, cfg.sequence_length - 1) < (
                s + field.slice_bins) * b


def test_stages_compose_to_the_full_forward(setup: tuple) -> None:
    scorer, ref, _ = setup
    state = scorer.reference(ref)
    full = full_forward(setup, ref[None])
    for head, value in full.items():
        assert relative_max_error(state.outputs[head], value[0]) <= 1e-6


def test_alt_outputs_equal_full_forwards(setup: tuple) -> None:
    scorer, ref, _ = setup
    rng = np.random.default_rng(SEED + 1)
    length, b = CONFIG.sequence_length, CONFIG.bin_size
    edges = [0, 1, 36, length // 2, length // 2 - 1, b - 1, b, 7 * b - 1, length - b,
             length - 2, length - 1]                      # ends, the TSS (centre), bin edges
    positions = np.array(edges + list(rng.integers(0, length, 13)))
    bases = other_base(ref, positions, rng)
    state = scorer.reference(ref)
    ours = scorer.alt_outputs(state, positions, bases, batch_size=BATCH)
    full = full_forward(setup, substituted(ref, positions, bases))
    for head, value in full.items():
        assert ours[head].shape == value.shape
        error = relative_max_error(ours[head], value)
        assert error <= TOLERANCE, (head, error)
        effect = np.abs(value - state.outputs[head][None]).max()
        assert effect / np.abs(value).max() > 1e-4  # ALTs do differ from the reference
        assert np.abs(ours[head] - value).max() / effect <= 1e-2  # and effects are resolved
    assert scorer.alts_computed >= len(positions)


def test_multi_variant_alts(setup: tuple) -> None:
    scorer, ref, _ = setup
    rng = np.random.default_rng(SEED + 2)
    length = CONFIG.sequence_length
    positions = np.array([[100, 300, 3_000], [0, 5, length - 1], [2_000, 2_001, 2_001],
                          [700, 6_000, 40]])
    bases = other_base(ref, positions.ravel(), rng).reshape(*positions.shape, 4)
    bases[2, 2] = bases[2, 1]  # a repeated position carrying the same base
    ours = scorer.alt_outputs(scorer.reference(ref), positions, bases, batch_size=BATCH)
    full = full_forward(setup, substituted(ref, positions, bases))
    for head, value in full.items():
        assert relative_max_error(ours[head], value) <= TOLERANCE
    bases[2, 2] = np.roll(bases[2, 1], 1)
    with pytest.raises(ValueError, match="two different bases"):
        scorer.alt_outputs(scorer.reference(ref), positions, bases)


def test_alt_equal_to_ref_gives_the_reference_exactly(setup: tuple) -> None:
    scorer, ref, _ = setup
    state = scorer.reference(ref)
    positions = np.array([0, 2_500, CONFIG.sequence_length - 1])
    same = ref[positions]
    ours = scorer.alt_outputs(state, positions, same, batch_size=BATCH)
    computed = scorer.alt_outputs(state, positions, same, batch_size=BATCH,
                                     skip_unchanged=False)
    for head, value in state.outputs.items():
        assert np.array_equal(ours[head], np.broadcast_to(value, ours[head].shape))
        assert relative_max_error(computed[head], np.broadcast_to(value, ours[head].shape)) \
            <= TOLERANCE


def test_spliced_towers_equal_full_towers(setup: tuple) -> None:
    """The transformer's input itself: the spliced tower of each ALT equals the full tower of
    the ALT sequence (≤ 1e-6, float rounding of the convolutions). Broken on purpose, each is
    caught: a margin one bin short each side (the slice's zero padding then reaches the
    spliced bins: ~1e-4 here, though only ~5e-6 after the transformer, under the 1e-5 output
    tolerance, which is why the splice is checked here), and a splice one bin narrower than a
    base's reach (bins the variant changed keep the reference's values)."""
    scorer, ref, (params, _) = setup
    b, field = CONFIG.bin_size, scorer.field
    positions = np.array([0, 1_000, 20 * b, 20 * b + 127, 3_100, 4_500,  # interior: the
                          CONFIG.sequence_length - 1])                # slice has real edges
    bases = other_base(ref, positions, np.random.default_rng(SEED + 3))
    full = full_towers(params, substituted(ref, positions, bases))
    state = scorer.reference(ref)
    assert relative_max_error(scorer.alt_towers(state, positions, bases, BATCH), full) <= 1e-6
    broken = {
        "margin": dataclasses.replace(field, margin_bins=field.margin_bins - 1,
                                      slice_bins=field.slice_bins - 2),
        "reach": dataclasses.replace(field, affected_bins=field.affected_bins - 1,
                                     slice_bins=field.slice_bins - 1),
    }
    for name, wrong in broken.items():
        tested = IncrementalScorer(params, CONFIG, field=wrong)
        error = relative_max_error(tested.alt_towers(state, positions, bases, BATCH), full)
        assert error > 1e-5, (name, error)


def test_slice_alignment_and_margin_in_the_tower(setup: tuple) -> None:
    """Directly on the tower: an aligned slice reproduces the full tower's bins inside its
    margins; a slice started half a bin off the 2^D grid, or with one bin less margin, does
    not."""
    scorer, ref, (params, _) = setup
    b, m, w = CONFIG.bin_size, scorer.field.margin_bins, scorer.field.slice_bins
    full = full_towers(params, ref[None])[0]
    start = 20  # bins

    def tower(first_bp: int, bins: int) -> np.ndarray:
        x = ref[None, first_bp:first_bp + bins * b]
        return np.asarray(TOWER(params, jnp.asarray(x)))[0]

    inner = slice(start + m, start + w - m)
    aligned = tower(start * b, w)[m:w - m]
    assert relative_max_error(aligned, full[inner]) <= 1e-6
    shifted = tower(start * b + b // 2, w)  # bin i of it straddles full bins i, i + 1
    assert relative_max_error(shifted[m:w - m], full[inner]) > 1e-2
    assert relative_max_error(shifted[m:w - m], full[start + m + 1:start + w - m + 1]) > 1e-2
    short = tower((start + 1) * b, w - 2)  # margin m - 1 on each side of the same bins
    assert relative_max_error(short[m - 1:w - 2 - (m - 1)], full[inner]) > 1e-5
