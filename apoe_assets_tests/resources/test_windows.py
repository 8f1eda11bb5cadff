"""A gene reads only its window of a stored chromosome; a remote chromosome is fetched once per
process into a cache that is reused while unchanged and removed at the end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from upath import UPath

from apoe_assets.genomics.consensus import build_haplotypes
from apoe_assets.genomics.coordinates import Interval
from apoe_assets.genomics.genotypes import GenotypeMatrix
from apoe_assets.genomics.loci import locus_summary, variants_in
from apoe_assets.resources import formats
from apoe_assets.resources.storage import AssetStorage
from apoe_assets.stats.eqtl import cis_window

GROUP = 4
"""Rows per row group of the stored tables here, so windows span several groups."""
BASES = b"ACGT"


def _matrix(positions: list[int], seed: int = 0, n_samples: int = 3,
            refs: list[str] | None = None) -> GenotypeMatrix:
    rng = np.random.default_rng(seed)
    refs = refs or ["A"] * len(positions)
    alts = ["C" if r[0] != "C" else "G" for r in refs] if refs else []
    variants = pd.DataFrame({
        "variant_id": [f"chr1:{p}:{r}:{a}:{i}" for i, (p, r, a)
                       in enumerate(zip(positions, refs, alts, strict=True))],
        "chrom": "chr1", "pos": np.array(positions, np.int64), "ref": refs, "alt": alts,
        "kind": "snv", "site": np.arange(len(positions)), "af": rng.random(len(positions)),
        "missing": rng.integers(0, 3, len(positions))})
    return GenotypeMatrix([f"s{i}" for i in range(n_samples)], variants,
                          rng.integers(-1, 2, (len(positions), 2 * n_samples)).astype(np.int8),
                          rng.integers(0, 2, (len(positions), n_samples)).astype(bool))


# 1-based positions: repeats (a split multi-allelic site), a group boundary inside a repeat
SORTED = [1, 5, 5, 9, 10, 10, 10, 11, 20, 21, 30, 40, 41, 42, 50, 60, 60, 61, 100]
WINDOWS = [
    (0, 1),      # the first base of the chromosome: position 1 only
    (0, 200),    # everything
    (4, 5),      # both records of a repeated position
    (9, 10),     # the three records at 10, nothing of 9 or 11
    (8, 11),     # 9..11, across a row-group boundary
    (11, 20),    # 12..20: right edge inclusive, left exclusive of 11
    (21, 29),    # empty, between variants
    (99, 100),   # the last variant
    (100, 500),  # empty, past the end
    (-50, 0),    # empty, before the start
    (30, 30),    # empty window
    (45, 30),    # reversed: empty
]


@pytest.fixture
def stored(tmp_path: Path) -> tuple[GenotypeMatrix, formats.StoredGenotypes]:
    matrix = _matrix(SORTED)
    formats.write_genotypes(matrix, tmp_path / "chr1.genotypes", row_group_rows=GROUP)
    return matrix, formats.read_genotypes(tmp_path / "chr1.genotypes")


class _ParquetReads:
    """Records what the variant table is asked for: row groups and columns."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.groups: list[list[int]] = []
        self.columns: list[list[str] | None] = []
        read_groups, read = pq.ParquetFile.read_row_groups, pq.ParquetFile.read

        def spy_groups(file, row_groups, *args, **kwargs):
            self.groups.append(list(row_groups))
            return read_groups(file, row_groups, *args, **kwargs)

        def spy_read(file, *args, **kwargs):
            self.columns.append(kwargs.get("columns"))
            return read(file, *args, **kwargs)

        monkeypatch.setattr(pq.ParquetFile, "read_row_groups", spy_groups)
        monkeypatch.setattr(pq.ParquetFile, "read", spy_read)


@pytest.mark.parametrize(("start", "end"), WINDOWS)
def test_window_reads_exactly_the_window_rows(stored, monkeypatch, start: int, end: int) -> None:
    """A window of a stored chromosome holds exactly the rows a full read's position mask
    picks (edges: repeated positions, row-group boundaries, both chromosome ends, empty and
    reversed windows), and reads only the ``pos`` column plus the row groups holding those
    rows, never the whole table; the haplotypes stay a memory-mapped slice. Catches an
    off-by-one in the binary search and a window that reads the whole table."""
    matrix, genotypes = stored
    reads = _ParquetReads(monkeypatch)
    window = genotypes.window(start, end)
    mask = variants_in(matrix, start, end)  # the full read's answer
    pd.testing.assert_frame_equal(window.variants, matrix.variants[mask])
    np.testing.assert_array_equal(window.haplotypes, matrix.haplotypes[mask])
    np.testing.assert_array_equal(window.phased, matrix.phased[mask])
    assert window.samples == matrix.samples
    rows = np.flatnonzero(mask)
    wanted = sorted(set((rows // GROUP).tolist()))
    assert reads.columns == [["pos"]]
    assert reads.groups == ([wanted] if len(rows) else [])
    assert genotypes._variants is None  # the whole table was never materialised
    if len(rows):
        assert isinstance(window.haplotypes, np.memmap)  # a slice of the map, not a copy


def test_unsorted_and_old_folders_still_read(tmp_path: Path) -> None:
    """A table not sorted by position (windows fall back to a mask) and a folder written by
    the earlier code (pandas' Parquet with its index, one row group) give the same windows as
    the in-memory matrix. Catches a window that assumes sorted rows, or a reader that can no
    longer open folders already in storage."""
    unsorted = _matrix([30, 10, 20, 10, 50, 40])
    formats.write_genotypes(unsorted, tmp_path / "unsorted", row_group_rows=2)
    old = tmp_path / "old"
    matrix = _matrix(SORTED, seed=3)
    old.mkdir()
    matrix.variants.to_parquet(old / "variants.parquet", index=True, compression="zstd")
    np.save(old / "haplotypes.npy", matrix.haplotypes)
    np.save(old / "phased.npy", matrix.phased)
    (old / "samples.json").write_text(json.dumps({"samples": matrix.samples}))
    for original, folder in ((unsorted, "unsorted"), (matrix, "old")):
        loaded = formats.read_genotypes(tmp_path / folder)
        pd.testing.assert_frame_equal(loaded.variants, original.variants)
        for start, end in WINDOWS:
            mask = variants_in(original, start, end)
            window = loaded.window(start, end)
            pd.testing.assert_frame_equal(window.variants, original.variants[mask])
            np.testing.assert_array_equal(window.haplotypes, original.haplotypes[mask])


def test_gene_level_readers_agree_with_the_full_read(stored) -> None:
    """``cis_window`` and ``locus_summary`` on a stored chromosome (window reads) equal the
    same calls on the in-memory matrix. Catches a consumer left reading rows by a mask of the
    full table against a window's rows."""
    matrix, genotypes = stored
    gene = pd.Series({"gene_id": "G", "symbol": "G", "chrom": "chr1", "strand": "+",
                      "tss": 20, "window_start": 8, "window_end": 40, "cis_start": 4,
                      "cis_end": 61})
    ours, full = cis_window(genotypes, gene, ["s2", "s0"]), cis_window(matrix, gene, ["s2", "s0"])
    pd.testing.assert_frame_equal(ours.variants, full.variants)
    np.testing.assert_array_equal(ours.dosages, full.dosages)
    pd.testing.assert_frame_equal(locus_summary(gene, genotypes, None),
                                  locus_summary(gene, matrix, None))
    assert genotypes._variants is None


def test_sequence_window_with_the_longest_ref_margin_builds_the_same_haplotypes(
        tmp_path: Path) -> None:
    """Personal sequences built from ``window(start - longest_ref + 1, end)`` of a stored
    chromosome equal those built from the whole chromosome — bases, variants applied and
    skipped — with a deletion that starts before the window and reaches its first base
    (skipped, and counted, as bcftools does). Catches a margin too small for the records
    that overlap a window from the left (the window a sequence build may read)."""
    rng = np.random.default_rng(5)
    reference = rng.choice(np.frombuffer(BASES, np.uint8), 400).tobytes()
    starts0 = [10, 80, 89, 101, 150, 199, 250, 300]  # 0-based; 89 is a 12-base deletion
    refs = [chr(reference[p]) for p in starts0]
    refs[2] = reference[89:101].decode()
    matrix = _matrix([p + 1 for p in starts0], seed=5, refs=refs)
    matrix.variants.loc[2, "alt"] = refs[2][0]
    matrix.haplotypes[2] = 1
    formats.write_genotypes(matrix, tmp_path / "g", row_group_rows=2)
    genotypes = formats.read_genotypes(tmp_path / "g")
    assert genotypes.longest_ref == 12
    window = Interval("chr1", 100, 260)  # the deletion overlaps its first base only
    bases = reference[window.start:window.end]
    local = genotypes.window(window.start - genotypes.longest_ref + 1, window.end)
    assert local.n_variants < matrix.n_variants
    ours, full = build_haplotypes(bases, window, local), build_haplotypes(bases, window, matrix)
    assert ours.sequences == full.sequences
    np.testing.assert_array_equal(ours.applied, full.applied)
    for reason, counts in full.skipped.items():  # the deletion counts as skipped there
        np.testing.assert_array_equal(ours.skipped[reason], counts, err_msg=reason)
    assert full.skipped["window_start"].sum() > 0


# --- remote roots --------------------------------------------------------------------------


@pytest.fixture(params=["memory", "file"])
def remote_root(request, tmp_path: Path, monkeypatch) -> Iterator[UPath]:
    """A remote storage root: fsspec's memory store, or a ``file://`` URL treated as remote."""
    if request.param == "memory":
        root = UPath(f"memory://apoe-window-test/{uuid.uuid4().hex}")
    else:
        monkeypatch.setattr(formats, "_LOCAL", {"", "local"})
        root = UPath(f"file://{tmp_path}/remote")
    assert not formats.is_local(root)
    monkeypatch.setattr(formats, "_remote_cache", None)  # a fresh cache for this test
    yield root
    formats.remote_cache().close()
    if request.param == "memory" and root.fs.exists(root.path):
        root.fs.rm(root.path, recursive=True)


def _count_fetches(root: UPath, monkeypatch) -> list[str]:
    fetched: list[str] = []
    fs, get = root.fs, root.fs.get

    def counting_get(rpath, lpath, *args, **kwargs):
        fetched.append(str(rpath))
        return get(rpath, lpath, *args, **kwargs)

    monkeypatch.setattr(fs, "get", counting_get)
    return fetched


def test_remote_chromosome_is_fetched_once_and_removed(remote_root: UPath,
                                                       monkeypatch) -> None:
    """Two loads of a remote genotype folder (two genes of one chromosome) and two of a remote
    table fetch each once and give identical data; closing the cache leaves no temporary
    folder. Catches a copy per load (the old ``_local_copy``) and copies left behind."""
    matrix = _matrix(SORTED)
    formats.save(matrix, remote_root / "genotypes" / "chr1")
    formats.save(pd.DataFrame({"y": [1.5, 2.5]}), remote_root / "covariates")
    fetched = _count_fetches(remote_root, monkeypatch)
    first, second = (formats.load(remote_root / "genotypes" / "chr1") for _ in range(2))
    tables = [formats.load(remote_root / "covariates") for _ in range(2)]
    assert len(fetched) == 2, fetched  # one per stored output
    for loaded in (first, second):
        pd.testing.assert_frame_equal(loaded.window(8, 40).variants, matrix.window(8, 40).variants)
        np.testing.assert_array_equal(loaded.haplotypes, matrix.haplotypes)
    pd.testing.assert_frame_equal(tables[0], tables[1])
    folder = formats.remote_cache().folder
    assert folder is not None and any(folder.rglob("haplotypes.npy"))
    formats.remote_cache().close()
    assert not folder.exists()


def test_rewritten_remote_folder_is_fetched_again(remote_root: UPath, monkeypatch) -> None:
    """After the remote chromosome is rewritten (a new materialisation), the next load fetches
    it again and sees the new data, and the stale copy is removed. Catches a cache keyed by
    path alone, which would keep serving the old genotypes."""
    stem = remote_root / "genotypes" / "chr1"
    formats.save(_matrix(SORTED, seed=1), stem)
    fetched = _count_fetches(remote_root, monkeypatch)
    old = formats.load(stem)
    np.testing.assert_array_equal(formats.load(stem).haplotypes, _matrix(SORTED, 1).haplotypes)
    new_matrix = _matrix([*SORTED, 150], seed=2)
    formats.save(new_matrix, stem)
    new = formats.load(stem)
    assert len(fetched) == 2
    assert new.n_variants == len(SORTED) + 1 and old.n_variants == len(SORTED)
    np.testing.assert_array_equal(new.haplotypes, new_matrix.haplotypes)
    pd.testing.assert_frame_equal(new.variants, new_matrix.variants)
    copies = formats.remote_cache().folder.rglob("*.genotypes")
    assert [p.name for p in copies] == ["chr1.genotypes"]  # the stale copy is gone


def test_io_manager_shares_one_fetch_across_genes_and_cleans_up(remote_root: UPath,
                                                                monkeypatch) -> None:
    """In one run, two gene assets reading the same remote chromosome fetch it once, and the
    IO manager's teardown removes the copies when the run ends. Catches a per-gene fetch and
    a run that leaves its copies behind in a long-lived process."""

    @dg.asset
    def chromosome() -> GenotypeMatrix:
        return _matrix(SORTED)

    @dg.asset
    def gene_a(chromosome: GenotypeMatrix) -> pd.DataFrame:
        return chromosome.window(0, 20).variants[["variant_id"]]

    @dg.asset
    def gene_b(chromosome: GenotypeMatrix) -> pd.DataFrame:
        return chromosome.window(20, 60).variants[["variant_id"]]

    storage = AssetStorage(root=str(remote_root))
    with dg.instance_for_test() as instance:
        assert dg.materialize([chromosome], instance=instance,
                              resources={"io_manager": storage}).success
        fetched = _count_fetches(remote_root, monkeypatch)
        used: list[Path] = []
        monkeypatch.setattr(formats.RemoteCache, "close", _recording_close(used))
        assert dg.materialize([chromosome, gene_a, gene_b], selection=[gene_a, gene_b],
                              instance=instance, resources={"io_manager": storage}).success
    assert [f.rsplit("/", 1)[-1] for f in fetched] == ["chromosome.genotypes"]
    assert used and not any(folder.exists() for folder in used)
    assert formats.remote_cache().folder is None


def _recording_close(used: list[Path]):
    close = formats.RemoteCache.close

    def recording(cache: formats.RemoteCache) -> None:
        if cache.folder is not None:
            used.append(cache.folder)
        close(cache)

    return recording


def test_process_exit_leaves_no_temporary_folder(tmp_path: Path) -> None:
    """A process that loads remote outputs and exits without closing the cache leaves nothing
    in its temporary directory. Catches a cache that is only removed by an explicit close."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    script = textwrap.dedent("""
        import numpy as np, pandas as pd
        from upath import UPath
        from apoe_assets.genomics.genotypes import GenotypeMatrix
        from apoe_assets.resources import formats
        root = UPath("memory://apoe-exit-test")
        variants = pd.DataFrame({"variant_id": ["chr1:10:A:G"], "chrom": "chr1", "pos": [10],
                                 "ref": "A", "alt": "G", "kind": "snv", "site": [0],
                                 "af": [0.5], "missing": [0]})
        formats.save(GenotypeMatrix(["a"], variants, np.zeros((1, 2), np.int8),
                                    np.ones((1, 1), bool)), root / "genotypes" / "chr1")
        formats.save(pd.DataFrame({"y": [1]}), root / "covariates")
        for _ in range(2):
            assert formats.load(root / "genotypes" / "chr1").window(0, 100).n_variants == 1
            assert formats.load(root / "covariates")["y"].tolist() == [1]
        folder = formats.remote_cache().folder
        assert len(list(folder.rglob("*"))) >= 6, list(folder.rglob("*"))
        print(folder)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env={**os.environ, "TMPDIR": str(scratch)}, timeout=120,
                          cwd=Path(__file__).parents[2])
    assert done.returncode == 0, done.stderr
    folder = Path(done.stdout.strip().splitlines()[-1])
    assert folder.parent == scratch
    assert not folder.exists()
    assert list(scratch.iterdir()) == []
