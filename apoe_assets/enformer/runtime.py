"""Load converted Enformer weights into a ready :class:`Predictor` (what a run needs once).

A real study needs the published weights; without them the error says how to obtain and
convert them (:data:`OFFICIAL_WEIGHTS_HELP`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

# JAX and Haiku are heavy: load_predictor imports them on first use, so that loading the code
# location (which imports this module for its errors) stays fast
if TYPE_CHECKING:
    from apoe_assets.enformer.inference import DeviceKind, Precision, Predictor

OFFICIAL_REPOSITORY = "EleutherAI/enformer-official-rough"
"""Hugging Face repository of the official weights (DeepMind's, ported to PyTorch)."""

OFFICIAL_WEIGHTS_HELP = f"""\
To use the published Enformer (Avsec et al. 2021), download and convert its weights once:
  1. pip install enformer-pytorch   (or this project's dev extra)
  2. python -c "from enformer_pytorch import from_pretrained; \
from_pretrained('{OFFICIAL_REPOSITORY}').save_pretrained('enformer-official', \
safe_serialization=False)"
     (or: huggingface-cli download {OFFICIAL_REPOSITORY} --local-dir enformer-official)
  3. python -m apoe_assets.enformer.convert enformer-official enformer.safetensors
  4. set `enformer: weights: enformer.safetensors` in the study file (or the Enformer
     resource's `weights`)."""


class MissingWeightsError(FileNotFoundError):
    """No (or absent) converted weights; the message says how to get them."""


def require_weights(path: str | os.PathLike[str] | None) -> Path:
    """``path`` as a ``Path`` if the file exists, else :class:`MissingWeightsError` with the
    steps to obtain and convert the official weights."""
    if path is None or str(path) == "":
        raise MissingWeightsError(f"no Enformer weights are configured.\n{OFFICIAL_WEIGHTS_HELP}")
    path = Path(path)
    if not path.is_file():
        raise MissingWeightsError(f"Enformer weights {path} not found.\n{OFFICIAL_WEIGHTS_HELP}")
    return path


def load_predictor(weights: str | os.PathLike[str] | None, *, head: str = "human",
                   tracks: Sequence[int] | np.ndarray | None = None,
                   bins: Sequence[int] | np.ndarray | None = None,
                   device: DeviceKind = "auto", batch_size: int = 1,
                   precision: Precision = "float32", reverse_complement: bool = False,
                   compilation_cache_dir: str | os.PathLike[str] | None = None) -> Predictor:
    """A :class:`Predictor` over the converted weights file ``weights`` on ``device``'s local
    devices (all of them, data-parallel)."""
    from apoe_assets.enformer.convert import load_params
    from apoe_assets.enformer.inference import Predictor, select_devices

    devices = select_devices(device)
    config, params = load_params(require_weights(weights))
    return Predictor(config, params, head=head, tracks=tracks, bins=bins,
                     batch_size=batch_size, precision=precision,
                     reverse_complement=reverse_complement, devices=devices,
                     compilation_cache_dir=compilation_cache_dir)

