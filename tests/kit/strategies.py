"""Hypothesis strategies for event histories, and arrival orders built from them."""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import strategies as st

from features.events import ACTIVITY_KINDS, BUSINESS_KINDS, ActivityEvent, BusinessEvent
from features.spec import DAY_MS, HOUR_MS
from tests.kit.events import T0, act, biz

USERS = [None, "", "alice", "bob", "carol", "dave", "erin", "frank"]
_OFFSETS = st.sampled_from([0, 1, HOUR_MS // 2, HOUR_MS - 1]) | st.integers(0, HOUR_MS - 1)


# Hours whose pairwise differences land on and around every window and ring edge (1 h, 6 h,
# 1 d, 7 d, 28 d), where off-by-one bucket errors live.
_EDGE_HOURS = sorted({d + e for d in (0, 24, 24 * 7, 24 * 28) for e in (-1, 0, 1, 6, 7)} - {-1})


@st.composite
def activity_events(draw, max_events: int = 40, prefix: str = "a") -> list[ActivityEvent]:
    """Activity of one business over up to 400 days, in no particular order, ids unique."""
    # 24 * 400: sparse histories whose gaps cross many decay epochs (state.DECAY_EPOCH)
    span_h = draw(st.sampled_from([8, 48, 24 * 10, 24 * 40, 24 * 400, 0]))  # 0: hours from _EDGE_HOURS
    hours = st.sampled_from(_EDGE_HOURS) if span_h == 0 else st.integers(0, span_h)
    n = draw(st.integers(1, max_events))
    out = []
    for i in range(n):
        t = T0 + draw(hours) * HOUR_MS + draw(_OFFSETS)
        kind = draw(st.sampled_from(ACTIVITY_KINDS))
        rating = draw(st.none() | st.integers(1, 5)) if kind == "REVIEW" else None
        out.append(act(t, kind, eid=f"{prefix}{i}", user=draw(st.sampled_from(USERS)), rating=rating))
    return out


@st.composite
def business_events(draw, max_events: int = 4) -> list[BusinessEvent]:
    n = draw(st.integers(0, max_events))
    return [
        biz(
            T0 + draw(st.integers(-5 * DAY_MS, 40 * DAY_MS)),
            draw(st.sampled_from(BUSINESS_KINDS)),
            eid=f"b{i}",
            city=draw(st.sampled_from(["Phoenix", "Tempe", ""])),
            state="AZ",
            categories=draw(st.sampled_from([(), ("Bars",), ("Restaurants", "Pizza")])),
            price=draw(st.none() | st.integers(1, 4)),
            is_open=draw(st.booleans()),
        )
        for i in range(n)
    ]


def deliver_within_lateness(events: Sequence, delays: Sequence[int], ties: Sequence[int]) -> list:
    """An arrival order in which no event is late: each event arrives at its time plus a delay
    in [0, lateness], so every earlier arrival is at most ``lateness`` newer than it."""
    order = sorted(range(len(events)), key=lambda i: (events[i].event_time + delays[i], ties[i]))
    return [events[i] for i in order]
