"""BGZF (blocked gzip) writing, as `bgzip` does, with block offsets for `.gzi` indexes.

A BGZF file is a series of independent gzip members of at most 64 KiB each, so blocks can be
compressed in parallel and read at random. zlib releases the GIL, so threads use every core.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

BLOCK_DATA_SIZE = 0xFF00  # uncompressed bytes per block, bgzip's choice
COMPRESSION_LEVEL = 6
_HEADER = struct.Struct("<4BI2BH2BHH")  # gzip header with the 'BC' extra subfield
_FOOTER = struct.Struct("<II")
EOF_BLOCK = bytes.fromhex("1f8b08040000000000ff0600424302001b0003000000000000000000")


def compress_block(data: bytes, level: int = COMPRESSION_LEVEL) -> bytes:
    """One BGZF block holding ``data`` (at most 64 KiB)."""
    deflater = zlib.compressobj(level, zlib.DEFLATED, -15)
    payload = deflater.compress(data) + deflater.flush()
    block_size = _HEADER.size + len(payload) + _FOOTER.size
    header = _HEADER.pack(
        0x1F, 0x8B, 8, 4, 0, 0, 0xFF, 6, ord("B"), ord("C"), 2, block_size - 1
    )
    return header + payload + _FOOTER.pack(zlib.crc32(data), len(data))


def _chunks(data: bytes) -> Iterator[bytes]:
    for start in range(0, len(data), BLOCK_DATA_SIZE):
        yield data[start : start + BLOCK_DATA_SIZE]


def bgzf_compress(
    data: bytes, threads: int = 1, level: int = COMPRESSION_LEVEL
) -> tuple[bytes, list[tuple[int, int]]]:
    """Compress ``data`` into BGZF bytes (EOF block included).

    Returns the bytes and the ``(compressed, uncompressed)`` start offset of every block after
    the first, which is what a `.gzi` index holds.
    """
    chunks = list(_chunks(data))
    if threads > 1 and len(chunks) > 1:
        with ThreadPoolExecutor(threads) as pool:
            blocks = list(pool.map(lambda c: compress_block(c, level), chunks))
    else:
        blocks = [compress_block(c, level) for c in chunks]
    offsets: list[tuple[int, int]] = []
    compressed = 0
    for i, block in enumerate(blocks):
        if i:
            offsets.append((compressed, i * BLOCK_DATA_SIZE))
        compressed += len(block)
    return b"".join(blocks) + EOF_BLOCK, offsets


def gzi_bytes(offsets: list[tuple[int, int]]) -> bytes:
    """The `.gzi` index (as `bgzip -i` and `samtools faidx` write it) for given block offsets."""
    out = [struct.pack("<Q", len(offsets))]
    out.extend(struct.pack("<QQ", c, u) for c, u in offsets)
    return b"".join(out)


def write_bgzf(path: Path, data: bytes, threads: int = 1, with_gzi: bool = False) -> None:
    """Write ``data`` BGZF-compressed to ``path`` (and ``path.gzi`` when asked)."""
    compressed, offsets = bgzf_compress(data, threads=threads)
    path.write_bytes(compressed)
    if with_gzi:
        Path(f"{path}.gzi").write_bytes(gzi_bytes(offsets))
