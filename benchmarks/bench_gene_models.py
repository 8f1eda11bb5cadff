"""One gene's genotype models end to end: ours (``gene_models``) vs the same pipeline assembled
from the field's tools (tensorQTL, ``plink1.9 --clump`` / ``--score … sum``, scikit-learn).

One generated GTEx-sized gene (:mod:`gtex_gene`: default 838 samples, ~15,000 msprime variants
with human-like LD in a 2-Mb cis window, a few missing calls, 6 covariates, h² = 0.1 over 5
common causal variants); baseline PRS, P+T PRS and elastic net on 5 outer × 5 inner folds
(:func:`~apoe_assets.ml.folds.assign_folds` / ``inner_folds``, the same folds on both sides).
Not timed: generating the gene, writing its files and PLINK's bed (plink2); module imports.
Timed, from the same files:

- ours: reading the VCF, expression BED and covariates with the project's readers,
  ``cis_window`` and one ``gene_models(…)`` call with ``ModelSettings(n_permutations=0)``.
- peers, as users assemble them: tensorQTL's ``genotypeio.load_genotypes`` of the bed and its
  ``read_phenotype_bed``; per training set (each outer training set and each of its inner
  training sets) ``cis.map_nominal`` (MAF ≥ 0.01, residualising on the covariates itself; its
  parquet written and read back), ``plink1.9 --clump`` (p1 1, r² 0.1, 250 kb, ``--keep`` the
  training set) and ``plink1.9 --score … sum`` per model (baseline, each P+T threshold) on the
  held-out samples, missing calls imputed with the training frequencies (``--read-freq`` of
  tensorQTL's ``af``). Each score is centred on its training set (less Σ weight × 2·af, as
  ours centres), so pooled inner scores share one origin. The threshold is the one whose pooled
  inner out-of-fold scores have the largest r² with the nested inner targets (expression less a
  ``[1, covariates]`` least-squares fit on the inner training samples, scikit-learn
  ``LinearRegression``); calibration a + b·score on the same pooled scores. Elastic net:
  scikit-learn on mean-imputed, standardised dosages (outer-training statistics) of the outer
  training set's tested variants, α (l1_ratio) 0.5, the same 50-λ grid, ``enet_path`` over the
  full grid per inner split with that split's nested targets (what ``ElasticNetCV`` runs per
  split; its single ``y`` cannot hold per-split targets), the λ of the smallest mean inner MSE,
  then ``ElasticNet`` at that λ on the outer training set (``max_iter`` and ``tol`` as ours,
  one process, as ``ElasticNetCV``'s default ``n_jobs``).

Before any figure is printed, both sides' choices are compared per outer fold: the tested
variants, the P+T threshold, the P+T index variants at that threshold and λ; any difference is
listed and the script exits with status 1. Index variants are compared up to perfect-LD twins
(identical or complementary genotype codes in the training samples): their p-values tie
exactly in theory, so which one leads a clump is rounding noise (float64 ours, float32
tensorQTL); the swaps are counted in the summary. The summary also gives the largest gaps of
the inner curves and of the out-of-fold predictions, and the CPU seconds of both sides (this
process and its PLINK children), steadier than wall time on a busy machine. The last line is

    gene_models: ratio=X (ours S s, peers P s)

with X = peer seconds / ours (> 1: ours is faster).

Run: OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_gene_models.py
[--samples 838] [--sites 15000] [--seed 1] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import resource
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from gtex_gene import FLANK, GeneFiles, write_gtex_gene
from sklearn.exceptions import ConvergenceWarning
from sklearn.impute import SimpleImputer
from sklearn.linear_model import ElasticNet, LinearRegression, enet_path
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from apoe_assets.genomics.fasta import ReferenceGenome
from apoe_assets.genomics.phenotypes import read_covariates, read_expression_bed
from apoe_assets.genomics.vcf import read_genotypes
from apoe_assets.ml.elastic_net import LAMBDA_MIN_RATIO, MAX_ITER, TOLERANCE, lambda_grid
from apoe_assets.ml.folds import assign_folds, inner_folds, split
from apoe_assets.ml.gene_models import MODELS, GeneModels, ModelSettings, gene_models
from apoe_assets.ml.metrics import r2_score
from apoe_assets.stats.eqtl import cis_window
from apoe_assets_tests.requirements import missing_tools
from apoe_assets_tests.stats.generated import CONTIG
from apoe_assets_tests.stats.peers import (
    PLINK_TOOLS,
    run_plink_clump,
    run_plink_score,
    write_keep,
    write_plink_bed,
)

QUICK = {"samples": 300, "sites": 2500}
"""--quick: a smoke-run size."""
PEER_STEPS = ("load", "tensorqtl", "plink_clump", "plink_score", "elastic_net", "other")
PLINK_MISSING = -9
"""tensorQTL's int8 code of a missing genotype."""
LAMBDA_RELATIVE = 1e-9
"""Two λ are the same grid value when this close (the grids are computed apart)."""


def cpu_seconds() -> float:
    """CPU seconds of this process and its finished children (PLINK), user + system."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


class Stopwatch:
    """Seconds per step, summed over the calls of ``with clock(step):``."""

    def __init__(self) -> None:
        self.seconds = dict.fromkeys(PEER_STEPS, 0.0)
        self.calls = dict.fromkeys(PEER_STEPS, 0)

    @contextlib.contextmanager
    def __call__(self, step: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[step] += time.perf_counter() - started
            self.calls[step] += 1


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """tensorQTL's progress lines and warnings silenced."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


with quiet():  # tensorQTL warns at import that R's qvalue is absent
    from tensorqtl import cis, core, genotypeio


# ---------------------------------------------------------------------------------- ours


@dataclass(frozen=True)
class OursRun:
    """Our results and seconds: reading the files (and the cis window), then the models."""

    result: GeneModels
    read_s: float
    models_s: float


def run_ours(files: GeneFiles, settings: ModelSettings) -> OursRun:
    """Read the study files with the project's readers, then one ``gene_models`` call."""
    started = time.perf_counter()
    reference = ReferenceGenome(files.reference)
    genotypes, _ = read_genotypes(files.vcf, CONTIG, reference)
    reference.close()
    expression = read_expression_bed(files.expression_bed)
    covariates = read_covariates(files.covariates_tsv)
    samples = list(expression.columns)
    folds = assign_folds(samples, settings.n_folds, settings.seed)
    window = cis_window(genotypes, files.gene, samples, flank=settings.cis_window)
    read_s = time.perf_counter() - started
    started = time.perf_counter()
    result = gene_models(window, expression.loc[files.gene["gene_id"]], covariates, files.gene,
                         folds, settings)
    return OursRun(result, read_s, time.perf_counter() - started)


# --------------------------------------------------------------------------------- peers


@dataclass(frozen=True)
class PeerFold:
    """What the assembled pipeline chose and predicted in one outer fold."""

    fold: int
    train: list[str]
    tested: list[str]
    threshold: float
    inner_r2: dict[float, float]
    index: list[str]
    """P+T index variants with p ≤ the chosen threshold."""
    lambdas: np.ndarray
    cv_mse: np.ndarray
    lam: float
    predicted: pd.DataFrame


@dataclass(frozen=True)
class TrainingScores:
    """One training set's scan and the centred scores of its models on held-out samples."""

    table: pd.DataFrame
    baseline: np.ndarray
    pt: np.ndarray
    """``[thresholds, held-out samples]``."""
    is_index: np.ndarray
    """Bool over the table's rows: the clump index variants."""


@dataclass(frozen=True)
class InnerCv:
    """Pooled inner out-of-fold scores of an outer training set (training order), their nested
    targets, and the inner splits (fit rows, held rows, fit targets, held targets)."""

    baseline: np.ndarray
    pt: np.ndarray
    target: np.ndarray
    splits: list[tuple]


@dataclass(frozen=True)
class PeerInputs:
    """What tensorQTL's readers load once: genotypes (int8, −9 missing) and their positions,
    phenotypes, covariates (samples × covariates)."""

    genotype_df: pd.DataFrame
    variant_df: pd.DataFrame
    phenotype_df: pd.DataFrame
    position_df: pd.DataFrame
    covariates_df: pd.DataFrame


def load_inputs(files: GeneFiles, bfile: Path) -> PeerInputs:
    """tensorQTL's readers: the bed, the expression BED and the covariates table."""
    with quiet():
        phenotype_df, position_df = core.read_phenotype_bed(str(files.expression_bed))
        covariates_df = pd.read_csv(files.covariates_tsv, sep="\t", index_col=0).T
        genotype_df, variant_df = genotypeio.load_genotypes(
            str(bfile), select_samples=phenotype_df.columns)
    return PeerInputs(genotype_df, variant_df, phenotype_df, position_df, covariates_df)


@dataclass
class Peer:
    """The field's tools on one gene's files, with per-step timing."""

    inputs: PeerInputs
    gene_id: str
    bfile: Path
    settings: ModelSettings
    folder: Path
    clock: Stopwatch
    runs: int = 0

    def _out(self, what: str) -> Path:
        self.runs += 1
        out = self.folder / f"{self.runs:04d}_{what}"
        out.mkdir(parents=True)
        return out

    def scan(self, samples: list[str]) -> pd.DataFrame:
        """tensorQTL ``cis.map_nominal`` of ``samples`` (its parquet written and read)."""
        data = self.inputs
        with self.clock("tensorqtl"), quiet():
            out = self._out("tensorqtl")
            cis.map_nominal(data.genotype_df, data.variant_df, data.phenotype_df[samples],
                            data.position_df, "peer", covariates_df=data.covariates_df.loc[samples],
                            maf_threshold=self.settings.maf_threshold,
                            window=self.settings.cis_window, output_dir=str(out))
            return pd.concat([pd.read_parquet(p)
                              for p in sorted(out.glob("peer.cis_qtl_pairs.*.parquet"))],
                             ignore_index=True)

    def clump(self, table: pd.DataFrame, samples: list[str]) -> list[str]:
        """``plink1.9 --clump`` of the table's p-values, LD from ``samples``."""
        with self.clock("plink_clump"):
            out = self._out("clump")
            clumps = run_plink_clump(
                self.bfile, pd.DataFrame({"SNP": table["variant_id"],
                                          "P": table["pval_nominal"]}), out,
                p1=self.settings.clump_p1, r2=self.settings.clump_r2,
                kb=self.settings.clump_kb, keep=write_keep(samples, out / "keep.txt"))
        return clumps["SNP"].tolist()

    def score(self, table: pd.DataFrame, chosen: np.ndarray, n_fit: int, samples: list[str]
              ) -> np.ndarray:
        """``plink1.9 --score … sum`` of ``samples`` with the table's rows ``chosen`` (bool)
        weighted by their slopes, missing calls at the training frequency (tensorQTL's ``af``
        over the ``n_fit`` training samples), centred by Σ weight × 2·af; 0 for every sample
        when no row is chosen."""
        if not chosen.any():
            return np.zeros(len(samples))
        rows = table[chosen]
        alleles = rows["variant_id"].str.split(":")
        with self.clock("plink_score"):
            out = self._out("score")
            weights = pd.DataFrame({"ID": rows["variant_id"], "A1": alleles.str[3],
                                    "W": rows["slope"]})
            frequencies = pd.DataFrame({"SNP": rows["variant_id"], "A1": alleles.str[3],
                                        "A2": alleles.str[2], "FREQ": rows["af"],
                                        "NCHROBS": 2 * n_fit})
            sums = run_plink_score(self.bfile, weights, out, frequencies=frequencies,
                                   keep=write_keep(samples, out / "keep.txt"))
        slopes, af = rows["slope"].to_numpy(np.float64), rows["af"].to_numpy(np.float64)
        return sums.loc[samples, "SCORESUM"].to_numpy() - slopes @ (2 * af)

    def training_scores(self, fit: list[str], held: list[str]) -> TrainingScores:
        """Scan, clump and score: the baseline and every P+T model of the training set
        ``fit``, scored on ``held``."""
        table = self.scan(fit)
        index = self.clump(table, fit)
        is_index = table["variant_id"].isin(set(index)).to_numpy()
        pvalues = table["pval_nominal"].to_numpy()
        baseline = self.score(table, np.ones(len(table), dtype=bool), len(fit), held)
        pt = np.array([self.score(table, is_index & (pvalues <= t), len(fit), held)
                       for t in self.settings.p_thresholds])
        return TrainingScores(table, baseline, pt, is_index)

    def targets(self, fit: list[str], held: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Expression adjusted for the covariates by a least-squares fit on ``fit`` only."""
        with self.clock("other"):
            covariates = self.inputs.covariates_df
            expression = self.inputs.phenotype_df.loc[self.gene_id]
            y_fit = expression[fit].to_numpy(np.float64)
            model = LinearRegression().fit(covariates.loc[fit], y_fit)
            y_held = expression[held].to_numpy(np.float64)
            return (y_fit - model.predict(covariates.loc[fit]),
                    y_held - model.predict(covariates.loc[held]))

    def inner_cv(self, train: list[str], inner: pd.Series) -> InnerCv:
        """Pooled inner out-of-fold scores and nested targets of the training samples."""
        position = {s: i for i, s in enumerate(train)}
        n_thresholds = len(self.settings.p_thresholds)
        pooled = InnerCv(np.zeros(len(train)), np.zeros((n_thresholds, len(train))),
                         np.zeros(len(train)), [])
        for k in sorted(set(inner.tolist())):
            fit = inner.index[inner.to_numpy() != k].tolist()
            held = inner.index[inner.to_numpy() == k].tolist()
            rows = np.array([position[s] for s in held])
            scores = self.training_scores(fit, held)
            y_fit, y_held = self.targets(fit, held)
            pooled.baseline[rows], pooled.pt[:, rows], pooled.target[rows] = (
                scores.baseline, scores.pt, y_held)
            pooled.splits.append((np.array([position[s] for s in fit]), rows, y_fit, y_held))
        return pooled

    def fold(self, fold: int, folds: pd.Series) -> PeerFold:
        """Every model of outer fold ``fold``: inner CV, then the outer training set."""
        train, test = split(folds, fold)
        inner = self.inner_cv(train, inner_folds(folds, fold, self.settings.n_inner_folds,
                                                 self.settings.seed))
        thresholds = self.settings.p_thresholds
        inner_r2 = {float(t): _r2(inner.target, inner.pt[k]) for k, t in enumerate(thresholds)}
        best = int(np.argmax(list(inner_r2.values())))
        outer = self.training_scores(train, test)
        y_train, y_test = self.targets(train, test)
        with self.clock("other"):
            baseline = _calibrated(inner.baseline, inner.target, outer.baseline)
            pt = _calibrated(inner.pt[best], inner.target, outer.pt[best])
        tested = outer.table["variant_id"].tolist()
        lambdas, cv_mse, lam, net = self.elastic_net(tested, train, test, y_train, inner.splits)
        chosen = outer.is_index & (outer.table["pval_nominal"].to_numpy() <= thresholds[best])
        predicted = pd.DataFrame({"baseline_prs": baseline, "pt_prs": pt, "elastic_net": net,
                                  "observed": y_test}, index=pd.Index(test, name="sample"))
        return PeerFold(fold, train, tested, float(thresholds[best]), inner_r2,
                        outer.table["variant_id"][chosen].tolist(), lambdas, cv_mse, lam,
                        predicted)

    def dosages(self, variant_ids: list[str], samples: list[str]) -> np.ndarray:
        """``[samples, variants]`` float dosages, NaN where missing."""
        block = self.inputs.genotype_df.loc[variant_ids, samples].to_numpy(np.float64).T
        block[block == PLINK_MISSING] = np.nan
        return block

    def elastic_net(self, tested: list[str], train: list[str], test: list[str],
                    y_train: np.ndarray, splits: list[tuple]
                    ) -> tuple[np.ndarray, np.ndarray, float, np.ndarray]:
        """λ grid, mean inner MSE per λ, the chosen λ and the test predictions."""
        with self.clock("elastic_net"), warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            prepare = make_pipeline(SimpleImputer(strategy="mean", keep_empty_features=True),
                                    StandardScaler())
            x_train = self.dosages(tested, train)
            x = prepare.fit_transform(x_train)
            lambdas = lambda_grid(x, y_train, self.settings.l1_ratio, self.settings.n_lambdas,
                                  LAMBDA_MIN_RATIO)
            cv_mse = np.mean([_path_mse(x, split, lambdas, self.settings.l1_ratio)
                              for split in splits], axis=0)
            lam = float(lambdas[int(np.argmin(cv_mse))])
            model = Pipeline([*prepare.steps, ("net", ElasticNet(
                alpha=lam, l1_ratio=self.settings.l1_ratio, max_iter=MAX_ITER, tol=TOLERANCE))])
            model.fit(x_train, y_train)
            return lambdas, cv_mse, lam, model.predict(self.dosages(tested, test))


def _path_mse(x: np.ndarray, split: tuple, lambdas: np.ndarray, l1_ratio: float) -> np.ndarray:
    """Held-out MSE along the whole λ path of one inner split, as ``ElasticNetCV`` computes it
    per split (centred training data, intercept = ȳ − x̄·w)."""
    fit, held, y_fit, y_held = split
    x_mean, y_mean = x[fit].mean(axis=0), y_fit.mean()
    _, coefs, _ = enet_path(x[fit] - x_mean, y_fit - y_mean, l1_ratio=l1_ratio, alphas=lambdas,
                            max_iter=MAX_ITER, tol=TOLERANCE)
    predicted = (x[held] - x_mean) @ coefs + y_mean
    return ((y_held[:, None] - predicted) ** 2).mean(axis=0)


def _r2(target: np.ndarray, scores: np.ndarray) -> float:
    """Squared Pearson correlation; 0 for constant scores."""
    if np.ptp(scores) == 0:
        return 0.0
    return float(np.corrcoef(target, scores)[0, 1] ** 2)


def _calibrated(inner: np.ndarray, target: np.ndarray, outer: np.ndarray) -> np.ndarray:
    """a + b·score fitted on pooled inner scores, applied to the outer test scores."""
    model = LinearRegression().fit(inner[:, None], target)
    return model.predict(outer[:, None])


def run_peers(files: GeneFiles, bfile: Path, settings: ModelSettings, folder: Path
              ) -> tuple[list[PeerFold], Stopwatch, pd.DataFrame]:
    """The assembled pipeline on every outer fold; its timing and the genotypes it read."""
    clock = Stopwatch()
    with clock("load"):
        inputs = load_inputs(files, bfile)
    peer = Peer(inputs, files.gene["gene_id"], bfile, settings, folder, clock)
    folds = assign_folds(list(inputs.phenotype_df.columns), settings.n_folds, settings.seed)
    fitted = []
    for fold in sorted(set(folds.tolist())):
        fitted.append(peer.fold(fold, folds))
        print(f"peers: fold {fold} done ({sum(clock.seconds.values()):.0f} s so far)",
              file=sys.stderr, flush=True)
    return fitted, clock, inputs.genotype_df


# ------------------------------------------------------------------------------ checking


def perfect_ld(a: np.ndarray, b: np.ndarray) -> bool:
    """Genotype codes (−9 missing) identical or complementary (2 − g), missing in the same
    samples: r² = 1, the same p-value, the same score (the slope flips with the allele)."""
    missing = a == PLINK_MISSING
    if not np.array_equal(missing, b == PLINK_MISSING):
        return False
    a, b = a[~missing], b[~missing]
    return bool(np.array_equal(a, b) or np.array_equal(a, 2 - b))


def twin_swaps(ours_only: set[str], peer_only: set[str], codes: pd.DataFrame
               ) -> tuple[list[str], list[str], int]:
    """Pair each index variant of one side only with a perfect-LD twin of the other side only
    (``codes``: variants × training samples). Their p-values tie mathematically, so which one
    leads the clump is rounding (ours in float64, tensorQTL's in float32). Returns the
    variants left unpaired on each side and the number of pairs."""
    left = sorted(peer_only)
    unpaired = []
    for variant in sorted(ours_only):
        twin = next((v for v in left if perfect_ld(codes.loc[variant].to_numpy(),
                                                   codes.loc[v].to_numpy())), None)
        if twin is None:
            unpaired.append(variant)
        else:
            left.remove(twin)
    return unpaired, left, len(ours_only) - len(unpaired)


@dataclass
class Comparison:
    """Differences in the per-fold choices (none: both chose the same), and the index
    variants that differ only by a perfect-LD twin."""

    problems: list[str]
    twin_swaps: dict[int, int]


def compare(ours: GeneModels, peers: list[PeerFold], genotypes: pd.DataFrame) -> Comparison:
    """Per fold: tested variants, P+T threshold, P+T index variants (up to perfect-LD twins)
    and λ."""
    result = Comparison([], {})
    for mine, theirs in zip(ours.folds, peers, strict=True):
        name = f"fold {mine.fold}"
        tested = mine.eqtl.table["variant_id"].tolist()
        if tested != theirs.tested:
            gap = set(tested) ^ set(theirs.tested)
            result.problems.append(f"{name}: tested variants differ ({len(tested)} ours, "
                                   f"{len(theirs.tested)} tensorQTL; {len(gap)} in one only, "
                                   f"e.g. {sorted(gap)[:3]})")
        if mine.pt.threshold != theirs.threshold:
            result.problems.append(f"{name}: P+T threshold {mine.pt.threshold:g} ours, "
                                   f"{theirs.threshold:g} peers (inner r² ours "
                                   f"{_curve(mine.pt.inner_r2)}; peers "
                                   f"{_curve(theirs.inner_r2)})")
        index = set(mine.pt.variant_ids[mine.pt.weights != 0])
        ours_only, peer_only, swaps = twin_swaps(index - set(theirs.index),
                                                 set(theirs.index) - index,
                                                 genotypes.loc[:, theirs.train])
        result.twin_swaps[mine.fold] = swaps
        if ours_only or peer_only:
            result.problems.append(f"{name}: P+T index variants differ ({len(index)} ours, "
                                   f"{len(theirs.index)} PLINK; ours only {ours_only[:3]}, "
                                   f"PLINK only {peer_only[:3]}, beyond {swaps} perfect-LD "
                                   "twin swaps)")
        if not np.isclose(mine.elastic_net.alpha, theirs.lam, rtol=LAMBDA_RELATIVE, atol=0):
            net = mine.elastic_net
            result.problems.append(
                f"{name}: λ {net.alpha:.6g} ours (grid step {_step(net.lambdas, net.alpha)}, "
                f"curve evaluated to step {_last_step(net.cv_mse)}), {theirs.lam:.6g} "
                f"scikit-learn (step {_step(theirs.lambdas, theirs.lam)})")
    return result


def _curve(inner_r2: dict[float, float]) -> str:
    return ", ".join(f"{t:g}: {r:.5f}" for t, r in inner_r2.items())


def _step(lambdas: np.ndarray, lam: float) -> int:
    return int(np.argmin(np.abs(np.log(lambdas / lam)))) if len(lambdas) else -1


def _last_step(cv_mse: np.ndarray) -> int:
    evaluated = np.flatnonzero(~np.isnan(cv_mse))
    return int(evaluated[-1]) if len(evaluated) else -1


def agreement(ours: GeneModels, peers: list[PeerFold]) -> pd.DataFrame:
    """Per model: pooled out-of-fold R² of both sides and the largest prediction gap (in SDs
    of our predictions)."""
    theirs = pd.concat([f.predicted for f in peers]).loc[ours.predictions.index]
    rows = []
    for model in MODELS:
        mine = ours.predictions[model].to_numpy()
        gap = np.abs(mine - theirs[model].to_numpy()).max() / max(mine.std(), 1e-300)
        rows.append({"model": model,
                     "r2_ours": r2_score(ours.predictions["observed"], mine),
                     "r2_peers": r2_score(theirs["observed"], theirs[model]),
                     "max_gap_sd": gap})
    return pd.DataFrame(rows).set_index("model")


def curve_gaps(ours: GeneModels, peers: list[PeerFold]) -> tuple[float, float]:
    """Largest gaps of the P+T inner r² curves (absolute) and of the elastic-net inner MSE
    curves where ours evaluated them (relative)."""
    r2_gap = max(abs(mine.pt.inner_r2[t] - theirs.inner_r2[t])
                 for mine, theirs in zip(ours.folds, peers, strict=True) for t in theirs.inner_r2)
    mse_gap = 0.0
    for mine, theirs in zip(ours.folds, peers, strict=True):
        evaluated = ~np.isnan(mine.elastic_net.cv_mse)
        if evaluated.any() and len(theirs.cv_mse) == len(evaluated):
            mse_gap = max(mse_gap, float(np.max(
                np.abs(mine.elastic_net.cv_mse[evaluated] - theirs.cv_mse[evaluated])
                / theirs.cv_mse[evaluated])))
    return r2_gap, mse_gap


# ------------------------------------------------------------------------------ printing


def print_summary(files: GeneFiles, ours: OursRun, peers: list[PeerFold],
                  comparison: Comparison) -> None:
    result = ours.result
    summary = result.fold_summary()
    print(f"{len(files.samples)} samples, {files.n_sites} variants in a {2 * FLANK // 1000} kb "
          f"cis window ({files.n_missing} missing calls), 6 covariates, h² 0.1 over "
          f"{len(files.causal)} causal variants; {len(peers)} outer × "
          f"{ModelSettings().n_inner_folds} inner folds")
    for fold, row in summary.iterrows():
        print(f"  fold {fold}: {int(row['variants_tested'])} tested, P+T threshold "
              f"{row['pt_threshold']:g} ({int(row['pt_snps'])} index SNPs"
              f"{_twins(comparison.twin_swaps[fold])}), λ {row['elastic_net_lambda']:.4g} "
              f"({int(row['elastic_net_snps'])} non-zero): the same on both sides")
    r2_gap, mse_gap = curve_gaps(result, peers)
    print(f"inner curves: P+T r² within {r2_gap:.1e}, elastic-net MSE within {mse_gap:.1e} "
          "relative (where ours evaluated it)")
    table = agreement(result, peers)
    print("out-of-fold R² (ours / peers), largest prediction gap in SDs: " + "; ".join(
        f"{m} {r['r2_ours']:.4f} / {r['r2_peers']:.4f}, {r['max_gap_sd']:.1e}"
        for m, r in table.iterrows()))


def _twins(swaps: int) -> str:
    return f", {swaps} swapped for a perfect-LD twin" if swaps else ""


def print_timings(ours: OursRun, clock: Stopwatch, cpu: dict[str, float]) -> None:
    print(f"CPU seconds (this process and its children): ours {cpu['ours']:.1f}, peers "
          f"{cpu['peers']:.1f} (ratio {cpu['peers'] / cpu['ours']:.2f})")
    print(f"ours: reading files + cis window {ours.read_s:.2f} s, gene_models "
          f"{ours.models_s:.2f} s")
    print("peers: " + ", ".join(f"{step} {clock.seconds[step]:.2f} s ({clock.calls[step]}×)"
                                for step in PEER_STEPS))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=838)
    parser.add_argument("--sites", type=int, default=15_000,
                        help="expected segregating sites in the window (msprime varies it)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: {QUICK['samples']} samples, ~{QUICK['sites']} sites")
    args = parser.parse_args()
    if args.quick:
        args.samples, args.sites = QUICK["samples"], QUICK["sites"]
    if missing := missing_tools(*PLINK_TOOLS):
        raise SystemExit(f"{', '.join(missing)} must be on the PATH")
    settings = ModelSettings(n_permutations=0, seed=args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        files = write_gtex_gene(tmp / "gene", n_samples=args.samples, n_sites=args.sites,
                                seed=args.seed)
        bfile = write_plink_bed(files.vcf, tmp / "plink" / "genotypes")
        cpu_started = cpu_seconds()
        ours = run_ours(files, settings)
        cpu = {"ours": cpu_seconds() - cpu_started}
        print(f"ours: done in {ours.read_s + ours.models_s:.0f} s", file=sys.stderr, flush=True)
        started, cpu_started = time.perf_counter(), cpu_seconds()
        peers, clock, genotypes = run_peers(files, bfile, settings, tmp / "peers")
        peer_s = time.perf_counter() - started
        cpu["peers"] = cpu_seconds() - cpu_started
    comparison = compare(ours.result, peers, genotypes)
    if comparison.problems:
        print("choices differ between ours and the peers:")
        print("\n".join(f"  {p}" for p in comparison.problems))
        raise SystemExit(1)
    print_summary(files, ours, peers, comparison)
    print_timings(ours, clock, cpu)
    ours_s = ours.read_s + ours.models_s
    print(f"gene_models: ratio={peer_s / ours_s:.2f} (ours {ours_s:.2f} s, peers {peer_s:.2f} s)")


if __name__ == "__main__":
    main()
