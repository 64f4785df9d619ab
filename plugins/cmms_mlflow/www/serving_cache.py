"""The model API's answer to "which model is in production?", read once and shared while the
registry has not moved.

Building the answer costs three MLflow reads (the registered model, every version, the champion's
run); checking that nothing moved costs one (the registered model: its aliases, its last update,
which every stage change sets, and :data:`cmms_mlflow.registry.model_registry.GENERATION_TAG`, which
every write of :mod:`cmms_mlflow.registry.model_registry` changes after its last step, in whichever
process or host). So:

* **a request never answers from a check that started before it arrived**: it joins the check in
  flight only if that one started after it, else it waits for the next. Every write that finished
  before a GET arrived is in its answer, wherever it was made — as without the cache;
* concurrent requests share one check (and, when it finds a change, one rebuild), so under load
  the registry is read a few times per second, not four times per request;
* a kept answer is rebuilt after :data:`TTL` seconds even if the check finds nothing: a change
  made outside this package (a tag or a metric edited in MLflow's UI) is seen within that time.

Errors are never kept: the requests that shared a failed check get its error, the next one reads
again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

#: Seconds a kept answer may be served while the registry's own marks say nothing moved.
TTL = 2.0


@dataclass
class _Kept:
    mark: Hashable
    value: Any
    built: float


@dataclass
class _Check:
    started: float
    done: threading.Event = field(default_factory=threading.Event)
    value: Any = None
    error: BaseException | None = None


class ReadThroughCache:
    """Per-key values rebuilt when a cheap ``mark`` of their source changes (or after ``ttl``).

    ``get(key, mark, build)``: ``mark()`` returns (the mark, a context passed on to ``build``);
    ``build(context)`` returns the value. Both run in the thread of the request that leads a check.
    """

    def __init__(self, ttl: float = TTL, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._kept: dict[Hashable, _Kept] = {}
        self._checks: dict[Hashable, _Check] = {}

    def get(
        self, key: Hashable, mark: Callable[[], tuple[Hashable, Any]], build: Callable[[Any], Any]
    ) -> Any:
        arrived = self._clock()
        while True:
            with self._lock:
                check = self._checks.get(key)
                if check is None:
                    check = self._checks[key] = _Check(started=self._clock())
                    leader = True
                else:
                    leader = False
            if leader:
                return self._lead(key, check, mark, build)
            check.done.wait()
            if check.started >= arrived:  # it read the registry after this request arrived
                if check.error is not None:
                    raise check.error
                return check.value
            # It started before this request: its answer may predate a write this request must see.

    def _lead(self, key: Hashable, check: _Check, mark, build) -> Any:
        try:
            current, context = mark()
            kept = self._kept.get(key)
            if kept is None or kept.mark != current or self._clock() - kept.built > self.ttl:
                kept = _Kept(current, build(context), check.started)
                self._kept[key] = kept
            check.value = kept.value
            return kept.value
        except BaseException as err:
            self._kept.pop(key, None)
            check.error = err
            raise
        finally:
            with self._lock:
                del self._checks[key]
            check.done.set()

    def clear(self) -> None:
        with self._lock:
            self._kept.clear()
