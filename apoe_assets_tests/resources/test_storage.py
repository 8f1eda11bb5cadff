"""The storage layer: open formats, atomic writes, partition paths, fsspec roots."""

import json
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest
from upath import UPath

from apoe_assets.genomics.genotypes import GenotypeMatrix
from apoe_assets.resources import formats
from apoe_assets.resources.storage import ALLOW_MISSING, AssetStorage, ByPartition, WithFigures
from apoe_assets_tests.conftest import failure_message


def _matrix(seed: int = 0) -> GenotypeMatrix:
    rng = np.random.default_rng(seed)
    variants = pd.DataFrame({"variant_id": ["chr1:10:A:G", "chr1:20:C:T"], "chrom": "chr1",
                             "pos": [10, 20], "ref": ["A", "C"], "alt": ["G", "T"],
                             "kind": "snv", "site": [0, 1], "af": [0.5, 0.25],
                             "missing": [0, 1]})
    return GenotypeMatrix(["a", "b", "c"], variants,
                          rng.integers(-1, 2, (2, 6)).astype(np.int8),
                          rng.integers(0, 2, (2, 3)).astype(bool))


@pytest.mark.parametrize("value", [
    pd.DataFrame({"x": [1.5, 2.5]}, index=pd.Index(["g1", "g2"], name="gene_id")),
    np.arange(12, dtype=np.float32).reshape(3, 4),
    {"genes": 3, "note": "ok"},
])
def test_round_trip(tmp_path: Path, value: object) -> None:
    path = formats.save(value, UPath(tmp_path) / "asset" / "part")
    loaded = formats.load(UPath(tmp_path) / "asset" / "part")
    if isinstance(value, pd.DataFrame):
        pd.testing.assert_frame_equal(loaded, value)
    elif isinstance(value, np.ndarray):
        np.testing.assert_array_equal(loaded, value)
    else:
        assert loaded == value
    assert path.exists() and not list(path.parent.glob(".*tmp"))


def test_genotypes_round_trip_memory_mapped(tmp_path: Path) -> None:
    matrix = _matrix()
    formats.save(matrix, UPath(tmp_path) / "genotypes" / "chr1")
    loaded = formats.load(UPath(tmp_path) / "genotypes" / "chr1")
    assert isinstance(loaded.haplotypes, np.memmap)
    np.testing.assert_array_equal(loaded.haplotypes, matrix.haplotypes)
    np.testing.assert_array_equal(loaded.phased, matrix.phased)
    pd.testing.assert_frame_equal(loaded.variants, matrix.variants)
    assert loaded.samples == matrix.samples


def test_failed_write_leaves_the_previous_version(tmp_path: Path) -> None:
    stem = UPath(tmp_path) / "expression"
    good = pd.DataFrame({"x": [1.0]})
    formats.save(good, stem)
    with pytest.raises(RuntimeError), formats.atomic_target(
            UPath(tmp_path) / "expression.parquet") as scratch:
        scratch.write_bytes(b"half a parquet file")
        raise RuntimeError("crash mid-write")
    pd.testing.assert_frame_equal(formats.load(stem), good)
    assert [p.name for p in tmp_path.iterdir()] == ["expression.parquet"]


def test_folder_replaced_in_one_step(tmp_path: Path) -> None:
    stem = UPath(tmp_path) / "genotypes" / "chr1"
    formats.save(_matrix(0), stem)
    formats.save(_matrix(1), stem)
    np.testing.assert_array_equal(formats.load(stem).haplotypes, _matrix(1).haplotypes)
    assert sorted(p.name for p in (tmp_path / "genotypes").iterdir()) == ["chr1.genotypes"]


def test_pickle_is_never_used(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="no storage format for object"):
        formats.save(object(), UPath(tmp_path) / "x")
    with pytest.raises(ValueError, match="pickle"):
        formats.save(np.array([{"a": 1}], dtype=object), UPath(tmp_path) / "objects")


def test_fsspec_root(tmp_path: Path) -> None:
    root = UPath("memory://apoe-test/store")
    formats.save(_matrix(), root / "genotypes" / "chr1")
    formats.save(pd.DataFrame({"y": [3]}), root / "covariates")
    assert formats.load(root / "covariates")["y"].tolist() == [3]
    np.testing.assert_array_equal(formats.load(root / "genotypes" / "chr1").haplotypes,
                                  _matrix().haplotypes)


def test_io_manager_paths_and_multi_partition_loads(tmp_path: Path) -> None:
    genes = dg.StaticPartitionsDefinition(["APOE", "TOMM40"])

    @dg.asset(partitions_def=genes)
    def per_gene(context: dg.AssetExecutionContext) -> pd.DataFrame:
        return pd.DataFrame({"gene": [context.partition_key]})

    @dg.asset(deps=[])
    def all_genes(per_gene: dict[str, pd.DataFrame]) -> pd.DataFrame:
        return pd.concat(per_gene.values())

    storage = AssetStorage(root=str(tmp_path))
    with dg.instance_for_test() as instance:
        for key in genes.get_partition_keys():
            assert dg.materialize([per_gene], partition_key=key, instance=instance,
                                  resources={"io_manager": storage}).success
        result = dg.materialize([per_gene, all_genes], selection=[all_genes],
                                instance=instance, resources={"io_manager": storage})
    assert result.success
    assert (tmp_path / "per_gene" / "APOE.parquet").exists()
    assert sorted(pd.read_parquet(tmp_path / "all_genes.parquet")["gene"]) == ["APOE", "TOMM40"]


def test_an_input_allowed_missing_loads_as_none(tmp_path: Path) -> None:
    """An input declared with ``ALLOW_MISSING`` loads a never-stored partition as None (and
    leaves it out of a load of several); without it, the same load fails naming the path.
    Catches the flag being ignored either way."""
    genes = dg.StaticPartitionsDefinition(["APOE", "TOMM40"])

    @dg.asset(partitions_def=genes)
    def per_gene(context: dg.AssetExecutionContext) -> pd.DataFrame:
        return pd.DataFrame({"gene": [context.partition_key]})

    @dg.asset(partitions_def=genes, ins={"per_gene": dg.AssetIn(metadata={ALLOW_MISSING: True})})
    def optional_one(per_gene: pd.DataFrame | None) -> dict:
        return {"missing": per_gene is None}

    @dg.asset(ins={"per_gene": dg.AssetIn(metadata={ALLOW_MISSING: True})})
    def optional_all(per_gene: dict) -> dict:
        return {"loaded": sorted(per_gene)}

    @dg.asset(partitions_def=genes)
    def required_one(per_gene: pd.DataFrame) -> dict:
        return {"rows": len(per_gene)}

    storage = {"io_manager": AssetStorage(root=str(tmp_path))}
    assets = [per_gene, optional_one, optional_all, required_one]
    with dg.instance_for_test() as instance:
        assert dg.materialize(assets, selection=[per_gene], partition_key="APOE",
                              instance=instance, resources=storage).success
        for key in ("APOE", "TOMM40"):
            assert dg.materialize(assets, selection=[optional_one], partition_key=key,
                                  instance=instance, resources=storage).success
        assert dg.materialize(assets, selection=[optional_all], instance=instance,
                              resources=storage).success
        failed = dg.materialize(assets, selection=[required_one], partition_key="TOMM40",
                                instance=instance, resources=storage, raise_on_error=False)
    def stored(name: str) -> dict:
        return json.loads((tmp_path / f"{name}.json").read_text())

    assert stored("optional_one/APOE") == {"missing": False}
    assert stored("optional_one/TOMM40") == {"missing": True}
    assert stored("optional_all") == {"loaded": ["APOE"]}
    assert not failed.success
    assert "nothing stored at" in failure_message([failed])
    assert "per_gene/TOMM40" in failure_message([failed])


def test_figures_are_stored_beside_their_table(tmp_path: Path) -> None:
    """An asset returning ``WithFigures`` stores the table where it always would and each PNG
    as ``<partition>.<name>.png`` beside it, the path in the metadata; downstream loads the
    table alone. Catches figures written elsewhere than the metadata says, or handed on."""
    genes = dg.StaticPartitionsDefinition(["APOE"])
    image = b"\x89PNG\r\n\x1a\n" + bytes(range(32))

    @dg.asset(partitions_def=genes)
    def plotted(context: dg.AssetExecutionContext) -> WithFigures:
        return WithFigures(pd.DataFrame({"gene": [context.partition_key]}), {"scatter": image})

    @dg.asset(partitions_def=genes)
    def reader(plotted: pd.DataFrame) -> dict:
        assert isinstance(plotted, pd.DataFrame)
        return {"rows": len(plotted)}

    with dg.instance_for_test() as instance:
        result = dg.materialize([plotted, reader], partition_key="APOE", instance=instance,
                                resources={"io_manager": AssetStorage(root=str(tmp_path))})
    assert result.success, failure_message([result])
    [event] = [e for e in result.get_asset_materialization_events()
               if e.asset_key == dg.AssetKey("plotted")]
    stored = tmp_path / "plotted" / "APOE.scatter.png"
    assert event.materialization.metadata["scatter_file"].value == str(stored)
    assert stored.read_bytes() == image
    assert pd.read_parquet(tmp_path / "plotted" / "APOE.parquet")["gene"].tolist() == ["APOE"]
    assert json.loads((tmp_path / "reader" / "APOE.json").read_text()) == {"rows": 1}


def test_figures_of_a_run_over_several_partitions_are_stored_per_partition(tmp_path: Path
                                                                           ) -> None:
    """A run over a partition range returning ``ByPartition`` of ``WithFigures``: each
    partition's table and PNGs are stored exactly where a one-partition run would store them,
    and each partition's materialisation names its own files (``path``, ``<name>_file``);
    without a step (a bare output context) the paths go to the output's metadata by partition.
    Catches figures dropped, written for one partition only, or under another's name."""
    genes = dg.StaticPartitionsDefinition(["APOE", "TOMM40"])
    images = {g: b"\x89PNG\r\n\x1a\n" + g.encode() * 8 for g in genes.get_partition_keys()}

    @dg.asset(partitions_def=genes)
    def plotted(context: dg.AssetExecutionContext) -> ByPartition:
        return ByPartition({key: WithFigures(pd.DataFrame({"gene": [key]}),
                                             {"scatter": images[key]})
                            for key in context.partition_keys})

    storage = AssetStorage(root=str(tmp_path))
    with dg.instance_for_test() as instance:
        result = dg.materialize([plotted], instance=instance, resources={"io_manager": storage},
                                tags={"dagster/asset_partition_range_start": "APOE",
                                      "dagster/asset_partition_range_end": "TOMM40"})
    assert result.success, failure_message([result])
    events = {e.partition: e.materialization.metadata
              for e in result.get_asset_materialization_events()}
    assert sorted(events) == ["APOE", "TOMM40"]
    for gene, metadata in events.items():
        table, figure = (tmp_path / "plotted" / f"{gene}.parquet",
                         tmp_path / "plotted" / f"{gene}.scatter.png")
        assert metadata["path"].value == str(table)
        assert metadata["scatter_file"].value == str(figure)
        assert metadata["stored_bytes"].value == table.stat().st_size
        assert figure.read_bytes() == images[gene]
        assert pd.read_parquet(table)["gene"].tolist() == [gene]
    assert not list((tmp_path / "plotted").glob(".*"))  # no scratch file left

    bare = dg.build_output_context(asset_key="bare", asset_partitions_def=genes,
                                   asset_partition_key_range=dg.PartitionKeyRange("APOE",
                                                                                  "TOMM40"))
    storage.handle_output(bare, ByPartition({g: WithFigures(pd.DataFrame({"gene": [g]}),
                                                            {"scatter": images[g]})
                                             for g in images}))
    logged = bare.get_logged_metadata()
    for gene in images:
        figure = tmp_path / "bare" / f"{gene}.scatter.png"
        assert logged[f"{gene}/scatter_file"].value == str(figure)
        assert figure.read_bytes() == images[gene]
