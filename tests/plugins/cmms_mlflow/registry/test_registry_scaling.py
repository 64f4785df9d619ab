"""Registry reads that do not grow with the model's age (bench/registry_growth.py measures them): the
history pages through 1,000+ events by its own cursor, the write path reads a lean snapshot.

Against a real MLflow on SQLite. Boundedness is asserted on what is asked of MLflow (how many rows a
read may return), never on timings.
"""

from __future__ import annotations

import base64
import json
import uuid

import pytest
from fastapi import HTTPException

from cmms_mlflow.registry import history, model_registry
from cmms_pm import registry_plan as rp

LEGACY_EVENTS = 1000


def _event_tags(seq: int, version: str) -> dict[str, str]:
    """The tags history.append writes, as older code wrote them (no start time of its choosing)."""
    event = {"seq": seq, "key": f"legacy{seq}", "type": "staging", "model": "m", "version": version,
             "actor": "old", "at": "t", "reason": "r", "changed": True, "repairs": []}  # fmt: skip
    return {
        history.SEQ_TAG: str(seq).zfill(10),
        history.KEY_TAG: f"legacy{seq}",
        history.EVENT_TAG: json.dumps(event),
        "history_type": "staging",
        "history_version": version,
    }


def _bulk_runs(client, experiment_id: str, runs: list[tuple[int, dict[str, str]]]) -> None:
    """Insert finished runs into the SQLite store in one transaction (1,000 ``create_run`` calls take
    a minute on a busy machine; what is read back goes through MLflow's public API)."""
    from mlflow.store.tracking.dbmodels.models import SqlRun, SqlTag

    store = client._tracking_client.store
    with store.ManagedSessionMaker(read_only=False) as session:
        for start, tags in runs:
            run_id = uuid.uuid4().hex
            session.add(SqlRun(run_uuid=run_id, name=run_id[:8], experiment_id=int(experiment_id),
                               start_time=start, end_time=start, status="FINISHED", lifecycle_stage="active",
                               source_type="LOCAL", source_name="", user_id="old", source_version="",
                               entry_point_name="", artifact_uri=f"file:///nowhere/{run_id}"))  # fmt: skip
            session.add_all(SqlTag(key=k, value=v, run_uuid=run_id) for k, v in tags.items())


@pytest.fixture(scope="module")
def long_history(mlflow_store):
    """A model whose history holds 1,000 events written the old way — clocks of millisecond
    resolution: every three share one, and 120 (more than a page) share another — then 20 appended by
    history.append."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_store, registry_uri=mlflow_store)
    name = f"pm_history_{uuid.uuid4().hex[:8]}"
    client.create_registered_model(name)
    experiment = client.create_experiment(history.experiment_name(name), tags={"cmms.history_of": name})
    base = 1_700_000_000_000
    _bulk_runs(
        client,
        experiment,
        [
            (base + (133 if 400 <= seq < 520 else seq // 3), _event_tags(seq, str(seq % 7 + 1)))  # never back
            for seq in range(1, LEGACY_EVENTS + 1)
        ],
    )
    for extra in range(20):
        history.append(client, name, {"key": f"new{extra}", "type": "approval", "model": name, "version": "3",
                                      "actor": "bench", "at": "t", "reason": "new"})  # fmt: skip
    return name


@pytest.fixture
def api_client(mlflow_conn):
    """The model API's route functions, called directly (HTTP and auth: tests/dags/test_model_api.py)."""
    from cmms_mlflow.www import routes

    return routes


def _page_through(api, name, limit, *, during=None):
    seqs, token, pages = [], None, 0
    while True:
        body = api.get_model_history(name, limit=limit, pageToken=token)
        seqs.extend(e["seq"] for e in body["events"])
        pages += 1
        if during is not None and pages == 3:
            during()
        token = body["nextPageToken"]
        if token is None:
            return seqs, pages
        assert len(body["events"]) == limit


@pytest.mark.parametrize("limit", [50, 13, 500])
def test_the_history_pages_through_more_than_a_thousand_events_once_each_in_order(
    api_client, client, long_history, limit
):
    total = LEGACY_EVENTS + 20
    newest = history.read(client, long_history, limit=1)[0]["seq"]
    added = []

    def append_meanwhile():  # the registry moves while someone pages
        for _ in range(3):
            added.append(history.append(client, long_history, {
                "key": uuid.uuid4().hex, "type": "approval", "model": long_history, "version": "1",
                "actor": "meanwhile", "at": "t", "reason": "appended while paging"}))  # fmt: skip

    seqs, pages = _page_through(api_client, long_history, limit, during=append_meanwhile)
    # Every event that existed when paging began, newest first, once; those added meanwhile are newer
    # than the first page and wait for the next first page.
    assert seqs == list(range(newest, 0, -1))
    assert newest >= total and len(seqs) == len(set(seqs))
    assert pages == -(-len(seqs) // limit)
    first = api_client.get_model_history(long_history, limit=3, pageToken=None)["events"]
    assert (
        [e["seq"] for e in first] == [newest + 3, newest + 2, newest + 1] == [a["seq"] for a in added[::-1]]
    )


def test_a_late_page_reads_no_more_rows_from_mlflow_than_the_first(client, long_history, monkeypatch):
    returned = []
    search = type(client).search_runs

    def counting(self, *args, **kwargs):
        runs = search(self, *args, **kwargs)
        returned.append(len(runs))
        return runs

    monkeypatch.setattr(type(client), "search_runs", counting)
    history.read_page(client, long_history, limit=50)
    first = sum(returned)
    token = None
    for _ in range(15):
        _, token = history.read_page(client, long_history, limit=50, page_token=token)
    returned.clear()
    events, _ = history.read_page(client, long_history, limit=50, page_token=token)
    # The page, the one row after it that says there is more, and the events sharing a page edge's
    # millisecond (here up to 3 at each edge; older histories only): never the events before the page.
    assert len(events) == 50 and first <= 51 + 3 and sum(returned) <= 51 + 2 * 3


def test_one_versions_history_pages_too(client, long_history):
    seqs, token = [], None
    while True:
        events, token = history.read_page(client, long_history, limit=20, page_token=token, version="4")
        seqs.extend(e["seq"] for e in events)
        assert all(e["version"] == "4" for e in events)
        if token is None:
            break
    legacy = [s for s in range(LEGACY_EVENTS, 0, -1) if s % 7 + 1 == 4]
    assert seqs == legacy


def _token(data) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "token",
    [
        "not-a-token",
        "%%%",
        _token("just a string"),
        _token({"t": -1, "s": []}),
        _token({"t": "1", "s": []}),
        _token({"t": 1.5, "s": []}),
        _token({"t": 2**60, "s": []}),
        _token({"t": 1, "s": [[5, 1]]}),
        _token({"t": 1, "s": [[1, 10**9]]}),  # a cursor that would make the server hold a billion numbers
        _token({"t": 1, "s": [["1", "2"]]}),
        _token({"t": 1}),
        _token({"t": 1, "s": [[1, 2, 3]]}),
    ],
)
def test_a_forged_page_token_is_refused_with_422(api_client, long_history, token):
    with pytest.raises(HTTPException) as refused:
        api_client.get_model_history(long_history, limit=10, pageToken=token)
    assert refused.value.status_code == 422 and "invalid pageToken" in str(refused.value.detail)


def test_appends_keep_numbers_unique_and_times_increasing_after_older_events(client, long_history):
    before = history.read(client, long_history, limit=1)[0]
    recorded = [
        history.append(client, long_history, {"key": uuid.uuid4().hex, "type": "approval", "model": "m",
                                               "version": "2", "actor": "a", "at": "t", "reason": "r"})
        for _ in range(3)
    ]  # fmt: skip
    assert [r["seq"] for r in recorded] == [before["seq"] + 1, before["seq"] + 2, before["seq"] + 3]
    runs = client.search_runs(
        [client.get_experiment_by_name(history.experiment_name(long_history)).experiment_id],
        order_by=["attributes.start_time DESC"], max_results=4,
    )  # fmt: skip
    starts = [r.info.start_time for r in runs]
    assert starts == sorted(starts, reverse=True) and len(set(starts)) == 4


def test_a_number_taken_by_an_event_out_of_time_order_is_skipped(client, long_history):
    from mlflow.entities import ViewType

    experiment = client.get_experiment_by_name(history.experiment_name(long_history)).experiment_id
    newest = history.read(client, long_history, limit=1)[0]["seq"]
    # Older code on a host whose clock ran behind recorded newest + 1 with an old start time.
    client.create_run(experiment, start_time=1, tags=_event_tags(newest + 1, "1"))
    event = {"key": uuid.uuid4().hex, "type": "approval", "model": "m", "version": "2", "actor": "a",
             "at": "t", "reason": "r"}  # fmt: skip
    recorded = history.append(client, long_history, event)
    assert recorded["seq"] == newest + 2
    wanted = f"tags.history_seq = '{str(newest + 2).zfill(10)}'"
    taken = client.search_runs([experiment], filter_string=wanted, run_view_type=ViewType.ALL)
    assert len(taken) == 1


# --- the lean snapshot ------------------------------------------------------------------------------


def test_a_lean_snapshot_holds_every_version_a_change_can_touch_in_bounded_reads(
    client, register, model_name, tmp_path, monkeypatch
):
    from cmms_mlflow.registry.promotion import change_stage

    monkeypatch.setattr(model_registry, "LEAN_WINDOW", 3)
    versions = [register(model_name) for _ in range(12)]
    lock = tmp_path / "locks"

    def move(version, stage, **kw):
        return change_stage(client, name=model_name, version=version, stage=stage, lock_dir=lock, actor="t",
                            reason="t", at="t", **kw)  # fmt: skip

    move("1", "Production")
    move("2", "Production")  # v1: previous champion
    move("3", "Staging")
    model_registry.set_tags(client, model_name, "3", {"approval_status": "pending"})
    move("4", "Staging")  # the challenger... until v5 is staged
    for version in versions[4:]:
        move(version, "Archived")

    asked = []
    search = type(client).search_model_versions

    def counting(self, filter_string=None, max_results=None, order_by=None, page_token=None):
        asked.append((filter_string, max_results))
        return search(self, filter_string, max_results=max_results or 10000, order_by=order_by,
                      page_token=page_token)  # fmt: skip

    monkeypatch.setattr(type(client), "search_model_versions", counting)
    lean = model_registry.read_snapshot(client, model_name, versions=["5"])
    assert not lean.complete
    # The newest 3, the champion and the previous champion (aliases), the pending approval, the newest
    # of each stage (v4, the newest Staging), and the version asked for — not the other archived ones.
    assert set(lean.versions) == {"12", "11", "10", "2", "1", "3", "4", "5"}
    assert all(f == f"name = '{model_name}'" and n == 3 or "approval_status" in f for f, n in asked), asked
    full = model_registry.read_snapshot(client, model_name)
    assert full.complete and set(full.versions) == {str(v) for v in range(1, 13)}
    # The planner decides the same on both for a change of a version the lean one holds.
    request = rp.Request(kind="promotion", version="5", stage="Production", key="k")
    lean_plan, full_plan = rp.plan(lean, request), rp.plan(full, request)
    assert lean_plan.writes == full_plan.writes and lean_plan.outcome == full_plan.outcome
    assert lean_plan.writes[0] == rp.Write("stage", "5", "Production", archive_others=True)
    with pytest.raises(ValueError, match="complete snapshot"):
        rp.prune_candidates(lean, keep=1)

    monkeypatch.setattr(type(client), "search_model_versions", search)
    # Staging v3 (pending) is the challenger once v4 leaves Staging, though far outside the window.
    move("4", "Archived")
    assert model_registry.aliases_of(client, model_name)["challenger"] == "3"
    # An old version moved to Production outside this package (MLflow's UI) is seen by the readers.
    client.transition_model_version_stage(model_name, "7", "Production", archive_existing_versions=True)
    champion, problems = model_registry.serving(client, model_name)
    assert str(champion.version) == "7" and "alias champion pointed at v2" in problems[0]
