"""Import the Yelp Open Dataset (or the older Yelp academic dataset) as streamrank input events.

Input: a directory with the dataset's JSON-lines files, under their short or long names
(``business.json`` or ``yelp_academic_dataset_business.json``, likewise ``review``, ``tip``,
``checkin``; the oldest single-file ``yelp_academic_dataset.json`` is read as a mixed file). Any
line with a ``type`` field (old format) is dispatched by it, so types may be mixed in one file.

Output: ``("business"|"activity", record)`` pairs in event-time order across all files, business
events first on ties (``features.order``), duplicates of the same event (same time and event id)
emitted once. Rules (docs/yelp.md is the user-facing version):

* REVIEW per review (``stars`` -> rating: within 1..5, half stars round up), TIP per tip, one
  CHECKIN per check-in timestamp. Old-format ``checkin_info`` (and the 2017-18 ``time`` dict) are
  counts per hour of the week with no date: they are counted (``checkins_without_time``) and not
  imported, because any dates we made up would become history the model learns from and conversions
  the labels count.
* Dates: ``YYYY-MM-DD HH:MM:SS`` is read as UTC; a date without time as 12:00 UTC.
* Businesses carry no date. CREATED is stamped 1 ms before the business's first imported activity
  (so its whole history is scorable and ``age_days`` is the time since its first activity); a
  business with no activity is created 1 ms before the earliest activity of the import. A business
  the record says is closed gets CLOSED one day after its last activity (after its CREATED if it
  has none). CREATED always says ``is_open=True``: the closure is a fact about the snapshot, and
  putting it on the CREATED profile would leak the future into every earlier feature.
* ``since``: activity before it is read (it still dates the businesses) but not emitted, to keep
  a training run on the real dataset within memory; business events are all emitted.
* Event ids are functions of the record only: ``yelp:review:<review_id>``,
  ``yelp:tip:<sha1(user|business|time|text)[:16]>``, ``yelp:checkin:<business>:<ms>`` (``:<n>`` for
  the n-th repeat of the same timestamp in one record), ``yelp:business:<business>:CREATED|CLOSED``.
  Importing the same files again yields the same ids, which the features' dedup counts once.
* A bad line (broken JSON, missing ids, impossible or out-of-range dates, anything the event
  contract rejects) is counted by reason with its line number and skipped; it never stops the
  import. A check-in line with one bad timestamp is skipped whole, like any other bad line.

Memory: the files are read once, streaming; events go to sorted runs of ``run_size`` on disk
(JSON-lines chunks in a private temp folder; never pickle, even for our own files) that are
k-way merged (``heapq.merge``). What grows with the data is only per-business: first/last
activity time and the set of business ids (about 150k businesses in the real dataset: tens of MB). Business records wait in a spill file until every
activity time is known.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import heapq
import json
import math
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from consumer.errors import BadLine, YelpImportError
from features.errors import InvalidEvent
from features.events import (
    MAX_CATEGORIES,
    MAX_EVENT_TIME_MS,
    MIN_EVENT_TIME_MS,
    ActivityEvent,
    BusinessEvent,
)
from features.order import ACTIVITY_RANK, BUSINESS_RANK

DAY_MS = 86_400_000
NOON_MS = 12 * 3_600_000
KINDS = ("business", "review", "tip", "checkin")
MIXED = "mixed"
IGNORED_TYPES = ("user",)  # old mixed files hold user profiles: not events
RUN_SIZE = 200_000
CHUNK = 4096  # items per spilled chunk (one JSON line): what one run's reader holds during the merge
MAX_FANIN = 64  # runs merged at once; more are merged in rounds (open files, reader buffers)
EXAMPLES_KEPT = 5  # line numbers kept per file and reason for the report
PROGRESS_EVERY = 8192

_UTC = _dt.timezone.utc
_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_UTC)
_EPOCH_NAIVE = _dt.datetime(1970, 1, 1)  # naive Yelp times are UTC
_EPOCH_ORDINAL = _dt.date(1970, 1, 1).toordinal()
_MS = _dt.timedelta(milliseconds=1)
# Only when an import holds no activity at all do businesses need a date from elsewhere: Yelp's launch.
FALLBACK_CREATED_MS = (_dt.date(2004, 10, 1).toordinal() - _EPOCH_ORDINAL) * DAY_MS

# progress(label, unit, items, done, total, final): ``done``/``total`` measure the phase (bytes of a
# file, events of the merge), ``items`` counts ``unit`` (lines, events) for the rate.
Progress = Callable[[str, str, int, int, int, bool], None]


# --------------------------------------------------------------------------------- files
@dataclass(frozen=True)
class YelpFile:
    path: Path
    kind: str  # one of KINDS, or MIXED


def find_files(directory: str | Path) -> list[YelpFile]:
    """The dataset's files in ``directory``, business file first."""
    d = Path(directory)
    if not d.is_dir():
        raise YelpImportError(f"{d}: not a directory")
    found = []
    for kind in KINDS:
        names = (f"{kind}.json", f"yelp_academic_dataset_{kind}.json")
        present = [d / n for n in names if (d / n).is_file()]
        if len(present) > 1:
            raise YelpImportError(f"{d}: both {names[0]} and {names[1]} exist; keep one of them")
        found += [YelpFile(p, kind) for p in present]
    mixed = d / "yelp_academic_dataset.json"
    if mixed.is_file():
        found.append(YelpFile(mixed, MIXED))
    if not found:
        raise YelpImportError(
            f"{d}: no Yelp files (expected business.json, review.json, tip.json, checkin.json, "
            "or their yelp_academic_dataset_*.json names)"
        )
    return found


# -------------------------------------------------------------------------------- report
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
            "name": self.name, "kind": self.kind, "lines": self.lines, "bytes": self.bytes, "limited": self.limited,
            "events": self.events, "bad": dict(self.bad), "ignored": dict(self.ignored),
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
            "files": [f.to_dict() for f in self.files], "spilled": self.spilled, "runs": self.runs,
            "spill_bytes": self.spill_bytes, "events": dict(self.events), "duplicates": self.duplicates,
            "before_since": self.before_since,
            "checkin_records_without_time": self.checkin_records_without_time,
            "checkins_without_time": self.checkins_without_time, "businesses": self.businesses,
            "businesses_without_activity": self.businesses_without_activity,
            "businesses_without_record": self.businesses_without_record, "bad_lines": self.bad_lines,
            "first_event_ms": self.first_event_ms, "last_event_ms": self.last_event_ms,
            "read_seconds": self.read_seconds, "merge_seconds": self.merge_seconds,
        }

    def lines(self) -> list[str]:
        """The human report: events by kind, then bad lines by file and reason with line numbers."""
        out = [f"events: {self.emitted:,} ({', '.join(f'{k} {n:,}' for k, n in sorted(self.events.items())) or 'none'})"]
        if self.first_event_ms is not None:
            out.append(f"  event time: {_iso(self.first_event_ms)} .. {_iso(self.last_event_ms)}")
        out.append(f"  businesses: {self.businesses:,} ({self.businesses_without_activity:,} without activity); "
                   f"activity for {self.businesses_without_record:,} business ids without a business record")
        if self.before_since:
            out.append(f"  activity before --since, not imported: {self.before_since:,}")
        if self.duplicates:
            out.append(f"  duplicates dropped: {self.duplicates:,} (same event id and time seen again)")
        if self.checkin_records_without_time:
            out.append(f"  check-ins without time (old checkin_info counts, not imported): {self.checkins_without_time:,} "
                       f"in {self.checkin_records_without_time:,} records")
        out.append(f"  sort: {self.spilled:,} events in {self.runs} runs ({self.spill_bytes / 1e6:,.1f} MB spilled); "
                   f"read {self.read_seconds:.1f}s, merge {self.merge_seconds:.1f}s")
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


# --------------------------------------------------------------------------- field rules
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


def _id(rec: dict, name: str) -> str:
    v = rec.get(name)
    if v is None or v == "":
        raise BadLine(f"missing {name}")
    if not isinstance(v, str):
        raise BadLine(f"bad {name}", repr(v)[:60])
    _utf8(v, name)
    return v


def _optional_id(rec: dict, name: str) -> str | None:
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


def _text(rec: dict, name: str) -> str:
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


def _city_state(rec: dict) -> tuple[str, str]:
    city, state = _text(rec, "city"), _text(rec, "state")
    if (not city or not state) and isinstance(rec.get("full_address"), str):
        # Old records also spell it out as "street\nCity, ST 12345"; only a fallback.
        last = rec["full_address"].strip().split("\n")[-1]
        if "," in last:
            c, rest = last.rsplit(",", 1)
            city = city or c.strip()
            state = state or (rest.split() or [""])[0]
    return city, state


def _coordinate(rec: dict, name: str) -> float:
    v = rec.get(name)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise BadLine(f"missing {name}" if v is None else f"bad {name}", "" if v is None else repr(v)[:60])
    return float(v)


def _count_hour_of_week(info: Any) -> int:
    """Total of an old ``checkin_info`` ({"hour-day": n}) or a ``time`` ({"Monday": {"10:00": n}})."""
    if not isinstance(info, dict):
        raise BadLine("bad checkin_info", repr(info)[:60])
    total = 0
    for v in info.values():
        if isinstance(v, dict):
            total += _count_hour_of_week(v)
        elif isinstance(v, int) and not isinstance(v, bool) and v >= 0:
            total += v
        else:
            raise BadLine("bad checkin_info", repr(v)[:60])
    return total


def tip_event_id(user_id: str | None, business_id: str, time_ms: int, text: str) -> str:
    key = f"{user_id or ''}|{business_id}|{time_ms}|{text}".encode("utf-8", "surrogatepass")
    return f"yelp:tip:{hashlib.sha1(key).hexdigest()[:16]}"


# ------------------------------------------------------------------------------ sort runs
# A spilled item: (event_time, rank, event_id, seq, payload). ``seq`` (input order) makes every
# item distinct, so tuple comparison never reaches the payload; the merge order is thus
# (event_time, rank, event_id), deterministic, with input order only between exact duplicates.
def _dump_chunk(items: list[Any], f: Any) -> None:
    # JSON, not pickle: loading a pickle can run code, and the rule has no exception for our own
    # temp files. Items are tuples of str/int/float/bool/None and lists of str; they come back as
    # lists, which compare and unpack the same.
    f.write(json.dumps(items, separators=(",", ":")).encode("utf-8"))
    f.write(b"\n")


def _write_chunks(path: Path, items: Iterable[Any]) -> int:
    with open(path, "wb") as f:
        buf: list[Any] = []
        for it in items:
            buf.append(it)
            if len(buf) >= CHUNK:
                _dump_chunk(buf, f)
                buf = []
        if buf:
            _dump_chunk(buf, f)
    return path.stat().st_size


def _read_chunks(path: Path) -> Iterator[Any]:
    with open(path, "rb") as f:
        for line in f:
            yield from json.loads(line)


def _spill(items: list[Any], f: Any) -> None:
    if not items:
        return
    try:
        _dump_chunk(items, f)
    except OSError as exc:
        raise YelpImportError(f"cannot write the business spill {f.name} (free space? see --tmp-dir): {exc}") from exc
    items.clear()


class _Runs:
    def __init__(self, folder: Path, run_size: int):
        self.folder = folder
        self.run_size = run_size
        self.buf: list[Any] = []
        self.paths: list[Path] = []
        self.count = 0
        self.bytes = 0
        self.written = 0

    def add(self, item: Any) -> None:
        self.buf.append(item)
        if len(self.buf) >= self.run_size:
            self.flush()

    def flush(self) -> None:
        if not self.buf:
            return
        self.buf.sort()
        self.count += len(self.buf)
        self.bytes += self._write(self.buf)
        self.buf = []

    def _write(self, items: Iterable[Any]) -> int:
        self.written += 1
        path = self.folder / f"run-{self.written:06d}.bin"
        try:
            size = _write_chunks(path, items)
        except OSError as exc:
            raise YelpImportError(f"cannot write sort run {path} (free space? see --tmp-dir): {exc}") from exc
        self.paths.append(path)
        return size

    def merged(self) -> Iterator[Any]:
        self.flush()
        while len(self.paths) > MAX_FANIN:
            group, self.paths = self.paths[:MAX_FANIN], self.paths[MAX_FANIN:]
            self._write(heapq.merge(*[_read_chunks(p) for p in group]))
            for p in group:
                p.unlink()
        return heapq.merge(*[_read_chunks(p) for p in self.paths])


# ------------------------------------------------------------------------------- importer
class YelpImport:
    """One import: ``scan()`` reads the files into sorted runs, ``events()`` merges them.

    A context manager: its temp folder (the runs, about 100 bytes per event) is removed on exit.

        with YelpImport("yelp/") as imp:
            report = imp.scan()
            write_log("events.avro", imp.events())
    """

    def __init__(
        self,
        directory: str | Path,
        *,
        limit: int | None = None,
        since_ms: int | None = None,
        run_size: int = RUN_SIZE,
        tmp_dir: str | Path | None = None,
        progress: Progress | None = None,
    ):
        if run_size < 1:
            raise ValueError("run_size must be >= 1")
        self.files = find_files(directory)
        self.limit = limit
        self.since_ms = since_ms
        self.run_size = run_size
        self.tmp_dir = tmp_dir
        self.progress = progress
        self.report = ImportReport()
        self._folder: Path | None = None
        self._runs: _Runs | None = None
        self._scanned = False
        self._merging = False
        self._seq = 0
        self._first_last: dict[str, list[int]] = {}
        self._business_ids: set[str] = set()

    def __enter__(self) -> "YelpImport":
        try:
            self._folder = Path(tempfile.mkdtemp(prefix="streamrank-yelp-", dir=self.tmp_dir))
        except OSError as exc:
            raise YelpImportError(f"cannot create the sort folder under {self.tmp_dir or tempfile.gettempdir()}: {exc}") from exc
        self._runs = _Runs(self._folder, self.run_size)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None

    # -- pass 1: every file, once -------------------------------------------------------
    def scan(self) -> ImportReport:
        if self._runs is None:
            raise RuntimeError("YelpImport is a context manager: use it in a with block")
        if self._scanned:
            return self.report
        t0 = time.perf_counter()
        spill = self._folder / "businesses.bin"
        businesses: list[Any] = []
        with open(spill, "wb") as spill_f:
            for yf in self.files:
                self._scan_file(yf, businesses, spill_f)
            _spill(businesses, spill_f)
        self._business_events(spill)
        spill.unlink()
        self._runs.flush()
        r = self.report
        r.spilled, r.runs, r.spill_bytes = self._runs.count, len(self._runs.paths), self._runs.bytes
        r.read_seconds = time.perf_counter() - t0
        self._scanned = True
        return r

    def _scan_file(self, yf: YelpFile, businesses: list[Any], spill_f: Any) -> None:
        fr = FileReport(yf.path.name, yf.kind)
        self.report.files.append(fr)
        progress = self.progress
        try:
            total = yf.path.stat().st_size
            if progress is not None:
                progress(fr.name, "lines", 0, 0, total, False)
            with open(yf.path, "rb") as f:
                for raw in f:
                    if self.limit is not None and fr.lines >= self.limit:
                        fr.limited = True
                        break
                    fr.lines += 1
                    fr.bytes += len(raw)
                    if not raw.strip():
                        continue
                    try:
                        fr.events += self._line(raw, yf.kind, fr, businesses)
                    except BadLine as bad:
                        fr.add_bad(fr.lines, bad.reason, bad.detail)
                    if len(businesses) >= CHUNK:
                        _spill(businesses, spill_f)
                    if progress is not None and fr.lines % PROGRESS_EVERY == 0:
                        progress(fr.name, "lines", fr.lines, fr.bytes, total, False)
        except OSError as exc:
            raise YelpImportError(f"cannot read {yf.path}: {exc}") from exc
        if progress is not None:
            progress(fr.name, "lines", fr.lines, fr.bytes, total, True)

    def _line(self, raw: bytes, file_kind: str, fr: FileReport, businesses: list[Any]) -> int:
        try:
            rec = json.loads(raw)
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
            raise BadLine("broken JSON", str(exc)[:80]) from None
        if not isinstance(rec, dict):
            raise BadLine("not a JSON object", type(rec).__name__)
        kind = rec.get("type")
        if kind is None:
            if file_kind == MIXED:
                raise BadLine("no type field")
            kind = file_kind
        elif kind not in KINDS:
            if kind in IGNORED_TYPES:
                fr.ignored[kind] += 1
                return 0
            raise BadLine("unknown type", repr(kind)[:60])
        if kind == "business":
            businesses.append(self._business(rec))
            return 1
        if kind == "review":
            events = self._review(rec)
        elif kind == "tip":
            events = self._tip(rec)
        else:
            events = self._checkins(rec)
        for ev in events:
            self._add_activity(ev)
        return len(events)

    def _add_activity(self, ev: ActivityEvent) -> None:
        t = ev.event_time
        fl = self._first_last.get(ev.business_id)
        if fl is None:
            self._first_last[ev.business_id] = [t, t]
        elif t < fl[0]:
            fl[0] = t
        elif t > fl[1]:
            fl[1] = t
        if self.since_ms is not None and t < self.since_ms:
            self.report.before_since += 1
            return
        self._seq += 1
        self._runs.add((t, ACTIVITY_RANK, ev.event_id, self._seq, (ev.business_id, ev.user_id, ev.kind, ev.rating)))

    @staticmethod
    def _activity(event_id: str, business_id: str, user_id: str | None, t: int, kind: str, r: int | None) -> ActivityEvent:
        ev = ActivityEvent(event_id, business_id, user_id, t, kind, None, r)
        try:
            ev.validate()
        except InvalidEvent as exc:
            raise BadLine("invalid event", str(exc)[:120]) from None
        return ev

    def _review(self, rec: dict) -> list[ActivityEvent]:
        bid = _id(rec, "business_id")
        rid = _id(rec, "review_id")
        uid = _optional_id(rec, "user_id")
        if "stars" not in rec:
            raise BadLine("missing stars")
        r = rating(rec["stars"])
        t = parse_time_ms(rec.get("date"))
        return [self._activity(f"yelp:review:{rid}", bid, uid, t, "REVIEW", r)]

    def _tip(self, rec: dict) -> list[ActivityEvent]:
        bid = _id(rec, "business_id")
        uid = _optional_id(rec, "user_id")
        t = parse_time_ms(rec.get("date"))
        text = rec.get("text")
        text = text if isinstance(text, str) else ""
        return [self._activity(tip_event_id(uid, bid, t, text), bid, uid, t, "TIP", None)]

    def _checkins(self, rec: dict) -> list[ActivityEvent]:
        bid = _id(rec, "business_id")
        dates = rec.get("date")
        if dates is None:
            info = rec.get("checkin_info", rec.get("time"))
            if info is None:
                raise BadLine("check-in without date")
            n = _count_hour_of_week(info)
            self.report.checkin_records_without_time += 1
            self.report.checkins_without_time += n
            return []
        if isinstance(dates, str):
            stamps = dates.split(",")
        elif isinstance(dates, list):
            stamps = dates
        else:
            raise BadLine("bad check-in date", repr(dates)[:60])
        repeats: dict[int, int] = {}
        out = []
        for s in stamps:
            if isinstance(s, str) and not s.strip():
                continue
            t = parse_time_ms(s)
            n = repeats.get(t, 0)
            repeats[t] = n + 1
            eid = f"yelp:checkin:{bid}:{t}" if n == 0 else f"yelp:checkin:{bid}:{t}:{n}"
            out.append(self._activity(eid, bid, None, t, "CHECKIN", None))
        return out

    def _business(self, rec: dict) -> tuple:
        bid = _id(rec, "business_id")
        name = _text(rec, "name")
        city, state = _city_state(rec)
        cats = categories(rec.get("categories"))
        lat, lon = _coordinate(rec, "latitude"), _coordinate(rec, "longitude")
        price = price_range(rec.get("attributes"))
        open_ = is_open(rec)
        probe = BusinessEvent(f"yelp:business:{bid}:CREATED", bid, MIN_EVENT_TIME_MS, "CREATED", name, city, state,
                              cats, lat, lon, price, True)
        try:
            probe.validate()
        except InvalidEvent as exc:
            raise BadLine("invalid business", str(exc)[:120]) from None
        if bid in self._business_ids:
            raise BadLine("duplicate business_id", f"{bid} (the first record is kept)")
        self._business_ids.add(bid)
        return (bid, name, city, state, cats, lat, lon, price, open_)

    # -- pass 2: the business spill, now that every activity time is known ---------------
    def _business_events(self, spill: Path) -> None:
        first_last = self._first_last
        start = min((fl[0] for fl in first_last.values()), default=FALLBACK_CREATED_MS + 1) - 1
        r = self.report
        matched = 0
        for bid, name, city, state, cats, lat, lon, price, open_ in _read_chunks(spill):
            r.businesses += 1
            fl = first_last.get(bid)
            if fl is None:
                r.businesses_without_activity += 1
                created, last = start, start
            else:
                matched += 1
                created, last = fl[0] - 1, fl[1]
            created = max(created, MIN_EVENT_TIME_MS)
            self._seq += 1
            self._runs.add((created, BUSINESS_RANK, f"yelp:business:{bid}:CREATED", self._seq,
                            (bid, "CREATED", name, city, state, cats, lat, lon, price, True)))
            if not open_:
                self._seq += 1
                self._runs.add((max(last, created) + DAY_MS, BUSINESS_RANK, f"yelp:business:{bid}:CLOSED", self._seq,
                                (bid, "CLOSED", name, city, state, cats, lat, lon, price, False)))
        r.businesses_without_record = len(first_last) - matched

    # -- the merge ------------------------------------------------------------------------
    def events(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """Every event once, in (event_time, business first, event_id) order."""
        self.scan()
        if self._merging:
            raise RuntimeError("events() can be called once per import")
        self._merging = True
        t0 = time.perf_counter()
        r = self.report
        progress = self.progress
        total = r.spilled
        prev: tuple | None = None
        n = 0
        if progress is not None:
            progress("merge", "events", 0, 0, total, False)
        for t, rank, eid, _seq, p in self._runs.merged():
            n += 1
            if progress is not None and n % PROGRESS_EVERY == 0:
                progress("merge", "events", n, n, total, False)
            key = (t, rank, eid)
            if key == prev:
                r.duplicates += 1
                continue
            prev = key
            if r.first_event_ms is None:
                r.first_event_ms = t
            r.last_event_ms = t
            if rank == ACTIVITY_RANK:
                bid, uid, kind, stars = p
                r.events[kind] += 1
                yield "activity", {"event_id": eid, "business_id": bid, "user_id": uid, "event_time": t, "kind": kind,
                                   "search_id": None, "rating": stars}
            else:
                bid, kind, name, city, state, cats, lat, lon, price, open_ = p
                r.events[kind] += 1
                yield "business", {"event_id": eid, "business_id": bid, "event_time": t, "kind": kind, "name": name,
                                   "city": city, "state": state, "categories": list(cats), "latitude": lat,
                                   "longitude": lon, "price_range": price, "is_open": open_}
        r.merge_seconds = time.perf_counter() - t0
        if progress is not None:
            progress("merge", "events", n, n, total, True)
