"""The "Models" page of the Airflow UI: an external view served by the api-server under ``/cmms-ui``.

Airflow shows it in an iframe (nav entry *Models*). The page is static HTML + one script + one
stylesheet; the script reads everything through the model API (``/api/v1/ml``: ``GET /models``,
``GET /models/{name}/versions/{v}``, the plots), promotes through it (``POST .../promote``) and
answers approvals through Airflow's own human-in-the-loop endpoint (``PATCH /api/v2/.../hitlDetails``),
with the user's Airflow session cookie, so the page shows what the API says and can do only what
Airflow allows that user. Every route here needs an authenticated Airflow user who may read at
least one model's DAG (Airflow does not authenticate plugin apps), and every answer carries a
strict Content-Security-Policy: no inline script or style, nothing from another origin.
"""

from __future__ import annotations

from pathlib import Path as FilePath
from typing import Annotated, Literal

from fastapi import Depends, FastAPI, Path
from fastapi.responses import FileResponse

from cmms_mlflow.www.airflow_internal import requires_authenticated
from cmms_mlflow.www.authorization import requires_access_some_model_dag
from cmms_mlflow.www.datamodels import ModelName, Version

URL_PREFIX = "/cmms-ui"
PAGE = "models/"
STATIC = FilePath(__file__).with_name("static")
ASSETS = {"models.js": "text/javascript", "models.css": "text/css"}
Asset = Annotated[Literal["models.js", "models.css"], Path(description="A file of the page")]

#: The page loads its own script, style and images (plots come from the model API on this
#: origin), calls the API on this origin, and may be framed only by Airflow's UI (same origin).
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
        "frame-ancestors 'self'; base-uri 'none'; form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-cache",
}

app = FastAPI(
    title="CMMS Models page",
    dependencies=[Depends(requires_authenticated()), Depends(requires_access_some_model_dag("GET"))],
    docs_url=None,
    redoc_url=None,
    openapi_url=None,
)


def _page() -> FileResponse:
    return FileResponse(STATIC / "models.html", media_type="text/html", headers=HEADERS)


@app.get("/models/", response_class=FileResponse)
def models_page() -> FileResponse:
    """The list: one row per model spec."""
    return _page()


@app.get("/models/{name}/versions/{version}", response_class=FileResponse)
def version_page(name: ModelName, version: Version) -> FileResponse:
    """One version: its decision record and plots (the script reads them from the API)."""
    return _page()


@app.get("/static/{asset}", response_class=FileResponse)
def static_asset(asset: Asset) -> FileResponse:
    """The page's script and stylesheet (a fixed list: no path from the request reaches the disk)."""
    return FileResponse(STATIC / asset, media_type=ASSETS[asset], headers=HEADERS)
