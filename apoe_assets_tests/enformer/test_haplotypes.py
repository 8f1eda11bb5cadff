"""Predictions for a personal-sequences folder: TSS-centred inputs, each unique one once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from apoe_assets.enformer.haplotypes import UNIQUE_COLUMN, predict_folder
from apoe_assets.enformer.inference import Predictor
from apoe_assets.enformer.model import EnformerConfig, random_params
from apoe_assets.enformer.predictions import distinct_inputs, predict_gene
from apoe_assets.genomics.consensus import centre_on_tss
from apoe_assets.genomics.fasta_writer import IndexedFastaWriter
from apoe_assets.genomics.personal import FASTA_NAME, MANIFEST_NAME, SequenceFolder, sequence_hash
from apoe_assets_tests.float32 import assert_network_close, network_atol

CONFIG = EnformerConfig.tiny()
WINDOW = 7_000
TSS = 3_500


def _folder(path: Path) -> tuple[SequenceFolder, list[bytes], list[int]]:
    """Four samples over three distinct haplotypes: the reference, a SNP near the TSS, and a
    5-bp deletion upstream of it (which moves the TSS index)."""
    rng = np.random.default_rng(21)
    reference = rng.choice(np.frombuffer(b"ACGT", np.uint8), WINDOW).tobytes()
    snp = bytearray(reference)
    snp[TSS + 10] = ord("A") if reference[TSS + 10] != ord("A") else ord("C")
    deletion = reference[:TSS - 400] + reference[TSS - 395:]
    haplotypes = {"ref": (reference, TSS), "snp": (bytes(snp), TSS),
                  "del": (deletion, TSS - 5)}
    layout = [("s1", "ref", "ref"), ("s2", "snp", "ref"), ("s3", "del", "snp"),
              ("s4", "ref", "ref")]
    rows, sequences, tss = [], [], []
    path.mkdir(parents=True)
    with IndexedFastaWriter(path / FASTA_NAME) as writer:
        for sample, *pair in layout:
            for haplotype, kind in enumerate(pair, start=1):
                sequence, index = haplotypes[kind]
                record = f"{sample}_h{haplotype}"
                writer.add(record, sequence)
                rows.append(dict(sample=sample, haplotype=haplotype, record=record,
                                 length=len(sequence), tss_index=index,
                                 hash=sequence_hash(sequence)))
                sequences.append(sequence)
                tss.append(index)
    pd.DataFrame(rows).to_parquet(path / MANIFEST_NAME, index=False)
    return SequenceFolder(path), sequences, tss


def test_predict_folder(tmp_path: Path) -> None:
    folder, sequences, tss = _folder(tmp_path / "APOE.sequences")
    predictor = Predictor(CONFIG, random_params(CONFIG, 7), tracks=[9, 0, 4],
                          bins=[13, 14, 15], batch_size=2)
    done: list[tuple[int, int]] = []
    got, manifest = predict_folder(predictor, folder,
                                   progress=lambda k, n, _: done.append((k, n)))
    assert got.shape == (8, 3, 3) and len(manifest) == 8
    assert predictor.sequences_computed == 3 and done[-1] == (3, 3)
    assert manifest[UNIQUE_COLUMN].tolist() == [0, 0, 1, 0, 2, 1, 0, 0]
    length = CONFIG.sequence_length
    inputs = [centre_on_tss(s, i, length) for s, i in zip(sequences, tss, strict=True)]
    # all eight one at a time: other batches, so equal up to float32 reordering (not bit for
    # bit: a batch of one sums in another order than a batch of two, even on this CPU)
    direct = Predictor(CONFIG, predictor.params, batch_size=1)
    assert_network_close(got, direct.predict(inputs, tracks=[9, 0, 4], bins=[13, 14, 15]),
                         CONFIG)
    # the SNP changes the prediction by far more than that tolerance: the check has teeth
    assert np.abs(got[0] - got[2]).max() > 10 * network_atol(CONFIG, got)
    # another selection, chosen per call
    picked, _ = predict_folder(predictor, folder, tracks=[1], bins=[0, 27])
    assert_network_close(picked, direct.predict(inputs, tracks=[1], bins=[0, 27]), CONFIG)


def test_manifest_without_hashes(tmp_path: Path) -> None:
    folder, _, _ = _folder(tmp_path / "x")
    folder.manifest().drop(columns="hash").to_parquet(folder.path / MANIFEST_NAME)
    predictor = Predictor(CONFIG, random_params(CONFIG, 7), batch_size=2)
    with pytest.raises(ValueError, match=r"manifest lacks column\(s\) \['hash'\]"):
        predict_folder(predictor, folder)


def test_predict_gene(tmp_path: Path) -> None:
    """The per-gene path: three distinct inputs computed once each, the feature summed over the
    TSS bins and tracks, haplotypes averaged."""
    folder, sequences, tss = _folder(tmp_path / "APOE.sequences")
    predictor = Predictor(CONFIG, random_params(CONFIG, 7), batch_size=2)
    tracks = pd.DataFrame({"index": [9, 0, 4], "description": ["a", "b", "c"]})
    centre = [13, 14, 15]
    result = predict_gene(predictor, folder, tracks, np.array(centre))
    assert predictor.sequences_computed == 3 and result.values.shape == (3, 28, 3)
    inputs = [centre_on_tss(s, i, CONFIG.sequence_length) for s, i in zip(sequences, tss,
                                                                         strict=True)]
    direct = Predictor(CONFIG, predictor.params, batch_size=1).predict(inputs, tracks=[9, 0, 4])
    assert_network_close(result.per_haplotype(), direct, CONFIG)  # other batches
    # the features are exact float64 sums of the stored predictions
    at_tss = result.per_haplotype()[:, centre].astype(np.float64).sum(axis=(1, 2))
    np.testing.assert_allclose(result.features[["h1", "h2"]].to_numpy(), at_tss.reshape(-1, 2),
                               rtol=1e-12)
    np.testing.assert_allclose(result.features["feature"], at_tss.reshape(-1, 2).mean(axis=1),
                               rtol=1e-12)
    assert_network_close(at_tss, direct[:, centre].astype(np.float64).sum(axis=(1, 2)), CONFIG)
    assert result.features.index.tolist() == ["s1", "s2", "s3", "s4"]


def test_haplotypes_differing_outside_the_model_window_share_an_input(tmp_path: Path) -> None:
    """A SNP in the flank (outside the model window) gives a new hash but the same input."""
    folder, sequences, _ = _folder(tmp_path / "x")
    manifest = folder.manifest()
    outside = bytearray(sequences[0])
    outside[10] = ord("A") if outside[10] != ord("A") else ord("C")  # window starts at 428
    path = tmp_path / "flank.sequences"
    path.mkdir()
    with IndexedFastaWriter(path / FASTA_NAME) as writer:
        for record, sequence in zip(manifest["record"], sequences, strict=True):
            writer.add(record, bytes(outside) if record == "s4_h1" else sequence)
    changed = manifest["record"] == "s4_h1"
    manifest.loc[changed, "hash"] = sequence_hash(bytes(outside))
    manifest.to_parquet(path / MANIFEST_NAME, index=False)
    assert manifest["hash"].nunique() == 4
    predictor = Predictor(CONFIG, random_params(CONFIG, 7), batch_size=2)
    tracks = pd.DataFrame({"index": [0], "description": ["a"]})
    result = predict_gene(predictor, SequenceFolder(path), tracks, np.array([14]))
    assert predictor.sequences_computed == 3 and len(result.values) == 3
    rows = result.haplotypes.set_index("record")["row"]
    assert rows["s4_h1"] == rows["s1_h1"]
    assert distinct_inputs(SequenceFolder(path), manifest["record"].tolist(),
                           CONFIG.sequence_length)[1].tolist() == [0, 0, 1, 0, 2, 1, 0, 0]
