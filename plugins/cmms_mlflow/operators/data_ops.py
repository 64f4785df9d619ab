"""Operators of the training DAG's data steps: extract a batch, then check it before anything trains.

``extract_data`` reads the spec's source (synthetic, a file under an allowed folder, S3 through an
Airflow AWS connection, or SQL through an Airflow SQL connection) for the run's data interval and
writes the batch. ``validate_data`` checks it against the spec and against the data contract of
the current champion: a changed schema fails (unless the run accepts it), unseen categories and
out-of-range shares are reported, and drift is measured for the promotion gate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from cmms_mlflow.exceptions import BadDataError, bad_data_fails_the_task, source_errors_fail_the_task
from cmms_mlflow.operators.base import LineageMixin, MlflowBaseOperator, SpecOperatorMixin, data_interval

if TYPE_CHECKING:
    from airflow.sdk import Context
    from mlflow import MlflowClient

    from cmms_mlflow.records import DataReport
    from cmms_pm.batch import Manifest


class ExtractBatchOperator(SpecOperatorMixin, LineageMixin, BaseOperator):
    """Read the run's source, label and split it, write it as Parquet under the data root.

    Returns the batch manifest (URIs, row counts, digests, resolved features): small, through XCom.
    """

    template_fields: Sequence[str] = ()
    ui_color = "#e8f4ea"

    def __init__(self, *, spec: Mapping[str, Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.spec = spec

    def execute(self, context: Context) -> Manifest:
        from cmms_mlflow.operators.retention_ops import record_run
        from cmms_pm.batch import batch_uri, data_root, prepare_batch
        from cmms_pm.retention import BATCH

        spec = self.model_spec
        config = self.run_config(context)
        start, end = data_interval(context)
        out_uri = batch_uri(data_root(), context["dag"].dag_id, context["run_id"])
        record_run(context, out_uri, BATCH)
        if spec.timeseries is not None:
            manifest = self.extract_timeseries(start, end, out_uri)
            self.lineage_result = manifest
            return manifest
        with source_errors_fail_the_task():
            frame = self.read_source(config.data_source, start, end)
            manifest = prepare_batch(
                spec=spec,
                frame=frame,
                source=config.data_source,
                n_samples=config.n_samples,
                target_column=config.target,
                interval_start=start,
                interval_end=end,
                out_uri=out_uri,
            )
        self.log.info(
            "Batch of %d rows (positive rate %.4f) from %s: %s",
            manifest["rows"], manifest["positive_rate"], config.data_source, manifest["uri"],
        )  # fmt: skip
        self.lineage_result = manifest
        return manifest

    def extract_timeseries(self, start: str, end: str, out_uri: str) -> Manifest:
        """A time-series spec's batch: its tables read as of the interval's end, snapshots x features x
        labels built by the engine (DuckDB over files, or the telemetry's database), split in time."""
        from cmms_mlflow.integrations.source_access import open_timeseries
        from cmms_pm.timeseries.build import epoch
        from cmms_pm.timeseries.snapshot_batch import prepare_timeseries_batch, read_from

        spec = self.model_spec
        config = spec.timeseries
        assert config is not None, "called for a time-series spec only"
        as_of = epoch(end)
        with source_errors_fail_the_task():
            with open_timeseries(config, as_of=as_of, read_from=read_from(config, as_of=as_of)) as opened:
                engine, sources, local = opened
                manifest = prepare_timeseries_batch(
                    spec=spec, engine=engine, sources=sources, local=local, source="timeseries",
                    interval_start=start, interval_end=end, out_uri=out_uri,
                )  # fmt: skip
        split = manifest["split"]
        self.log.info(
            "Time-series batch of %d snapshots (positive rate %.4f): train before %s, validation %s .. %s, "
            "holdout from %s (gaps of %g h, label horizon %g h): %s",
            manifest["rows"], manifest["positive_rate"], split["train_end"], split["validation_start"],
            split["validation_end"], split["holdout_start"], split["gap_hours"], split["label_horizon_hours"],
            manifest["uri"],
        )  # fmt: skip
        for note in manifest.get("notes") or []:
            self.log.warning("%s", note)
        return manifest

    def openlineage(self, result: Manifest | None) -> Any:
        """Reads the source, writes the batch (known once written)."""
        if result is None:
            return None
        from cmms_mlflow.integrations import lineage

        spec = self.model_spec
        if spec.timeseries is not None:
            tables = lineage.timeseries_sources(spec.timeseries)
            return lineage.operator_lineage(tables, [lineage.batch(result)], dataDigest=result["digest"])
        return lineage.operator_lineage(
            [lineage.source(result["source"], f"{spec.name}/telemetry", dict(spec.source))],
            [lineage.batch(result)],
            dataDigest=result["digest"],
        )

    def read_source(self, data_source: str, start: str, end: str) -> Any:
        """The source's frame for the interval, or None for synthetic data (generated by the batch)."""
        from cmms_pm.params import SQL, SYNTHETIC

        spec = self.model_spec
        if data_source == SYNTHETIC:
            return None
        if data_source == SQL:
            from cmms_mlflow.integrations.source_access import read_sql_source

            if spec.source["kind"] != "sql":
                raise BadDataError(f"data_source 'sql': spec {spec.name!r} has no SQL source")
            return read_sql_source(spec.source, interval_start=start, interval_end=end)
        from cmms_mlflow.integrations.source_access import read_file_source

        return read_file_source(
            data_source,
            aws_conn_id=spec.source.get("aws_conn_id", "aws_default"),
            declared=spec.source["path"] if spec.source["kind"] == "file" else None,
        )


class MlflowValidateDataOperator(SpecOperatorMixin, MlflowBaseOperator):
    """Check the batch against the spec, then against the champion's data contract (schema, unseen
    categories, ranges) and measure its drift from the champion's training data.

    :param manifest: the manifest of ``extract_data``.
    """

    template_fields: Sequence[str] = (*MlflowBaseOperator.template_fields, "manifest")
    ui_color = "#e8f4ea"
    manifest: Manifest  # extract_data's result (an XComArg when the DAG is parsed)

    def __init__(self, *, spec: Mapping[str, Any], manifest: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.spec = spec
        self.manifest = manifest

    def execute_mlflow(self, client: MlflowClient, context: Context) -> DataReport:
        from cmms_mlflow.registry import model_registry
        from cmms_mlflow.tracking.training_run import load_contract
        from cmms_pm.batch import read_batch, validate_batch
        from cmms_pm.contract import check_batch
        from cmms_pm.drift import drift_report

        spec = self.model_spec
        config = self.run_config(context)
        with bad_data_fails_the_task():
            checked = validate_batch(self.manifest, spec)
        report: DataReport = {
            **checked,
            "champion_version": None,
            "contract_check": None,
            "drift": None,
            "drift_status": "none",
            "drift_reason": "no champion to compare with",
            "notes": list(config.notes),
        }
        self._record_leakage(report)
        # A model not registered yet has no champion (and under basic-auth its alias lookup is a 403).
        exists = model_registry.model_exists(client, config.model_name)
        champion = model_registry.get_champion(client, config.model_name) if exists else None
        contract = (
            load_contract(client, champion.run_id) if champion is not None and champion.run_id else None
        )
        if champion is None or contract is None:
            self.log.info(
                "No champion data contract for %s: nothing to compare the batch with", config.model_name
            )
            return report
        report["champion_version"] = str(champion.version)
        frame = read_batch(self.manifest)
        check = check_batch(frame, contract, ignore=[spec.target, *spec.id_columns])
        report["contract_check"] = check.to_dict()
        self.log.info("Batch against the contract of champion v%s: %s", champion.version, check.summary())
        if check.schema_changed:
            message = f"schema changed since champion v{champion.version}'s training data: " + (
                check.schema_change_message()
            )
            if not config.accept_schema_change:
                raise BadDataError(
                    f"{message}. Trigger with accept_schema_change=true to train on it anyway."
                )
            report["notes"].append(f"{message} (accepted by accept_schema_change=true)")
            self.log.warning("%s (accepted by accept_schema_change=true)", message)
        drift = drift_report(
            frame, contract, psi_threshold=spec.drift["psi_threshold"], action=spec.drift["action"]
        )
        report.update(
            {"drift": drift.to_dict(), "drift_status": drift.status, "drift_reason": drift.reason()}
        )
        log = self.log.warning if drift.status != "ok" else self.log.info
        log("Drift against champion v%s: %s", champion.version, drift.reason())
        from cmms_mlflow.integrations import metrics

        metrics.drift(config.model_name, drift.max_psi, len(drift.drifted))
        return report

    def _record_leakage(self, report: DataReport) -> None:
        """The leakage guard's warnings (accepted leaks, inferred features left out) as report notes."""
        for note in (report.get("leakage") or {}).get("notes", []):
            self.log.warning("%s", note)
            report["notes"].append(note)

    def openlineage(self, result: DataReport | None) -> Any:
        """Reads the batch (and the champion's contract, with the champion's version)."""
        from cmms_mlflow.integrations import lineage

        return lineage.operator_lineage([lineage.batch(self.manifest)], dataDigest=self.manifest["digest"])
