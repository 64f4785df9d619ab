"""Operator of a model's scoring DAG: batch scoring with the champion, checked against its contract."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from cmms_mlflow.exceptions import BadDataError, bad_data_fails_the_task, source_errors_fail_the_task
from cmms_mlflow.integrations.links import RUN_URL_KEY, MlflowModelVersionLink, MlflowRunLink
from cmms_mlflow.operators.base import MlflowBaseOperator, SpecOperatorMixin
from cmms_mlflow.registry import model_registry
from cmms_mlflow.tracking import training_run

if TYPE_CHECKING:
    from airflow.sdk import Context
    from mlflow import MlflowClient


class MlflowBatchScoreOperator(SpecOperatorMixin, MlflowBaseOperator):
    """Score the spec's scoring source with each affected model's champion (loaded by alias).

    Before predicting, every row is checked against the champion's data contract: rows with an
    unseen category, a missing or an out-of-range value are scored but flagged (``contract_ok``,
    ``contract_issues``) and counted in the summary; an input whose schema lost or retyped a
    feature column fails. The models are those named by the triggering champion Asset events
    (names checked, and each must belong to the spec), else ``model_name``; each champion is
    loaded by ``model_loading.load_version`` (skops, trusted types, provenance). Writes
    ``<data root>/<dag_id>/<run_id>/<model>/predictions.parquet`` and logs a summary run.
    """

    template_fields: Sequence[str] = (
        *MlflowBaseOperator.template_fields,
        "model_name",
        "n_units",
        "risk_threshold",
        "snapshot_at",
    )
    operator_extra_links = (MlflowRunLink(), MlflowModelVersionLink())

    def __init__(
        self,
        *,
        spec: Mapping[str, Any],
        model_name: str,
        risk_threshold: Any,
        n_units: Any = None,
        snapshot_at: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.spec = spec
        self.model_name = model_name
        self.n_units = n_units
        self.risk_threshold = risk_threshold
        self.snapshot_at = snapshot_at

    def models_to_score(self, context: Context, client: MlflowClient | None = None) -> list[str]:
        """Model names from the triggering Asset events, else ``model_name``.

        An event's name must be well formed and belong to this spec: the spec's registered model,
        or a model whose champion was trained by this spec (run tag ``model_spec``; checked with
        ``client``). Anyone who may write an Asset event could otherwise make this DAG load and
        score a model of their choice.
        """
        from cmms_pm.spec import MODEL_NAME_PATTERN

        names: list[str] = []
        for events in (context.get("triggering_asset_events") or {}).values():
            for event in events:
                name = (event.extra or {}).get("model_name")
                if not isinstance(name, str) or not re.fullmatch(MODEL_NAME_PATTERN, name):
                    self.log.warning("Ignoring an Asset event that names no valid model: %r", name)
                elif name in names:
                    continue
                elif not self._belongs_to_spec(name, client):
                    self.log.warning(
                        "Ignoring an Asset event for model %r: it is not %r and its champion was not "
                        "trained by spec %r",
                        name, self.model_spec.registered_model, self.model_spec.name,
                    )  # fmt: skip
                else:
                    names.append(name)
        return names or [self.model_name]

    def _belongs_to_spec(self, name: str, client: MlflowClient | None) -> bool:
        from cmms_mlflow.integrations.assets import SPEC_TAG
        from cmms_mlflow.registry import model_registry

        if name == self.model_spec.registered_model:
            return True
        if client is None:
            return False
        champion = model_registry.get_champion(client, name)
        if champion is None or not champion.run_id:
            return False
        return client.get_run(champion.run_id).data.tags.get(SPEC_TAG) == self.model_spec.name

    def load_options(self, name: str) -> dict[str, Any]:
        """``load_champion`` options for ``name``: the spec's own model may come from any spec of this
        package; another name must come from this spec."""
        spec = self.model_spec
        return {
            "spec_name": None if name == spec.registered_model else spec.name,
            "allow_unverified": bool(spec.loading["allow_unverified_models"]),
        }

    def read_input(self, scored_at: str) -> Any:
        """The rows to score: the synthetic fleet snapshot, or the spec's scoring file / SQL source;
        for a time-series spec, each asset's latest snapshot (``LatestSnapshots``)."""
        source = self.model_spec.scoring_source
        if source["kind"] == "timeseries":
            return self.latest_snapshots(scored_at)
        if source["kind"] == "synthetic":
            from cmms_pm.fleet import latest_telemetry

            return latest_telemetry(scored_at, n_units=int(self.n_units or source.get("n_units", 500)))
        from cmms_mlflow.integrations import source_access

        if source["kind"] == "sql":
            return source_access.read_sql_source(source, interval_start=scored_at, interval_end=scored_at)
        return source_access.read_file_source(
            source["path"], aws_conn_id=source.get("aws_conn_id", "aws_default")
        )

    def latest_snapshots(self, scored_at: str) -> Any:
        """Each asset's latest snapshot at ``scored_at``, built by the same engine and SQL as training."""
        from cmms_mlflow.integrations.source_access import open_timeseries
        from cmms_pm.timeseries.build import epoch
        from cmms_pm.timeseries.scoring import describe, latest_snapshots

        config = self.model_spec.timeseries
        assert config is not None, "called for a time-series spec only"
        when = epoch(self.snapshot_at or scored_at)
        with open_timeseries(config, as_of=when, read_from=when - config.lookback) as opened:
            engine, sources, local = opened
            latest = latest_snapshots(config, engine, sources, local=local, scored_at=when)
        self.log.info("Latest snapshots: %s", describe(latest, config))
        return latest

    def threshold_source(self, override: float | None, version: str, threshold: float) -> str:
        """Where the threshold of this scoring came from (logged and kept in the summary)."""
        if override is None:
            return f"decision_threshold of v{version}"
        if override == self.model_spec.scoring.get("risk_threshold"):
            self.log.warning(
                "Scoring at the spec's scoring.risk_threshold %.4f instead of each champion's own decision "
                "threshold; remove it from the spec to use the model's", threshold,
            )  # fmt: skip
            return "the spec's scoring.risk_threshold"
        return "run parameter risk_threshold"

    def execute_mlflow(self, client: MlflowClient, context: Context) -> list[dict[str, Any]]:
        from cmms_mlflow.hooks.client_context import pickle_loading_disabled
        from cmms_mlflow.operators.retention_ops import record_run
        from cmms_mlflow.tracking.champion_scoring import load_champion, log_summary
        from cmms_pm.batch import batch_uri, categories_as_text, data_root
        from cmms_pm.contract import check_and_flag
        from cmms_pm.data import write_frame
        from cmms_pm.fleet import add_snapshot_columns, flag_telemetry, score_frame, summarize
        from cmms_pm.retention import SCORING
        from cmms_pm.spec import FeatureSpec
        from cmms_pm.timeseries.config import TELEMETRY_AGE

        spec = self.model_spec
        dag_run = context["dag_run"]
        scored_at = dag_run.run_after.isoformat()
        override = threshold_override(self.risk_threshold)
        clock = _PhaseClock()
        with source_errors_fail_the_task():
            rows = self.read_input(scored_at)
        latest = None
        entity = ""  # a time-series spec's asset column
        if spec.timeseries is not None:
            latest, rows, entity = rows, rows.frame, spec.timeseries.entity
        clock.lap("read")
        id_columns = list(spec.id_columns)
        experiment_id = self.hook.get_or_create_experiment(client, spec.scoring_experiment)
        run_dir = batch_uri(data_root(), dag_run.dag_id, dag_run.run_id)
        record_run(context, run_dir, SCORING)
        tags = training_run.airflow_tags(context)
        results = []
        for name in self.models_to_score(context, client):
            with pickle_loading_disabled():
                model, champion = load_champion(client, name, **self.load_options(name))
            version = str(champion.version)
            threshold = override if override is not None else model_registry.decision_threshold(champion)
            contract = training_run.load_contract(client, champion.run_id) if champion.run_id else None
            clock.lap("load")
            frame, flags = rows, None
            if contract is not None:
                categorical = [
                    c.name for c in contract.columns if c.feature and c.declared_kind == "categorical"
                ]
                with bad_data_fails_the_task():
                    frame = categories_as_text(rows, FeatureSpec(categorical=tuple(categorical)))
                ignore = [spec.target, *id_columns, *([TELEMETRY_AGE] if latest is not None else [])]
                check, flags = check_and_flag(frame, contract, ignore=ignore)
                if check.removed or check.retyped:
                    raise BadDataError(
                        f"scoring input does not fit champion v{version} of {name!r}: "
                        + check.schema_change_message()
                    )
                clock.lap("contract")
            else:
                self.log.warning("%s v%s has no data contract: rows are scored unchecked", name, version)
            if latest is not None:
                flags = flag_telemetry(flags, frame, stale_after_hours=latest.stale_after_hours)
            if latest is not None and not len(frame):
                predictions = frame[id_columns]  # no asset has telemetry: every one is missing
            else:
                predictions = score_frame(
                    model, frame, id_columns=id_columns, flags=flags, model_name=name, model_version=version,
                    scored_at=scored_at, threshold=threshold, explain=spec.explain,
                )  # fmt: skip
            if latest is not None:
                predictions = add_snapshot_columns(
                    predictions, frame, missing=latest.missing, entity=entity,
                    snapshot_time=latest.snapshot_time, model_name=name, model_version=version,
                    scored_at=scored_at,
                )  # fmt: skip
            clock.lap("predict")
            out = write_frame(predictions, f"{run_dir}/{name}/predictions.parquet")
            clock.lap("write")
            summary = summarize(predictions, threshold=threshold, id_columns=id_columns, flags=flags)
            summary["threshold_source"] = self.threshold_source(override, version, threshold)
            run_id = log_summary(
                client,
                experiment_id=experiment_id,
                summary=summary,
                predictions_uri=out,
                tags=tags,
                earlier_runs=[
                    r for r in training_run.find_task_runs(client, experiment_id, tags)
                    if r.data.tags.get("model_name") == name
                ],
            )  # fmt: skip
            context["ti"].xcom_push(key=RUN_URL_KEY, value=self.hook.run_url(experiment_id, run_id))
            self.push_model_version_link(context, name, version)
            clock.lap("log")
            self.log.info(
                "%s v%s scored %d rows: %d at risk (threshold %.4f, %s), %d flagged by the contract -> %s "
                "(seconds: %s)",
                name, version, summary["units"], summary["at_risk"], threshold, summary["threshold_source"],
                summary["flagged"], out, clock.seconds,
            )  # fmt: skip
            scored = {**summary, "predictions_uri": out, "mlflow_run_id": run_id, "seconds": clock.take()}
            results.append(scored)
            from cmms_mlflow.integrations import metrics

            metrics.scoring(
                name, scored=summary["units"], at_risk=summary["at_risk"], flagged=summary["flagged"]
            )
        return results

    def openlineage(self, result: list[dict[str, Any]] | None) -> Any:
        """Reads the scoring source and each champion; writes predictions and a summary run each."""
        if not result:
            return None
        from cmms_mlflow.integrations import lineage

        source = dict(self.model_spec.scoring_source)
        if source["kind"] == "timeseries":
            inputs = lineage.timeseries_sources(self.model_spec.timeseries)
        else:
            kind = {"synthetic": "synthetic", "sql": "sql"}.get(source["kind"]) or source["path"]
            inputs = [lineage.source(kind, f"{self.model_spec.name}/fleet", source)]
        uri = self.tracking_uri
        outputs = []
        for scored in result:
            inputs.append(lineage.model_version(uri, scored["model_name"], scored["model_version"]))
            outputs.append(lineage.file(scored["predictions_uri"]))
            outputs.append(lineage.mlflow_run(uri, scored["mlflow_run_id"]))
        first = result[0]
        return lineage.operator_lineage(
            inputs, outputs, tracking_uri=uri, runId=first["mlflow_run_id"], modelName=first["model_name"],
            modelVersion=first["model_version"],
        )  # fmt: skip


def threshold_override(value: Any) -> float | None:
    """The run's ``risk_threshold`` param as a number in [0, 1], or None (the champion's own).

    The template renders an unset param as ``"None"`` (or ``""``); anything else must be a number
    in [0, 1], which the param's schema already checked for a triggered run.
    """
    if value is None or (isinstance(value, str) and value.strip() in ("", "None", "null")):
        return None
    try:
        threshold = float(value)
    except (TypeError, ValueError):
        raise BadDataError(
            f"risk_threshold {value!r} is not a number (or empty for the model's own)"
        ) from None
    if not 0.0 <= threshold <= 1.0:
        raise BadDataError(f"risk_threshold {value!r} is not between 0 and 1")
    return threshold


class _PhaseClock:
    """Seconds per phase of the scoring of one model (read is shared by all models, so counted once)."""

    def __init__(self) -> None:
        self.mark = time.perf_counter()
        self.seconds: dict[str, float] = {}

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        self.seconds[phase] = round(self.seconds.get(phase, 0.0) + now - self.mark, 3)
        self.mark = now

    def take(self) -> dict[str, float]:
        """This model's phases (a small dict for the task's XCom); the next model starts at zero."""
        taken, self.seconds = self.seconds, {}
        return taken
