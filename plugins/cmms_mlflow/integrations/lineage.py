"""OpenLineage: what each task read and wrote, as datasets with URIs, tied together by facets.

The provider's listener (``apache-airflow-providers-openlineage``) calls the operators'
``get_openlineage_facets_on_start``/``_on_complete`` (``operators.base.LineageMixin``), which
build their answer here. One training run and the scoring it triggers give this graph::

    source ─extract_data→ batch ─train_model→ MLflow run ─register_model→ model version
    model version ─stage/validate/promote_model→ model version ─score_fleet→ predictions (+ scoring run)

Dataset names follow OpenLineage's naming: a local file is ``file`` + its path, S3 is
``s3://<bucket>`` + the key; MLflow objects live in the namespace of their tracking server
(``mlflow://host:port``, or ``mlflow+sqlite:///path`` for an embedded store) as ``runs/<run id>``
and ``models/<name>/<version>`` (MLflow's own ``runs:/`` and ``models:/`` URIs). Facets carry
the data digest (``cmms_batch``, and ``version`` = the digest), the MLflow run id and the model
version (run facet ``cmms_mlflow``). Imported only when the listener asks: openlineage is not a
parse-time import.
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TypedDict, Unpack
from urllib.parse import urlparse

import attr
from airflow.providers.openlineage.extractors import OperatorLineage
from openlineage.client.event_v2 import Dataset, InputDataset, OutputDataset
from openlineage.client.facet_v2 import (
    DatasetFacet,
    RunFacet,
    dataset_version_dataset,
    schema_dataset,
)

from cmms_mlflow.hooks.mlflow_hook import redact_uri

if TYPE_CHECKING:
    from cmms_pm.batch import Manifest

#: Our facets name their schema by URN (no schema is published; docs/lineage.md lists the fields).
SCHEMA_BASE = "urn:cmms-mlflow-pipelines:openlineage:facet"
SYNTHETIC_NAMESPACE = "cmms-synthetic"


class _CmmsSchema:
    """Our facets' ``_schemaURL``: ``<SCHEMA_BASE>:<class name>:1``."""

    @classmethod
    def _get_schema(cls) -> str:
        return f"{SCHEMA_BASE}:{cls.__name__}:1"


@attr.define
class CmmsMlflowRunFacet(_CmmsSchema, RunFacet):
    """What a task did in MLflow: the tracking server, the run, the model version, the data digest."""

    trackingUri: str | None = None  # noqa: N815 (OpenLineage facets are camelCase)
    runId: str | None = None  # noqa: N815
    modelName: str | None = None  # noqa: N815
    modelVersion: str | None = None  # noqa: N815
    dataDigest: str | None = None  # noqa: N815
    decision: str | None = None


class RunFields(TypedDict, total=False):
    """The ``cmms_mlflow`` run facet's fields an operator fills (``operator_lineage(**run)``)."""

    runId: str | None  # noqa: N815
    modelName: str | None  # noqa: N815
    modelVersion: str | None  # noqa: N815
    dataDigest: str | None  # noqa: N815
    decision: str | None


@attr.define
class CmmsBatchDatasetFacet(_CmmsSchema, DatasetFacet):
    """A data batch: its SHA-256 digest, rows, data interval and splits."""

    digest: str
    rows: int
    dataVersion: str | None = None  # noqa: N815
    splits: dict[str, Any] = attr.field(factory=dict)


@attr.define
class CmmsModelVersionDatasetFacet(_CmmsSchema, DatasetFacet):
    """A registered model version: its ``models:/`` URI and the MLflow run it came from."""

    name: str
    version: str
    modelUri: str  # noqa: N815
    runId: str | None = None  # noqa: N815


def location(uri: str) -> tuple[str, str]:
    """(namespace, name) of a file or S3 object: ``("file", "/abs/path")``, ``("s3://bucket", "key")``."""
    parsed = urlparse(uri)
    if parsed.scheme in ("s3", "s3a", "gs", "abfss"):
        return f"{parsed.scheme}://{parsed.netloc}", parsed.path.lstrip("/")
    if parsed.scheme == "file":
        return "file", posixpath.normpath(parsed.path)
    return "file", posixpath.normpath(uri)


def mlflow_namespace(tracking_uri: str) -> str:
    """``mlflow://host:port`` for a server, ``mlflow+sqlite:///path`` for an embedded store."""
    uri = redact_uri(tracking_uri)
    parsed = urlparse(uri)
    if parsed.scheme in ("http", "https"):
        return f"mlflow://{parsed.netloc}{parsed.path.rstrip('/')}"
    return f"mlflow+{uri}"


def source(data_source: str, spec_name: str, spec_source: dict[str, Any]) -> Dataset:
    """The data a batch came from: the synthetic generator, a file, or a SQL table/query."""
    if data_source == "synthetic":
        return Dataset(namespace=SYNTHETIC_NAMESPACE, name=spec_name)
    if data_source == "sql":
        name = spec_source.get("table") or "query"
        return Dataset(namespace=f"airflow-connection://{spec_source.get('conn_id', '')}", name=name)
    from cmms_pm.sources import resolve_file_source

    namespace, name = location(resolve_file_source(data_source).uri)
    return Dataset(namespace=namespace, name=name)


def timeseries_sources(config: Any) -> list[Dataset]:
    """The tables of a time-series spec (``TimeSeriesConfig``): files/folders or SQL tables."""
    from cmms_pm.sources import resolve_dataset_source

    found = []
    for table in config.tables():
        source = table.source
        if source["kind"] == "sql":
            namespace, name = f"airflow-connection://{source.get('conn_id', '')}", source["table"]
        else:
            namespace, name = location(resolve_dataset_source(source["path"]).uri)
        found.append(Dataset(namespace=namespace, name=name))
    return found


def batch(manifest: Manifest) -> Dataset:
    """The Parquet batch folder of a run, versioned by its digest."""
    namespace, name = location(manifest["uri"])
    columns = manifest.get("columns") or []
    return Dataset(
        namespace=namespace,
        name=name,
        facets={
            "version": dataset_version_dataset.DatasetVersionDatasetFacet(datasetVersion=manifest["digest"]),
            "schema": schema_dataset.SchemaDatasetFacet(
                fields=[schema_dataset.SchemaDatasetFacetFields(name=str(c)) for c in columns]
            ),
            "cmms_batch": CmmsBatchDatasetFacet(
                digest=manifest["digest"],
                rows=int(manifest.get("rows") or 0),
                dataVersion=manifest.get("data_version"),
                splits={
                    k: {"rows": v.get("rows"), "sha256": v.get("sha256")}
                    for k, v in (manifest.get("splits") or {}).items()
                },
            ),
        },
    )


def batch_of_split(split_uri: str) -> Dataset:
    """The batch a split file (``<batch>/holdout.parquet``) belongs to."""
    namespace, name = location(split_uri)
    return Dataset(namespace=namespace, name=posixpath.dirname(name))


def mlflow_run(tracking_uri: str, run_id: str) -> Dataset:
    return Dataset(
        namespace=mlflow_namespace(tracking_uri),
        name=f"runs/{run_id}",
        facets={"version": dataset_version_dataset.DatasetVersionDatasetFacet(datasetVersion=run_id)},
    )


def model_version(tracking_uri: str, name: str, version: str, run_id: str | None = None) -> Dataset:
    version = str(version)
    return Dataset(
        namespace=mlflow_namespace(tracking_uri),
        name=f"models/{name}/{version}",
        facets={
            "version": dataset_version_dataset.DatasetVersionDatasetFacet(datasetVersion=version),
            "cmms_model_version": CmmsModelVersionDatasetFacet(
                name=name, version=version, modelUri=f"models:/{name}/{version}", runId=run_id
            ),
        },
    )


def file(uri: str) -> Dataset:
    namespace, name = location(uri)
    return Dataset(namespace=namespace, name=name)


def operator_lineage(
    inputs: Sequence[Dataset] = (),
    outputs: Sequence[Dataset] = (),
    *,
    tracking_uri: str | None = None,
    **run: Unpack[RunFields],
) -> OperatorLineage:
    """The provider's ``OperatorLineage``; ``run`` fills the ``cmms_mlflow`` run facet."""
    facets: dict[str, Any] = {}
    if tracking_uri or any(run.values()):
        uri = redact_uri(tracking_uri) if tracking_uri else None
        facets["cmms_mlflow"] = CmmsMlflowRunFacet(trackingUri=uri, **run)
    return OperatorLineage(
        inputs=[InputDataset(namespace=d.namespace, name=d.name, facets=d.facets) for d in inputs],
        outputs=[OutputDataset(namespace=d.namespace, name=d.name, facets=d.facets) for d in outputs],
        run_facets=facets,
    )
