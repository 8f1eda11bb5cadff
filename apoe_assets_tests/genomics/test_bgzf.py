"""BGZF writing: valid gzip, blocks of at most 64 KiB, the EOF marker, `.gzi` offsets."""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np
import pysam
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from apoe_assets.genomics.bgzf import (
    BLOCK_DATA_SIZE,
    bgzf_compress,
    compress_block,
    gzi_bytes,
    write_bgzf,
)

# The 28-byte empty block that ends every BGZF file (SAM specification, section 4.1.2).
STANDARD_EOF = bytes([
    0x1F, 0x8B, 0x08, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0xFF, 0x06, 0x00, 0x42, 0x43,
    0x02, 0x00, 0x1B, 0x00, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
])
MAX_BLOCK = 65_536
HEADER_SIZE = 18  # gzip header with the 6-byte 'BC' extra field


def split_blocks(data: bytes) -> list[bytes]:
    """Cut BGZF bytes into blocks using each block's own BSIZE field, checking the headers."""
    blocks = []
    offset = 0
    while offset < len(data):
        magic, method, flags = data[offset], data[offset + 1], data[offset + 3]
        assert (magic, method, data[offset + 2], flags) == (0x1F, 0x8B, 8, 4)
        xlen, si1, si2, slen, bsize = struct.unpack_from("<H2BHH", data, offset + 10)
        assert (xlen, si1, si2, slen) == (6, ord("B"), ord("C"), 2)
        blocks.append(data[offset : offset + bsize + 1])
        offset += bsize + 1
    assert offset == len(data), "the last block overruns the data"
    return blocks


def inflate_block(block: bytes) -> bytes:
    """The data of one block, checked against the block's CRC32 and ISIZE."""
    data = zlib.decompress(block[HEADER_SIZE:-8], wbits=-15)
    crc, isize = struct.unpack("<II", block[-8:])
    assert (crc, isize) == (zlib.crc32(data), len(data))
    return data


def sample_bytes(seed: int, size: int, kind: str) -> bytes:
    rng = np.random.default_rng(seed)
    if kind == "random":  # incompressible: the worst case for the block size
        return rng.integers(0, 256, size, dtype=np.uint8).tobytes()
    if kind == "dna":
        return rng.choice(np.frombuffer(b"ACGTN\n", np.uint8), size).tobytes()
    return bytes(size)


SIZES = st.one_of(
    st.integers(0, 300),
    st.sampled_from([BLOCK_DATA_SIZE - 1, BLOCK_DATA_SIZE, BLOCK_DATA_SIZE + 1,
                     2 * BLOCK_DATA_SIZE, 3 * BLOCK_DATA_SIZE + 17]),
    st.integers(BLOCK_DATA_SIZE + 1, 3 * BLOCK_DATA_SIZE + 100),
)
INPUTS = st.builds(sample_bytes, st.integers(0, 2**32 - 1), SIZES,
                   st.sampled_from(["random", "dna", "zeros"]))


def test_standard_eof_block_ends_every_file() -> None:
    for data in (b"", b"ACGT", sample_bytes(0, 2 * BLOCK_DATA_SIZE + 5, "random")):
        compressed, _ = bgzf_compress(data)
        assert compressed[-28:] == STANDARD_EOF
        assert split_blocks(compressed)[-1] == STANDARD_EOF


def test_empty_input_is_just_the_eof_block() -> None:
    assert bgzf_compress(b"") == (STANDARD_EOF, [])


def test_one_block_layout() -> None:
    block = compress_block(b"ACGTACGT" * 100)
    assert split_blocks(block) == [block]
    assert inflate_block(block) == b"ACGTACGT" * 100
    assert block[4:8] == bytes(4)  # MTIME 0: the same input always gives the same bytes


@settings(max_examples=40, deadline=None)
@given(data=INPUTS)
def test_round_trip_through_python_gzip(data: bytes) -> None:
    compressed, offsets = bgzf_compress(data)
    assert gzip.decompress(compressed) == data
    blocks = split_blocks(compressed)
    assert all(len(block) <= MAX_BLOCK for block in blocks)
    assert blocks[-1] == STANDARD_EOF
    data_blocks = blocks[:-1]
    expected_blocks = -(-len(data) // BLOCK_DATA_SIZE)
    assert len(data_blocks) == expected_blocks
    assert b"".join(inflate_block(b) for b in data_blocks) == data
    assert len(offsets) == max(expected_blocks - 1, 0)


@settings(max_examples=25, deadline=None)
@given(data=INPUTS)
def test_gzi_offsets_point_at_block_starts(data: bytes) -> None:
    compressed, offsets = bgzf_compress(data)
    for compressed_offset, uncompressed_offset in offsets:
        block = split_blocks(compressed[compressed_offset:])[0]
        chunk = data[uncompressed_offset : uncompressed_offset + BLOCK_DATA_SIZE]
        assert inflate_block(block) == chunk
        assert chunk  # every indexed block holds data


@settings(max_examples=15, deadline=None)
@given(data=INPUTS, threads=st.integers(2, 4))
def test_threads_give_identical_bytes(data: bytes, threads: int) -> None:
    assert bgzf_compress(data, threads=threads) == bgzf_compress(data, threads=1)


def test_incompressible_full_blocks_stay_within_64_kib() -> None:
    data = sample_bytes(11, 4 * BLOCK_DATA_SIZE, "random")
    compressed, _ = bgzf_compress(data, threads=2)
    blocks = split_blocks(compressed)
    assert len(blocks) == 5
    assert all(len(block) <= MAX_BLOCK for block in blocks)
    assert gzip.decompress(compressed) == data


def test_gzi_layout() -> None:
    offsets = [(1_000, 65_280), (2_345, 130_560)]
    expected = struct.pack("<Q", 2) + struct.pack("<QQ", 1_000, 65_280) + struct.pack(
        "<QQ", 2_345, 130_560)
    assert gzi_bytes(offsets) == expected
    assert gzi_bytes([]) == bytes(8)


def test_write_bgzf_with_gzi_is_read_by_htslib(tmp_path: Path) -> None:
    data = sample_bytes(5, 2 * BLOCK_DATA_SIZE + 999, "dna")
    path = tmp_path / "x.txt.gz"
    write_bgzf(path, data, threads=2, with_gzi=True)
    _, offsets = bgzf_compress(data)
    assert Path(f"{path}.gzi").read_bytes() == gzi_bytes(offsets)
    with pysam.libcbgzf.BGZFile(str(path), "rb") as handle:  # htslib's reader
        assert handle.read() == data


def test_write_bgzf_without_gzi_writes_no_index(tmp_path: Path) -> None:
    path = tmp_path / "x.gz"
    write_bgzf(path, b"hello")
    assert gzip.decompress(path.read_bytes()) == b"hello"
    assert not Path(f"{path}.gzi").exists()


@pytest.mark.parametrize("level", [1, 9])
def test_compression_level_keeps_the_data(level: int) -> None:
    data = sample_bytes(2, 1_000, "dna")
    assert inflate_block(compress_block(data, level=level)) == data
