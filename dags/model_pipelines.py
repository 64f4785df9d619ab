"""
### Model pipelines: one training DAG and one scoring DAG per model spec

Every spec file in `include/models/` (or `$CMMS_MODELS_DIR`) becomes `<name>_training` and
`<name>_scoring` (see `cmms_mlflow.factory`). The shipped spec `predictive_maintenance.yaml`
gives `predictive_maintenance_training` (nightly at 02:00 UTC) and
`predictive_maintenance_scoring`. Add a model with `make new-model NAME=... SOURCE=... TARGET=...`,
review the file, commit it: the next parse of this file shows its two DAGs. A spec that does not
validate shows as an import error of this file naming the spec and the field; the others load.
"""

from __future__ import annotations

from cmms_mlflow.factory import build_dags

# The airflow dag processor collects the DAG objects found in this module's globals.
globals().update(build_dags())
