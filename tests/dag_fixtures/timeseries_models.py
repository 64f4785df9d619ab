"""The Airflow DAGs of the time-series specs an end-to-end test scaffolds at run time (``make new-model
TELEMETRY=...``) into the folder ``$CMMS_TS_TEST_MODELS_DIR``: built by the project's DAG factory,
as the next parse of a real deployment would. Without the variable (every other test, the
scheduler clusters) this file defines no DAG.
"""

from __future__ import annotations

import os

from cmms_mlflow.factory import build_dags

_folder = os.environ.get("CMMS_TS_TEST_MODELS_DIR")
if _folder:
    globals().update(build_dags(_folder))
