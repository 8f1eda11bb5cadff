"""Predictions for a personal-sequences folder: TSS-centred inputs, each unique one once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from apoe_assets.enformer.haplotypes import UNIQUE_COLUMN, predict_folder
from apoe_assets.enformer.inference import Predictor
from apoe_assets.enformer.model import EnformerConfig, random_params
from apoe_assets.genomics.consensus import centre_on_tss
from apoe_assets.genomics.fasta_writer import IndexedFastaWriter
from apoe_assets.genomics.personal import FASTA_NAME, MANIFEST_NAME, SequenceFolder, sequence_hash

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
    np.testing.assert_array_equal(got, predictor.predict(inputs))
    assert not np.array_equal(got[0], got[2])  # the SNP changes the prediction
    # another selection, chosen per call
    picked, _ = predict_folder(predictor, folder, tracks=[1], bins=[0, 27])
    np.testing.assert_array_equal(picked,
                                  predictor.predict(inputs, tracks=[1], bins=[0, 27]))


def test_manifest_without_hashes(tmp_path: Path) -> None:
    folder, _, _ = _folder(tmp_path / "x")
    folder.manifest().drop(columns="hash").to_parquet(folder.path / MANIFEST_NAME)
    predictor = Predictor(CONFIG, random_params(CONFIG, 7), batch_size=2)
    with pytest.raises(ValueError, match=r"manifest lacks column\(s\) \['hash'\]"):
        predict_folder(predictor, folder)
