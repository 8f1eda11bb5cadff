"""The planted-truth demo study simulator: ``python -m apoe_assets.demo``."""

from apoe_assets.demo.study import DEFAULT_SAMPLES, DEFAULT_SEED, simulate_study

__all__ = ["DEFAULT_SAMPLES", "DEFAULT_SEED", "simulate_study"]
