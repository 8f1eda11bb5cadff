"""What the tests compare the project with, and how each comparison is enabled.

A test whose peer (a Debian tool, a Python package of the dev extra, a reference file from
outside the repository) is missing skips with a reason that starts with :data:`NOT_COMPARED`;
the run's last lines list every such reason (see ``conftest.py``), so a run that compared
nothing with the field's tools never looks like a full one.
"""

from __future__ import annotations

import importlib
import os
import shutil
from pathlib import Path
from types import ModuleType
from typing import NoReturn

import pytest

NOT_COMPARED = "not compared here:"
"""Prefix of every skip reason that means a peer comparison did not run."""
ENABLE_DEBIAN_PEERS = "`make peers` (as root or with sudo), or `make test`, which runs it"
ENABLE_PYTHON_PEERS = "`make test` (installs the dev extra: torch, enformer-pytorch, tensorqtl)"
REFERENCE_ENV = "APOE_REFERENCE_DIR"
REFERENCE_DIR = Path(os.environ.get(
    REFERENCE_ENV, Path(__file__).resolve().parents[1].parent / "shared" / "reference"))
"""Public reference files (see the README's Tests section): ``$APOE_REFERENCE_DIR``, else
``../shared/reference`` beside the repository, where CI has them."""


def _reason(what: str, enable: str) -> str:
    return f"{NOT_COMPARED} {what}; enable with {enable}"


def not_compared(what: str, enable: str) -> NoReturn:
    """Skip the current test (or module, at import) because the comparison ``what`` cannot
    run here."""
    pytest.skip(_reason(what, enable), allow_module_level=True)


def missing_tools(*tools: str) -> list[str]:
    """Those of ``tools`` that are not on PATH."""
    return [tool for tool in tools if shutil.which(tool) is None]


def require_tools(*tools: str) -> None:
    """Skip unless every one of the Debian ``tools`` is on PATH."""
    if missing := missing_tools(*tools):
        not_compared(f"{', '.join(missing)} not installed", ENABLE_DEBIAN_PEERS)


def needs_tools(*tools: str) -> pytest.MarkDecorator:
    """A mark that skips a test or module unless every one of ``tools`` is on PATH."""
    missing = missing_tools(*tools)
    return pytest.mark.skipif(bool(missing), reason=_reason(
        f"{', '.join(missing)} not installed", ENABLE_DEBIAN_PEERS))


def require_module(name: str) -> ModuleType:
    """The Python peer ``name`` (e.g. ``tensorqtl``), or skip."""
    try:
        return importlib.import_module(name)
    except ImportError as error:
        not_compared(f"Python package {name} not importable ({error})", ENABLE_PYTHON_PEERS)


def reference_file(relative: str) -> Path:
    """The reference file ``relative`` to :data:`REFERENCE_DIR`, or skip."""
    path = REFERENCE_DIR / relative
    if not path.is_file():
        not_compared(f"reference file {relative} not found in {REFERENCE_DIR}",
                     f"{REFERENCE_ENV}=<folder holding {relative}> (see the README's Tests "
                     "section for where the files come from)")
    return path
