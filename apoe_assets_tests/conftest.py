"""Shared fixtures: a tiny study on disk and a helper that materialises all of it."""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from apoe_assets.definitions import build_definitions
from apoe_assets.materialize import materialize_all
from apoe_assets.study import load_study
from apoe_assets_tests.studies import TinyStudy, write_tiny_study

warnings.filterwarnings("ignore", category=dg.PreviewWarning)
warnings.filterwarnings("ignore", category=dg.BetaWarning)


@pytest.fixture
def tiny(tmp_path: Path) -> TinyStudy:
    """A tiny two-gene, six-sample study in a temporary folder."""
    return write_tiny_study(tmp_path / "study")


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    """An ephemeral Dagster instance."""
    with dg.instance_for_test() as inst:
        yield inst


TINY_ASSETS = dg.AssetSelection.assets(
    "covariates", "cv_folds", "gene_locus", "personal_sequences").upstream()
"""What a tiny study can make: six samples are too few for any statistics."""


def materialise(study_file: Path, instance: dg.DagsterInstance,
                selection: dg.AssetSelection | None = TINY_ASSETS
                ) -> list[dg.ExecuteInProcessResult]:
    """Materialise the study's assets (default: :data:`TINY_ASSETS`), stopping at the first
    failure."""
    return materialize_all(build_definitions(load_study(study_file)), instance,
                           report=lambda _: None, selection=selection)


def snapshot(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder``, by relative path."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def failure_message(results: list[dg.ExecuteInProcessResult]) -> str:
    """The error text of the first failed step of the last run."""
    for event in results[-1].all_events:
        if event.is_step_failure:
            error = event.step_failure_data.error
            texts = []
            while error is not None:
                texts.append(error.message)
                error = error.cause
            return "\n".join(texts)
    raise AssertionError("no step failed")
