"""Multi-gene stacking on seeded synthetic data: it finds a planted cross-gene signal out of
fold and nothing in noise; its provenance records pass the leakage check and leaky variants
fail it; the held-out fold cannot touch its own fold's models; the meta-learner's rows are
the inner out-of-fold predictions sklearn's ``cross_val_predict`` computes; bad input fails
clearly or is skipped with a note."""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.model_selection import cross_val_predict
from threadpoolctl import threadpool_limits

from apoe_assets.ml.folds import FoldError, assign_folds, split
from apoe_assets.ml.inner_cv import InnerSplit
from apoe_assets.ml.stacking import (
    BASE_MODELS,
    STACK,
    LeakageError,
    StackFold,
    StackingInputError,
    StackResult,
    check_no_leakage,
    fit_stack_fold,
    fold_inputs,
    fold_leaks,
    leaks,
    stack_gene,
)

N_SAMPLES = 490
N_GENES = 12
"""Demo size: ~490 people, ~12 genes with one Enformer feature each."""
N_FOLDS = 5
N_INNER = 5
SEED = 11
TARGET_GENE = 0
SIGNAL_GENE = 3
PLANTED_SHARE = 0.36
"""Target = 0.6 · (gene B's latent feature) + 0.8 · noise: B explains 0.36 of its variance."""
R2_SE = float(np.sqrt(4 * PLANTED_SHARE * (1 - PLANTED_SHARE) ** 2 / N_SAMPLES))
"""Sampling SE of R² at the planted share (delta method, ≈ 0.035)."""
FIT_ALLOWANCE = 0.05
"""What fitting 12 features and a tree meta-learner on 392 samples may cost below the share
(seen: 0.31–0.34 over seeds)."""
NULL_STACK_MAX = 0.02
"""A null target's stacked R² stays below this (seen: −0.04 to −0.01 over seeds)."""
NULL_MEAN_MAX = 0.005
"""…and the mean R² over all models below this (seen: −0.026 to −0.006)."""
HELD_OUT = 0
N_PROBE = 25


def _samples(n: int) -> list[str]:
    return [f"p{i:03d}" for i in range(n)]


def _columns(n_genes: int) -> list[str]:
    return [f"G{g}:feature" for g in range(n_genes)]


def _latent(n: int, n_genes: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, n_genes))


def _features(latent: np.ndarray, samples: list[str]) -> pd.DataFrame:
    """Skewed, positive Enformer-like features (exp of the latent values): the quantile
    normalisation must undo the skew for a linear model to see the planted signal."""
    return pd.DataFrame(np.exp(latent), index=samples, columns=_columns(latent.shape[1]))


def _planted(latent: np.ndarray, samples: list[str], seed: int) -> pd.Series:
    noise = np.random.default_rng(seed + 1).standard_normal(len(samples))
    return pd.Series(0.6 * latent[:, SIGNAL_GENE] + 0.8 * noise, index=samples,
                     name=f"G{TARGET_GENE}")


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    with threadpool_limits(1):
        yield


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, pd.Series, pd.Series]:
    samples = _samples(N_SAMPLES)
    latent = _latent(N_SAMPLES, N_GENES, SEED)
    return (_features(latent, samples), _planted(latent, samples, SEED),
            assign_folds(samples, N_FOLDS, SEED))


@pytest.fixture(scope="module")
def planted(data: tuple[pd.DataFrame, pd.Series, pd.Series]) -> StackResult:
    features, target, folds = data
    return stack_gene(features, target, folds, n_inner_folds=N_INNER, seed=SEED)


# ---------------------------------------------------------------------- (1) planted truth


def test_planted_cross_gene_signal_is_found_out_of_fold_and_noise_is_not(
        data: tuple[pd.DataFrame, pd.Series, pd.Series], planted: StackResult) -> None:
    """Catches a stack that cannot use another gene's feature (misaligned rows, features
    dropped, wrong preprocessing) and one that finds signal in noise (in-sample scoring):
    the target gene's own feature is null; 36 % of its variance comes from gene B's. The
    stack's pooled out-of-fold R² lies within 3 SEs of 0.36 (less a fitting allowance), the
    ridge model's largest weight is on gene B in every fold, and a null target's R² is ≤ 0
    on average over the models."""
    metrics = planted.metrics()
    stack_r2 = metrics.loc[STACK, "r2"]
    assert PLANTED_SHARE - 3 * R2_SE - FIT_ALLOWANCE <= stack_r2 <= PLANTED_SHARE + 3 * R2_SE
    assert metrics.loc[STACK, "pearson_p"] < 1e-10
    assert list(metrics.index) == [*BASE_MODELS, STACK]
    assert list(metrics.columns) == ["mse", "r2", "pearson_r", "pearson_p", "spearman_rho",
                                     "fold_r2_mean", "fold_r2_se", "n"]
    for fitted in planted.fitted.values():
        weights = np.abs(fitted["ridge"].named_steps["model"].coef_)
        assert int(np.argmax(weights)) == SIGNAL_GENE
    per_fold = planted.fold_metrics()
    assert per_fold.shape[0] == N_FOLDS * (len(BASE_MODELS) + 1)
    assert per_fold["n"].groupby("fold").first().sum() == N_SAMPLES

    features, target, folds = data
    null = pd.Series(np.random.default_rng(SEED + 7).standard_normal(N_SAMPLES),
                     index=target.index, name="null")
    null_r2 = stack_gene(features, null, folds, n_inner_folds=N_INNER, seed=SEED).metrics()["r2"]
    assert null_r2[STACK] <= NULL_STACK_MAX
    assert null_r2.mean() <= NULL_MEAN_MAX


# ---------------------------------------------------------------------- (2) provenance


def _small(n: int = 120, n_genes: int = 4, seed: int = 5
           ) -> tuple[pd.DataFrame, pd.Series, pd.Series]:
    samples = _samples(n)
    latent = _latent(n, n_genes, seed)
    target = pd.Series(0.6 * latent[:, 1] + 0.8 * np.random.default_rng(seed).standard_normal(n),
                       index=samples, name="G0")
    return _features(latent, samples), target, assign_folds(samples, 3, seed)


def test_provenance_passes_on_real_output(planted: StackResult) -> None:
    """Catches a fit that saw its own test samples at any level, or a predictions table not
    made by the recorded fits: on the real output every check passes, every fold records the
    base, inner and meta fits, and no test sample is in any training or tuning set."""
    assert leaks(planted) == []
    check_no_leakage(planted)
    for fold, prov in planted.provenance.items():
        test = set(prov.test)
        assert test == set(planted.predictions.index[planted.predictions["fold"] == fold])
        for model in planted.columns:
            sets = prov.training_sets(model)
            assert sets and all(not (test & samples) for samples in sets.values())
        levels = {fit.level for fit in prov.fits.values()}
        assert levels == {"base", "inner", "meta"}
        assert len(prov.fits) == len(BASE_MODELS) * (N_INNER + 1) + 1


def test_provenance_check_catches_in_sample_meta_rows() -> None:
    """Catches the earlier study's mistake, a meta-learner trained on in-sample base
    predictions: a fold fitted with one inner "split" whose training set is the whole
    training set (each row predicted by a model that saw it) is flagged row by row, though
    its outer test samples were never trained on — so it is the inner rule that catches it."""
    features, target, folds = _small()
    x_train, y_train, x_test, _, _ = fold_inputs(features, target, folds, HELD_OUT,
                                                 n_inner_folds=3, seed=SEED)
    everything = np.arange(len(x_train))
    in_sample = [InnerSplit(everything, everything, y_train, y_train)]
    leaky = fit_stack_fold(x_train, y_train, x_test, in_sample, fold=HELD_OUT, seed=SEED)
    problems = fold_leaks(leaky)
    assert any("in-sample" in p for p in problems)
    assert sum("in-sample" in p for p in problems) == len(BASE_MODELS) * len(x_train)
    assert not any("came from" in p for p in problems)


def test_provenance_check_catches_a_test_sample_in_training(planted: StackResult) -> None:
    """Catches a test sample inside a training set: the same fold fitted with one of its test
    samples added to the training rows is flagged for that sample, for every model and at
    every level behind the stack; and a predictions table edited after the fact, or a fold's
    records that lost a test sample, fail :func:`check_no_leakage`."""
    features, target, folds = _small()
    x_train, y_train, x_test, _, splits = fold_inputs(features, target, folds, HELD_OUT,
                                                      n_inner_folds=3, seed=SEED)
    intruder = x_test.index[0]
    leaky_train = pd.concat([x_train, x_test.loc[[intruder]]])
    leaky_y = np.append(y_train, 0.0)
    n = len(x_train)
    leaky_splits = [InnerSplit(np.append(s.train, n) if j == 0 else s.train,
                               np.append(s.test, n) if j == 1 else s.test,
                               np.append(s.train_target, 0.0) if j == 0 else s.train_target,
                               np.append(s.test_target, 0.0) if j == 1 else s.test_target)
                    for j, s in enumerate(splits)]
    leaky = fit_stack_fold(leaky_train, leaky_y, x_test, leaky_splits, fold=HELD_OUT,
                           seed=SEED)
    problems = fold_leaks(leaky)
    flagged = [p for p in problems if f"prediction for {intruder} " in p]
    for model in [*BASE_MODELS, STACK]:
        assert any(p.split(": ")[1].startswith(f"{model} prediction") for p in flagged)
    assert any("stack/meta, trained on" in p for p in flagged)
    assert any("/inner 0, trained on" in p for p in flagged)
    assert any("/base, tuned on" in p for p in flagged)

    edited = planted.predictions.copy()
    edited.iloc[0, edited.columns.get_loc(STACK)] += 1.0
    with pytest.raises(LeakageError, match="differs from the fold's recorded"):
        check_no_leakage(StackResult(planted.gene_id, planted.models, edited, planted.folds))
    first = planted.folds[0]
    lost = StackFold(first.fold, first.base, first.params, first.inner_mse, first.meta,
                     first.meta_train, first.meta_target, first.predicted.iloc[1:],
                     first.provenance)
    assert any("are not those of" in p for p in fold_leaks(lost))


# ---------------------------------------------------------------------- (3) held-out fold


def _with_covariates(n: int = 240, n_genes: int = 6, seed: int = 8
                     ) -> tuple[pd.DataFrame, pd.Series, pd.DataFrame, pd.Series]:
    samples = _samples(n)
    latent = _latent(n, n_genes, seed)
    rng = np.random.default_rng(seed + 1)
    covariates = pd.DataFrame(rng.standard_normal((3, n)), columns=samples,
                              index=["age", "sex", "pc1"])
    target = pd.Series(0.6 * latent[:, 2] + 0.5 * covariates.loc["age"].to_numpy()
                       + 0.8 * rng.standard_normal(n), index=samples, name="G0")
    return _features(latent, samples), target, covariates, assign_folds(samples, N_FOLDS, seed)


def _fold_fit(features: pd.DataFrame, target: pd.Series, covariates: pd.DataFrame,
              folds: pd.Series, fold: int) -> StackFold:
    x_train, y_train, x_test, _, splits = fold_inputs(
        features, target, folds, fold, covariates=covariates, n_inner_folds=N_INNER, seed=SEED)
    return fit_stack_fold(x_train, y_train, x_test, splits, fold=fold, seed=SEED)


def _fingerprint(fitted: StackFold, probe: pd.DataFrame) -> dict[str, object]:
    """Everything fitted in a fold that would score its test samples."""
    rng = np.random.default_rng(3)
    meta_probe = pd.DataFrame(rng.standard_normal((N_PROBE, len(BASE_MODELS))),
                              columns=list(BASE_MODELS))
    out: dict[str, object] = {
        "params": fitted.params, "inner_mse": fitted.inner_mse,
        "meta_train": fitted.meta_train.to_numpy(), "meta_target": fitted.meta_target,
        "meta_probe": fitted.meta.predict(meta_probe),
        "meta_booster": bytes(fitted.meta.get_booster().save_raw("json")),
    }
    for model, pipeline in fitted.base.items():
        out[f"{model} quantiles"] = pipeline.named_steps["quantiles"].quantiles_
        out[f"{model} scale"] = (pipeline.named_steps["scale"].mean_,
                                 pipeline.named_steps["scale"].scale_)
        out[f"{model} probe"] = pipeline.predict(probe)
    return out


def _same(a: object, b: object) -> bool:
    if isinstance(a, np.ndarray):
        return a.shape == b.shape and bool(np.array_equal(a, b))
    if isinstance(a, tuple):
        return all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def test_replacing_the_held_out_fold_changes_none_of_its_models() -> None:
    """Catches any path from a fold's test samples into its own models (preprocessing fitted
    on all samples, a covariate fit or inner folds that include them, seeds from the data):
    the held-out fold's features, targets and covariates are replaced by shifted, scaled
    random values, and its fold's chosen hyper-parameters, inner-MSE grid, meta-learner rows,
    targets, booster and probe predictions, every base pipeline's quantiles, scaler and probe
    predictions stay bit for bit the same — while another fold, which trains on those
    samples, changes (so the test can fail)."""
    features, target, covariates, folds = _with_covariates()
    _, test = split(folds, HELD_OUT)
    rng = np.random.default_rng(99)
    features2, target2, covariates2 = features.copy(), target.copy(), covariates.copy()
    features2.loc[test] = 5.0 + 10.0 * rng.random((len(test), features.shape[1]))
    target2.loc[test] = 3.0 + 5.0 * rng.standard_normal(len(test))
    covariates2.loc[:, test] = 2.0 + 4.0 * rng.standard_normal((covariates.shape[0], len(test)))
    probe = pd.DataFrame(np.exp(rng.standard_normal((N_PROBE, features.shape[1]))),
                         columns=features.columns)

    before = _fingerprint(_fold_fit(features, target, covariates, folds, HELD_OUT), probe)
    after = _fingerprint(_fold_fit(features2, target2, covariates2, folds, HELD_OUT), probe)
    changed = [k for k in before if not _same(before[k], after[k])]
    assert changed == []

    other = 1
    before = _fingerprint(_fold_fit(features, target, covariates, folds, other), probe)
    after = _fingerprint(_fold_fit(features2, target2, covariates2, folds, other), probe)
    changed = [k for k in before if not _same(before[k], after[k])]
    assert "meta_probe" in changed and "ridge quantiles" in changed


# ---------------------------------------------------------------------- (4) meta rows


def test_meta_learner_rows_are_what_cross_val_predict_returns(
        data: tuple[pd.DataFrame, pd.Series, pd.Series], planted: StackResult) -> None:
    """Catches a meta-learner trained on in-sample predictions, on outer out-of-fold
    predictions, or on inner predictions from fits other than the chosen model's: its
    training rows are, bit for bit, ``cross_val_predict`` of an unfitted clone of the fold's
    refit base pipeline over the fold's inner splits, its targets the training targets; and
    the fold's refit pipeline, a fresh ``Pipeline.fit``, predicts the test samples as
    stored."""
    features, target, folds = data
    for fold in (0, 3):
        fitted = planted.folds[fold]
        x_train, y_train, x_test, _, splits = fold_inputs(features, target, folds, fold,
                                                          n_inner_folds=N_INNER, seed=SEED)
        cv = [(s.train, s.test) for s in splits]
        assert list(fitted.meta_train.index) == list(x_train.index)
        np.testing.assert_array_equal(fitted.meta_target, y_train)
        for model in BASE_MODELS:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="n_quantiles .* is greater than")
                expected = cross_val_predict(clone(fitted.base[model]), x_train, y_train, cv=cv)
            np.testing.assert_array_equal(fitted.meta_train[model].to_numpy(), expected)
            refit = clone(fitted.base[model]).fit(x_train, y_train)
            np.testing.assert_array_equal(fitted.predicted[model].to_numpy(),
                                          refit.predict(x_test))
        np.testing.assert_array_equal(
            fitted.predicted[STACK].to_numpy(),
            fitted.meta.predict(fitted.predicted[list(BASE_MODELS)]))


def test_with_covariates_targets_are_nested_and_observed_is_the_training_fit() -> None:
    """Catches covariates adjusted on all samples (or on the outer training set inside the
    inner folds): a fold's observed values are the test expression less the training
    samples' least-squares fit of ``[1, covariates]`` (what the genotype models report), and
    each meta-learner row's target is its expression less the fit of its inner training
    samples, whose own targets trained the inner fit that predicted it."""
    features, target, covariates, folds = _with_covariates(n=150, n_genes=4)
    result = stack_gene(features, target, folds, covariates=covariates, n_inner_folds=3,
                        seed=SEED, models=("ridge", "xgboost"))
    assert leaks(result) == []

    def fit(samples: list[str]) -> np.ndarray:
        design = np.column_stack([np.ones(len(samples)), covariates.loc[:, samples].T])
        return np.linalg.lstsq(design, target.loc[samples].to_numpy(), rcond=None)[0]

    def residual(samples: list[str], beta: np.ndarray) -> np.ndarray:
        design = np.column_stack([np.ones(len(samples)), covariates.loc[:, samples].T])
        return target.loc[samples].to_numpy() - design @ beta

    fold = result.folds[1]
    train, test = split(folds, fold.fold)
    observed = result.predictions.loc[test, "observed"].to_numpy()
    np.testing.assert_allclose(observed, residual(test, fit(train)), rtol=0, atol=1e-12)
    prov = fold.provenance
    for key, record in prov.fits.items():
        if record.level != "inner" or record.model != "ridge":
            continue
        inner_train = sorted(record.trained_on)
        held = list(record.predicted)
        rows = [fold.meta_train.index.get_loc(s) for s in held]
        np.testing.assert_allclose(fold.meta_target[rows], residual(held, fit(inner_train)),
                                   rtol=0, atol=1e-12, err_msg=key)
        x = features.loc[inner_train]
        refit = clone(fold.base["ridge"]).set_params(quantiles__n_quantiles=len(x))
        refit.fit(x, residual(inner_train, fit(inner_train)))
        np.testing.assert_allclose(fold.meta_train.loc[held, "ridge"].to_numpy(),
                                   refit.predict(features.loc[held]), rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------------- determinism, extras


def test_same_inputs_same_predictions_bit_for_bit() -> None:
    """Catches unseeded randomness or a dependence on thread scheduling: two runs give
    identical predictions and metrics; another seed gives other predictions (the seed is
    used)."""
    features, target, folds = _small()
    first = stack_gene(features, target, folds, n_inner_folds=3, seed=1)
    second = stack_gene(features, target, folds, n_inner_folds=3, seed=1)
    pd.testing.assert_frame_equal(first.predictions, second.predictions, check_exact=True)
    pd.testing.assert_frame_equal(first.metrics(), second.metrics(), check_exact=True)
    other = stack_gene(features, target, folds, n_inner_folds=3, seed=2)
    assert not other.predictions[STACK].equals(first.predictions[STACK])


def test_fold_features_are_used_per_fold_as_given() -> None:
    """Catches genotype scores taken from the wrong fold or role (a training sample given its
    outer score): each fold's training rows come from that fold's "train" rows and its test
    rows from its "test" rows, the refit pipelines take the extra columns as features, the
    provenance table lists the fits, and a NaN score is named by fold, role, column and
    sample."""
    features, target, folds = _small(n=90, n_genes=3)
    rows = []
    for fold in sorted(set(folds)):
        train, test = split(folds, fold)
        for role, samples in (("train", train), ("test", test)):
            rows.append(pd.DataFrame({"fold": fold, "sample": samples, "role": role,
                                      "G0:pt_prs": 100 * fold + (role == "test")
                                      + np.arange(len(samples)) / len(samples)}))
    scores = pd.concat(rows, ignore_index=True)
    for fold in sorted(set(folds)):
        x_train, _, x_test, _, _ = fold_inputs(features, target, folds, fold,
                                               fold_features=scores, n_inner_folds=3)
        assert (x_train["G0:pt_prs"].floordiv(1) == 100 * fold).all()
        assert (x_test["G0:pt_prs"].floordiv(1) == 100 * fold + 1).all()
    result = stack_gene(features, target, folds, fold_features=scores, n_inner_folds=3,
                        models=("ridge",))
    assert "G0:pt_prs" in result.fitted[0]["ridge"].feature_names_in_
    assert leaks(result) == []
    table = result.provenance_table()
    assert set(table["level"]) == {"base", "inner", "meta"}
    meta = table[(table["fold"] == 0) & (table["level"] == "meta")].iloc[0]
    assert meta["trained_on"] == sorted(split(folds, 0)[0])
    holed = scores.copy()
    holed.loc[(holed["fold"] == 1) & (holed["sample"] == "p007"), "G0:pt_prs"] = np.nan
    fold_of = int(folds["p007"])
    role = "test" if fold_of == 1 else "training"
    with pytest.raises(StackingInputError, match=f"fold 1 {role} feature column G0:pt_prs is "
                                                 "missing or non-finite for sample p007"):
        stack_gene(features, target, folds, fold_features=holed, n_inner_folds=3)
    with pytest.raises(StackingInputError, match="must not hold target"):
        stack_gene(features, target, folds, fold_features=scores.assign(target=0.0),
                   n_inner_folds=3)


# ---------------------------------------------------------------------- (5) bad input


def test_constant_target_is_skipped_with_a_note() -> None:
    """Catches a crash or meaningless metrics on a gene with constant expression (also when
    it is a linear function of the covariates): the result is well formed, not scored, says
    why, and every metric is NaN."""
    features, target, covariates, folds = _with_covariates(n=60, n_genes=3)
    constant = pd.Series(2.5, index=target.index, name="flat")
    explained = (1.0 + 2.0 * covariates.loc["age"]).rename("explained")
    for expression, cov, what in ((constant, None, "is constant"),
                                  (explained, covariates, "constant after removing")):
        result = stack_gene(features, expression, folds, covariates=cov, n_inner_folds=3)
        assert not result.scored and result.folds == []
        assert any(what in note for note in result.notes)
        assert result.metrics().drop(columns="n").isna().all().all()
        assert result.predictions[[*BASE_MODELS, STACK]].isna().all().all()
        assert list(result.predictions.index) == list(folds.index)


def test_too_few_samples_is_a_fold_error_with_counts() -> None:
    """Catches obscure sklearn errors deep in a fit when the folds cannot be filled: the
    error is a FoldError naming the samples, folds and what each training set needs."""
    features, target, folds = _small(n=6, n_genes=2)
    folds = assign_folds(folds.index.tolist(), 3, 1)
    with pytest.raises(FoldError, match="outer fold 0 leaves 4 training samples, too few "
                                        "for 5 inner folds"):
        stack_gene(features, target, folds, n_inner_folds=5)
    features, target, covariates, folds = _with_covariates(n=15, n_genes=3)
    folds = assign_folds(folds.index.tolist(), 3, 1)
    many = pd.concat([covariates, covariates.rename(index=lambda c: f"{c}_2") ** 2])
    with pytest.raises(FoldError, match=r"inner training sets of 6 samples; each needs at "
                                        r"least 8 \(6 covariates \+ 2\)"):
        stack_gene(features, target, folds, covariates=many, n_inner_folds=3)


def test_missing_values_and_absent_samples_are_named() -> None:
    """Catches NaN passed on to a model (which would fail far away or fit silently on
    imputed values) and samples silently dropped: the error names the column and sample."""
    features, target, folds = _small(n=60, n_genes=3)
    broken = features.copy()
    broken.loc["p017", "G2:feature"] = np.nan
    with pytest.raises(StackingInputError, match="feature column G2:feature is missing or "
                                                 "non-finite for sample p017"):
        stack_gene(broken, target, folds, n_inner_folds=3)
    gap = target.copy()
    gap.loc["p033"] = np.inf
    with pytest.raises(StackingInputError, match="target G0 is missing or non-finite for "
                                                 "sample p033"):
        stack_gene(features, gap, folds, n_inner_folds=3)
    with pytest.raises(StackingInputError, match=r"1 fold sample.* have no features, e.g. p005"):
        stack_gene(features.drop(index="p005"), target, folds, n_inner_folds=3)


def test_feature_constant_in_a_training_set_is_fitted_with_a_note() -> None:
    """Catches a crash (zero variance in the scaler, quantiles of one value) when one gene's
    feature is constant across a fold's training samples: every prediction is finite, the
    fold's note names the column, and the provenance check passes."""
    features, target, folds = _small(n=60, n_genes=3)
    _, test = split(folds, 0)
    flat = features.copy()
    flat["G2:feature"] = 1.0
    flat.loc[test, "G2:feature"] = np.linspace(0.5, 2.0, len(test))
    result = stack_gene(flat, target, folds, n_inner_folds=3)
    assert np.isfinite(result.predictions[[*BASE_MODELS, STACK]].to_numpy()).all()
    assert any(note.startswith("fold 0:") and "G2:feature" in note for note in result.notes)
    assert leaks(result) == []
