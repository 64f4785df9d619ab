"""Real servers on 127.0.0.1 that receive notifications: an SMTP server (aiosmtpd) with a login,
and an HTTP server (http.server in a thread) that records every request.

Session fixtures in tests/conftest.py start one of each; tests read what arrived with
``wait_for`` and :func:`leaks`, which searches every message, decoded, for a secret.
"""

from __future__ import annotations

import email
import email.policy
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Mail:
    """One message as the SMTP server received it: envelope, raw bytes and the decoded text parts."""

    mail_from: str
    rcpt_tos: list[str]
    raw: bytes
    subject: str
    text: str  # every text part, transfer-decoded (base64/quoted-printable undone)

    @classmethod
    def parse(cls, mail_from: str, rcpt_tos: list[str], raw: bytes) -> Mail:
        message = email.message_from_bytes(raw, policy=email.policy.default)
        parts = [part.get_content() for part in message.walk() if part.get_content_maintype() == "text"]
        return cls(mail_from, list(rcpt_tos), raw, str(message["Subject"] or ""), "\n".join(parts))

    def everything(self) -> str:
        """What a reader can see: headers, raw body and decoded parts."""
        return self.raw.decode("utf-8", "replace") + "\n" + self.subject + "\n" + self.text


class SmtpServer:
    """aiosmtpd on 127.0.0.1:<port>, plain SMTP with AUTH (LOGIN/PLAIN) allowed without TLS (loopback)."""

    def __init__(self, *, login: str, password: str) -> None:
        self.login, self.password = login, password
        self.messages: list[Mail] = []
        self.logins: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._controller: Any = None
        self.port = 0

    def start(self) -> SmtpServer:
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult, LoginPassword

        server = self

        class Handler:
            async def handle_DATA(self, smtp, session, envelope):  # noqa: N802 (aiosmtpd's hook name)
                mail = Mail.parse(envelope.mail_from, envelope.rcpt_tos, envelope.original_content)
                with server._lock:
                    server.messages.append(mail)
                return "250 Message accepted for delivery"

        def authenticator(smtp, session, envelope, mechanism, auth_data):
            if not isinstance(auth_data, LoginPassword):
                return AuthResult(success=False, handled=False)
            login, password = auth_data.login.decode(), auth_data.password.decode()
            with server._lock:
                server.logins.append((login, password))
            return AuthResult(success=(login, password) == (server.login, server.password))

        from support import free_port

        self.port = free_port()
        self._controller = Controller(
            Handler(),
            hostname="127.0.0.1",
            port=self.port,
            authenticator=authenticator,
            auth_required=True,
            auth_require_tls=False,
        )
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()

    def clear(self) -> None:
        with self._lock:
            self.messages.clear()
            self.logins.clear()

    def wait_for(self, count: int, timeout: float = 20) -> list[Mail]:
        return _wait(lambda: list(self.messages), count, timeout, "mails")


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    port: int

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class HttpReceiver:
    """A ThreadingHTTPServer on 127.0.0.1 that records requests and answers from ``routes``.

    ``routes[path] = (status, headers)``; unknown paths get 200. A path in ``hang`` is never
    answered (until the server stops), for timeout tests.
    """

    requests: list[Request] = field(default_factory=list)
    routes: dict[str, tuple[int, dict[str, str]]] = field(default_factory=dict)
    hang: set[str] = field(default_factory=set)
    port: int = 0
    _server: Any = None
    _release: threading.Event = field(default_factory=threading.Event)

    def start(self) -> HttpReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's hook name)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                receiver.requests.append(
                    Request("POST", self.path, dict(self.headers.items()), body, receiver.port)
                )
                if self.path in receiver.hang:
                    receiver._release.wait(60)
                    return
                status, headers = receiver.routes.get(self.path, (200, {}))
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args):  # keep test output quiet
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self._release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def clear(self) -> None:
        self.requests.clear()
        self.routes.clear()
        self.hang.clear()

    def wait_for(self, count: int, timeout: float = 20) -> list[Request]:
        return _wait(lambda: list(self.requests), count, timeout, "webhook requests")


def _wait(read, count: int, timeout: float, what: str) -> list:
    deadline = time.monotonic() + timeout
    while True:
        found = read()
        if len(found) >= count or time.monotonic() > deadline:
            assert len(found) >= count, f"expected {count} {what}, got {len(found)}: {found!r}"[:3000]
            return found
        time.sleep(0.1)


def leaks(secret: str, *, mails: list[Mail] = (), requests: list[Request] = ()) -> list[str]:
    """Where ``secret`` appears in what a reader of the messages sees: every mail (headers, raw and
    decoded body) and every webhook body. Request headers are not a message: the bearer token
    belongs in ``Authorization``."""
    found = [f"mail {m.subject!r}" for m in mails if secret in m.everything()]
    found += [f"webhook body {r.path}" for r in requests if secret in r.body.decode("utf-8", "replace")]
    return found
