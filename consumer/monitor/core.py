"""The monitor's broker-free core: decoded predictions and conversions in, every figure out.

**Order.** Records of different topics and partitions arrive in no useful order, so they wait in
a small buffer (a heap on event time) until the caller releases them up to a time
(``release(upto_ms)``: the Kafka shell passes the slowest partition's event time minus a settle
margin; ``release()`` releases all). Released records are applied in event-time order, a
conversion before a prediction of the same millisecond: the worker scores the conversion event
itself, and the user converted on the ranking *before* that score.

**Cells.** One per ``arm`` field of the predictions: every serving arm, ``holdout`` (the hold-out
topic) and ``shadow`` (the shadow topic). A cell holds each of its businesses' latest score (by
event time), market (``group_key``) and first prediction (the start of its exposure), as a reader
of that topic ranks them; the arms split the inventory, so each arm ranks its own businesses
(``report`` does the same).

**What a conversion counts** (a distinct ``event_id`` of a conversion kind), in each window, for
each cell that has scored its business before it:

* capture: whether the business was in its market's top-k by the cell's latest scores (ties: the
  expected share under a random order, as ``models.evaluate.topk_capture``), and the same by
  popularity (the business's conversions before this one, counted from the start of the activity
  topic: the worker's popularity baseline) among the same businesses;
* the business's conversions after its first exposure: the per-business rate of the uplift;
* the delay since the business's latest score (the score the user saw);
* once, over all cells but shadow: coverage (whether any serving or hold-out score existed).

Conversions of a business no cell has scored count only in coverage: their market is unknown.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from consumer.monitor.windows import Ring, parse_windows
from consumer.pipeline.arms import HOLDOUT, SHADOW
from consumer.tools.report import Uplift, conversions_per_day, uplift
from features.spec import DEFAULT_SPEC

ALL = "all"
OTHER = "other"
# Upper bounds of the delay histogram, seconds (the last one open).
DELAY_BOUNDS_S = (60, 300, 900, 3_600, 3 * 3_600, 6 * 3_600, 12 * 3_600, 86_400, 3 * 86_400, 7 * 86_400, math.inf)
QUANTILES = (0.5, 0.9)
_CONVERSION, _PREDICTION = 0, 1


@dataclass(frozen=True)
class MonitorSettings:
    windows: tuple[tuple[str, int], ...] = (("1h", 3_600_000), ("24h", 86_400_000), ("7d", 604_800_000))
    buckets: int = 24
    top_k: int = 3
    top_markets: int = 20
    settle_ms: int = 60_000
    lateness_ms: int = DEFAULT_SPEC.allowed_lateness_ms
    conversion_kinds: frozenset[str] = frozenset({"BIZSITE_VISIT", "CALL", "DIRECTIONS"})

    @classmethod
    def from_config(cls, cfg: Any) -> MonitorSettings:
        kinds = frozenset(k.strip() for k in cfg.conversion_kinds.split(",") if k.strip())
        return cls(
            windows=parse_windows(cfg.monitor_windows),
            buckets=cfg.monitor_buckets,
            top_k=cfg.monitor_top_k,
            top_markets=cfg.monitor_top_markets,
            settle_ms=cfg.monitor_settle_ms,
            conversion_kinds=kinds,
        )


@dataclass
class Scored:
    market: str
    score: float
    event_time: int
    first_ms: int


@dataclass
class Cell:
    biz: dict[str, Scored] = field(default_factory=dict)
    markets: dict[str, dict[str, float]] = field(default_factory=dict)  # market -> business -> score
    model_version: str = ""


@dataclass
class Figures:
    """One (window, cell, market): what the metrics show."""

    conversions: float  # conversions of businesses the cell had scored: capture's denominator
    capture: float
    popularity_capture: float
    businesses: int  # exposed businesses: the uplift's units
    conv_per_business_day: float
    uplift: Uplift | None = None


@dataclass
class Snapshot:
    now_ms: int
    windows: list[str]
    markets: list[str]  # the top markets by conversions in the largest window (labels besides other, all)
    figures: dict[tuple[str, str, str], Figures]  # (window, cell, market)
    coverage: dict[str, tuple[float, float]]  # window -> (conversions, of which scored)
    delay_s: dict[tuple[str, str, float], float]  # (window, cell, quantile) -> upper bound, seconds
    model_versions: dict[str, str]


@dataclass
class _Rings:
    capture: Ring  # (cell, market) -> [conversions, model top-k credit, popularity top-k credit]
    biz: Ring  # (cell, business) -> [conversions after first exposure]
    delay: Ring  # (cell, delay bucket) -> [conversions]
    coverage: Ring  # "all" -> [conversions, scored]


def topk_credit(x: float, values: Iterable[float], k: int) -> float:
    """Probability that an item scored ``x`` is in the top ``k`` of ``values`` (which include it),
    ties in a random order."""
    greater = equal = 0
    for v in values:
        if v > x:
            greater += 1
        elif v == x:
            equal += 1
    if greater >= k:
        return 0.0
    return min(1.0, (k - greater) / max(equal, 1))


class MonitorCore:
    def __init__(self, settings: MonitorSettings):
        self.s = settings
        self.cells: dict[str, Cell] = {}
        self.popularity: dict[str, int] = {}
        self.rings: dict[str, _Rings] = {}
        for name, span in settings.windows:
            w = max(1, -(-span // settings.buckets))
            self.rings[name] = _Rings(
                Ring(w, settings.buckets, 3),
                Ring(w, settings.buckets, 1),
                Ring(w, settings.buckets, 1),
                Ring(w, settings.buckets, 2),
            )
        self._heap: list[tuple[int, int, int, Any]] = []
        self._seq = 0
        self._seen: dict[str, int] = {}  # conversion event_id -> event time (pruned past the lateness)
        self.activity_end_ms = -1  # newest activity event time seen
        self.released_ms = -1  # every record up to here is applied
        self.counts = {"predictions": 0, "conversions": 0, "duplicates": 0, "late": 0}

    # ------------------------------------------------------------------------------- input
    def add_prediction(self, p: dict[str, Any]) -> None:
        self._push(int(p["event_time"]), _PREDICTION, p)

    def add_activity(self, business_id: str, kind: str, event_id: str, event_time: int) -> None:
        self.activity_end_ms = max(self.activity_end_ms, event_time)
        if kind in self.s.conversion_kinds:
            self._push(event_time, _CONVERSION, (business_id, event_id))

    def _push(self, t: int, order: int, payload: Any) -> None:
        if t <= self.released_ms:  # behind the release point: apply now, out of order
            self.counts["late"] += 1
            self._apply(t, order, payload)
            return
        self._seq += 1
        heapq.heappush(self._heap, (t, order, self._seq, payload))

    @property
    def pending(self) -> int:
        return len(self._heap)

    def release(self, upto_ms: int | None = None) -> int:
        """Apply the buffered records with event time <= ``upto_ms`` (all when None)."""
        n = 0
        while self._heap and (upto_ms is None or self._heap[0][0] <= upto_ms):
            t, order, _, payload = heapq.heappop(self._heap)
            self._apply(t, order, payload)
            self.released_ms = max(self.released_ms, t)
            n += 1
        if upto_ms is None:
            self.released_ms = max(self.released_ms, self.activity_end_ms)
        elif upto_ms > self.released_ms:
            self.released_ms = min(upto_ms, max(self.activity_end_ms, self.released_ms))
        return n

    @property
    def now_ms(self) -> int:
        """The end of the windows: the release point (never past the newest activity)."""
        return self.released_ms

    # ------------------------------------------------------------------------------- apply
    def _apply(self, t: int, order: int, payload: Any) -> None:
        if order == _PREDICTION:
            self._apply_prediction(t, payload)
        else:
            self._apply_conversion(t, *payload)

    def _apply_prediction(self, t: int, p: dict[str, Any]) -> None:
        self.counts["predictions"] += 1
        cell = self.cells.setdefault(p["arm"], Cell())
        b, market, score = p["business_id"], p["group_key"], float(p["score"])
        cur = cell.biz.get(b)
        if cur is None:
            cell.biz[b] = Scored(market, score, t, t)
        else:
            cur.first_ms = min(cur.first_ms, t)
            if t < cur.event_time:
                return  # an older score than the one a reader already ranks by
            if cur.market != market:
                cell.markets.get(cur.market, {}).pop(b, None)
            cur.market, cur.score, cur.event_time = market, score, t
        cell.markets.setdefault(market, {})[b] = score
        cell.model_version = p.get("model_version") or cell.model_version

    def _apply_conversion(self, t: int, business_id: str, event_id: str) -> None:
        if event_id in self._seen:
            self.counts["duplicates"] += 1
            return
        self._seen[event_id] = t
        if len(self._seen) > 1024 and len(self._seen) % 1024 == 0:
            horizon = t - self.s.lateness_ms
            self._seen = {e: et for e, et in self._seen.items() if et >= horizon}
        self.counts["conversions"] += 1
        k = self.s.top_k
        pop = self.popularity
        scored_any = 0.0
        for name, cell in self.cells.items():
            e = cell.biz.get(business_id)
            if e is None or e.event_time >= t:
                continue  # no score yet, or only the one this conversion triggered
            if name != SHADOW:
                scored_any = 1.0
            group = cell.markets.get(e.market, {})
            hit = topk_credit(e.score, group.values(), k)
            hit_pop = topk_credit(pop.get(business_id, 0), (pop.get(x, 0) for x in group), k)
            delay_s = (t - e.event_time) / 1000.0
            bucket = next(i for i, ub in enumerate(DELAY_BOUNDS_S) if delay_s <= ub)
            for r in self.rings.values():
                r.capture.add(t, (name, e.market), (1.0, hit, hit_pop))
                r.biz.add(t, (name, business_id), (1.0,))
                r.delay.add(t, (name, bucket), (1.0,))
        for r in self.rings.values():
            r.coverage.add(t, ALL, (1.0, scored_any))
        pop[business_id] = pop.get(business_id, 0) + 1

    # ------------------------------------------------------------------------------- output
    def snapshot(self) -> Snapshot:
        now = self.now_ms
        names = [n for n, _ in self.s.windows]
        largest = max(self.s.windows, key=lambda w: w[1])[0]
        volume: dict[str, float] = {}
        for (_cell, market), vec in self.rings[largest].capture.totals(now).items():
            volume[market] = volume.get(market, 0.0) + vec[0]
        top = sorted(volume, key=lambda m: (-volume[m], m))[: self.s.top_markets]
        top_set = set(top)

        def label(market: str) -> str:
            return market if market in top_set else OTHER

        figures: dict[tuple[str, str, str], Figures] = {}
        coverage: dict[str, tuple[float, float]] = {}
        delay: dict[tuple[str, str, float], float] = {}
        for wname in names:
            rings = self.rings[wname]
            start = rings.capture.start_ms(now)
            cap: dict[tuple[str, str], list[float]] = {}
            for (cell_name, market), vec in rings.capture.totals(now).items():
                for lab in (label(market), ALL):
                    acc = cap.setdefault((cell_name, lab), [0.0, 0.0, 0.0])
                    for i in range(3):
                        acc[i] += vec[i]
            conv = rings.biz.totals(now)
            rates: dict[tuple[str, str], list[float]] = {}
            for cell_name, cell in self.cells.items():
                for b, e in cell.biz.items():
                    if e.first_ms > now:
                        continue
                    n = conv.get((cell_name, b), (0.0,))[0]
                    r = conversions_per_day(n, max(e.first_ms, start), now)
                    for lab in (label(e.market), ALL):
                        rates.setdefault((cell_name, lab), []).append(r)
            for key in set(cap) | set(rates):
                c = cap.get(key, [0.0, 0.0, 0.0])
                rs = np.asarray(rates.get(key, []))
                figures[(wname, *key)] = Figures(
                    c[0],
                    c[1] / c[0] if c[0] else math.nan,
                    c[2] / c[0] if c[0] else math.nan,
                    len(rs),
                    float(rs.mean()) if len(rs) else math.nan,
                )
            for (w2, c2, lab), f in figures.items():
                hold = rates.get((HOLDOUT, lab))
                if w2 == wname and c2 not in (HOLDOUT, SHADOW) and hold:
                    f.uplift = uplift(np.asarray(rates.get((c2, lab), [])), np.asarray(hold), HOLDOUT)
            cov = rings.coverage.totals(now).get(ALL, [0.0, 0.0])
            coverage[wname] = (cov[0], cov[1])
            hist: dict[str, list[float]] = {}
            for (cell_name, bucket), vec in rings.delay.totals(now).items():
                hist.setdefault(cell_name, [0.0] * len(DELAY_BOUNDS_S))[bucket] += vec[0]
            for cell_name, counts in hist.items():
                total = sum(counts)
                for q in QUANTILES:
                    run = 0.0
                    for i, cnt in enumerate(counts):
                        run += cnt
                        if run >= q * total:
                            delay[(wname, cell_name, q)] = DELAY_BOUNDS_S[i]
                            break
        return Snapshot(now, names, top, figures, coverage, delay, {n: c.model_version for n, c in self.cells.items()})

    def memory(self) -> dict[str, int]:
        """What the core holds: scored businesses, window entries, buffered records."""
        return {
            "businesses": sum(len(c.biz) for c in self.cells.values()),
            "window_entries": sum(
                r.capture.entries() + r.biz.entries() + r.delay.entries() + r.coverage.entries()
                for r in self.rings.values()
            ),
            "pending": self.pending,
        }
