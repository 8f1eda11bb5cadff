"""The checkpoint converter: layout, errors naming the tensor, no unpickling."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from apoe_assets.enformer import convert as conv
from apoe_assets.enformer.model import EnformerConfig, param_shapes, random_params
from apoe_assets_tests.enformer.peer import random_peer, save_checkpoint, torch

HPARAMS = dict(dim=48, depth=1, heads=8, target_length=28, dim_divisible_by=8,
               output_heads=dict(human=5, mouse=3), use_tf_gamma=False)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_checkpoint(random_peer(seed=1, **HPARAMS), tmp_path_factory.mktemp("c") / "ckpt")


@pytest.fixture(scope="module")
def state(checkpoint: Path) -> dict[str, np.ndarray]:
    return conv.read_checkpoint(checkpoint)[1]


def _config(checkpoint: Path) -> EnformerConfig:
    return conv.config_from_hf(json.loads((checkpoint / "config.json").read_text()))


def test_config_from_checkpoint(checkpoint: Path) -> None:
    config = _config(checkpoint)
    assert config.channels == 48 and config.num_transformer_layers == 1
    assert config.sequence_length == 48 * 128 and config.target_length == 28
    assert config.channel_divisor == 8 and config.heads == {"human": 5, "mouse": 3}
    full = conv.config_from_hf({})  # enformer-pytorch's defaults are the published model
    assert full == EnformerConfig.full()


def test_layouts(checkpoint: Path, state: dict[str, np.ndarray]) -> None:
    """Transposes as documented; _trunk aliases and num_batches_tracked are dropped."""
    assert not any(k.startswith("_trunk.") for k in state)
    flat = conv.convert_state(_config(checkpoint), state)
    np.testing.assert_array_equal(flat["enformer/stem/conv/w"],
                                  state["stem.0.weight"].transpose(2, 1, 0))
    np.testing.assert_array_equal(flat["enformer/stem/pool/w"],
                                  state["stem.2.to_attn_logits.weight"][:, :, 0, 0].T)
    mha = "enformer/transformer/layer_0/mha"
    np.testing.assert_array_equal(flat[f"{mha}/q/w"], state["transformer.0.0.fn.1.to_q.weight"].T)
    np.testing.assert_array_equal(flat[f"{mha}/r_w_bias"],
                                  state["transformer.0.0.fn.1.rel_content_bias"][0, :, 0])
    np.testing.assert_array_equal(flat[f"{mha}/r_r_bias"],
                                  state["transformer.0.0.fn.1.rel_pos_bias"][0, :, 0])
    bn = "enformer/tower/block_3/pointwise/batch_norm"
    np.testing.assert_array_equal(flat[f"{bn}/moving_variance"],
                                  state["conv_tower.3.1.fn.0.running_var"])
    np.testing.assert_array_equal(flat[f"{bn}/moving_mean"],
                                  state["conv_tower.3.1.fn.0.running_mean"])


def test_round_trip_and_metadata(checkpoint: Path, tmp_path: Path) -> None:
    dst = tmp_path / "out" / "enformer.safetensors"
    assert conv.main([str(checkpoint), str(dst)]) == 0
    config, params = conv.load_params(dst)
    assert config == _config(checkpoint)
    assert {f"{m}/{n}": v.shape for m, ps in params.items() for n, v in ps.items()} == \
        param_shapes(config)
    assert not list(dst.parent.glob("*.tmp"))


def test_safetensors_checkpoint(checkpoint: Path, state: dict[str, np.ndarray],
                                tmp_path: Path) -> None:
    """``model.safetensors`` is read without torch and gives the same params."""
    folder = tmp_path / "st"
    folder.mkdir()
    (folder / "config.json").write_text((checkpoint / "config.json").read_text())
    save_file({k: np.ascontiguousarray(v) for k, v in state.items()},
              str(folder / "model.safetensors"))
    config = conv.convert(folder, tmp_path / "a.safetensors")
    conv.convert(checkpoint, tmp_path / "b.safetensors")
    a, b = conv.load_params(tmp_path / "a.safetensors")[1], conv.load_params(
        tmp_path / "b.safetensors")[1]
    assert config == _config(checkpoint)
    for module in a:
        for name in a[module]:
            np.testing.assert_array_equal(a[module][name], b[module][name])


def test_missing_tensor_named(checkpoint: Path, state: dict[str, np.ndarray]) -> None:
    broken = {k: v for k, v in state.items() if k != "transformer.0.1.fn.4.bias"}
    with pytest.raises(conv.ConversionError, match=r"'transformer\.0\.1\.fn\.4\.bias'.*missing"):
        conv.convert_state(_config(checkpoint), broken)


def test_wrong_shape_named(checkpoint: Path, state: dict[str, np.ndarray]) -> None:
    broken = dict(state)
    broken["conv_tower.2.0.2.weight"] = np.zeros((7, 24, 5), np.float32)
    with pytest.raises(conv.ConversionError, match=r"'conv_tower\.2\.0\.2\.weight' has shape"):
        conv.convert_state(_config(checkpoint), broken)


def test_other_configuration_rejected(checkpoint: Path, state: dict[str, np.ndarray]) -> None:
    """Weights with more layers than the config: the unused tensors are named."""
    fewer = _config(checkpoint).replace(num_transformer_layers=0)
    with pytest.raises(conv.ConversionError, match=r"not used.*transformer\.0\."):
        conv.convert_state(fewer, state)


def test_bin_read_with_weights_only(checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[dict] = []
    real_load = torch.load

    def spy(*args, **kwargs):
        seen.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    conv.read_checkpoint(checkpoint)
    assert seen and all(kw.get("weights_only") is True for kw in seen)


def test_bin_without_torch_says_convert(checkpoint: Path, monkeypatch: pytest.MonkeyPatch
                                        ) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch → ImportError
    with pytest.raises(conv.ConversionError, match="convert it to safetensors first"):
        conv.read_checkpoint(checkpoint)


def test_cli_reports_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert conv.main([str(tmp_path), str(tmp_path / "x.safetensors")]) == 1
    assert "config.json" in capsys.readouterr().err


def test_load_params_checks_shapes(tmp_path: Path) -> None:
    """A file whose tensors do not fit its config is rejected, naming the tensor."""
    config = EnformerConfig.tiny()
    params = random_params(config, 0)
    path = conv.save_params(tmp_path / "w.safetensors", config, params)
    assert conv.load_params(path)[0] == config
    flat = conv.flatten(params)
    flat["enformer/head_human/b"] = np.zeros(3, np.float32)
    with pytest.raises(conv.ConversionError, match="'enformer/head_human/b' has shape"):
        conv.save_params(tmp_path / "bad.safetensors", config, flat)
    save_file(flat, str(tmp_path / "raw.safetensors"))
    with pytest.raises(conv.ConversionError, match="not a converted Enformer file"):
        conv.load_params(tmp_path / "raw.safetensors")
    with pytest.raises(FileNotFoundError, match=r"apoe_assets\.enformer\.convert"):
        conv.load_params(tmp_path / "absent.safetensors")
