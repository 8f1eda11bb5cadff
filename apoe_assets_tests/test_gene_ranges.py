"""A run over a range of gene partitions stores and reports exactly what one run per gene does,
for ``gene_locus``, ``personal_sequences``, the genotype models (``prs_scores``,
``prs_weights``, ``prs_fold_scores``: a range fits its genes in one worker process per core),
``gene_models`` and the multi-asset ``eqtl_overlap``/``eqtl_overlap_variants``, materialised for
real on a demo copy of two genes.

The upstream (genotypes, scans, SNP effects; no Enformer predictions, which ``gene_models``
may do without) is built once and copied to a second storage root; the target assets are then
made one gene a run in the first root and in one range run in the second.
Catches an asset that computes or stores one gene's result under another's key (a loop reusing
a gene, an input taken for the wrong partition), a range run that loses a gene's figures or
gives genes shared or swapped metadata, and a one-gene run that no longer stores or reports
what it did.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import yaml

from apoe_assets.definitions import build_definitions
from apoe_assets.genomics.personal import SequenceFolder
from apoe_assets.materialize import QUIET, materialize_all
from apoe_assets.study import load_study
from apoe_assets_tests.conftest import failure_message
from apoe_assets_tests.studies import demo_copy
from apoe_assets_tests.test_gene_runs import RANGE_END, RANGE_START

GENES = ["NECTIN2", "RELB"]
"""Two demo genes (their study's partition order), each with eQTL and model SNPs."""

TABLES = ["gene_locus", "prs_scores", "prs_weights", "prs_fold_scores", "gene_models",
          "eqtl_overlap", "eqtl_overlap_variants"]
TARGETS = dg.AssetSelection.assets(*TABLES, "personal_sequences")
GENE_UPSTREAM = dg.AssetSelection.assets("cis_eqtl", "snp_effects")
"""The targets' gene-partitioned inputs (``enformer_predictions`` left out: ``gene_models``
does without), made in one range run."""
CHEAP = {"cis_window": 20_000, "eqtl": {"permutations": 0}, "overlap": {"permutations": 100},
         "snp_effects": {"tracks": ["CHIP:H3K27me3"], "indels": False}}
"""What keeps the upstream cheap: a ±20 kb cis window (it still spans the ±12 kb model
window), no gene-level eQTL permutations (the overlap reads the nominal scan), 100 circular
shifts, one SAD track, SNVs only (scored incrementally)."""
FIGURES = ["scatter_plot", "overlap_plot"]
"""The figures ``eqtl_overlap`` stores beside its table."""
RTOL = 1e-10
"""Relative tolerance of stored floats: both runs do the same arithmetic on the same inputs,
so only a change of summation order could move a last bit."""
VOLATILE = {"path", "folder", "stored_bytes", "seconds", "haplotypes_per_second",
            "mlflow_runs", *(f"{f}_file" for f in FIGURES)}
"""Metadata that differs between two runs of the same gene (paths under another root, times,
MLflow run IDs); the paths are checked on their own."""


@dataclass(frozen=True)
class Runs:
    """The two storage roots and each root's materialisation metadata by (asset, gene)."""

    per_gene: Path
    ranged: Path
    per_gene_metadata: dict[tuple[str, str], dict]
    ranged_metadata: dict[tuple[str, str], dict]
    ranged_events: int


def _metadata(results: list[dg.ExecuteInProcessResult]) -> dict[tuple[str, str], dict]:
    return {(e.asset_key.to_user_string(), e.partition): {
        k: getattr(v, "value", v) for k, v in e.materialization.metadata.items()}
        for r in results for e in r.get_asset_materialization_events()}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    folder = tmp_path_factory.mktemp("ranges")
    one = demo_copy(folder, genes=GENES, genes_per_run=1, **CHEAP)  # make demo: one a run
    ranged = folder / "ranged.yaml"  # the same study and MLflow store, another storage root
    ranged.write_text(yaml.safe_dump({**yaml.safe_load(one.read_text()),
                                      "genes_per_run": len(GENES),
                                      "storage_root": str(folder / "ranged")}, sort_keys=False))
    roots = [Path(load_study(s).storage_root) for s in (one, ranged)]
    defs = [build_definitions(load_study(s)) for s in (one, ranged)]
    order = load_study(one).gene_table["partition_key"].tolist()

    def ranged_run(defs: dg.Definitions, selection: dg.AssetSelection
                   ) -> dg.ExecuteInProcessResult:
        result = defs.resolve_implicit_global_asset_job_def().execute_in_process(
            instance=instance, asset_selection=list(selection.resolve(defs.resolve_asset_graph())),
            tags={RANGE_START: order[0], RANGE_END: order[-1]}, run_config=QUIET,
            raise_on_error=False)
        assert result.success, failure_message([result])
        return result

    with dg.instance_for_test() as instance:
        built = materialize_all(defs[0], instance, report=lambda _: None,
                                selection=GENE_UPSTREAM.upstream() - GENE_UPSTREAM)
        assert all(r.success for r in built), failure_message(built)
        ranged_run(defs[0], GENE_UPSTREAM)  # the scans and SNP effects of both genes
        shutil.copytree(roots[0], roots[1])
        per_gene = materialize_all(defs[0], instance, report=lambda _: None, selection=TARGETS)
        assert all(r.success for r in per_gene), failure_message(per_gene)
        assert len(per_gene) == len(GENES)  # one run a gene
        result = ranged_run(defs[1], TARGETS)
    checks = result.get_asset_check_evaluations()  # tss_centred, over both genes at once
    assert checks and all(c.passed for c in checks)
    return Runs(roots[0], roots[1], _metadata(per_gene), _metadata([result]),
                len(result.get_asset_materialization_events()))


@pytest.mark.parametrize("asset", TABLES)
def test_stored_tables_agree_per_gene(runs: Runs, asset: str) -> None:
    for gene in GENES:
        one, ranged = (pd.read_parquet(root / asset / f"{gene}.parquet")
                       for root in (runs.per_gene, runs.ranged))
        pd.testing.assert_frame_equal(ranged, one, rtol=RTOL, atol=0)


def test_sequences_are_byte_identical_per_gene(runs: Runs) -> None:
    for gene in GENES:
        one, ranged = (SequenceFolder(root / "personal_sequences" / f"{gene}.sequences")
                       for root in (runs.per_gene, runs.ranged))
        names = sorted(p.name for p in one.path.iterdir())
        assert names == sorted(p.name for p in ranged.path.iterdir())
        assert one.fasta.name in names
        for name in names:
            assert (ranged.path / name).read_bytes() == (one.path / name).read_bytes(), (gene,
                                                                                          name)


def test_overlap_figures_are_stored_per_gene(runs: Runs) -> None:
    """Each gene's plots beside its own table in the range run, named in its own metadata."""
    for gene in GENES:
        for name in FIGURES:
            ranged = runs.ranged / "eqtl_overlap" / f"{gene}.{name}.png"
            assert runs.ranged_metadata[("eqtl_overlap", gene)][f"{name}_file"] == str(ranged)
            assert ranged.read_bytes() == (runs.per_gene / "eqtl_overlap"
                                           / f"{gene}.{name}.png").read_bytes()


def _agree(ranged: object, one: object) -> bool:
    """Equal, floats within :data:`RTOL` (a range fits its genotype models in worker processes
    with one BLAS thread each, which may sum in another order than a one-gene run)."""
    if isinstance(ranged, float) and isinstance(one, float):
        return math.isclose(ranged, one, rel_tol=RTOL) or (math.isnan(ranged)
                                                          and math.isnan(one))
    return ranged == one


def test_each_gene_has_its_own_materialisation_and_metadata(runs: Runs) -> None:
    """One event per asset and gene in the range run, whose metadata equals that gene's own
    one-gene run (bar times, run IDs and paths under the other root); the range run adds only
    the run-wide ``folder``. Each gene's ``path`` is its own file."""
    wanted = {(a, g) for a in [*TABLES, "personal_sequences"] for g in GENES}
    assert set(runs.ranged_metadata) == set(runs.per_gene_metadata) == wanted
    assert runs.ranged_events == len(wanted)
    for (asset, gene), one in runs.per_gene_metadata.items():
        ranged = runs.ranged_metadata[(asset, gene)]
        assert set(ranged) == set(one) | {"folder"}, (asset, gene)
        differing = [k for k in set(one) - VOLATILE if not _agree(ranged[k], one[k])]
        assert not differing, (asset, gene, {k: (ranged[k], one[k]) for k in differing})
        for metadata, root in ((one, runs.per_gene), (ranged, runs.ranged)):
            assert Path(metadata["path"]).parent == root / asset
            assert Path(metadata["path"]).name.startswith(f"{gene}.")
