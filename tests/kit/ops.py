"""The ops tests' paths (repository root, Prometheus rules) and the Prometheus binaries they need."""

from __future__ import annotations

import os
import shutil
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
