"""Reliability suite: fault injection on the real broker, one accounting invariant after each scenario.

Every test prints a one-line tally (``RELIABILITY <scenario> {...}``) and appends it to
``reliability-tallies.json`` in the session's pytest tmp dir; ``pytest -m reliability -rA`` shows them
in the summary too (they are pytest user properties).
"""

import json

import pytest


@pytest.fixture
def cfg(kafka_config, registry_copy):
    return kafka_config.with_overrides(registry_dir=str(registry_copy), batch_size=50)


@pytest.fixture
def tally(request, tmp_path_factory):
    """``tally(name, **figures)``: print the scenario's figures and keep them for the session file."""
    path = tmp_path_factory.getbasetemp() / "reliability-tallies.json"

    def record(name: str, **figures):
        line = json.dumps(figures, sort_keys=True, default=str)
        print(f"RELIABILITY {name} {line}")
        request.node.user_properties.append((name, line))
        doc = json.loads(path.read_text()) if path.exists() else {}
        doc[name] = figures
        path.write_text(json.dumps(doc, indent=1, sort_keys=True, default=str))

    return record


def pytest_terminal_summary(terminalreporter):
    lines = [
        f"{name} {value}"
        for rep in terminalreporter.stats.get("passed", []) + terminalreporter.stats.get("failed", [])
        for name, value in getattr(rep, "user_properties", [])
        if str(value).startswith("{")
    ]
    if lines:
        terminalreporter.section("reliability tallies")
        for line in lines:
            terminalreporter.write_line(line)
