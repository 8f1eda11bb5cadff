"""File fingerprints, the data versions of the source assets.

What these catch: a digest that follows the modification time or the path (a touched or copied
file would mark everything downstream stale) or that misses an edit past the first chunk."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from apoe_assets.genomics.fingerprint import CHUNK, fingerprint


def test_digest_follows_the_bytes_only(tmp_path: Path) -> None:
    path = tmp_path / "input.txt"
    data = bytes(range(256)) * (CHUNK // 256 + 3)  # more than one chunk
    path.write_bytes(data)
    first = fingerprint(path)
    assert first.size == len(data)
    assert first.digest == hashlib.blake2b(data, digest_size=16).hexdigest()
    os.utime(path, (first.mtime + 100, first.mtime + 100))
    copy = tmp_path / "copy.txt"
    shutil.copy(path, copy)
    assert fingerprint(path).digest == fingerprint(copy).digest == first.digest
    assert fingerprint(path).mtime != first.mtime
    path.write_bytes(data[:-1] + b"\x00")  # one byte changed, in the last chunk
    assert fingerprint(path).digest != first.digest


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"absent\.vcf\.gz"):
        fingerprint(tmp_path / "absent.vcf.gz")
