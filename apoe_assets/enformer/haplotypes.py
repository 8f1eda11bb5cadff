"""Enformer predictions for a folder of personal haplotypes (``personal_sequences``).

Each haplotype is re-centred on its own TSS at the model's input length
(:meth:`SequenceFolder.model_inputs`). Haplotypes with the same content hash and TSS index
have the same model input, so each unique one is read and predicted once and its prediction
shared by every row that has it.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from apoe_assets.genomics.personal import SequenceFolder

if TYPE_CHECKING:  # heavy (JAX): annotations only, so that loading the code location stays fast
    from apoe_assets.enformer.inference import Predictor, ProgressCallback

SEQUENCE_KEY = ("hash", "tss_index")
"""Manifest columns that together identify a model input."""
UNIQUE_COLUMN = "unique_sequence"
"""Column added to the manifest: the index of the row's unique model input."""
READ_CHUNK = 64
"""Haplotypes read from the FASTA at a time (bounds memory at full length)."""


def unique_keys(keys: Sequence[Hashable]) -> tuple[np.ndarray, np.ndarray]:
    """``(first, inverse)``: the index of each key's first occurrence (in order of first
    appearance) and, per input row, the position of its key among them."""
    position: dict[Hashable, int] = {}
    first: list[int] = []
    inverse = np.empty(len(keys), np.int64)
    for row, key in enumerate(keys):
        slot = position.get(key)
        if slot is None:
            slot = position[key] = len(first)
            first.append(row)
        inverse[row] = slot
    return np.asarray(first, np.int64), inverse


def stream_model_inputs(folder: SequenceFolder, records: Sequence[str], length: int
                        ) -> Iterator[bytes]:
    """The model inputs of ``records`` (TSS-centred, ``length`` bp), read ``READ_CHUNK`` at a
    time so that memory stays bounded at full length."""
    for start in range(0, len(records), READ_CHUNK):
        yield from folder.model_inputs(length, records=list(records[start:start + READ_CHUNK]))


def predict_folder(predictor: Predictor, folder: SequenceFolder,
                   tracks: Sequence[int] | np.ndarray | None = None,
                   bins: Sequence[int] | np.ndarray | None = None,
                   progress: ProgressCallback | None = None,
                   ) -> tuple[np.ndarray, pd.DataFrame]:
    """``(predictions, manifest)`` for every haplotype of ``folder``.

    ``predictions`` is float32 ``[haplotypes, bins, tracks]`` in manifest row order (tracks and
    bins default to the predictor's); ``manifest`` is the folder's manifest with
    ``unique_sequence`` added. Each unique model input is computed once; ``progress`` counts
    unique sequences.
    """
    manifest = folder.manifest()
    missing = [c for c in (*SEQUENCE_KEY, "record") if c not in manifest.columns]
    if missing:
        raise ValueError(f"{folder.path}: manifest lacks column(s) {missing}")
    keys = list(zip(*(manifest[c].tolist() for c in SEQUENCE_KEY), strict=True))
    first, inverse = unique_keys(keys)
    records = manifest["record"].to_numpy()[first].tolist()
    inputs = stream_model_inputs(folder, records, predictor.config.sequence_length)
    unique = predictor.predict(inputs, progress, tracks=tracks, bins=bins, total=len(records))
    return unique[inverse], manifest.assign(**{UNIQUE_COLUMN: inverse})
