"""Enformer in JAX/Haiku: model, positional features, weight conversion, inference, tracks."""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from apoe_assets.enformer.model import EnformerConfig, build, init_params, random_params

__all__ = ["EnformerConfig", "build", "init_params", "random_params"]


def __getattr__(name: str) -> Any:
    """The model's names, imported on first use: importing a light submodule (predictions,
    targets, …) must not import JAX and Haiku, so that loading the code location stays fast."""
    if name in __all__:
        from apoe_assets.enformer import model

        return getattr(model, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
