"""Enformer predictions of one gene's personal haplotypes, and the per-sample feature.

Identical haplotypes share a hash, so predictions are kept once per distinct sequence
(``values``) and each haplotype points at its row; the per-sample expression feature is the
selected tracks summed over the bins at the TSS, the two haplotypes combined by a study setting.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from apoe_assets.enformer.features import (
    HaplotypeCombination,
    combine_haplotypes,
    haplotype_feature,
)
from apoe_assets.enformer.haplotypes import SEQUENCE_KEY, stream_model_inputs, unique_keys
from apoe_assets.genomics.personal import SequenceFolder, sequence_hash

if TYPE_CHECKING:  # heavy (JAX): annotations only, so that loading the code location stays fast
    from apoe_assets.enformer.inference import Predictor, ProgressCallback

PREDICTIONS_VERSION = "1"
"""Code version of the ``enformer_predictions`` outputs and features: bump it when they change
for the same inputs."""

HAPLOTYPE_COLUMNS = ["record", "sample", "haplotype", "hash", "row"]
FEATURE_COLUMNS = ["h1", "h2", "feature"]


@dataclass(frozen=True)
class GenePredictions:
    """Predictions of every haplotype of one gene (``values`` hold each distinct one once)."""

    haplotypes: pd.DataFrame
    """One row per haplotype: ``record``, ``sample``, ``haplotype`` (1/2), ``hash``, ``row``
    (its row of ``values``)."""
    values: np.ndarray
    """float32 ``[distinct sequences, bins, tracks]``."""
    tracks: pd.DataFrame
    """``index`` (the track's row in the model head) and ``description``, one per track."""
    bins: np.ndarray
    """Output-bin indices of the ``values`` bins axis."""
    tss_bins: np.ndarray
    """Output-bin indices summed for the feature (must be among ``bins``)."""
    features: pd.DataFrame
    """Per sample (index ``sample``): ``h1``, ``h2`` (per-haplotype feature) and ``feature``."""
    combination: str = "mean"

    def per_haplotype(self) -> np.ndarray:
        """``[haplotypes, bins, tracks]`` in ``haplotypes`` row order."""
        return self.values[self.haplotypes["row"].to_numpy()]

    def write(self, folder: Path) -> None:
        """A folder: ``values.npy``, ``haplotypes.parquet``, ``tracks.parquet``,
        ``features.parquet`` and ``bins.json``."""
        folder.mkdir(parents=True)
        with (folder / "values.npy").open("wb") as handle:
            np.save(handle, self.values, allow_pickle=False)
        self.haplotypes.to_parquet(folder / "haplotypes.parquet", index=False)
        self.tracks.to_parquet(folder / "tracks.parquet", index=False)
        self.features.to_parquet(folder / "features.parquet")
        (folder / "bins.json").write_text(json.dumps({
            "bins": self.bins.tolist(), "tss_bins": self.tss_bins.tolist(),
            "combination": self.combination}))

    @classmethod
    def read(cls, folder: Path) -> GenePredictions:
        """Read a folder written by :meth:`write` (``values`` memory-mapped)."""
        layout = json.loads((folder / "bins.json").read_text())
        return cls(
            haplotypes=pd.read_parquet(folder / "haplotypes.parquet"),
            values=np.load(folder / "values.npy", mmap_mode="r", allow_pickle=False),
            tracks=pd.read_parquet(folder / "tracks.parquet"),
            bins=np.asarray(layout["bins"], dtype=np.int64),
            tss_bins=np.asarray(layout["tss_bins"], dtype=np.int64),
            features=pd.read_parquet(folder / "features.parquet"),
            combination=layout["combination"],
        )


def distinct_sequences(manifest: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Haplotype table with each record's ``row`` among the distinct model inputs, and one
    representative record per distinct input, in first-seen order.

    A model input is identified by the content ``hash`` and, where the manifest has it, the
    ``tss_index`` it is centred on (the same sequence centred elsewhere is another input).
    """
    key = [c for c in SEQUENCE_KEY if c in manifest.columns]
    if "hash" not in key:
        raise ValueError("the manifest has no hash column (rebuild personal_sequences)")
    _, rows = unique_keys(list(zip(*(manifest[c].tolist() for c in key), strict=True)))
    haplotypes = manifest.assign(row=rows)
    first = haplotypes.drop_duplicates("row")
    return haplotypes[HAPLOTYPE_COLUMNS].reset_index(drop=True), first["record"].tolist()


def distinct_inputs(folder: SequenceFolder, records: Sequence[str], length: int
                    ) -> tuple[list[str], np.ndarray]:
    """``(representatives, inverse)``: one record per distinct model input (the haplotype
    centred on its TSS and cut to ``length``), first-seen order, and per record its position
    among them. Haplotypes that differ only outside the model window share an input."""
    hashes = [sequence_hash(x) for x in stream_model_inputs(folder, records, length)]
    first, inverse = unique_keys(hashes)
    return [records[i] for i in first], inverse


def predict_gene(predictor: Predictor, folder: SequenceFolder, tracks: pd.DataFrame,
                 tss: np.ndarray, combination: HaplotypeCombination = "mean",
                 bins: np.ndarray | None = None, progress: ProgressCallback | None = None
                 ) -> GenePredictions:
    """Predict every distinct model input of ``folder`` once (streamed from the FASTA) and
    assemble the per-sample feature over the ``tss`` bins.

    Records are first grouped by the manifest's hashes, then by the content of their model
    input. ``tracks`` holds ``index`` (head rows) and ``description``; ``bins`` default to all.
    """
    length = predictor.config.sequence_length
    haplotypes, by_hash = distinct_sequences(folder.manifest())
    records, inverse = distinct_inputs(folder, by_hash, length)
    haplotypes = haplotypes.assign(row=inverse[haplotypes["row"].to_numpy()])
    bins = np.arange(predictor.config.target_length) if bins is None else np.asarray(bins)
    values = predictor.predict(stream_model_inputs(folder, records, length), progress,
                               tracks=tracks["index"].to_numpy(), bins=bins, total=len(records))
    return assemble(haplotypes, values, tracks, bins, tss, combination)


def assemble(haplotypes: pd.DataFrame, values: np.ndarray, tracks: pd.DataFrame,
             bins: np.ndarray, tss_bins: np.ndarray,
             combination: HaplotypeCombination = "mean") -> GenePredictions:
    """Build :class:`GenePredictions` and the per-sample feature from distinct-sequence
    ``values`` ``[distinct, bins, tracks]``."""
    bins = np.asarray(bins, dtype=np.int64)
    tss_bins = np.asarray(tss_bins, dtype=np.int64)
    position = {b: i for i, b in enumerate(bins.tolist())}
    absent = [b for b in tss_bins.tolist() if b not in position]
    if absent:
        raise ValueError(f"TSS bins {absent} are not among the predicted bins")
    if values.shape[0] != haplotypes["row"].max() + 1 or values.shape[2] != len(tracks):
        raise ValueError(f"values of shape {values.shape} do not fit {len(tracks)} tracks and "
                         f"{haplotypes['row'].max() + 1} distinct sequences")
    at_tss = haplotype_feature(values[:, [position[b] for b in tss_bins.tolist()]])
    per_record = pd.Series(at_tss[haplotypes["row"].to_numpy()], index=haplotypes.index)
    wide = (haplotypes.assign(value=per_record)
            .pivot(index="sample", columns="haplotype", values="value"))
    if list(wide.columns) != [1, 2] or wide.isna().any().any():
        raise ValueError("every sample needs exactly haplotypes 1 and 2")
    samples = list(dict.fromkeys(haplotypes["sample"]))
    wide = wide.loc[samples]
    features = pd.DataFrame({"h1": wide[1], "h2": wide[2]}, index=pd.Index(samples, name="sample"))
    features["feature"] = combine_haplotypes(features[["h1", "h2"]].to_numpy(), combination)
    return GenePredictions(haplotypes, np.asarray(values, dtype=np.float32), tracks, bins,
                           tss_bins, features, combination)
