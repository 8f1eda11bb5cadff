"""Compare this model's intermediate activations with enformer-pytorch's, layer by layer.

A mismatch in the final outputs says little; the first layer whose activations disagree says
where the bug is. torch and enformer-pytorch (the dev extra) are imported only when used.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from apoe_assets.enformer.model import EnformerConfig, build


@dataclass(frozen=True)
class LayerDiff:
    """One activation compared: relative error ‖ours − theirs‖ / ‖theirs‖ and max abs diff."""

    name: str
    relative_error: float
    max_abs_diff: float
    shape: tuple[int, ...]


def relative_error(ours: np.ndarray, theirs: np.ndarray) -> float:
    """‖ours − theirs‖₂ / ‖theirs‖₂ over all elements (float64)."""
    ours64, theirs64 = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    if ours64.shape != theirs64.shape:
        raise ValueError(f"shapes differ: {ours64.shape} vs {theirs64.shape}")
    return float(np.linalg.norm(ours64 - theirs64) / max(np.linalg.norm(theirs64), 1e-30))


def our_activations(config: EnformerConfig, params: Any, x: np.ndarray
                    ) -> dict[str, np.ndarray]:
    """Our intermediates (stem, tower_i, transformer_i, transformer, crop, final) and heads."""
    apply = jax.jit(build(config).apply, static_argnames="return_intermediates")
    outputs, acts = apply(params, jnp.asarray(x), return_intermediates=True)
    found = {k: np.asarray(v) for k, v in acts.items()}
    found.update({f"head_{k}": np.asarray(v) for k, v in outputs.items()})
    return jax.block_until_ready(found)


def torch_activations(model: Any, x: np.ndarray) -> dict[str, np.ndarray]:
    """The same activations of an enformer-pytorch ``Enformer`` (eval mode), channels last."""
    import torch

    found: dict[str, np.ndarray] = {}

    def keep(name: str, channels_first: bool) -> Any:
        def hook(_module: Any, _inputs: Any, output: Any) -> None:
            value = output.detach().float().numpy()
            found[name] = value.transpose(0, 2, 1) if channels_first else value
        return hook

    hooks = [model.stem.register_forward_hook(keep("stem", True))]
    hooks += [block.register_forward_hook(keep(f"tower_{i}", True))
              for i, block in enumerate(model.conv_tower)]
    hooks += [layer.register_forward_hook(keep(f"transformer_{i}", False))
              for i, layer in enumerate(model.transformer)]
    hooks.append(model.crop_final.register_forward_hook(keep("crop", False)))
    hooks.append(model.final_pointwise.register_forward_hook(keep("final", False)))
    try:
        with torch.no_grad():
            heads = model(torch.from_numpy(np.ascontiguousarray(x, np.float32)))
    finally:
        for handle in hooks:
            handle.remove()
    found["transformer"] = found[f"transformer_{len(model.transformer) - 1}"]
    found.update({f"head_{k}": v.detach().float().numpy() for k, v in heads.items()})
    return found


_STAGES = ("stem", "tower", "transformer", "crop", "final", "head")


def forward_order(name: str) -> tuple[int, int, str]:
    """Sort key placing activation names in the order the forward pass produces them."""
    stage, _, index = name.partition("_")
    rank = _STAGES.index(stage) if stage in _STAGES else len(_STAGES)
    # "transformer" (the whole stack) comes after its layers "transformer_i"
    position = int(index) if index.isdigit() else (1 << 30 if not index else 0)
    return rank, position, name


def compare(ours: Mapping[str, np.ndarray], theirs: Mapping[str, np.ndarray]
            ) -> list[LayerDiff]:
    """One :class:`LayerDiff` per activation both sides have, in forward order."""
    names = sorted(set(ours) & set(theirs), key=forward_order)
    return [LayerDiff(name, relative_error(ours[name], theirs[name]),
                      float(np.abs(np.asarray(ours[name], np.float64) - theirs[name]).max()),
                      tuple(theirs[name].shape))
            for name in names]


def first_mismatch(diffs: list[LayerDiff], tolerance: float) -> LayerDiff | None:
    """The first activation whose relative error exceeds ``tolerance``, or ``None``."""
    return next((d for d in diffs if not d.relative_error <= tolerance), None)  # NaN fails


def report(diffs: list[LayerDiff], tolerance: float) -> str:
    """A readable table, marking where the mismatch starts."""
    first = first_mismatch(diffs, tolerance)
    lines = [f"{'activation':<16} {'rel. error':>11} {'max |diff|':>11}  shape"]
    for d in diffs:
        mark = "  <-- first above tolerance" if d is first else ""
        lines.append(f"{d.name:<16} {d.relative_error:11.3e} {d.max_abs_diff:11.3e}  "
                     f"{d.shape}{mark}")
    return "\n".join(lines)


def compare_with_torch(config: EnformerConfig, params: Any, model: Any, x: np.ndarray
                       ) -> list[LayerDiff]:
    """Run both models on ``x`` and compare every intermediate activation."""
    return compare(our_activations(config, params, x), torch_activations(model, x))
