"""The real server's Slack feed through an outage: Slack refuses connections, then
answers 500, then accepts a post and drops the connection before answering — and
still every call is posted exactly once."""

import socket
import socketserver
import threading
import time
import uuid

from projections.runner import wait_until
from tests.conftest import add_member_body
from tests.fake_slack import FakeSlack
from tests.server import ADD, free_port, post, running_server, seed
from tests.test_slack_feed import key_counts


class Relay:
    """A TCP relay on a fixed port in front of the fake: while down, connections to
    the port are refused (nothing listens), as when Slack is unreachable."""

    def __init__(self, target_port: int) -> None:
        self.port = free_port()
        self._target = target_port
        self._server: socketserver.ThreadingTCPServer | None = None

    def up(self) -> None:
        target = self._target

        class Pipe(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                with socket.create_connection(("127.0.0.1", target)) as upstream:
                    pump = threading.Thread(target=_copy, args=(upstream, self.request))
                    pump.start()
                    _copy(self.request, upstream)
                    pump.join()

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", self.port), Pipe)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def down(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def _copy(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        try:
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def test_every_call_is_posted_once_through_a_slack_outage(config):
    fake = FakeSlack().start()
    relay = Relay(fake.server.server_address[1])  # type: ignore[union-attr]
    data = seed(config.database_url, people=30, communities=1)
    env = {
        "SLACK_BOT_TOKEN": "xoxb-test-token",
        "SLACK_API_URL": f"http://127.0.0.1:{relay.port}/api/",
        "OPS_SLACK_CHANNEL": "#ops-webhooks",
    }
    keys = []
    try:
        with running_server(config.database_url, env=env) as base:

            def call(person: int) -> None:
                key = f"slack-{uuid.uuid4()}"
                body = add_member_body(person, data.communities[0])
                assert post(base, ADD, body, data.token, key)[0] == 200
                keys.append(key)

            for person in data.people[:10]:  # Slack refuses connections
                call(person)
                time.sleep(0.2)
            relay.up()
            fake.faults.extend(["500", "500", "accept_drop", "500", "accept_drop"])
            for person in data.people[10:]:  # Slack fails, then recovers
                call(person)
                time.sleep(0.1)
            assert wait_until(lambda: set(keys) <= set(key_counts(fake)), 90)
            time.sleep(2)  # nothing more arrives afterwards
    finally:
        relay.down()
        fake.stop()
    counts = key_counts(fake)
    assert {key: counts[key] for key in keys} == dict.fromkeys(keys, 1)
