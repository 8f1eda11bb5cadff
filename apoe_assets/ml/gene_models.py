"""Everything genotype-only for one gene: eQTL tables, three out-of-fold predictors, metrics.

For each outer fold, only its training samples are used to adjust expression for the
covariates, scan the cis window, clump, choose the P+T threshold and λ (inner folds, each with
its own covariate fit: :mod:`~apoe_assets.ml.inner_cv`) and calibrate the scores; the fold's
test samples are then predicted. The target of every model
is covariate-adjusted expression: the training fit of ``[1, covariates]`` is subtracted from
the test samples' expression, so the test samples never inform it either.

Bad input fails before any fitting, with the reason: NaN in expression or covariates, samples
without expression, fewer samples than the folds need, inner training sets too small for the
covariates. A gene with nothing to test (no variant in the window, none polymorphic with MAF ≥
the threshold) gives a well-formed result with a note: every model predicts the training mean;
when the expression itself is constant after removing the covariates, its metrics are NaN too.
A variant that is monomorphic in one fold's training samples is left out of that fold only
(counted in the fold's notes).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from apoe_assets.genomics.genotypes import GenotypeMatrix
from apoe_assets.ml.elastic_net import L1_RATIO, N_LAMBDAS, ElasticNetFit, fit_elastic_net
from apoe_assets.ml.fold_scans import StoredFoldScans
from apoe_assets.ml.folds import (
    FOLD,
    FOLDS,
    INNER_FOLDS,
    FoldError,
    fold_ids,
    inner_folds,
    split,
)
from apoe_assets.ml.inner_cv import held_out_targets, inner_splits
from apoe_assets.ml.metrics import pearson_r, r2_score
from apoe_assets.ml.prs_models import (
    InnerScores,
    PrsFit,
    dosage_block,
    fit_baseline,
    fit_pt,
    inner_scores,
)
from apoe_assets.stats.eqtl import (
    DEFAULT_WINDOW,
    MAF_THRESHOLD,
    PERMUTATIONS,
    CisWindow,
    EqtlResult,
    PermutationResult,
    cis_window,
    map_cis_nominal,
    permutation_test,
)
from apoe_assets.stats.ld import DEFAULT_KB, DEFAULT_P1, DEFAULT_R2, genotype_codes
from apoe_assets.stats.provenance import StaleScan, StoredScan, scan_fingerprint
from apoe_assets.stats.prs import P_THRESHOLDS
from apoe_assets.stats.residualise import (
    CovariateError,
    Residualiser,
    adjust_for_covariates,
    explained_entirely,
    require_finite,
)

MODELS = ("baseline_prs", "pt_prs", "elastic_net")
MODELS_VERSION = "2"
"""Code version of the genotype models' results (2: centred scores, nested inner folds);
bump it when a change alters what :func:`gene_models` returns."""
SCORES = ("baseline_prs", "pt_prs")
"""Genotype scores offered to stacked models (their inner out-of-fold values are kept)."""
STACKING_COLUMNS = [FOLD, "sample", "role", "target", *SCORES]
WEIGHT_COLUMNS = ["fold", "model", "variant_id", "pos", "weight", "mean_dosage", "intercept",
                  "scale"]


class FoldTableMismatch(StaleScan):
    """A stored per-fold eQTL table was made from other inputs than this fold's training
    samples, settings or code."""


@dataclass(frozen=True)
class ModelSettings:
    """Settings of the genotype models (the study file's values; defaults as the issue)."""

    n_folds: int = FOLDS
    n_inner_folds: int = INNER_FOLDS
    seed: int = 0
    cis_window: int = DEFAULT_WINDOW
    maf_threshold: float = MAF_THRESHOLD
    n_permutations: int = PERMUTATIONS
    p_thresholds: tuple[float, ...] = P_THRESHOLDS
    clump_p1: float = DEFAULT_P1
    clump_r2: float = DEFAULT_R2
    clump_kb: float = DEFAULT_KB
    l1_ratio: float = L1_RATIO
    n_lambdas: int = N_LAMBDAS


@dataclass(frozen=True)
class FoldModels:
    """The models of one outer fold, fitted on its training samples only, and their
    predictions of its test samples."""

    fold: int
    train: list[str]
    test: list[str]
    eqtl: EqtlResult
    baseline: PrsFit
    pt: PrsFit
    elastic_net: ElasticNetFit
    observed: np.ndarray
    """The test samples' covariate-adjusted expression (training covariate fit)."""
    predicted: pd.DataFrame
    """One column per model, indexed by the test samples."""
    train_target: np.ndarray
    """The training samples' covariate-adjusted expression (training covariate fit)."""
    inner_predicted: pd.DataFrame
    """Baseline and P+T predictions of the training samples from inner models that never saw
    them (the inner out-of-fold scores, calibrated as the outer model), indexed by the training
    samples: the only genotype scores a model stacked on this fold may train on."""

    def stacking_rows(self) -> pd.DataFrame:
        """This fold's rows of :meth:`GeneModels.stacking_scores`."""
        train = self.inner_predicted.assign(role="train", target=self.train_target)
        test = self.predicted[list(SCORES)].assign(role="test", target=self.observed)
        rows = pd.concat([train, test]).rename_axis("sample").reset_index()
        return rows.assign(**{FOLD: self.fold})[STACKING_COLUMNS]

    def weights(self, model: str) -> pd.Series:
        """Per-variant weights (raw dosage scale) of the score behind ``model``'s prediction,
        indexed by the fold's tested variants."""
        ids = self.eqtl.table["variant_id"].to_numpy()
        if model == "elastic_net":
            return pd.Series(self.elastic_net.weights, index=ids, name=model)
        fit = {"baseline_prs": self.baseline, "pt_prs": self.pt}[model]
        return pd.Series(fit.weights, index=fit.variant_ids, name=model)

    def weight_table(self) -> pd.DataFrame:
        """Non-zero weights of every model, in :data:`WEIGHT_COLUMNS`: a test sample's
        prediction is ``intercept + scale × Σ weight × dosage`` (a missing dosage counts as
        ``mean_dosage``, the training mean), the plain sum PLINK's ``--score … sum`` computes;
        the PRS intercepts absorb the centring (calibration intercept − slope × Σ weight ×
        mean). A model with no non-zero weight keeps one row with no variant, so its intercept
        is stored too."""
        positions = self.eqtl.table["pos"].to_numpy(np.int64)
        parts = []
        for model in MODELS:
            if model == "elastic_net":
                fit, intercept, scale = self.elastic_net, self.elastic_net.intercept, 1.0
            else:
                fit = {"baseline_prs": self.baseline, "pt_prs": self.pt}[model]
                scale = fit.calibration.slope
                intercept = fit.calibration.intercept - scale * fit.offset
            weights = np.asarray(fit.weights, dtype=np.float64)
            keep = np.flatnonzero(weights != 0)
            part = pd.DataFrame({
                "variant_id": pd.array(self.eqtl.table["variant_id"].to_numpy()[keep],
                                       dtype="string"),
                "pos": pd.array(positions[keep], dtype="Int64"),
                "weight": weights[keep], "mean_dosage": np.asarray(fit.means)[keep]})
            if part.empty:
                part = pd.DataFrame({"variant_id": pd.array([pd.NA], dtype="string"),
                                     "pos": pd.array([pd.NA], dtype="Int64"),
                                     "weight": [0.0], "mean_dosage": [np.nan]})
            parts.append(part.assign(fold=self.fold, model=model, intercept=float(intercept),
                                     scale=float(scale)))
        return pd.concat(parts, ignore_index=True)[WEIGHT_COLUMNS]


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
    scored: bool = True
    """False when the expression is constant after removing the covariates: what is left is
    rounding, so no metric means anything (they are NaN)."""

    def metrics(self) -> pd.DataFrame:
        """Per model: pooled out-of-fold R² and Pearson r, and the mean per-fold R² (NaN for
        a gene that is not :attr:`scored`)."""
        rows = []
        observed = self.predictions["observed"].to_numpy()
        for model in MODELS:
            if not self.scored:
                rows.append({"model": model, "r2": np.nan, "pearson_r": np.nan,
                             "mean_fold_r2": np.nan, "n": len(observed)})
                continue
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
                "pt_threshold": np.nan if f.pt.threshold is None else f.pt.threshold,
                "pt_inner_r2": f.pt.inner_r2.get(f.pt.threshold, np.nan),
                "pt_index_snps": f.pt.n_index or 0,
                "pt_snps": f.pt.n_variants,
                "elastic_net_lambda": f.elastic_net.alpha,
                "elastic_net_snps": f.elastic_net.n_nonzero,
            })
        return pd.DataFrame(rows).set_index("fold")

    def stacking_scores(self) -> pd.DataFrame:
        """Per outer fold, the genotype scores a model stacked on that fold may use, in
        :data:`STACKING_COLUMNS`: ``role`` "train" rows hold each training sample's inner
        out-of-fold scores and training target, "test" rows the fold's test predictions and
        observed target. A training sample's *outer* out-of-fold score came from models fitted
        on folds that include this fold's test samples, so it is never offered."""
        return pd.concat([f.stacking_rows() for f in self.folds], ignore_index=True)

    def weight_table(self) -> pd.DataFrame:
        """Every fold's :meth:`FoldModels.weight_table`, stacked."""
        return pd.concat([f.weight_table() for f in self.folds], ignore_index=True)


def trusted_scan(stored: StoredScan, window: CisWindow, expression: pd.Series,
                 covariates: pd.DataFrame, samples: Sequence[str], label: str,
                 settings: ModelSettings) -> EqtlResult:
    """A stored scan of ``samples`` when its fingerprint is that of these inputs; else
    :class:`FoldTableMismatch` naming the scan (``label``: "fold 0", "all samples") and what
    differs (nothing is rescanned: a stale table must be re-materialised, not patched)."""
    expected = scan_fingerprint(window, expression, covariates, samples,
                                settings.maf_threshold)
    differ = stored.differences(expected)
    if differ:
        what = "training eQTL table" if label.startswith("fold") else "eQTL table"
        raise FoldTableMismatch(
            f"{label}: the stored {what} was made from other "
            f"{', '.join(differ)} than this run's ({len(samples)} samples, "
            f"{len(window.variants)} window variants, MAF ≥ {settings.maf_threshold:g}, scan "
            f"code version {expected['code']}, stored {stored.fingerprint.get('code')}); "
            "re-materialise cis_eqtl for this gene")
    return stored.result(window)


def fit_fold(window: CisWindow, codes: np.ndarray, expression: pd.Series,
             covariates: pd.DataFrame, gene_id: str, tss: int, folds: pd.Series, fold: int,
             settings: ModelSettings, stored: StoredScan | None = None) -> FoldModels:
    """Every model of outer fold ``fold`` from its training samples, and its test predictions.

    ``codes`` are :func:`~apoe_assets.stats.ld.genotype_codes` of the window; ``stored``, when
    given, is the fold's stored training scan, used instead of scanning again once its
    fingerprint matches (else :class:`FoldTableMismatch`).
    """
    train, test = split(folds, fold)
    adjusted_train, adjusted_test = adjust_for_covariates(
        expression.loc[train].to_numpy(float), covariates.loc[:, train].to_numpy(float).T,
        expression.loc[test].to_numpy(float), covariates.loc[:, test].to_numpy(float).T)

    def scan(samples: Sequence[str]) -> EqtlResult:
        return map_cis_nominal(window, expression, covariates, gene_id=gene_id, tss=tss,
                               maf_threshold=settings.maf_threshold, samples=samples)

    eqtl = (scan(train) if stored is None else
            trusted_scan(stored, window, expression, covariates, train, f"fold {fold}",
                         settings))
    splits = inner_splits(train, inner_folds(folds, fold, settings.n_inner_folds, settings.seed),
                          expression, covariates)
    held_out = held_out_targets(splits, len(train))
    clumping = {"r2": settings.clump_r2, "kb": settings.clump_kb, "p1": settings.clump_p1}
    scores = inner_scores(window, codes, train, splits, scan,
                          thresholds=settings.p_thresholds, **clumping)
    baseline = fit_baseline(window, train, eqtl, scores, held_out)
    pt = fit_pt(window, codes, train, eqtl, scores, held_out,
                thresholds=settings.p_thresholds, **clumping)
    net = fit_elastic_net(dosage_block(window, eqtl.rows, train), adjusted_train, splits,
                          l1_ratio=settings.l1_ratio, n_lambdas=settings.n_lambdas)
    predicted = pd.DataFrame({"baseline_prs": baseline.predict(window, test),
                              "pt_prs": pt.predict(window, test),
                              "elastic_net": net.predict(dosage_block(window, eqtl.rows, test))},
                             index=pd.Index(test, name="sample"))
    return FoldModels(fold, train, test, eqtl, baseline, pt, net, adjusted_test, predicted,
                      adjusted_train, _inner_predictions(train, scores, baseline, pt,
                                                         settings.p_thresholds))


def _inner_predictions(train: Sequence[str], scores: InnerScores, baseline: PrsFit, pt: PrsFit,
                       thresholds: Sequence[float]) -> pd.DataFrame:
    """The training samples' inner out-of-fold scores through the outer models' calibrations
    (P+T at its chosen threshold; nothing tested: the calibration's constant)."""
    pt_scores = (scores.pt[list(thresholds).index(pt.threshold)] if pt.threshold is not None
                 else np.zeros(len(train)))
    return pd.DataFrame({"baseline_prs": baseline.calibration.apply(scores.baseline),
                         "pt_prs": pt.calibration.apply(pt_scores)},
                        index=pd.Index(list(train), name="sample"))


def check_design(folds: pd.Series, covariates: pd.DataFrame, n_inner_folds: int) -> None:
    """Clear errors when the folds cannot be filled or an inner training set is too small
    for the covariates (a scan needs covariates + 3 samples)."""
    n_covariates = covariates.shape[0]
    for fold in fold_ids(folds):
        train = split(folds, fold)[0]
        if len(train) < n_inner_folds:
            raise FoldError(f"outer fold {fold} leaves {len(train)} training samples, too few "
                            f"for {n_inner_folds} inner folds")
        smallest = len(train) - math.ceil(len(train) / n_inner_folds)  # less the largest fold
        if smallest < n_covariates + 3:
            raise CovariateError(
                f"{len(folds)} samples in {len(fold_ids(folds))} outer × {n_inner_folds} inner "
                f"folds leave inner training sets of {smallest} samples, too few for "
                f"{n_covariates} covariates (a scan needs covariates + 3 = {n_covariates + 3}); "
                "use fewer folds or covariates, or more samples")


def gene_models(genotypes: GenotypeMatrix | CisWindow, expression: pd.Series,
                covariates: pd.DataFrame, gene: Mapping, folds: pd.Series,
                settings: ModelSettings = ModelSettings(),
                stored: StoredFoldScans | None = None) -> GeneModels:
    """eQTL tables, permutation p-value and out-of-fold predictions of one gene.

    ``expression`` is a Series sample → expression; ``covariates`` covariates × samples;
    ``gene`` has ``gene_id`` and ``tss`` (0-based) and, optionally, ``cis_start``/``cis_end``;
    ``folds`` (from :func:`~apoe_assets.ml.folds.assign_folds`) names the samples used.
    ``stored``, the scans ``cis_eqtl`` stored (all samples, each fold's training samples), are
    used instead of new scans once their fingerprints match these inputs (else
    :class:`FoldTableMismatch`).
    ``settings.n_permutations`` 0 skips the gene-level permutation test.
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
    absent = [s for s in samples if s not in covariates.columns]
    if absent:
        raise CovariateError(f"{len(absent)} fold sample(s) have no covariates, e.g. "
                             f"{', '.join(map(str, absent[:3]))}")
    require_finite(covariates.loc[:, samples], "covariate")
    check_design(folds, covariates, settings.n_inner_folds)
    if stored is not None and set(stored.per_fold) != set(fold_ids(folds)):
        raise FoldTableMismatch(f"eQTL tables for folds {sorted(stored.per_fold)} but the "
                                f"assignment has folds {fold_ids(folds)}")
    window = (genotypes if isinstance(genotypes, CisWindow)
              else cis_window(genotypes, gene, samples, flank=settings.cis_window))
    eqtl = (map_cis_nominal(window, expression, covariates, gene_id=gene_id, tss=tss,
                            maf_threshold=settings.maf_threshold, samples=samples)
            if stored is None else
            trusted_scan(stored.full, window, expression, covariates, samples, "all samples",
                         settings))
    permutation = permutation_test(window, expression, covariates, gene_id=gene_id,
                                   n_permutations=settings.n_permutations, seed=settings.seed,
                                   maf_threshold=settings.maf_threshold, samples=samples)
    codes = genotype_codes(window.dosages)
    fitted: list[FoldModels] = []
    frames = []
    notes = list(eqtl.notes)
    for fold in fold_ids(folds):
        models = fit_fold(window, codes, expression, covariates, gene_id, tss, folds, fold,
                          settings, None if stored is None else stored.per_fold[fold])
        fitted.append(models)
        frames.append(pd.DataFrame({FOLD: fold, "observed": models.observed},
                                   index=models.predicted.index).join(models.predicted))
        notes.extend(f"fold {fold}: {n}" for n in (*models.eqtl.notes, *models.elastic_net.notes)
                     if n not in eqtl.notes)
    if not len(eqtl.rows) or any(not len(f.eqtl.rows) for f in fitted):
        notes.append("nothing tested in some fold: its models predict the training mean")
    values = expression.loc[samples].to_numpy(np.float64)
    scored = not explained_entirely(values, Residualiser.fit(covariates, samples)
                                    .transform(values))
    if not scored:
        notes.append("expression is constant after removing the covariates: no model is "
                     "scored (metrics NaN)")
    predictions = pd.concat(frames).loc[samples]
    return GeneModels(gene_id, eqtl, permutation, fitted, predictions,
                      tuple(dict.fromkeys(notes)), scored)
