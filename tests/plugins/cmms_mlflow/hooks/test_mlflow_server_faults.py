"""Registry writes against a real ``mlflow server`` that loses replies, dies, or is not there.

MLflow's HTTP client retries every method, POST included, so a create whose reply is lost is
sent twice; a dead server must fail the task fast and retryably; and the hook's bounded retries
must keep a down server from eating the task's whole execution_timeout.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from airflow.sdk.exceptions import AirflowFailException
from harness import start_process, stop_processes, wait_until_ready

from cmms_mlflow.exceptions import MlflowServiceUnavailable
from cmms_mlflow.hooks.mlflow_hook import MlflowHook
from cmms_mlflow.operators import MlflowBaseOperator
from cmms_mlflow.registry import model_registry

pytestmark = pytest.mark.slow

HOST = "127.0.0.1"
CREATE_VERSION = b"POST /api/2.0/mlflow/model-versions/create"
# The DAG's execution_timeout is 20 minutes; a down server must fail a call far sooner.
FAIL_FAST_SECONDS = 60


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


class MlflowServer:
    """``mlflow server`` on loopback over one SQLite store; can be killed and restarted in place."""

    def __init__(self, root: Path, port: int) -> None:
        self.root = root
        self.port = port
        self.log_path = root / "server.log"
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self, timeout: float = 90) -> None:
        command = [
            *_mlflow_cli(),
            "server",
            "--backend-store-uri",
            f"sqlite:///{self.root / 'mlflow.db'}",
            "--artifacts-destination",
            str(self.root / "artifacts"),
            "--host",
            HOST,
            "--port",
            str(self.port),
            "--workers",
            "1",
        ]
        # MLflow 3 also starts a job runner and seven huey consumers by default, each importing
        # mlflow; the registry needs none of them, and on 2 cores they double the start time.
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        self.process = start_process(command, env=env, log=self.log_path, cwd=self.root, append=True)
        try:
            wait_until_ready(
                "mlflow server", lambda: _health(self.url) == 200, processes=[self.process], timeout=timeout
            )
        except BaseException:
            self.stop()
            raise

    def kill(self) -> None:
        """SIGKILL the whole process group (CLI, uvicorn, workers): a crash, not a shutdown."""
        self._signal_group(signal.SIGKILL)
        self.process.wait(timeout=30)
        self.process = None

    def stop(self) -> None:
        if self.process is None:
            return
        stop_processes([self.process], timeout=15)
        self.process = None

    def _signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.process.pid, sig)
        except ProcessLookupError:
            pass


def _mlflow_cli() -> list[str]:
    """The venv's ``mlflow`` script next to this interpreter, else ``python -m mlflow``."""
    script = Path(sys.executable).with_name("mlflow")
    return [str(script)] if script.exists() else [sys.executable, "-m", "mlflow"]


def _health(url: str) -> int | None:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status
    except (urllib.error.URLError, OSError):
        return None


class DroppingProxy:
    """TCP proxy on loopback that can swallow the reply to one ``model-versions/create``, or hang.

    The request still reaches the server (so the version IS created); the server's reply is
    dropped and both sockets closed, as if the network failed on the way back. While ``hang`` is
    set, it is a hung server: it accepts connections, reads what comes, and never answers.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.drop_next_create_reply = False
        self.hang = False
        self.hung_connections = 0
        self.hung_requests = 0
        self.creates_seen = 0
        self.replies_dropped = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server((HOST, 0))
        self.port = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept_loop, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def close(self) -> None:
        self._listener.close()
        for sock in self._sockets:
            _close(sock)

    def _accept_loop(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:  # listener closed
                return
            if self.hang:
                self.hung_connections += 1
                self._sockets.append(client)
                threading.Thread(target=lambda sock=client: [None for _ in iter(lambda: _recv(sock), b"")],
                                 daemon=True).start()  # fmt: skip
                continue
            try:
                upstream = socket.create_connection((HOST, self.upstream_port), timeout=10)
                upstream.settimeout(None)
            except OSError:
                _close(client)
                continue
            self._sockets += [client, upstream]
            swallow = threading.Event()
            threading.Thread(target=self._requests, args=(client, upstream, swallow), daemon=True).start()
            threading.Thread(target=self._replies, args=(upstream, client, swallow), daemon=True).start()

    def _requests(self, client: socket.socket, upstream: socket.socket, swallow: threading.Event) -> None:
        tail = b""  # a request line split across two reads is still seen
        while chunk := _recv(client):
            window = tail + chunk
            creates = window.count(CREATE_VERSION)
            tail = window[-(len(CREATE_VERSION) - 1) :]
            if creates:
                with self._lock:
                    self.creates_seen += creates
                    if self.drop_next_create_reply:
                        self.drop_next_create_reply = False
                        swallow.set()  # before forwarding: the reply cannot beat the flag
            if self.hang:  # an open keep-alive connection hangs too: the request goes nowhere
                with self._lock:
                    self.hung_requests += 1
                continue
            try:
                upstream.sendall(chunk)
            except OSError:
                break
        _close(client, upstream)

    def _replies(self, upstream: socket.socket, client: socket.socket, swallow: threading.Event) -> None:
        while chunk := _recv(upstream):
            if swallow.is_set():
                with self._lock:
                    self.replies_dropped += 1
                break
            try:
                client.sendall(chunk)
            except OSError:
                break
        _close(client, upstream)


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(65536)
    except OSError:
        return b""


def _close(*socks: socket.socket) -> None:
    for sock in socks:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        sock.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow-server")
    server = MlflowServer(root, free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def proxy(server):
    proxy = DroppingProxy(server.port)
    try:
        yield proxy
    finally:
        proxy.close()


def _point_connection_at(monkeypatch, url: str, **extra) -> None:
    conn = {"conn_type": "mlflow", "host": url, **({"extra": extra} if extra else {})}
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", json.dumps(conn))


def _direct_client(server: MlflowServer):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=server.url, registry_uri=server.url)


def _new_run(client, model_name: str):
    experiment_id = client.create_experiment(f"faults-{model_name}")
    return client.create_run(experiment_id)


def _register(client, model_name: str, run):
    return model_registry.register_version(
        client,
        name=model_name,
        source=f"{run.info.artifact_uri}/model",
        run_id=run.info.run_id,
        description="d",
        tags={},
    )


class _PromoteOperator(MlflowBaseOperator):
    """The base operator's session and error translation around one ``registry.promote``."""

    def __init__(self, *, model_name: str, version: str, lock_dir: Path, **kwargs) -> None:
        super().__init__(**kwargs)
        self.model_name = model_name
        self.version = version
        self.lock_dir = lock_dir

    def execute_mlflow(self, client, context):
        return model_registry.promote(
            client, self.model_name, self.version, expected_champion=None, lock_dir=self.lock_dir, audit={}
        )


def _staged_version_and_its_promote_task(model_name: str, lock_dir: Path):
    """A version in Staging (through the current connection), and a task that promotes it."""
    with MlflowHook().session() as client:
        run = _new_run(client, model_name)
        version = str(_register(client, model_name, run).version)
        model_registry.transition(client, model_name, version, "Staging")

    def promote_task():
        return _PromoteOperator(
            task_id="promote", model_name=model_name, version=version, lock_dir=lock_dir
        ).execute(context={})

    return version, promote_task


def test_a_lost_reply_to_model_version_create_still_leaves_one_version(
    monkeypatch, server, proxy, model_name
):
    _point_connection_at(monkeypatch, proxy.url, max_retries=3, request_timeout=10)
    with MlflowHook().session() as client:
        run = _new_run(client, model_name)
        proxy.drop_next_create_reply = True
        try:
            version = _register(client, model_name, run)
        except Exception as err:  # retries exhausted: the Airflow task retry runs it again
            print(f"first register_version failed ({type(err).__name__}: {err}); retrying")
            version = _register(client, model_name, run)

    print(f"server saw {proxy.creates_seen} model-versions/create request(s)")
    assert proxy.replies_dropped == 1, "the proxy never dropped a create reply: the test proved nothing"
    versions = _direct_client(server).search_model_versions(
        f"name = '{model_name}' and run_id = '{run.info.run_id}'"
    )
    assert [v.version for v in versions] == [version.version], (
        f"{proxy.creates_seen} creates reached the server; versions left for the run: "
        f"{sorted(int(v.version) for v in versions)}, register_version returned {version.version}"
    )


def test_a_tracking_server_killed_mid_pipeline_fails_fast_then_the_retry_succeeds(
    monkeypatch, server, model_name, tmp_path
):
    _point_connection_at(monkeypatch, server.url, max_retries=1, request_timeout=5)
    version, promote_task = _staged_version_and_its_promote_task(model_name, tmp_path / "locks")

    server.kill()
    try:
        started = time.monotonic()
        with pytest.raises(Exception) as raised:
            promote_task()
        elapsed = time.monotonic() - started
    finally:
        server.start()
    print(f"promote against a killed server failed after {elapsed:.2f} s with {raised.type.__name__}")
    assert elapsed < FAIL_FAST_SECONDS
    # Retryable (Airflow retries it), not an AirflowFailException (which would end the run).
    assert isinstance(raised.value, MlflowServiceUnavailable), raised.value
    assert not isinstance(raised.value, AirflowFailException)

    changes = promote_task()  # the Airflow retry, against the restarted server
    assert changes["version"] == version and not changes.get("unchanged")
    direct = _direct_client(server)
    model_registry.check_invariants(direct, model_name)
    assert [str(v.version) for v in model_registry.versions_in_stage(direct, model_name, "Production")] == [
        version
    ]
    assert model_registry.aliases_of(direct, model_name)[model_registry.CHAMPION] == version


def test_bounded_retries_make_a_down_server_fail_well_within_the_task_timeout(monkeypatch):
    from mlflow.environment_variables import MLFLOW_HTTP_REQUEST_MAX_RETRIES, MLFLOW_HTTP_REQUEST_TIMEOUT
    from mlflow.exceptions import MlflowException

    _point_connection_at(monkeypatch, f"http://{HOST}:{free_port()}")  # nothing listens there
    with MlflowHook().session() as client:
        # What MLflow's HTTP client reads in this session (never through os.environ).
        assert (MLFLOW_HTTP_REQUEST_MAX_RETRIES.get(), MLFLOW_HTTP_REQUEST_TIMEOUT.get()) == (3, 30)
        started = time.monotonic()
        with pytest.raises(MlflowException, match="Connection refused|Max retries"):
            client.search_experiments(max_results=1)
        elapsed = time.monotonic() - started
    print(f"search_experiments against a closed port failed after {elapsed:.2f} s")
    assert elapsed < FAIL_FAST_SECONDS
    assert not [key for key in os.environ if key.startswith("MLFLOW_HTTP_REQUEST_")]


def test_a_hung_server_fails_the_task_within_its_bound_then_the_retry_succeeds(
    monkeypatch, server, proxy, model_name, tmp_path
):
    """The server accepts connections and never answers: the task fails, retryably, in seconds."""
    timeout, retries = 2, 1
    _point_connection_at(monkeypatch, proxy.url, max_retries=retries, request_timeout=timeout)
    version, promote_task = _staged_version_and_its_promote_task(model_name, tmp_path / "locks")

    proxy.hang = True
    started = time.monotonic()
    with pytest.raises(MlflowServiceUnavailable) as raised:
        promote_task()
    elapsed = time.monotonic() - started
    print(f"promote against a hung server failed after {elapsed:.2f} s: {raised.value}")
    assert proxy.hung_connections + proxy.hung_requests >= 1, "nothing reached the hung server: no proof"
    # Each attempt waits request_timeout; MLflow adds a backoff (factor 1) and up to 1 s of jitter.
    assert timeout <= elapsed < (retries + 1) * (timeout + 2) + 2
    assert not isinstance(raised.value, AirflowFailException)  # Airflow retries it
    assert f"did not answer within {timeout} s" in str(raised.value) and proxy.url in str(raised.value)

    proxy.hang = False  # the server answers again: Airflow's retry of the task succeeds
    changes = promote_task()
    assert changes["version"] == version and not changes.get("unchanged")
    direct = _direct_client(server)
    assert [str(v.version) for v in model_registry.versions_in_stage(direct, model_name, "Production")] == [
        version
    ]
