"""Enformer in JAX/Haiku: model, positional features, weight conversion, inference, tracks."""

from apoe_assets.enformer.model import EnformerConfig, build, init_params, random_params

__all__ = ["EnformerConfig", "build", "init_params", "random_params"]
