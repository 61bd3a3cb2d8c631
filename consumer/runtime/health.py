"""The HTTP side of monitoring: ``/metrics``, ``/healthz`` and ``/readyz`` for workers and the trainer."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest

from consumer.errors import ConfigError

log = logging.getLogger("streamrank.metrics")


class MetricsServer:
    """``/metrics`` (Prometheus text format), ``/healthz`` and ``/readyz`` (200 or 503, JSON body)."""

    def __init__(
        self,
        registry: CollectorRegistry,
        port: int,
        *,
        host: str = "0.0.0.0",
        health: Callable[[], tuple[bool, dict]] | None = None,
        readiness: Callable[[], tuple[bool, dict]] | None = None,
    ):
        always: Callable[[], tuple[bool, dict]] = lambda: (True, {})  # noqa: E731
        routes = {"/healthz": health or always, "/readyz": readiness or always}

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, CONTENT_TYPE_PLAIN_0_0_4, generate_latest(registry))
                elif path in routes:
                    try:
                        ok, info = routes[path]()
                    except Exception as exc:  # noqa: BLE001 - a broken check answers "unhealthy", never kills the server
                        ok, info = False, {"error": str(exc)}
                    body = json.dumps({"ok": ok, **info}, default=str).encode()
                    self._send(200 if ok else 503, "application/json", body)
                else:
                    self._send(404, "text/plain; charset=utf-8", b"not found: try /metrics, /healthz or /readyz\n")

            def _send(self, code: int, ctype: str, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:  # scrapes every few seconds would flood the log
                pass

        try:
            self._httpd = ThreadingHTTPServer((host, port), Handler)
        except OSError as exc:
            raise ConfigError(f"cannot serve metrics on {host}:{port}: {exc}") from exc
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="metrics-http", daemon=True)
        self._thread.start()
        log.info("serving metrics", extra={"port": self.port, "paths": ["/metrics", "/healthz", "/readyz"]})

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
