"""What an MLflow run of a fitted model holds, built without MLflow or Dagster.

The tracking resource (:mod:`apoe_assets.resources.mlflow_tracking`) sends these payloads; here
they are plain values that a test can check without a server:

* **tags** on every run: the Dagster run ID, asset key, partition, code version and data
  version (``dagster.*`` keys), plus the gene and model name on a model's run;
* **params**: flat ``name → str`` (nested mappings joined with ``.``, sequences as JSON);
* **metrics**: pooled out-of-fold metrics under their own names (``r2``, ``mse``, …); each
  fold's value as ``fold/<metric>`` with ``step`` = the fold number (one chart per metric in
  the MLflow UI's *fold* section); and across folds ``fold_mean/<metric>`` and
  ``fold_se/<metric>`` (standard error of the fold mean, sd/√K). The runs table shows a
  series' last step, so compare runs by the pooled and ``fold_*`` summary columns.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

SINGLE_GENE = "single-gene"
MULTI_GENE_STACKING = "multi-gene-stacking"
EXPERIMENTS = (SINGLE_GENE, MULTI_GENE_STACKING)

TAG_DAGSTER_RUN_ID = "dagster.run_id"
TAG_ASSET_KEY = "dagster.asset_key"
TAG_PARTITION = "dagster.partition"
TAG_CODE_VERSION = "dagster.code_version"
TAG_DATA_VERSION = "dagster.data_version"
TAG_GENE = "gene"
TAG_MODEL = "model"
TAG_ROLE = "run_role"
TAG_ERROR = "error"
TAG_PREDICTIONS = "predictions_digest"
"""On a model run: :func:`predictions_digest` of the out-of-fold predictions it reports, so
the comparison finds the run behind each stored prediction column (and only that run)."""
ROLE_PARENT = "parent"
ROLE_MODEL = "model"
REQUIRED_TAGS = (TAG_DAGSTER_RUN_ID, TAG_ASSET_KEY, TAG_PARTITION, TAG_CODE_VERSION,
                 TAG_DATA_VERSION)
# The caller's short names for the tags it supplies.
CALLER_TAGS = {"partition": TAG_PARTITION, "code_version": TAG_CODE_VERSION,
               "data_version": TAG_DATA_VERSION}

CHAMPION_ALIAS = "champion"
MODEL_ARTIFACT = "model"
PLOTS_ARTIFACT = "plots"
FOLD_PREFIX = "fold/"
FOLD_MEAN_PREFIX = "fold_mean/"
FOLD_SE_PREFIX = "fold_se/"

# MLflow's own limits (mlflow.utils.validation): a longer value is refused by the server.
MAX_PARAM_LENGTH = 6000
MAX_TAG_LENGTH = 8000
_NAME = re.compile(r"^[\w.\- :]+(/[\w.\- :]+)*$")


class TrackingPayloadError(ValueError):
    """A run payload MLflow would refuse (a bad name, a missing tag, an over-long value)."""


def registered_model_name(gene: str) -> str:
    """The registry name of a gene's expression model: ``<gene>-expression``."""
    return f"{gene}-expression"


def model_run_name(gene: str, model_name: str) -> str:
    return f"{gene}/{model_name}"


def parent_run_name(asset_key: str, dagster_run_id: str) -> str:
    return f"{asset_key} {dagster_run_id[:8]}"


def run_tags(dagster_run_id: str, asset_key: str, tags: Mapping[str, Any]) -> dict[str, str]:
    """Every tag of a run, as strings: the Dagster run and asset, and the caller's ``tags``
    (``partition``, ``code_version`` and ``data_version`` become their ``dagster.*`` keys;
    any other key is kept as given). Raises when one of :data:`REQUIRED_TAGS` is missing."""
    merged = {TAG_DAGSTER_RUN_ID: dagster_run_id, TAG_ASSET_KEY: asset_key}
    for key, value in tags.items():
        if value is not None:
            merged[CALLER_TAGS.get(key, key)] = _tag_value(key, value)
    missing = [k for k in REQUIRED_TAGS if not merged.get(k)]
    if missing:
        raise TrackingPayloadError(
            f"run tags miss {', '.join(missing)} (give tags partition=, code_version=, "
            "data_version=)")
    return merged


def _tag_value(key: str, value: Any) -> str:
    text = str(value)
    if len(text) > MAX_TAG_LENGTH:
        raise TrackingPayloadError(f"tag {key!r} is {len(text)} characters long; MLflow takes "
                                   f"at most {MAX_TAG_LENGTH}")
    return text


def error_text(error: BaseException | str, limit: int = MAX_TAG_LENGTH) -> str:
    """``Type: message`` of an error, cut to ``limit`` characters (the full traceback goes to
    an artifact)."""
    text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    return text if len(text) <= limit else text[:limit - 1] + "…"


def param_values(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Flat ``name → str`` params: nested mappings joined with ``.``, sequences and arrays as
    JSON, NumPy scalars as Python numbers. Raises on a bad name or a value longer than MLflow
    stores (a long list belongs in an artifact, not a param)."""
    flat: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(param_values(value, prefix=f"{name}."))
            continue
        _check_name(name, "param")
        text = _param_text(value)
        if len(text) > MAX_PARAM_LENGTH:
            raise TrackingPayloadError(
                f"param {name!r} is {len(text)} characters long; MLflow takes at most "
                f"{MAX_PARAM_LENGTH} (log it as an artifact instead)")
        flat[name] = text
    return flat


def _param_text(value: Any) -> str:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, list | tuple):
        return json.dumps(value, default=_json_default)
    return str(value)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def pooled_metric_values(pooled: Mapping[str, Any]) -> dict[str, float]:
    """Pooled metrics as floats under their own names (NaN kept: MLflow stores it)."""
    values = {}
    for name, value in pooled.items():
        _check_name(name, "metric")
        values[name] = float(value)
    return values


def fold_metric_steps(fold_metrics: pd.DataFrame) -> list[tuple[str, float, int]]:
    """``(fold/<metric>, value, fold)`` for every fold (index: fold numbers) and metric
    (columns), then ``fold_mean/<metric>`` and ``fold_se/<metric>`` at step 0."""
    if fold_metrics.empty:
        return []
    folds = fold_metrics.index
    if not pd.api.types.is_integer_dtype(folds) or folds.has_duplicates:
        raise TrackingPayloadError(
            "fold_metrics needs one row per fold, indexed by the fold number (int), got index "
            f"{list(folds)[:10]}")
    steps: list[tuple[str, float, int]] = []
    for name in fold_metrics.columns:
        _check_name(str(name), "metric")
        values = fold_metrics[name].astype(np.float64)
        steps += [(f"{FOLD_PREFIX}{name}", float(v), int(k)) for k, v in values.items()]
        finite = values.dropna()
        mean = float(finite.mean()) if len(finite) else math.nan
        se = float(finite.std(ddof=1) / math.sqrt(len(finite))) if len(finite) > 1 else math.nan
        steps += [(f"{FOLD_MEAN_PREFIX}{name}", mean, 0), (f"{FOLD_SE_PREFIX}{name}", se, 0)]
    return steps


def _check_name(name: str, kind: str) -> None:
    if not _NAME.match(name) or len(name) > 250:
        raise TrackingPayloadError(
            f"{kind} name {name!r}: MLflow takes letters, digits, _ - . : space and / between "
            "non-empty parts, at most 250 characters")


def inputs_digest(inputs: Mapping[str, pd.DataFrame | pd.Series]) -> str:
    """A short SHA-256 of named tables (their values, index and columns): the data version
    tag of the runs made from them."""
    digest = hashlib.sha256()
    for name in sorted(inputs):
        table = inputs[name]
        digest.update(name.encode())
        columns = table.columns if isinstance(table, pd.DataFrame) else [table.name]
        digest.update(repr([str(c) for c in columns]).encode())
        digest.update(pd.util.hash_pandas_object(table, index=True).to_numpy().tobytes())
    return digest.hexdigest()[:16]


def predictions_digest(samples: Sequence[str], observed: np.ndarray,
                       predicted: np.ndarray) -> str:
    """A short SHA-256 of out-of-fold predictions (samples sorted, float64 values): the same
    for the column an asset stored and the rows a downstream asset read back."""
    order = np.argsort(np.asarray(samples, dtype=str), kind="stable")
    digest = hashlib.sha256("\n".join(np.asarray(samples, dtype=str)[order]).encode())
    for values in (observed, predicted):
        digest.update(np.ascontiguousarray(np.asarray(values, dtype=np.float64)[order]).tobytes())
    return digest.hexdigest()[:16]
