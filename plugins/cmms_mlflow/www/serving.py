"""The champion each model's predict route answers with, kept warm in the api-server process.

A :class:`Champion` is immutable: the loaded model (trusted loading: skops, trusted types,
provenance — :func:`cmms_mlflow.tracking.model_loading.load_version`), its data contract, its version and
its decision threshold (:func:`cmms_mlflow.registry.model_registry.decision_threshold`). A request takes one
:class:`Champion` and uses it for its whole answer, so an answer never mixes two versions.

:class:`WarmChampions` swaps it when the registry moves, without a restart:

* at most every ``refresh_seconds`` (the spec's ``serving.refresh_seconds``) a thread started by
  the first request past that time (which does not wait for it) reads the registered model's
  marks — its last update (every stage change), its aliases and
  :data:`cmms_mlflow.registry.model_registry.GENERATION_TAG` (every write of this package, in any process or
  host), as the production route's cache (:mod:`cmms_mlflow.www.serving_cache`) does. Unchanged marks
  cost that one read; changed marks re-read the Production version and its threshold, and a new
  version is loaded;
* while that thread checks or loads, every request is answered by the champion in hand (old or
  new, never none and never a mix); only the very first request of a model waits for the first load;
* if MLflow cannot be reached, the champion in hand keeps answering (a warning is logged); a new
  champion that cannot be trusted, has no data contract or an invalid ``decision_threshold`` tag is
  never served: the model answers :class:`ChampionUnavailable` (503) until the registry changes again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cmms_mlflow.exceptions import MlflowPluginError

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from cmms_pm.contract import DataContract
    from cmms_pm.spec import ModelSpec

log = logging.getLogger(__name__)


class ChampionUnavailable(MlflowPluginError):
    """The model's champion cannot be served now (none yet, not trusted, no data contract)."""


@dataclass(frozen=True)
class Champion:
    """What one answer is made with: never changed once built."""

    name: str
    version: str
    run_id: str
    model: Any
    contract: DataContract
    threshold: float


@dataclass
class _Slot:
    lock: threading.Lock = field(default_factory=threading.Lock)
    champion: Champion | None = None
    mark: Hashable = None
    checked: float = float("-inf")
    error: ChampionUnavailable | None = None


def registry_mark(model: Any) -> Hashable:
    """What every registry write changes on a registered model (see the module docstring)."""
    from cmms_mlflow.registry import model_registry

    aliases = tuple(sorted((alias, str(v)) for alias, v in (model.aliases or {}).items()))
    return model.last_updated_timestamp, aliases, (model.tags or {}).get(model_registry.GENERATION_TAG)


class WarmChampions:
    """Per model name, the champion in hand, re-checked at most every ``refresh_seconds``.

    ``session()`` is a context manager yielding an ``MlflowClient`` (``MlflowHook().session``).
    """

    def __init__(self, session: Callable[[], Any], clock: Callable[[], float] = time.monotonic) -> None:
        self._session = session
        self._clock = clock
        self._slots: dict[str, _Slot] = {}
        self._slots_lock = threading.Lock()

    def get(self, spec: ModelSpec) -> Champion:
        """The champion of ``spec.registered_model`` to answer one request with."""
        name = spec.registered_model
        with self._slots_lock:
            slot = self._slots.setdefault(name, _Slot())
        refresh = float(spec.serving["refresh_seconds"])
        champion = slot.champion
        if champion is not None:
            if self._clock() - slot.checked >= refresh and slot.lock.acquire(blocking=False):
                # Checked (and a new champion loaded) beside the requests, never in one's time.
                threading.Thread(target=self._check, args=(slot, spec), daemon=True).start()
            return champion
        slot.lock.acquire()  # nothing in hand yet: wait for the request that loads it
        try:
            if slot.champion is None and slot.error is not None and self._clock() - slot.checked < refresh:
                raise slot.error
            if slot.champion is not None and self._clock() - slot.checked < refresh:
                return slot.champion  # loaded while this request waited
            return self._refresh(slot, spec)
        finally:
            slot.lock.release()

    def _check(self, slot: _Slot, spec: ModelSpec) -> None:
        """:meth:`_refresh` in a thread of its own (it holds ``slot.lock``, released here)."""
        try:
            self._refresh(slot, spec)
        except Exception:  # recorded in the slot (ChampionUnavailable) or logged by _refresh
            log.debug("Background check of %r failed", spec.registered_model, exc_info=True)
        finally:
            slot.lock.release()

    def _refresh(self, slot: _Slot, spec: ModelSpec) -> Champion:
        """Re-read the marks; load a new champion if the Production version changed (under slot.lock)."""
        from cmms_mlflow.exceptions import ModelNotFoundError, ModelValidationError, UntrustedModelError
        from cmms_mlflow.registry import model_registry
        from cmms_pm.exceptions import ContractError

        name = spec.registered_model
        started = self._clock()
        mark: Hashable = None
        try:
            with self._session() as client:
                model = model_registry.get_model(client, name)
                mark = registry_mark(model)
                if mark == slot.mark and (slot.champion is not None or slot.error is not None):
                    slot.checked = started
                    if slot.champion is None:
                        assert slot.error is not None  # one of the two is set (the test above)
                        raise slot.error
                    return slot.champion
                champion = self._build(client, spec, model, slot.champion)
        except ChampionUnavailable:
            raise
        except (ModelNotFoundError, UntrustedModelError, ModelValidationError, ContractError) as err:
            # This registry state cannot be served: not until it changes (the mark is kept).
            slot.champion, slot.mark, slot.checked = None, mark, started
            slot.error = ChampionUnavailable(f"model {name!r} cannot be served: {err}")
            log.error("%s", slot.error)
            raise slot.error from err
        except Exception as err:
            if slot.champion is None:
                raise
            slot.checked = started  # MLflow unreachable: keep answering with the champion in hand
            log.warning("Could not check the champion of %r (serving v%s): %s: %s",
                        name, slot.champion.version, type(err).__name__, err)  # fmt: skip
            return slot.champion
        if slot.champion is None or champion.version != slot.champion.version:
            log.info("Serving %r v%s (threshold %.3f)", name, champion.version, champion.threshold)
        slot.champion, slot.mark, slot.checked, slot.error = champion, mark, started, None
        return champion

    def _build(self, client: MlflowClient, spec: ModelSpec, model: Any, current: Champion | None) -> Champion:
        from cmms_mlflow.exceptions import no_production_version
        from cmms_mlflow.registry import model_registry
        from cmms_mlflow.tracking.model_loading import load_version
        from cmms_mlflow.tracking.training_run import load_contract
        from cmms_pm.exceptions import ContractError

        name = spec.registered_model
        version, _, _ = model_registry.serving_of(client, name, model)
        if version is None:
            raise no_production_version(name)
        number, run_id = str(version.version), version.run_id or ""
        threshold = model_registry.decision_threshold(version)
        if current is not None and (current.version, current.run_id) == (number, run_id):
            return Champion(name, number, run_id, current.model, current.contract, threshold)
        unverified = bool(spec.loading["allow_unverified_models"])
        loaded = load_version(client, name, number, spec_name=spec.name, allow_unverified=unverified)
        contract = load_contract(client, run_id) if run_id else None
        if contract is None:
            raise ContractError(
                f"v{number} has no data contract: the predict route serves only champions it can check "
                "rows against (retrain it with this package)"
            )
        _one_thread_per_request(loaded)
        return Champion(name, number, run_id, loaded, contract, threshold)

    def clear(self) -> None:
        with self._slots_lock:
            self._slots.clear()


def _one_thread_per_request(model: Any) -> None:
    """Requests run in parallel threads already: a forest's per-call thread pool (``n_jobs=-1``) only
    adds its start-up to every small request. Predictions are the same."""
    from cmms_pm.training import base_classifier

    classifier = base_classifier(model)
    if getattr(classifier, "n_jobs", None) not in (None, 1):
        classifier.n_jobs = 1


#: Requests up to this many rows are predicted together with the concurrent ones; larger ones alone.
COALESCE_MAX_ROWS = 100


@dataclass
class _Job:
    champion: Champion
    frame: Any
    done: threading.Event = field(default_factory=threading.Event)
    lead: bool = False
    risk: Any = None
    error: BaseException | None = None


class RiskCoalescer:
    """The risks of concurrent small requests from one ``predict_proba`` call per champion.

    A forest's cost per call is mostly per tree, not per row (100 trees: ~25 ms for 1 row, ~30 ms
    for 50), so while one call runs, the requests that arrive queue up and the next call predicts
    all of them; each gets its own rows back. One call runs at a time; the thread of the first queued
    request makes the next one (no thread of its own). A request over :data:`COALESCE_MAX_ROWS`
    rows is not queued: :meth:`risk` returns None and the request predicts alone, in its thread.
    Rows of two champions (during a swap) are never in one call.
    """

    def __init__(self, proba: Callable[[Any, Any], Any]) -> None:
        self._proba = proba
        self._lock = threading.Lock()
        self._queue: list[_Job] = []
        self._busy = False

    def risk(self, champion: Champion, frame: Any) -> Any:
        """The risks of ``frame``'s rows; None for a request too large to share a call (the caller
        predicts it alone, keeping its preprocessed rows for the reasons)."""
        if len(frame) > COALESCE_MAX_ROWS:
            return None
        job = _Job(champion, frame)
        with self._lock:
            self._queue.append(job)
            job.lead = not self._busy
            self._busy = True
        if not job.lead:
            job.done.wait()
        if job.lead:
            with self._lock:
                batch, self._queue = self._queue, []
            try:
                self._run(batch)
            finally:
                with self._lock:
                    if self._queue:  # the first waiting request makes the next call
                        following = self._queue[0]
                        following.lead = True
                        following.done.set()
                    else:
                        self._busy = False
        if job.error is not None:
            raise job.error
        return job.risk

    def _run(self, batch: list[_Job]) -> None:
        import numpy as np
        import pandas as pd

        by_champion: dict[int, list[_Job]] = {}
        for job in batch:
            by_champion.setdefault(id(job.champion), []).append(job)
        for jobs in by_champion.values():
            try:
                frames = [job.frame for job in jobs]
                frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
                risk = np.asarray(self._proba(jobs[0].champion.model, frame), dtype="float64")
                start = 0
                for job in jobs:
                    job.risk = risk[start : start + len(job.frame)]
                    start += len(job.frame)
            except Exception as err:  # each request of the call gets the error
                for job in jobs:
                    job.error = err
            for job in jobs:
                job.lead = False
                job.done.set()
