"""Builders, a brute-force oracle and hypothesis strategies shared by the feature tests.

The oracle recomputes every feature from the raw list of accepted events, with no buckets, rings
or running sums, following the rules written in the ``features`` docstrings. The fast code must
agree with it exactly (up to float rounding).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from hypothesis import strategies as st

from features.events import ACTIVITY_KINDS, BUSINESS_KINDS, ActivityEvent, BusinessEvent
from features.spec import DAY_MS, DEFAULT_SPEC, HOUR_MS, FeatureSpec
from features.state import BusinessState, event_key, stable_bucket, update, user_slot

T0 = 1_700_006_400_000  # a UTC midnight, so hour and day buckets start at T0
assert T0 % DAY_MS == 0
BID = "biz-1"
L = DEFAULT_SPEC.allowed_lateness_ms


def act(eid: str, t: int, kind: str = "PAGE_VIEW", user: str | None = None, rating: int | None = None, bid: str = BID) -> ActivityEvent:
    return ActivityEvent(eid, bid, user, t, kind, None, rating)


def biz(eid: str, t: int, kind: str = "CREATED", city: str = "Phoenix", state: str = "AZ",
        cats: tuple[str, ...] = ("Restaurants", "Pizza"), price: int | None = 2, is_open: bool = True,
        bid: str = BID) -> BusinessEvent:
    return BusinessEvent(eid, bid, t, kind, f"name-{eid}", city, state, cats, 33.4, -112.0, price, is_open)


def fold(events: Iterable, spec: FeatureSpec = DEFAULT_SPEC, state: BusinessState | None = None) -> BusinessState:
    for ev in events:
        state = update(state, ev, spec)
    return state if state is not None else BusinessState(BID, spec)


def same(a: float, b: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


def assert_vectors_equal(got: Sequence[float], want: Sequence[float], spec: FeatureSpec = DEFAULT_SPEC) -> None:
    assert len(got) == len(want) == len(spec.names)
    bad = [(n, g, w) for n, g, w in zip(spec.names, got, want) if not same(g, w)]
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


# -- strategies ----------------------------------------------------------------------------------

USERS = [None, "", "alice", "bob", "carol", "dave", "erin", "frank"]
_OFFSETS = st.sampled_from([0, 1, HOUR_MS // 2, HOUR_MS - 1]) | st.integers(0, HOUR_MS - 1)


# Hours whose pairwise differences land on and around every window and ring edge (1 h, 6 h,
# 1 d, 7 d, 28 d), where off-by-one bucket errors live.
_EDGE_HOURS = sorted({d + e for d in (0, 24, 24 * 7, 24 * 28) for e in (-1, 0, 1, 6, 7)} - {-1})


@st.composite
def activity_events(draw, max_events: int = 40, prefix: str = "a") -> list[ActivityEvent]:
    """Activity of one business over up to 40 days, in no particular order, ids unique."""
    span_h = draw(st.sampled_from([8, 48, 24 * 10, 24 * 40, 0]))  # 0: hours drawn from _EDGE_HOURS
    hours = st.sampled_from(_EDGE_HOURS) if span_h == 0 else st.integers(0, span_h)
    n = draw(st.integers(1, max_events))
    out = []
    for i in range(n):
        t = T0 + draw(hours) * HOUR_MS + draw(_OFFSETS)
        kind = draw(st.sampled_from(ACTIVITY_KINDS))
        rating = draw(st.none() | st.integers(1, 5)) if kind == "REVIEW" else None
        out.append(act(f"{prefix}{i}", t, kind, draw(st.sampled_from(USERS)), rating))
    return out


@st.composite
def business_events(draw, max_events: int = 4) -> list[BusinessEvent]:
    n = draw(st.integers(0, max_events))
    return [
        biz(f"b{i}", T0 + draw(st.integers(-5 * DAY_MS, 40 * DAY_MS)), draw(st.sampled_from(BUSINESS_KINDS)),
            city=draw(st.sampled_from(["Phoenix", "Tempe", ""])), state="AZ",
            cats=draw(st.sampled_from([(), ("Bars",), ("Restaurants", "Pizza")])),
            price=draw(st.none() | st.integers(1, 4)), is_open=draw(st.booleans()))
        for i in range(n)
    ]


def deliver_within_lateness(events: Sequence, delays: Sequence[int], ties: Sequence[int]) -> list:
    """An arrival order in which no event is late: each event arrives at its time plus a delay
    in [0, lateness], so every earlier arrival is at most ``lateness`` newer than it."""
    order = sorted(range(len(events)), key=lambda i: (events[i].event_time + delays[i], ties[i]))
    return [events[i] for i in order]


def time_order(events: Sequence) -> list:
    return sorted(events, key=lambda e: (e.event_time, e.event_id))
