"""Batched prediction: padding, selection, duplicates, reverse complement, input checks,
devices and the persistent compilation cache."""

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

from apoe_assets.enformer.inference import (
    Predictor,
    encode,
    reverse_complement,
    select_devices,
    unique_keys,
)
from apoe_assets.enformer.model import EnformerConfig, build, random_params
from apoe_assets.genomics.onehot import one_hot
from apoe_assets_tests.float32 import assert_network_close, network_rtol

CONFIG = EnformerConfig.tiny()
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def params() -> dict:
    return random_params(CONFIG, 7)


def _sequences(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return ["".join(rng.choice(list("ACGTN"), CONFIG.sequence_length, p=[.24] * 4 + [.04]))
            for _ in range(n)]


_APPLY = jax.jit(build(CONFIG).apply)


def _direct(params: dict, x: np.ndarray) -> np.ndarray:
    """The model's human head, batch as given (the reference the predictor is checked with)."""
    return np.asarray(_APPLY(params, jnp.asarray(x))["human"])


def test_batches_padding_and_selection(params: dict) -> None:
    seqs = _sequences(5)
    tracks, bins = [9, 0, 4], [13, 14, 15]
    done: list[tuple[int, int]] = []
    rates: list[float] = []
    predictor = Predictor(CONFIG, params, tracks=tracks, bins=bins, batch_size=2)

    def progress(k: int, n: int, per_second: float) -> None:
        done.append((k, n))
        rates.append(per_second)

    got = predictor.predict(seqs, progress=progress)
    assert got.shape == (5, 3, 3) and got.dtype == np.float32
    expected = _direct(params, one_hot(seqs))
    np.testing.assert_allclose(got, expected[:, bins][:, :, tracks], rtol=1e-5, atol=1e-6)
    batch = predictor.batch_size  # 2, or rounded up to a multiple of the device count
    assert done == [(min(k, 5), 5) for k in range(batch, 5 + batch, batch)]
    assert all(r > 0 for r in rates)
    assert predictor.sequences_computed == 5  # the padding row is not counted
    # one-hot arrays and generators (with a total) are accepted and give the same result
    np.testing.assert_array_equal(predictor.predict(list(one_hot(seqs))), got)
    np.testing.assert_array_equal(predictor.predict((s for s in seqs), total=5), got)
    # another selection per call
    other = predictor.predict(seqs[:3], tracks=[1], bins=[0, 27])
    np.testing.assert_allclose(other, expected[:3][:, [0, 27]][:, :, [1]], rtol=1e-5,
                               atol=1e-6)


def test_duplicates_are_computed_once(params: dict) -> None:
    """Keyed sequences: each unique key runs once; every row gets its key's prediction."""
    distinct = _sequences(3, seed=5)
    rows = [distinct[i] for i in (0, 1, 0, 2, 1, 0, 0)]
    keys = [f"h{i}" for i in (0, 1, 0, 2, 1, 0, 0)]
    predictor = Predictor(CONFIG, params, tracks=[9, 0, 4], bins=[13, 14, 15], batch_size=2)
    done: list[tuple[int, int]] = []
    got = predictor.predict(rows, progress=lambda k, n, _: done.append((k, n)), keys=keys)
    assert predictor.sequences_computed == 3 and done[-1] == (3, 3)
    plain = predictor.predict(rows)  # all seven rows: other batches than the three distinct
    assert_network_close(got, plain, CONFIG)
    # each row is its key's prediction, the very same array (equal bits, not just close)
    np.testing.assert_array_equal(got, got[[0, 1, 0, 3, 1, 0, 0]])
    first, inverse = unique_keys(keys)
    assert first.tolist() == [0, 1, 3] and inverse.tolist() == [0, 1, 0, 2, 1, 0, 0]
    with pytest.raises(ValueError, match="2 keys for 7 sequences"):
        predictor.predict(rows, keys=keys[:2])


def test_reverse_complement_average(params: dict) -> None:
    seqs = _sequences(2, seed=1)
    x = one_hot(seqs)
    fwd = _direct(params, x)
    rev = _direct(params, np.ascontiguousarray(x[:, ::-1, ::-1]))[:, ::-1]
    predictor = Predictor(CONFIG, params, batch_size=2, reverse_complement=True)
    got = predictor.predict(seqs)
    np.testing.assert_allclose(got, 0.5 * (fwd + rev), rtol=1e-5, atol=1e-6)
    # with averaging, a sequence's reverse complement predicts the same, bins flipped back
    flipped = predictor.predict(list(np.ascontiguousarray(x[:, ::-1, ::-1])))
    np.testing.assert_allclose(flipped[:, ::-1], got, rtol=1e-5, atol=1e-6)
    assert np.abs(fwd - rev).max() > 1e-3  # without it they differ (the check has teeth)
    # A<->T, C<->G and reversed
    np.testing.assert_array_equal(np.asarray(reverse_complement(jnp.asarray(one_hot("AACG")))),
                                  one_hot("CGTT"))


def test_bfloat16_option(params: dict) -> None:
    seqs = _sequences(1, seed=2)
    ref = Predictor(CONFIG, params).predict(seqs)
    low = Predictor(CONFIG, params, precision="bfloat16").predict(seqs)
    assert low.dtype == np.float32
    relative = np.linalg.norm(low - ref) / np.linalg.norm(ref)
    assert 0 < relative < 0.05


def test_bad_input(params: dict) -> None:
    predictor = Predictor(CONFIG, params)
    with pytest.raises(ValueError, match="40 bp, the model needs 6,144"):
        predictor.predict(["ACGT" * 10])
    bad = "ACGT" * (CONFIG.sequence_length // 4 - 1) + "ACGX"
    with pytest.raises(ValueError, match="'X' at position 6143"):
        predictor.predict([bad])
    with pytest.raises(ValueError, match="'-' at position 0"):
        predictor.predict(["-" + "A" * (CONFIG.sequence_length - 1)])
    iupac = "RYSWKMBDHVNacgtn" + "A" * (CONFIG.sequence_length - 16)
    assert encode(iupac, CONFIG.sequence_length)[0].tolist() == [0.5, 0, 0.5, 0]
    with pytest.raises(ValueError, match="shape"):
        predictor.predict([np.zeros((10, 4), np.float32)])
    with pytest.raises(ValueError, match="head 'fly'"):
        Predictor(CONFIG, params, head="fly")
    with pytest.raises(ValueError, match="track indices"):
        Predictor(CONFIG, params, tracks=[10])
    with pytest.raises(ValueError, match="bin indices"):
        predictor.predict(["A" * CONFIG.sequence_length], bins=[28])
    with pytest.raises(ValueError, match="got 1 sequences, expected 2"):
        predictor.predict(iter(["A" * CONFIG.sequence_length]), total=2)


@pytest.mark.parametrize("kind", ["gpu", "tpu"])
def test_absent_accelerator_is_a_clear_error(kind: str) -> None:
    if any(d.platform == kind for d in jax.devices()):
        pytest.skip(f"this machine has a {kind}")
    with pytest.raises(RuntimeError, match=f"device '{kind}' was requested but JAX finds no "
                                           f"{kind.upper()}"):
        select_devices(kind)  # type: ignore[arg-type]
    assert select_devices("cpu") == jax.local_devices(backend="cpu")
    with pytest.raises(ValueError, match="device must be one of"):
        select_devices("xpu")  # type: ignore[arg-type]


_CACHE_SCRIPT = """
import json, sys
import jax, numpy as np
hits = []
jax.monitoring.register_event_listener(
    lambda event, **_: hits.append(event) if event.endswith("cache_hits") else None)
from apoe_assets.enformer.inference import Predictor
from apoe_assets.enformer.model import EnformerConfig, random_params
cfg = EnformerConfig(channels=48, num_transformer_layers=1, sequence_length=256,
                     target_length=20, channel_divisor=8, num_downsamples=3,
                     output_heads=(("human", 3),))
p = Predictor(cfg, random_params(cfg, 0), compilation_cache_dir=sys.argv[1])
y = p.predict([np.zeros((cfg.sequence_length, 4), np.float32)])
json.dump({"hits": len(hits), "sum": float(y.sum())}, sys.stdout)
"""


def test_compilation_cache_is_written_and_reused(tmp_path: Path) -> None:
    """A first process fills the cache directory; a second loads from it (cache hits)."""
    cache = tmp_path / "jax-cache"

    def run() -> dict:
        done = subprocess.run([sys.executable, "-c", _CACHE_SCRIPT, str(cache)], cwd=REPO,
                              env=dict(os.environ, JAX_PLATFORMS="cpu"), capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    first = run()
    entries = sorted(p.name for p in cache.iterdir())
    assert entries and first["hits"] == 0
    second = run()
    assert second["hits"] >= 1 and second["sum"] == first["sum"]
    assert sorted(p.name for p in cache.iterdir()) == entries  # nothing new compiled


def test_data_parallel_over_four_cpu_devices() -> None:
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
        out = many._forward(many.params, x, np.array([1, 2]), np.array([5, 6]))
        json.dump({"devices": jax.device_count(), "batch": many.batch_size,
                   "mesh": len(many.mesh.devices.flat),
                   "out_devices": len(out.sharding.device_set),
                   "shards": [list(s.data.shape) for s in out.addressable_shards],
                   "max_diff": float(np.abs(a - b).max()),
                   "scale": float(np.abs(b).max()), "shape": list(a.shape)},
                  sys.stdout)
    """)
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=4"
    env = dict(os.environ, XLA_FLAGS=flags.strip(), JAX_PLATFORMS="cpu")
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["devices"] == 4 and report["mesh"] == 4 and report["out_devices"] == 4
    assert report["batch"] == 4  # 3 rounded up to a multiple of the device count
    assert report["shards"] == [[1, 2, 2]] * 4
    assert report["shape"] == [6, 2, 2]
    assert report["max_diff"] <= network_rtol(EnformerConfig.tiny()) * report["scale"]
