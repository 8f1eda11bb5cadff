"""Bad input to the genotype models: a clear, specific error, or a well-formed result with a
note where there is simply nothing to fit (every model then predicts the training mean)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from apoe_assets.ml.fold_scans import scan_folds, stored_fold_scans
from apoe_assets.ml.folds import FoldError, assign_folds, fold_ids, split
from apoe_assets.ml.gene_models import (
    MODELS,
    WEIGHT_COLUMNS,
    GeneModels,
    ModelSettings,
    gene_models,
)
from apoe_assets.stats.eqtl import CisWindow
from apoe_assets.stats.residualise import CovariateError

N_SAMPLES = 60
N_VARIANTS = 12
N_COVARIATES = 3
FOLDS = 3
SEED = 17
TSS = 50_000
SETTINGS = ModelSettings(n_folds=FOLDS, n_inner_folds=FOLDS, seed=SEED, n_permutations=0,
                         n_lambdas=10)
GENE = {"gene_id": "GENE", "tss": TSS}
MEAN_TOLERANCE = 1e-12
RARE_MAF = 0.05
EFFECT = 1.0
"""Effect of the first variant per ALT allele (h² about 0.3)."""


def _samples(n: int = N_SAMPLES) -> list[str]:
    return [f"s{i:03d}" for i in range(n)]


def _window(dosages: np.ndarray, samples: list[str]) -> CisWindow:
    positions = TSS + 100 * np.arange(1, len(dosages) + 1)
    variants = pd.DataFrame({"variant_id": [f"chr1:{p}:A:G" for p in positions],
                             "pos": positions})
    return CisWindow(variants, np.asarray(dosages, dtype=np.float64), samples)


def _inputs(n: int = N_SAMPLES, n_covariates: int = N_COVARIATES, seed: int = SEED
            ) -> tuple[np.ndarray, pd.Series, pd.DataFrame, list[str]]:
    rng = np.random.default_rng(seed)
    samples = _samples(n)
    dosages = rng.binomial(2, rng.uniform(0.2, 0.5, N_VARIANTS)[:, None], (N_VARIANTS, n))
    expression = pd.Series(EFFECT * dosages[0] + rng.standard_normal(n), index=samples)
    covariates = pd.DataFrame(rng.standard_normal((n_covariates, n)), columns=samples,
                              index=[f"c{k}" for k in range(n_covariates)])
    return dosages.astype(np.float64), expression, covariates, samples


def _run(dosages: np.ndarray, expression: pd.Series, covariates: pd.DataFrame,
         samples: list[str], folds: int = FOLDS, settings: ModelSettings = SETTINGS
         ) -> GeneModels:
    return gene_models(_window(dosages, samples), expression, covariates, GENE,
                       assign_folds(samples, folds, SEED), settings)


def _assert_training_mean_only(result: GeneModels) -> None:
    """Well-formed, and every model predicts each fold's training mean of the target."""
    assert list(result.predictions.columns) == ["fold", "observed", *MODELS]
    assert len(result.predictions) == N_SAMPLES
    for f in result.folds:
        for model in MODELS:
            assert np.abs(f.predicted[model].to_numpy()).max() < MEAN_TOLERANCE, model
    summary = result.fold_summary()
    assert summary["pt_threshold"].isna().all()
    assert (summary[["baseline_snps", "pt_snps", "elastic_net_snps"]] == 0).all().all()
    weights = result.weight_table()
    assert list(weights.columns) == WEIGHT_COLUMNS
    assert len(weights) == FOLDS * len(MODELS) and weights["variant_id"].isna().all()
    assert np.isfinite(result.metrics()["r2"]).all()
    assert any("training mean" in n for n in result.notes)


def test_no_variant_in_the_window() -> None:
    _, expression, covariates, samples = _inputs()
    result = _run(np.zeros((0, N_SAMPLES)), expression, covariates, samples)
    _assert_training_mean_only(result)
    assert any("no variant in the cis window" in n for n in result.notes)


def test_no_variant_passes_maf() -> None:
    dosages, expression, covariates, samples = _inputs()
    rare = np.zeros_like(dosages)
    rare[:, :2] = 1.0  # two carriers: MAF at most 2/80 in any training set, below 0.05
    settings = ModelSettings(**{**vars(SETTINGS), "maf_threshold": RARE_MAF})
    result = _run(rare, expression, covariates, samples, settings=settings)
    _assert_training_mean_only(result)
    assert any(f"MAF ≥ {RARE_MAF}" in n for n in result.notes)


def test_monomorphic_variants_are_left_out() -> None:
    dosages, expression, covariates, samples = _inputs()
    dosages[3] = 2.0
    result = _run(dosages, expression, covariates, samples)
    monomorphic = "chr1:50400:A:G"
    assert monomorphic not in set(result.eqtl.table["variant_id"])
    assert monomorphic not in set(result.weight_table()["variant_id"].dropna())
    assert any("1 monomorphic variant" in n for n in result.notes)
    assert result.metrics()["r2"].min() > 0  # the planted variant still scores
    only = _run(np.full((2, N_SAMPLES), 1.0), expression, covariates, samples)
    _assert_training_mean_only(only)


def test_collinear_covariate_is_dropped_with_a_note() -> None:
    """A covariate that is a sum of two others spans nothing new: dropped, noted, and every
    prediction the same as without it."""
    dosages, expression, covariates, samples = _inputs()
    redundant = pd.concat([covariates, (covariates.loc["c0"] + 2 * covariates.loc["c1"])
                           .rename("c0_plus_2c1").to_frame().T])
    with_it = _run(dosages, expression, redundant, samples)
    without = _run(dosages, expression, covariates, samples)
    assert any("c0_plus_2c1" in n and "dropped" in n for n in with_it.notes)
    np.testing.assert_allclose(with_it.predictions[list(MODELS)],
                               without.predictions[list(MODELS)], atol=1e-8)


@pytest.mark.parametrize("where", ["expression", "covariates"])
def test_nan_is_a_clear_error(where: str) -> None:
    dosages, expression, covariates, samples = _inputs()
    if where == "expression":
        expression.iloc[7] = np.nan
        expected = r"expression of gene GENE has a missing .* sample s007"
    else:
        covariates.iloc[1, 9] = np.nan
        expected = r"covariate c1 has a missing .* sample s009"
    with pytest.raises(CovariateError, match=expected):
        _run(dosages, expression, covariates, samples)


def test_too_few_samples_for_the_covariates() -> None:
    """12 samples in 3 × 3 folds leave inner training sets of 5: too few for 4 covariates."""
    dosages, expression, covariates, samples = _inputs(n=12, n_covariates=4)
    with pytest.raises(CovariateError, match=r"inner training sets of 5 samples, too few for "
                                             r"4 covariates \(a scan needs covariates \+ 3"):
        _run(dosages, expression, covariates, samples)


def test_fewer_samples_than_folds() -> None:
    dosages, expression, covariates, samples = _inputs(n=4, n_covariates=0)
    with pytest.raises(FoldError, match="4 samples cannot fill 5 folds"):
        assign_folds(samples, 5, SEED)
    with pytest.raises(FoldError, match="outer fold 0 leaves 2 training samples, too few "
                                        "for 3 inner folds"):
        _run(dosages, expression, covariates, samples, folds=2)


def test_missing_genotype_calls_are_mean_imputed() -> None:
    dosages, expression, covariates, samples = _inputs()
    dosages[0, ::7] = np.nan
    result = _run(dosages, expression, covariates, samples)
    assert np.isfinite(result.predictions[list(MODELS)].to_numpy()).all()
    assert result.metrics().loc["elastic_net", "r2"] > 0


def test_stored_tables_of_a_gene_with_nothing_to_test_are_accepted() -> None:
    """A ``cis_eqtl`` partition of a gene with no testable variant has no rows for any fold;
    ``prs_scores`` must still find a (empty) table per fold and give the training mean."""
    dosages, expression, covariates, samples = _inputs()
    rare = np.zeros_like(dosages)
    rare[:, :2] = 1.0
    settings = ModelSettings(**{**vars(SETTINGS), "maf_threshold": RARE_MAF})
    folds = assign_folds(samples, FOLDS, SEED)
    window = _window(rare, samples)
    stored = scan_folds(window, expression, covariates, folds, gene_id="GENE", tss=TSS,
                        maf_threshold=RARE_MAF).table()  # what cis_eqtl writes
    assert stored.empty
    scans = stored_fold_scans(stored, fold_ids(folds))
    assert sorted(scans.per_fold) == fold_ids(folds)
    assert scans.full.table.empty and all(t.table.empty for t in scans.per_fold.values())
    result = gene_models(window, expression, covariates, GENE, folds, settings, stored=scans)
    _assert_training_mean_only(result)


@pytest.mark.parametrize("kind", ["constant", "covariate combination"])
def test_constant_expression_is_a_skip_with_a_note(kind: str) -> None:
    """Expression that is constant, or exactly a linear combination of the covariates, leaves
    only rounding once the covariates are removed: every model predicts the training mean,
    nothing is tested, and the metrics are NaN with a note — not R² of rounding noise (which
    was 0.53 for the elastic net before the check). Catches the exact-zero test of the
    residual (a covariate combination leaves ~1e-16, not 0)."""
    dosages, expression, covariates, samples = _inputs()
    if kind == "constant":
        expression[:] = 3.0
    else:
        expression[:] = 1.5 + covariates.to_numpy().T @ np.arange(1.0, N_COVARIATES + 1)
    result = _run(dosages, expression, covariates, samples)
    assert not result.scored
    assert result.metrics()[["r2", "pearson_r", "mean_fold_r2"]].isna().all().all()
    assert any("expression is constant after removing the covariates" in n
               for n in result.notes)
    assert result.eqtl.table.empty and all(f.eqtl.table.empty for f in result.folds)
    for f in result.folds:
        assert np.abs(f.predicted.to_numpy()).max() < MEAN_TOLERANCE


def test_variant_monomorphic_in_one_training_set_is_dropped_there_only() -> None:
    """A variant whose minor allele is carried only by fold 0's test samples is monomorphic in
    fold 0's training samples: that fold leaves it out (and counts it), every other fold and
    the all-sample scan test it. Catches a filter taken from all samples (the fold would test
    a constant column) or one that drops the variant everywhere."""
    dosages, expression, covariates, samples = _inputs()
    folds = assign_folds(samples, FOLDS, SEED)
    carriers = split(folds, 0)[1][:3]
    dosages[5] = [1.0 if s in carriers else 0.0 for s in samples]
    variant = _window(dosages, samples).variants["variant_id"][5]
    result = _run(dosages, expression, covariates, samples)
    assert variant in set(result.eqtl.table["variant_id"])
    for f in result.folds:
        assert (variant in set(f.eqtl.table["variant_id"])) == (f.fold != 0), f.fold
        assert f.eqtl.counts["monomorphic"] == (f.fold == 0), f.fold
    assert "fold 0: 1 monomorphic variant(s) in the window not tested" in result.notes
    assert variant not in set(result.weight_table().query("fold == 0")["variant_id"].dropna())
