"""Hand-written events: one ``T0``, one activity builder, one business builder.

Every argument but the time is a keyword with a default, so a test names only what it is about::

    act(T0 + HOUR, "CALL", bid="b1", user="alice")
    biz(T0, "CLOSED", bid="b1")            # is_open follows the kind unless given

Event ids default to ``"{bid}-{kind}-{t}"``: two calls with the same business, kind and time are
the same event (a duplicate delivery); pass ``eid`` to make them differ or to name one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from features.events import ActivityEvent, BusinessEvent
from features.spec import DAY_MS, DEFAULT_SPEC, HOUR_MS, FeatureSpec
from features.state import BusinessState, update

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z: a UTC midnight, so hour and day buckets start at T0
assert T0 % DAY_MS == 0
HOUR = HOUR_MS
DAY = DAY_MS
BID = "biz-1"
L = DEFAULT_SPEC.allowed_lateness_ms  # the default allowed lateness


def act(
    t: int,
    kind: str = "PAGE_VIEW",
    *,
    bid: str = BID,
    eid: str | None = None,
    user: str | None = None,
    rating: int | None = None,
    search_id: str | None = None,
) -> ActivityEvent:
    return ActivityEvent(eid if eid is not None else f"{bid}-{kind}-{t}", bid, user, t, kind, search_id, rating)


def biz(
    t: int,
    kind: str = "CREATED",
    *,
    bid: str = BID,
    eid: str | None = None,
    name: str | None = None,
    city: str = "Phoenix",
    state: str = "AZ",
    categories: tuple[str, ...] = ("Restaurants", "Pizza"),
    price: int | None = 2,
    is_open: bool | None = None,
    latitude: float = 33.4,
    longitude: float = -112.0,
) -> BusinessEvent:
    """A business event; ``is_open`` defaults to ``kind != "CLOSED"``."""
    eid = eid if eid is not None else f"{bid}-{kind}-{t}"
    return BusinessEvent(
        eid,
        bid,
        t,
        kind,
        name if name is not None else f"name-{eid}",
        city,
        state,
        categories,
        latitude,
        longitude,
        price,
        kind != "CLOSED" if is_open is None else is_open,
    )


def fold(events: Iterable, spec: FeatureSpec = DEFAULT_SPEC, state: BusinessState | None = None) -> BusinessState:
    """``features.state.update`` over ``events`` in the order given (an empty state of ``BID`` if none)."""
    for ev in events:
        state = update(state, ev, spec)
    return state if state is not None else BusinessState(BID, spec)


def time_order(events: Sequence) -> list:
    return sorted(events, key=lambda e: (e.event_time, e.event_id))
