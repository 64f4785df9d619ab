"""The Airflow UI in a real browser, as a person uses it: Chromium from the distribution's packages
(``/usr/bin/chromium``, installed by ``make test`` from scripts/test_services.txt), driven by
Playwright, against the real cluster (``airflow_cluster``: api-server, scheduler, dag-processor).

One journey per user: the operator logs in, is refused an invalid value in the trigger form,
starts a training run with valid ones, follows the task page's MLflow links, sees the new champion
on the Models page, reads its decision record and plots, promotes and rolls back from the page;
the viewer sees the same page without any action and gets 403 when calling one anyway.

A failing step leaves a screenshot in ``test-artifacts/ui/`` (git-ignored); its path is printed.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import pytest

from cmms_mlflow import registry

pytestmark = pytest.mark.slow

PROJECT_DIR = Path(__file__).resolve().parents[2]
ARTIFACTS = PROJECT_DIR / "test-artifacts" / "ui"
CHROMIUM = os.environ.get("CMMS_CHROMIUM", "/usr/bin/chromium")
#: The flags that work on this machine (no sandbox as root, no background network calls).
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
TRAINING = "predictive_maintenance_training"
MODEL = "predictive_maintenance_rf"  # the shipped spec's registered model: its row on the Models page
PROMOTE = "/api/v1/ml/models/{name}/versions/{version}/promote"


@pytest.fixture(scope="module")
def browser():
    """Chromium from the distribution (never ``playwright install``); each user gets a fresh
    context (Playwright starts the browser with an empty profile of its own)."""
    from playwright.sync_api import sync_playwright

    assert shutil.which(CHROMIUM) or Path(CHROMIUM).exists(), (
        f"{CHROMIUM} missing: scripts/install_test_services.sh installs it (make test runs it)"
    )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@contextmanager
def step(page, name: str) -> Iterator[None]:
    """A named step of the journey: on failure, a screenshot of the page at that moment."""
    try:
        yield
    except BaseException:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shot = ARTIFACTS / f"{re.sub(r'[^a-z0-9]+', '-', name.lower())}.png"
        try:
            page.screenshot(path=str(shot), full_page=True)
            print(f"\nstep {name!r} failed; screenshot: {shot}")
        except Exception as err:  # the browser itself may be gone
            print(f"\nstep {name!r} failed; no screenshot ({err})")
        raise


def _snapshot(page, name: str) -> None:
    """Keep a picture of a page the journey reached (for people reading the CI artifacts)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def _log_in(browser, cluster, user: str):
    import json

    page = browser.new_context(viewport={"width": 1500, "height": 1000}).new_page()
    passwords = json.loads((cluster.home / "simple_auth_manager_passwords.json.generated").read_text())
    with step(page, f"{user} logs in"):
        page.goto(cluster.base_url + "/")
        page.wait_for_url(re.compile(r"/auth/login"))
        page.locator("input:not([type=password])").first.fill(user)
        page.locator("input[type=password]").fill(passwords[user])
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(lambda url: "/auth/login" not in url, timeout=30_000)
    return page


def _open_section(dialog, name: str) -> None:
    """Open one section of the trigger form (opening one closes the others)."""
    field = dialog.get_by_role("button", name=name, exact=True)
    if field.get_attribute("aria-expanded") != "true":
        field.click()


def _set(dialog, section: str, param: str, value: str) -> None:
    _open_section(dialog, section)
    box = dialog.locator(f"input[name=element_{param}]")
    box.fill(value)
    box.press("Tab")


def _models_frame(page):
    """Open the Models page from Airflow's navigation (Browse ▸ Models); return its frame."""
    page.get_by_role("button", name="Browse").click()
    page.get_by_role("menuitem", name="Models").click()
    page.wait_for_url(re.compile(r"/plugin/models"))
    frame = page.frame_locator("iframe[title=Models]")
    frame.locator("table#models").wait_for(timeout=30_000)
    return frame


def _runs(cluster) -> set[str]:
    return {r["dag_run_id"] for r in cluster.dag_runs(TRAINING)}


def test_a_person_trains_reads_and_promotes_from_the_airflow_ui(airflow_cluster, browser):
    from mlflow import MlflowClient

    cluster = airflow_cluster
    client = MlflowClient(tracking_uri=cluster.mlflow_uri, registry_uri=cluster.mlflow_uri)
    page = _log_in(browser, cluster, "operator")

    with step(page, "trigger form refuses invalid values"):
        page.goto(f"{cluster.base_url}/dags/{TRAINING}")
        page.get_by_role("button", name="Trigger").first.click()
        dialog = page.get_by_role("dialog")
        before = _runs(cluster)
        # A number below its minimum cannot stay in the form: it goes back to the minimum.
        _set(dialog, "Hyperparameters", "n_estimators", "0")
        assert dialog.locator("input[name=element_n_estimators]").input_value() == "1"
        # A value against its schema is refused with the parameter and the rule, and starts nothing.
        _set(dialog, "Data", "data_source", "telemetry.xlsx")
        dialog.get_by_role("button", name="Trigger").click()
        error = dialog.get_by_text(re.compile(r"Invalid input for param data_source"))
        error.wait_for(timeout=15_000)
        assert _runs(cluster) == before

    run_id = f"ui_{uuid.uuid4().hex[:10]}"
    with step(page, "trigger form starts a run with valid values"):
        _set(dialog, "Data", "data_source", "synthetic")
        _set(dialog, "Data", "n_samples", "2500")
        _set(dialog, "Hyperparameters", "n_estimators", "20")
        _set(dialog, "Promotion", "f1_threshold", "0.3")
        _open_section(dialog, "Advanced Options")
        dialog.get_by_label("Run ID").fill(run_id)
        dialog.get_by_role("button", name="Trigger").click()
        dialog.wait_for(state="hidden", timeout=15_000)
        assert _runs(cluster) - before == {run_id}
        conf = cluster.request("GET", f"/api/v2/dags/{TRAINING}/dagRuns/{run_id}")[1]["conf"]
        assert (conf["n_estimators"], conf["n_samples"], conf["data_source"]) == (20, 2500, "synthetic")

    (finished,) = cluster.wait_for_runs({run_id}, 1, timeout=600)
    assert finished["state"] == "success", cluster.task_instances(run_id)
    champion = registry.get_champion(client, MODEL)
    version = str(champion.version)
    assert champion.tags["airflow.run_id"] == run_id
    experiment_id = client.get_run(champion.run_id).info.experiment_id

    with step(page, "task pages link to the right MLflow pages"):
        expected = {
            "train_model": ("MLflow run", f"/#/experiments/{experiment_id}/runs/{champion.run_id}"),
            "register_model": ("MLflow model version", f"/#/models/{MODEL}/versions/{version}"),
        }
        for task, (name, path) in expected.items():
            page.goto(f"{cluster.base_url}/dags/{TRAINING}/runs/{quote(run_id, safe='')}/tasks/{task}")
            page.get_by_role("link", name="Details", exact=True).click()
            link = page.get_by_role("link", name=name, exact=True)
            assert link.get_attribute("href") == f"http://127.0.0.1:5000{path}", task
        _snapshot(page, "task-details-register-model")

    with step(page, "the Models page shows the new champion"):
        page.goto(cluster.base_url + "/")
        frame = _models_frame(page)
        row = frame.locator(f"tr[data-model='{MODEL}']")
        champion_cell = row.locator("td[data-col=champion]")
        assert champion_cell.get_by_role("link", name=f"v{version}", exact=True).is_visible()
        assert "Production" in champion_cell.inner_text()
        decisions = row.locator("td[data-col=decisions]").inner_text()
        assert f"v{version}" in decisions and "promoted" in decisions
        assert "approvals not available yet" in row.locator("td[data-col=approvals]").inner_text()
        _snapshot(page, "models-page-operator")

    with step(page, "the version page shows the decision record and the plots"):
        champion_cell.get_by_role("link", name=f"v{version}", exact=True).click()
        record = frame.locator("#decision-record")
        record.wait_for(timeout=30_000)
        assert "promote" in record.inner_text() and "f1" in record.inner_text()
        images = frame.locator(".plots img")
        assert images.count() >= 4
        for i in range(images.count()):  # decode() rejects for an image that did not load
            assert images.nth(i).evaluate("async img => { await img.decode(); return img.naturalWidth; }") > 0
        assert re.search(rf"/plugin/models/cmms-ui/models/{MODEL}/versions/{version}$", page.url)
        _snapshot(page, "version-page-operator")

    # A second version (same artifacts), so the page has a candidate to promote and, after that,
    # a previous champion to roll back to.
    source = client.get_model_version_download_uri(MODEL, version)
    extra = client.create_run(experiment_id)
    candidate = str(
        registry.register_version(
            client, name=MODEL, source=source, run_id=extra.info.run_id, description="browser test",
            tags={"model_spec": "predictive_maintenance"},
        ).version
    )  # fmt: skip

    with step(page, "the operator promotes and rolls back from the page"):
        frame.get_by_role("link", name="Models", exact=True).click()  # back to the list
        frame.locator("table#models").wait_for(timeout=30_000)
        row = frame.locator(f"tr[data-model='{MODEL}']")
        promote = row.locator("form:has(button[data-action=promote])")
        promote.get_by_role("textbox").fill("shadow test passed")
        promote.get_by_role("button", name=f"Promote v{candidate}").click()
        row.locator("td[data-col=champion]").get_by_role("link", name=f"v{candidate}").wait_for()
        assert registry.champion_version(client, MODEL) == candidate
        assert client.get_model_version(MODEL, candidate).tags["promoted_by"] == "operator via /api/v1/ml"
        rollback = row.locator("form:has(button[data-action=rollback])")
        rollback.get_by_role("textbox").fill("candidate misbehaves")
        rollback.get_by_role("button", name=f"Roll back to v{version}").click()
        row.locator("td[data-col=champion]").get_by_role("link", name=f"v{version}", exact=True).wait_for()
        assert registry.champion_version(client, MODEL) == version
        registry.check_invariants(client, MODEL)

    with step(page, "the page's Airflow run link opens the run in Airflow"):
        row.locator("td[data-col=champion]").get_by_role("link", name="Airflow run").click()
        page.wait_for_url(re.compile(rf"/dags/{TRAINING}/runs/{re.escape(quote(run_id, safe=''))}"))

    with step(page, "the navigation links to the MLflow UI"):
        page.get_by_role("button", name="Browse").click()
        assert page.get_by_role("menuitem", name="MLflow").get_attribute("href") == "http://127.0.0.1:5000"
    page.context.close()

    viewer = _log_in(browser, cluster, "viewer")
    with step(viewer, "a viewer sees the page without actions and gets 403 calling one"):
        frame = _models_frame(viewer)
        row = frame.locator(f"tr[data-model='{MODEL}']")
        assert row.locator("td[data-col=champion]").get_by_role("link", name=f"v{version}").is_visible()
        assert frame.locator("button").count() == 0
        assert row.locator("td[data-col=actions]").inner_text().strip() == "—"
        _snapshot(viewer, "models-page-viewer")
        path = PROMOTE.format(name=MODEL, version=candidate)
        answer = frame.locator("body").evaluate(
            """async (_body, path) => {
                const r = await fetch(path, {method: "POST", credentials: "same-origin",
                  headers: {"Content-Type": "application/json"},
                  body: JSON.stringify({stage: "Production", reason: "viewer tries"})});
                return [r.status, await r.text()];
            }""",
            path,
        )
        assert answer[0] == 403, answer
        assert registry.champion_version(client, MODEL) == version
        frame.locator(f"tr[data-model='{MODEL}'] td[data-col=champion] a").first.click()
        frame.locator("#decision-record").wait_for(timeout=30_000)
        assert frame.locator("button").count() == 0
    viewer.context.close()
