"""The Airflow UI in a real browser, as a person uses it: Chromium from the distribution's packages
(``/usr/bin/chromium``, installed by ``make test`` from scripts/test_services.txt), driven by
Playwright, against the real cluster (``airflow_cluster``: api-server, scheduler, dag-processor).

One journey per user: the operator logs in, is refused an invalid value in the trigger form,
starts a training run with valid ones, follows the task page's MLflow links, sees the new champion
on the Models page, reads its decision record and plots, promotes and rolls back from the page;
the viewer sees the same page without any action and gets 403 when calling one anyway. Then an
approval: a ``pm_notify_training`` run waits for a person; the viewer sees the request without a
button (and Airflow answers 403 if they answer anyway); the spec's approver approves it from the
Models page with a comment, and the page shows the new champion and the approval in its history.

A failing step leaves a screenshot in ``test-artifacts/ui/`` (git-ignored); its path is printed.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import chromium
import pytest
from support import wait_until_parked

from cmms_mlflow.registry import history, model_registry

pytestmark = pytest.mark.slow

PROJECT_DIR = Path(__file__).resolve().parents[2]
ARTIFACTS = PROJECT_DIR / "test-artifacts" / "ui"
TRAINING = "predictive_maintenance_training"
MODEL = "predictive_maintenance_rf"  # the shipped spec's registered model: its row on the Models page
PROMOTE = "/api/v1/ml/models/{name}/versions/{version}/promote"
#: The spec with an approver (tests/dag_fixtures/models/pm_notify.yaml: approvers [approver]).
APPROVAL_TRAINING = "pm_notify_training"
APPROVAL_MODEL = "pm_notify_rf"
APPROVAL_TASK = "approve_promotion"
HITL = "/api/v2/dags/{dag}/dagRuns/{run}/taskInstances/approve_promotion/-1/hitlDetails"


@pytest.fixture(scope="module")
def browser():
    """Chromium from the distribution (tests/chromium.py); each user gets a fresh context."""
    with chromium.launched() as browser:
        yield browser


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
    champion = model_registry.get_champion(client, MODEL)
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
        assert "none pending" in row.locator("td[data-col=approvals]").inner_text()
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
        card = frame.locator("pre#model-card")  # the model card, as text: no element inside
        assert "## Holdout metrics" in card.inner_text() and "### Per slice" in card.inner_text()
        assert card.evaluate("node => node.children.length") == 0
        _snapshot(page, "version-page-operator")

    # A second version (same artifacts), so the page has a candidate to promote and, after that,
    # a previous champion to roll back to.
    source = client.get_model_version_download_uri(MODEL, version)
    extra = client.create_run(experiment_id)
    candidate = str(
        model_registry.register_version(
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
        assert model_registry.champion_version(client, MODEL) == candidate
        assert client.get_model_version(MODEL, candidate).tags["promoted_by"] == "operator via /api/v1/ml"
        rollback = row.locator("form:has(button[data-action=rollback])")
        rollback.get_by_role("textbox").fill("candidate misbehaves")
        rollback.get_by_role("button", name=f"Roll back to v{version}").click()
        row.locator("td[data-col=champion]").get_by_role("link", name=f"v{version}", exact=True).wait_for()
        assert model_registry.champion_version(client, MODEL) == version
        model_registry.check_invariants(client, MODEL)
        # Recorded as what it was: a rollback (on the version and in the model's history), not a promotion.
        tags = client.get_model_version(MODEL, version).tags
        assert (tags["promotion_kind"], tags["replaced_version"]) == ("rollback", candidate), tags
        (event,) = history.read(client, MODEL, limit=1)  # the newest
        assert (event["type"], event["version"], event["champion_before"]) == ("rollback", version, candidate)
        assert event["reason"] == "candidate misbehaves"

    with step(page, "the page's Airflow run link opens the run in Airflow, whatever a tag says"):
        # Whoever may write MLflow tags plants a link: the page builds its own from the run's ids.
        client.set_model_version_tag(MODEL, version, "airflow.run_url", "https://evil.example/phish")
        page.goto(cluster.base_url + "/")
        frame = _models_frame(page)
        row = frame.locator(f"tr[data-model='{MODEL}']")
        link = row.locator("td[data-col=champion]").get_by_role("link", name="Airflow run")
        run_page = f"{cluster.base_url}/dags/{TRAINING}/runs/{quote(run_id, safe='')}"
        assert link.get_attribute("href") == run_page
        link.click()
        page.wait_for_url(re.compile(rf"/dags/{TRAINING}/runs/{re.escape(quote(run_id, safe=''))}"))

    with step(page, "the navigation links to the MLflow UI"):
        page.get_by_role("button", name="Browse").click()
        assert page.get_by_role("menuitem", name="MLflow").get_attribute("href") == "http://127.0.0.1:5000"

    # A version whose artifacts retention removed (cmms_mlflow.registry.pruning): listed, marked, not
    # promotable.
    pruned = str(
        model_registry.register_version(
            client, name=MODEL, source=source, run_id=client.create_run(experiment_id).info.run_id,
            description="browser test", tags={"model_spec": "predictive_maintenance"},
        ).version
    )  # fmt: skip
    model_registry.reject(client, MODEL, pruned, reason="older than the kept ones", lock_dir=None)
    marks = {"retention_status": "pruned", "pruned_at": "2026-12-01T02:00:00+00:00", "pruned_by": "nightly"}
    model_registry.set_tags(client, MODEL, pruned, marks)
    with step(page, "a pruned version's page says so and offers no promotion"):
        page.goto(f"{cluster.base_url}/plugin/models/cmms-ui/models/{MODEL}/versions/{pruned}")
        frame = page.frame_locator("iframe[title=Models]")
        note = frame.locator("#artifacts-pruned")
        note.wait_for(timeout=30_000)
        assert "artifacts pruned" in note.inner_text() and "2026-12-01T02:00:00+00:00" in note.inner_text()
        assert "No plots (artifacts pruned)." in frame.locator("body").inner_text()
        assert frame.locator("button[data-action=promote]").count() == 0
        _snapshot(page, "version-page-pruned")
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
        assert model_registry.champion_version(client, MODEL) == version
        frame.locator(f"tr[data-model='{MODEL}'] td[data-col=champion] a").first.click()
        frame.locator("#decision-record").wait_for(timeout=30_000)
        assert frame.locator("button").count() == 0
    viewer.context.close()


def _awaiting_answer(cluster, run_id: str, timeout: float = 420) -> None:
    """Wait until the run's approval step waits for a person."""
    deadline = time.monotonic() + timeout
    while True:
        tis = cluster.task_instances(run_id, APPROVAL_TRAINING)
        if tis.get(APPROVAL_TASK, {}).get("state") == "awaiting_input":
            # Airflow 3.3.2 loses an answer given before the executor has reported the parked
            # attempt (see support.wait_until_parked); a person is never that fast.
            wait_until_parked(cluster, APPROVAL_TRAINING, APPROVAL_TASK, run_id)
            return
        failed = {t: ti["state"] for t, ti in tis.items() if ti["state"] in ("failed", "upstream_failed")}
        assert not failed and time.monotonic() < deadline, failed or tis
        time.sleep(2)


def _approval_row(cluster, user: str) -> dict:
    """The pm_notify model's row of the model API, as ``user`` sees it."""
    status, body = cluster.request("GET", "/api/v1/ml/models", user=user)
    assert status == 200, body
    return next(m for m in body["models"] if m["name"] == APPROVAL_MODEL)


def test_an_approver_answers_a_pending_approval_from_the_models_page(airflow_cluster, browser):
    from mlflow import MlflowClient

    cluster = airflow_cluster
    client = MlflowClient(tracking_uri=cluster.mlflow_uri, registry_uri=cluster.mlflow_uri)
    run_id = f"ui_approval_{uuid.uuid4().hex[:8]}"
    conf = {"require_approval": True, "f1_threshold": 0.3}
    body = {"dag_run_id": run_id, "logical_date": None, "conf": conf}
    status, run = cluster.request("POST", f"/api/v2/dags/{APPROVAL_TRAINING}/dagRuns", body, user="operator")
    assert status == 200, run
    _awaiting_answer(cluster, run_id)
    (asked,) = [
        mv for mv in client.search_model_versions(f"name = '{APPROVAL_MODEL}'")
        if mv.tags.get("approval_requested_by") == f"airflow:{APPROVAL_TRAINING}/{run_id}"
    ]  # fmt: skip
    version = str(asked.version)
    run_path = f"/dags/{APPROVAL_TRAINING}/runs/{quote(run_id, safe='')}"

    # Who may answer, as the API tells the page: Airflow's own rule (HITL permission on the DAG, and
    # the spec's approver list), so the operator, who may trigger the DAG, may not answer either.
    answerable = {}
    for user in ("viewer", "operator", "approver"):
        row = _approval_row(cluster, user)
        (pending,) = row["pendingApprovals"]
        assert (pending["version"], pending["runId"], pending["approvers"]) == (version, run_id, ["approver"])
        assert pending["airflow"]["taskState"] == "awaiting_input" and not pending["airflow"]["answered"]
        answerable[user] = (row["permissions"]["approve"], pending["canAnswer"])
    assert answerable == {"viewer": (False, False), "operator": (False, False), "approver": (True, True)}

    viewer = _log_in(browser, cluster, "viewer")
    with step(viewer, "a viewer sees the pending approval without a button and gets 403 answering"):
        frame = _models_frame(viewer)
        row = frame.locator(f"tr[data-model='{APPROVAL_MODEL}']")
        item = row.locator(f"td[data-col=approvals] li[data-approval='{version}']")
        text = item.inner_text()
        assert "pending" in text and run_id in text and "approvers: approver" in text, text
        review = item.get_by_role("link", name="Review in Airflow").get_attribute("href")
        assert review.endswith(f"{run_path}/tasks/{APPROVAL_TASK}/required_actions?map_index=-1"), review
        assert frame.locator("button").count() == 0
        _snapshot(viewer, "models-page-pending-approval-viewer")
        answer = frame.locator("body").evaluate(
            """async (_body, path) => {
                const r = await fetch(path, {method: "PATCH", credentials: "same-origin",
                  headers: {"Content-Type": "application/json"},
                  body: JSON.stringify({chosen_options: ["Approve"], params_input: {comment: "viewer"}})});
                return [r.status, await r.text()];
            }""",
            HITL.format(dag=APPROVAL_TRAINING, run=quote(run_id, safe="")),
        )
        assert answer[0] == 403, answer
    viewer.context.close()

    page = _log_in(browser, cluster, "approver")
    with step(page, "the approver sees the pending approval with Approve and Reject"):
        frame = _models_frame(page)
        row = frame.locator(f"tr[data-model='{APPROVAL_MODEL}']")
        item = row.locator(f"td[data-col=approvals] li[data-approval='{version}']")
        assert item.get_by_role("button", name="Reject").is_visible()
        # The approver may also promote by hand, but the page offers no way around the approval.
        assert row.locator("button[data-action=promote]").count() == 0
        _snapshot(page, "models-page-pending-approval")

    with step(page, "the approver approves with a comment; the run promotes the version"):
        item.get_by_role("textbox").fill("holdout confusion matrix checked")
        item.get_by_role("button", name="Approve").click()
        frame.locator("#status", has_text=f"Approve v{version} of {APPROVAL_MODEL}: answered").wait_for()
        (finished,) = cluster.wait_for_runs({run_id}, 1, timeout=300, dag_id=APPROVAL_TRAINING)
        assert finished["state"] == "success", cluster.task_instances(run_id, APPROVAL_TRAINING)
        # The page follows the run it answered until it finishes (no reload by hand).
        frame.locator("#status", has_text=f"Run {run_id} finished: success").wait_for(timeout=60_000)
        champion = row.locator("td[data-col=champion]")
        assert champion.get_by_role("link", name=f"v{version}", exact=True).is_visible()
        assert "none pending" in row.locator("td[data-col=approvals]").inner_text()
        decisions = row.locator("td[data-col=decisions]")
        approval = decisions.locator(f"li[data-type=approval]:has(a:text-is('v{version}'))")
        text = approval.inner_text()
        assert "by approver" in text, text
        assert "approved by approver: holdout confusion matrix checked" in text, text
        assert approval.get_by_role("link", name="Airflow run").get_attribute("href").endswith(run_path)
        promotion = decisions.locator("li[data-type=promotion]").first.inner_text()
        assert f"v{version}" in promotion and "Production" in promotion, promotion
        _snapshot(page, "models-page-after-approval")
    page.context.close()

    assert model_registry.champion_version(client, APPROVAL_MODEL) == version
    tags = client.get_model_version(APPROVAL_MODEL, version).tags
    assert (tags["approval_status"], tags["approval_by"]) == ("approved", "approver")
