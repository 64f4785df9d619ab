"""The test-only model specs of tests/dag_fixtures/models, built by the project's DAG factory.

Loaded as part of the test DAG bundle (tests/conftest.py), so ``dag.test()`` runs their DAGs
like any other: ai4i_training/_scoring, ai4i_strict_training/_scoring, ai4i_sql_training/_scoring.
"""

from __future__ import annotations

from pathlib import Path

from cmms_mlflow.factory import build_dags

# The airflow dag processor collects the DAG objects found in this module's globals.
globals().update(build_dags(Path(__file__).parent / "models"))
