"""What multi-gene stacking is fitted from, assembled from the per-gene upstream tables, and
its per-gene results gathered into one long table.

- :func:`enformer_feature_table`: samples × ``<gene>:feature`` (each study gene's Enformer
  feature per person, :attr:`GenePredictions.features` ``feature``), raw: the quantile
  normalisation and z-scoring are fitted inside :func:`~apoe_assets.ml.stacking.stack_gene`
  per training set;
- :func:`genotype_fold_features`: every gene's genotype scores (``<gene>:baseline_prs``,
  ``<gene>:pt_prs``) in the long per-fold layout ``stack_gene``'s ``fold_features`` takes,
  from each gene's :meth:`~apoe_assets.ml.gene_models.GeneModels.stacking_scores`. **Leakage
  rule:** for outer fold *k*, a training sample's value is its *inner* out-of-fold score (made
  by an inner model of fold *k*'s training set that held it out), a test sample's the fold's
  outer score; a training sample's outer out-of-fold score was fitted on folds that hold fold
  *k*'s test samples and is never offered. Each gene's table must hold, per outer fold,
  exactly the training and test samples of the shared folds (else it was made with other
  folds or samples: an error naming gene, fold and samples);
- :func:`stacking_inputs`: both, with the targets (each gene's expression row) and the genes
  skipped with a reason (no Enformer predictions, no expression row);
- :func:`stacking_table`: per-gene :class:`~apoe_assets.ml.stacking.StackResult` predictions
  as one long table (``gene``, ``sample``, ``fold``, ``observed``, each base model, ``stack``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from apoe_assets.ml.folds import FOLD, fold_ids, split
from apoe_assets.ml.gene_models import SCORES
from apoe_assets.ml.stacking import BASE_MODELS, STACK, StackingInputError, StackResult

FEATURE = "feature"
"""The column of :attr:`GenePredictions.features` that is each gene's Enformer feature."""
GENE = "gene"
ROLES = ("train", "test")
TABLE_COLUMNS = (GENE, "sample", FOLD, "observed", *BASE_MODELS, STACK)
"""Columns of :func:`stacking_table`."""


def feature_column(gene: str, name: str) -> str:
    """A stacking feature's column name: ``<gene>:<name>`` (e.g. ``APOE:feature``)."""
    return f"{gene}:{name}"


def _absent(samples: Sequence[str], have: pd.Index) -> list[str]:
    present = set(have)
    return [s for s in samples if s not in present]


def _examples(samples: Sequence[str]) -> str:
    shown = ", ".join(map(str, samples[:3]))
    return f"{len(samples)} sample(s), e.g. {shown}"


def enformer_feature_table(features: Mapping[str, pd.DataFrame], samples: Sequence[str]
                           ) -> pd.DataFrame:
    """Samples (in ``samples`` order) × ``<gene>:feature``, genes in ``features`` order, from
    each gene's per-sample Enformer features (index: sample; column ``feature``).

    A gene without the ``feature`` column, without some of ``samples`` or with a non-finite
    feature is a :class:`StackingInputError` naming the gene and samples (its predictions were
    made for other samples: re-materialise them)."""
    columns = {}
    for gene, table in features.items():
        if FEATURE not in table.columns:
            raise StackingInputError(f"{gene}: Enformer features have no {FEATURE!r} column "
                                     f"(columns: {', '.join(map(str, table.columns))})")
        if table.index.has_duplicates:
            raise StackingInputError(f"{gene}: Enformer features list a sample twice")
        absent = _absent(samples, table.index)
        if absent:
            raise StackingInputError(
                f"{gene}: Enformer predictions lack {_examples(absent)} of the folds; they "
                "were made for other samples: re-materialise enformer_predictions for it")
        values = table.loc[list(samples), FEATURE].astype(np.float64)
        bad = values.index[~np.isfinite(values.to_numpy())].tolist()
        if bad:
            raise StackingInputError(f"{gene}: Enformer feature is missing or non-finite for "
                                     f"{_examples(bad)}")
        columns[feature_column(gene, FEATURE)] = values.to_numpy()
    return pd.DataFrame(columns, index=pd.Index(list(samples), name="sample"))


def _gene_scores(gene: str, table: pd.DataFrame, folds: pd.Series,
                 scores: Sequence[str]) -> pd.DataFrame:
    """One gene's rows, checked against the folds, scores renamed ``<gene>:<score>``."""
    needed = [FOLD, "sample", "role", *scores]
    missing = [c for c in needed if c not in table.columns]
    if missing:
        raise StackingInputError(f"{gene}: genotype fold scores lack column(s) "
                                 f"{', '.join(missing)}")
    rows = table[needed]
    keys = [FOLD, "role", "sample"]
    if rows.duplicated(keys).any():
        first = rows[rows.duplicated(keys)].iloc[0]
        raise StackingInputError(f"{gene}: genotype fold scores hold sample {first['sample']} "
                                 f"twice as {first['role']!r} of fold {first[FOLD]}")
    other = sorted(set(rows[FOLD].astype(int)) - set(fold_ids(folds)))
    if other or not set(rows["role"]) <= set(ROLES):
        what = (f"outer fold(s) {', '.join(map(str, other))} that the folds do not have" if other
                else f"roles other than {' and '.join(ROLES)}")
        raise StackingInputError(f"{gene}: genotype fold scores have {what}; re-materialise "
                                 "prs_fold_scores")
    for fold in fold_ids(folds):
        train, test = split(folds, fold)
        for role, expected in zip(ROLES, (train, test), strict=True):
            have = rows.loc[(rows[FOLD] == fold) & (rows["role"] == role), "sample"]
            absent = _absent(expected, pd.Index(have))
            extra = sorted(set(have) - set(expected))
            if absent or extra:
                what = (f"no {role!r} row for {_examples(absent)}" if absent
                        else f"{role!r} rows for {_examples(extra)} that are not its "
                             f"{'training' if role == 'train' else 'test'} samples")
                raise StackingInputError(
                    f"{gene}: genotype fold scores of outer fold {fold} have {what}; they "
                    "were made with other folds or samples: re-materialise prs_fold_scores")
        values = rows[rows[FOLD] == fold][list(scores)].to_numpy(np.float64)
        if not np.isfinite(values).all():
            row = rows[rows[FOLD] == fold].iloc[int(np.argwhere(~np.isfinite(values))[0, 0])]
            raise StackingInputError(f"{gene}: genotype score is missing or non-finite for "
                                     f"sample {row['sample']} ({row['role']!r} of fold {fold})")
    return rows.rename(columns={s: feature_column(gene, s) for s in scores})


def genotype_fold_features(scores: Mapping[str, pd.DataFrame], folds: pd.Series,
                           columns: Sequence[str] = SCORES) -> pd.DataFrame:
    """Every gene's genotype scores per outer fold, as ``stack_gene``'s ``fold_features``:
    ``fold``, ``sample``, ``role`` and ``<gene>:<score>`` per gene and score of ``columns``,
    one row per (fold, role, sample) of the shared ``folds``, sorted by fold, role (train
    first), then the order of ``folds``.

    ``scores`` maps gene → its ``prs_fold_scores`` table (``fold``, ``sample``, ``role``
    "train"/"test", ``target``, the scores). The values are taken as stored, never recomputed
    or swapped: a training row's value is the inner out-of-fold score. ``target`` is dropped
    (never a feature)."""
    order = {s: i for i, s in enumerate(folds.index)}
    joined: pd.DataFrame | None = None
    for gene, table in scores.items():
        rows = _gene_scores(gene, table, folds, columns)
        joined = rows if joined is None else joined.merge(rows, on=[FOLD, "role", "sample"],
                                                          how="inner", validate="1:1")
    if joined is None:
        raise StackingInputError("no gene has genotype fold scores")
    joined = joined.assign(_role=joined["role"].map(ROLES.index),
                           _order=joined["sample"].map(order))
    joined = joined.sort_values([FOLD, "_role", "_order"]).drop(columns=["_role", "_order"])
    joined[FOLD] = joined[FOLD].astype("int64")
    return joined[[FOLD, "sample", "role",
                   *[c for c in joined.columns if c not in (FOLD, "sample", "role")]]
                  ].reset_index(drop=True)


@dataclass(frozen=True)
class StackingInputs:
    """Everything :func:`~apoe_assets.ml.stacking.stack_gene` takes for every target gene."""

    features: pd.DataFrame
    """Samples × ``<gene>:feature``."""
    fold_features: pd.DataFrame | None
    """Per-fold genotype scores (:func:`genotype_fold_features`), or None."""
    targets: dict[str, pd.Series]
    """Gene (partition key) → its expression per sample, for every gene stacked."""
    gene_ids: dict[str, str]
    """Gene (partition key) → gene ID, for every gene stacked."""
    skipped: dict[str, str] = field(default_factory=dict)
    """Gene → why it is neither a feature nor a target."""
    unscored: list[str] = field(default_factory=list)
    """Genes whose genotype scores were asked for but are not there (not features)."""

    @property
    def notes(self) -> list[str]:
        return ([f"{gene}: {why}; skipped" for gene, why in self.skipped.items()]
                + [f"{gene}: no genotype fold scores; its scores are not features"
                   for gene in self.unscored])


def stacking_inputs(genes: pd.DataFrame, expression: pd.DataFrame, folds: pd.Series,
                    enformer: Mapping[str, pd.DataFrame],
                    genotype_scores: Mapping[str, pd.DataFrame] | None = None
                    ) -> StackingInputs:
    """The stacking inputs of every gene of ``genes`` (``partition_key``, ``gene_id``, in
    study order).

    A gene absent from ``enformer`` (no stored predictions) or without an expression row is
    skipped with a reason: neither a feature nor a target. ``genotype_scores`` (gene →
    ``prs_fold_scores`` table) adds the genotype scores of every gene in it as per-fold
    features (None: Enformer features alone)."""
    samples = folds.index.tolist()
    skipped: dict[str, str] = {}
    kept: list[str] = []
    for key, gene_id in zip(genes["partition_key"], genes["gene_id"], strict=True):
        if key not in enformer:
            skipped[key] = "no Enformer predictions"
        elif gene_id not in expression.index:
            skipped[key] = f"no expression row for {gene_id}"
        else:
            kept.append(key)
    if not kept:
        raise StackingInputError("no gene has both Enformer predictions and expression: "
                                 + "; ".join(f"{g}: {w}" for g, w in skipped.items()))
    ids = dict(zip(genes["partition_key"], genes["gene_id"], strict=True))
    absent = _absent(samples, expression.columns)
    if absent:
        raise StackingInputError(f"expression lacks {_examples(absent)} of the folds")
    features = enformer_feature_table({k: enformer[k] for k in kept}, samples)
    fold_features, unscored = None, []
    if genotype_scores is not None:
        order = [k for k in genes["partition_key"] if k in genotype_scores]
        unscored = [k for k in genes["partition_key"] if k not in genotype_scores]
        if order:
            fold_features = genotype_fold_features({k: genotype_scores[k] for k in order},
                                                   folds)
    return StackingInputs(features, fold_features,
                          {k: expression.loc[ids[k], samples].astype(np.float64).rename(k)
                           for k in kept},
                          {k: str(ids[k]) for k in kept}, skipped, unscored)


def stacking_table(results: Mapping[str, StackResult]) -> pd.DataFrame:
    """The out-of-fold predictions of every gene, one row per (gene, sample):
    :data:`TABLE_COLUMNS` (genes in ``results`` order, samples in fold-table order)."""
    frames = []
    for gene, result in results.items():
        frame = result.predictions.rename_axis("sample").reset_index()
        frames.append(frame.assign(**{GENE: gene}))
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype=object if c in (GENE, "sample") else float)
                             for c in TABLE_COLUMNS})
    table = pd.concat(frames, ignore_index=True)
    return table.reindex(columns=list(TABLE_COLUMNS))
