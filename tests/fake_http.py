"""What the local fakes of services we don't own (Slack, Customer.io) share: a request
handler that answers JSON, or drops the connection as a flaky network would."""

import json
import socket
import sys
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class JSONHandler(BaseHTTPRequestHandler):
    content_type = "application/json"

    def answer(
        self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", self.content_type)
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def drop(self) -> None:
        """Close without answering: the caller cannot tell whether we acted."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def log_message(self, format: str, *args: Any) -> None:
        pass


class FakeServer(ThreadingHTTPServer):
    """A fake that breaks must fail the test, not look like a flaky network to the code
    under test (which would recover, and hide the fake's bug)."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(address, handler)
        self.errors: list[str] = []

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], OSError):
            return  # the client went away (a timeout, a kill): a network fault, not a bug
        self.errors.append(traceback.format_exc())

    def close(self) -> None:
        self.shutdown()
        self.server_close()
        assert not self.errors, "the fake server failed:\n" + "\n".join(self.errors)
