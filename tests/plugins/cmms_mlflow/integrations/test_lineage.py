"""OpenLineage datasets and facets the operators report (cmms_mlflow.integrations.lineage), and metric
names."""

from __future__ import annotations


def test_dataset_names_follow_openlineage_naming_and_hide_credentials():
    from cmms_mlflow.integrations.lineage import location, mlflow_namespace

    assert location("/data/dag/run") == ("file", "/data/dag/run")
    assert location("file:///data/x/../y") == ("file", "/data/y")
    assert location("s3://bucket/pipeline/dag/run") == ("s3://bucket", "pipeline/dag/run")
    assert mlflow_namespace("http://pipeline:secret@mlflow.internal:5000/") == "mlflow://mlflow.internal:5000"
    assert mlflow_namespace("sqlite:////srv/mlflow.db") == "mlflow+sqlite:////srv/mlflow.db"


def test_a_batch_carries_its_digest_rows_and_schema():
    from cmms_mlflow.integrations.lineage import batch

    manifest = {
        "uri": "/data/d/r", "digest": "abc", "rows": 10, "columns": ["a", "b"], "data_version": "s/e",
        "splits": {"train": {"rows": 7, "sha256": "t", "uri": "/x"}},
    }  # fmt: skip
    dataset = batch(manifest)
    assert (dataset.namespace, dataset.name) == ("file", "/data/d/r")
    assert dataset.facets["version"].datasetVersion == "abc"
    assert dataset.facets["cmms_batch"].splits == {"train": {"rows": 7, "sha256": "t"}}
    assert [f.name for f in dataset.facets["schema"].fields] == ["a", "b"]


def test_operator_lineage_puts_run_id_and_model_version_in_the_run_facet():
    from openlineage.client.serde import Serde

    from cmms_mlflow.integrations.lineage import mlflow_run, model_version, operator_lineage

    uri = "http://127.0.0.1:5000"
    lineage = operator_lineage(
        [mlflow_run(uri, "r1")], [model_version(uri, "pm", "3", "r1")],
        tracking_uri=uri, runId="r1", modelName="pm", modelVersion="3",
    )  # fmt: skip
    facet = Serde.to_dict(lineage.run_facets["cmms_mlflow"])
    assert (facet["runId"], facet["modelName"], facet["modelVersion"]) == ("r1", "pm", "3")
    assert facet["_schemaURL"] == "urn:cmms-mlflow-pipelines:openlineage:facet:CmmsMlflowRunFacet:1"
    (output,) = lineage.outputs
    assert (output.namespace, output.name) == ("mlflow://127.0.0.1:5000", "models/pm/3")
    assert output.facets["cmms_model_version"].modelUri == "models:/pm/3"


def test_metric_names_keep_the_model_in_one_statsd_segment():
    from cmms_mlflow.integrations.metrics import metric_name

    assert metric_name("pm_rf", "holdout_f1", "champion") == "cmms.pm_rf.holdout_f1.champion"
    assert metric_name("team.pm-rf", "drift", "max_psi") == "cmms.team_pm-rf.drift.max_psi"
