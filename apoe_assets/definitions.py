"""The one Definitions of the code location: assets, checks and resources for the study that
``APOE_STUDY`` names (the bundled demo by default), run by the executor ``APOE_EXECUTOR`` names
(:mod:`apoe_assets.orchestration.executors`; multiprocess by default)."""

from __future__ import annotations

import dagster as dg

from apoe_assets.assets.comparison import comparison_assets
from apoe_assets.assets.enformer import enformer_assets
from apoe_assets.assets.eqtl import eqtl_assets
from apoe_assets.assets.folds import cv_folds
from apoe_assets.assets.ingestion import ingestion_assets, ingestion_checks
from apoe_assets.assets.loci import locus_assets
from apoe_assets.assets.models import model_assets
from apoe_assets.assets.overlap import overlap_assets
from apoe_assets.assets.prs import prs_assets
from apoe_assets.assets.sequences import sequence_assets, sequence_checks
from apoe_assets.assets.snp_effects import snp_effect_assets
from apoe_assets.assets.sources import source_assets
from apoe_assets.assets.stacking import stacking_assets
from apoe_assets.assets.truth import truth_assets, truth_resources
from apoe_assets.orchestration.automation import automation_definitions, with_automation
from apoe_assets.orchestration.executors import step_executor
from apoe_assets.partitions import study_partitions
from apoe_assets.resources.mlflow_tracking import MlflowTracking
from apoe_assets.resources.storage import AssetStorage
from apoe_assets.resources.study import StudyResource
from apoe_assets.stage_settings import enformer_resource
from apoe_assets.study import Study, load_study


def build_definitions(study: Study) -> dg.Definitions:
    """Everything Dagster needs for one study."""
    parts = study_partitions(study)
    assets = with_automation([
        *source_assets(parts), *ingestion_assets(parts), cv_folds, *locus_assets(parts),
        *sequence_assets(parts), *eqtl_assets(parts), *prs_assets(parts),
        *enformer_assets(parts), *model_assets(parts), *stacking_assets(parts),
        *comparison_assets(parts), *snp_effect_assets(parts), *overlap_assets(parts),
        *truth_assets(study)])
    checks = [*ingestion_checks(parts), *sequence_checks(parts)]
    resources = {
        "io_manager": AssetStorage(root=study.storage_root),
        "study": StudyResource(path=str(study.source)),
        "enformer": enformer_resource(study),
        "mlflow": MlflowTracking.from_study(study),
        **truth_resources(study),
    }
    graph = dg.Definitions(assets=assets, asset_checks=checks,
                           resources=resources).resolve_asset_graph()
    jobs, schedules, sensors = automation_definitions(study, parts, graph)
    return dg.Definitions(assets=assets, asset_checks=checks, jobs=jobs, schedules=schedules,
                          sensors=sensors, executor=step_executor(), resources=resources)


@dg.definitions
def defs() -> dg.Definitions:
    """Definitions for the study of ``APOE_STUDY`` (loaded lazily, not at import)."""
    return build_definitions(load_study())
