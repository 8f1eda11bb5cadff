"""A small demo study (120 samples, Enformer component on APOE only) written once per test
session, and the bundled one."""

from __future__ import annotations

from pathlib import Path

import pytest

from apoe_assets.demo import simulate_study
from apoe_assets_tests.demo.reading import Vcf, read_vcf

SMALL_SAMPLES = 120
SMALL_SEED = 7
SMALL_ENFORMER_GENES = ("APOE",)
BUNDLED = Path(__file__).resolve().parents[2] / "data" / "demo"


@pytest.fixture(scope="session")
def small_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder of a 120-sample demo study."""
    out = tmp_path_factory.mktemp("demo") / "small"
    simulate_study(out, seed=SMALL_SEED, n_samples=SMALL_SAMPLES,
                   enformer_genes=SMALL_ENFORMER_GENES)
    return out


@pytest.fixture(scope="session", params=["small", "bundled"])
def study(request: pytest.FixtureRequest) -> Path:
    """Each study the properties are checked on: the small one and the bundled one (the small
    one is simulated only when a test asks for it)."""
    return request.getfixturevalue("small_study") if request.param == "small" else BUNDLED


@pytest.fixture(scope="session")
def vcf_cache() -> dict[Path, Vcf]:
    return {}


@pytest.fixture
def vcf(study: Path, vcf_cache: dict[Path, Vcf]) -> Vcf:
    """The study's VCF, read once per study."""
    if study not in vcf_cache:
        vcf_cache[study] = read_vcf(study / "genotypes/chr19.vcf.gz")
    return vcf_cache[study]
