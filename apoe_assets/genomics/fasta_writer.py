"""Streaming writer of bgzipped, faidx-indexed multi-FASTA (`.fai` and `.gzi` beside it).

Records are added one at a time, so memory stays bounded however many haplotypes a gene has;
full BGZF blocks are compressed on a thread pool as they fill (zlib releases the GIL).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType

import numpy as np

from apoe_assets.genomics.bgzf import (
    BLOCK_DATA_SIZE,
    COMPRESSION_LEVEL,
    EOF_BLOCK,
    compress_block,
    gzi_bytes,
)

LINE_WIDTH = 60
_BLOCKS_PER_BATCH = 64


def wrap_lines(sequence: bytes, width: int = LINE_WIDTH) -> bytes:
    """``sequence`` split into lines of ``width`` bases, each ending in a newline."""
    n = len(sequence)
    if n == 0:
        return b""
    full, rest = divmod(n, width)
    grid = np.empty((full, width + 1), np.uint8)
    grid[:, :width] = np.frombuffer(sequence, np.uint8, full * width).reshape(full, width)
    grid[:, width] = ord("\n")
    tail = sequence[full * width :] + b"\n" if rest else b""
    return grid.tobytes() + tail


class IndexedFastaWriter:
    """Write FASTA records to ``path`` (BGZF) with samtools-compatible `.fai` and `.gzi`.

    Files are written under temporary names and renamed into place on :meth:`close`, so a
    reader never sees a half-written FASTA. Use as a context manager.
    """

    def __init__(self, path: Path, threads: int = 1, line_width: int = LINE_WIDTH,
                 level: int = COMPRESSION_LEVEL):
        self.path = Path(path)
        self._tmp = self.path.with_name(f".{self.path.name}.tmp")
        self._handle = self._tmp.open("wb")
        self._pool = ThreadPoolExecutor(threads) if threads > 1 else None
        self._level = level
        self._line_width = line_width
        self._pending = bytearray()
        self._uncompressed = 0  # bytes of FASTA text written so far (flushed or pending)
        self._compressed = 0
        self._blocks = 0
        self._blocks_uncompressed = 0
        self._gzi: list[tuple[int, int]] = []
        self._fai: list[str] = []
        self.bytes_written = 0

    def add(self, name: str, sequence: bytes) -> None:
        """Append one record."""
        header = f">{name}\n".encode()
        body = wrap_lines(sequence, self._line_width)
        bases = min(self._line_width, len(sequence))
        self._fai.append(f"{name}\t{len(sequence)}\t{self._uncompressed + len(header)}\t"
                         f"{bases}\t{bases + 1}")
        self._pending += header
        self._pending += body
        self._uncompressed += len(header) + len(body)
        if len(self._pending) >= BLOCK_DATA_SIZE * _BLOCKS_PER_BATCH:
            self._flush(final=False)

    def _flush(self, final: bool) -> None:
        whole = len(self._pending) if final else (
            len(self._pending) // BLOCK_DATA_SIZE * BLOCK_DATA_SIZE)
        chunks = [bytes(self._pending[i : min(i + BLOCK_DATA_SIZE, whole)])
                  for i in range(0, whole, BLOCK_DATA_SIZE)]
        del self._pending[:whole]
        level = self._level
        blocks = (list(self._pool.map(lambda c: compress_block(c, level), chunks))
                  if self._pool else [compress_block(c, level) for c in chunks])
        for chunk, block in zip(chunks, blocks, strict=True):
            if self._blocks:
                self._gzi.append((self._compressed, self._blocks_uncompressed))
            self._handle.write(block)
            self._compressed += len(block)
            self._blocks += 1
            self._blocks_uncompressed += len(chunk)

    def close(self) -> None:
        """Flush, write the EOF block and the indexes, and move everything into place."""
        self._flush(final=True)
        self._handle.write(EOF_BLOCK)
        self._handle.close()
        if self._pool:
            self._pool.shutdown()
        self.bytes_written = self._compressed + len(EOF_BLOCK)
        for target, payload in ((Path(f"{self.path}.gzi"), gzi_bytes(self._gzi)),
                                (Path(f"{self.path}.fai"),
                                 ("\n".join(self._fai) + "\n").encode())):
            tmp = target.with_name(f".{target.name}.tmp")
            tmp.write_bytes(payload)
            os.replace(tmp, target)
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        """Drop what was written (on error)."""
        self._handle.close()
        if self._pool:
            self._pool.shutdown()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> IndexedFastaWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()
