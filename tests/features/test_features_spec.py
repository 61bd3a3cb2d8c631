"""FeatureSpec: names, version identity, round trip through a model's metadata, validation."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import features.spec as spec_mod
from features.errors import SpecError
from features.spec import DAY_MS, DEFAULT_SPEC, HOUR_MS, FeatureSpec, window_label

REPO = Path(__file__).resolve().parents[2]

# One changed value per parameter; the test below fails if a new parameter is not listed here.
CHANGED = {
    "windows_ms": (DAY_MS, 7 * DAY_MS, 30 * DAY_MS),
    "allowed_lateness_ms": 2 * HOUR_MS,
    "fine_bucket_ms": 30 * 60_000,
    "coarse_bucket_ms": 12 * HOUR_MS,
    "fine_horizon_ms": 2 * DAY_MS,
    "city_buckets": 2048,
    "category_buckets": 512,
    "distinct_slots": 512,
    "rate_prior_a": 2.0,
    "rate_prior_b": 8.0,
    "half_lives_ms": (3 * DAY_MS, 30 * DAY_MS),
}


def test_default_names_are_unique_and_cover_every_family():
    names = DEFAULT_SPEC.names
    assert len(names) == len(set(names)) == 80
    assert names[:3] == ("count_page_view_1d", "count_page_view_7d", "count_page_view_28d")
    for expected in (
        "uniq_users_28d",
        "rate_bizsite_1d",
        "rate_call_7d",
        "hours_since_checkin",
        "hours_since_first_review",
        "count_tip_all",
        "decayed_review_7d",
        "decayed_checkin_365d",
        "page_view_interval_mean_h",
        "review_count",
        "rating_mean",
        "is_open",
        "price_range",
        "city_bucket",
        "category_bucket",
        "age_days",
    ):
        assert expected in names


def test_window_labels():
    assert [window_label(x) for x in (DAY_MS, 7 * DAY_MS, 6 * HOUR_MS, 90_000, 1500)] == [
        "1d",
        "7d",
        "6h",
        "90s",
        "1500ms",
    ]


def test_version_is_short_hex_and_deterministic():
    v = DEFAULT_SPEC.version
    assert len(v) == 12 and int(v, 16) >= 0
    assert FeatureSpec().version == v
    assert FeatureSpec() == DEFAULT_SPEC and hash(FeatureSpec()) == hash(DEFAULT_SPEC)


def test_every_parameter_is_covered_by_this_test():
    assert set(CHANGED) == {f.name for f in dataclasses.fields(FeatureSpec)}


@pytest.mark.parametrize("field", sorted(CHANGED))
def test_version_changes_with_each_parameter(field):
    changed = dataclasses.replace(DEFAULT_SPEC, **{field: CHANGED[field]})
    assert changed.version != DEFAULT_SPEC.version
    assert dataclasses.replace(changed, **{field: getattr(DEFAULT_SPEC, field)}).version == DEFAULT_SPEC.version


def test_version_changes_with_code_revision(monkeypatch):
    before = FeatureSpec().version
    monkeypatch.setattr(spec_mod, "FEATURE_CODE_REVISION", spec_mod.FEATURE_CODE_REVISION + 1)
    assert FeatureSpec().version != before


def test_version_and_hashes_are_stable_across_processes():
    """Computed twice in fresh interpreters with different hash seeds: no salted hash() anywhere."""
    probe = (
        "import json; from features.spec import DEFAULT_SPEC as S;"
        "from features.state import user_slot, stable_bucket, event_key, to_bytes, update, new_state;"
        "from features.events import ActivityEvent as A, BusinessEvent as B;"
        "s = new_state('b');"
        "[update(s, A(f'e{i}', 'b', f'u{i % 7}', 1_700_000_000_000 + i * 999_999, 'PAGE_VIEW', None, None)) for i in range(50)];"
        "update(s, B('c', 'b', 1_700_000_000_000, 'CREATED', 'n', 'Phoenix', 'AZ', ('Bars',), 0.0, 0.0, 2, True));"
        "print(json.dumps([S.version, user_slot('alice'), stable_bucket('Phoenix|AZ', 4096), event_key('e1'), to_bytes(s).hex()]))"
    )
    outs = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(REPO)}
        res = subprocess.run(
            [sys.executable, "-c", probe], env=env, cwd=REPO, capture_output=True, text=True, check=True
        )
        outs.append(json.loads(res.stdout))
    assert outs[0] == outs[1]
    assert outs[0][0] == DEFAULT_SPEC.version


def test_dict_round_trip_and_recorded_version_check():
    d = DEFAULT_SPEC.to_dict()
    assert d["version"] == DEFAULT_SPEC.version and d["names"] == list(DEFAULT_SPEC.names)
    assert FeatureSpec.from_dict(json.loads(json.dumps(d))) == DEFAULT_SPEC
    custom = dataclasses.replace(DEFAULT_SPEC, windows_ms=(6 * HOUR_MS, DAY_MS, 14 * DAY_MS))
    assert FeatureSpec.from_dict(json.loads(json.dumps(custom.to_dict()))).version == custom.version
    with pytest.raises(SpecError, match="feature code changed"):
        FeatureSpec.from_dict({**d, "version": "000000000000"})
    with pytest.raises(SpecError, match="names"):
        FeatureSpec.from_dict({**d, "names": d["names"][:-1]})
    with pytest.raises(SpecError, match="unknown"):
        FeatureSpec.from_dict({**d, "colour": "blue"})


@pytest.mark.parametrize(
    "kwargs",
    [
        {"windows_ms": ()},
        {"windows_ms": (7 * DAY_MS, DAY_MS)},
        {"windows_ms": (DAY_MS, DAY_MS)},
        {"windows_ms": (DAY_MS + 1,)},
        {"windows_ms": (DAY_MS, 36 * HOUR_MS)},  # coarse window not a whole number of days
        {"windows_ms": (DAY_MS, 5000 * DAY_MS)},  # too many fine buckets for the u16 encodings
        {"allowed_lateness_ms": -1},
        {"coarse_bucket_ms": 90 * 60_000},
        {"city_buckets": 0},
        {"category_buckets": 1 << 25},
        {"distinct_slots": 100},
        {"rate_prior_a": 0},
        {"rate_prior_b": float("nan")},
        {"city_buckets": 1.5},
        {"allowed_lateness_ms": True},
    ],
)
def test_invalid_specs_are_refused(kwargs):
    with pytest.raises(SpecError):
        FeatureSpec(**kwargs)


def test_json_numbers_are_normalised():
    s = FeatureSpec(windows_ms=[DAY_MS, 7.0 * DAY_MS], rate_prior_a=1)
    assert s.windows_ms == (DAY_MS, 7 * DAY_MS) and isinstance(s.windows_ms[1], int)
    assert s == FeatureSpec(windows_ms=(DAY_MS, 7 * DAY_MS), rate_prior_a=1.0)


@pytest.mark.parametrize("half_lives", [(7 * DAY_MS, 7 * DAY_MS), (30 * DAY_MS, 7 * DAY_MS), (0,), (-DAY_MS,), (1.5,)])
def test_bad_half_lives_are_refused(half_lives):
    with pytest.raises(SpecError):
        FeatureSpec(half_lives_ms=half_lives)


def test_no_half_lives_means_no_decayed_features():
    spec = FeatureSpec(half_lives_ms=())
    assert not [n for n in spec.names if n.startswith("decayed_")]
    assert len(spec.names) == len(DEFAULT_SPEC.names) - 3 * 7
