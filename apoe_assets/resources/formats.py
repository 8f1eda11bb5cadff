"""On-disk formats of the asset storage: Parquet tables, `.npy` arrays, JSON — never pickle.

Every write goes through :func:`atomic_target`, so a crash never leaves a half-written
partition and a failed run leaves the previous good one in place.

A stored genotype folder opens lazily (:class:`StoredGenotypes`): a gene's window reads the
``pos`` column, the Parquet row groups holding its rows and a slice of the memory-mapped
haplotypes. On a remote root (any fsspec URL), what is loaded is fetched once per process into
:func:`remote_cache`, reused while the remote copy is unchanged and removed at the end.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import threading
import uuid
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from upath import UPath

from apoe_assets.enformer.predictions import GenePredictions
from apoe_assets.enformer.variant_effects import VariantEffects
from apoe_assets.genomics.genotypes import GenotypeMatrix
from apoe_assets.genomics.personal import SequenceFolder

_LOCAL = {"", "file", "local"}
ROW_GROUP_ROWS = 8192
"""Rows per Parquet row group of a stored variant table. A window reads the groups it
overlaps, so at most two groups' worth of rows beyond it (a group spans ≈ 250 kb of a
1000 Genomes chromosome); smaller groups would mostly grow the file footer."""
VARIANTS_FILE = "variants.parquet"
_VARIANTS_META = b"apoe_assets.genotypes"
"""Key of the variant table's Parquet metadata: JSON with ``longest_ref``."""


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
    return Path(path.path) if is_local(path) else remote_cache().fetch(path)


def _remove_folder(folder: Path, owner: int) -> None:
    if os.getpid() == owner:  # a forked child never removes its parent's cache
        shutil.rmtree(folder, ignore_errors=True)


def remote_version(path: UPath) -> tuple[str, bool]:
    """A token that changes whenever a file under remote ``path`` is rewritten (a hash of its
    listing: names, sizes, and whatever the store reports — ETag, mtime, creation time), and
    whether ``path`` is a folder."""
    fs = path.fs
    fs.invalidate_cache(path.path)  # another process may have rewritten it
    folder = fs.isdir(path.path)
    infos = (fs.find(path.path, detail=True) if folder
             else {path.path: fs.info(path.path)})
    listing = json.dumps(infos, sort_keys=True, default=str).encode()
    return hashlib.sha256(listing).hexdigest(), folder


class RemoteCache:
    """Local copies of remote files and folders, fetched once per process.

    An entry is reused while the remote :func:`remote_version` is unchanged; a rewritten remote
    (a new materialisation) is fetched again and the stale copy removed. Everything lives in
    one temporary folder, removed by :meth:`close` (the IO manager's teardown) or at
    interpreter exit, whichever comes first.
    """

    def __init__(self) -> None:
        self.owner = os.getpid()
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[str, Path]] = {}
        self._folder: Path | None = None
        self._cleanup: weakref.finalize | None = None

    @property
    def folder(self) -> Path | None:
        """The temporary folder holding the copies (None until the first fetch)."""
        return self._folder

    def fetch(self, path: UPath) -> Path:
        """A local copy of remote ``path`` (a file or a folder), fetched if not cached."""
        key = str(path)
        with self._lock:  # one download per path, even with threads loading at once
            version, is_folder = remote_version(path)
            cached = self._entries.get(key)
            if cached is not None and cached[0] == version:
                return cached[1]
            if cached is not None:
                shutil.rmtree(cached[1].parent, ignore_errors=True)  # open memory maps survive
            local = Path(tempfile.mkdtemp(dir=self._root())) / path.name
            path.fs.get(path.path, str(local), recursive=is_folder)
            self._entries[key] = (version, local)
            return local

    def close(self) -> None:
        """Remove every copy and the temporary folder; a later fetch starts a new one."""
        with self._lock:
            self._entries.clear()
            if self._cleanup is not None:
                self._cleanup()
            self._folder = self._cleanup = None

    def _root(self) -> Path:
        if self._folder is None:
            self._folder = Path(tempfile.mkdtemp(prefix="apoe-remote-"))
            self._cleanup = weakref.finalize(self, _remove_folder, self._folder, self.owner)
        return self._folder


_remote_cache: RemoteCache | None = None


def remote_cache() -> RemoteCache:
    """This process's :class:`RemoteCache` (a forked child gets its own)."""
    global _remote_cache
    if _remote_cache is None or _remote_cache.owner != os.getpid():
        _remote_cache = RemoteCache()
    return _remote_cache


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


def write_genotypes(matrix: GenotypeMatrix, folder: Path,
                    row_group_rows: int = ROW_GROUP_ROWS) -> None:
    """A folder: ``variants.parquet``, ``haplotypes.npy``, ``phased.npy``, ``samples.json``.

    The variant table is written in matrix order (a VCF's: by position) in row groups of
    ``row_group_rows``, ``pos`` delta-encoded with statistics, without the index (rows are
    numbered by position in the table), so a window reads only its own row groups.
    """
    folder.mkdir(parents=True)
    table = pa.Table.from_pandas(matrix.variants, preserve_index=False)
    meta = {**(table.schema.metadata or {}),
            _VARIANTS_META: json.dumps({"longest_ref": matrix.longest_ref}).encode()}
    pq.write_table(table.replace_schema_metadata(meta), folder / VARIANTS_FILE,
                   compression="zstd", row_group_size=max(row_group_rows, 1),
                   use_dictionary=[c for c in table.column_names if c != "pos"],
                   column_encoding={"pos": "DELTA_BINARY_PACKED"}, write_statistics=["pos"])
    _write_array(matrix.haplotypes, folder / "haplotypes.npy")
    _write_array(matrix.phased, folder / "phased.npy")
    _write_json({"samples": matrix.samples}, folder / "samples.json")


class StoredGenotypes(GenotypeMatrix):
    """A genotype folder opened lazily, with :class:`GenotypeMatrix`'s interface.

    The arrays are memory-mapped; :meth:`positions` reads the ``pos`` column only;
    :meth:`window` reads the row groups of the variant table that hold the window's rows and
    slices the memory maps; :attr:`variants` reads the whole table on first use (chromosome-wide
    checks need it; per-gene code should not). Folders written before the table was grouped
    read the same way (one row group: the whole table, as before).
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.samples = json.loads((folder / "samples.json").read_text())["samples"]
        self.haplotypes = np.load(folder / "haplotypes.npy", mmap_mode="r", allow_pickle=False)
        self.phased = np.load(folder / "phased.npy", mmap_mode="r", allow_pickle=False)
        meta = pq.read_metadata(folder / VARIANTS_FILE)
        self._group_starts = np.cumsum(
            [0] + [meta.row_group(i).num_rows for i in range(meta.num_row_groups)])
        schema = meta.schema.to_arrow_schema()
        self._columns = [n for n in schema.names if not n.startswith("__index_level_")]
        self._empty = schema.empty_table().select(self._columns)
        self._meta = json.loads((schema.metadata or {}).get(_VARIANTS_META, b"{}"))
        self._positions: np.ndarray | None = None
        self._variants: pd.DataFrame | None = None
        self._check_shapes(int(self._group_starts[-1]))

    def __repr__(self) -> str:
        return (f"StoredGenotypes({self.folder}, {self.n_variants} variants × "
                f"{len(self.samples)} samples)")

    @property
    def variants(self) -> pd.DataFrame:  # type: ignore[override]
        """The whole variant table, read on first use."""
        if self._variants is None:
            self._variants = self._read(0, self.n_variants)
        return self._variants

    @property
    def longest_ref(self) -> int:
        if "longest_ref" in self._meta:
            return int(self._meta["longest_ref"])
        return super().longest_ref

    def positions(self) -> np.ndarray:
        if self._positions is None:
            with pq.ParquetFile(self.folder / VARIANTS_FILE) as file:
                column = file.read(columns=["pos"])["pos"]
            self._positions = column.to_numpy().astype(np.int64, copy=False)
        return self._positions

    def variant_rows(self, rows: slice | np.ndarray) -> pd.DataFrame:
        if isinstance(rows, slice) and self._variants is None:
            return self._read(rows.start, rows.stop)
        return self.variants.iloc[rows]

    def _read(self, lo: int, hi: int) -> pd.DataFrame:
        """Rows ``[lo, hi)`` of the variant table, reading only the row groups holding them."""
        starts = self._group_starts
        if hi <= lo:
            frame = self._empty.to_pandas()
        else:
            first = int(np.searchsorted(starts, lo, "right")) - 1
            last = int(np.searchsorted(starts, hi, "left"))  # groups [first, last) hold them
            with pq.ParquetFile(self.folder / VARIANTS_FILE) as file:
                table = file.read_row_groups(range(first, last), columns=self._columns)
            frame = table.slice(lo - int(starts[first]), hi - lo).to_pandas()
        frame.index = pd.RangeIndex(lo, max(lo, hi))
        return frame


def read_genotypes(folder: Path) -> StoredGenotypes:
    """Open a genotype folder: the arrays memory-mapped, the variant table read lazily."""
    return StoredGenotypes(folder)


def _move_folder(folder: SequenceFolder, target: Path) -> None:
    shutil.move(str(folder.path), str(target))


FORMATS = (
    Format(SequenceFolder, ".sequences", _move_folder, SequenceFolder),
    Format(GenePredictions, ".predictions", GenePredictions.write, GenePredictions.read),
    Format(VariantEffects, ".snp_effects", VariantEffects.write, VariantEffects.read),
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
