"""How one Yelp record becomes event fields: times, ids, ratings, categories, price, open state.

Each rule raises ``BadLine`` (with a reason the import report groups by) for a value it cannot
use; ``consumer.tools.importers.yelp`` counts and skips such lines. docs/yelp.md is the
user-facing version of these rules.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import math
from typing import Any

from consumer.errors import BadLine
from features.events import MAX_CATEGORIES, MAX_EVENT_TIME_MS, MIN_EVENT_TIME_MS

DAY_MS = 86_400_000
NOON_MS = 12 * 3_600_000
_UTC = _dt.UTC
_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_UTC)
_EPOCH_NAIVE = _dt.datetime(1970, 1, 1)  # naive Yelp times are UTC
_EPOCH_ORDINAL = _dt.date(1970, 1, 1).toordinal()
_MS = _dt.timedelta(milliseconds=1)


def parse_time_ms(value: Any) -> int:
    """A Yelp date: ``YYYY-MM-DD HH:MM:SS`` (UTC) or ``YYYY-MM-DD`` (12:00 UTC) -> epoch ms."""
    if not isinstance(value, str):
        raise BadLine("bad date", repr(value)[:60])
    s = value.strip()
    try:
        if len(s) == 10:
            ms = (_dt.date.fromisoformat(s).toordinal() - _EPOCH_ORDINAL) * DAY_MS + NOON_MS
        else:
            t = _dt.datetime.fromisoformat(s)
            ms = ((t - _EPOCH_NAIVE) if t.tzinfo is None else (t - _EPOCH)) // _MS
    except ValueError:
        raise BadLine("bad date", repr(s)[:60]) from None
    if not MIN_EVENT_TIME_MS <= ms < MAX_EVENT_TIME_MS:
        raise BadLine("date outside 2000..2100", repr(s)[:60])
    return ms


def required_id(rec: dict, name: str) -> str:
    v = rec.get(name)
    if v is None or v == "":
        raise BadLine(f"missing {name}")
    if not isinstance(v, str):
        raise BadLine(f"bad {name}", repr(v)[:60])
    _utf8(v, name)
    return v


def optional_id(rec: dict, name: str) -> str | None:
    v = rec.get(name)
    if v is None or v == "":
        return None
    if not isinstance(v, str):
        raise BadLine(f"bad {name}", repr(v)[:60])
    _utf8(v, name)
    return v


def _utf8(s: str, name: str) -> None:
    # JSON may carry lone surrogates ("\ud800"), which Avro cannot write: refuse them here, by line.
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        raise BadLine(f"bad {name}", "not valid UTF-8") from None


def text_field(rec: dict, name: str) -> str:
    v = rec.get(name)
    if v is None:
        return ""
    if not isinstance(v, str):
        raise BadLine(f"bad {name}", repr(v)[:60])
    _utf8(v, name)
    return v.strip()


def rating(stars: Any) -> int:
    """Review stars -> rating 1..5: stars outside 1..5 are refused, half stars round up."""
    if isinstance(stars, bool) or not isinstance(stars, (int, float)) or not math.isfinite(stars):
        raise BadLine("bad stars", repr(stars)[:60])
    if not 1 <= stars <= 5:
        raise BadLine("stars outside 1..5", repr(stars))
    return int(math.floor(stars + 0.5))


def categories(value: Any) -> tuple[str, ...]:
    """A comma-separated string (current format) or a list (old); order kept, the first is primary."""
    if value is None:
        return ()
    if isinstance(value, str):
        items = value.split(",")
    elif isinstance(value, list) and all(isinstance(c, str) for c in value):
        items = value
    else:
        raise BadLine("bad categories", repr(value)[:60])
    out = tuple(c for c in (c.strip() for c in items) if c)
    for c in out:
        _utf8(c, "categories")
    # The event contract holds 64; a longer list keeps its first (primary) 64.
    return out[:MAX_CATEGORIES]


def price_range(attributes: Any) -> int | None:
    """``RestaurantsPriceRange2`` (current, a string) or ``Price Range`` (old, an int); else None."""
    if not isinstance(attributes, dict):
        return None
    v = attributes.get("RestaurantsPriceRange2", attributes.get("Price Range"))
    if isinstance(v, str) and v.strip().isdigit():
        v = int(v.strip())
    if isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 4:
        return v
    return None


def is_open(rec: dict) -> bool:
    """``is_open`` 0/1 (current) or ``open`` true/false (old); a record with neither counts as open."""
    for name in ("is_open", "open"):
        if name in rec:
            v = rec[name]
            if isinstance(v, bool) or (isinstance(v, int) and v in (0, 1)):
                return bool(v)
            raise BadLine(f"bad {name}", repr(v)[:60])
    return True


def city_state(rec: dict) -> tuple[str, str]:
    city, state = text_field(rec, "city"), text_field(rec, "state")
    if (not city or not state) and isinstance(rec.get("full_address"), str):
        # Old records also spell it out as "street\nCity, ST 12345"; only a fallback.
        last = rec["full_address"].strip().split("\n")[-1]
        if "," in last:
            c, rest = last.rsplit(",", 1)
            city = city or c.strip()
            state = state or (rest.split() or [""])[0]
    return city, state


def coordinate(rec: dict, name: str) -> float:
    v = rec.get(name)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise BadLine(f"missing {name}" if v is None else f"bad {name}", "" if v is None else repr(v)[:60])
    return float(v)


def count_hour_of_week(info: Any) -> int:
    """Total of an old ``checkin_info`` ({"hour-day": n}) or a ``time`` ({"Monday": {"10:00": n}})."""
    if not isinstance(info, dict):
        raise BadLine("bad checkin_info", repr(info)[:60])
    total = 0
    for v in info.values():
        if isinstance(v, dict):
            total += count_hour_of_week(v)
        elif isinstance(v, int) and not isinstance(v, bool) and v >= 0:
            total += v
        else:
            raise BadLine("bad checkin_info", repr(v)[:60])
    return total


def tip_event_id(user_id: str | None, business_id: str, time_ms: int, text: str) -> str:
    key = f"{user_id or ''}|{business_id}|{time_ms}|{text}".encode("utf-8", "surrogatepass")
    return f"yelp:tip:{hashlib.sha1(key).hexdigest()[:16]}"
