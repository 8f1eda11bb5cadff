"""Shared fixtures: a tiny study on disk and a helper that materialises all of it."""

from __future__ import annotations

import hashlib
import warnings
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from apoe_assets.definitions import build_definitions
from apoe_assets.materialize import materialize_all
from apoe_assets.study import load_study
from apoe_assets_tests.requirements import NOT_COMPARED
from apoe_assets_tests.studies import TinyStudy, write_tiny_study

warnings.filterwarnings("ignore", category=dg.PreviewWarning)
warnings.filterwarnings("ignore", category=dg.BetaWarning)


class NotComparedSummary:
    """Collects the skips that mean a peer comparison did not run, and lists them as the very
    last lines of the run, after pytest's own summary line."""

    def __init__(self) -> None:
        self.reasons: Counter[str] = Counter()

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.skipped and isinstance(report.longrepr, tuple):
            reason = report.longrepr[2].removeprefix("Skipped: ")
            if reason.startswith(NOT_COMPARED):
                self.reasons[reason.removeprefix(NOT_COMPARED).strip()] += 1

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        if not self.reasons or reporter is None:
            return
        tests = sum(self.reasons.values())
        reporter.write_sep("!", f"NOT COMPARED HERE: {tests} peer comparisons skipped",
                           yellow=True, bold=True)
        for reason, count in sorted(self.reasons.items()):
            reporter.write_line(f"not compared here ({count} test{'s' * (count > 1)}): {reason}")


LONG_FIRST = ("other_cpus", "e2e", "slow")
"""Markers of the longest tests: their files are scheduled first (in this order), so that the
xdist workers of `make test` finish at about the same time."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        return min((i for i, m in enumerate(LONG_FIRST) if item.get_closest_marker(m)),
                   default=len(LONG_FIRST))

    first = {}
    for item in items:
        first[item.path] = min(first.get(item.path, len(LONG_FIRST)), rank(item))
    items.sort(key=lambda item: first[item.path])  # stable: each file keeps its order


def pytest_configure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput"):  # the controller of a pytest-xdist run, or a plain one
        config.pluginmanager.register(NotComparedSummary(), "not_compared_summary")


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
