"""Helpers for the ops tests (a module of its own: several test folders have a ``conftest``)."""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OPS = ROOT / "ops" / "prometheus"


def binary(name: str) -> str:
    """Path of ``name``; skip (or fail with STREAMRANK_REQUIRE_PROMETHEUS=1) when it is absent."""
    path = shutil.which(name)
    if path:
        return path
    why = f"{name} is not on PATH (install with `bash scripts/install-prometheus.sh`: Debian package prometheus)"
    if os.environ.get("STREAMRANK_REQUIRE_PROMETHEUS") == "1":
        pytest.fail(why)
    pytest.skip(why)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
