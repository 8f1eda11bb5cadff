"""Stored fold scans: reused as they are when their fingerprints match, refused with the fold
and the differing input named when they do not, never rescanned to find out."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from apoe_assets.ml.fold_scans import scan_folds, stored_fold_scans
from apoe_assets.ml.folds import assign_folds, fold_ids
from apoe_assets.ml.gene_models import FoldTableMismatch, ModelSettings, gene_models
from apoe_assets.stats.provenance import SCANS_ATTR, StaleScan
from apoe_assets_tests.ml.test_bad_input import GENE, SEED, SETTINGS, TSS, _inputs, _window

FOLDS = 3


def _stored(window, expression, covariates, folds, settings: ModelSettings = SETTINGS
            ) -> pd.DataFrame:
    """The table ``cis_eqtl`` stores, written to Parquet and read back."""
    return scan_folds(window, expression, covariates, folds, gene_id=GENE["gene_id"], tss=TSS,
                      maf_threshold=settings.maf_threshold).table()


@pytest.fixture
def study(tmp_path):
    dosages, expression, covariates, samples = _inputs()
    window = _window(dosages, samples)
    folds = assign_folds(samples, FOLDS, SEED)
    path = tmp_path / "cis_eqtl.parquet"
    _stored(window, expression, covariates, folds).to_parquet(path)
    return window, expression, covariates, folds, pd.read_parquet(path)


def _models(window, expression, covariates, folds, table=None, settings=SETTINGS):
    scans = None if table is None else stored_fold_scans(table, fold_ids(folds))
    return gene_models(window, expression, covariates, GENE, folds, settings, stored=scans)


def test_stored_scans_are_used_as_stored(study) -> None:
    """Through Parquet and back, the stored scans give exactly the models of fresh scans; and
    they are what is used — a stored slope changed by hand (fingerprint untouched) changes
    fold 1's baseline predictions, and one of the all-sample scan changes the reported table,
    so nothing was rescanned. Catches a reader that drops rows, reorders them against the
    window, or quietly rescans."""
    window, expression, covariates, folds, table = study
    fresh, reused = _models(window, expression, covariates, folds), _models(
        window, expression, covariates, folds, table)
    pd.testing.assert_frame_equal(reused.predictions, fresh.predictions)
    pd.testing.assert_frame_equal(reused.weight_table(), fresh.weight_table())
    edited = table.copy()
    edited.attrs = table.attrs
    edited.loc[edited.index[edited["fold"] == 1][0], "slope"] += 1.0
    changed = _models(window, expression, covariates, folds, edited)
    held_out = changed.predictions["fold"] == 1
    assert not np.array_equal(changed.predictions.loc[held_out, "baseline_prs"],
                              fresh.predictions.loc[held_out, "baseline_prs"])
    pd.testing.assert_frame_equal(changed.predictions[~held_out], fresh.predictions[~held_out])
    edited = table.copy()
    edited.attrs = table.attrs
    edited.loc[edited.index[edited["fold"].isna()][0], "slope"] += 1.0
    changed = _models(window, expression, covariates, folds, edited)
    assert changed.eqtl.table["slope"].iloc[0] == fresh.eqtl.table["slope"].iloc[0] + 1.0
    pd.testing.assert_frame_equal(changed.predictions, fresh.predictions)


def _refusal(study, **change) -> str:
    window, expression, covariates, folds, table = study
    inputs = {"window": window, "expression": expression, "covariates": covariates,
              "folds": folds, "settings": SETTINGS, **change}
    with pytest.raises(FoldTableMismatch) as caught:
        _models(inputs["window"], inputs["expression"], inputs["covariates"], inputs["folds"],
                table, inputs["settings"])
    return str(caught.value)


def test_stale_scans_are_refused_naming_the_fold_and_the_input(study) -> None:
    """Each way a stored scan goes stale is named, with the scan: other folds (fold 0's
    samples), fewer samples (the all-sample scan), one sample's expression, its covariates or
    one genotype call, the MAF filter (settings). Catches a fingerprint that leaves out any of
    these inputs."""
    window, expression, covariates, folds, _ = study
    sample = folds.index[folds == 1][0]  # a training sample of folds 0 and 2, not of 1
    message = _refusal(study, folds=assign_folds(folds.index.tolist(), FOLDS, SEED + 1))
    assert message.startswith("fold 0: the stored training eQTL table was made from other "
                              "samples, genotypes, expression, covariates than this run's")
    fewer = folds.drop(folds.index[:3])
    assert _refusal(study, folds=fewer).startswith(
        "all samples: the stored eQTL table was made from other samples, genotypes, "
        "expression, covariates than this run's")
    shifted = expression.copy()
    shifted[sample] += 1.0
    assert "the stored eQTL table was made from other expression " in (
        _refusal(study, expression=shifted))
    noisy = covariates.copy()
    noisy.loc["c0", sample] += 1.0
    assert "made from other covariates " in _refusal(study, covariates=noisy)
    flipped = window.dosages.copy()
    column = window.samples.index(sample)
    flipped[0, column] = 2.0 - flipped[0, column] if flipped[0, column] != 1 else 0.0
    changed = _window(flipped, window.samples)
    assert "made from other genotypes " in _refusal(study, window=changed)
    stricter = ModelSettings(**{**vars(SETTINGS), "maf_threshold": 0.2})
    assert "made from other settings " in _refusal(study, settings=stricter)


def test_a_table_without_fingerprints_is_refused(study) -> None:
    """A table stored before fingerprints existed (or by another tool) is refused with a
    clear message instead of being trusted."""
    table = study[-1].copy()
    table.attrs = {}
    with pytest.raises(StaleScan, match="carries no scan fingerprints"):
        stored_fold_scans(table, [0, 1, 2], "cis_eqtl NECTIN2")
    table.attrs = {SCANS_ATTR: {k: v for k, v in study[-1].attrs[SCANS_ATTR].items()
                                if k != "2"}}
    with pytest.raises(StaleScan, match="no scan of fold 2's training samples"):
        stored_fold_scans(table, [0, 1, 2])
