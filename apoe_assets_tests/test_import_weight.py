"""Loading the code location imports none of the heavy libraries.

Every process that loads ``apoe_assets.definitions`` (the code server, the daemon, each run,
each run's forkserver) pays for what it imports, so JAX, Haiku, MLflow, scikit-learn, XGBoost,
skops, SciPy and matplotlib are imported only inside the functions that use them (or under
``TYPE_CHECKING``; the forkserver preloads SciPy and matplotlib for its steps). Catches: a
module-level import of one of them creeping back anywhere the code location reaches (directly,
or through a light module that starts importing a heavy one, such as a dataclass module that
imports the JAX inference code); loading them then costs every process CPU-seconds (SciPy and
matplotlib alone: about 2 of the code location's 6).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from apoe_assets.study import DEMO_STUDY

HEAVY = ("jax", "jaxlib", "haiku", "mlflow", "sklearn", "xgboost", "skops", "scipy",
         "matplotlib")
"""Top-level packages the code location must not import."""

LOAD = f"""
import json, sys
import apoe_assets.definitions as definitions
definitions.defs().get_repository_def()
heavy = set({HEAVY!r})
print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in heavy)))
"""


def test_code_location_imports_no_heavy_library() -> None:
    env = {**os.environ, "APOE_STUDY": str(DEMO_STUDY)}
    done = subprocess.run([sys.executable, "-c", LOAD], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-4000:]
    imported = json.loads(done.stdout.strip().splitlines()[-1])
    packages = sorted({m.split(".")[0] for m in imported})
    assert not imported, (
        f"loading the code location imported {packages} ({len(imported)} modules): import "
        "them inside the functions that use them (or under TYPE_CHECKING for annotations); "
        "`python -X importtime` shows which module pulled them in")
