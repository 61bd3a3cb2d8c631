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

Modules: ``yelp_fields`` (one record's fields, the rules above), ``sortruns`` (the external sort),
``report`` (what the import did); this module finds the files, scans them and merges the events.
"""

from __future__ import annotations

import datetime as _dt
import json
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from consumer.errors import BadLine, YelpImportError
from consumer.tools.importers import sortruns
from consumer.tools.importers.report import FileReport, ImportReport
from consumer.tools.importers.sortruns import SortedRuns, read_chunks, spill_items
from consumer.tools.importers.yelp_fields import (
    DAY_MS,
    categories,
    city_state,
    coordinate,
    count_hour_of_week,
    is_open,
    optional_id,
    parse_time_ms,
    price_range,
    rating,
    required_id,
    text_field,
    tip_event_id,
)
from features.errors import InvalidEvent
from features.events import (
    MIN_EVENT_TIME_MS,
    ActivityEvent,
    BusinessEvent,
)
from features.order import ACTIVITY_RANK, BUSINESS_RANK

KINDS = ("business", "review", "tip", "checkin")
MIXED = "mixed"
IGNORED_TYPES = ("user",)  # old mixed files hold user profiles: not events
RUN_SIZE = 200_000
PROGRESS_EVERY = 8192

_EPOCH_ORDINAL = _dt.date(1970, 1, 1).toordinal()
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
        self._runs: SortedRuns | None = None
        self._scanned = False
        self._merging = False
        self._seq = 0
        self._first_last: dict[str, list[int]] = {}
        self._business_ids: set[str] = set()

    def __enter__(self) -> YelpImport:
        try:
            self._folder = Path(tempfile.mkdtemp(prefix="streamrank-yelp-", dir=self.tmp_dir))
        except OSError as exc:
            raise YelpImportError(
                f"cannot create the sort folder under {self.tmp_dir or tempfile.gettempdir()}: {exc}"
            ) from exc
        self._runs = SortedRuns(self._folder, self.run_size)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None

    # -- pass 1: every file, once -------------------------------------------------------
    @property
    def _sorted(self) -> SortedRuns:
        """The open import's sort runs (the import is a context manager: they exist inside it)."""
        if self._runs is None:
            raise RuntimeError("YelpImport is a context manager: use it in a with block")
        return self._runs

    def scan(self) -> ImportReport:
        runs = self._sorted
        if self._scanned:
            return self.report
        t0 = time.perf_counter()
        spill = runs.folder / "businesses.bin"
        businesses: list[Any] = []
        with open(spill, "wb") as spill_f:
            for yf in self.files:
                self._scan_file(yf, businesses, spill_f)
            spill_items(businesses, spill_f)
        self._business_events(spill)
        spill.unlink()
        self._sorted.flush()
        r = self.report
        r.spilled, r.runs, r.spill_bytes = self._sorted.count, len(self._sorted.paths), self._sorted.bytes
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
                    if len(businesses) >= sortruns.CHUNK:
                        spill_items(businesses, spill_f)
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
        self._sorted.add((t, ACTIVITY_RANK, ev.event_id, self._seq, (ev.business_id, ev.user_id, ev.kind, ev.rating)))

    @staticmethod
    def _activity(
        event_id: str, business_id: str, user_id: str | None, t: int, kind: str, r: int | None
    ) -> ActivityEvent:
        ev = ActivityEvent(event_id, business_id, user_id, t, kind, None, r)
        try:
            ev.validate()
        except InvalidEvent as exc:
            raise BadLine("invalid event", str(exc)[:120]) from None
        return ev

    def _review(self, rec: dict) -> list[ActivityEvent]:
        bid = required_id(rec, "business_id")
        rid = required_id(rec, "review_id")
        uid = optional_id(rec, "user_id")
        if "stars" not in rec:
            raise BadLine("missing stars")
        r = rating(rec["stars"])
        t = parse_time_ms(rec.get("date"))
        return [self._activity(f"yelp:review:{rid}", bid, uid, t, "REVIEW", r)]

    def _tip(self, rec: dict) -> list[ActivityEvent]:
        bid = required_id(rec, "business_id")
        uid = optional_id(rec, "user_id")
        t = parse_time_ms(rec.get("date"))
        text = rec.get("text")
        text = text if isinstance(text, str) else ""
        return [self._activity(tip_event_id(uid, bid, t, text), bid, uid, t, "TIP", None)]

    def _checkins(self, rec: dict) -> list[ActivityEvent]:
        bid = required_id(rec, "business_id")
        dates = rec.get("date")
        if dates is None:
            info = rec.get("checkin_info", rec.get("time"))
            if info is None:
                raise BadLine("check-in without date")
            n = count_hour_of_week(info)
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
        bid = required_id(rec, "business_id")
        name = text_field(rec, "name")
        city, state = city_state(rec)
        cats = categories(rec.get("categories"))
        lat, lon = coordinate(rec, "latitude"), coordinate(rec, "longitude")
        price = price_range(rec.get("attributes"))
        open_ = is_open(rec)
        probe = BusinessEvent(
            f"yelp:business:{bid}:CREATED",
            bid,
            MIN_EVENT_TIME_MS,
            "CREATED",
            name,
            city,
            state,
            cats,
            lat,
            lon,
            price,
            True,
        )
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
        for bid, name, city, state, cats, lat, lon, price, open_ in read_chunks(spill):
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
            self._sorted.add(
                (
                    created,
                    BUSINESS_RANK,
                    f"yelp:business:{bid}:CREATED",
                    self._seq,
                    (bid, "CREATED", name, city, state, cats, lat, lon, price, True),
                )
            )
            if not open_:
                self._seq += 1
                self._sorted.add(
                    (
                        max(last, created) + DAY_MS,
                        BUSINESS_RANK,
                        f"yelp:business:{bid}:CLOSED",
                        self._seq,
                        (bid, "CLOSED", name, city, state, cats, lat, lon, price, False),
                    )
                )
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
        for t, rank, eid, _seq, p in self._sorted.merged():
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
                yield (
                    "activity",
                    {
                        "event_id": eid,
                        "business_id": bid,
                        "user_id": uid,
                        "event_time": t,
                        "kind": kind,
                        "search_id": None,
                        "rating": stars,
                    },
                )
            else:
                bid, kind, name, city, state, cats, lat, lon, price, open_ = p
                r.events[kind] += 1
                yield (
                    "business",
                    {
                        "event_id": eid,
                        "business_id": bid,
                        "event_time": t,
                        "kind": kind,
                        "name": name,
                        "city": city,
                        "state": state,
                        "categories": list(cats),
                        "latitude": lat,
                        "longitude": lon,
                        "price_range": price,
                        "is_open": open_,
                    },
                )
        r.merge_seconds = time.perf_counter() - t0
        if progress is not None:
            progress("merge", "events", n, n, total, True)
