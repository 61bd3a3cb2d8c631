"""A tiny ``consumer.tools.bench`` run on the session broker: every figure is in the JSON, for both
transports (timings are not asserted: speed figures come from ``make bench``, never from tests)."""

from __future__ import annotations

import json

from consumer.tools.bench import figures, format_table, run_bench


def test_bench_json_has_every_figure(broker, tmp_path):
    report = run_bench(
        4000,
        1,
        tmp_path / "out",
        half_load_s=0.5,
        bootstrap=broker.bootstrap,
        partitions=2,
        transports=["kafka-python", "confluent"],
        restore_entities=500,
    )
    doc = json.loads((tmp_path / "out" / "bench.json").read_text())
    assert doc["summary"] == json.loads(json.dumps(report["summary"]))
    (run,) = doc["runs"]
    assert sorted(run["transports"]) == ["confluent", "kafka-python"]
    for tr, r in run["transports"].items():
        assert r["worker"]["consumed"] == r["passthrough"]["consumed"] == doc["world"]["events"], tr
        for kind in ("passthrough", "worker"):
            h = r[f"half_load_{kind}"]
            assert h["consumed"] == h["events"], (tr, kind)
        # Every paced activity record was traced to its output: to its copy, or to its prediction.
        hp, hw = r["half_load_passthrough"], r["half_load_worker"]
        assert hp["latency_ms"]["n"] == hp["activity_events"] > 0, tr
        assert hw["latency_ms"]["n"] == hw["predictions"] > 0, tr
    assert {tr: r["entities"] for tr, r in run["state"]["restore"].items()} == {"kafka-python": 500, "confluent": 500}
    # Same input, same model: both transports scored the same events.
    assert (
        run["transports"]["confluent"]["worker"]["predictions"]
        == run["transports"]["kafka-python"]["worker"]["predictions"]
        > 0
    )
    for label, path, _unit, _target in figures(doc["machine"]["transports"]):
        s = doc["summary"][".".join(path)]
        assert s["n"] == 1 and s["median"] is not None, label
        assert s["median"] > 0 or path[-1] in ("p50", "commit", "poll"), label  # a latency can round to 0 ms
    table = format_table(doc)
    assert "confluent: worker / passthrough" in table and "kafka-python: passthrough (ceiling)" in table
