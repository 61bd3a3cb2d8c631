"""``python -m models.sweep``: worlds parse, train end to end as ``streamrank train``, one row each."""

from __future__ import annotations

import json

import pytest

from models import sweep
from models.sweep import DEFAULT_WORLDS, WorldSpec


def test_world_specs_parse_and_cover_the_issue_grid():
    w = WorldSpec.parse("sparse:2000x365:1")
    assert (w.kind, w.businesses, w.days, w.seed, w.name) == ("sparse", 2000, 365, 1, "sparse:2000x365:1")
    assert w.config().page_view_events is False and w.config().cities == 1
    assert WorldSpec.parse("dense:200x14:3").config().page_view_events is True
    with pytest.raises(ValueError):
        WorldSpec.parse("medium:10x10:1")
    # >= 8 worlds: sizes 50..2,000, 14..365 days (plus six years), several seeds, dense and sparse
    assert len(DEFAULT_WORLDS) >= 8
    assert min(w.businesses for w in DEFAULT_WORLDS) == 50 and max(w.businesses for w in DEFAULT_WORLDS) == 2000
    assert min(w.days for w in DEFAULT_WORLDS) == 14 and any(w.days == 365 for w in DEFAULT_WORLDS)
    assert any(w.kind == "sparse" and w.days >= 6 * 365 for w in DEFAULT_WORLDS)
    assert {w.kind for w in DEFAULT_WORLDS} == {"dense", "sparse"} and len({w.seed for w in DEFAULT_WORLDS}) >= 4


def test_sweep_runs_end_to_end_on_two_tiny_worlds(tmp_path, capsys):
    out = tmp_path / "rows.json"
    argv = ["--world", "dense:40x12:1", "--world", "sparse:300x120:2", "--event-ci", "--json", str(out)]
    assert sweep.main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("world") and "lift capture" in lines[0]
    table = lines[: lines.index("")]  # the first table ends at the first blank line
    rows = [line for line in table if line.startswith(("dense:", "sparse:")) and "|" in line]
    assert [r.split()[0] for r in rows] == ["dense:40x12:1", "sparse:300x120:2"]
    if any("snapshot frame" in line for line in lines):  # the outcome carries a snapshot evaluation
        at = next(i for i, line in enumerate(lines) if line.startswith("snapshot frame ("))
        snap = [line.split()[0] for line in lines[at:] if line.startswith(("dense:", "sparse:")) and "|" in line]
        assert snap == ["dense:40x12:1", "sparse:300x120:2"]
    data = json.loads(out.read_text())
    assert [d["world"] for d in data] == ["dense:40x12:1", "sparse:300x120:2"]
    for d in data:
        assert d["error"] is None and d["events"] > 0 and d["examples"] > 0 and d["val_rows"] > 0
        assert {"model", "popularity", "random"} <= set(d["metrics"])
        assert d["promoted"] in (True, False) and d["lift_auc_ci"] is not None


def test_a_world_too_short_to_split_is_a_row_not_a_crash(capsys):
    rows = sweep.sweep([WorldSpec.parse("sparse:30x20:1")])
    assert rows[0].error
    assert "training refused" in capsys.readouterr().out
