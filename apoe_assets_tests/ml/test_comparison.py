"""The model comparison on a seeded synthetic table, every figure recomputed here from the
predictions by another route (scikit-learn, SciPy, ``statistics``).

What it catches: a pooled R² that is not scikit-learn's ``r2_score`` of all out-of-fold
predictions; a fold SE with the wrong ddof or divisor; a winner that is not the highest pooled
R² (e.g. ``idxmin``, or the fold mean); a winner's margin judged against the winner's own
fold SE instead of the paired SE of the per-fold difference (the ``correlated`` gene: its two
best models share their errors, so the winner's own SE is larger than the margin while the
paired SE is far smaller: it is a clear win); a skipped (NaN) model winning; predictions of
other targets being compared.
"""

from __future__ import annotations

import statistics

import numpy as np
import pandas as pd
import pytest
import scipy.stats
from sklearn.metrics import mean_squared_error, r2_score

from apoe_assets.ml.comparison import (
    LONG_COLUMNS,
    ComparisonError,
    long_predictions,
    model_table,
    r2_matrix,
    stacking_model_name,
    winners,
)
from apoe_assets.ml.folds import assign_folds
from apoe_assets.ml.stacking import BASE_MODELS, STACK

N = 300
FOLDS = 5
SEED = 2024
SINGLE = ("baseline_prs", "pt_prs", "enformer_linear")


def _gene_table(rng: np.random.Generator, folds: pd.Series, kind: str) -> pd.DataFrame:
    """Per sample: fold, observed and the single-gene models' predictions.

    ``correlated``: pt_prs = baseline_prs with its error shrunk by 2 % (same errors, so the
    per-fold R² move together); ``unclear``: two models with independent errors of nearly
    the same size; ``skipped``: enformer_linear NaN (a skipped model) and the others poor."""
    signal = rng.normal(size=N)
    observed = signal + rng.normal(size=N)
    error = rng.normal(scale=1.0, size=N)
    if kind == "correlated":
        models = {"baseline_prs": signal + error, "pt_prs": signal + 0.98 * error,
                  "enformer_linear": 0.3 * signal + rng.normal(size=N)}
    elif kind == "unclear":
        models = {"baseline_prs": signal + error,
                  "pt_prs": signal + rng.normal(scale=1.0, size=N),
                  "enformer_linear": rng.normal(size=N)}
    else:
        models = {"baseline_prs": 0.2 * signal + rng.normal(size=N),
                  "pt_prs": rng.normal(size=N), "enformer_linear": np.full(N, np.nan)}
    return pd.DataFrame({"fold": folds.to_numpy(), "observed": observed, **models},
                        index=pd.Index(folds.index, name="sample"))


@pytest.fixture(scope="module")
def data() -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    rng = np.random.default_rng(SEED)
    folds = assign_folds([f"P{i:03d}" for i in range(N)], FOLDS, SEED)
    single = {g: _gene_table(rng, folds, g) for g in ("correlated", "unclear", "skipped")}
    stacked = []
    for gene, table in single.items():
        frame = table[["fold", "observed"]].assign(
            **{m: table["observed"] * 0.03 * (k + 1) + rng.normal(scale=1.5, size=N)
               for k, m in enumerate([*BASE_MODELS, STACK])})
        stacked.append(frame.reset_index().assign(gene=gene))
    return single, pd.concat(stacked, ignore_index=True)


@pytest.fixture(scope="module")
def long(data) -> pd.DataFrame:
    single, stacked = data
    return long_predictions(single, SINGLE, stacked)


def _recomputed(long: pd.DataFrame, gene: str, model: str) -> dict[str, float]:
    rows = long[(long["gene"] == gene) & (long["model"] == model)]
    y, p = rows["observed"].to_numpy(), rows["predicted"].to_numpy()
    groups = [g for _, g in rows.groupby("fold")]
    per_fold = [r2_score(g["observed"], g["predicted"]) for g in groups]
    fold_r = [scipy.stats.pearsonr(g["observed"], g["predicted"])[0] for g in groups]
    fold_mse = [mean_squared_error(g["observed"], g["predicted"]) for g in groups]
    return {"r2": r2_score(y, p), "pearson_r": scipy.stats.pearsonr(y, p)[0],
            "mse": mean_squared_error(y, p), "fold_r2_mean": statistics.fmean(per_fold),
            "fold_r2_se": statistics.stdev(per_fold) / FOLDS ** 0.5,
            "fold_pearson_r_se": statistics.stdev(fold_r) / FOLDS ** 0.5,
            "fold_mse_se": statistics.stdev(fold_mse) / FOLDS ** 0.5, "per_fold": per_fold}


def test_long_table_names_and_orders_every_model(data, long: pd.DataFrame) -> None:
    assert list(long.columns) == list(LONG_COLUMNS)
    models = list(dict.fromkeys(long["model"]))
    assert models == [*SINGLE, *[f"stacking_{m}" for m in BASE_MODELS], "stack"]
    assert stacking_model_name("elastic_net") == "stacking_elastic_net"  # not the genotype one
    assert long.groupby(["gene", "model"]).size().eq(N).all()


def test_metrics_are_recomputed_from_the_predictions(long: pd.DataFrame) -> None:
    metrics = model_table(long)
    for (gene, model), row in metrics.iterrows():
        if gene == "skipped" and model == "enformer_linear":
            assert row[["r2", "pearson_r", "mse", "fold_r2_mean", "fold_r2_se"]].isna().all()
            continue
        expected = _recomputed(long, gene, model)
        for column in ("r2", "pearson_r", "mse", "fold_r2_mean", "fold_r2_se",
                       "fold_pearson_r_se", "fold_mse_se"):
            assert row[column] == pytest.approx(expected[column], rel=1e-12, abs=1e-14), (
                gene, model, column)
        assert row["n"] == N
    r2 = r2_matrix(metrics)
    assert r2.index.tolist() == ["correlated", "unclear", "skipped"]
    assert r2.loc["unclear", "pt_prs"] == metrics.loc[("unclear", "pt_prs"), "r2"]


def test_winner_margin_and_paired_fold_se(long: pd.DataFrame) -> None:
    metrics = model_table(long)
    best = winners(long, metrics)
    for gene, row in best.iterrows():
        r2 = metrics.loc[gene, "r2"].dropna().sort_values(ascending=False)
        assert row["winner"] == r2.index[0] and row["runner_up"] == r2.index[1]
        assert row["r2"] == r2.iloc[0] and row["runner_up_r2"] == r2.iloc[1]
        first = _recomputed(long, gene, row["winner"])["per_fold"]
        second = _recomputed(long, gene, row["runner_up"])["per_fold"]
        paired_se = statistics.stdev(np.subtract(first, second)) / FOLDS ** 0.5
        assert row["margin"] == pytest.approx(r2.iloc[0] - r2.iloc[1], rel=1e-12)
        assert row["margin_se"] == pytest.approx(paired_se, rel=1e-12)
        assert row["clear"] == (row["margin"] > paired_se)
        assert (row["note"] == "") == row["clear"]
    correlated = best.loc["correlated"]
    assert (correlated["winner"], correlated["runner_up"]) == ("pt_prs", "baseline_prs")
    # the winner's own fold SE exceeds its margin, the paired SE does not: a clear win
    assert correlated["margin_se"] < correlated["margin"] < metrics.loc[
        ("correlated", "pt_prs"), "fold_r2_se"]
    assert correlated["clear"] and correlated["note"] == ""
    unclear = best.loc["unclear"]
    assert not unclear["clear"]
    assert unclear["note"].startswith(f"unclear: {unclear['winner']} is not better than "
                                      f"{unclear['runner_up']} beyond 1 fold-SE (ΔR² ")
    assert best.loc["skipped", "winner"] != "enformer_linear"  # NaN never wins


def test_one_or_no_scored_model(data) -> None:
    single, _ = data
    table = single["skipped"]
    only = long_predictions({"g": table.assign(pt_prs=np.nan)}, SINGLE)
    row = winners(only).loc["g"]
    assert row["winner"] == "baseline_prs" and row["runner_up"] == "" and not row["clear"]
    assert row["note"] == "g: only baseline_prs scored; no runner-up"
    none = long_predictions({"g": table.assign(pt_prs=np.nan, baseline_prs=np.nan)}, SINGLE)
    assert winners(none).loc["g", "winner"] == "none"


def test_predictions_of_other_targets_are_refused(data) -> None:
    """Single-gene and stacking predictions of a gene are compared only when they share its
    samples, folds and observed values (else their R² measure different things)."""
    single, stacked = data
    shifted = stacked.copy()
    shifted.loc[shifted.index[5], "observed"] += 1e-3
    with pytest.raises(ComparisonError, match="correlated: observed values differ"):
        long_predictions(single, SINGLE, shifted)
    refolded = stacked.copy()
    refolded["fold"] = (refolded["fold"] + 1) % FOLDS
    with pytest.raises(ComparisonError, match="use other folds"):
        long_predictions(single, SINGLE, refolded)
    with pytest.raises(ComparisonError, match="other samples"):
        long_predictions(single, SINGLE, stacked.drop(index=[0]))
    with pytest.raises(ComparisonError, match="lack column"):
        long_predictions({"g": single["unclear"].drop(columns="pt_prs")}, SINGLE)
    # a stacking-only gene is compared on its own
    alone = long_predictions({}, SINGLE, stacked[stacked["gene"] == "unclear"])
    assert set(alone["model"]) == {*(f"stacking_{m}" for m in BASE_MODELS), STACK}
