"""Dagster resources: storage (IO manager) and the study."""
