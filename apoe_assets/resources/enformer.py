"""The Enformer runtime as a Dagster resource: weights, devices, batch, precision.

The model is loaded once per process (per run with the in-process executor, per step with the
multiprocess one) and shared by every asset and partition that the run materialises. The
science lives in :mod:`apoe_assets.enformer`; this only configures and caches it.
"""

import time
from typing import TYPE_CHECKING, Any, Literal

import dagster as dg
from pydantic import Field, PrivateAttr

from apoe_assets.enformer.runtime import load_predictor, require_weights

if TYPE_CHECKING:  # heavy (JAX): the model loads on first use, so the code location loads fast
    from apoe_assets.enformer.inference import Predictor


class EnformerResource(dg.ConfigurableResource):
    """Converted Enformer weights and how to run them (see ``apoe_assets.enformer.runtime``)."""

    weights: str | None = Field(
        None, description="converted weights (.safetensors from `python -m "
        "apoe_assets.enformer.convert SRC DST`); required for a real study")
    device: Literal["auto", "cpu", "gpu", "tpu"] = Field(
        "auto", description="JAX backend; 'auto' = accelerator when present, else CPU")
    batch_size: int = Field(4, gt=0, description="sequences per forward pass, all devices")
    precision: Literal["float32", "bfloat16"] = Field(
        "float32", description="bfloat16 is for accelerators; outputs are float32 either way")
    reverse_complement: bool = Field(
        False, description="average each prediction with its reverse complement's")
    compilation_cache_dir: str | None = Field(
        None, description="JAX persistent compilation cache folder (compile once, reuse)")
    head: str = Field("human", description="output head (organism)")

    _predictor: Any = PrivateAttr(default=None)
    _loads: int = PrivateAttr(default=0)

    def predictor(self) -> "Predictor":
        """The loaded model (compiled per selection on first use), built once and cached."""
        if self._predictor is None:
            started = time.perf_counter()
            self._predictor = load_predictor(
                self.weights, head=self.head, device=self.device, batch_size=self.batch_size,
                precision=self.precision, reverse_complement=self.reverse_complement,
                compilation_cache_dir=self.compilation_cache_dir)
            self._loads += 1
            config = self._predictor.config
            dg.get_dagster_logger().info(
                f"loaded Enformer weights {self.weights} (C={config.channels}, "
                f"{config.num_transformer_layers} layers, {config.sequence_length:,} bp) on "
                f"{len(self._predictor.devices)} {self._predictor.devices[0].platform} "
                f"device(s) in {time.perf_counter() - started:.1f} s")
        return self._predictor

    @property
    def loads(self) -> int:
        """How often this resource instance has loaded the weights (1 after first use)."""
        return self._loads

    def check_weights(self) -> None:
        """Raise the how-to-get-the-weights error now if no weights file is configured."""
        require_weights(self.weights)
