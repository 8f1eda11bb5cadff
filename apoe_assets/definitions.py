"""The one Definitions of the code location: assets, checks and resources for the study that
``APOE_STUDY`` names (the bundled demo by default)."""

from __future__ import annotations

import dagster as dg

from apoe_assets.assets.eqtl import eqtl_assets
from apoe_assets.assets.folds import cv_folds
from apoe_assets.assets.ingestion import ingestion_assets
from apoe_assets.assets.loci import locus_assets
from apoe_assets.assets.sequences import sequence_assets
from apoe_assets.checks import ingestion_checks
from apoe_assets.partitions import study_partitions
from apoe_assets.resources.storage import AssetStorage
from apoe_assets.resources.study import StudyResource
from apoe_assets.study import Study, load_study


def build_definitions(study: Study) -> dg.Definitions:
    """Everything Dagster needs for one study."""
    parts = study_partitions(study)
    return dg.Definitions(
        assets=[*ingestion_assets(parts), cv_folds, *locus_assets(parts),
                *sequence_assets(parts), *eqtl_assets(parts)],
        asset_checks=ingestion_checks(parts),
        resources={
            "io_manager": AssetStorage(root=study.storage_root),
            "study": StudyResource(path=str(study.source)),
        },
    )


@dg.definitions
def defs() -> dg.Definitions:
    """Definitions for the study of ``APOE_STUDY`` (loaded lazily, not at import)."""
    return build_definitions(load_study())
