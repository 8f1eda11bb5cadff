"""The Celery app that apoe-assets' workers run, with the executor's own settings.

Start one worker per queue (each with the Dagster instance's ``DAGSTER_HOME``, ``APOE_STUDY``,
``APOE_CELERY_BROKER`` and ``APOE_CELERY_BACKEND``)::

    dagster-celery worker start -A apoe_assets.orchestration.celery_worker -q dagster
    dagster-celery worker start -A apoe_assets.orchestration.celery_worker -q gpu -- -c 1

The executor (``APOE_EXECUTOR=celery``) and these workers build their Celery app from the same
:data:`~apoe_assets.orchestration.executors.CELERY_SETTINGS`, so a step's message is
acknowledged when it ends on both sides.
"""

from __future__ import annotations

import os

from dagster_celery.executor import CeleryExecutor
from dagster_celery.make_app import make_app
from dagster_celery.tasks import create_task

from apoe_assets.orchestration.executors import BACKEND_ENV, BROKER_ENV, CELERY_SETTINGS


def _required(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise RuntimeError(f"a Celery worker needs {name} (a broker URL such as "
                           "redis://host:6379/0), the same as the executor's")
    return value


app = make_app(CeleryExecutor.for_cli(broker=_required(BROKER_ENV), backend=_required(BACKEND_ENV),
                                      config_source=CELERY_SETTINGS).app_args())
execute_plan = create_task(app)
