"""Convert an enformer-pytorch / Hugging Face checkpoint into this package's Haiku parameters.

``python -m apoe_assets.enformer.convert SRC DST`` reads a checkpoint directory in the layout of
``EleutherAI/enformer-official-rough`` (``config.json`` plus ``model.safetensors`` or
``pytorch_model.bin``, possibly sharded with an ``*.index.json``) and writes one safetensors
file of flat ``module/param`` tensors with the :class:`EnformerConfig` as JSON metadata.

The official weights (Avsec et al. 2021, ported by EleutherAI): download the folder, e.g.
``huggingface-cli download EleutherAI/enformer-official-rough --local-dir enformer-official``
(or ``enformer_pytorch.from_pretrained(...).save_pretrained(dir, safe_serialization=False)``),
then ``python -m apoe_assets.enformer.convert enformer-official enformer.safetensors``.

Nothing here unpickles: safetensors are read directly, and a ``.bin`` only through
``torch.load(..., weights_only=True)`` (tensors and plain containers, no code).

Layout changes: conv ``[out, in, k]`` → ``[k, in, out]``; linear ``[out, in]`` → ``[in, out]``;
attention-pool ``[o, i, 1, 1]`` → ``[i, o]``; ``rel_content_bias``/``rel_pos_bias``
``[1, H, 1, K]`` → ``r_w_bias``/``r_r_bias`` ``[H, K]``; BatchNorm weight, bias, running mean
and variance → scale, offset, moving mean and variance. ``_trunk.*`` keys alias the same
tensors and ``num_batches_tracked`` counts training steps; both are skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save_file

from apoe_assets.enformer.model import EnformerConfig, param_shapes

FORMAT = "apoe-assets/enformer-haiku/1"
"""Written to the ``format`` metadata of converted files."""

SKIPPED_PREFIXES = ("_trunk.",)
SKIPPED_SUFFIXES = (".num_batches_tracked",)

Transform = Callable[[np.ndarray], np.ndarray]


class ConversionError(ValueError):
    """A checkpoint that does not fit the configuration (names the tensor)."""


def _conv(w: np.ndarray) -> np.ndarray:
    return w.transpose(2, 1, 0)


def _linear(w: np.ndarray) -> np.ndarray:
    return w.T


def _pool(w: np.ndarray) -> np.ndarray:
    return w.reshape(w.shape[0], w.shape[1]).T if w.ndim == 4 else w


def _bias(w: np.ndarray) -> np.ndarray:
    return w.reshape(w.shape[1], w.shape[3]) if w.ndim == 4 else w


def _same(w: np.ndarray) -> np.ndarray:
    return w


_BATCH_NORM = {"scale": "weight", "offset": "bias", "moving_mean": "running_mean",
               "moving_variance": "running_var"}


def _conv_block(torch_prefix: str, ours: str) -> Iterator[tuple[str, str, Transform]]:
    """A ConvBlock: ``Sequential(BatchNorm1d, GELU, Conv1d)`` → batch_norm + conv."""
    for name, theirs in _BATCH_NORM.items():
        yield f"{ours}/batch_norm/{name}", f"{torch_prefix}.0.{theirs}", _same
    yield f"{ours}/conv/w", f"{torch_prefix}.2.weight", _conv
    yield f"{ours}/conv/b", f"{torch_prefix}.2.bias", _same


def _linear_layer(torch_prefix: str, ours: str, bias: bool = True
                  ) -> Iterator[tuple[str, str, Transform]]:
    yield f"{ours}/w", f"{torch_prefix}.weight", _linear
    if bias:
        yield f"{ours}/b", f"{torch_prefix}.bias", _same


def _layer_norm(torch_prefix: str, ours: str) -> Iterator[tuple[str, str, Transform]]:
    yield f"{ours}/scale", f"{torch_prefix}.weight", _same
    yield f"{ours}/offset", f"{torch_prefix}.bias", _same


def name_map(config: EnformerConfig) -> list[tuple[str, str, Transform]]:
    """``(our name, checkpoint key, transform)`` for every parameter of ``config``."""
    rows: list[tuple[str, str, Transform]] = [
        ("enformer/stem/conv/w", "stem.0.weight", _conv),
        ("enformer/stem/conv/b", "stem.0.bias", _same),
        *_conv_block("stem.1.fn", "enformer/stem/pointwise"),
        ("enformer/stem/pool/w", "stem.2.to_attn_logits.weight", _pool),
    ]
    for i in range(len(config.tower_channels)):
        ours, theirs = f"enformer/tower/block_{i}", f"conv_tower.{i}"
        rows += _conv_block(f"{theirs}.0", f"{ours}/conv")
        rows += _conv_block(f"{theirs}.1.fn", f"{ours}/pointwise")
        rows.append((f"{ours}/pool/w", f"{theirs}.2.to_attn_logits.weight", _pool))
    for i in range(config.num_transformer_layers):
        ours, theirs = f"enformer/transformer/layer_{i}", f"transformer.{i}"
        attention = f"{theirs}.0.fn.1"
        rows += _layer_norm(f"{theirs}.0.fn.0", f"{ours}/mha_norm")
        rows.append((f"{ours}/mha/r_w_bias", f"{attention}.rel_content_bias", _bias))
        rows.append((f"{ours}/mha/r_r_bias", f"{attention}.rel_pos_bias", _bias))
        for name in ("q", "k", "v", "rel_k"):
            rows += _linear_layer(f"{attention}.to_{name}", f"{ours}/mha/{name}", bias=False)
        rows += _linear_layer(f"{attention}.to_out", f"{ours}/mha/output")
        rows += _layer_norm(f"{theirs}.1.fn.0", f"{ours}/mlp_norm")
        rows += _linear_layer(f"{theirs}.1.fn.1", f"{ours}/mlp_1")
        rows += _linear_layer(f"{theirs}.1.fn.4", f"{ours}/mlp_2")
    rows += _conv_block("final_pointwise.1", "enformer/final")
    for head, _ in config.output_heads:
        rows += _linear_layer(f"_heads.{head}.0", f"enformer/head_{head}")
    return rows


def config_from_hf(fields: Mapping[str, Any], sequence_length: int | None = None
                   ) -> EnformerConfig:
    """Our config from an enformer-pytorch ``config.json``.

    The checkpoint does not record the input length; without ``sequence_length`` it is the one
    whose crop keeps the full model's fraction (896 of 1536 bins), e.g. 196,608 bp for 896.
    """
    if fields.get("use_convnext"):
        raise ConversionError("use_convnext checkpoints are not Enformer; not supported")
    downsamples = int(fields.get("num_downsamples", 7))
    target = int(fields.get("target_length", 896))
    if sequence_length is None:
        if target <= 0:
            raise ConversionError("config.json has no crop (target_length = -1): pass the "
                                  "input length (--sequence-length)")
        bins, remainder = divmod(target * 1536, 896)
        if remainder or (bins - target) % 2:
            raise ConversionError(f"cannot infer the input length for target_length {target}: "
                                  "pass it (--sequence-length)")
        sequence_length = bins * 2**downsamples
    if target <= 0:
        target = sequence_length // 2**downsamples
    try:
        return EnformerConfig(
            channels=int(fields.get("dim", 1536)),
            num_transformer_layers=int(fields.get("depth", 11)),
            num_heads=int(fields.get("heads", 8)),
            key_size=int(fields.get("attn_dim_key", 64)),
            sequence_length=int(sequence_length),
            target_length=target,
            channel_divisor=int(fields.get("dim_divisible_by", 128)),
            num_downsamples=downsamples,
            output_heads=tuple((str(k), int(v)) for k, v in
                               fields.get("output_heads", {"human": 5313,
                                                           "mouse": 1643}).items()),
        )
    except ValueError as error:
        raise ConversionError(f"config.json does not describe a supported Enformer: {error}"
                              ) from error


def _load_bin(path: Path) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError as error:
        raise ConversionError(
            f"{path} is a PyTorch .bin checkpoint and torch is not installed: install torch, or "
            "convert it to safetensors first (in an environment with torch: "
            "`from safetensors.torch import save_file; sd = torch.load(path, "
            "weights_only=True); save_file({k: v.contiguous() for k, v in sd.items() if not "
            "k.startswith('_trunk.')}, 'model.safetensors')`), then run this again"
        ) from error
    state = torch.load(path, map_location="cpu", weights_only=True)
    return {k: v.detach().to(torch.float32).numpy() for k, v in state.items()
            if not k.startswith(SKIPPED_PREFIXES)}


def _files(folder: Path) -> list[Path]:
    """The weight files of a checkpoint folder, safetensors preferred, shards resolved."""
    for single, index in (("model.safetensors", "model.safetensors.index.json"),
                          ("pytorch_model.bin", "pytorch_model.bin.index.json")):
        if (folder / single).is_file():
            return [folder / single]
        if (folder / index).is_file():
            weight_map = json.loads((folder / index).read_text())["weight_map"]
            return [folder / name for name in sorted(set(weight_map.values()))]
    raise ConversionError(f"{folder} holds no model.safetensors or pytorch_model.bin "
                          "(the layout save_pretrained writes)")


def read_checkpoint(folder: str | os.PathLike[str]) -> tuple[dict[str, Any],
                                                             dict[str, np.ndarray]]:
    """``(config.json fields, {key: float32 array})`` of a checkpoint folder."""
    folder = Path(folder)
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise ConversionError(f"{config_file} not found (expected a save_pretrained folder)")
    tensors: dict[str, np.ndarray] = {}
    for path in _files(folder):
        if path.suffix == ".safetensors":
            loaded = {k: v.astype(np.float32, copy=False) for k, v in load_file(path).items()}
        else:
            loaded = _load_bin(path)
        tensors.update({k: v for k, v in loaded.items() if not k.startswith(SKIPPED_PREFIXES)})
    return json.loads(config_file.read_text()), tensors


def convert_state(config: EnformerConfig, state: Mapping[str, np.ndarray]
                  ) -> dict[str, np.ndarray]:
    """Flat Haiku params (``module/param``) from a PyTorch state dict, shapes checked."""
    expected = param_shapes(config)
    rows = name_map(config)
    mapped = {ours for ours, _, _ in rows}
    if mapped != set(expected):
        raise AssertionError(f"name map out of step with the model: "
                             f"{sorted(mapped ^ set(expected))[:5]}")
    flat: dict[str, np.ndarray] = {}
    for ours, theirs, transform in rows:
        if theirs not in state:
            raise ConversionError(f"checkpoint tensor {theirs!r} (for {ours}) is missing")
        value = np.ascontiguousarray(transform(np.asarray(state[theirs], np.float32)))
        if value.shape != expected[ours]:
            raise ConversionError(f"checkpoint tensor {theirs!r} has shape "
                                  f"{tuple(state[theirs].shape)}, which gives {value.shape} for "
                                  f"{ours}; the configuration needs {expected[ours]}")
        flat[ours] = value
    used = {theirs for _, theirs, _ in rows}
    extra = sorted(k for k in state if k not in used and not k.endswith(SKIPPED_SUFFIXES)
                   and not k.startswith(SKIPPED_PREFIXES))
    if extra:
        raise ConversionError(f"checkpoint tensors not used by the configuration (another "
                              f"configuration?): {extra[:5]}{' …' if len(extra) > 5 else ''}")
    return flat


def flatten(params: Mapping[str, Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """``{module: {name: x}}`` → ``{"module/name": float32 array}``."""
    return {f"{module}/{name}": np.ascontiguousarray(np.asarray(value, np.float32))
            for module, leaves in params.items() for name, value in leaves.items()}


def unflatten(flat: Mapping[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """Inverse of :func:`flatten`."""
    params: dict[str, dict[str, np.ndarray]] = {}
    for key, value in flat.items():
        module, name = key.rsplit("/", 1)
        params.setdefault(module, {})[name] = value
    return params


def save_params(path: str | os.PathLike[str], config: EnformerConfig,
                params: Mapping[str, Mapping[str, Any]] | Mapping[str, np.ndarray],
                source: str = "") -> Path:
    """Write params (nested or flat) and config as one safetensors file, atomically."""
    path = Path(path)
    first = next(iter(params.values()))
    flat = flatten(params) if isinstance(first, Mapping) else {  # type: ignore[arg-type]
        k: np.ascontiguousarray(np.asarray(v, np.float32)) for k, v in params.items()}
    check_shapes(config, flat)
    metadata = {"format": FORMAT, "config": json.dumps(config.to_dict()), "source": source}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(flat, tmp, metadata=metadata)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def check_shapes(config: EnformerConfig, flat: Mapping[str, np.ndarray]) -> None:
    """Raise :class:`ConversionError` naming the first missing, extra or mis-shaped tensor."""
    expected = param_shapes(config)
    for name, shape in expected.items():
        if name not in flat:
            raise ConversionError(f"tensor {name!r} is missing for this configuration")
        if tuple(flat[name].shape) != shape:
            raise ConversionError(f"tensor {name!r} has shape {tuple(flat[name].shape)}, the "
                                  f"configuration needs {shape}")
    extra = sorted(set(flat) - set(expected))
    if extra:
        raise ConversionError(f"tensors not in this configuration: {extra[:5]}")


def load_params(path: str | os.PathLike[str]
                ) -> tuple[EnformerConfig, dict[str, dict[str, np.ndarray]]]:
    """``(config, params)`` from a file written by :func:`save_params` or the converter."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Enformer weights {path} not found; convert a checkpoint with "
                                "`python -m apoe_assets.enformer.convert SRC DST`")
    with safe_open(path, framework="numpy") as handle:
        metadata = handle.metadata() or {}
        if metadata.get("format") != FORMAT or "config" not in metadata:
            raise ConversionError(f"{path} is not a converted Enformer file (metadata format "
                                  f"{metadata.get('format')!r}); run the converter on it")
        config = EnformerConfig.from_dict(json.loads(metadata["config"]))
        flat = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    check_shapes(config, flat)
    return config, unflatten(flat)


def convert(src: str | os.PathLike[str], dst: str | os.PathLike[str],
            sequence_length: int | None = None) -> EnformerConfig:
    """Convert the checkpoint folder ``src`` into the safetensors file ``dst``."""
    fields, state = read_checkpoint(src)
    config = config_from_hf(fields, sequence_length)
    save_params(dst, config, convert_state(config, state), source=str(src))
    return config


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m apoe_assets.enformer.convert SRC DST``."""
    parser = argparse.ArgumentParser(
        prog="python -m apoe_assets.enformer.convert", description=__doc__.split("\n\n")[0])
    parser.add_argument("src", help="checkpoint folder (config.json + weights)")
    parser.add_argument("dst", help="output .safetensors file")
    parser.add_argument("--sequence-length", type=int, default=None,
                        help="input length in bp (default: inferred from target_length)")
    args = parser.parse_args(argv)
    try:
        config = convert(args.src, args.dst, args.sequence_length)
    except (ConversionError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    total = sum(int(np.prod(s)) for s in param_shapes(config).values())
    print(f"wrote {args.dst}: {total:,} parameters, {config}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
