"""What an import did: events per kind, lines skipped per file and reason (with examples), timing.

Printed by ``streamrank import-yelp`` and written next to the event log, so a user can see what
was left out and why before training on it.
"""

from __future__ import annotations

import datetime as _dt
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

EXAMPLES_KEPT = 5  # line numbers kept per file and reason for the report
_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)
_MS = _dt.timedelta(milliseconds=1)


@dataclass
class FileReport:
    name: str
    kind: str
    lines: int = 0
    bytes: int = 0
    limited: bool = False  # stopped at --limit before the end of the file
    events: int = 0  # activity events and business records read from this file
    bad: Counter = field(default_factory=Counter)
    examples: dict[str, list[tuple[int, str]]] = field(default_factory=dict)
    ignored: Counter = field(default_factory=Counter)

    def add_bad(self, line: int, reason: str, detail: str) -> None:
        self.bad[reason] += 1
        kept = self.examples.setdefault(reason, [])
        if len(kept) < EXAMPLES_KEPT:
            kept.append((line, detail))

    @property
    def bad_lines(self) -> int:
        return sum(self.bad.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "lines": self.lines,
            "bytes": self.bytes,
            "limited": self.limited,
            "events": self.events,
            "bad": dict(self.bad),
            "ignored": dict(self.ignored),
            "examples": {r: [list(x) for x in xs] for r, xs in self.examples.items()},
        }


@dataclass
class ImportReport:
    files: list[FileReport] = field(default_factory=list)
    spilled: int = 0  # events written to the sort runs, before duplicates are dropped
    runs: int = 0
    spill_bytes: int = 0
    events: Counter = field(default_factory=Counter)  # emitted, by event kind
    duplicates: int = 0  # same event time and id seen again in this import: emitted once
    before_since: int = 0  # activity events read but older than ``since``: not emitted
    checkin_records_without_time: int = 0
    checkins_without_time: int = 0
    businesses: int = 0
    businesses_without_activity: int = 0
    businesses_without_record: int = 0  # activity for a business_id no business line describes
    first_event_ms: int | None = None
    last_event_ms: int | None = None
    read_seconds: float = 0.0
    merge_seconds: float = 0.0

    @property
    def bad_lines(self) -> int:
        return sum(f.bad_lines for f in self.files)

    @property
    def emitted(self) -> int:
        return sum(self.events.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "files": [f.to_dict() for f in self.files],
            "spilled": self.spilled,
            "runs": self.runs,
            "spill_bytes": self.spill_bytes,
            "events": dict(self.events),
            "duplicates": self.duplicates,
            "before_since": self.before_since,
            "checkin_records_without_time": self.checkin_records_without_time,
            "checkins_without_time": self.checkins_without_time,
            "businesses": self.businesses,
            "businesses_without_activity": self.businesses_without_activity,
            "businesses_without_record": self.businesses_without_record,
            "bad_lines": self.bad_lines,
            "first_event_ms": self.first_event_ms,
            "last_event_ms": self.last_event_ms,
            "read_seconds": self.read_seconds,
            "merge_seconds": self.merge_seconds,
        }

    def lines(self) -> list[str]:
        """The human report: events by kind, then bad lines by file and reason with line numbers."""
        out = [
            f"events: {self.emitted:,} ({', '.join(f'{k} {n:,}' for k, n in sorted(self.events.items())) or 'none'})"
        ]
        if self.first_event_ms is not None:
            out.append(f"  event time: {_iso(self.first_event_ms)} .. {_iso(self.last_event_ms)}")
        out.append(
            f"  businesses: {self.businesses:,} ({self.businesses_without_activity:,} without activity); "
            f"activity for {self.businesses_without_record:,} business ids without a business record"
        )
        if self.before_since:
            out.append(f"  activity before --since, not imported: {self.before_since:,}")
        if self.duplicates:
            out.append(f"  duplicates dropped: {self.duplicates:,} (same event id and time seen again)")
        if self.checkin_records_without_time:
            out.append(
                f"  check-ins without time (old checkin_info counts, not imported): {self.checkins_without_time:,} "
                f"in {self.checkin_records_without_time:,} records"
            )
        out.append(
            f"  sort: {self.spilled:,} events in {self.runs} runs ({self.spill_bytes / 1e6:,.1f} MB spilled); "
            f"read {self.read_seconds:.1f}s, merge {self.merge_seconds:.1f}s"
        )
        out.append(f"bad lines: {self.bad_lines:,}")
        for f in self.files:
            head = f"  {f.name}: {f.lines:,} lines{' (stopped at --limit)' if f.limited else ''}, {f.bad_lines:,} bad"
            if f.ignored:
                head += ", ignored " + ", ".join(f"{n:,} {t}" for t, n in sorted(f.ignored.items()))
            out.append(head)
            for reason, n in f.bad.most_common():
                ex = f.examples.get(reason, [])
                where = ", ".join(str(line) for line, _ in ex) + (", ..." if n > len(ex) else "")
                detail = f" (e.g. {ex[0][1]})" if ex and ex[0][1] else ""
                out.append(f"    {reason}: {n:,} at line{'s' if n > 1 else ''} {where}{detail}")
        return out


def _iso(ms: int | None) -> str:
    if ms is None:
        return "-"
    return (_EPOCH + ms * _MS).isoformat(timespec="seconds").replace("+00:00", "Z")
