"""Planted-truth expression: causal cis SNPs with a known heritability, covariates with known
effects, optional extra components (the demo Enformer's prediction of the gene, or of another
gene: the cross-gene component), and Gaussian noise.

For gene *g* and sample *i*::

    y_gi = Σ_j β_gj x_ij  +  Σ_k γ_gk c_ki  +  Σ_e extra_e,gi  +  ε_gi,   ε ~ N(0, σ²_g)

The genetic term (centred) is scaled so its in-sample variance is the planted h²; each
covariate gets a planted share of variance; σ²_g = 1 − h² − covariate share − extra share, so
the total variance is ≈ 1 plus twice the covariances of the extra terms with the genetic one and
with each other (an extra term that is itself a function of the genotypes may be in LD with the
causal SNPs and with another extra term).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from apoe_assets.demo.covariates import DECIMALS, HIDDEN_FACTORS, PC_COUNT, SEX

H2_RANGE = (0.05, 0.4)
MAX_CAUSAL = 3
CAUSAL_WINDOW = 100_000
"""Causal SNPs lie within TSS ± this many bases."""
MIN_MAF = 0.05
MAX_CAUSAL_MISSING = 0.01
"""Sites with more missing calls than this are never causal."""
MAX_CAUSAL_R = 0.8
"""Causal SNPs of one gene are never in stronger LD than this (|r|), so effects stay separable."""
NULL_FOCUS_GENES = 3
"""Null genes (h² = 0) among the focus genes (the default study genes, never APOE)."""
NULL_SHARE_OTHERS = 1 / 3
COVARIATE_SHARES: dict[str, tuple[float, float]] = {
    **{f"PC{k}": (0.0, 0.01) for k in range(1, PC_COUNT + 1)},
    HIDDEN_FACTORS[0]: (0.05, 0.2),
    HIDDEN_FACTORS[1]: (0.02, 0.1),
    SEX: (0.0, 0.03),
}
"""Planted share of expression variance per covariate (uniform range)."""
COVARIATE_VARIANCE = {**{name: 1.0 for name in COVARIATE_SHARES}, SEX: 0.25}
"""Expected variance of each covariate (PCs and factors unit, sex a fair coin)."""
SHARE_DECIMALS = 4


@dataclass(frozen=True)
class CausalPool:
    """Variants that may be causal: 1-based ``pos``, ``variant_ids``, ``rsids``, true ALT
    ``dosages`` ``[variants, samples]`` over the expression samples, and ``eligible``."""

    pos: np.ndarray
    variant_ids: Sequence[str]
    rsids: Sequence[str]
    dosages: np.ndarray
    eligible: np.ndarray


@dataclass(frozen=True)
class ExpressionTruth:
    """Simulated expression (genes × samples) and the truth tables behind it."""

    expression: pd.DataFrame
    genes: pd.DataFrame
    causal: pd.DataFrame
    covariate_effects: pd.DataFrame


def eligible_causal(kinds: Sequence[str], dosages: np.ndarray, missing_share: np.ndarray
                    ) -> np.ndarray:
    """Biallelic SNVs with MAF ≥ :data:`MIN_MAF` that are not missing-heavy."""
    frequency = dosages.mean(axis=1) / 2
    maf = np.minimum(frequency, 1 - frequency)
    return (np.array(kinds) == "snv") & (maf >= MIN_MAF) & (missing_share <= MAX_CAUSAL_MISSING)


def plan_heritability(symbols: Sequence[str], focus: Sequence[str], keep: Sequence[str],
                      rng: np.random.Generator) -> dict[str, float]:
    """Planted h² per gene: :data:`NULL_FOCUS_GENES` nulls among ``focus`` (never ``keep``), a
    share of nulls among the rest, the others uniform in :data:`H2_RANGE`."""
    pool = [s for s in focus if s not in keep]
    nulls = set(rng.choice(pool, size=min(NULL_FOCUS_GENES, len(pool)), replace=False).tolist())
    plan = {}
    for symbol in symbols:
        null = symbol in nulls if symbol in focus else rng.random() < NULL_SHARE_OTHERS
        h2 = 0.0 if null and symbol not in keep else rng.uniform(*H2_RANGE)
        plan[symbol] = round(float(h2), SHARE_DECIMALS)
    return plan


def choose_causal(pool: CausalPool, tss: int, forced: Sequence[int], count: int,
                  rng: np.random.Generator) -> list[int]:
    """Up to ``count`` eligible variant rows within :data:`CAUSAL_WINDOW` of ``tss``:
    ``forced`` rows first, then random ones not in strong LD with those chosen."""
    near = np.flatnonzero(pool.eligible & (np.abs(pool.pos - tss) <= CAUSAL_WINDOW))
    chosen = list(forced)
    for row in rng.permutation(near).tolist():
        if len(chosen) >= count:
            break
        if row in chosen:
            continue
        r = [abs(np.corrcoef(pool.dosages[row], pool.dosages[c])[0, 1]) for c in chosen]
        if all(value < MAX_CAUSAL_R for value in r):
            chosen.append(row)
    return chosen


def scaled_effects(dosages: np.ndarray, h2: float, rng: np.random.Generator) -> np.ndarray:
    """Normal effects per ALT allele, scaled so the genetic term's in-sample variance is h²."""
    raw = rng.standard_normal(dosages.shape[0])
    variance = float(np.var(raw @ dosages))
    return np.round(raw * np.sqrt(h2 / variance), DECIMALS)


def plan_covariate_effects(rng: np.random.Generator) -> dict[str, tuple[float, float]]:
    """Per covariate: (effect per unit, planted share of variance)."""
    effects = {}
    for name, (low, high) in COVARIATE_SHARES.items():
        share = round(float(rng.uniform(low, high)), SHARE_DECIMALS)
        sign = 1.0 if rng.random() < 0.5 else -1.0
        effects[name] = (round(sign * np.sqrt(share / COVARIATE_VARIANCE[name]), DECIMALS),
                         share)
    return effects


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson r, 0 when either side is constant."""
    if np.var(a) == 0 or np.var(b) == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def simulate_expression(genes: pd.DataFrame, pool: CausalPool, covariates: pd.DataFrame,
                        focus: Sequence[str], forced: Mapping[str, Sequence[int]],
                        rng: np.random.Generator,
                        components: Mapping[str, Mapping[str, np.ndarray]] | None = None
                        ) -> ExpressionTruth:
    """Expression of every gene in ``genes`` (gene_id, symbol, tss) for the samples (columns)
    of ``covariates``.

    ``forced`` names causal variant rows a gene must have (it is then never null);
    ``components`` adds named terms: per name, per gene_id, given per-sample values (e.g. the
    prediction of the demo Enformer weights) whose in-sample variance is recorded as
    ``{name}_share`` and taken from the noise; ``{name}_realised`` is var(term) / var(y) and
    ``{name}_genetic_r`` its correlation with the SNP term (both are functions of the
    genotypes, so they may be in LD). The random draws do not depend on the components.
    """
    samples = list(covariates.columns)
    named = {name: dict(values) for name, values in (components or {}).items()}
    h2_plan = plan_heritability(genes["symbol"].tolist(), focus, list(forced), rng)
    rows, gene_rows, causal_rows, covariate_rows = [], [], [], []
    for gene in genes.itertuples(index=False):
        h2 = h2_plan[gene.symbol]
        count = int(rng.integers(1, MAX_CAUSAL + 1)) if h2 > 0 else 0
        causal = sorted(choose_causal(pool, int(gene.tss), forced.get(gene.symbol, ()), count,
                                      rng))
        if not causal:
            h2 = 0.0
        x = pool.dosages[causal]
        beta = scaled_effects(x, h2, rng) if causal else np.zeros(0)
        genetic = beta @ x if causal else np.zeros(len(samples))
        genetic = genetic - genetic.mean()
        effects = plan_covariate_effects(rng)
        covariate_term = sum(effect * covariates.loc[name].to_numpy()
                             for name, (effect, _) in effects.items())
        covariate_share = round(sum(share for _, share in effects.values()), SHARE_DECIMALS)
        terms = {name: np.asarray(values.get(gene.gene_id, np.zeros(len(samples))), np.float64)
                 for name, values in named.items()}
        term_shares = {name: float(np.var(term)) for name, term in terms.items()}
        extra_term = sum(terms.values(), np.zeros(len(samples)))
        noise_share = round(1.0 - h2 - covariate_share - sum(term_shares.values()),
                            SHARE_DECIMALS)
        if noise_share <= 0:
            raise ValueError(f"{gene.symbol}: planted components leave no room for noise")
        noise = rng.normal(0.0, np.sqrt(noise_share), len(samples))
        y = np.round(genetic + covariate_term + extra_term + noise, DECIMALS) + 0.0
        extra_shares = {}  # per component: share, realised, genetic_r (columns side by side)
        for name, term in terms.items():
            extra_shares[f"{name}_share"] = term_shares[name]
            extra_shares[f"{name}_realised"] = float(np.var(term) / np.var(y))
            extra_shares[f"{name}_genetic_r"] = _correlation(genetic, term)
        rows.append(y)
        gene_rows.append({"gene_id": gene.gene_id, "symbol": gene.symbol, "h2_planted": h2,
                          "h2_realised": float(np.var(genetic) / np.var(y)),
                          "n_causal": len(causal), "covariate_share": covariate_share,
                          "noise_share": noise_share, **extra_shares})
        causal_rows += [{"gene_id": gene.gene_id, "symbol": gene.symbol,
                         "variant_id": pool.variant_ids[row], "rsid": pool.rsids[row],
                         "effect": float(b)} for row, b in zip(causal, beta, strict=True)]
        covariate_rows += [{"gene_id": gene.gene_id, "symbol": gene.symbol, "covariate": name,
                            "effect": effect, "share": share}
                           for name, (effect, share) in effects.items()]
    expression = pd.DataFrame(np.vstack(rows), index=genes["gene_id"].tolist(), columns=samples)
    return ExpressionTruth(expression, pd.DataFrame(gene_rows), pd.DataFrame(causal_rows),
                           pd.DataFrame(covariate_rows))
