"""The demo study loaded for the genotype-model tests, and the figures they rest on.

``python -m apoe_assets_tests.ml.demo [SYMBOL …]`` prints, per demo gene (default: every gene
of the annotation), the out-of-fold R² of each model beside the planted truth, the null genes'
mean R² and the seconds per gene.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from functools import cache, cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from apoe_assets.genomics.annotation import read_annotation
from apoe_assets.genomics.fasta import ReferenceGenome
from apoe_assets.genomics.genotypes import MISSING, GenotypeMatrix
from apoe_assets.genomics.phenotypes import read_covariates, read_expression_bed
from apoe_assets.genomics.vcf import read_genotypes
from apoe_assets.ml.folds import assign_folds
from apoe_assets.ml.gene_models import MODELS, GeneModels, ModelSettings, gene_models
from apoe_assets.stats.eqtl import CisWindow, cis_window, impute_mean

DEMO = Path(__file__).resolve().parents[2] / "data" / "demo"
CHROM = "chr19"


@dataclass
class Demo:
    """The demo's genotypes, expression, covariates, genes, truth and fold assignment, and
    the genotype models fitted with the study's settings (cached per gene)."""

    genotypes: GenotypeMatrix
    expression: pd.DataFrame
    covariates: pd.DataFrame
    genes: pd.DataFrame
    """Indexed by symbol."""
    truth: pd.DataFrame
    """Planted truth per gene, indexed by symbol."""
    causal: pd.DataFrame
    folds: pd.Series
    settings: ModelSettings
    fitted: dict[str, GeneModels] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def gene(self, symbol: str) -> dict:
        row = self.genes.loc[symbol]
        return {"gene_id": row["gene_id"], "tss": int(row["tss"])}

    def window(self, symbol: str) -> CisWindow:
        return cis_window(self.genotypes, self.gene(symbol), self.folds.index.tolist(),
                          flank=self.settings.cis_window)

    def models(self, symbol: str) -> GeneModels:
        if symbol not in self.fitted:
            started = time.perf_counter()
            gene = self.gene(symbol)
            self.fitted[symbol] = gene_models(self.window(symbol),
                                              self.expression.loc[gene["gene_id"]],
                                              self.covariates, gene, self.folds, self.settings)
            self.seconds[symbol] = time.perf_counter() - started
        return self.fitted[symbol]

    def genetic_term(self, symbol: str) -> np.ndarray:
        """The planted SNP term of ``symbol`` over the fold samples (Σ effect × dosage of its
        causal variants, a missing call imputed with the variant's mean; 0 without any)."""
        samples = self.folds.index.tolist()
        causal = self.causal[self.causal["symbol"] == symbol]
        if causal.empty:
            return np.zeros(len(samples))
        column = {s: i for i, s in enumerate(self.genotypes.samples)}
        columns = np.array([column[s] for s in samples])
        row_of = {v: i for i, v in enumerate(self.genotypes.variants["variant_id"])}
        rows = [row_of[v] for v in causal["variant_id"]]
        haps = self.genotypes.haplotypes[rows][:, np.stack([2 * columns, 2 * columns + 1], 1)]
        dosages = haps.sum(axis=2).astype(float)
        dosages[(haps == MISSING).any(axis=2)] = np.nan  # imputed below, not −1 alleles
        return causal["effect"].to_numpy() @ impute_mean(dosages)

    @cached_property
    def adjusted_ceiling(self) -> pd.Series:
        """Per gene: the planted genetic term's share of the variance of covariate-adjusted
        expression — the R² a perfect genotype model reaches on the models' target."""
        samples = self.folds.index.tolist()
        design = np.column_stack([np.ones(len(samples)),
                                  self.covariates.loc[:, samples].to_numpy(float).T])
        projection = design @ np.linalg.pinv(design)
        values = {}
        for symbol, truth in self.truth.iterrows():
            genetic = self.genetic_term(symbol)
            y = self.expression.loc[truth["gene_id"], samples].to_numpy(float)
            rg, ry = genetic - projection @ genetic, y - projection @ y
            values[symbol] = float(rg @ rg / (ry @ ry))
        return pd.Series(values, name="adjusted_ceiling")

    def snp_only(self) -> pd.DataFrame:
        """Truth rows of genes whose genetic signal is only the listed causal SNPs (no demo
        Enformer component, which is driven by variants not in causal_variants.tsv)."""
        return self.truth[self.truth["enformer_share"] == 0]


def load_demo(settings: ModelSettings | None = None) -> Demo:
    """The bundled demo with the study's seed, folds and cis window (5 outer × 5 inner)."""
    study = yaml.safe_load((DEMO / "study.yaml").read_text())
    reference = ReferenceGenome(DEMO / study["reference_fasta"])
    genotypes, _ = read_genotypes(DEMO / study["genotypes"], CHROM, reference)
    reference.close()
    expression = read_expression_bed(DEMO / study["expression"])
    samples = [s for s in genotypes.samples if s in set(expression.columns)]
    seed = int(study["seed"])
    settings = settings or ModelSettings(seed=seed, cis_window=int(study["cis_window"]),
                                         n_permutations=0)
    truth = pd.read_csv(DEMO / "truth" / "genes.tsv", sep="\t").set_index("symbol")
    return Demo(genotypes, expression, read_covariates(DEMO / study["covariates"]),
                read_annotation(DEMO / study["annotation"]).set_index("symbol"), truth,
                pd.read_csv(DEMO / "truth" / "causal_variants.tsv", sep="\t"),
                assign_folds(samples, int(study.get("folds", 5)), seed), settings)


@cache
def shared_demo() -> Demo:
    """One :func:`load_demo` per test process, so every test module shares its fitted genes."""
    return load_demo()


def figures(demo: Demo, symbols: list[str]) -> pd.DataFrame:
    """Per gene: planted h², its share of covariate-adjusted expression, each model's pooled
    out-of-fold R², the best, the P+T threshold chosen in each outer fold, and seconds."""
    rows = []
    for symbol in symbols:
        models = demo.models(symbol)
        metrics = models.metrics()["r2"]
        thresholds = models.fold_summary()["pt_threshold"]
        truth = demo.truth.loc[symbol]
        rows.append({"gene": symbol, "h2_realised": truth["h2_realised"],
                     "enformer_share": truth["enformer_share"],
                     "adjusted_ceiling": demo.adjusted_ceiling[symbol],
                     **{m: metrics[m] for m in MODELS}, "best": metrics.max(),
                     "pt_thresholds": " ".join(f"{t:g}" for t in thresholds),
                     "seconds": demo.seconds[symbol]})
    return pd.DataFrame(rows).set_index("gene")


def main(symbols: list[str]) -> None:
    demo = load_demo()
    table = figures(demo, symbols or demo.truth.index.tolist())
    pd.set_option("display.width", 200)
    print(table.round(3).to_string())
    snp_only = table[table["enformer_share"] == 0]
    null = snp_only[snp_only["h2_realised"] == 0]
    planted = snp_only[snp_only["h2_realised"] > 0]
    print(f"null genes ({len(null)}): mean R² " + ", ".join(
        f"{m} {null[m].mean():.4f}" for m in MODELS))
    print(f"planted SNP-only genes ({len(planted)}): mean best R² {planted['best'].mean():.3f}, "
          f"mean h2_realised {planted['h2_realised'].mean():.3f}, mean adjusted ceiling "
          f"{planted['adjusted_ceiling'].mean():.3f}")
    print(f"seconds per gene: mean {table['seconds'].mean():.1f}, max {table['seconds'].max():.1f}")


if __name__ == "__main__":
    main(sys.argv[1:])
