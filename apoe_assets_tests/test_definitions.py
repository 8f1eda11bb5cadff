"""The code location loads from APOE_STUDY (or the demo), as Dagster's own CLI loads it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from apoe_assets.definitions import defs
from apoe_assets.study import DEMO_STUDY
from apoe_assets_tests.studies import TinyStudy

PROJECT = Path(__file__).resolve().parents[1]


def _validate(study: Path | None, home: Path) -> subprocess.CompletedProcess:
    """`dagster definitions validate` with ``APOE_STUDY`` set to ``study`` (or unset)."""
    home.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "APOE_STUDY"}
    if study is not None:
        env["APOE_STUDY"] = str(study)
    dagster = Path(sys.executable).with_name("dagster")
    return subprocess.run([str(dagster), "definitions", "validate", "-w", "workspace.yaml"],
                          cwd=PROJECT, env={**env, "DAGSTER_HOME": str(home)},
                          capture_output=True, text=True, timeout=300)


def test_definitions_follow_apoe_study(tiny: TinyStudy, monkeypatch: pytest.MonkeyPatch
                                       ) -> None:
    monkeypatch.setenv("APOE_STUDY", str(tiny.study))
    loaded = defs()
    assert isinstance(loaded, dg.Definitions)
    graph = loaded.resolve_asset_graph()
    genes = graph.get(dg.AssetKey("gene_locus")).partitions_def
    assert genes.get_partition_keys() == ["GENE_A", "GENE_B"]


def test_dagster_cli_validates_the_workspace(tiny: TinyStudy, tmp_path: Path) -> None:
    result = _validate(tiny.study, tmp_path / "home")
    assert result.returncode == 0, result.stdout + result.stderr
    broken = tiny.folder / "broken.yaml"
    broken.write_text(tiny.study.read_text().replace("window_length: 1024",
                                                     "window_length: wide"))
    result = _validate(broken, tmp_path / "home")
    assert result.returncode != 0
    assert "window_length" in result.stdout + result.stderr


def test_demo_study_validates(tmp_path: Path) -> None:
    assert DEMO_STUDY.exists()
    result = _validate(None, tmp_path / "home")
    assert result.returncode == 0, result.stdout + result.stderr
