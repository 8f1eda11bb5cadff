"""The capacity model: its arithmetic on a hand-made workload (every figure worked out below),
FLOP counts that include at least the stem convolution counted by hand, the distinct fraction
read from stored manifests, and the command on the demo study."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from apoe_assets.capacity import (
    EFFECT_BYTES_PER_TRACK,
    EFFECT_BYTES_PER_VARIANT,
    GENE_MODEL_SAMPLES,
    GENE_MODEL_SECONDS,
    GENE_MODEL_VARIANTS,
    SEQUENCE_BYTES_PER_BASE,
    ModelCost,
    Workload,
    main,
    measured_distinct_fraction,
    model_cost,
    plan,
)
from apoe_assets.enformer.model import EnformerConfig
from apoe_assets_tests.studies import demo_copy


def test_plan_arithmetic_by_hand() -> None:
    """10 genes × 100 samples, 30 % distinct: 60 forwards a gene; 50 ALTs a gene."""
    work = Workload(samples=100, genes=10, cis_variants=2 * GENE_MODEL_VARIANTS,
                    model_variants=50, distinct_fraction=0.3, tracks=2)
    cost = ModelCost(forward_flops=1e9, alt_flops=2.5e8, sequence_length=1000, output_bins=8)
    result = plan(work, cost, "GPU", flops_per_second=1e9, projected=True, device_price=4.0,
                  cpu_price=0.5)
    assert result.forwards == 600 and result.alts == 500
    flops = (600 + 10) * 1e9 + 500 * 2.5e8  # a reference pass per gene for the SNP effects
    assert result.flops == flops
    assert result.device_hours == pytest.approx(flops / 1e9 / 3600)
    gene_seconds = GENE_MODEL_SECONDS * 100 / GENE_MODEL_SAMPLES * 2
    assert result.gene_model_cpu_hours == pytest.approx(2 * 10 * gene_seconds / 3600)
    assert result.storage_bytes == pytest.approx({
        "personal_sequences": 200 * 10 * 1000 * SEQUENCE_BYTES_PER_BASE,
        "enformer_predictions": 600 * 8 * 2 * 4,
        "snp_effects": 500 * (EFFECT_BYTES_PER_VARIANT + 2 * EFFECT_BYTES_PER_TRACK)})
    assert result.cost == pytest.approx(result.device_hours * 4.0
                                        + result.gene_model_cpu_hours * 0.5)
    assert "GPU hours (projection)" in result.table()["quantity"].tolist()


def test_flops_cover_at_least_the_stem_and_an_alt_costs_less() -> None:
    """The stem convolution alone (width 15, 4 → C/2 channels, every base) is a lower bound
    of a forward; an ALT recomputes the tower over 12 bins only, so it costs less than a
    forward but more than the trunk's share alone."""
    config = EnformerConfig.tiny()
    cost = model_cost(config)
    stem = 2 * config.sequence_length * 15 * 4 * (config.channels // 2)
    assert cost.forward_flops > stem
    assert 0 < cost.alt_flops < cost.forward_flops
    assert cost.sequence_length == config.sequence_length


def test_distinct_fraction_from_stored_manifests(tmp_path: Path) -> None:
    """Two genes' manifests: 4 haplotypes with 2 distinct, then 2 with 2 → 4 of 6."""
    for gene, hashes in (("A", ["h1", "h1", "h2", "h2"]), ("B", ["h3", "h4"])):
        folder = tmp_path / "personal_sequences" / gene
        folder.mkdir(parents=True)
        pd.DataFrame({"record": [f"{gene}{i}" for i in range(len(hashes))],
                      "sample": [f"s{i // 2}" for i in range(len(hashes))],
                      "haplotype": [i % 2 + 1 for i in range(len(hashes))],
                      "hash": hashes}).to_parquet(folder / "manifest.parquet")
    assert measured_distinct_fraction(tmp_path) == pytest.approx(4 / 6)
    assert measured_distinct_fraction(tmp_path / "nothing") is None


def test_command_on_the_demo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The demo's 500 samples, planned for 24 genes on an H100 (projection) and on the CPU;
    nothing stored yet, so every haplotype counts as distinct."""
    main(["--study", str(demo_copy(tmp_path)), "--gpu", "h100", "--genes", "24"])
    out = capsys.readouterr().out
    assert "500 samples × 24 genes" in out
    assert "H100 hours (projection)" in out and "CPU (2 cores, measured at full size) hours" in out
    forwards = [line for line in out.splitlines() if "Enformer forward passes" in line]
    assert len(forwards) == 2 and f"{24 * math.ceil(2 * 500 * 1.0):,}" in forwards[0]
