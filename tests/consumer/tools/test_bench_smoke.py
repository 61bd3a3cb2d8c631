"""A tiny ``consumer.tools.bench`` run on the session broker: every figure is in the JSON, for both
transports, with the cost-growth and latency-vs-load phases at small sizes (timings are not
asserted: speed figures come from ``make bench``, never from tests)."""

from __future__ import annotations

import json

import pytest

from consumer.tools.bench import figures, format_table, run_bench, verdict

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


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
        growth_sizes=(50, 400),
        growth_events=1200,
        load_points=(50.0, 100.0),
        load_point_s=0.5,
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
    assert "trainer build, sample 1.0" in table and "cost growth" in table and "latency vs offered load" in table
    # Every figure with a target has its verdict, from the median (a run that measured it cannot say "-").
    for key, s in doc["summary"].items():
        assert s["verdict"] == (verdict(s["target"], s["median"]) if s["target"] else ""), key
        assert s["verdict"] in (("met", "missed") if s["target"] else ("",)), key

    # Cost growth: every size folded every activity event, over businesses spread across the population.
    g = doc["growth"]
    assert [x["businesses"] for x in g["sizes"]] == [50, 400]
    for x in g["sizes"]:
        # The warm-up (one event per business) ends at a batch's end: it may take some measured events.
        assert x["warmup_events"] + x["events"] == x["businesses"] + 1200 and x["events"] > 0, x
        assert x["warmup_events"] >= x["businesses"], x
        assert x["events_per_s"] > 0 and x["warmup_events_per_s"] > 0 and x["dead_letters"] == 0, x
        assert x["max_rss_mb"] >= x["rss_mb_at_ready"] > 0, x
    assert g["sizes"][0]["touched_businesses"] == 50 and g["sizes"][1]["touched_businesses"] > 350

    # Latency vs load: both points for both transports, each traced to its predictions, and a real PNG.
    for tr, c in doc["load_curve"].items():
        assert [p["percent"] for p in c["points"]] == [50.0, 100.0], tr
        for p in c["points"]:
            assert p["consumed"] == p["events"] and p["latency_ms"]["n"] == p["predictions"] > 0, (tr, p)
            assert p["rate_events_per_s"] == pytest.approx(p["percent"] / 100 * c["saturation_events_per_s"]), (tr, p)
    png = tmp_path / "out" / "latency_vs_load.png"
    assert doc["load_curve_chart"] == str(png)
    data = png.read_bytes()
    assert data[:8] == PNG_MAGIC and data[12:16] == b"IHDR" and len(data) > 1000


def test_verdict_reads_the_targets():
    assert verdict(">= 100k", 100_000.0) == "met" and verdict(">= 100k", 99_999.0) == "missed"
    assert verdict("< 50", 49.9) == "met" and verdict("< 50", 50.0) == "missed"
    assert verdict("<= 8", 8.0) == "met" and verdict(">= 0.65", 0.6) == "missed"
    assert verdict("", 1.0) == "" and verdict(">= 1", None) == "-"
