"""Assembling multi-gene stacking inputs from per-gene tables: every gene's Enformer feature as
one column, every gene's genotype scores per fold with a training row's *inner* out-of-fold
score (never its outer one) all the way into the rows a model is fitted on, genes without
predictions or expression skipped with a reason, and stale or partial tables refused with an
error naming gene, fold and samples."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from apoe_assets.ml.folds import assign_folds, split
from apoe_assets.ml.stacking import STACK, StackingInputError, fold_inputs, stack_gene
from apoe_assets.ml.stacking_inputs import (
    TABLE_COLUMNS,
    enformer_feature_table,
    genotype_fold_features,
    stacking_inputs,
    stacking_table,
)

N = 40
FOLDS = 4
SEED = 5
GENES = ["APOE", "APOC1", "TOMM40"]
TRAIN_CODE, TEST_CODE = 1, 2
"""Each synthetic score encodes where it came from: fold·1000 + role code·100 + sample."""


def _samples() -> list[str]:
    return [f"S{i:03d}" for i in range(N)]


@pytest.fixture
def folds() -> pd.Series:
    return assign_folds(_samples(), FOLDS, SEED)


def _fold_scores(folds: pd.Series, gene_offset: float = 0.0) -> pd.DataFrame:
    """A ``prs_fold_scores``-shaped table whose every score says which (fold, role, sample)
    row it is: a training row's value can never be mistaken for a test (outer) one."""
    number = {s: i for i, s in enumerate(folds.index)}
    rows = []
    for fold in sorted(set(folds)):
        train, test = split(folds, fold)
        for role, code, samples in (("train", TRAIN_CODE, train), ("test", TEST_CODE, test)):
            for s in samples:
                value = fold * 1000 + code * 100 + number[s] + gene_offset
                rows.append({"fold": fold, "sample": s, "role": role, "target": -1.0,
                             "baseline_prs": value, "pt_prs": value + 0.5})
    return pd.DataFrame(rows)


def _features(samples: list[str], seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"h1": rng.normal(size=len(samples)), "h2": rng.normal(size=len(samples)),
                         "feature": rng.normal(size=len(samples))},
                        index=pd.Index(samples, name="sample"))


def test_training_rows_carry_the_inner_score_never_the_outer(folds: pd.Series) -> None:
    """Catches a join that takes a training sample's value from its own test row (the outer
    out-of-fold score, fitted on folds that hold this fold's test samples) or from another
    fold: for every outer fold, what ``stack_gene`` fits on (``fold_inputs``' training rows)
    is exactly the gene's "train" row of that fold, and the test rows its "test" rows."""
    scores = {g: _fold_scores(folds, gene_offset=0.01 * k) for k, g in enumerate(GENES)}
    joined = genotype_fold_features(scores, folds)
    assert list(joined.columns) == ["fold", "sample", "role",
                                    *[f"{g}:{s}" for g in GENES
                                      for s in ("baseline_prs", "pt_prs")]]
    assert "target" not in joined.columns and not any("target" in c for c in joined.columns)
    features = pd.DataFrame({"X:feature": np.arange(N, dtype=float)},
                            index=pd.Index(folds.index, name="sample"))
    target = pd.Series(np.random.default_rng(1).normal(size=N), index=folds.index)
    number = {s: i for i, s in enumerate(folds.index)}
    for fold in range(FOLDS):
        x_train, _, x_test, _, _ = fold_inputs(features, target, folds, fold,
                                               fold_features=joined, n_inner_folds=3, seed=SEED)
        for k, gene in enumerate(GENES):
            column = x_train[f"{gene}:baseline_prs"]
            expected = [fold * 1000 + TRAIN_CODE * 100 + number[s] + 0.01 * k
                        for s in x_train.index]
            np.testing.assert_array_equal(column.to_numpy(), expected)
            # the outer score of a training sample sits in the fold that tested it
            outer = [folds[s] * 1000 + TEST_CODE * 100 + number[s] + 0.01 * k
                     for s in x_train.index]
            assert not np.isin(column.to_numpy(), outer).any()
            np.testing.assert_array_equal(
                x_test[f"{gene}:pt_prs"].to_numpy(),
                [fold * 1000 + TEST_CODE * 100 + number[s] + 0.01 * k + 0.5
                 for s in x_test.index])


def test_rows_are_ordered_and_complete(folds: pd.Series) -> None:
    joined = genotype_fold_features({"APOE": _fold_scores(folds).sample(frac=1, random_state=3)},
                                    folds)
    assert len(joined) == FOLDS * N  # every sample once per fold (train or test)
    for fold in range(FOLDS):
        train, test = split(folds, fold)
        rows = joined[joined["fold"] == fold]
        assert rows["sample"].tolist() == train + test
        assert rows["role"].tolist() == ["train"] * len(train) + ["test"] * len(test)


@pytest.mark.parametrize(("change", "message"), [
    (lambda t: t.drop(index=t.index[(t["fold"] == 2) & (t["role"] == "train")][:2]),
     "APOE: genotype fold scores of outer fold 2 have no 'train' row for 2 sample(s)"),
    (lambda t: t.assign(fold=t["fold"].where(t["fold"] != 3, 7)),
     "outer fold(s) 7 that the folds do not have"),
    (lambda t: t.assign(role=np.where((t["fold"] == 0) & (t.index % 7 == 0), "test", t["role"])),
     "outer fold 0 have no 'train' row for 5 sample(s)"),
    (lambda t: pd.concat([t, t.iloc[:1]]), "twice"),
    (lambda t: t.assign(pt_prs=t["pt_prs"].where(t.index != 5, np.nan)),
     "genotype score is missing or non-finite for sample"),
    (lambda t: t.drop(columns="pt_prs"), "lack column(s) pt_prs"),
])
def test_partial_or_stale_scores_are_refused(folds: pd.Series, change, message: str) -> None:
    """A table made with other folds or samples, or with a gap, is an error that names the
    gene and what differs (never silently joined with NaN or with the wrong fold)."""
    with pytest.raises(StackingInputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        genotype_fold_features({"APOE": change(_fold_scores(folds))}, folds)


def test_enformer_features_one_column_per_gene_in_fold_order(folds: pd.Series) -> None:
    samples = folds.index.tolist()
    per_gene = {g: _features([*samples[::-1], "extra"], k) for k, g in enumerate(GENES)}
    table = enformer_feature_table(per_gene, samples)
    assert table.columns.tolist() == [f"{g}:feature" for g in GENES]
    assert table.index.tolist() == samples
    for gene in GENES:
        np.testing.assert_array_equal(table[f"{gene}:feature"],
                                      per_gene[gene].loc[samples, "feature"])


def test_missing_samples_or_values_are_named(folds: pd.Series) -> None:
    samples = folds.index.tolist()
    short = {"APOE": _features(samples[3:], 0)}
    with pytest.raises(StackingInputError, match=r"APOE: Enformer predictions lack 3 sample\(s\)"
                                                 r", e\.g\. S000, S001, S002"):
        enformer_feature_table(short, samples)
    bad = _features(samples, 0)
    bad.loc["S007", "feature"] = np.inf
    with pytest.raises(StackingInputError, match="APOE: Enformer feature is missing or "
                                                 r"non-finite for 1 sample\(s\), e\.g\. S007"):
        enformer_feature_table({"APOE": bad}, samples)
    with pytest.raises(StackingInputError, match="no 'feature' column"):
        enformer_feature_table({"APOE": bad.drop(columns="feature")}, samples)


def _annotation() -> pd.DataFrame:
    return pd.DataFrame({"partition_key": [*GENES, "NOEXPR"],
                         "gene_id": ["ENSG1", "ENSG2", "ENSG3", "ENSG4"]})


def _expression(samples: list[str]) -> pd.DataFrame:
    rng = np.random.default_rng(9)
    return pd.DataFrame(rng.normal(size=(3, len(samples) + 1)), index=["ENSG1", "ENSG2", "ENSG3"],
                        columns=[*samples, "unused"])


def test_genes_without_predictions_or_expression_are_skipped_with_a_reason(
        folds: pd.Series) -> None:
    samples = folds.index.tolist()
    enformer = {g: _features(samples, k) for k, g in enumerate(GENES) if g != "APOC1"}
    enformer["NOEXPR"] = _features(samples, 7)
    expression = _expression(samples)
    inputs = stacking_inputs(_annotation(), expression, folds, enformer,
                             {g: _fold_scores(folds) for g in ("APOE", "APOC1")})
    assert list(inputs.targets) == ["APOE", "TOMM40"]
    assert inputs.skipped == {"APOC1": "no Enformer predictions",
                              "NOEXPR": "no expression row for ENSG4"}
    assert inputs.unscored == ["TOMM40", "NOEXPR"]
    assert inputs.notes[:2] == ["APOC1: no Enformer predictions; skipped",
                                "NOEXPR: no expression row for ENSG4; skipped"]
    assert inputs.features.columns.tolist() == ["APOE:feature", "TOMM40:feature"]
    # a gene without predictions still lends its genotype scores (they exist)
    assert [c for c in inputs.fold_features.columns if ":" in c] == [
        "APOE:baseline_prs", "APOE:pt_prs", "APOC1:baseline_prs", "APOC1:pt_prs"]
    pd.testing.assert_series_equal(inputs.targets["TOMM40"],
                                   expression.loc["ENSG3", samples].rename("TOMM40"))
    assert inputs.gene_ids == {"APOE": "ENSG1", "TOMM40": "ENSG3"}
    without = stacking_inputs(_annotation(), expression, folds, enformer)
    assert without.fold_features is None and without.unscored == []
    with pytest.raises(StackingInputError, match="no gene has both"):
        stacking_inputs(_annotation(), expression, folds, {})
    with pytest.raises(StackingInputError, match=r"expression lacks 1 sample\(s\)"):
        stacking_inputs(_annotation(), expression.drop(columns=samples[0]), folds, enformer)


def test_stacking_table_is_every_gene_long(folds: pd.Series) -> None:
    """The long table holds each gene's ``StackResult.predictions`` unchanged, with its gene
    and sample as columns (a small stack of one base model keeps this fast)."""
    samples = folds.index.tolist()
    enformer = {g: _features(samples, k) for k, g in enumerate(GENES)}
    inputs = stacking_inputs(_annotation(), _expression(samples), folds, enformer)
    results = {g: stack_gene(inputs.features, t, folds, gene_id=g, n_inner_folds=3, seed=SEED,
                             models=("ridge",))
               for g, t in list(inputs.targets.items())[:2]}
    table = stacking_table(results)
    assert table.columns.tolist() == list(TABLE_COLUMNS)
    assert table["gene"].tolist() == ["APOE"] * N + ["APOC1"] * N
    for gene, result in results.items():
        rows = table[table["gene"] == gene].set_index("sample")
        assert rows.index.tolist() == samples
        pd.testing.assert_series_equal(rows[STACK], result.predictions[STACK],
                                       check_names=False)
        pd.testing.assert_series_equal(rows["observed"], result.predictions["observed"],
                                       check_names=False)
        assert rows["xgboost"].isna().all()  # a model not fitted is an empty column
    assert stacking_table({}).columns.tolist() == list(TABLE_COLUMNS)
