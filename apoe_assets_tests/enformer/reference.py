"""Where TensorFlow's reference files live (``../shared/reference/enformer`` beside the repo,
or ``$ENFORMER_REFERENCE_DIR``); tests that need them skip when absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REFERENCE_DIR = Path(os.environ.get(
    "ENFORMER_REFERENCE_DIR",
    Path(__file__).resolve().parents[2].parent / "shared" / "reference" / "enformer"))


def reference_file(name: str) -> Path:
    """The reference file ``name``, or skip the test."""
    path = REFERENCE_DIR / name
    if not path.is_file():
        pytest.skip(f"reference file {path} not present (set ENFORMER_REFERENCE_DIR)")
    return path
