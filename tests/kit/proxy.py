"""A TCP forwarder the test controls: ``cut()`` makes the broker unreachable, ``restore()`` brings it back.

The broker advertises the proxy's port, so every client connection (bootstrap and the ones metadata
points to) goes through here. While cut, existing connections are closed and new ones are either
refused at once (``mode="refuse"``: accepted and closed) or blackholed (``mode="blackhole"``:
accepted and never answered, so the client waits out its request timeout).
"""

from __future__ import annotations

import socket
import threading


class TcpProxy:
    def __init__(self, target_port: int, listen_port: int = 0, host: str = "127.0.0.1"):
        self.target = (host, target_port)
        self._srv = socket.socket()
        self._srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._srv.bind((host, listen_port))
        self._srv.listen(128)
        self.port = self._srv.getsockname()[1]
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._cut: str | None = None
        self._closed = False
        self.accepted = 0
        self.rejected = 0
        threading.Thread(target=self._accept_loop, name="proxy-accept", daemon=True).start()

    # ---------------------------------------------------------------- control
    def cut(self, mode: str = "refuse") -> None:
        assert mode in ("refuse", "blackhole")
        with self._lock:
            self._cut = mode
            conns, self._conns = self._conns, set()
        for s in conns:
            _close(s)

    def restore(self) -> None:
        with self._lock:
            self._cut = None
            conns, self._conns = self._conns, set()  # blackholed connections: the clients reconnect
        for s in conns:
            _close(s)

    def close(self) -> None:
        self._closed = True
        self.cut()
        _close(self._srv)

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- forwarding
    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                client, _ = self._srv.accept()
            except OSError:
                return
            with self._lock:
                mode = self._cut
                if mode == "blackhole":
                    self._conns.add(client)
                    self.rejected += 1
                    continue
            if mode == "refuse":
                self.rejected += 1
                _close(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                _close(client)
                continue
            with self._lock:
                if self._cut is not None:  # cut while connecting
                    _close(client)
                    _close(upstream)
                    continue
                self._conns.update((client, upstream))
                self.accepted += 1
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            _close(src)
            _close(dst)
            with self._lock:
                self._conns.discard(src)
                self._conns.discard(dst)


def _close(s: socket.socket) -> None:
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        s.close()
    except OSError:
        pass
