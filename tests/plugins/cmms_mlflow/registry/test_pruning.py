"""Retention of archived versions' artifacts (cmms_mlflow.registry.pruning) against a real MLflow on SQLite:
nine nights of decisions, a pruning process SIGKILLed between its steps and rerun, and the versions an
attacker could register to make a worker delete what is not ours."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from cmms_mlflow.exceptions import ModelNotFoundError, PromotionConflictError
from cmms_mlflow.registry import history, model_registry
from cmms_mlflow.registry import pruning as ret
from cmms_pm import registry_plan as rp
from cmms_pm.spec import build_spec

PROJECT_DIR = Path(__file__).resolve().parents[4]


@pytest.fixture
def world(client, mlflow_conn, monkeypatch, model_name, tmp_path, shipped_spec):
    """An experiment whose artifacts live under ``tmp_path/artifacts`` (the deployment's artifact root),
    the spec of ``model_name`` with it, and ``night(n)``: one nightly version with a real logged model."""
    # MLflow's registry resolves a models:/m-... source through the process's tracking URI.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_conn)
    root = tmp_path / "artifacts"
    experiment = f"exp_{model_name}"
    experiment_id = client.create_experiment(experiment, artifact_location=root.as_uri())
    spec = build_spec(
        {**{k: v for k, v in shipped_spec.raw.items() if k not in ("experiment", "scoring")},
         "experiment": experiment, "registered_model": model_name},
    )  # fmt: skip
    files = tmp_path / "model-files"
    files.mkdir()
    (files / "model.skops").write_bytes(os.urandom(2048))
    (files / "MLmodel").write_text("flavors: {}\n")

    def night(n: int, *, experiment_id: str = experiment_id, provenance: bool = True) -> str:
        tags = {"model_spec": spec.name, "airflow.dag_id": spec.training_dag_id, "airflow.run_id": f"n{n}"}
        run = client.create_run(experiment_id, tags=tags if provenance else {})
        run_id = run.info.run_id
        client.log_text(run_id, '{"decision": "promote"}', "validation/decision.json")
        client.log_text(run_id, "png", "evaluation/roc_curve.png")
        client.log_text(run_id, "{}", "data_contract.json")
        logged = client.create_logged_model(experiment_id, name="model", source_run_id=run_id)
        client.log_model_artifacts(logged.model_id, str(files))
        client.set_terminated(run_id)
        version = model_registry.register_version(
            client, name=model_name, source=f"models:/{logged.model_id}", run_id=run_id, description="night",
            tags={"data_version": f"n{n}"},
        )  # fmt: skip
        return str(version.version)

    night.spec = spec
    night.root = root
    night.experiment_id = experiment_id
    return night


def _stage(client, name, version, stage, lock_dir, **kwargs):
    from cmms_mlflow.registry.promotion import change_stage

    return change_stage(client, name=name, version=version, stage=stage, lock_dir=lock_dir, actor="test",
                        reason=kwargs.pop("reason", "test"), at="t", **kwargs)  # fmt: skip


def _prune(client, name, world, lock_dir, keep, n):
    return ret.prune_versions(
        client, name, spec=world.spec, keep=keep, lock_dir=lock_dir, local_root=world.root.as_uri(),
        actor=f"airflow:pm_training/n{n}", at=f"2026-01-{n:02d}T02:00:00+00:00", key=f"night{n}",
    )  # fmt: skip


def _next_write(client, name, version, lock_dir):
    """Another write path's change (a note on ``version``) through snapshot → plan → apply, under the lock."""
    request = rp.Request(kind="approval", version=version, actor="test", at="t", reason="next write",
                         key="nextwrite", tags={"note": "next write"})  # fmt: skip
    with model_registry.model_lock(lock_dir, name) as lock:
        return model_registry.execute(client, name, request, lock=lock)


def _artifacts(client, name, version) -> dict[str, bool]:
    """What is left of a version on disk: its logged model, its run's evaluation and decision record."""
    mv = client.get_model_version(name, version)
    logged = client.get_logged_model(mv.source.removeprefix("models:/"))
    run_dir = Path(client.get_run(mv.run_id).info.artifact_uri.removeprefix("file://"))
    return {
        "model": Path(logged.artifact_location.removeprefix("file://"), "model.skops").exists(),
        "evaluation": (run_dir / "evaluation" / "roc_curve.png").exists(),
        "contract": (run_dir / "data_contract.json").exists(),
        "decision": (run_dir / "validation" / "decision.json").exists(),
    }


def test_nine_nights_keep_exactly_the_policy_and_never_the_champion_rollback_target_or_pending(
    client, model_name, world, tmp_path
):
    from cmms_mlflow.hooks.mlflow_hook import MlflowHook
    from cmms_mlflow.tracking.model_loading import load_version
    from cmms_mlflow.www.model_overview import model_summary, version_detail

    lock = tmp_path / "locks"
    name = model_name
    champion = None
    # Night -> what the pipeline decided; after each night the retention step runs (keep 2 archived).
    plan = {1: "promote", 2: "reject", 3: "promote", 4: "reject", 5: "reject", 6: "pending", 7: "reject",
            8: "promote", 9: "rollback"}  # fmt: skip
    # Hand-computed: archived versions beyond the newest two lose their artifacts, except the previous
    # champion (v1 until night 8, then v3 — which night 9 rolls back to, so it must still load).
    expected = {1: set(), 2: set(), 3: set(), 4: set(), 5: {"2"}, 6: {"2"}, 7: {"2", "4"},
                8: {"1", "2", "4"}, 9: {"1", "2", "4", "5"}}  # fmt: skip
    for n, decision in plan.items():
        if decision == "rollback":
            _stage(client, name, "3", "Production", lock, kind="rollback", expected_champion=champion)
            champion = "3"
        else:
            version = world(n)
            _stage(client, name, version, "Staging", lock)
            if decision == "promote":
                _stage(client, name, version, "Production", lock, expected_champion=champion)
                champion = version
            elif decision == "reject":
                model_registry.reject(
                    client, name, version, reason="below the champion", lock_dir=lock, key=f"r{n}"
                )
            else:
                model_registry.set_tags(client, name, version, {"approval_status": "pending"})
        outcome = _prune(client, name, world, lock, keep=2, n=n)
        pruned = {str(v.version) for v in client.search_model_versions(f"name = '{name}'")
                  if v.tags.get(rp.RETENTION_TAG) == rp.PRUNED}  # fmt: skip
        assert pruned == expected[n], f"night {n}: {outcome}"
        for version in (str(v) for v in range(1, 9)):
            if int(version) > n or (version == "9"):
                continue
            left = _artifacts(client, name, version)
            gone = version in expected[n]
            assert left == {
                "model": not gone,
                "evaluation": not gone,
                "contract": not gone,
                "decision": True,
            }, f"night {n} v{version}"

    model_registry.check_invariants(client, name)
    assert model_registry.champion_version(client, name) == "3"
    assert model_registry.aliases_of(client, name)["previous_champion"] == "8"
    stages = {str(v.version): v.current_stage for v in client.search_model_versions(f"name = '{name}'")}
    assert stages["6"] == "Staging"  # the pending approval, untouched
    assert {v: stages[v] for v in ("1", "2", "4", "5")} == dict.fromkeys(("1", "2", "4", "5"), "Archived")
    # One prune event per night that pruned something, naming what and why; nothing else changed.
    prunes = [e for e in history.read(client, name, limit=100) if e["type"] == "prune"]
    assert [e["versions"] for e in prunes] == [["5"], ["1"], ["4"], ["2"]]
    assert prunes[0]["actor"] == "airflow:pm_training/n9" and prunes[0]["champion_after"] == "3"
    assert "archived beyond the newest 2 (retention.keep_archived_versions)" in prunes[0]["reason"]
    assert "v3 (the previous champion" not in prunes[0]["reason"]  # v3 is the champion again
    # The pruned version stays: tags, metrics, history; it can no longer load or be promoted.
    mv = client.get_model_version(name, "2")
    assert mv.tags["data_version"] == "n2" and mv.tags["pruned_by"] == "airflow:pm_training/n5"
    with pytest.raises(ModelNotFoundError, match="artifacts were removed by retention"):
        load_version(client, name, "2", spec_name=world.spec.name)
    with pytest.raises(PromotionConflictError, match="its artifacts were removed by retention"):
        _stage(client, name, "5", "Production", lock)
    assert model_registry.champion_version(client, name) == "3"
    # The Models page says so.
    hook = MlflowHook()
    detail = version_detail(client, hook, name, "4")
    assert (detail["artifacts"], detail["prunedBy"]) == ("pruned", "airflow:pm_training/n7")
    assert detail["plots"] == [] and detail["decisionRecord"] == {"decision": "promote"}
    summary = model_summary(client, hook, name)
    assert summary["champion"]["artifacts"] == "present" and summary["versions"] == 8
    assert summary["decisions"][0]["type"] == "prune" and summary["decisions"][0]["versions"] == ["5"]
    # A night with nothing to prune takes no lock and writes nothing.
    before = len(history.read(client, name, limit=100))
    assert _prune(client, name, world, lock, keep=2, n=10)["pruned"] == []
    assert len(history.read(client, name, limit=100)) == before


@pytest.mark.parametrize("kill_at", ["after_intent", "between_deletes", "before_pruned_tags"])
def test_a_pruning_run_killed_between_its_steps_is_finished_by_the_next_run(
    client, mlflow_store, model_name, world, tmp_path, kill_at
):
    lock = tmp_path / "locks"
    versions = [world(n) for n in range(1, 5)]
    for version in versions:
        model_registry.reject(client, model_name, version, reason="test", lock_dir=lock, key=f"r{version}")
    job = {
        "tracking_uri": mlflow_store, "name": model_name, "spec": world.spec.to_dict(), "lock_dir": str(lock),
        "local_root": world.root.as_uri(), "kill_at": kill_at,
    }  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, str(PROJECT_DIR / "tests" / "retention_worker.py"), json.dumps(job)],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == -signal.SIGKILL, done.stdout[-3000:] + done.stderr[-3000:]

    tags = {str(v.version): v.tags for v in client.search_model_versions(f"name = '{model_name}'")}
    # keep 1: v4 keeps its artifacts; v3, v2, v1 were marked before anything was deleted.
    assert {v: t.get(rp.RETENTION_TAG) for v, t in tags.items()} == {
        "4": rp.KEPT, "3": rp.PRUNING, "2": rp.PRUNING, "1": rp.PRUNING,
    }  # fmt: skip
    left = {v: _artifacts(client, model_name, v)["model"] for v in versions}
    if kill_at == "after_intent":
        assert left == dict.fromkeys(versions, True)
    elif kill_at == "between_deletes":
        assert left == {"1": True, "2": True, "3": False, "4": True}  # v3's model went, its run artifacts not
        assert _artifacts(client, model_name, "3")["evaluation"]
    else:
        assert left == {"1": False, "2": False, "3": False, "4": True}
    # History intent first: the prune event was recorded pending before the first write.
    (intent,) = [e for e in history.read(client, model_name) if e["type"] == "prune"]
    assert (intent["status"], intent["versions"]) == (rp.PENDING_EVENT, ["3", "2", "1"])
    # The next write (not a retention run) cannot finish removing artifacts: the intent stays pending.
    _next_write(client, model_name, "4", lock)
    assert history.recorded(client, model_name, intent["key"])["status"] == rp.PENDING_EVENT

    # The next night's run — even if the policy was dropped meanwhile — finishes what was started and
    # completes the killed run's event (the same one: no second prune event).
    outcome = _prune(client, model_name, world, lock, keep=None, n=2)
    assert outcome["pruned"] == ["3", "2", "1"] and outcome["resumed"]["seq"] == intent["seq"]
    for version in ("1", "2", "3"):
        assert _artifacts(client, model_name, version) == {
            "model": False, "evaluation": False, "contract": False, "decision": True,
        }  # fmt: skip
        assert client.get_model_version(model_name, version).tags[rp.RETENTION_TAG] == rp.PRUNED
    assert _artifacts(client, model_name, "4")["model"]
    (event,) = [e for e in history.read(client, model_name) if e["type"] == "prune"]
    assert (event["seq"], event["status"]) == (intent["seq"], rp.DONE_EVENT)
    assert event["versions"] == ["3", "2", "1"]
    assert "finished by the next retention run (airflow:pm_training/n2" in event["settled"]
    assert history.pending(client, model_name) == []
    assert _prune(client, model_name, world, lock, keep=None, n=3)["pruned"] == []


def test_a_pruning_run_that_dies_after_recording_its_intent_is_settled_not_applied_by_the_next_write(
    client, model_name, world, tmp_path, monkeypatch
):
    """Killed between the pending event and the first ``pruning`` mark (in process: the write raises a
    BaseException, which nothing in apply catches for good): nothing was deleted, the next write settles
    the intent ``not_applied``, and the next retention run prunes under an event of its own."""
    lock = tmp_path / "locks"
    versions = [world(n) for n in range(1, 4)]
    for version in versions:
        model_registry.reject(client, model_name, version, reason="test", lock_dir=lock, key=f"r{version}")
    real_tags = model_registry._set_tags

    class Killed(BaseException):
        pass

    def dies_at_the_first_mark(client_, name, version, values):
        if values.get(rp.RETENTION_TAG) == rp.PRUNING:
            raise Killed
        real_tags(client_, name, version, values)

    monkeypatch.setattr(model_registry, "_set_tags", dies_at_the_first_mark)
    with pytest.raises(Killed):
        _prune(client, model_name, world, lock, keep=1, n=1)
    monkeypatch.setattr(model_registry, "_set_tags", real_tags)
    (intent,) = [e for e in history.read(client, model_name) if e["type"] == "prune"]
    assert (intent["status"], intent["versions"]) == (rp.PENDING_EVENT, ["2", "1"])
    assert all(_artifacts(client, model_name, v)["model"] for v in versions)

    _next_write(client, model_name, "3", lock)
    settled = history.recorded(client, model_name, intent["key"])
    assert settled["status"] == rp.NOT_APPLIED_EVENT and "no version had been marked" in settled["settled"]
    assert _prune(client, model_name, world, lock, keep=1, n=2)["pruned"] == ["2", "1"]
    prunes = [e for e in history.read(client, model_name) if e["type"] == "prune"]
    assert [(e["status"], e["versions"]) for e in prunes] == [
        (rp.DONE_EVENT, ["2", "1"]), (rp.NOT_APPLIED_EVENT, ["2", "1"]),
    ]  # fmt: skip


def test_versions_an_attacker_registers_never_make_retention_delete_outside_our_artifacts(
    client, model_name, world, tmp_path
):
    """Anyone who may write to MLflow can tag a run like ours and register a version of our model; the
    worker that prunes must still delete nothing outside the deployment's own artifact root."""
    lock = tmp_path / "locks"
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious.txt").write_text("keep me")
    # 1. Provenance tags copied, but the run's experiment stores its artifacts in the victim's folder.
    foreign_experiment = client.create_experiment(f"foreign_{uuid.uuid4().hex[:6]}",
                                                  artifact_location=victim.as_uri())  # fmt: skip
    outside = world(1, experiment_id=foreign_experiment)
    # 2. No provenance at all.
    untagged = world(2, provenance=False)
    # 3. A version whose source is a path outside, with a real run of ours.
    run = client.create_run(world.experiment_id, tags={"model_spec": world.spec.name, "airflow.dag_id": "d",
                                                       "airflow.run_id": "r"})  # fmt: skip
    pointed = model_registry.register_version(client, name=model_name, source=victim.as_uri(),
                                        run_id=run.info.run_id, description="x", tags={})  # fmt: skip
    pointed = str(pointed.version)
    ours = [world(n) for n in (4, 5)]
    for version in (outside, untagged, pointed, *ours):
        model_registry.reject(client, model_name, version, reason="test", lock_dir=lock, key=f"r{version}")

    outcome = _prune(client, model_name, world, lock, keep=0, n=1)

    assert (victim / "precious.txt").read_text() == "keep me"
    assert len(list(victim.rglob("*"))) > 1  # the foreign run's own artifacts are there, untouched
    assert outcome["pruned"] == ours[::-1]
    assert set(outcome["skipped"]) == {outside, untagged, pointed}
    assert "is outside the MLflow artifact root" in outcome["skipped"][outside]
    assert "not this package's model" in outcome["skipped"][untagged]
    assert "not an artifact of its run" in outcome["skipped"][pointed]
    for version in (outside, untagged, pointed):
        assert client.get_model_version(model_name, version).tags[rp.RETENTION_TAG] == rp.KEPT
    (event,) = [e for e in history.read(client, model_name) if e["type"] == "prune"]
    assert f"v{outside} (" in event["reason"] and "left alone" in event["reason"]


@pytest.mark.parametrize(
    ("uri", "root", "inside"),
    [
        ("file:///data/mlflow/1/abc/artifacts", "file:///data/mlflow", True),
        ("/data/mlflow/1/abc", "file:///data/mlflow", True),
        ("file:///data/mlflow/../etc/passwd", "file:///data/mlflow", False),
        ("file:///data/mlflow", "file:///data/mlflow", False),  # the root itself: never
        ("file:///data/mlflow-other/1", "file:///data/mlflow", False),
        ("s3://bucket/mlflow/1/models/m-1/artifacts", "s3://bucket/mlflow/1", True),
        ("s3://other/mlflow/1/models/m-1/artifacts", "s3://bucket/mlflow/1", False),
        ("s3://bucket/mlflow/10/x", "s3://bucket/mlflow/1", False),
        ("s3://bucket/mlflow/1/../2/x", "s3://bucket/mlflow/1", False),
        ("mlflow-artifacts:/1/abc/artifacts/model", "mlflow-artifacts:/1", True),
        ("mlflow-artifacts://evil.example/1/abc", "mlflow-artifacts:/1", False),
        ("file:///data/mlflow/1/x", "s3://bucket/mlflow", False),
    ],
)
def test_inside_accepts_only_locations_strictly_below_the_root(uri, root, inside):
    assert ret.inside(uri, root) is inside


def test_a_symlink_under_the_artifact_root_that_leads_out_is_outside(tmp_path):
    (tmp_path / "root").mkdir()
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", tmp_path / "root" / "link")
    assert not ret.inside((tmp_path / "root" / "link" / "x").as_uri(), (tmp_path / "root").as_uri())
    assert ret.inside((tmp_path / "root" / "real" / "x").as_uri(), (tmp_path / "root").as_uri())


def test_a_model_that_is_not_registered_has_nothing_to_prune(client, world, tmp_path):
    outcome = _prune(client, f"never_{uuid.uuid4().hex[:6]}", world, tmp_path, keep=0, n=1)
    assert outcome["pruned"] == [] and outcome["registered"] is False


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory):
    """moto's S3 server on loopback (AWS itself cannot run here; the code under test talks plain S3)."""
    from harness import http_answers, wait_until_ready
    from support import free_port, start_process, stop_processes

    home = tmp_path_factory.mktemp("moto-retention")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "AIRFLOW"))}
    moto = str(Path(sys.executable).parent / "moto_server")
    proc = start_process([moto, "-H", "127.0.0.1", "-p", str(port)], env=env, log=home / "moto.log", cwd=home)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready("moto S3 server", http_answers(endpoint), processes=[proc], timeout=60, interval=0.3)
        yield endpoint
    finally:
        stop_processes([proc])


def test_an_s3_artifact_store_loses_the_pruned_versions_objects_and_keeps_the_others(
    client, mlflow_conn, model_name, tmp_path, shipped_spec, s3_endpoint, monkeypatch
):
    """Artifacts written straight to S3 (a server with --no-serve-artifacts, or a client-side store):
    deleted with the worker's own S3 credentials through MLflow's S3 artifact repository."""
    import boto3

    keys = {"AWS_ACCESS_KEY_ID": "test-retention", "AWS_SECRET_ACCESS_KEY": "test-only-secret",
            "AWS_DEFAULT_REGION": "us-east-1", "MLFLOW_S3_ENDPOINT_URL": s3_endpoint}  # fmt: skip
    for key, value in keys.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_conn)
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    bucket = f"artifacts-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    experiment = f"exp_{model_name}"
    experiment_id = client.create_experiment(experiment, artifact_location=f"s3://{bucket}/mlflow")
    spec = build_spec(
        {**{k: v for k, v in shipped_spec.raw.items() if k not in ("experiment", "scoring")},
         "experiment": experiment, "registered_model": model_name},
    )  # fmt: skip
    files = tmp_path / "model"
    files.mkdir()
    (files / "model.skops").write_bytes(b"\0" * 1024)
    for night in (1, 2):
        tags = {
            "model_spec": spec.name,
            "airflow.dag_id": spec.training_dag_id,
            "airflow.run_id": f"n{night}",
        }
        run_id = client.create_run(experiment_id, tags=tags).info.run_id
        client.log_text(run_id, "{}", "validation/decision.json")
        client.log_text(run_id, "png", "evaluation/roc_curve.png")
        logged = client.create_logged_model(experiment_id, name="model", source_run_id=run_id)
        client.log_model_artifacts(logged.model_id, str(files))
        model_registry.register_version(client, name=model_name, source=f"models:/{logged.model_id}",
                                        run_id=run_id, description="n", tags={})  # fmt: skip
    lock = tmp_path / "locks"
    model_registry.promote(
        client, model_name, "2", expected_champion=None, lock_dir=lock, audit={"promoted_by": "t"}
    )
    model_registry.reject(client, model_name, "1", reason="older", lock_dir=lock)
    run1 = client.get_model_version(model_name, "1").run_id
    run2 = client.get_model_version(model_name, "2").run_id

    outcome = ret.prune_versions(client, model_name, spec=spec, keep=0, lock_dir=lock, local_root=None,
                                 actor="t", at="t", key="k")  # fmt: skip

    assert outcome["pruned"] == ["1"]
    left = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert [k for k in left if run1 in k] == [f"mlflow/{run1}/artifacts/validation/decision.json"]
    assert sum(1 for k in left if k.endswith("model.skops")) == 1  # v2's, the champion's
    assert any(run2 in k and k.endswith("roc_curve.png") for k in left)


def test_older_versions_are_indexed_once_then_pruning_reads_only_what_is_kept(
    client, model_name, world, tmp_path, monkeypatch
):
    lock = tmp_path / "locks"
    versions = [world(n) for n in range(1, 7)]
    for version in versions:  # registered by older code: no retention status
        client.delete_model_version_tag(model_name, version, rp.RETENTION_TAG)
    _stage(client, model_name, "6", "Production", lock)
    for version in versions[:5]:
        model_registry.reject(client, model_name, version, reason="older", lock_dir=lock, key=f"r{version}")
    expected, _ = rp.prune_candidates(model_registry.read_snapshot(client, model_name), 2)

    outcome = _prune(client, model_name, world, lock, keep=2, n=1)

    assert outcome["pruned"] == expected == ["3", "2", "1"]
    assert client.get_registered_model(model_name).tags[rp.RETENTION_INDEX_TAG] == "1"
    tags = {
        str(v.version): v.tags[rp.RETENTION_TAG]
        for v in client.search_model_versions(f"name = '{model_name}'")
    }
    assert tags == {"6": rp.KEPT, "5": rp.KEPT, "4": rp.KEPT, "3": rp.PRUNED, "2": rp.PRUNED, "1": rp.PRUNED}

    seven = world(7)
    model_registry.reject(client, model_name, seven, reason="older", lock_dir=lock, key="r7")
    expected, _ = rp.prune_candidates(model_registry.read_snapshot(client, model_name), 2)
    searches = []
    search = type(client).search_model_versions

    def recording(self, filter_string=None, *args, **kwargs):
        searches.append(filter_string)
        return search(self, filter_string, *args, **kwargs)

    monkeypatch.setattr(type(client), "search_model_versions", recording)
    assert _prune(client, model_name, world, lock, keep=2, n=2)["pruned"] == expected == ["4"]
    # Indexed: one tag-filtered search per read (outside and under the lock), never every version.
    assert searches == [f"name = '{model_name}' and tags.retention_status != 'pruned'"] * 2
    searches.clear()
    assert _prune(client, model_name, world, lock, keep=None, n=3)["pruned"] == []
    assert searches == [f"name = '{model_name}' and tags.retention_status = 'pruning'"]


def test_run_folders_under_an_s3_data_root_are_ordered_by_their_records_and_removed(s3_endpoint, monkeypatch):
    """The data root on S3 (pyarrow's S3 filesystem, as the pipeline writes its batches there)."""
    import boto3

    from cmms_pm.retention import BATCH, run_record, write_run_record

    keys = {"AWS_ACCESS_KEY_ID": "test-retention", "AWS_SECRET_ACCESS_KEY": "test-only-secret",
            "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": s3_endpoint}  # fmt: skip
    for key, value in keys.items():
        monkeypatch.setenv(key, value)
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    bucket = f"data-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    root = f"s3://{bucket}/pipeline"
    for day, name in ((3, "zz-oldest"), (5, "aa-newest"), (4, "mm-middle")):  # names sort otherwise
        folder = f"{root}/pm_training/{name}"
        write_run_record(folder, run_record(kind=BATCH, dag_id="pm_training", run_id=f"r{day}",
                                            run_after=f"2026-03-0{day}T02:00:00+00:00",
                                            data_interval_start=f"2026-03-0{day - 1}T02:00:00+00:00",
                                            data_interval_end=f"2026-03-0{day}T02:00:00+00:00"))  # fmt: skip
        s3.put_object(Bucket=bucket, Key=f"pipeline/pm_training/{name}/train.parquet", Body=b"x" * 100)

    result = ret.prune_folders(root, "pm_training", keep=1, own_run_id="r9", own_uri=f"{root}/pm_training/r9",
                               active_runs=lambda run_ids: 0)  # fmt: skip

    assert [u.rsplit("/", 1)[1] for u in result["removed"]] == ["mm-middle", "zz-oldest"]
    left = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", []))
    files = [key for key in left if not key.endswith("/")]  # pyarrow's folder markers aside
    assert files == [f"pipeline/pm_training/aa-newest/{name}" for name in ("run.json", "train.parquet")]
    assert not [key for key in left if "middle" in key or "oldest" in key]  # their markers went too
