"""Coordinates (1-based files ↔ 0-based code) and chromosome naming."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from apoe_assets.genomics.contigs import canonical_chrom, native_names
from apoe_assets.genomics.coordinates import (
    Interval,
    centred_window,
    from_one_based,
    parse_region,
    to_one_based,
)

CONTIG_LENGTH = 58_617_616  # chr19 in hg38


# --- from_one_based / to_one_based -------------------------------------------------------------


def test_first_base_of_a_contig_is_zero_based_zero() -> None:
    assert from_one_based(1) == (0, 1)
    assert to_one_based(0, 1) == (1, 1)


def test_last_base_of_a_contig() -> None:
    assert from_one_based(CONTIG_LENGTH) == (CONTIG_LENGTH - 1, CONTIG_LENGTH)
    assert to_one_based(CONTIG_LENGTH - 1, CONTIG_LENGTH) == (CONTIG_LENGTH, CONTIG_LENGTH)


def test_whole_contig_range() -> None:
    assert from_one_based(1, CONTIG_LENGTH) == (0, CONTIG_LENGTH)


def test_empty_one_based_range_is_allowed_and_empty() -> None:
    start, end = from_one_based(11, 10)
    assert end - start == 0


@pytest.mark.parametrize(("first", "last"), [(0, None), (-3, None), (0, 5), (10, 8)])
def test_invalid_one_based_positions_raise(first: int, last: int | None) -> None:
    with pytest.raises(ValueError):
        from_one_based(first, last)


@given(first=st.integers(1, 10**10), length=st.integers(0, 10**7))
def test_one_based_round_trip(first: int, length: int) -> None:
    last = first + length - 1
    start, end = from_one_based(first, last)
    assert (start, end - start) == (first - 1, length)
    assert to_one_based(start, end) == (first, last)


# --- Interval ----------------------------------------------------------------------------------


def test_interval_contains_is_half_open() -> None:
    interval = Interval("chr1", 10, 20)
    assert len(interval) == 10
    assert interval.contains(10)
    assert interval.contains(19)
    assert not interval.contains(20)
    assert not interval.contains(9)


def test_interval_that_ends_before_it_starts_raises() -> None:
    with pytest.raises(ValueError, match="invalid interval"):
        Interval("chr1", 10, 9)


def test_to_region_is_one_based_inclusive() -> None:
    assert Interval("chr19", 0, 1).to_region() == "chr19:1-1"
    assert Interval("chr19", 44_399_999, 45_410_000).to_region() == "chr19:44400000-45410000"


@given(chrom=st.sampled_from(["chr1", "19", "chrX", "MT", "chr1_KI270706v1_random"]),
       start=st.integers(0, 10**10), length=st.integers(0, 10**7))
def test_region_string_round_trip(chrom: str, start: int, length: int) -> None:
    interval = Interval(chrom, start, start + length)
    assert parse_region(interval.to_region()) == interval


# --- parse_region ------------------------------------------------------------------------------


def test_parse_region_with_thousands_separators() -> None:
    interval = parse_region("chr19:44,400,000-45,410,000")
    assert interval == Interval("chr19", 44_399_999, 45_410_000)
    assert len(interval) == 1_010_001  # both ends inclusive in the string


def test_parse_region_single_base_and_whitespace() -> None:
    assert parse_region(" chr1:1-1\n") == Interval("chr1", 0, 1)
    assert parse_region("X:100-200") == Interval("X", 99, 200)


@pytest.mark.parametrize("bad", [
    "", "chr19", "chr19:100", "chr19:0-10", "chr19:10-5", "chr19:a-b", "chr19:-5-10",
    "chr 19:1-2", "chr19:1-2:3", ":1-2",
])
def test_parse_region_rejects(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_region(bad)


# --- centred_window ----------------------------------------------------------------------------


def test_enformer_window_is_centred_on_the_tss() -> None:
    length = 196_608
    window = centred_window("chr19", 44_905_795, length)
    assert len(window) == length
    assert 44_905_795 - window.start == length // 2
    assert window.end - 44_905_795 == length // 2


def test_window_on_the_first_base_reaches_before_the_contig() -> None:
    window = centred_window("chr1", 0, 8)
    assert (window.start, window.end) == (-4, 4)


@given(centre=st.integers(-(10**6), 10**10), half=st.integers(1, 2**18))
def test_centred_window_puts_the_centre_at_index_half_length(centre: int, half: int) -> None:
    length = 2 * half
    window = centred_window("chr1", centre, length)
    assert len(window) == length
    assert centre - window.start == length // 2
    assert window.contains(centre)
    assert window.contains(centre - half)
    assert not window.contains(centre + half)


@pytest.mark.parametrize("length", [0, -2, 1, 3, 196_607])
def test_centred_window_rejects_odd_or_non_positive_lengths(length: int) -> None:
    with pytest.raises(ValueError, match="positive even"):
        centred_window("chr1", 1_000, length)


# --- chromosome names --------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "canonical"), [
    ("19", "chr19"),
    ("chr19", "chr19"),
    ("Chr19", "chr19"),  # any capitalisation of the chr prefix is stripped
    ("CHR19", "chr19"),
    ("X", "chrX"),
    ("chrX", "chrX"),
    ("Y", "chrY"),
    ("MT", "chrM"),
    ("M", "chrM"),
    ("mt", "chrM"),
    ("chrM", "chrM"),
    ("chrMT", "chrM"),
    ("1_KI270706v1_random", "chr1_KI270706v1_random"),
])
def test_canonical_chrom(name: str, canonical: str) -> None:
    assert canonical_chrom(name) == canonical


@pytest.mark.parametrize("name", ["", "chr", "Chr"])
def test_canonical_chrom_rejects_empty_names(name: str) -> None:
    with pytest.raises(ValueError, match="empty chromosome name"):
        canonical_chrom(name)


@given(st.from_regex(r"\A[A-Za-z0-9_.]{1,10}\Z").filter(lambda s: s.lower() != "chr"))
def test_canonical_chrom_is_idempotent_and_prefixed(name: str) -> None:
    canonical = canonical_chrom(name)
    assert canonical.startswith("chr")
    assert canonical_chrom(canonical) == canonical


def test_native_names_maps_canonical_to_the_files_own_names() -> None:
    assert native_names(["19", "X", "MT", "chr1"]) == {
        "chr19": "19", "chrX": "X", "chrM": "MT", "chr1": "chr1",
    }


def test_native_names_accepts_a_name_listed_twice() -> None:
    assert native_names(["19", "19"]) == {"chr19": "19"}


@pytest.mark.parametrize("names", [["19", "chr19"], ["chr19", "19"], ["MT", "chrM"],
                                   ["M", "MT"]])
def test_native_names_rejects_two_names_for_one_contig(names: list[str]) -> None:
    with pytest.raises(ValueError) as excinfo:
        native_names(names)
    assert repr(names[0]) in str(excinfo.value)
    assert repr(names[1]) in str(excinfo.value)
