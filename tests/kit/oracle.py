"""The feature tests' brute-force oracle and comparisons.

The oracle recomputes every feature from the raw list of accepted events, with no buckets, rings
or running sums, following the rules written in the ``features`` docstrings. The fast code must
agree with it exactly (up to float rounding).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from features.events import ACTIVITY_KINDS, ActivityEvent, BusinessEvent
from features.spec import DAY_MS, DEFAULT_SPEC, HOUR_MS, FeatureSpec
from features.state import BusinessState, event_key, stable_bucket, user_slot


def same(a: float, b: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


def assert_vectors_equal(got: Sequence[float], want: Sequence[float], spec: FeatureSpec = DEFAULT_SPEC) -> None:
    assert len(got) == len(want) == len(spec.names)
    bad = [(n, g, w) for n, g, w in zip(spec.names, got, want, strict=True) if not same(g, w)]
    assert not bad, f"features differ (name, got, want): {bad}"


def assert_states_equal(a: BusinessState, b: BusinessState) -> None:
    assert a == b, f"states differ in {a.diff(b)}"


def without_late_count(s: BusinessState) -> BusinessState:
    c = s.copy()
    c.late_dropped = 0
    return c


# -- oracle --------------------------------------------------------------------------------------


def oracle_accept(arrivals: Sequence, spec: FeatureSpec = DEFAULT_SPEC) -> tuple[list, int]:
    """The documented late/dedup rule, with unbounded memory: (accepted events, late count)."""
    clock = 0
    ids: set[str] = set()
    accepted, late = [], 0
    for ev in arrivals:
        if isinstance(ev, BusinessEvent):
            accepted.append(ev)
            continue
        if clock and ev.event_time < clock - spec.allowed_lateness_ms:
            late += 1
        elif ev.event_id not in ids:
            ids.add(ev.event_id)
            accepted.append(ev)
            clock = max(clock, ev.event_time)
    return accepted, late


def oracle_features(accepted: Sequence, as_of: int, spec: FeatureSpec = DEFAULT_SPEC) -> list[float]:
    acts = [e for e in accepted if isinstance(e, ActivityEvent)]
    bizs = [e for e in accepted if isinstance(e, BusinessEvent)]
    clock = max((e.event_time for e in acts), default=0)
    t = max(as_of, clock)
    m = spec.distinct_slots
    a, b = spec.rate_prior_a, spec.rate_prior_b
    counts: dict[tuple[str, int], float] = {}
    uniq, rbiz, rcall = [], [], []
    for w in spec.windows_ms:
        g = spec.fine_bucket_ms if w <= spec.fine_horizon_ms else spec.coarse_bucket_ms
        c, n = t // g, w // g
        inside = [e for e in acts if c - n < e.event_time // g <= c]
        for kind in ACTIVITY_KINDS:
            counts[kind, w] = float(sum(e.kind == kind for e in inside))
        z = len({user_slot(e.user_id, spec) for e in inside if e.user_id})
        uniq.append(-m * math.log(1 - min(z, m - 0.5) / m))
        views = counts["PAGE_VIEW", w]
        rbiz.append((counts["BIZSITE_VISIT", w] + a) / (views + a + b))
        rcall.append((counts["CALL", w] + a) / (views + a + b))
    out = [counts[k, w] for k in ACTIVITY_KINDS for w in spec.windows_ms] + uniq + rbiz + rcall
    for kind in ACTIVITY_KINDS:
        times = [e.event_time for e in acts if e.kind == kind]
        out.append((t - max(times)) / HOUR_MS if times else math.nan)
    for kind in ACTIVITY_KINDS:
        times = [e.event_time for e in acts if e.kind == kind]
        out.append((t - min(times)) / HOUR_MS if times else math.nan)
    out += [float(sum(e.kind == kind for e in acts)) for kind in ACTIVITY_KINDS]
    g, c = spec.coarse_bucket_ms, t // spec.coarse_bucket_ms
    for h in spec.half_lives_ms:
        for kind in ACTIVITY_KINDS:
            out.append(sum(2.0 ** (-(c - e.event_time // g) * g / h) for e in acts if e.kind == kind))
    pv = [e.event_time for e in acts if e.kind == "PAGE_VIEW"]
    out.append((max(pv) - min(pv)) / HOUR_MS / (len(pv) - 1) if len(pv) > 1 else math.nan)
    out.append(float(sum(e.kind == "REVIEW" for e in acts)))
    ratings = [e.rating for e in acts if e.kind == "REVIEW" and e.rating is not None]
    out.append(sum(ratings) / len(ratings) if ratings else math.nan)
    if bizs:
        p = max(bizs, key=lambda e: (e.event_time, event_key(e.event_id)))
        cat = p.categories[0] if p.categories else ""
        out += [
            1.0 if p.is_open else 0.0,
            float(p.price_range) if p.price_range else math.nan,
            float(stable_bucket(f"{p.city}|{p.state}", spec.city_buckets)) if p.city else math.nan,
            float(stable_bucket(cat, spec.category_buckets)) if cat else math.nan,
        ]
    else:
        out += [math.nan] * 4
    created = [e.event_time for e in bizs if e.kind == "CREATED"]
    times = [e.event_time for e in accepted]
    born = min(created) if created else min(times, default=0)
    out.append(max(0, t - born) / DAY_MS if born else math.nan)
    assert len(out) == len(spec.names)
    return out


def oracle_scorable(accepted: Sequence) -> bool:
    bizs = [e for e in accepted if isinstance(e, BusinessEvent)]
    life = [e for e in bizs if e.kind != "UPDATED"]
    if not bizs:
        return False
    return not life or max(life, key=lambda e: (e.event_time, event_key(e.event_id))).kind != "CLOSED"
