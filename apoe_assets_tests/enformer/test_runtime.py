"""Loading weights into a predictor, the missing-weights help, and the Dagster resource."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import jax
import numpy as np
import pytest
from pydantic import ValidationError

from apoe_assets.enformer.convert import ConversionError, save_params
from apoe_assets.enformer.model import EnformerConfig, random_params
from apoe_assets.enformer.runtime import (
    OFFICIAL_REPOSITORY,
    MissingWeightsError,
    load_predictor,
)
from apoe_assets.resources.enformer import EnformerResource

CONFIG = EnformerConfig.tiny()


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    return save_params(path, CONFIG, random_params(CONFIG, 7))


@pytest.mark.parametrize("missing", [None, "absent.safetensors"])
def test_missing_weights_say_how_to_get_them(missing: str | None, tmp_path: Path) -> None:
    path = None if missing is None else tmp_path / missing
    with pytest.raises(MissingWeightsError) as error:
        load_predictor(path, device="cpu")
    message = str(error.value)
    assert OFFICIAL_REPOSITORY == "EleutherAI/enformer-official-rough"
    for step in (OFFICIAL_REPOSITORY, "from_pretrained", "save_pretrained",
                 "safe_serialization=False", "python -m apoe_assets.enformer.convert"):
        assert step in message
    assert missing is None or str(path) in message


def test_weights_of_another_configuration(weights: Path, tmp_path: Path) -> None:
    """A file whose tensors do not fit the configuration it claims names the tensor."""
    from safetensors import safe_open
    from safetensors.numpy import load_file, save_file

    with safe_open(weights, framework="numpy") as handle:
        metadata = handle.metadata()
    tensors = load_file(weights)
    tensors["enformer/tower/block_1/conv/conv/w"] = np.zeros((5, 48, 8), np.float32)
    bad = tmp_path / "bad.safetensors"
    save_file(tensors, str(bad), metadata=metadata)
    with pytest.raises(ConversionError, match=r"'enformer/tower/block_1/conv/conv/w' has "
                                              r"shape \(5, 48, 8\)"):
        load_predictor(bad, device="cpu")


def test_load_predictor(weights: Path) -> None:
    predictor = load_predictor(weights, device="cpu", batch_size=2, tracks=[9, 0, 4],
                               bins=[13, 14, 15])
    devices = jax.local_devices(backend="cpu")
    assert predictor.devices == devices and predictor.config == CONFIG
    assert predictor.batch_size == -(-2 // len(devices)) * len(devices)  # whole per device
    got = predictor.predict(["ACGT" * (CONFIG.sequence_length // 4)])
    assert got.shape == (1, 3, 3) and np.all(got > 0)


_SEEN: list[int] = []


@dg.asset
def first_gene(enformer: EnformerResource) -> dg.MaterializeResult:
    predictor = enformer.predictor()
    _SEEN.append(id(predictor))
    return dg.MaterializeResult(metadata={"batch": predictor.batch_size})


@dg.asset(deps=[first_gene])
def second_gene(enformer: EnformerResource) -> dg.MaterializeResult:
    _SEEN.append(id(enformer.predictor()))
    return dg.MaterializeResult()


def test_resource_loads_once_per_run(weights: Path) -> None:
    _SEEN.clear()
    resource = EnformerResource(weights=str(weights), device="cpu", batch_size=3)
    result = dg.materialize([first_gene, second_gene], resources={"enformer": resource})
    assert result.success
    assert len(_SEEN) == 2 and _SEEN[0] == _SEEN[1]
    batch = result.asset_materializations_for_node("first_gene")[0].metadata["batch"]
    assert batch.value == 3


def test_resource_errors(weights: Path) -> None:
    with pytest.raises(MissingWeightsError, match="official"):
        EnformerResource().predictor()
    if not any(d.platform == "gpu" for d in jax.devices()):
        with pytest.raises(RuntimeError, match="device 'gpu' was requested"):
            EnformerResource(weights=str(weights), device="gpu").predictor()
    with pytest.raises(ValidationError, match="precision"):
        EnformerResource(weights=str(weights), precision="float16")  # type: ignore[arg-type]
