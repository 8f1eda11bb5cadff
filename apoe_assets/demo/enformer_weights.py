"""The demo's Enformer: deterministic random weights for the small configuration and its
targets table, written beside the study (``enformer/``)."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

from apoe_assets.demo import layout
from apoe_assets.enformer import EnformerConfig, random_params
from apoe_assets.enformer.convert import save_params
from apoe_assets.enformer.targets import demo_targets, write_targets

HEADER_SIZE_BYTES = 8
"""safetensors files open with the header length as a little-endian u64."""
HEADER_ALIGNMENT = 8
"""safetensors pads its JSON header with spaces to a multiple of this."""


def demo_config() -> EnformerConfig:
    """The demo model: :meth:`EnformerConfig.small` (its input is the study's window)."""
    config = EnformerConfig.small()
    if config.sequence_length != layout.WINDOW_LENGTH:
        raise ValueError(f"the demo model reads {config.sequence_length:,} bp but the demo "
                         f"study's window_length is {layout.WINDOW_LENGTH:,}")
    return config


def weights_source(seed: int) -> str:
    """The provenance string stored in the weights file."""
    return f"apoe_assets.demo: random_params(EnformerConfig.small(), seed={seed})"


def write_demo_model(out: Path, seed: int) -> EnformerConfig:
    """Write ``random_params(small, seed)`` to :data:`layout.ENFORMER_WEIGHTS` and the demo
    targets table to :data:`layout.ENFORMER_TARGETS` under ``out``; returns the config."""
    config = demo_config()
    weights = out / layout.ENFORMER_WEIGHTS
    save_params(weights, config, random_params(config, seed), source=weights_source(seed))
    canonical_safetensors_header(weights)
    weights.chmod(0o644)
    write_targets(demo_targets(), out / layout.ENFORMER_TARGETS).chmod(0o644)
    return config


def canonical_safetensors_header(path: Path) -> None:
    """Rewrite a safetensors header as JSON with sorted keys, so the file's bytes depend only
    on its content (the writer orders the ``__metadata__`` map at random). Tensor data and
    their offsets (relative to the header's end) are unchanged."""
    data = path.read_bytes()
    (size,) = struct.unpack("<Q", data[:HEADER_SIZE_BYTES])
    body = data[HEADER_SIZE_BYTES + size:]
    header = json.loads(data[HEADER_SIZE_BYTES:HEADER_SIZE_BYTES + size])
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % HEADER_ALIGNMENT)
    tmp = path.with_name(f".{path.name}.canonical.tmp")
    tmp.write_bytes(struct.pack("<Q", len(text)) + text + body)
    os.replace(tmp, path)
