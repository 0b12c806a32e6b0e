"""The tests' own OpenAI-compatible endpoint: a stdlib HTTP server on 127.0.0.1 that answers
/v1/chat/completions from a canned question -> SQL table (and /v1/models). Not sqltune's server."""

from __future__ import annotations

import json
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class CannedServer:
    """``answers`` maps a question to the assistant's reply; unknown questions get ``default``.

    ``fail(question, attempt)`` (attempt: 1 for the first request for that question) returns an HTTP status
    to fail that request with, or None to answer it: a flaky endpoint, request by request.
    """

    def __init__(self, answers: dict[str, str], *, token: str | None = None, default: str = "SELECT 1",
                 fail=None):
        self.answers = answers
        self.token = token
        self.default = default
        self.fail = fail
        self.requests: list[dict] = []
        self.attempts: dict[str, int] = {}
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def _send(self, code: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _authorized(self) -> bool:
                if server.token is None:
                    return True
                return self.headers.get("Authorization") == f"Bearer {server.token}"

            def do_GET(self):  # noqa: N802
                if not self._authorized():
                    return self._send(401, {"error": {"message": "bad token"}})
                if self.path == "/v1/models":
                    return self._send(200, {"object": "list", "data": [{"id": "canned", "object": "model"}]})
                return self._send(404, {"error": {"message": "not found"}})

            def do_POST(self):  # noqa: N802
                if not self._authorized():
                    return self._send(401, {"error": {"message": "bad token"}})
                if self.path != "/v1/chat/completions":
                    return self._send(404, {"error": {"message": "not found"}})
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
                server.requests.append(body)
                user = next(m["content"] for m in body["messages"] if m["role"] == "user")
                match = re.search(r"Question: (.*)\Z", user, re.S)
                question = match.group(1).strip() if match else ""
                with server.lock:
                    server.attempts[question] = attempt = server.attempts.get(question, 0) + 1
                status = server.fail(question, attempt) if server.fail is not None else None
                if status is not None:
                    return self._send(status, {"error": {"message": f"canned failure {status}"}})
                reply = server.answers.get(question, server.default)
                return self._send(200, {
                    "id": "cmpl-test", "object": "chat.completion", "model": body.get("model"),
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": reply}}],
                    "usage": {"prompt_tokens": len(user.split()), "completion_tokens": len(reply.split()),
                              "total_tokens": len(user.split()) + len(reply.split())},
                })

        self.httpd = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "CannedServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
