"""The streaming FASTA writer: same bytes as samtools' indexes, bounded memory, no partial file."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pysam
import pytest

from apoe_assets.genomics.fasta import fasta_bytes
from apoe_assets.genomics.fasta_writer import IndexedFastaWriter, wrap_lines


def _records(n: int, length: int, seed: int = 5) -> list[tuple[str, bytes]]:
    rng = np.random.default_rng(seed)
    alphabet = np.frombuffer(b"ACGTN", np.uint8)
    return [(f"S{i:04d}_h{1 + i % 2}", rng.choice(alphabet, length + i % 7).tobytes())
            for i in range(n)]


@pytest.mark.parametrize("threads", [1, 2])
def test_streamed_file_matches_plain_fasta_and_samtools_indexes(tmp_path: Path,
                                                                threads: int) -> None:
    records = _records(40, 24_576)  # ~1 MB: many BGZF blocks, records straddling blocks
    path = tmp_path / "haps.fa.gz"
    with IndexedFastaWriter(path, threads=threads) as writer:
        for name, seq in records:
            writer.add(name, seq)
    text, fai = fasta_bytes(records)
    assert gzip.decompress(path.read_bytes()) == text
    assert Path(f"{path}.fai").read_text().splitlines() == fai
    copy = tmp_path / "copy.fa.gz"
    shutil.copy(path, copy)
    pysam.faidx(str(copy))
    assert Path(f"{copy}.fai").read_bytes() == Path(f"{path}.fai").read_bytes()
    assert Path(f"{copy}.gzi").read_bytes() == Path(f"{path}.gzi").read_bytes()
    fasta = pysam.FastaFile(str(path))
    name, seq = records[17]
    assert fasta.fetch(name, 1000, 1100) == seq[1000:1100].decode()


def test_failure_leaves_no_file(tmp_path: Path) -> None:
    path = tmp_path / "haps.fa.gz"
    with pytest.raises(RuntimeError), IndexedFastaWriter(path) as writer:
        writer.add("a", b"ACGT")
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("length", [0, 1, 59, 60, 61, 120, 1000])
def test_wrap_lines(length: int) -> None:
    seq = bytes(np.resize(np.frombuffer(b"ACGT", np.uint8), length))
    wrapped = wrap_lines(seq)
    lines = wrapped.split(b"\n")[:-1]
    assert b"".join(lines) == seq
    assert all(len(line) == 60 for line in lines[:-1])
    assert wrapped.endswith(b"\n") or length == 0
