"""The two input event types, as plain data.

These mirror the Avro contracts in ``consumer/pipeline/schemas`` field for field. They live here (not in
``consumer/``) because the feature code folds them and must not depend on Kafka or Avro: the
trainer builds them from a log, the consumer decodes them from bytes, tests write them by hand.

``from_record`` validates the semantic rules Avro cannot express (non-empty ids, event time in a
plausible range, rating range). A record that breaks them raises :class:`InvalidEvent`; the
consumer turns that into a dead letter.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from features.errors import InvalidEvent

# Event-time bounds: 2000-01-01 .. 2100-01-01 in ms. Anything outside is a producer bug (seconds
# instead of ms, a zero timestamp), and folding it would poison windowed state.
MIN_EVENT_TIME_MS = 946_684_800_000
MAX_EVENT_TIME_MS = 4_102_444_800_000

BUSINESS_KINDS = ("CREATED", "UPDATED", "CLOSED", "REOPENED")
ACTIVITY_KINDS = ("PAGE_VIEW", "BIZSITE_VISIT", "CALL", "DIRECTIONS", "REVIEW", "TIP", "CHECKIN")

MAX_ID_LEN = 256
MAX_TEXT_LEN = 1024
MAX_CATEGORIES = 64


@dataclass(frozen=True, slots=True)
class BusinessEvent:
    event_id: str
    business_id: str
    event_time: int
    kind: str
    name: str
    city: str
    state: str
    categories: tuple[str, ...]
    latitude: float
    longitude: float
    price_range: int | None
    is_open: bool

    @classmethod
    def from_record(cls, r: Mapping[str, Any]) -> BusinessEvent:
        try:
            ev = cls(
                event_id=r["event_id"],
                business_id=r["business_id"],
                event_time=r["event_time"],
                kind=r["kind"],
                name=r["name"],
                city=r["city"],
                state=r["state"],
                categories=tuple(r["categories"]),
                latitude=float(r["latitude"]),
                longitude=float(r["longitude"]),
                price_range=r.get("price_range"),
                is_open=bool(r["is_open"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidEvent(f"business event: missing or mistyped field: {exc}") from exc
        ev.validate()
        return ev

    def validate(self) -> None:
        _check_common(self.event_id, self.business_id, self.event_time)
        if self.kind not in BUSINESS_KINDS:
            raise InvalidEvent(f"business event {self.event_id}: unknown kind {self.kind!r}")
        if len(self.name) > MAX_TEXT_LEN or len(self.city) > MAX_TEXT_LEN or len(self.state) > MAX_TEXT_LEN:
            raise InvalidEvent(f"business event {self.event_id}: text field longer than {MAX_TEXT_LEN}")
        if len(self.categories) > MAX_CATEGORIES or any(len(c) > MAX_TEXT_LEN for c in self.categories):
            raise InvalidEvent(f"business event {self.event_id}: too many or too long categories")
        if not (-90.0 <= self.latitude <= 90.0 and -180.0 <= self.longitude <= 180.0):
            raise InvalidEvent(f"business event {self.event_id}: coordinates out of range")
        if self.price_range is not None and not 1 <= self.price_range <= 4:
            raise InvalidEvent(f"business event {self.event_id}: price_range {self.price_range} not in 1..4")

    def to_record(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "business_id": self.business_id,
            "event_time": self.event_time,
            "kind": self.kind,
            "name": self.name,
            "city": self.city,
            "state": self.state,
            "categories": list(self.categories),
            "latitude": self.latitude,
            "longitude": self.longitude,
            "price_range": self.price_range,
            "is_open": self.is_open,
        }


@dataclass(frozen=True, slots=True)
class ActivityEvent:
    event_id: str
    business_id: str
    user_id: str | None
    event_time: int
    kind: str
    search_id: str | None
    rating: int | None

    @classmethod
    def from_record(cls, r: Mapping[str, Any]) -> ActivityEvent:
        try:
            ev = cls(
                event_id=r["event_id"],
                business_id=r["business_id"],
                user_id=r.get("user_id"),
                event_time=r["event_time"],
                kind=r["kind"],
                search_id=r.get("search_id"),
                rating=r.get("rating"),
            )
        except (KeyError, TypeError) as exc:
            raise InvalidEvent(f"activity event: missing field: {exc}") from exc
        ev.validate()
        return ev

    def validate(self) -> None:
        _check_common(self.event_id, self.business_id, self.event_time)
        if self.kind not in ACTIVITY_KINDS:
            raise InvalidEvent(f"activity event {self.event_id}: unknown kind {self.kind!r}")
        if self.user_id is not None and (not isinstance(self.user_id, str) or len(self.user_id) > MAX_ID_LEN):
            raise InvalidEvent(f"activity event {self.event_id}: bad user_id")
        if self.search_id is not None and (not isinstance(self.search_id, str) or len(self.search_id) > MAX_ID_LEN):
            raise InvalidEvent(f"activity event {self.event_id}: bad search_id")
        if self.rating is not None:
            if self.kind != "REVIEW":
                raise InvalidEvent(f"activity event {self.event_id}: rating on a {self.kind}")
            if not isinstance(self.rating, int) or not 1 <= self.rating <= 5:
                raise InvalidEvent(f"activity event {self.event_id}: rating {self.rating!r} not in 1..5")

    def to_record(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "business_id": self.business_id,
            "user_id": self.user_id,
            "event_time": self.event_time,
            "kind": self.kind,
            "search_id": self.search_id,
            "rating": self.rating,
        }


Event = BusinessEvent | ActivityEvent


def _check_common(event_id: object, business_id: object, event_time: object) -> None:
    if not isinstance(event_id, str) or not event_id or len(event_id) > MAX_ID_LEN:
        raise InvalidEvent(f"bad event_id {str(event_id)[:64]!r}")
    if not isinstance(business_id, str) or not business_id or len(business_id) > MAX_ID_LEN:
        raise InvalidEvent(f"event {event_id}: bad business_id {str(business_id)[:64]!r}")
    if isinstance(event_time, bool) or not isinstance(event_time, int):
        raise InvalidEvent(f"event {event_id}: event_time is not an integer")
    if not MIN_EVENT_TIME_MS <= event_time < MAX_EVENT_TIME_MS:
        raise InvalidEvent(f"event {event_id}: event_time {event_time} outside 2000..2100 (ms expected)")
