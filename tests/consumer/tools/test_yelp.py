"""The Yelp importer: both formats, order across files, ids, bad lines, bounded memory, the recipe."""

from __future__ import annotations

import datetime as dt
import json
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from consumer.cli import main
from consumer.errors import BadLine
from consumer.io.eventfiles import read_log
from consumer.tools.importers import sortruns, yelp_fields
from consumer.tools.importers.yelp import YelpImport, YelpImportError, find_files
from features.events import ActivityEvent, BusinessEvent
from features.state import update
from tests.kit.events import DAY

FIXTURES = Path(__file__).parent / "fixtures"
CURRENT = FIXTURES / "yelp_current"
ACADEMIC = FIXTURES / "yelp_academic"


def ms(text: str) -> int:
    """Test-side reading of a Yelp time (UTC; a bare date is 12:00), independent of the importer's."""
    fmt = "%Y-%m-%d %H:%M:%S" if " " in text else "%Y-%m-%d"
    t = dt.datetime.strptime(text, fmt).replace(tzinfo=dt.UTC)
    if " " not in text:
        t += dt.timedelta(hours=12)
    return int(t.timestamp()) * 1000


def run_import(folder, **kw):
    with YelpImport(folder, **kw) as imp:
        events = list(imp.events())
    return events, imp.report


def summary(events):
    """(kind, event_time, event_id, business_id, rating-or-is_open) per event, in order."""
    out = []
    for topic, r in events:
        last = r["rating"] if topic == "activity" else r["is_open"]
        out.append((r["kind"], r["event_time"], r["event_id"], r["business_id"], last))
    return out


def bad_lines(report):
    return {(f.name, reason): [line for line, _ in f.examples[reason]] for f in report.files for reason in f.bad}


# ------------------------------------------------------------------------------ fixtures
def test_current_format_imports_to_the_expected_events_in_order():
    events, report = run_import(CURRENT)
    first = ms("2018-06-30 20:00:00")  # the import's earliest activity (bizB's check-in)
    assert summary(events) == [
        ("CREATED", first - 1, "yelp:business:bizB:CREATED", "bizB", True),
        # bizC has no importable activity (its check-in line is bad): created at the import's start.
        ("CREATED", first - 1, "yelp:business:bizC:CREATED", "bizC", True),
        ("CHECKIN", first, f"yelp:checkin:bizB:{first}", "bizB", None),
        ("REVIEW", ms("2018-07-01 10:00:00"), "yelp:review:r2", "bizB", 2),
        ("CREATED", ms("2018-07-02 09:00:00") - 1, "yelp:business:bizA:CREATED", "bizA", True),
        ("CHECKIN", ms("2018-07-02 09:00:00"), f"yelp:checkin:bizA:{ms('2018-07-02 09:00:00')}", "bizA", None),
        ("CHECKIN", ms("2018-07-02 09:00:00"), f"yelp:checkin:bizA:{ms('2018-07-02 09:00:00')}:1", "bizA", None),
        # Closed one day after its last activity (review r2).
        ("CLOSED", ms("2018-07-01 10:00:00") + DAY, "yelp:business:bizB:CLOSED", "bizB", False),
        ("REVIEW", ms("2018-07-02 12:00:00"), "yelp:review:r9", "bizZ", 1),
        ("REVIEW", ms("2018-07-03 08:30:00"), "yelp:review:r3", "bizA", 5),  # 4.5 stars round up
        (
            "TIP",
            ms("2018-07-05 19:00:00"),
            yelp_fields.tip_event_id("u2", "bizA", ms("2018-07-05 19:00:00"), "Try the al pastor"),
            "bizA",
            None,
        ),
        ("CHECKIN", ms("2018-07-06 18:15:00"), f"yelp:checkin:bizA:{ms('2018-07-06 18:15:00')}", "bizA", None),
        ("REVIEW", ms("2018-07-07 22:09:11"), "yelp:review:r1", "bizA", 5),  # its duplicate line is dropped
    ]
    by_id = {r["event_id"]: r for _, r in events}
    a = by_id["yelp:business:bizA:CREATED"]
    assert (a["name"], a["city"], a["state"], a["categories"], a["price_range"]) == (
        "Taco Loco",
        "Phoenix",
        "AZ",
        ["Mexican", "Restaurants"],
        2,
    )
    assert (a["latitude"], a["longitude"]) == (33.45, -112.07)
    assert (
        by_id["yelp:business:bizC:CREATED"]["categories"] == []
        and by_id["yelp:business:bizC:CREATED"]["price_range"] is None
    )
    assert by_id["yelp:review:r1"]["user_id"] == "u1" and by_id["yelp:review:r1"]["search_id"] is None
    for topic, r in events:  # every record is a valid event of the contract
        (BusinessEvent if topic == "business" else ActivityEvent).from_record(r)
    assert dict(report.events) == {"CREATED": 3, "CLOSED": 1, "REVIEW": 4, "TIP": 1, "CHECKIN": 4}
    assert report.duplicates == 1
    assert (report.businesses, report.businesses_without_activity, report.businesses_without_record) == (3, 1, 1)


def test_academic_format_imports_to_the_expected_events_in_order():
    events, report = run_import(ACADEMIC)
    assert summary(events) == [
        ("CREATED", ms("2011-09-01") - 1, "yelp:business:oA:CREATED", "oA", True),
        (
            "TIP",
            ms("2011-09-01"),
            yelp_fields.tip_event_id("ou2", "oA", ms("2011-09-01"), "Ask for Dr. Old"),
            "oA",
            None,
        ),
        ("REVIEW", ms("2011-10-10"), "yelp:review:or1", "oA", 4),
        # A tip line inside the review file: old files dispatch on their "type" field.
        (
            "TIP",
            ms("2011-11-01"),
            yelp_fields.tip_event_id("ou3", "oA", ms("2011-11-01"), "A tip in the review file"),
            "oA",
            None,
        ),
        ("CREATED", ms("2012-01-05") - 1, "yelp:business:oB:CREATED", "oB", True),
        ("REVIEW", ms("2012-01-05"), "yelp:review:or2", "oB", 2),
        ("CLOSED", ms("2012-01-05") + DAY, "yelp:business:oB:CLOSED", "oB", False),
    ]
    b = {r["event_id"]: r for _, r in events}["yelp:business:oB:CREATED"]
    # No city/state fields: taken from full_address. "Price Range" is the old attribute name.
    assert (b["city"], b["state"], b["categories"], b["price_range"]) == ("Tempe", "AZ", ["Pizza", "Restaurants"], 1)
    # checkin_info has counts per hour of the week and no dates: counted, not imported.
    assert (report.checkin_records_without_time, report.checkins_without_time) == (2, 7)
    assert report.files[0].ignored == {"user": 1}


def test_bad_lines_are_reported_with_line_numbers_and_skipped():
    _, report = run_import(CURRENT)
    assert bad_lines(report) == {
        ("business.json", "duplicate business_id"): [4],
        ("business.json", "missing business_id"): [5],
        ("business.json", "broken JSON"): [6],
        ("business.json", "invalid business"): [7],  # latitude 123
        ("review.json", "bad date"): [4],  # 2019-13-45
        ("review.json", "missing review_id"): [5],
        ("review.json", "stars outside 1..5"): [6],
        ("tip.json", "date outside 2000..2100"): [2],
        ("tip.json", "not a JSON object"): [3],
        ("checkin.json", "bad date"): [3],  # one bad timestamp skips its whole line
        ("checkin.json", "missing business_id"): [4],
    }
    assert report.bad_lines == 11
    assert [f.lines for f in report.files] == [7, 9, 3, 4]
    _, old = run_import(ACADEMIC)
    assert bad_lines(old) == {
        ("yelp_academic_dataset_business.json", "bad categories"): [4],
        ("yelp_academic_dataset_business.json", "missing business_id"): [5],
        ("yelp_academic_dataset_business.json", "unknown type"): [6],
        ("yelp_academic_dataset_review.json", "bad date"): [3],  # 2011-02-30
        ("yelp_academic_dataset_review.json", "broken JSON"): [5],
        ("yelp_academic_dataset_tip.json", "missing business_id"): [2],
        ("yelp_academic_dataset_checkin.json", "check-in without date"): [3],
    }
    text = "\n".join(report.lines())
    assert "review.json: 9 lines, 3 bad" in text and "bad date: 1 at line 4" in text


def test_only_broken_lines_still_import_what_is_good(tmp_path):
    lines = ["{not json", "", json.dumps({"business_id": "b", "date": "2020-01-01 00:00:00"}), "\xff"]
    (tmp_path / "checkin.json").write_bytes("\n".join(lines).encode("utf-8") + b"\n\xff\xfe\n")
    events, report = run_import(tmp_path)
    assert [r["kind"] for _, r in events] == ["CHECKIN"]
    assert report.files[0].bad == {"broken JSON": 3}
    assert [line for line, _ in report.files[0].examples["broken JSON"]] == [1, 4, 5]


def test_reimport_yields_the_same_events(tmp_path):
    first, _ = run_import(CURRENT)
    again, _ = run_import(CURRENT, run_size=2, tmp_dir=tmp_path)
    assert first == again
    assert len({r["event_id"] for _, r in first}) == len(first)


def test_a_reimport_folded_after_the_first_counts_nothing_twice():
    events, _ = run_import(CURRENT)
    objs = [(BusinessEvent if t == "business" else ActivityEvent).from_record(r) for t, r in events]

    def fold(evs):
        states = {}
        for e in evs:
            states[e.business_id] = update(states.get(e.business_id), e)
        return {b: (list(s.totals), s.lifecycle) for b, s in states.items()}

    assert fold(objs + objs) == fold(objs)


def test_limit_reads_the_first_lines_of_each_file():
    events, report = run_import(CURRENT, limit=2)
    assert [(f.lines, f.limited) for f in report.files] == [(2, True), (2, True), (2, True), (2, True)]
    assert {r["event_id"] for _, r in events} >= {"yelp:review:r1", "yelp:review:r2"}
    assert "yelp:review:r3" not in {r["event_id"] for _, r in events}


def test_since_drops_older_activity_but_dates_businesses_from_all_of_it():
    full, _ = run_import(CURRENT)
    since = ms("2018-07-03 00:00:00")
    part, report = run_import(CURRENT, since_ms=since)
    assert [r for t, r in part if t == "business"] == [r for t, r in full if t == "business"]
    assert [r for t, r in part if t == "activity"] == [
        r for t, r in full if t == "activity" and r["event_time"] >= since
    ]
    assert report.before_since == 5


def test_missing_or_ambiguous_input_is_an_error(tmp_path):
    with pytest.raises(YelpImportError, match="no Yelp files"):
        find_files(tmp_path)
    with pytest.raises(YelpImportError, match="not a directory"):
        find_files(tmp_path / "nope")
    (tmp_path / "review.json").write_text("")
    (tmp_path / "yelp_academic_dataset_review.json").write_text("")
    with pytest.raises(YelpImportError, match="both review.json and yelp_academic_dataset_review.json"):
        find_files(tmp_path)


def test_field_rules():
    assert yelp_fields.parse_time_ms("2018-07-07 22:09:11") == ms("2018-07-07 22:09:11")
    assert yelp_fields.parse_time_ms("2011-10-10") == ms("2011-10-10")
    for bad in ("2019-13-45 10:00:00", "2019-02-29", "yesterday", 20190101, None):
        with pytest.raises(BadLine, match="bad date"):
            yelp_fields.parse_time_ms(bad)
    with pytest.raises(BadLine, match="outside"):
        yelp_fields.parse_time_ms("2100-01-01 00:00:00")
    assert [yelp_fields.rating(s) for s in (1, 1.5, 2.49, 4.5, 5.0)] == [1, 2, 2, 5, 5]
    for bad in (0.5, 5.5, True, "4", float("nan")):
        with pytest.raises(BadLine):
            yelp_fields.rating(bad)
    assert yelp_fields.categories(" Bars,  Pubs ,,") == ("Bars", "Pubs") and yelp_fields.categories(["A", "B"]) == (
        "A",
        "B",
    )
    assert (
        yelp_fields.price_range({"RestaurantsPriceRange2": "3"}) == 3
        and yelp_fields.price_range({"RestaurantsPriceRange2": "None"}) is None
    )
    assert (
        yelp_fields.is_open({"is_open": 0}) is False
        and yelp_fields.is_open({"open": True}) is True
        and yelp_fields.is_open({}) is True
    )


# ------------------------------------------------------------------ the external sort
def write_synthetic_yelp(folder: Path, businesses: int = 60, days: int = 120, seed: int = 3) -> None:
    """A current-format dataset with signal: per-business rates that drift, a few closures."""
    rng = np.random.default_rng(seed)
    start = dt.datetime(2019, 1, 1, tzinfo=dt.UTC)
    cities = [("Phoenix", "AZ"), ("Las Vegas", "NV"), ("Toronto", "ON")]
    cats = ["Restaurants", "Coffee & Tea", "Bars"]
    biz, reviews, tips, checkins = [], [], [], []
    n_review = 0
    for i in range(businesses):
        bid = f"biz{i:04d}"
        closes = i % 13 == 5
        city, state = cities[i % 3]
        biz.append(
            {
                "business_id": bid,
                "name": f"Business {i}",
                "city": city,
                "state": state,
                "latitude": 33.0 + i / 100,
                "longitude": -112.0,
                "is_open": 0 if closes else 1,
                "attributes": {"RestaurantsPriceRange2": str(1 + i % 4)},
                "categories": f"{cats[(i // 3) % 3]}, Food",
            }
        )
        base, trend = float(np.exp(rng.normal(-0.2, 0.8))), float(rng.normal(0, 1.5))
        stamps = []
        for d in range(int(days * 0.6) if closes else days):
            rate = base * np.exp(trend * (d / days - 0.5))
            for _ in range(rng.poisson(rate)):
                t = start + dt.timedelta(days=d, seconds=int(rng.integers(0, 86_400)))
                s = t.strftime("%Y-%m-%d %H:%M:%S")
                u = f"user{int(rng.integers(0, 500))}"
                kind = rng.random()
                if kind < 0.4:
                    n_review += 1
                    reviews.append(
                        {
                            "review_id": f"rev{n_review}",
                            "user_id": u,
                            "business_id": bid,
                            "stars": float(rng.integers(1, 6)),
                            "text": "...",
                            "date": s,
                        }
                    )
                elif kind < 0.6:
                    tips.append({"user_id": u, "business_id": bid, "text": f"tip {len(tips)}", "date": s})
                else:
                    stamps.append(s)
        if stamps:
            checkins.append({"business_id": bid, "date": ", ".join(stamps)})
    # Yelp's files are not in date order: neither are these.
    order = rng.permutation(len(reviews))
    for name, rows in (
        ("business", biz),
        ("review", [reviews[j] for j in order]),
        ("tip", tips),
        ("checkin", checkins),
    ):
        (folder / f"{name}.json").write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    folder = tmp_path_factory.mktemp("yelp_synthetic")
    write_synthetic_yelp(folder)
    return folder


def test_spilled_runs_merge_in_order_and_equal_the_in_memory_sort(synthetic, monkeypatch, tmp_path):
    whole, one = run_import(synthetic, run_size=10**9)
    assert one.runs == 1
    monkeypatch.setattr(sortruns, "MAX_FANIN", 4)  # forces merge rounds, as more than 64 runs would
    monkeypatch.setattr(sortruns, "CHUNK", 64)
    spilled, many = run_import(synthetic, run_size=500, tmp_dir=tmp_path)
    assert many.runs > 4 * 4
    assert spilled == whole and len(whole) > 5000
    keys = [(r["event_time"], 0 if t == "business" else 1, r["event_id"]) for t, r in spilled]
    assert keys == sorted(keys)
    assert list(tmp_path.iterdir()) == []  # the temp folder is gone


def test_memory_stays_flat_as_the_input_grows(tmp_path, monkeypatch):
    """Peak Python allocation for 4x the lines stays about the same: runs of ``run_size`` bound
    the read, ``MAX_FANIN`` readers of ``CHUNK`` items bound the merge (both sizes need rounds)."""
    monkeypatch.setattr(sortruns, "CHUNK", 256)
    monkeypatch.setattr(sortruns, "MAX_FANIN", 8)

    def peak(n_lines: int) -> int:
        folder = tmp_path / f"n{n_lines}"
        folder.mkdir()
        with open(folder / "review.json", "w") as f:
            for i in range(n_lines):
                day = (i * 7919) % 3000  # scattered over ~8 years, not in order
                f.write(
                    json.dumps(
                        {
                            "review_id": f"r{i}",
                            "user_id": f"u{i % 97}",
                            "business_id": f"b{i % 20}",
                            "stars": 1 + i % 5,
                            "text": "x" * 200,
                            "date": (dt.datetime(2010, 1, 1) + dt.timedelta(days=day, seconds=i % 86_400)).strftime(
                                "%Y-%m-%d %H:%M:%S"
                            ),
                        }
                    )
                    + "\n"
                )
        tracemalloc.start()
        try:
            with YelpImport(folder, run_size=500) as imp:
                n = sum(1 for _ in imp.events())
            assert n == n_lines
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    peak(500)  # first-use allocations (decoder caches, imports) must not inflate the baseline
    small, large = peak(5_000), peak(20_000)
    assert large < 1.3 * small, (small, large)


# ---------------------------------------------------------------------- the recipe, end to end
def test_recipe_imports_and_trains_with_the_yelp_label(synthetic, tmp_path, monkeypatch, capsys):
    from models.registry import ModelRegistry

    # The flags must win over the environment's label settings.
    monkeypatch.setenv("STREAMRANK_CONVERSION_KINDS", "CALL")
    monkeypatch.setenv("STREAMRANK_HORIZON_MS", "3600000")
    out = tmp_path / "yelp.avro"
    assert main(["import-yelp", str(synthetic), "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "bad lines: 0" in printed
    n_events = sum(1 for _ in read_log(out))
    registry = tmp_path / "registry"
    rc = main(
        [
            "train",
            "--from-file",
            str(out),
            "--conversion-kinds",
            "REVIEW,TIP,CHECKIN",
            "--horizon",
            "30d",
            "--registry",
            str(registry),
            "--sample-rate",
            "1",
            "--validation-days",
            "7",
        ]
    )
    printed = capsys.readouterr().out
    assert rc == 0, printed
    versions = ModelRegistry(registry).list_versions()
    assert len(versions) == 1 and f"model {versions[0]}" in printed
    meta = ModelRegistry(registry).metadata(versions[0])
    assert meta["data"]["label"] == {"kinds": ["REVIEW", "TIP", "CHECKIN"], "horizon_ms": 30 * DAY}
    assert meta["data"]["build"]["records"] == n_events
    assert meta["data"]["split"]["gap_ms"] >= 30 * DAY
    assert meta["metrics"]["model"]["capture"] is not None


def test_command_reports_progress_with_rate_and_bad_lines(tmp_path, capsys):
    assert main(["import-yelp", str(CURRENT), "--out", str(tmp_path / "e.avro")]) == 0
    captured = capsys.readouterr()
    bars = captured.err.splitlines()  # not a terminal: one line per update, the last at 100%
    for name in ("business.json", "review.json", "tip.json", "checkin.json", "merge"):
        last = [b for b in bars if b.startswith(name + " [")][-1]
        assert "100.0%" in last and ("lines/s" in last or "events/s" in last)
    assert "imported 13 events from 23 lines of 4 files" in captured.out
    assert "missing review_id: 1 at line 5" in captured.out and "bad lines: 11" in captured.out


def test_train_refuses_unknown_conversion_kinds(tmp_path, capsys):
    out = tmp_path / "events.avro"
    assert main(["import-yelp", str(CURRENT), "--out", str(out), "--quiet"]) == 0
    rc = main(
        ["train", "--from-file", str(out), "--conversion-kinds", "REVIEW,STARS", "--registry", str(tmp_path / "r")]
    )
    assert rc == 1
    assert "conversion kinds 'REVIEW,STARS'" in capsys.readouterr().err


# --------------------------------------------------------------------------- the broker
@pytest.mark.broker
def test_import_onto_topics_and_read_back(kafka_config):
    from consumer.cli import build_parser
    from consumer.io.inputlog import read_input_log

    expected, _ = run_import(CURRENT)
    args = build_parser().parse_args(["import-yelp", str(CURRENT), "--quiet"])
    for _ in range(2):  # the second import re-sends the same events
        assert args.func(args, kafka_config) == 0
    got = list(read_input_log(kafka_config, idle_timeout_s=10))
    assert len(got) == 2 * len(expected)
    assert {r.event.event_id for r in got} == {r["event_id"] for _, r in expected}
    as_sent = {
        (
            ("business" if type(r.event) is BusinessEvent else "activity"),
            json.dumps(r.event.to_record(), sort_keys=True),
        )
        for r in got
    }
    assert as_sent == {(t, json.dumps(r, sort_keys=True)) for t, r in expected}
    # Within each topic-partition, each import is in event-time order.
    by_tp: dict = {}
    for r in got:
        by_tp.setdefault((r.rank, r.partition), []).append((r.offset, r.event.event_time))
    for recs in by_tp.values():
        times = [t for _, t in sorted(recs)]
        half = len(times) // 2
        assert (
            times[:half] == sorted(times[:half])
            and times[half:] == sorted(times[half:])
            and times[:half] == times[half:]
        )
