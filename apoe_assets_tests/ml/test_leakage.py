"""No leakage: what scores an outer fold is fitted on its training samples only.

Permuting the expression of the held-out fold, or replacing its genotypes, expression and
covariates outright, leaves every weight, mean, the P+T threshold and its inner r², λ, the
inner-CV curve and the calibrations bit for bit the same; changing one training sample's
expression changes them (so the test can fail)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from apoe_assets.ml.folds import split
from apoe_assets.ml.gene_models import FoldModels, fit_fold
from apoe_assets.stats.eqtl import CisWindow
from apoe_assets.stats.ld import genotype_codes
from apoe_assets_tests.ml.demo import Demo

GENE = "NECTIN2"
HELD_OUT = 0
SEED = 5
SHIFT_SDS = 3.0
"""How far one training sample's expression is moved."""


@pytest.fixture(scope="module")
def window(demo: Demo) -> CisWindow:
    return demo.window(GENE)


def _fit(demo: Demo, window: CisWindow, expression: pd.Series,
         covariates: pd.DataFrame | None = None) -> FoldModels:
    gene = demo.gene(GENE)
    return fit_fold(window, genotype_codes(window.dosages), expression,
                    demo.covariates if covariates is None else covariates,
                    gene["gene_id"], gene["tss"], demo.folds, HELD_OUT, demo.settings)


def _fitted(models: FoldModels) -> dict[str, object]:
    """Everything fitted that scores the held-out fold."""
    net = models.elastic_net
    return {
        "eqtl": models.eqtl.table.to_numpy(),
        "baseline_weights": models.baseline.weights,
        "baseline_means": models.baseline.means,
        "baseline_calibration": models.baseline.calibration,
        "pt_weights": models.pt.weights,
        "pt_means": models.pt.means,
        "pt_index_snps": models.pt.n_index,
        "pt_threshold": models.pt.threshold,
        "pt_inner_r2": models.pt.inner_r2,
        "pt_calibration": models.pt.calibration,
        "elastic_net_weights": net.weights,
        "elastic_net_intercept": net.intercept,
        "elastic_net_lambda": net.alpha,
        "elastic_net_cv_mse": net.cv_mse,
        "elastic_net_lambdas": net.lambdas,
        "elastic_net_means": net.means,
        "predictions": models.predicted.to_numpy(),
    }


def _same(a: object, b: object) -> bool:
    if isinstance(a, np.ndarray):
        return a.shape == b.shape and bool(np.array_equal(a, b, equal_nan=a.dtype.kind == "f"))
    return a == b


@pytest.fixture(scope="module")
def original(demo: Demo, window: CisWindow) -> FoldModels:
    return _fit(demo, window, demo.expression.loc[demo.gene(GENE)["gene_id"]])


def test_gene_models_scores_the_fold_with_these_models(demo: Demo, original: FoldModels
                                                       ) -> None:
    held_out = demo.models(GENE).predictions.query("fold == @HELD_OUT")
    pd.testing.assert_frame_equal(held_out[original.predicted.columns], original.predicted)


def test_permuted_held_out_expression_changes_nothing_that_scores_it(
        demo: Demo, window: CisWindow, original: FoldModels) -> None:
    expression = demo.expression.loc[demo.gene(GENE)["gene_id"]].copy()
    test = split(demo.folds, HELD_OUT)[1]
    expression[test] = expression[test].to_numpy()[np.random.default_rng(SEED)
                                                    .permutation(len(test))]
    permuted = _fit(demo, window, expression)
    assert not np.array_equal(permuted.observed, original.observed)  # the change arrived
    before, after = _fitted(original), _fitted(permuted)
    changed = [k for k in before if not _same(before[k], after[k])]
    assert not changed, changed


def test_replaced_held_out_samples_change_nothing_fitted(demo: Demo, window: CisWindow,
                                                        original: FoldModels) -> None:
    """The held-out fold's samples are *replaced*, not permuted: random genotype calls with
    20% missing, expression shifted by +1000 and scaled ×100, covariates ×50 noise. Every
    fitted quantity — eQTL table, weights and their means, calibrations, P+T threshold, index
    SNPs and inner r², λ, its grid and inner curve, the elastic net's imputation means — is bit
    for bit the same; only the held-out predictions move. Unlike a permutation, this changes
    the held-out mean, variance and genotype frequencies, the routes by which imputation
    means, MAF filters, LD, standardisation and covariate fits would leak. Seen failing when
    P+T's clumping took its LD from every window sample instead of the training samples."""
    rng = np.random.default_rng(SEED)
    test = split(demo.folds, HELD_OUT)[1]
    columns = window.columns(test)
    dosages = window.dosages.copy()
    calls = rng.integers(0, 3, (len(dosages), len(columns))).astype(np.float64)
    calls[rng.random(calls.shape) < 0.2] = np.nan
    dosages[:, columns] = calls
    replaced_window = CisWindow(window.variants, dosages, window.samples)
    expression = demo.expression.loc[demo.gene(GENE)["gene_id"]].copy()
    expression[test] = (expression[test] + 1000.0) * 100.0
    covariates = demo.covariates.copy()
    covariates[test] = covariates[test] * 50.0 * rng.standard_normal(covariates[test].shape)
    replaced = _fit(demo, replaced_window, expression, covariates)
    before, after = _fitted(original), _fitted(replaced)
    changed = [k for k in before if not _same(before[k], after[k])]
    assert changed == ["predictions"], changed


def test_changing_one_training_sample_changes_the_models(demo: Demo, window: CisWindow,
                                                         original: FoldModels) -> None:
    expression = demo.expression.loc[demo.gene(GENE)["gene_id"]].copy()
    sample = split(demo.folds, HELD_OUT)[0][0]
    expression[sample] += SHIFT_SDS * expression.std()
    shifted = _fit(demo, window, expression)
    before, after = _fitted(original), _fitted(shifted)
    changed = {k for k in before if not _same(before[k], after[k])}
    assert {"eqtl", "baseline_weights", "baseline_calibration", "pt_calibration",
            "elastic_net_weights", "predictions"} <= changed, changed
