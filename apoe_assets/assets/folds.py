"""Cross-validation folds: one assignment shared by every weight, threshold and model."""

import dagster as dg
import pandas as pd

from apoe_assets.assets.metadata import preview
from apoe_assets.ml.folds import FOLDS_VERSION, assign_folds
from apoe_assets.resources.study import StudyResource

GROUP = "statistics"


@dg.asset(group_name=GROUP, kinds={"pandas"}, code_version=FOLDS_VERSION)
def cv_folds(context: dg.AssetExecutionContext, study: StudyResource,
             expression: pd.DataFrame) -> pd.DataFrame:
    """Seeded K-fold assignment of the samples with both genotypes and expression (the
    expression columns are already aligned to the genotype samples)."""
    config = study.load()
    folds = assign_folds(list(expression.columns), config.folds, config.seed).to_frame()
    sizes = folds["fold"].value_counts().sort_index()
    context.add_output_metadata({
        "samples": len(folds),
        "folds": config.folds,
        "seed": config.seed,
        "fold_sizes": ", ".join(f"{k}: {v}" for k, v in sizes.items()),
        "preview": preview(folds),
    })
    return folds
