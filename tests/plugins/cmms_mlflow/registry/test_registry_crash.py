"""A promotion killed between its two writes (stage changed, alias not moved) is repaired by the next
write path, which records the repair in the history; a retry of the killed step records it once. Its
history event, recorded as an intent before the writes, is settled by the next write; so is the event
of a promotion killed after all its registry writes but before its history was completed."""

from __future__ import annotations

import signal
import time

from registry_hosts import run_hosts, worker_logs

from cmms_mlflow.registry import history, model_registry, promotion


def _killed_promotion(tmp_path, client, mlflow_store, model_name, register):
    """v1 champion; a host promotes v2 and is SIGKILLed right after the stage change. Returns v1, v2."""
    v1, v2 = register(model_name), register(model_name)
    promotion.change_stage(
        client, name=model_name, version=v1, stage="Production", lock_dir=tmp_path / "here",
        actor="setup", reason="first", at="t0",
    )  # fmt: skip
    jobs = [{"rounds": [{"version": v2, "expected": v1}], "kill_after_stage": True}]
    _, codes = run_hosts(tmp_path / "hosts", tracking_uri=mlflow_store, name=model_name, jobs=jobs)
    assert codes == [-signal.SIGKILL], worker_logs(tmp_path / "hosts")
    stages = {str(v.version): v.current_stage for v in client.search_model_versions(f"name = '{model_name}'")}
    assert stages == {v1: "Archived", v2: "Production"}
    assert model_registry.aliases_of(client, model_name) == {"champion": v1}  # left on the archived version
    return v1, v2


def test_the_next_write_repairs_a_promotion_killed_between_stage_and_alias_and_records_it(
    tmp_path, client, mlflow_store, model_name, register, cross_host_lock
):
    v1, v2 = _killed_promotion(tmp_path, client, mlflow_store, model_name, register)
    # The killed promotion's intent is in the history; a read shows it pending.
    (intent,) = history.read(client, model_name, limit=1)
    assert (intent["type"], intent["version"], intent["status"]) == ("promotion", v2, "pending")
    # Read paths already serve the Production version and say what is wrong.
    champion, problems = model_registry.serving(client, model_name)
    assert str(champion.version) == v2
    assert (
        problems[0] == f"alias champion pointed at v{v1} (Archived): moved to v{v2}, the Production version"
    )

    v3 = register(model_name)
    started = time.monotonic()  # the killed host's advisory lock died with it: no wait
    promotion.change_stage(
        client, name=model_name, version=v3, stage="Staging", lock_dir=tmp_path / "here",
        actor="bob", reason="shadow test", at="t2",
    )  # fmt: skip
    waited = time.monotonic() - started
    print(f"the write after the SIGKILLed promotion took {waited:.2f} s, lock included")
    assert waited < 10
    assert model_registry.aliases_of(client, model_name) == {
        "champion": v2,
        "previous_champion": v1,
        "challenger": v3,
    }
    model_registry.check_invariants(client, model_name)
    staged, repair, killed, first = history.read(client, model_name, limit=10)
    assert (staged["type"], staged["version"], staged["actor"]) == ("stage_change", v3, "bob")
    assert (repair["type"], repair["champion_before"], repair["champion_after"]) == ("repair", v1, v2)
    assert repair["repairs"] == list(problems) and repair["actor"] == "bob"
    # The killed promotion happened (its stage change did): its intent is settled as done, saying so.
    assert (killed["type"], killed["version"], killed["status"], killed["changed"]) == (
        "promotion",
        v2,
        "done",
        True,
    )
    assert "stage change had taken effect" in killed["settled"] and killed["seq"] < repair["seq"]
    assert (first["type"], first["champion_after"], first["status"]) == ("promotion", v1, "done")


def test_a_retry_of_the_killed_promotion_completes_it_and_records_it_once(
    tmp_path, client, mlflow_store, model_name, register, cross_host_lock
):
    v1, v2 = _killed_promotion(tmp_path, client, mlflow_store, model_name, register)

    def retry():  # what Airflow's retry of the task does: the same request, the same history key
        return promotion.change_stage(
            client, name=model_name, version=v2, stage="Production", lock_dir=tmp_path / "here",
            actor="worker-0", reason="round 0", at="round-0", expected_champion=v1, key="w0r0",
        )  # fmt: skip

    outcome = retry()
    assert outcome["unchanged"] is True and outcome["repairs"]
    retry()
    assert model_registry.aliases_of(client, model_name) == {"champion": v2, "previous_champion": v1}
    events = history.read(client, model_name, limit=10)
    assert [(e["type"], e["changed"], e["status"]) for e in events] == [
        ("repair", True, "done"),
        ("promotion", True, "done"),
        ("promotion", True, "done"),
    ]
    # One event for the killed step and its retry: its intent, completed.
    assert events[1]["key"] == "w0r0" and events[1]["champion_after"] == v2


def test_a_promotion_killed_before_its_history_is_completed_is_settled_by_the_next_write(
    tmp_path, client, mlflow_store, model_name, register, cross_host_lock
):
    """The api-server dies between the registry writes and the history: the event is not lost."""
    v1, v2, v3 = register(model_name), register(model_name), register(model_name)
    promotion.change_stage(
        client, name=model_name, version=v1, stage="Production", lock_dir=tmp_path / "here",
        actor="setup", reason="first", at="t0",
    )  # fmt: skip
    jobs = [{"rounds": [{"version": v2, "expected": v1}], "kill_before_history_complete": True}]
    _, codes = run_hosts(tmp_path / "hosts", tracking_uri=mlflow_store, name=model_name, jobs=jobs)
    assert codes == [-signal.SIGKILL], worker_logs(tmp_path / "hosts")
    # Every registry write happened; the event is there, as an intent.
    assert model_registry.aliases_of(client, model_name) == {"champion": v2, "previous_champion": v1}
    assert client.get_model_version(model_name, v2).tags["promoted_by"] == "worker-0"
    intent = history.read(client, model_name, limit=1)[0]
    assert (intent["type"], intent["version"], intent["status"], intent["key"]) == (
        "promotion",
        v2,
        "pending",
        "w0r0",
    )
    assert client.get_run(_history_run(client, model_name, "w0r0")).info.status == "RUNNING"

    promotion.change_stage(
        client, name=model_name, version=v3, stage="Staging", lock_dir=tmp_path / "here",
        actor="bob", reason="shadow test", at="t2",
    )  # fmt: skip
    staged, settled, first = history.read(client, model_name, limit=10)
    assert (staged["type"], staged["version"], first["version"]) == ("stage_change", v3, v1)
    assert (settled["key"], settled["status"], settled["changed"]) == ("w0r0", "done", True)
    assert settled["settled"] == "completed by the next write: every write had taken effect"
    assert "expect" not in settled
    assert client.get_run(_history_run(client, model_name, "w0r0")).info.status == "FINISHED"
    model_registry.check_invariants(client, model_name)


def _history_run(client, model_name: str, key: str) -> str:
    experiment = client.get_experiment_by_name(history.experiment_name(model_name))
    (run,) = client.search_runs([experiment.experiment_id], filter_string=f"tags.history_key = '{key}'")
    return run.info.run_id
