"""The demo's Enformer: shipped weights are the recorded random ones, and the planted component
is what the pipeline's own path (personal sequences → predictions → TSS feature) computes from
the written VCF, reference and weights. The cross-gene component (part of APOC1's expression
driven by APOE's feature) is recomputed from the features table and found in the expression."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from apoe_assets.demo.enformer_component import (
    CROSS_GENE_SHARE,
    CROSS_GENE_SOURCE,
    CROSS_GENE_TARGET,
    ENFORMER_GENES,
    FEATURE_DECIMALS,
    cross_gene_plan,
)
from apoe_assets.demo.genes import gene_table, nearest_genes
from apoe_assets.enformer import EnformerConfig, random_params
from apoe_assets.enformer.convert import flatten, load_params
from apoe_assets.enformer.features import combine_haplotypes, haplotype_feature, tss_bins
from apoe_assets.enformer.inference import Predictor
from apoe_assets.enformer.targets import demo_targets, read_targets, select_tracks
from apoe_assets.genomics.annotation import with_windows
from apoe_assets.genomics.coordinates import Interval
from apoe_assets.genomics.fasta import ReferenceGenome
from apoe_assets.genomics.personal import SequenceFolder, write_personal_sequences
from apoe_assets.genomics.vcf import read_genotypes
from apoe_assets.stage_settings import sequence_spec
from apoe_assets.study import load_study
from apoe_assets_tests.demo.conftest import BUNDLED
from apoe_assets_tests.demo.reading import Vcf, read_covariates, read_expression, read_truth
from apoe_assets_tests.demo.test_truth import cross_gene_component, enformer_component
from apoe_assets_tests.float32 import recorded_tolerance

SHARE_RANGE = (0.15, 0.25)
CHECKED_GENE = "APOE"
CHECKED_SAMPLES = 12
"""Samples whose haplotypes are rebuilt and predicted again (half of them chosen for unphased
or missing calls in the window, the others at random)."""
COEFFICIENT_SES = 3.0
"""Standard errors within which the component's coefficient must be 1 (and beyond which
from 0)."""
CROSS_GENE_COLUMNS = ["cross_gene_share", "cross_gene_realised", "cross_gene_genetic_r"]
GENETIC_R_TOLERANCE = 0.05
"""|r(genetic, cross-gene) recomputed − recorded|: recomputed on the samples whose causal
genotypes are all called (≥ 96% of them), recorded on all with the true genotypes."""


def _record(study: Path) -> dict:
    return json.loads((study / "truth/simulation.json").read_text())["enformer"]


def test_weights_are_the_recorded_random_params(study: Path) -> None:
    config, params = load_params(study / "enformer/weights.safetensors")
    assert config == EnformerConfig.small()
    record = _record(study)
    assert record["config"] == config.to_dict()
    expected = flatten(random_params(config, record["weights_seed"]))
    shipped = flatten(params)
    assert shipped.keys() == expected.keys()
    for name, value in expected.items():
        assert np.array_equal(shipped[name], value), name
    pd.testing.assert_frame_equal(read_targets(study / "enformer/targets.txt"), demo_targets(),
                                  check_dtype=False)


def test_weights_differ_between_seeds(small_study: Path) -> None:
    small, bundled = _record(small_study), _record(BUNDLED)
    assert small["weights_seed"] != bundled["weights_seed"]
    assert ((small_study / "enformer/weights.safetensors").read_bytes()
            != (BUNDLED / "enformer/weights.safetensors").read_bytes())


def test_record_matches_the_study_settings(study: Path) -> None:
    record, config = _record(study), EnformerConfig.small()
    settings = load_study(study / "study.yaml").enformer
    assert record["tracks"] == settings.tracks == ["CAGE:brain"]
    assert record["track_indices"] == select_tracks(demo_targets(), "CAGE:brain").tolist()
    assert record["track_descriptions"] == ["CAGE:brain, adult, demo"]
    assert record["bins"] == tss_bins(config.target_length).tolist() == [55, 56, 57]
    assert (record["haplotypes"], record["batch_size"]) == (settings.haplotypes,
                                                            settings.batch_size)


def test_features_table_is_consistent(study: Path) -> None:
    features = read_truth(study, "enformer_features.tsv")
    genes = read_truth(study, "genes.tsv").set_index("symbol")
    record = _record(study)
    samples = read_expression(study).columns[4:].tolist()
    assert sorted(features["symbol"].unique()) == sorted(record["genes"])
    with_component = genes.index[genes["enformer_share"] > 0]
    assert sorted(with_component) == sorted(record["genes"])
    for symbol, rows in features.groupby("symbol"):
        assert sorted(rows["sample"]) == sorted(samples)  # the expression samples
        mean = rows[["haplotype_1", "haplotype_2"]].mean(axis=1)
        assert np.allclose(rows["feature"], mean, atol=1e-8)
        stats = record["genes"][symbol]
        assert SHARE_RANGE[0] <= stats["share"] <= SHARE_RANGE[1]
        assert stats["share"] == genes.loc[symbol, "enformer_share"]
        # the component is the feature standardised over the samples, times √share
        z = (rows["feature"] - rows["feature"].mean()) / rows["feature"].std(ddof=0)
        assert np.allclose(rows["component"], np.sqrt(stats["share"]) * z, rtol=0, atol=1e-7)
        assert rows["feature"].std(ddof=0) == pytest.approx(stats["feature_sd"], rel=1e-9)
        assert stats["distinct_haplotypes"] <= 2 * len(samples)


def _component_coefficients(y: np.ndarray, components: np.ndarray, others: np.ndarray
                            ) -> tuple[np.ndarray, np.ndarray]:
    """OLS coefficients of the ``components`` columns in y ~ 1 + components + others, and
    their SEs."""
    design = np.column_stack([np.ones(len(y)), components, others])
    beta, *_ = np.linalg.lstsq(design, y, rcond=None)
    residual = y - design @ beta
    variance = residual @ residual / (len(y) - design.shape[1])
    se = np.sqrt(variance * np.diag(np.linalg.inv(design.T @ design)))
    k = components.shape[1]
    return beta[1 : 1 + k], se[1 : 1 + k]


def assert_component_recovered(study: Path, vcf: Vcf) -> None:
    """Each planted component (a gene's own Enformer component; the cross-gene one, another
    gene's feature recomputed from the features table) is in the expression with coefficient
    1: regressing expression on them, the covariates and the gene's causal SNPs (the other
    planted terms) gives 1 within sampling error, and clearly not 0. Its variance and share of
    the expression variance are the recorded ones."""
    expression = read_expression(study).set_index("gene_id")
    samples = expression.columns[3:].tolist()
    genes = read_truth(study, "genes.tsv").set_index("gene_id")
    causal = read_truth(study, "causal_variants.tsv")
    covariates = read_covariates(study).loc[:, samples].to_numpy(dtype=float).T
    checked = 0
    for gene_id, gene in genes.iterrows():
        components = {name: values[samples].to_numpy() for name, values in (
            ("enformer", enformer_component(study, str(gene_id))),
            ("cross_gene", cross_gene_component(study, str(gene_id)))) if values is not None}
        if not components:
            continue
        y = expression.loc[gene_id, samples].to_numpy(dtype=float)
        for name, component in components.items():
            assert np.var(component) == pytest.approx(gene[f"{name}_share"], rel=1e-4), name
            assert np.var(component) / np.var(y) == pytest.approx(gene[f"{name}_realised"],
                                                                  rel=1e-4), name
        dosages = [vcf.dosage(v, samples) for v in causal.query("gene_id == @gene_id")
                   ["variant_id"]]
        dosages = np.column_stack([np.where(np.isnan(d), np.nanmean(d), d) for d in dosages]
                                  or [np.zeros((len(y), 0))])
        coefficients, ses = _component_coefficients(
            y, np.column_stack(list(components.values())),
            np.column_stack([covariates, dosages]))
        for name, coefficient, se in zip(components, coefficients, ses, strict=True):
            assert abs(coefficient - 1) <= COEFFICIENT_SES * se, (gene_id, name, coefficient, se)
            assert coefficient >= COEFFICIENT_SES * se, (gene_id, name, coefficient, se)
            checked += 1
    assert checked > 0


def test_component_enters_expression_at_its_share(study: Path, vcf: Vcf) -> None:
    """Catches a component planted at another scale, sign or sample order."""
    assert_component_recovered(study, vcf)


def test_cross_gene_component_is_planted_as_recorded(study: Path, vcf: Vcf) -> None:
    """APOC1 carries APOE's standardised Enformer feature × √CROSS_GENE_SHARE (recomputed
    from enformer_features.tsv: variance = cross_gene_share, var / var(y) = cross_gene_realised,
    r with the SNP term = cross_gene_genetic_r), recorded in simulation.json; every other gene
    has 0 in the cross_gene columns. With the coefficient check above, catches a cross-gene
    term built from the wrong gene's feature, at the wrong share or in the wrong sample order,
    added to the wrong gene, or missing from the truth."""
    record = json.loads((study / "truth/simulation.json").read_text())["cross_gene"]
    assert record == {CROSS_GENE_TARGET: {"source": CROSS_GENE_SOURCE,
                                          "share": CROSS_GENE_SHARE}}
    genes = read_truth(study, "genes.tsv").set_index("symbol")
    assert (genes.drop(index=CROSS_GENE_TARGET)[CROSS_GENE_COLUMNS] == 0).all().all()
    target = genes.loc[CROSS_GENE_TARGET]
    assert target["cross_gene_share"] == pytest.approx(CROSS_GENE_SHARE, abs=1e-6)
    assert target["noise_share"] > 0

    expression = read_expression(study).set_index("gene_id")
    samples = expression.columns[3:].tolist()
    term = cross_gene_component(study, target["gene_id"])
    assert term is not None
    term = term[samples].to_numpy()
    y = expression.loc[target["gene_id"], samples].to_numpy(dtype=float)
    assert np.var(term) == pytest.approx(target["cross_gene_share"], rel=1e-5)
    assert np.var(term) / np.var(y) == pytest.approx(target["cross_gene_realised"], rel=1e-4)
    # the share of y it explains alone: corr(term, y)² ≈ realised share (other terms are
    # nearly uncorrelated with it), far from 0
    assert np.corrcoef(term, y)[0, 1] > 0.25

    causal = read_truth(study, "causal_variants.tsv").query("symbol == @CROSS_GENE_TARGET")
    if causal.empty:  # a null gene: no SNP term
        assert target["cross_gene_genetic_r"] == 0
        return
    dosages = np.column_stack([vcf.dosage(v, samples) for v in causal["variant_id"]])
    called = ~np.isnan(dosages).any(axis=1)
    genetic = dosages[called] @ causal["effect"].to_numpy()
    r = np.corrcoef(genetic, term[called])[0, 1]
    assert r == pytest.approx(target["cross_gene_genetic_r"], abs=GENETIC_R_TOLERANCE)


def test_cross_gene_plan_needs_its_source_predicted_and_its_target_studied() -> None:
    """No cross-gene component when APOE's feature is not predicted (not an Enformer gene) or
    APOC1 is not a study gene."""
    studied = nearest_genes(gene_table())
    planted = {CROSS_GENE_TARGET: {"source": CROSS_GENE_SOURCE, "share": CROSS_GENE_SHARE}}
    assert cross_gene_plan(ENFORMER_GENES, studied) == planted
    assert cross_gene_plan((CROSS_GENE_SOURCE,), studied) == planted  # target needs no own
    assert cross_gene_plan(("TOMM40", "APOC1"), studied) == {}
    assert cross_gene_plan((), studied) == {}
    assert cross_gene_plan(ENFORMER_GENES, [g for g in studied if g != CROSS_GENE_TARGET]) == {}


def _checked_samples(vcf: Vcf, window: Interval, expressed: list[str]) -> list[str]:
    """Expression samples with the most unphased or missing calls in ``window``, then a
    seeded random few."""
    rows = (vcf.pos > window.start) & (vcf.pos <= window.end)
    special = (~vcf.phased[rows] | (vcf.alleles[rows] < 0).any(axis=2)).sum(axis=0)
    order = [vcf.samples[i] for i in np.argsort(-special, kind="stable")]
    chosen = [s for s in order if s in set(expressed)][: CHECKED_SAMPLES // 2]
    rest = sorted(set(expressed) - set(chosen))
    rng = np.random.default_rng(3)
    chosen += rng.choice(rest, CHECKED_SAMPLES - len(chosen), replace=False).tolist()
    return sorted(chosen)


def test_pipeline_path_reproduces_the_component(vcf: Vcf, study: Path, tmp_path: Path) -> None:
    """Rebuild a few people's haplotypes the way the ``personal_sequences`` asset does (indexed
    FASTA + manifest), read them back as model inputs, predict with the shipped weights and
    compare the TSS feature with the recorded truth."""
    if study != BUNDLED:
        pytest.skip("checked on the bundled study (the small one is made by the same code)")
    config = load_study(study / "study.yaml")
    reference = ReferenceGenome(config.reference_fasta)
    lengths = {c: reference.contig(c).length for c in config.chromosomes}
    genes = with_windows(config.gene_table, config.window_length, config.cis_window, lengths,
                         config.annotation).set_index("symbol")
    gene = genes.loc[CHECKED_GENE]
    spec = sequence_spec(config, gene)
    window = spec.window
    truth = read_truth(study, "enformer_features.tsv").query("symbol == @CHECKED_GENE")
    samples = _checked_samples(vcf, window, truth["sample"].tolist())
    try:
        genotypes, _ = read_genotypes(config.genotype_file(gene["chrom"]), gene["chrom"],
                                      reference, [window], config.ref_mismatch, samples=samples)
        write_personal_sequences(tmp_path, reference.fetch(window), genotypes, spec)
    finally:
        reference.close()
    folder = SequenceFolder(tmp_path)
    records = [f"{s}_h{h}" for s in samples for h in (1, 2)]
    inputs = folder.model_inputs(config.window_length, records)

    model, params = load_params(config.enformer.weights)
    tracks = select_tracks(read_targets(config.enformer.targets), config.enformer.tracks)
    predictor = Predictor(model, params, tracks=tracks, bins=tss_bins(model.target_length),
                          batch_size=config.enformer.batch_size)
    per_haplotype = haplotype_feature(predictor.predict(inputs)).reshape(-1, 2)
    feature = combine_haplotypes(per_haplotype, config.enformer.haplotypes)

    recorded = truth.set_index("sample").loc[samples]
    # the truth was computed on another CPU, in other batches: the network's float32 tolerance
    # (about 4% of the features' spread across people, ~5e-4)
    haplotypes = recorded[["haplotype_1", "haplotype_2"]].to_numpy()
    tolerance = recorded_tolerance(model, haplotypes, FEATURE_DECIMALS)
    assert np.abs(per_haplotype - haplotypes).max() <= tolerance
    assert np.abs(feature - recorded["feature"].to_numpy()).max() <= tolerance
    stats = _record(study)["genes"][CHECKED_GENE]
    component = np.sqrt(stats["share"]) * (feature - stats["feature_mean"]) / stats["feature_sd"]
    # the component is the feature scaled by √share / sd: its tolerance scales alike
    tolerance *= np.sqrt(stats["share"]) / stats["feature_sd"]
    assert np.abs(component - recorded["component"].to_numpy()).max() <= tolerance
    assert np.corrcoef(component, recorded["component"])[0, 1] > 0.9999
