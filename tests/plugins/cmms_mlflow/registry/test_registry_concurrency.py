"""Duplicate and concurrent registry writes against a real MLflow SQLite store.

Airflow runs tasks at least once, so register and promote may run twice for the same DAG run,
at the same time; and promotions of different runs may collide. None of it may leave two
versions for one run, 0 or 2 Production versions, or a champion alias off Production.
"""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from cmms_mlflow.exceptions import PromotionConflictError
from cmms_mlflow.registry import model_registry

ITERATIONS = 50


@pytest.fixture
def lock_dir(tmp_path):
    return tmp_path / "locks"


def _in_parallel(*calls):
    """Start every call at the same moment (barrier); return results or exceptions, in order."""
    barrier = threading.Barrier(len(calls))

    def start(call):
        barrier.wait()
        try:
            return call()
        except Exception as err:  # collected, asserted by the caller
            return err

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(start, calls))


def _production(client, name: str) -> list[str]:
    return [str(v.version) for v in model_registry.versions_in_stage(client, name, "Production")]


def test_registering_one_run_twice_sequentially_gives_one_version(client, model_name, register):
    run = client.create_run(client.create_experiment(f"c-{uuid.uuid4().hex[:8]}"))
    assert register(model_name, run) == register(model_name, run)
    assert len(client.search_model_versions(f"name = '{model_name}'")) == 1


def test_registering_one_run_twice_concurrently_gives_one_version(client, model_name, register):
    for _ in range(10):
        run = client.create_run(client.create_experiment(f"c-{uuid.uuid4().hex[:8]}"))
        first, second = _in_parallel(*(lambda run=run: register(model_name, run) for _ in range(2)))
        assert first == second, (first, second)
        versions = client.search_model_versions(f"name = '{model_name}' and run_id = '{run.info.run_id}'")
        assert [str(v.version) for v in versions] == [first]


def test_promoting_one_version_twice_promotes_it_once(client, model_name, register, lock_dir):
    run = client.create_run(client.create_experiment(f"c-{uuid.uuid4().hex[:8]}"))
    version = register(model_name, run)
    audit = {"promoted_by": "test"}

    def promote():
        return model_registry.promote(
            client, model_name, version, expected_champion=None, lock_dir=lock_dir, audit=audit
        )

    concurrent = _in_parallel(promote, promote)
    sequential = promote()
    changed = [r for r in (*concurrent, sequential) if not r.get("unchanged")]
    assert len(changed) == 1, concurrent
    assert _production(client, model_name) == [version]
    assert model_registry.aliases_of(client, model_name) == {"champion": version}


def test_concurrent_promotions_of_two_candidates_leave_exactly_one_champion(
    client, model_name, register, lock_dir
):
    experiment_id = client.create_experiment(f"c-{uuid.uuid4().hex[:8]}")
    champion = None
    winners = conflicts = 0
    for _ in range(ITERATIONS):
        a, b = (register(model_name, client.create_run(experiment_id)) for _ in range(2))
        results = _in_parallel(
            *(
                lambda v=v, seen=champion: model_registry.promote(
                    client, model_name, v, expected_champion=seen, lock_dir=lock_dir, audit={}
                )
                for v in (a, b)
            )
        )
        won = [r for r in results if isinstance(r, dict)]
        lost = [r for r in results if isinstance(r, PromotionConflictError)]
        assert len(won) == 1 and len(lost) == 1, results
        production = _production(client, model_name)
        assert production == [won[0]["version"]], production
        assert model_registry.aliases_of(client, model_name)["champion"] == production[0]
        winners, conflicts = winners + 1, conflicts + 1
        champion = production[0]
    assert (winners, conflicts) == (ITERATIONS, ITERATIONS)
