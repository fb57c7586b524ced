"""A TCP relay in front of the throwaway PostgreSQL (tests/pg_cluster.py) that counts
stale uses: a client writing on a connection whose PostgreSQL end has already closed,
that is, a statement tried on a connection an outage broke.

When PostgreSQL closes a connection, the relay passes the close on (the client reads
PostgreSQL's last words, then the end, as it would directly) and waits: whatever the
client sends afterwards is counted once, and the connection closed. While PostgreSQL
is down, the relay accepts and at once closes: a new connection fails as a refused one
would."""

import socket
import threading
from typing import Self


class Relay:
    def __init__(self, upstream_port: int) -> None:
        self._upstream_port = upstream_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self.stale_uses = 0
        self.open_upstreams = 0  # connections PostgreSQL still holds open

    def url(self, database: str = "test") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> Self:
        threading.Thread(target=self._accept, name="pg-relay", daemon=True).start()
        return self

    def close(self) -> None:
        self._listener.close()
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(("127.0.0.1", self._upstream_port))
        except OSError:
            client.close()
            return
        with self._lock:
            self._sockets |= {client, upstream}
            self.open_upstreams += 1
        gone = threading.Event()
        threading.Thread(target=self._down, args=(upstream, client, gone), daemon=True).start()
        try:
            while data := client.recv(65536):
                if gone.is_set():
                    with self._lock:
                        self.stale_uses += 1
                    return
                upstream.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._sockets -= {client, upstream}
            client.close()
            upstream.close()

    def _down(self, upstream: socket.socket, client: socket.socket, gone: threading.Event) -> None:
        try:
            while data := upstream.recv(65536):
                client.sendall(data)
        except OSError:
            pass
        gone.set()
        with self._lock:
            self.open_upstreams -= 1
        try:
            client.shutdown(socket.SHUT_WR)
        except OSError:
            pass
