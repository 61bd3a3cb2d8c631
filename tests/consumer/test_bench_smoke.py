"""A tiny ``consumer.bench`` run on the session broker: every figure is in the JSON (timings are
not asserted: speed figures come from ``make bench``, never from tests)."""

from __future__ import annotations

import json

from consumer.bench import FIGURES, format_table, run_bench


def test_bench_json_has_every_figure(broker, tmp_path):
    report = run_bench(4000, 1, tmp_path / "out", half_load_s=0.5, bootstrap=broker.bootstrap, partitions=2)
    doc = json.loads((tmp_path / "out" / "bench.json").read_text())
    assert doc["summary"] == json.loads(json.dumps(report["summary"]))
    (run,) = doc["runs"]
    # The worker saw every input event, and its predictions could be traced back to their inputs.
    assert run["worker"]["consumed"] == run["passthrough"]["consumed"] == doc["world"]["events"]
    assert run["worker"]["predictions"] > 0 and run["worker"]["latency_ms"]["n"] == run["worker"]["predictions"]
    assert run["half_load"]["consumed"] == run["half_load"]["events"]
    for label, path, _unit, _target in FIGURES:
        s = doc["summary"][".".join(path)]
        assert s["n"] == 1 and s["median"] is not None, label
        assert s["median"] > 0 or path[-1] in ("p50", "commit", "poll"), label  # a latency can round to 0 ms
    table = format_table(doc)
    assert "worker / passthrough" in table and "passthrough (ceiling)" in table
