"""Content fingerprints of input files: what a source asset's observation records, so a file
whose bytes change gets a new data version and one merely touched or copied does not."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

CHUNK = 1 << 23
"""Bytes read at a time (8 MiB)."""
DIGEST_BYTES = 16


@dataclass(frozen=True)
class FileFingerprint:
    """A file's size, modification time and BLAKE2b digest of its bytes."""

    path: str
    size: int
    mtime: float
    digest: str
    """The data version: the bytes alone (neither path nor modification time enter)."""


def fingerprint(path: str | os.PathLike[str]) -> FileFingerprint:
    """The fingerprint of the file at ``path``; a missing file is a ``FileNotFoundError`` that
    names it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: input file not found")
    status = path.stat()
    digest = hashlib.blake2b(digest_size=DIGEST_BYTES)
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return FileFingerprint(str(path), status.st_size, status.st_mtime, digest.hexdigest())
