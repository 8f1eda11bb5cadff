"""``multi_gene_stacking`` fits its genes in worker processes: each gene's result must be the
one a direct :func:`stack_gene` call gives that gene, whatever the number of processes, and
come back under its own name in study order (a worker that returned the wrong gene's result,
or a seed that depended on the worker, would fail here)."""

from __future__ import annotations

from types import SimpleNamespace

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from apoe_assets.assets.stacking import stack_genes
from apoe_assets.ml.folds import assign_folds
from apoe_assets.ml.stacking import stack_gene
from apoe_assets.ml.stacking_inputs import stacking_inputs

N, GENES, SEED, INNER = 48, ("APOE", "APOC1", "TOMM40"), 11, 3


@pytest.fixture(scope="module")
def inputs():
    rng = np.random.default_rng(SEED)
    samples = [f"S{i:03d}" for i in range(N)]
    folds = assign_folds(samples, 3, SEED)
    latent = rng.normal(size=(N, len(GENES)))
    enformer = {g: pd.DataFrame({"h1": latent[:, k], "h2": latent[:, k],
                                 "feature": latent[:, k] + rng.normal(0, 0.3, N)},
                                index=pd.Index(samples, name="sample"))
                for k, g in enumerate(GENES)}
    expression = pd.DataFrame(latent.T + rng.normal(0, 0.5, (len(GENES), N)),
                              index=[f"ENSG{k}" for k in range(len(GENES))], columns=samples)
    genes = pd.DataFrame({"partition_key": GENES,
                          "gene_id": [f"ENSG{k}" for k in range(len(GENES))]})
    return stacking_inputs(genes, expression, folds, enformer), folds


@pytest.fixture(scope="module")
def direct(inputs) -> dict[str, pd.DataFrame]:
    """Each gene's predictions from a plain :func:`stack_gene` call in this process."""
    stacked, folds = inputs
    return {gene: stack_gene(stacked.features, target, folds, gene_id=gene,
                             n_inner_folds=INNER, seed=SEED).predictions
            for gene, target in stacked.targets.items()}


@pytest.mark.parametrize("processes", [1, 2])
def test_each_gene_is_its_own_direct_fit_in_study_order(inputs, direct, processes: int
                                                        ) -> None:
    """In one process and in two workers, the results are the direct fits, gene for gene."""
    stacked, folds = inputs
    config = SimpleNamespace(prs=SimpleNamespace(inner_folds=INNER), seed=SEED)
    results, seconds = stack_genes(dg.build_asset_context(), config, stacked, None, folds,
                                   processes=processes)
    assert list(results) == list(GENES) and list(seconds) == list(GENES)
    for gene in GENES:
        pd.testing.assert_frame_equal(results[gene].predictions, direct[gene],
                                      check_exact=False, rtol=1e-12)
