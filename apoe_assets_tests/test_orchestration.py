"""Schedules, sensors and automation on a real (temporary) instance with some partitions built.

What these catch: a schedule that requests fresh partitions again or misses missing ones; runs
that do not follow the backfill policy (genes needing the same assets in contiguous ranges of
at most ``genes_per_run``); a gene run launched while its chromosome's genotypes are stale; a
changed input file that marks nothing, or the wrong partitions, out of date; a sensor that
requests runs when nothing changed; the cheap assets left without automation or Enformer given
some.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pysam
import pytest
import yaml
from dagster._core.definitions.data_version import StaleStatus

from apoe_assets.definitions import build_definitions
from apoe_assets.orchestration.automation import (
    CHEAP_ASSETS,
    LOCUS_JOB,
    OBSERVE_JOB,
    RANGE_END,
    RANGE_START,
    gene_assets,
    gene_run_requests,
)
from apoe_assets.orchestration.freshness import Freshness, batches, downstream_partitions
from apoe_assets.partitions import study_partitions
from apoe_assets.study import load_study
from apoe_assets_tests.studies import demo_copy

GENES = ["TOMM40", "APOE", "APOC1"]
"""In TSS order, as the gene partitions are."""
BUILT = ["APOE", "APOC1"]
TICK = datetime(2026, 12, 7, 3, 0, tzinfo=UTC)
SAMPLES = 24


def test_batches_are_contiguous_ranges_of_at_most_size() -> None:
    order = list("ABCDEFGHIJ")
    assert batches(["A", "B", "C", "E", "F", "J"], order, 2) == [["A", "B"], ["C"], ["E", "F"],
                                                                ["J"]]
    assert batches(["J", "A"], order, 10) == [["A"], ["J"]]
    assert batches([], order, 3) == []


def test_a_changed_file_reaches_exactly_what_is_built_from_it() -> None:
    """Through the demo graph's partition mappings: the expression file reaches the models (and
    the locus summaries, which report expression) but not the genotypes, personal sequences or
    Enformer; the genotype file of chr19 reaches every gene's sequences, not the expression."""
    defs = build_definitions(load_study())
    graph = defs.resolve_asset_graph()
    genes = study_partitions(load_study()).genes.get_partition_keys()
    touched = downstream_partitions(graph, [(dg.AssetKey("expression_file"), None)])
    keys = {t.asset_key.to_user_string() for t in touched}
    assert {"expression", "cis_eqtl", "gene_models", "model_comparison", "gene_locus"} <= keys
    assert not keys & {"personal_sequences", "enformer_predictions", "snp_effects",
                       "genotypes"}
    touched = downstream_partitions(graph, [(dg.AssetKey("genotype_file"), "chr19")])
    sequences = {t.partition_key for t in touched
                 if t.asset_key == dg.AssetKey("personal_sequences")}
    assert sequences == set(genes)
    assert dg.AssetKey("expression") not in {t.asset_key for t in touched}


def test_cheap_assets_are_automated_and_enformer_is_not() -> None:
    graph = build_definitions(load_study()).resolve_asset_graph()
    automated = {k.to_user_string() for k in graph.materializable_asset_keys
                 if graph.get(k).automation_condition is not None}
    assert automated == set(CHEAP_ASSETS)


def _study(folder: Path) -> Path:
    """Three demo genes, a few samples, and the genotype VCF copied (the test edits it)."""
    demo = load_study()
    vcf = folder / "chr19.vcf.gz"
    shutil.copy(demo.genotype_file("chr19"), vcf)
    for index in (".tbi", ".csi"):
        if Path(f"{demo.genotype_file('chr19')}{index}").exists():
            shutil.copy(f"{demo.genotype_file('chr19')}{index}", f"{vcf}{index}")
    with pysam.VariantFile(str(vcf)) as handle:
        samples = list(handle.header.samples)[:SAMPLES]
    return demo_copy(folder, genes=GENES, samples=samples, genotypes=str(vcf))


def _rewrite_vcf(path: Path, flip: bool = False) -> None:
    """The file rewritten with one header line more; with ``flip`` also the first sample's
    genotype at the first record swapped between the two homozygotes (or set to ALT/ALT)."""
    copy = path.with_suffix(".tmp.gz")
    with pysam.VariantFile(str(path)) as source:
        header = source.header.copy()
        header.add_line("##apoe_assets_test=changed")
        with pysam.VariantFile(str(copy), "wz", header=header) as sink:
            for number, record in enumerate(source):
                if flip and number == 0:
                    sample = record.samples[0]
                    sample["GT"] = (0, 0) if sample["GT"] == (1, 1) else (1, 1)
                    sample.phased = True
                sink.write(record)
    copy.replace(path)
    pysam.tabix_index(str(path), preset="vcf", force=True)


def _materialise(defs: dg.Definitions, instance: dg.DagsterInstance, keys: list[str],
                 partition: str | None = None) -> None:
    job = defs.resolve_implicit_global_asset_job_def()
    result = job.execute_in_process(instance=instance, partition_key=partition,
                                    asset_selection=[dg.AssetKey(k) for k in keys],
                                    raise_on_error=False)
    assert result.success, [e.message for e in result.all_events if e.is_failure]


def _observe(defs: dg.Definitions, instance: dg.DagsterInstance) -> None:
    result = defs.resolve_job_def(OBSERVE_JOB).execute_in_process(instance=instance)
    assert result.success


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory):
    """An instance on which the inputs were observed, the cheap assets built, and the personal
    sequences of APOE and APOC1 (not TOMM40)."""
    study_file = _study(tmp_path_factory.mktemp("orchestration"))
    defs = build_definitions(load_study(study_file))
    with dg.instance_for_test() as instance:
        _observe(defs, instance)
        _materialise(defs, instance, ["reference_genome", "gene_annotation", "expression",
                                      "covariates", "cv_folds"])
        _materialise(defs, instance, ["genotypes"], "chr19")
        for gene in BUILT:
            _materialise(defs, instance, ["gene_locus", "personal_sequences"], gene)
        yield study_file, defs, instance


def _requests(result) -> list[dg.RunRequest]:
    return list(result.run_requests or [])


def _genes_of(request: dg.RunRequest, order: list[str]) -> list[str]:
    if request.partition_key:
        return [request.partition_key]
    first, last = order.index(request.tags[RANGE_START]), order.index(request.tags[RANGE_END])
    return order[first:last + 1]


def test_schedule_requests_exactly_the_missing_or_stale_gene_partitions(built) -> None:
    """TOMM40 needs every gene asset; APOE and APOC1 every one but the two built; nothing
    built is requested again. Every gene asset takes a range of genes a run (multi-run
    backfill policies, the demo's genes_per_run 12), so APOE and APOC1, needing the same
    assets and contiguous, share one run; so do all three genes for the scans and scores
    alone."""
    _, defs, instance = built
    graph = defs.resolve_asset_graph()
    parts = study_partitions(load_study(built[0]))
    order = parts.genes.get_partition_keys()
    assert order == GENES
    schedule = defs.resolve_schedule_def("refresh_stale_genes")
    with dg.build_schedule_context(instance=instance, scheduled_execution_time=TICK,
                                   repository_def=defs.get_repository_def()) as context:
        result = schedule.evaluate_tick(context)
    everything = set(gene_assets(graph, parts))
    built_keys = {dg.AssetKey("gene_locus"), dg.AssetKey("personal_sequences")}
    wanted = {("TOMM40",): everything, ("APOE", "APOC1"): everything - built_keys}
    got = {tuple(_genes_of(r, order)): set(r.asset_selection) for r in _requests(result)}
    assert got == wanted
    assert all(r.job_name in (None, LOCUS_JOB) for r in _requests(result))
    ranged = [dg.AssetKey(k) for k in ("cis_eqtl", "prs_scores", "prs_weights",
                                       "prs_fold_scores")]  # their upstream is all built
    assert all(graph.get(k).backfill_policy is not None for k in ranged)
    requests, waiting = gene_run_requests(Freshness(instance, graph), parts, ranged, order,
                                          "test", "tick")
    assert not waiting
    assert [(_genes_of(r, order), set(r.asset_selection)) for r in requests] == [
        (GENES, set(ranged))]


def test_a_changed_vcf_marks_its_genes_stale_and_the_sensor_requests_them(built) -> None:
    """The sensor notes nothing on its first ticks. A VCF rewritten with the same genotypes:
    the genotypes go stale (their file's fingerprint changed) and the sensor waits for them;
    rebuilt (as the cheap assets' automation would), they keep their content digest, so no
    gene is stale and nothing is requested. A VCF with one genotype changed: once the genotypes
    are rebuilt, the sequences of APOE and APOC1 (the genes built) are stale and requested in
    one run over both; TOMM40, never built, is the schedule's business, not this sensor's."""
    study_file, defs, instance = built
    sensor = defs.resolve_sensor_def("input_files_changed")
    repository = defs.get_repository_def()
    vcf = Path(load_study(study_file).genotype_file("chr19"))
    genotypes, sequences = dg.AssetKey("genotypes"), dg.AssetKey("personal_sequences")

    def tick(cursor: str | None):
        with dg.build_sensor_context(instance=instance, cursor=cursor,
                                     repository_def=repository) as context:
            result = sensor.evaluate_tick(context)
        return result, result.cursor

    def status(key: dg.AssetKey, partition: str) -> StaleStatus:
        return Freshness(instance, defs.resolve_asset_graph()).status(key, partition)

    result, cursor = tick(None)
    assert not _requests(result)
    result, cursor = tick(cursor)
    assert not _requests(result)  # nothing changed

    _rewrite_vcf(vcf)
    _observe(defs, instance)
    assert status(genotypes, "chr19") == StaleStatus.STALE
    result, cursor = tick(cursor)
    assert not _requests(result) and "waiting" in result.skip_message
    _materialise(defs, instance, ["genotypes"], "chr19")
    assert status(sequences, "APOE") == StaleStatus.FRESH  # same genotypes, same digest
    result, cursor = tick(cursor)
    assert not _requests(result)

    _rewrite_vcf(vcf, flip=True)
    _observe(defs, instance)
    result, cursor = tick(cursor)
    assert not _requests(result) and "waiting" in result.skip_message
    _materialise(defs, instance, ["genotypes"], "chr19")
    assert status(sequences, "APOE") == StaleStatus.STALE
    result, cursor = tick(cursor)
    requested = {tuple(_genes_of(r, GENES)): set(r.asset_selection) for r in _requests(result)}
    assert requested == {tuple(BUILT): {dg.AssetKey("gene_locus"), sequences}}
    result, _ = tick(cursor)
    assert not _requests(result)  # requested once


def test_all_genes_assets_wait_for_their_genes(built) -> None:
    _, defs, instance = built
    sensor = defs.resolve_sensor_def("refresh_all_genes_assets")
    with dg.build_sensor_context(instance=instance,
                                 repository_def=defs.get_repository_def()) as context:
        result = sensor.evaluate_tick(context)
    assert not _requests(result) and "out of date" in result.skip_message


def test_study_sets_the_crons(tmp_path: Path) -> None:
    study_file = demo_copy(tmp_path, orchestration={"refresh_cron": "0 5 * * *"})
    defs = build_definitions(load_study(study_file))
    assert defs.resolve_schedule_def("refresh_stale_genes").cron_schedule == "0 5 * * *"
    bad = demo_copy(tmp_path / "bad", orchestration={"refresh_cron": "every week"})
    with pytest.raises(ValueError, match="refresh_cron"):
        load_study(bad)
    assert yaml.safe_load(study_file.read_text())["orchestration"]
