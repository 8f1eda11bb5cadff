"""enformer-pytorch as the peer: random models, checkpoints, the TF-axis gamma patch."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from apoe_assets_tests.requirements import require_module

torch = require_module("torch")
enformer_pytorch = require_module("enformer_pytorch")
modeling = enformer_pytorch.modeling_enformer


def tf_axis_gamma(positions: Any, features: int, seq_len: int, stddev: float | None = None,
                  start_mean: float | None = None, eps: float = 1e-8,
                  dtype: Any = None) -> Any:
    """The peer's gamma basis with TensorFlow's normalisation (per feature, across positions).

    Same signature as ``modeling_enformer.get_positional_features_gamma``, evaluated in float64.
    """
    stddev = seq_len / (2 * features) if stddev is None else stddev
    start_mean = seq_len / features if start_mean is None else start_mean
    x = positions.to(torch.float64).abs()[..., None]
    mean = torch.linspace(start_mean, seq_len, features, dtype=torch.float64)[None]
    concentration = (mean / stddev) ** 2
    rate = mean / stddev**2
    log_p = (torch.xlogy(concentration - 1.0, x) - rate * x
             - (torch.lgamma(concentration) - concentration * torch.log(rate)))
    p = torch.exp(log_p) + eps
    return (p / p.amax(dim=0, keepdim=True)).to(dtype or torch.float32)


def random_peer(seed: int = 0, **hparams: Any) -> Any:
    """An enformer-pytorch model in eval mode with every tensor random and non-trivial.

    Weights ~ N(0, 1/fan_in) (the attention output too, which the peer zero-initialises),
    vectors ~ N(0, 0.1²), pooling 2·I + noise, BatchNorm running means ~ N(0, 0.1²) and
    running variances ~ U(0.5, 2), so a mis-mapped statistic changes the output.
    """
    torch.manual_seed(seed)
    model = enformer_pytorch.Enformer.from_hparams(**hparams)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith("_trunk."):
                continue
            if p.ndim == 1 or name.endswith(("rel_content_bias", "rel_pos_bias")):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
            else:
                fan_in = math.prod(p.shape[1:])
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(fan_in))
                if name.endswith("to_attn_logits.weight"):
                    p.add_(2 * torch.eye(p.shape[0])[:, :, None, None])
            if name.endswith(".0.weight") and p.ndim == 1:
                p.add_(1.0)  # scales near 1
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=gen) * 0.1)
            elif name.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=gen) * 1.5 + 0.5)
    return model.eval()


def save_checkpoint(model: Any, folder: Path) -> Path:
    """``save_pretrained(folder, safe_serialization=False)``: config.json + pytorch_model.bin."""
    model.save_pretrained(folder, safe_serialization=False)
    return folder


def random_one_hot(batch: int, length: int, seed: int = 0) -> np.ndarray:
    """Seeded random one-hot DNA ``[batch, length, 4]`` float32."""
    rng = np.random.default_rng(seed)
    return np.eye(4, dtype=np.float32)[rng.integers(0, 4, (batch, length))]
