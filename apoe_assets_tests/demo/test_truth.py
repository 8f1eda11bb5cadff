"""The truth tables describe the data: refitting the planted model on the written files
recovers the planted effects and heritabilities."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from apoe_assets.demo import simulate_study
from apoe_assets.demo.genes import gene_table, nearest_genes
from apoe_assets_tests.demo.reading import (
    Vcf,
    read_covariates,
    read_expression,
    read_truth,
    read_vcf,
)

Z_LIMIT = 4.5
"""|estimate − planted| / SE allowed per coefficient: with ~250 coefficients per study, the
chance that any honest one exceeds 4.5 SE is about 0.2%."""


def _expression(study: Path) -> pd.DataFrame:
    return read_expression(study).set_index("gene_id").drop(columns=["#chr", "start", "end"])


def enformer_component(study: Path, gene_id: str) -> pd.Series | None:
    """The recorded Enformer component of a gene by sample, or None when it has none."""
    table = read_truth(study, "enformer_features.tsv").query("gene_id == @gene_id")
    return table.set_index("sample")["component"] if len(table) else None


def cross_gene_component(study: Path, gene_id: str) -> pd.Series | None:
    """The cross-gene component of a gene by expression sample, recomputed from the files, or
    None when the gene is no cross-gene target: the source gene's Enformer feature (from
    ``enformer_features.tsv``) standardised over the expression samples (ddof 0), times
    √share (``cross_gene`` in ``simulation.json``)."""
    plan = json.loads((study / "truth/simulation.json").read_text())["cross_gene"]
    symbol = read_truth(study, "genes.tsv").set_index("gene_id").loc[gene_id, "symbol"]
    if symbol not in plan:
        return None
    source, share = plan[symbol]["source"], plan[symbol]["share"]
    samples = _expression(study).columns.tolist()
    features = read_truth(study, "enformer_features.tsv")
    features = features[features["symbol"] == source]
    feature = features.set_index("sample").loc[samples, "feature"]
    return np.sqrt(share) * (feature - feature.mean()) / feature.std(ddof=0)


def _design(study: Path, vcf: Vcf, gene_id: str, extra: pd.Series | None = None
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """y, X = [1, causal dosages, covariates(, Enformer)(, cross-gene)(, extra)] and the
    planted coefficients, over the expression samples whose causal genotypes are all called."""
    expression = _expression(study)
    samples = expression.columns.tolist()
    causal = read_truth(study, "causal_variants.tsv").query("gene_id == @gene_id")
    effects = read_truth(study, "covariate_effects.tsv").query("gene_id == @gene_id")
    covariates = read_covariates(study)[samples]
    dosages = [vcf.dosage(v, samples) for v in causal["variant_id"]]
    columns = [np.ones(len(samples)), *dosages,
               *(covariates.loc[c].to_numpy() for c in effects["covariate"])]
    planted = [np.nan, *causal["effect"], *effects["effect"]]
    names = ["intercept", *causal["variant_id"], *effects["covariate"]]
    for name, values in (("enformer", enformer_component(study, gene_id)),
                         ("cross_gene", cross_gene_component(study, gene_id)), ("extra", extra)):
        if values is not None:
            columns.append(values[samples].to_numpy())
            planted.append(1.0)
            names.append(name)
    x = np.column_stack(columns)
    complete = ~np.isnan(x).any(axis=1)
    y = expression.loc[gene_id].to_numpy()
    return y[complete], x[complete], np.array(planted), names


def _fit(y: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """OLS estimates and their standard errors."""
    beta, *_ = np.linalg.lstsq(x, y, rcond=None)
    residual = y - x @ beta
    sigma2 = residual @ residual / (len(y) - x.shape[1])
    return beta, np.sqrt(np.diag(np.linalg.inv(x.T @ x)) * sigma2)


def _z_scores(y: np.ndarray, x: np.ndarray, planted: np.ndarray) -> np.ndarray:
    """(OLS estimate − planted) / SE for every coefficient but the intercept."""
    beta, se = _fit(y, x)
    return ((beta - planted) / se)[1:]


def test_causal_variants_are_common_cis_snvs(study: Path, vcf: Vcf) -> None:
    causal = read_truth(study, "causal_variants.tsv")
    tss = gene_table().set_index("gene_id")["tss"]
    assert len(causal) > 0
    for row in causal.itertuples():
        chrom, pos, ref, alt = row.variant_id.split(":")
        i = vcf.row(int(pos))
        assert (chrom, vcf.ref[i], vcf.alts[i]) == ("chr19", ref, [alt])
        assert len(ref) == len(alt) == 1
        assert abs(int(pos) - tss[row.gene_id]) <= 100_000
        assert row.rsid == vcf.ids[i]
        alleles = vcf.alleles[i]
        called = alleles[(alleles >= 0).all(axis=1)]
        frequency = (called == 1).mean()
        assert min(frequency, 1 - frequency) >= 0.045  # MAF ≥ 0.05 in the true genotypes
        assert (alleles < 0).any(axis=1).mean() <= 0.01  # not missing-heavy


def test_gene_truth_is_consistent(study: Path) -> None:
    table = read_truth(study, "genes.tsv")
    assert table.columns.tolist() == ["gene_id", "symbol", "h2_planted", "h2_realised",
                                      "n_causal", "covariate_share", "noise_share",
                                      "enformer_share", "enformer_realised",
                                      "enformer_genetic_r", "cross_gene_share",
                                      "cross_gene_realised", "cross_gene_genetic_r"]
    genes = table.set_index("symbol")
    causal = read_truth(study, "causal_variants.tsv")
    shares = read_truth(study, "covariate_effects.tsv")
    assert len(genes) == 30
    counts = causal.groupby("symbol").size().reindex(genes.index, fill_value=0)
    assert (counts == genes["n_causal"]).all()
    null = genes["h2_planted"] == 0
    assert (genes.loc[null, "n_causal"] == 0).all() and (genes.loc[null, "h2_realised"] == 0).all()
    assert genes.loc[~null, "n_causal"].between(1, 3).all()
    assert genes.loc[~null, "h2_planted"].between(0.05, 0.4).all()
    assert null[nearest_genes(gene_table())].sum() >= 3
    assert not null["APOE"]
    assert "rs7412" in causal.query("symbol == 'APOE'")["rsid"].tolist()
    total = (genes["h2_planted"] + genes["covariate_share"] + genes["enformer_share"]
             + genes["cross_gene_share"] + genes["noise_share"])
    assert np.allclose(total, 1, atol=1e-4)
    assert (genes["noise_share"] > 0).all()
    per_gene = shares.groupby("symbol")["share"].sum()[genes.index]
    assert np.allclose(per_gene, genes["covariate_share"], atol=1e-3)
    variance = np.where(shares["covariate"] == "sex", 0.25, 1.0)
    assert np.allclose(shares["effect"] ** 2 * variance, shares["share"], atol=1e-4)


def test_heritability_realised_matches_planted(study: Path, vcf: Vcf) -> None:
    genes = read_truth(study, "genes.tsv")
    expression = _expression(study)
    n = expression.shape[1]
    # The genetic term is scaled to in-sample variance h², so h2_planted / h2_realised is
    # var(y). var(y) has expectation 1 + 2·(the covariances of the genetic, Enformer and
    # cross-gene terms: all functions of the genotypes, so they may be correlated; their r
    # with the genetic term is recorded, the Enformer–cross-gene one is recomputed here) and
    # SD ≤ sqrt(3/n): the sample variance of the rest (variance ≤ 1) has SD ≤ sqrt(2/n), its
    # chance covariance with the genetic term adds 2·sqrt(h²(1−h²)/n) ≤ sqrt(1/n) (the PCs'
    # correlation with it is small: ≤ 1% shares).
    bound = 4 * np.sqrt(3 / n)
    covariance = (genes["enformer_genetic_r"] * np.sqrt(genes["h2_planted"]
                                                        * genes["enformer_share"])
                  + genes["cross_gene_genetic_r"] * np.sqrt(genes["h2_planted"]
                                                            * genes["cross_gene_share"]))
    for i, gene_id in enumerate(genes["gene_id"]):
        enformer, cross = (enformer_component(study, gene_id),
                           cross_gene_component(study, gene_id))
        if enformer is not None and cross is not None:
            covariance.iloc[i] += np.cov(enformer[cross.index], cross, ddof=0)[0, 1]
    expected = (1 + 2 * covariance).to_numpy()
    observed = expression.loc[genes["gene_id"]].var(axis=1, ddof=0).to_numpy()
    assert (np.abs(observed - expected) <= bound).all()
    for gene in genes.query("h2_planted > 0").itertuples():
        assert abs(gene.h2_planted / gene.h2_realised - 1) <= bound, gene.symbol
        y, x, planted, _ = _design(study, vcf, gene.gene_id)
        genetic = x[:, 1 : 1 + gene.n_causal] @ planted[1 : 1 + gene.n_causal]
        # recomputed from the files on the samples with called genotypes (≥ 96% of them)
        assert np.var(genetic) == pytest.approx(gene.h2_planted, rel=0.1)
        assert np.var(genetic) / np.var(y) == pytest.approx(gene.h2_realised, rel=0.1)


def test_regression_recovers_planted_effects(study: Path, vcf: Vcf) -> None:
    z_all = []
    for gene_id in read_truth(study, "genes.tsv")["gene_id"]:
        y, x, planted, names = _design(study, vcf, gene_id)
        z = _z_scores(y, x, planted)
        assert (np.abs(z) <= Z_LIMIT).all(), dict(zip(names[1:], z.round(2), strict=True))
        z_all.extend(z)
    # calibration: if the planted effects are the true ones, z is standard normal
    assert 0.7 <= np.mean(np.square(z_all)) <= 1.4


def test_extra_components_enter_expression_and_truth(tmp_path: Path) -> None:
    gene_ids = gene_table().set_index("symbol")["gene_id"]
    shares = {gene_ids["APOE"]: 0.2, gene_ids["BCL3"]: 0.2}
    made: dict[str, pd.Series] = {}

    def extra(folder: Path, samples: list[str]) -> dict[str, np.ndarray]:
        assert (folder / "genotypes/chr19.vcf.gz").exists()
        rng = np.random.default_rng(11)
        for gene_id, share in shares.items():
            values = rng.standard_normal(len(samples))
            values = (values - values.mean()) / values.std() * np.sqrt(share)
            made[gene_id] = pd.Series(values, index=samples)
        return {g: v.to_numpy() for g, v in made.items()}

    study = simulate_study(tmp_path / "extra", seed=5, n_samples=200,
                           extra_components=extra, enformer_genes=()).parent
    genes = read_truth(study, "genes.tsv").set_index("gene_id")
    assert genes.loc[list(shares), "extra_share"].round(6).tolist() == list(shares.values())
    assert (genes.drop(index=list(shares))["extra_share"] == 0).all()
    assert (genes["enformer_share"] == 0).all()
    assert (genes["cross_gene_share"] == 0).all()  # no Enformer genes: no cross-gene source
    total = genes["h2_planted"] + genes["covariate_share"] + genes["extra_share"] \
        + genes["noise_share"]
    assert np.allclose(total, 1, atol=1e-4)
    vcf = read_vcf(study / "genotypes/chr19.vcf.gz")
    for gene_id in shares:
        y, x, planted, _ = _design(study, vcf, gene_id, extra=made[gene_id])
        assert (np.abs(_z_scores(y, x, planted)) <= Z_LIMIT).all()
        beta, se = _fit(y, x)
        assert abs(beta[-1]) / se[-1] > Z_LIMIT  # the component is really in the expression
