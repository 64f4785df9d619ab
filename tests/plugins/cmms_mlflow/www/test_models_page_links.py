"""The Models page's own refusal of hostile links, in a real Chromium (tests/chromium.py).

The real API builds every "top" link (one that replaces Airflow's page) from ids, so a browser test
against it never sees a hostile link. Here the model API is the attacker: a stand-in server on
127.0.0.1 plays a hostile or compromised API (not a mock of our code) and answers ``GET
/api/v1/ml/models`` with links to other sites and to ``javascript:``/``data:`` URLs. It serves the
real models.html, models.js and models.css from the repository (with the page's own headers,
cmms_mlflow.www.ui.HEADERS) inside a same-origin parent page that frames it as Airflow does (an
iframe titled Models with Airflow 3.3's sandbox: scripts, same origin, forms, downloads; no top
navigation, no popups). What models.js must do: render such links as "—", never replay a click on a
"top" link that points off Airflow's origin (even one whose href changed after rendering), and still
replay a same-origin one in the top window.
"""

from __future__ import annotations

import ast
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import chromium
import pytest

PROJECT_DIR = Path(__file__).resolve().parents[4]
WWW = PROJECT_DIR / "plugins" / "cmms_mlflow" / "www"
STATIC = {"/cmms-ui/static/models.js": "text/javascript", "/cmms-ui/static/models.css": "text/css"}
#: How Airflow 3.3.2's UI frames an external view (airflow/ui: ``sandbox`` of its iframe).
AIRFLOW_SANDBOX = "allow-scripts allow-same-origin allow-forms allow-downloads"
PARENT = f"""<!doctype html>
<html><head><title>Airflow</title></head>
<body><iframe title="Models" sandbox="{AIRFLOW_SANDBOX}" src="/cmms-ui/models/"
 width="1400" height="900"></iframe></body></html>"""

EVIL = "https://evil.example/phish"
HOSTILE = (EVIL, "//evil.example/x", "javascript:alert(1)", "data:text/html,<script>alert(1)</script>")
#: Same-origin "top" links the page must keep (a path, and an absolute URL of its own origin).
RUN_PATH = "/dags/pm_training/runs/manual__2026-05-01"
SCORING_PATH = "/dags/pm_scoring"
MLFLOW_RUN = "https://mlflow.example/#/experiments/1/runs/abc"  # a "new" link: another site is fine


def _page_headers() -> dict[str, str]:
    """cmms_mlflow.www.ui.HEADERS, read from its source (importing it imports Airflow's API)."""
    tree = ast.parse((WWW / "ui.py").read_text())
    (value,) = [
        node.value for node in tree.body
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["HEADERS"]
    ]  # fmt: skip
    return ast.literal_eval(value)


def _models(origin: str) -> dict:
    """The hostile answer of ``GET /api/v1/ml/models``: one model, every link slot filled by the
    attacker (the shapes of cmms_mlflow.www.routes.list_models and model_overview)."""
    version = {
        "version": "1", "stage": "Production", "holdout": {"f1": 0.8, "roc_auc": 0.9},
        "championF1AtValidation": None, "status": "passed", "reason": "", "dataVersion": None,
        "promotedAt": "2026-05-01T02:00:00+00:00", "promotedBy": "airflow", "artifacts": "present",
        "links": {"mlflowVersion": HOSTILE[2], "mlflowRun": MLFLOW_RUN, "airflowRun": RUN_PATH},
    }  # fmt: skip
    decision = {
        "seq": 1, "type": "promotion", "decision": "promoted", "version": "1", "versions": [],
        "fromStage": "None", "toStage": "Production", "championBefore": None, "championAfter": "1",
        "changed": True, "by": "airflow", "at": "2026-05-01T02:00:00+00:00", "recordedAt": None,
        "reason": "first", "status": "done", "override": None, "links": {"airflowRun": HOSTILE[0]},
    }  # fmt: skip
    approval = {
        "version": "2", "holdoutF1": 0.8, "championF1": 0.8, "reason": "", "requestedAt": None,
        "requestedBy": None, "runId": "manual__x", "expiresAt": None, "timeoutHours": 24,
        "approvers": [], "airflow": None, "canAnswer": False,
        "links": {"airflowRun": HOSTILE[3], "requiredActions": HOSTILE[1]},
    }  # fmt: skip
    runs = [
        {"runId": f"run{i}", "state": "success", "runAfter": f"2026-05-0{i + 1}T02:00:00+00:00", "url": url}
        for i, url in enumerate(HOSTILE[1:])
    ]
    model = {
        "name": "pm_rf", "registered": True, "champion": version, "challenger": None,
        "lastCandidate": None, "previousChampion": None, "decisions": [decision], "drift": None,
        "pendingApprovals": [approval], "links": {"mlflowModel": HOSTILE[3]}, "trainingRuns": runs,
        "spec": {"name": "pm", "trainingDagId": "pm_training", "scoringDagId": "pm_scoring",
                 "trainingDagUrl": HOSTILE[0], "scoringDagUrl": origin + SCORING_PATH},
        "permissions": {"promote": False, "rollback": False, "override": False},
    }  # fmt: skip
    return {"models": [model], "mlflowUiUrl": HOSTILE[2]}


class _HostileAirflow(BaseHTTPRequestHandler):
    """Airflow's shell page and run pages, the real Models page, and a hostile model API."""

    headers_of_page: dict[str, str] = {}

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        path = self.path.split("?")[0]
        origin = f"http://{self.headers['Host']}"
        if path == "/cmms-ui/models/":
            self._send((WWW / "static" / "models.html").read_bytes(), "text/html", self.headers_of_page)
        elif path in STATIC:
            self._send((WWW / "static" / Path(path).name).read_bytes(), STATIC[path], self.headers_of_page)
        elif path == "/api/v1/ml/models":
            self._send(json.dumps(_models(origin)).encode(), "application/json")
        elif path == "/" or path.startswith("/dags/"):
            self._send(PARENT.encode() if path == "/" else b"<!doctype html><title>run</title>", "text/html")
        else:
            self.send_error(404)

    def _send(self, body: bytes, content_type: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def origin():
    _HostileAirflow.headers_of_page = _page_headers()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _HostileAirflow)
    threading.Thread(target=server.serve_forever, name="hostile-airflow", daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser():
    with chromium.launched() as browser:
        yield browser


@pytest.fixture
def airflow_page(browser, origin):
    """Airflow's page with the Models page framed in it, loaded; ``.offsite`` lists every request
    that left for evil.example (answered here, never sent)."""
    context = browser.new_context(viewport={"width": 1500, "height": 1000})
    offsite: list[str] = []

    def answer(route) -> None:
        offsite.append(route.request.url)
        route.fulfill(status=200, content_type="text/html", body="<title>phished</title>")

    context.route(re.compile(r"evil\.example"), answer)
    page = context.new_page()
    page.goto(origin + "/")
    frame = page.frame_locator("iframe[title=Models]")
    frame.locator("table#models tr[data-model=pm_rf]").wait_for(timeout=10_000)
    page.offsite = offsite
    yield page
    context.close()


#: The text "—" the page puts where it refuses a link, counted in one element.
DASHES = "node => [...node.querySelectorAll('span.muted')].filter(s => s.textContent === '—').length"


def test_hostile_links_from_the_api_render_as_a_dash(airflow_page, origin):
    frame = airflow_page.frame_locator("iframe[title=Models]")
    links = frame.locator("a").evaluate_all(
        "nodes => nodes.map(a => [a.getAttribute('href'), a.dataset.out || null])"
    )
    out = sorted((href, where) for href, where in links if where)
    # Only the same-origin "top" links and the http(s) "new" one are links; nothing else got an <a>.
    assert out == sorted([(RUN_PATH, "top"), (origin + SCORING_PATH, "top"), (MLFLOW_RUN, "new")]), links
    assert not [h for h, _ in links if "evil.example" in h or h.split(":")[0] in ("javascript", "data")]
    row = frame.locator("tr[data-model=pm_rf]")
    # Where each hostile link was: training DAG + 3 runs + MLflow model; the champion's MLflow version;
    # the decision's Airflow run; the approval's run and "Review in Airflow"; the MLflow UI.
    assert row.locator("td.model").evaluate(DASHES) == 5
    assert "training: —" in row.locator("td.model .runs").inner_text()
    assert row.locator("td[data-col=champion]").evaluate(DASHES) == 1
    assert row.locator("td[data-col=decisions]").evaluate(DASHES) == 1
    assert row.locator("td[data-col=approvals]").evaluate(DASHES) == 2
    assert frame.locator("main > p").last.evaluate(DASHES) == 1
    assert airflow_page.offsite == []


def test_a_top_link_made_cross_origin_never_navigates_airflow_and_a_same_origin_one_does(
    airflow_page, origin
):
    frame = airflow_page.frame_locator("iframe[title=Models]")
    models = airflow_page.locator("iframe[title=Models]").element_handle().content_frame()
    link = frame.locator("td[data-col=champion] a[data-out=top]")
    assert link.inner_text() == "Airflow run"
    # Script in the page (an extension, a later bug) changes the href after the page checked it.
    for hostile in (EVIL, "//evil.example/x"):
        link.evaluate("(a, href) => { a.href = href; }", hostile)
        link.click()
        airflow_page.wait_for_timeout(300)
        assert airflow_page.url == origin + "/" and models.url == origin + "/cmms-ui/models/", hostile
        assert airflow_page.offsite == [], hostile
    # The same link back on Airflow's origin is replayed in the top window (what the guard protects).
    link.evaluate("(a, href) => { a.href = href; }", RUN_PATH)
    link.click()
    airflow_page.wait_for_url(origin + RUN_PATH, timeout=5_000)
    assert airflow_page.offsite == []
