"""One-hot encoding: A, C, G, T channel order (Enformer's), N zeros, IUPAC codes fractional."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from apoe_assets.genomics.consensus import iupac_union
from apoe_assets.genomics.onehot import IUPAC, ORDER, TABLE, as_codes, one_hot

UNIT = {"A": [1, 0, 0, 0], "C": [0, 1, 0, 0], "G": [0, 0, 1, 0], "T": [0, 0, 0, 1]}


def test_rows_are_a_c_g_t_in_that_order() -> None:
    assert ORDER == "ACGT"
    encoded = one_hot([b"ACGT"])[0]
    np.testing.assert_array_equal(encoded, np.eye(4, dtype=np.float32))
    for base, row in UNIT.items():
        np.testing.assert_array_equal(one_hot(base)[0, 0], row)


def test_g_never_encodes_as_t() -> None:
    """The earlier study's bug: G and T swapped."""
    g, t = one_hot("G")[0, 0], one_hot("T")[0, 0]
    assert g.tolist() == [0, 0, 1, 0] and t.tolist() == [0, 0, 0, 1]
    assert not np.array_equal(g, t)


def test_n_is_zeros_and_lower_case_equals_upper_case() -> None:
    np.testing.assert_array_equal(one_hot("NnX-*.")[0], np.zeros((6, 4), np.float32))
    letters = "ACGTRYSWKMBDHVN"
    np.testing.assert_array_equal(one_hot(letters.lower()), one_hot(letters))


@pytest.mark.parametrize(("code", "bases"), sorted(IUPAC.items()))
def test_iupac_codes_are_the_mean_of_their_bases(code: str, bases: str) -> None:
    expected = np.mean([UNIT[b] for b in bases], axis=0)
    np.testing.assert_allclose(one_hot(code)[0, 0], expected, rtol=0, atol=1e-7)
    assert one_hot(code)[0, 0].sum() == pytest.approx(1.0)


def test_two_and_three_base_codes() -> None:
    assert one_hot("R")[0, 0].tolist() == [0.5, 0, 0.5, 0]
    assert one_hot("Y")[0, 0].tolist() == [0, 0.5, 0, 0.5]
    np.testing.assert_allclose(one_hot("B")[0, 0], [0, 1 / 3, 1 / 3, 1 / 3])
    np.testing.assert_allclose(one_hot("V")[0, 0], [1 / 3, 1 / 3, 1 / 3, 0])


def test_every_byte_has_a_row_summing_to_zero_or_one() -> None:
    sums = TABLE.sum(axis=1)
    assert TABLE.shape == (256, 4) and TABLE.dtype == np.float32
    assert set(np.round(sums, 6).tolist()) == {0.0, 1.0}
    assert int((sums > 0).sum()) == 2 * len(IUPAC)


@settings(max_examples=100, deadline=None)
@given(st.sets(st.sampled_from("ACGT"), min_size=1, max_size=4))
def test_consensus_iupac_codes_encode_as_the_mean_of_the_alleles(bases: set[str]) -> None:
    code = iupac_union([b.encode() for b in sorted(bases)], 1)
    expected = np.zeros(4) if len(bases) == 4 else np.mean([UNIT[b] for b in bases], axis=0)
    np.testing.assert_allclose(one_hot(code)[0, 0], expected, atol=1e-7)


def test_shapes_inputs_and_out() -> None:
    batch = one_hot([b"ACGTN", "acgtn", bytearray(b"RRRRR"), memoryview(b"TTTTT")])
    assert batch.shape == (4, 5, 4) and batch.dtype == np.float32
    np.testing.assert_array_equal(batch[0], batch[1])
    out = np.full((4, 5, 4), 7, np.float32)
    assert one_hot([b"ACGTN", "acgtn", b"RRRRR", b"TTTTT"], out=out) is out
    np.testing.assert_array_equal(out, batch)
    codes = as_codes([b"ACG", b"TTT"])
    np.testing.assert_array_equal(one_hot(codes), one_hot([b"ACG", b"TTT"]))
    assert one_hot([]).shape == (0, 0, 4)
    with pytest.raises(ValueError, match="length"):
        one_hot([b"ACG", b"AC"])
    with pytest.raises(ValueError, match="out"):
        one_hot([b"ACG"], out=np.zeros((1, 3, 4), np.float64))


def test_random_sequences_round_trip_through_argmax() -> None:
    rng = np.random.default_rng(0)
    seqs = [bytes(rng.choice(np.frombuffer(b"ACGT", np.uint8), 1_000)) for _ in range(3)]
    encoded = one_hot(seqs)
    decoded = np.frombuffer(ORDER.encode(), np.uint8)[encoded.argmax(axis=-1)]
    assert [bytes(row) for row in decoded] == seqs
