"""Pure machine learning core: CV folds, genotype models, metrics. No Dagster or MLflow here."""
