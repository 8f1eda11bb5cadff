"""Batched prediction: padding, selection, reverse complement, input checks, devices."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from apoe_assets.enformer.inference import Predictor, encode, reverse_complement
from apoe_assets.enformer.model import EnformerConfig, build, random_params
from apoe_assets.genomics.onehot import one_hot

CONFIG = EnformerConfig.tiny()


@pytest.fixture(scope="module")
def params() -> dict:
    return random_params(CONFIG, 7)


def _sequences(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return ["".join(rng.choice(list("ACGTN"), CONFIG.sequence_length, p=[.24] * 4 + [.04]))
            for _ in range(n)]


def _direct(params: dict, x: np.ndarray) -> np.ndarray:
    return np.asarray(jax.jit(build(CONFIG).apply)(params, jnp.asarray(x))["human"])


def test_batches_padding_and_selection(params: dict) -> None:
    seqs = _sequences(5)
    tracks, bins = [9, 0, 4], [13, 14, 15]
    done: list[tuple[int, int]] = []
    predictor = Predictor(CONFIG, params, tracks=tracks, bins=bins, batch_size=2)
    got = predictor.predict(seqs, progress=lambda k, n: done.append((k, n)))
    assert got.shape == (5, 3, 3) and got.dtype == np.float32
    expected = _direct(params, one_hot(seqs))[:, bins][:, :, tracks]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert done == [(2, 5), (4, 5), (5, 5)]
    # one-hot arrays are accepted as well and give the same result
    again = predictor.predict(list(one_hot(seqs)))
    np.testing.assert_array_equal(again, got)


def test_reverse_complement_average(params: dict) -> None:
    seqs = _sequences(2, seed=1)
    x = one_hot(seqs)
    fwd = _direct(params, x)
    rev = _direct(params, np.ascontiguousarray(x[:, ::-1, ::-1]))[:, ::-1]
    got = Predictor(CONFIG, params, batch_size=2, reverse_complement=True).predict(seqs)
    np.testing.assert_allclose(got, 0.5 * (fwd + rev), rtol=1e-5, atol=1e-6)
    # A<->T, C<->G and reversed
    np.testing.assert_array_equal(np.asarray(reverse_complement(jnp.asarray(one_hot("AACG")))),
                                  one_hot("CGTT"))


def test_bfloat16_option(params: dict) -> None:
    seqs = _sequences(1, seed=2)
    ref = Predictor(CONFIG, params).predict(seqs)
    low = Predictor(CONFIG, params, precision="bfloat16").predict(seqs)
    assert low.dtype == np.float32
    assert np.linalg.norm(low - ref) / np.linalg.norm(ref) < 0.05


def test_bad_input(params: dict) -> None:
    predictor = Predictor(CONFIG, params)
    with pytest.raises(ValueError, match="6,144"):
        predictor.predict(["ACGT" * 10])
    bad = "ACGT" * (CONFIG.sequence_length // 4 - 1) + "ACGX"
    with pytest.raises(ValueError, match="'X' at position 6143"):
        predictor.predict([bad])
    iupac = "RYSWKMBDHVN" + "A" * (CONFIG.sequence_length - 11)
    assert encode(iupac, CONFIG.sequence_length)[0].tolist() == [0.5, 0, 0.5, 0]
    with pytest.raises(ValueError, match="shape"):
        predictor.predict([np.zeros((10, 4), np.float32)])
    with pytest.raises(ValueError, match="head 'fly'"):
        Predictor(CONFIG, params, head="fly")
    with pytest.raises(ValueError, match="track indices"):
        Predictor(CONFIG, params, tracks=[10])


def test_compilation_cache_directory(params: dict, tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import numpy as np
        from apoe_assets.enformer.inference import Predictor
        from apoe_assets.enformer.model import EnformerConfig, random_params
        cfg = EnformerConfig.tiny(output_heads=(("human", 2),))
        p = Predictor(cfg, random_params(cfg, 0), compilation_cache_dir={str(tmp_path)!r})
        p.predict([np.zeros((cfg.sequence_length, 4), np.float32)])
    """)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
    assert any(tmp_path.iterdir())


def test_data_parallel_over_four_cpu_devices(tmp_path: Path) -> None:
    """Four forced host devices: the batch is sharded 4 ways and results equal one device's."""
    script = textwrap.dedent("""
        import json, sys
        import jax, numpy as np
        from apoe_assets.enformer.inference import Predictor
        from apoe_assets.enformer.model import EnformerConfig, random_params
        cfg = EnformerConfig.tiny()
        params = random_params(cfg, 3)
        rng = np.random.default_rng(0)
        seqs = list(np.eye(4, dtype=np.float32)[rng.integers(0, 4, (6, cfg.sequence_length))])
        many = Predictor(cfg, params, batch_size=3, bins=[5, 6], tracks=[1, 2])
        one = Predictor(cfg, params, batch_size=4, bins=[5, 6], tracks=[1, 2],
                        devices=jax.devices()[:1])
        a, b = many.predict(seqs), one.predict(seqs)
        x = jax.device_put(np.zeros((many.batch_size, cfg.sequence_length, 4), np.float32),
                           many._batch_sharding)
        out = many._forward(many.params, x)
        json.dump({"devices": jax.device_count(), "batch": many.batch_size,
                   "mesh": len(many.mesh.devices.flat),
                   "out_devices": len(out.sharding.device_set),
                   "shards": [list(s.data.shape) for s in out.addressable_shards],
                   "max_diff": float(np.abs(a - b).max()), "shape": list(a.shape)},
                  sys.stdout)
    """)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
               JAX_PLATFORMS="cpu")
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["devices"] == 4 and report["mesh"] == 4 and report["out_devices"] == 4
    assert report["batch"] == 4  # 3 rounded up to a multiple of the device count
    assert report["shards"] == [[1, 2, 2]] * 4
    assert report["shape"] == [6, 2, 2]
    assert report["max_diff"] < 1e-5
