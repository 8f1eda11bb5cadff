"""Everything genotype-only for one gene: eQTL tables, three out-of-fold predictors, metrics.

For each outer fold, only its training samples are used to adjust expression for the
covariates, scan the cis window, clump, choose the P+T threshold and λ (inner folds) and
calibrate the scores; the fold's test samples are then predicted. The target of every model
is covariate-adjusted expression: the training fit of ``[1, covariates]`` is subtracted from
the test samples' expression, so the test samples never inform it either.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from apoe_assets.genomics.genotypes import GenotypeMatrix
from apoe_assets.ml.elastic_net import L1_RATIO, N_LAMBDAS, ElasticNetFit, fit_elastic_net
from apoe_assets.ml.folds import FOLD, FoldError, fold_ids, inner_folds, split
from apoe_assets.ml.metrics import pearson_r, r2_score
from apoe_assets.ml.prs_models import PrsFit, fit_baseline, fit_pt, inner_scores
from apoe_assets.stats.eqtl import (
    DEFAULT_WINDOW,
    CisWindow,
    EqtlResult,
    PermutationResult,
    cis_window,
    map_cis_nominal,
    permutation_test,
)
from apoe_assets.stats.ld import DEFAULT_KB, DEFAULT_P1, DEFAULT_R2, genotype_codes
from apoe_assets.stats.prs import P_THRESHOLDS
from apoe_assets.stats.residualise import CovariateError, adjust_for_covariates, require_finite

MODELS = ("baseline_prs", "pt_prs", "elastic_net")


@dataclass(frozen=True)
class ModelSettings:
    """Settings of the genotype models (the study file's values; defaults as the issue)."""

    n_folds: int = 5
    n_inner_folds: int = 5
    seed: int = 0
    cis_window: int = DEFAULT_WINDOW
    maf_threshold: float = 0.01
    n_permutations: int = 1000
    p_thresholds: tuple[float, ...] = P_THRESHOLDS
    clump_p1: float = DEFAULT_P1
    clump_r2: float = DEFAULT_R2
    clump_kb: float = DEFAULT_KB
    l1_ratio: float = L1_RATIO
    n_lambdas: int = N_LAMBDAS


@dataclass(frozen=True)
class FoldModels:
    """The models of one outer fold, fitted on its training samples only."""

    fold: int
    train: list[str]
    test: list[str]
    eqtl: EqtlResult
    baseline: PrsFit
    pt: PrsFit
    elastic_net: ElasticNetFit
    elastic_net_rows: np.ndarray

    def weights(self, model: str) -> pd.Series:
        """Per-variant weights (raw dosage scale) that score this fold's test samples."""
        if model == "elastic_net":
            return pd.Series(self.elastic_net.weights, name=model,
                             index=self.eqtl.table["variant_id"].to_numpy())
        fit = {"baseline_prs": self.baseline, "pt_prs": self.pt}[model]
        return pd.Series(fit.weights, index=fit.variant_ids, name=model)


@dataclass(frozen=True)
class GeneModels:
    """One gene's genotype-only results."""

    gene_id: str
    eqtl: EqtlResult
    permutation: PermutationResult
    folds: list[FoldModels]
    predictions: pd.DataFrame
    """Per sample: ``fold``, ``observed`` (covariate-adjusted expression) and one
    out-of-fold prediction column per model."""
    notes: tuple[str, ...] = field(default_factory=tuple)

    def metrics(self) -> pd.DataFrame:
        """Per model: pooled out-of-fold R² and Pearson r, and the mean per-fold R²."""
        rows = []
        observed = self.predictions["observed"].to_numpy()
        for model in MODELS:
            predicted = self.predictions[model].to_numpy()
            per_fold = [r2_score(g["observed"], g[model])
                        for _, g in self.predictions.groupby(FOLD)]
            rows.append({"model": model, "r2": r2_score(observed, predicted),
                         "pearson_r": pearson_r(observed, predicted),
                         "mean_fold_r2": float(np.mean(per_fold)), "n": len(observed)})
        return pd.DataFrame(rows).set_index("model")

    def fold_summary(self) -> pd.DataFrame:
        """Per fold: sample counts, variants tested, the P+T threshold and SNP counts, λ."""
        rows = []
        for f in self.folds:
            rows.append({
                "fold": f.fold, "n_train": len(f.train), "n_test": len(f.test),
                "variants_tested": len(f.eqtl.rows),
                "baseline_snps": f.baseline.n_variants,
                "pt_threshold": f.pt.threshold, "pt_index_snps": f.pt.n_index,
                "pt_snps": f.pt.n_variants,
                "elastic_net_lambda": f.elastic_net.alpha,
                "elastic_net_snps": f.elastic_net.n_nonzero,
            })
        return pd.DataFrame(rows).set_index("fold")


def _fit_fold(window: CisWindow, codes: np.ndarray, expression: pd.Series,
              covariates: pd.DataFrame, gene_id: str, tss: int, folds: pd.Series, fold: int,
              settings: ModelSettings) -> tuple[FoldModels, np.ndarray, np.ndarray]:
    train, test = split(folds, fold)
    adjusted_train, adjusted_test = adjust_for_covariates(
        expression.loc[train].to_numpy(float), covariates.loc[:, train].to_numpy(float).T,
        expression.loc[test].to_numpy(float), covariates.loc[:, test].to_numpy(float).T)

    def scan(samples: Sequence[str]) -> EqtlResult:
        return map_cis_nominal(window, expression, covariates, gene_id=gene_id, tss=tss,
                               maf_threshold=settings.maf_threshold, samples=samples)

    eqtl = scan(train)
    inner = inner_folds(folds, fold, settings.n_inner_folds, settings.seed)
    clumping = {"r2": settings.clump_r2, "kb": settings.clump_kb, "p1": settings.clump_p1}
    scores = inner_scores(window, codes, train, inner, scan,
                          thresholds=settings.p_thresholds, **clumping)
    baseline = fit_baseline(window, train, eqtl, scores, adjusted_train)
    pt = fit_pt(window, codes, train, eqtl, scores, adjusted_train,
                thresholds=settings.p_thresholds, **clumping)
    position = {s: i for i, s in enumerate(train)}
    splits = []
    for inner_fold in sorted(set(inner.tolist())):
        is_test = inner.to_numpy() == inner_fold
        splits.append((np.array([position[s] for s in inner.index[~is_test]]),
                       np.array([position[s] for s in inner.index[is_test]])))
    train_dosages = window.subset(train)[eqtl.rows]
    net = fit_elastic_net(train_dosages, adjusted_train, splits, l1_ratio=settings.l1_ratio,
                          n_lambdas=settings.n_lambdas, seed=settings.seed)
    test_dosages = window.subset(test)[eqtl.rows]
    predictions = np.column_stack([baseline.predict(window, test), pt.predict(window, test),
                                   net.predict(test_dosages)])
    models = FoldModels(fold, train, test, eqtl, baseline, pt, net, eqtl.rows)
    return models, adjusted_test, predictions


def gene_models(genotypes: GenotypeMatrix | CisWindow, expression: pd.Series,
                covariates: pd.DataFrame, gene: Mapping, folds: pd.Series,
                settings: ModelSettings = ModelSettings()) -> GeneModels:
    """eQTL tables, permutation p-value and out-of-fold predictions of one gene.

    ``expression`` is a Series sample → expression; ``covariates`` covariates × samples;
    ``gene`` has ``gene_id`` and ``tss`` (0-based) and, optionally, ``cis_start``/``cis_end``;
    ``folds`` (from :func:`~apoe_assets.ml.folds.assign_folds`) names the samples used.
    """
    samples = folds.index.tolist()
    gene_id = str(gene["gene_id"])
    tss = int(gene["tss"])
    if len(set(folds.tolist())) < 2:
        raise FoldError("cross-validation needs at least 2 folds in the assignment")
    absent = [s for s in samples if s not in expression.index]
    if absent:
        raise CovariateError(f"{len(absent)} fold sample(s) have no expression for {gene_id}, "
                             f"e.g. {', '.join(map(str, absent[:3]))}")
    require_finite(expression.loc[samples].rename(gene_id), "expression of gene")
    window = (genotypes if isinstance(genotypes, CisWindow)
              else cis_window(genotypes, gene, samples, flank=settings.cis_window))
    eqtl = map_cis_nominal(window, expression, covariates, gene_id=gene_id, tss=tss,
                           maf_threshold=settings.maf_threshold, samples=samples)
    permutation = permutation_test(window, expression, covariates, gene_id=gene_id,
                                   n_permutations=settings.n_permutations, seed=settings.seed,
                                   maf_threshold=settings.maf_threshold, samples=samples)
    codes = genotype_codes(window.dosages)
    fitted: list[FoldModels] = []
    frames = []
    notes = list(eqtl.notes)
    for fold in fold_ids(folds):
        models, observed, predicted = _fit_fold(window, codes, expression, covariates, gene_id,
                                                tss, folds, fold, settings)
        fitted.append(models)
        frames.append(pd.DataFrame({FOLD: fold, "observed": observed,
                                    **{m: predicted[:, k] for k, m in enumerate(MODELS)}},
                                   index=pd.Index(models.test, name="sample")))
        notes.extend(f"fold {fold}: {n}" for n in (*models.eqtl.notes, *models.elastic_net.notes)
                     if n not in eqtl.notes)
    predictions = pd.concat(frames).loc[samples]
    return GeneModels(gene_id, eqtl, permutation, fitted, predictions,
                      tuple(dict.fromkeys(notes)))
