"""The single-gene Enformer models: what each is, that they recover a planted Enformer signal,
and that the combined model trains on inner out-of-fold genotype scores only."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from apoe_assets.ml import enformer_models as enformer_module
from apoe_assets.ml.enformer_models import ENFORMER_MODELS, NO_PREDICTIONS, enformer_models
from apoe_assets.ml.folds import FOLD, assign_folds, split
from apoe_assets.ml.gene_models import SCORES, GeneModels, ModelSettings, gene_models
from apoe_assets.ml.metrics import model_metrics
from apoe_assets_tests.ml.test_bad_input import GENE, _window

N_SAMPLES = 300
N_VARIANTS = 20
FOLDS = 3
SEED = 23
SETTINGS = ModelSettings(n_folds=FOLDS, n_inner_folds=3, seed=SEED, n_permutations=0,
                         n_lambdas=10)
GRID = {"max_depth": (2,), "n_estimators": (20, 60), "learning_rate": (0.1,),
        "min_child_weight": (5,)}
ENFORMER_SHARE = 0.3
GENETIC_SHARE = 0.2


def _study(seed: int = SEED, enformer_share: float = ENFORMER_SHARE):
    """Genotypes with one causal variant, an Enformer feature per haplotype, expression =
    genetic term + Enformer term + covariates + noise (shares of the adjusted variance)."""
    rng = np.random.default_rng(seed)
    samples = [f"s{i:03d}" for i in range(N_SAMPLES)]
    dosages = rng.binomial(2, rng.uniform(0.2, 0.5, N_VARIANTS)[:, None],
                           (N_VARIANTS, N_SAMPLES)).astype(np.float64)
    h1, h2 = rng.standard_normal(N_SAMPLES), rng.standard_normal(N_SAMPLES)
    mean = (h1 + h2) / 2
    genetic = (dosages[0] - dosages[0].mean()) / dosages[0].std()
    covariates = pd.DataFrame(rng.standard_normal((2, N_SAMPLES)), columns=samples,
                              index=["c0", "c1"])
    noise = rng.standard_normal(N_SAMPLES)
    y = (np.sqrt(GENETIC_SHARE) * genetic + np.sqrt(enformer_share) * mean / mean.std()
         + np.sqrt(1 - GENETIC_SHARE - enformer_share) * noise + covariates.loc["c0"].to_numpy())
    expression = pd.Series(y, index=samples)
    features = pd.DataFrame({"h1": h1, "h2": h2, "mean": mean, "absdiff": np.abs(h1 - h2)},
                            index=samples)
    folds = assign_folds(samples, FOLDS, SEED)
    models = gene_models(_window(dosages, samples), expression, covariates, GENE, folds,
                         SETTINGS)
    return features, expression, covariates, folds, models


def _fit(features, expression, covariates, folds, models: GeneModels):
    return enformer_models(features, models.stacking_scores(), expression, covariates, folds,
                           GENE["gene_id"], n_inner_folds=SETTINGS.n_inner_folds, seed=SEED,
                           grid=GRID)


@pytest.fixture(scope="module")
def study():
    features, expression, covariates, folds, models = _study()
    return features, expression, covariates, folds, models, _fit(
        features, expression, covariates, folds, models)


def test_linear_model_is_least_squares_on_the_training_fold(study) -> None:
    """``enformer_linear`` is the training samples' least-squares line of the target on the
    feature (``np.polyfit`` here), applied to the test samples."""
    features, _, _, _, models, result = study
    for fold, genotype in zip(result.folds, models.folds, strict=True):
        slope, intercept = np.polyfit(features.loc[fold.train, "mean"], genotype.train_target, 1)
        np.testing.assert_allclose(fold.linear, [intercept, slope], rtol=1e-9)
        expected = intercept + slope * features.loc[fold.test, "mean"].to_numpy()
        np.testing.assert_allclose(fold.predicted["enformer_linear"], expected, rtol=1e-9)


def test_combined_model_trains_on_inner_out_of_fold_scores_only(study) -> None:
    """The leakage trap of stacking on genotype scores: the combined model's training rows
    hold each training sample's *inner* out-of-fold scores (from the fold's own inner models),
    never its outer out-of-fold prediction, which came from models whose training folds held
    this fold's test samples. Test rows get the fold's outer predictions. Fails if the
    combined model is fitted on ``GeneModels.predictions`` (the outer out-of-fold scores)."""
    _, _, _, _, models, result = study
    outer = models.predictions
    for fold, genotype in zip(result.folds, models.folds, strict=True):
        train_scores = fold.combined_train[list(SCORES)]
        pd.testing.assert_frame_equal(train_scores, genotype.inner_predicted[list(SCORES)])
        assert not np.allclose(train_scores.to_numpy(), outer.loc[fold.train, list(SCORES)])
        # no sample's prediction came from a model that trained on it
        assert not set(fold.train) & set(fold.test)
        assert set(fold.combined_train.index) == set(fold.train)


def test_replaced_held_out_fold_changes_nothing_fitted(study) -> None:
    """Replacing the held-out fold's Enformer features, expression and covariates (shifted,
    scaled, noise) leaves the fold's fitted Enformer models bit-identical: the line, the
    boosting parameters and inner errors, the boosting model's predictions on a fixed probe,
    the combined coefficients. Catches features or targets read across the fold boundary;
    it first failed on the last bits of the covariate fit, which followed the memory layout
    of the covariates table (rewriting the test samples' columns changed it), fixed by making
    the fits layout-independent."""
    features, expression, covariates, folds, models, result = study
    held_out = 0
    test = split(folds, held_out)[1]
    rng = np.random.default_rng(1)
    features2 = features.copy()
    features2.loc[test] = rng.standard_normal((len(test), features.shape[1])) * 50 + 7
    expression2 = expression.copy()
    expression2[test] = (expression2[test] + 1000) * 100
    covariates2 = covariates.copy()
    covariates2[test] = covariates2[test] * 50 * rng.standard_normal(covariates2[test].shape)
    models2 = gene_models(_window_of(models), expression2, covariates2, GENE, folds, SETTINGS)
    replaced = _fit(features2, expression2, covariates2, folds, models2).folds[held_out]
    original = result.folds[held_out]
    np.testing.assert_array_equal(replaced.linear, original.linear)
    np.testing.assert_array_equal(replaced.combined, original.combined)
    assert replaced.boosting_params == original.boosting_params
    assert replaced.inner_mse == original.inner_mse
    probe = features.loc[original.train[:20]]
    np.testing.assert_array_equal(replaced.boosting.predict(probe),
                                  original.boosting.predict(probe))


def _window_of(models: GeneModels):
    """The window the study's genotype models were fitted on (rebuilt from the seed)."""
    window = _window_of_samples()
    assert models.predictions.index.tolist() == window.samples
    return window


def test_planted_enformer_signal_is_recovered(study) -> None:
    """With an Enformer term planted at 30% of the adjusted variance and a genetic term at
    20%, the Enformer models reach about 0.3 and the combined model about 0.5 out of fold
    (within 3 SE of R² at n = 300, about 0.12 either way); with no Enformer term the Enformer
    models' R² is at most sampling noise. Catches features misaligned with samples, or a
    combined model that drops either part."""
    *_, result = study
    metrics = result.metrics()
    n = N_SAMPLES
    se = lambda r2: np.sqrt(4 * r2 * (1 - r2) ** 2 / n)  # noqa: E731
    for model in ("enformer_linear", "enformer_xgboost"):
        r2 = metrics.loc[model, "r2"]
        assert abs(r2 - ENFORMER_SHARE) <= 3 * se(ENFORMER_SHARE) + 0.03, (model, r2)
    both = ENFORMER_SHARE + GENETIC_SHARE
    assert abs(metrics.loc["combined", "r2"] - both) <= 3 * se(both) + 0.03, metrics
    features, expression, covariates, folds, models = _study(enformer_share=0.0)
    null = _fit(features, expression, covariates, folds, models).metrics()
    assert (null.loc[["enformer_linear", "enformer_xgboost"], "r2"] <= 3 / n ** 0.5).all()


def test_metrics_match_their_definitions() -> None:
    """MSE, R², Pearson and Spearman of :func:`model_metrics` against plain formulas."""
    rng = np.random.default_rng(3)
    observed = rng.standard_normal(50)
    predicted = observed + rng.standard_normal(50)
    m = model_metrics(observed, predicted)
    assert m["mse"] == pytest.approx(np.mean((observed - predicted) ** 2))
    ss_total = np.sum((observed - observed.mean()) ** 2)
    assert m["r2"] == pytest.approx(1 - np.sum((observed - predicted) ** 2) / ss_total)
    assert m["pearson_r"] == pytest.approx(np.corrcoef(observed, predicted)[0, 1])
    ranks = [pd.Series(v).rank().to_numpy() for v in (observed, predicted)]
    assert m["spearman_rho"] == pytest.approx(np.corrcoef(*ranks)[0, 1])
    assert 0 < m["pearson_p"] < 1e-3
    flat = model_metrics(observed, np.zeros(50))
    assert np.isnan(flat["pearson_r"]) and np.isnan(flat["spearman_rho"])


def test_every_sample_is_predicted_once_by_each_model(study) -> None:
    *_, folds, _, result = study
    assert result.predictions.index.tolist() == folds.index.tolist()
    assert result.predictions[FOLD].tolist() == folds.tolist()
    assert np.isfinite(result.predictions[list(ENFORMER_MODELS)].to_numpy()).all()


def test_a_sample_without_features_is_named(study) -> None:
    features, expression, covariates, folds, models, _ = study
    with pytest.raises(ValueError, match=r"1 fold sample\(s\) have no Enformer features"):
        _fit(features.drop(index="s005"), expression, covariates, folds, models)


def test_constant_expression_skips_the_enformer_models(study) -> None:
    """Expression that is exactly a linear combination of the covariates leaves only rounding:
    the Enformer models are skipped with a note, predictions and metrics NaN — not an R² of
    rounding noise (0.0009 for the linear model unguarded, on residuals of ~1e-15). Fails
    without the check."""
    features, _, covariates, folds, _, _ = study
    expression = pd.Series(2.0 + 3.0 * covariates.loc["c1"].to_numpy(), index=folds.index)
    models = gene_models(_window_of_samples(), expression, covariates, GENE, folds, SETTINGS)
    result = _fit(features, expression, covariates, folds, models)
    assert not result.scored
    assert result.predictions[list(ENFORMER_MODELS)].isna().all().all()
    assert result.metrics()[["r2", "pearson_r", "mse"]].isna().all().all()
    assert any("expression is constant after removing the covariates" in n
               for n in result.notes)


def _window_of_samples():
    """The study's genotype window, rebuilt from the seed as :func:`_study` draws it."""
    rng = np.random.default_rng(SEED)
    samples = [f"s{i:03d}" for i in range(N_SAMPLES)]
    dosages = rng.binomial(2, rng.uniform(0.2, 0.5, N_VARIANTS)[:, None],
                           (N_VARIANTS, N_SAMPLES)).astype(np.float64)
    return _window(dosages, samples)


def test_a_gene_without_predictions_keeps_its_genotype_models(study) -> None:
    """No Enformer predictions at all (``features=None``): the Enformer models are skipped
    with a note and NaN predictions, while the gene stays scored (its genotype models stand)
    and ``observed`` is the genotype models' target. Catches a skip that drops the gene."""
    _, expression, covariates, folds, models, fitted = study
    result = enformer_models(None, models.stacking_scores(), expression, covariates, folds,
                             GENE["gene_id"])
    assert result.scored and not result.folds
    assert result.predictions[list(ENFORMER_MODELS)].isna().all().all()
    pd.testing.assert_series_equal(result.predictions["observed"],
                                   fitted.predictions["observed"])
    assert result.notes == (NO_PREDICTIONS,)


def test_a_model_whose_fit_fails_is_reported_and_the_others_stand(study) -> None:
    """XGBoost refusing its hyper-parameters (a negative depth) fails that model alone: its
    predictions are NaN in every fold, the error is named per fold in ``failed`` and a note,
    and the linear and combined models predict exactly what they predict otherwise. Catches
    one model's failure taking the gene down, or leaving partial predictions."""
    features, expression, covariates, folds, models, fitted = study
    broken = {**GRID, "max_depth": (-1,), "n_estimators": (20,)}
    result = enformer_models(features, models.stacking_scores(), expression, covariates, folds,
                             GENE["gene_id"], n_inner_folds=SETTINGS.n_inner_folds, seed=SEED,
                             grid=broken)
    assert list(result.failed) == ["enformer_xgboost"]
    assert result.failed["enformer_xgboost"].count("fold ") == FOLDS
    assert result.predictions["enformer_xgboost"].isna().all()
    kept = ["enformer_linear", "combined"]
    pd.testing.assert_frame_equal(result.predictions[kept], fitted.predictions[kept])
    assert any(n.startswith("enformer_xgboost failed to fit (fold 0: ") for n in result.notes)


def test_a_fit_failing_in_one_fold_leaves_no_partial_predictions(
        study, monkeypatch: pytest.MonkeyPatch) -> None:
    """XGBoost failing in the first fold only: its predictions are NaN in *every* fold (pooled
    figures over some folds would not be comparable), the error names fold 0 only. Catches
    partial predictions kept for the folds that fitted."""
    features, expression, covariates, folds, models, _ = study
    original, calls = enformer_module.tune_boosting, []

    def fail_first(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("injected")
        return original(*args, **kwargs)

    monkeypatch.setattr(enformer_module, "tune_boosting", fail_first)
    result = _fit(features, expression, covariates, folds, models)
    assert result.failed == {"enformer_xgboost": "fold 0: RuntimeError: injected"}
    assert result.predictions["enformer_xgboost"].isna().all()
    assert result.predictions["enformer_linear"].notna().all()


def test_tuning_scores_each_grid_point_as_its_own_fit() -> None:
    """The tuning grid shares one fit of the most rounds between points that differ only in
    ``n_estimators``. Each point's mean inner MSE must be what a separate fit of that point
    (``XGBRegressor`` on the named features, as a user would write it) scores, and the chosen
    point the one with the smallest. Float32 trees summed over the same trees: rtol 1e-6.
    Catches predictions over the wrong trees (one tree off moves the MSE by ~1e-3 here) or
    scores filed under the wrong point."""
    from xgboost import XGBRegressor

    from apoe_assets.ml.inner_cv import inner_splits

    features, expression, covariates, folds, _ = _study()
    features = features.assign(noise=np.random.default_rng(SEED).standard_normal(len(features)))
    train = folds.index.tolist()
    inner = pd.Series(np.arange(len(train)) % 3, index=train)
    splits = inner_splits(train, inner, expression, covariates)
    grid = {"max_depth": (2, 3), "n_estimators": (15, 40, 25), "learning_rate": (0.1,)}
    best, scores = enformer_module.tune_boosting(features.loc[train], splits, SEED, grid)
    x = features.loc[train]
    expected = {}
    for depth in grid["max_depth"]:
        for rounds in grid["n_estimators"]:
            params = {"max_depth": depth, "n_estimators": rounds, "learning_rate": 0.1}
            errors = []
            for s in splits:
                model = XGBRegressor(**params, random_state=SEED, n_jobs=1,
                                     tree_method="hist").fit(x.iloc[s.train], s.train_target)
                errors.append(np.mean((s.test_target - model.predict(x.iloc[s.test])) ** 2))
            expected[repr(params)] = float(np.mean(errors))
    assert list(scores) == list(expected)
    np.testing.assert_allclose(list(scores.values()), list(expected.values()), rtol=1e-6)
    assert repr(best) == min(expected, key=expected.get)
