"""The model API keeps its production answer only while the registry has not moved.

Unit tests of :class:`cmms_mlflow.www.serving_cache.ReadThroughCache` (a request never answers from a
check that started before it arrived; concurrent requests share one; errors are not kept), then
the route against a real MLflow store, with the writes made by another process, as a promotion
on a worker host would be.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from cmms_mlflow.registry import model_registry, promotion
from cmms_mlflow.www.serving_cache import ReadThroughCache


class Source:
    """A fake registry: ``mark()`` counts its reads and can be held at a gate."""

    def __init__(self) -> None:
        self.mark_value = "m1"
        self.reads = 0
        self.builds = 0
        self.gates: list[threading.Event] = []

    def mark(self):
        self.reads += 1
        value, read = self.mark_value, self.reads
        if self.gates:
            self.gates.pop(0).wait(10)
        return value, (value, read)

    def build(self, context):
        self.builds += 1
        return "{} (read {})".format(*context)


def test_a_kept_answer_is_served_until_the_mark_changes_or_the_ttl_passes():
    now = [0.0]
    cache, source = ReadThroughCache(ttl=2.0, clock=lambda: now[0]), Source()
    assert cache.get("m", source.mark, source.build) == "m1 (read 1)"
    now[0] = 1.0
    assert cache.get("m", source.mark, source.build) == "m1 (read 1)"  # checked, not rebuilt
    assert (source.reads, source.builds) == (2, 1)
    source.mark_value = "m2"
    assert cache.get("m", source.mark, source.build) == "m2 (read 3)"
    now[0] = 3.5
    assert cache.get("m", source.mark, source.build) == "m2 (read 4)"  # same mark, past the TTL
    assert (source.reads, source.builds) == (4, 3)


def _in_thread(fn, results, index):
    thread = threading.Thread(target=lambda: results.__setitem__(index, fn()), daemon=True)
    thread.start()
    return thread


def test_a_request_never_answers_from_a_check_that_started_before_it_arrived():
    cache, source = ReadThroughCache(), Source()
    first_gate = threading.Event()
    source.gates.append(first_gate)
    results = [None, None]
    first = _in_thread(lambda: cache.get("m", source.mark, source.build), results, 0)
    while source.reads < 1:  # the first check is reading the registry (held at the gate)
        time.sleep(0.01)
    source.mark_value = "m2"  # a write finishes while it reads: the old read may have missed it
    second = _in_thread(lambda: cache.get("m", source.mark, source.build), results, 1)
    time.sleep(0.2)
    first_gate.set()
    first.join(10)
    second.join(10)
    assert results[1] == "m2 (read 2)"  # its own check, started after it arrived
    assert source.reads == 2


def test_requests_that_arrive_while_a_check_runs_share_the_next_one():
    cache, source = ReadThroughCache(), Source()
    gates = [threading.Event(), threading.Event()]
    source.gates.extend(gates)
    results = [None] * 6
    threads = [_in_thread(lambda: cache.get("m", source.mark, source.build), results, 0)]
    while source.reads < 1:
        time.sleep(0.01)
    get = lambda: cache.get("m", source.mark, source.build)  # noqa: E731
    threads += [_in_thread(get, results, i) for i in range(1, 6)]
    time.sleep(0.5)  # the five wait for the first check to end
    gates[0].set()
    while source.reads < 2:  # one of them leads the next check; the other four join it
        time.sleep(0.01)
    time.sleep(0.5)
    gates[1].set()
    for thread in threads:
        thread.join(10)
    assert source.reads == 2
    assert results[1:] == ["m1 (read 1)"] * 5  # built once (read 1), confirmed by read 2


def test_errors_are_shared_with_the_requests_waiting_but_never_kept():
    cache = ReadThroughCache()

    def failing():
        raise LookupError("registry down")

    with pytest.raises(LookupError):
        cache.get("m", failing, lambda _: "never")
    source = Source()
    assert cache.get("m", source.mark, source.build) == "m1 (read 1)"


# --- the route, a real MLflow store, writes from another process -----------------------------


@pytest.fixture
def production(mlflow_conn, monkeypatch):
    """``production(name)``: the route's answer (its function, past Airflow's auth), and how many
    times it rebuilt it from the registry."""
    from cmms_mlflow.www import routes

    builds = []
    build = routes._production_answer

    def counting(client, name, model):
        builds.append(name)
        return build(client, name, model)

    monkeypatch.setattr(routes, "_production_answer", counting)

    def get(name):
        return routes.get_production_model(name)

    def fresh(name):
        """The answer built without the cache (what the route answered before it had one)."""
        with routes._mlflow(name) as client:
            _, model = routes._registry_mark(client, name)
            return json.loads(json.dumps(build(client, name, model), default=list))

    get.builds, get.fresh = builds, fresh
    return get


def _in_another_process(mlflow_store: str, lock_dir, code: str) -> None:
    """Run ``code`` (with ``client``, ``model_registry``, ``promotion`` and ``lock_dir`` defined) in a new
    Python process on the same store, like a worker on another host."""
    script = textwrap.dedent(
        f"""
        from pathlib import Path
        from mlflow import MlflowClient
        from cmms_mlflow.registry import model_registry, promotion
        client = MlflowClient(tracking_uri={mlflow_store!r}, registry_uri={mlflow_store!r})
        lock_dir = Path({str(lock_dir)!r})
        """
    ) + textwrap.dedent(code)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_CONN_", "MLFLOW_"))}
    subprocess.run([sys.executable, "-c", script], env=env, check=True, timeout=300)


def _promote(client, name, version, lock_dir, who="setup"):
    return promotion.change_stage(
        client, name=name, version=version, stage="Production", lock_dir=lock_dir,
        actor=who, reason=f"promoted by {who}", at="t0", key=f"k{who}{version}",
    )  # fmt: skip


def test_a_promotion_by_another_process_is_in_the_next_answer(
    production, client, mlflow_store, model_name, register, tmp_path
):
    first, second = register(model_name), register(model_name)
    _promote(client, model_name, first, tmp_path / "api-host")
    assert production(model_name)["version"] == first
    assert production(model_name) == production.fresh(model_name)
    assert production.builds == [model_name]  # the second answer was kept, after one check

    _in_another_process(
        mlflow_store,
        tmp_path / "worker-host",
        f"""
        promotion.change_stage(
            client, name={model_name!r}, version={second!r}, stage="Production", lock_dir=lock_dir,
            actor="worker", reason="better F1", at="t1", key="worker1",
        )
        """,
    )
    answer = production(model_name)
    assert (answer["version"], answer["promotedBy"], answer["replacedVersion"]) == (second, "worker", first)
    assert answer["aliases"] == ["champion"] and answer["warnings"] == []
    assert answer == production.fresh(model_name)


def test_tags_written_on_the_champion_by_another_process_are_in_the_next_answer(
    production, client, mlflow_store, model_name, register, tmp_path
):
    version = register(model_name)
    _promote(client, model_name, version, tmp_path / "api-host")
    assert "validation_f1" not in production(model_name)["validation"]
    _in_another_process(
        mlflow_store,
        tmp_path / "worker-host",
        f"model_registry.set_tags(client, {model_name!r}, {version!r}, {{'validation_f1': '0.93'}})",
    )
    assert production(model_name)["validation"]["validation_f1"] == "0.93"


def test_a_stage_change_made_by_hand_outside_the_package_is_reported_with_its_warning(
    production, client, model_name, register, tmp_path
):
    """No generation mark then: the model's own last update (set by every stage change) or, at worst,
    the TTL makes the route read again; it still never reports an archived version."""
    from cmms_mlflow.www.serving_cache import TTL

    first, second = register(model_name), register(model_name)
    _promote(client, model_name, first, tmp_path / "api-host")
    _promote(client, model_name, second, tmp_path / "api-host")
    assert production(model_name)["version"] == second
    model_registry._set_stage(
        client, model_name, first, "Production", archive=True
    )  # by hand: alias stays on 2
    deadline = time.monotonic() + TTL + 5
    answer = production(model_name)
    while answer["version"] != first and time.monotonic() < deadline:
        time.sleep(0.2)
        answer = production(model_name)
    assert answer["version"] == first and answer["stage"] == "Production"
    assert answer["aliases"] == ["previous_champion"]
    assert answer["warnings"], answer  # the champion alias names an archived version
    assert answer == production.fresh(model_name)


def test_every_write_of_the_registry_renews_the_generation_mark(client, model_name, register, tmp_path):
    version = register(model_name)

    def generation():
        return client.get_registered_model(model_name).tags.get(model_registry.GENERATION_TAG)

    before = generation()
    _promote(client, model_name, version, tmp_path / "locks")
    after_promotion = generation()
    model_registry.set_tags(client, model_name, version, {"note": "x"})
    assert len({before, after_promotion, generation()}) == 3
