"""On-disk formats of the asset storage: Parquet tables, `.npy` arrays, JSON — never pickle.

Every write goes through :func:`atomic_target`, so a crash never leaves a half-written
partition and a failed run leaves the previous good one in place.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from upath import UPath

from apoe_assets.enformer.predictions import GenePredictions
from apoe_assets.genomics.genotypes import GenotypeMatrix
from apoe_assets.genomics.personal import SequenceFolder

_LOCAL = {"", "file", "local"}


def is_local(path: UPath) -> bool:
    """Whether ``path`` lives on the local file system (so rename is atomic)."""
    return path.protocol in _LOCAL


@contextmanager
def atomic_target(target: UPath) -> Iterator[Path]:
    """Yield a local scratch path to write a file or folder into; on success, put it at
    ``target`` in one step. On failure nothing at ``target`` changes."""
    if is_local(target):
        final = Path(target.path)
        final.parent.mkdir(parents=True, exist_ok=True)
        scratch = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            yield scratch
            _swap_into_place(scratch, final)
        finally:
            if scratch.is_dir():
                shutil.rmtree(scratch, ignore_errors=True)
            elif scratch.exists():
                scratch.unlink()
        return
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp) / target.name
        yield scratch
        staged = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
        target.fs.put(str(scratch), staged.path, recursive=scratch.is_dir())
        if target.exists():
            target.fs.rm(target.path, recursive=True)
        target.fs.mv(staged.path, target.path, recursive=True)


def _swap_into_place(scratch: Path, final: Path) -> None:
    if scratch.is_dir() and final.exists():
        old = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.old")
        os.replace(final, old)
        os.replace(scratch, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(scratch, final)


def _local_copy(path: UPath) -> Path:
    if is_local(path):
        return Path(path.path)
    tmp = Path(tempfile.mkdtemp()) / path.name
    path.fs.get(path.path, str(tmp), recursive=path.is_dir())
    return tmp


@dataclass(frozen=True)
class Format:
    """How one Python type is stored: a suffix, a writer into a local path, a reader."""

    python_type: type
    suffix: str
    write: Callable[[Any, Path], None]
    read: Callable[[Path], Any]


def _write_table(table: pd.DataFrame, path: Path) -> None:
    table.to_parquet(path, index=True, compression="zstd")


def _write_json(value: dict, path: Path) -> None:
    path.write_text(json.dumps(value, indent=1, sort_keys=True, default=str))


def _write_array(array: np.ndarray, path: Path) -> None:
    with path.open("wb") as handle:
        np.save(handle, array, allow_pickle=False)


def write_genotypes(matrix: GenotypeMatrix, folder: Path) -> None:
    """A folder: ``variants.parquet``, ``haplotypes.npy``, ``phased.npy``, ``samples.json``."""
    folder.mkdir(parents=True)
    _write_table(matrix.variants, folder / "variants.parquet")
    _write_array(matrix.haplotypes, folder / "haplotypes.npy")
    _write_array(matrix.phased, folder / "phased.npy")
    _write_json({"samples": matrix.samples}, folder / "samples.json")


def read_genotypes(folder: Path) -> GenotypeMatrix:
    """Read a genotype folder; the arrays are memory-mapped, not loaded."""
    return GenotypeMatrix(
        samples=json.loads((folder / "samples.json").read_text())["samples"],
        variants=pd.read_parquet(folder / "variants.parquet"),
        haplotypes=np.load(folder / "haplotypes.npy", mmap_mode="r", allow_pickle=False),
        phased=np.load(folder / "phased.npy", mmap_mode="r", allow_pickle=False),
    )


def _move_folder(folder: SequenceFolder, target: Path) -> None:
    shutil.move(str(folder.path), str(target))


FORMATS = (
    Format(SequenceFolder, ".sequences", _move_folder, SequenceFolder),
    Format(GenePredictions, ".predictions", GenePredictions.write, GenePredictions.read),
    Format(pd.DataFrame, ".parquet", _write_table, pd.read_parquet),
    Format(GenotypeMatrix, ".genotypes", write_genotypes, read_genotypes),
    Format(np.ndarray, ".npy", _write_array, lambda p: np.load(p, allow_pickle=False)),
    Format(dict, ".json", _write_json, lambda p: json.loads(p.read_text())),
)


def format_for(value: object) -> Format:
    """The storage format of ``value``; a clear error for types that have none."""
    for fmt in FORMATS:
        if isinstance(value, fmt.python_type):
            return fmt
    names = ", ".join(f.python_type.__name__ for f in FORMATS)
    raise TypeError(f"no storage format for {type(value).__name__} (supported: {names})")


def save(value: object, stem: UPath) -> UPath:
    """Write ``value`` atomically at ``stem`` + its format's suffix; return the path."""
    fmt = format_for(value)
    target = stem.with_name(stem.name + fmt.suffix)
    with atomic_target(target) as scratch:
        fmt.write(value, scratch)
    return target


def load(stem: UPath) -> Any:
    """Read what :func:`save` wrote at ``stem`` (whichever format it has)."""
    for fmt in FORMATS:
        target = stem.with_name(stem.name + fmt.suffix)
        if target.exists():
            return fmt.read(_local_copy(target))
    raise FileNotFoundError(f"nothing stored at {stem} (looked for "
                            f"{', '.join(f.suffix for f in FORMATS)})")


def stored_size(path: UPath) -> int:
    """Bytes under ``path`` (a file or a folder)."""
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size
