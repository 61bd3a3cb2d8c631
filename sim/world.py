"""The simulated world: a local-business site whose event history the worker learns from.

Model (all hidden state lives in :class:`World`, never in an event):

* **Businesses** sit in a city and a primary category (Yelp-like names: "Phoenix", "Restaurants",
  plus a subcategory such as "Mexican"). Each has a hidden base popularity (log-normal), a hidden
  *quality* that drifts: a share of businesses move from their initial quality ``q0`` to a new
  level ``q1`` over 10..40 days (``cos(theta) q0 + sin(theta) q1``, so the population's quality
  distribution stays N(0, sd) while individuals rise or decline), all have a short-term "form"
  (AR(1) per day, time constant ~6 days), and a few take a step shock (new chef, bad inspection).
  Separately, "buzz" episodes (a viral post) multiply a business's exposure for a few days.
* **Lifecycle**: most businesses exist at the start (``CREATED`` at ``start_time_ms``); a share opens
  during the period (``CREATED`` mid-period, then a ramp-up of traffic). Businesses close with a
  daily hazard that grows as quality falls (``CLOSED``; no activity afterwards); some of them
  ``REOPENED`` days later. Occasional ``UPDATED`` events change the price range, the subcategory or
  the name. Business events always carry the full profile (the topic is compacted).
* **Traffic**: per city x category *group* and per simulated day, searches arrive with a demand set
  by the city, the category, the number of listed businesses in the group and the day of the week
  (leisure categories peak on weekends, services on weekdays), at local hours drawn from an hourly
  profile (cities keep their own UTC offset, DST ignored). A search session (``search_id``) views
  several businesses of its group, chosen in proportion to ``popularity * exp(b_v * quality) *
  ramp * exposure_boost``: the **exposure seam** (``exposure_boost(business_id) -> float``, called
  once per listed business per simulated day, default 1). A share of sessions are direct visits
  (one view, no search). ~10 % of sessions are anonymous; the others belong to a stable user of the
  city, with a heavy-tailed activity per user.
* **Per view**: ``BIZSITE_VISIT``/``CALL``/``DIRECTIONS`` with probabilities ``base * category
  multiplier * exp(b_c * quality)`` seconds to minutes later; identified users occasionally write a
  ``REVIEW`` (rating 1..5 from quality plus noise) or a ``TIP``, or ``CHECKIN``, hours later.
* **Delivery**: events are yielded in delivery order: event-time order, except that a share is
  delivered late (up to ``late_max_ms``), a share is delivered twice (the identical event, same
  ``event_id``, a little later), and for a few businesses opened during the period the ``CREATED``
  arrives only after their first activity event.

**Sparse worlds** (:meth:`WorldConfig.sparse`, the :data:`SPARSE` preset): the shape of real
local-business data such as a Yelp city: ~2,000 businesses over years, a few delivered events per
business and month (mostly ``REVIEW``/``TIP``/``CHECKIN``; ``page_view_events=False``: views still
drive everything, but are not delivered), most businesses quiet most days, slow dynamics (quality
trends over months to years). The same model, other knobs; a six-year world of 2,000 businesses
generates in seconds (``python -m sim.bench --sparse --days 2190 --businesses 2000``).

Because quality drifts (and businesses open and close), a business's recent conversions predict its
next day better than its all-time conversions; Poisson noise keeps any predictor far from perfect.

Determinism: the stream is a pure function of the config (and of ``exposure_boost``): static world
from ``default_rng([seed, 0])``, each simulated day from ``default_rng([seed, 1, day])``. Event ids
are ``f"{seed}-{n}"``, search ids ``f"{seed}-s{n}"``, business ids ``b000123``, user ids ``u0001234``.

Simulated days are *local* days: day ``d`` of a city starts at its local midnight. The batch of day
``d`` covers ``[day_start(d), day_start(d + 1))`` in UTC, where ``day_start(d)`` is the local midnight
of the easternmost configured city (:meth:`World.day_start`, :meth:`World.day_index`). Quality is
continuous in time (:meth:`World.quality`) and sampled once per day at ``day_start(d) + 12 h``.

Why one long module: :class:`World` is one model. Its hidden state (quality, form, buzz, lifecycle)
and the daily step that turns it into traffic share a dozen arrays and the equations above; split
across files, a reader would have to hold them all open to check one. The static vocabulary lives
in ``sim.catalog``; everything here is the model itself.
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from features.events import ACTIVITY_KINDS, BUSINESS_KINDS, ActivityEvent, BusinessEvent
from sim.catalog import (
    CATEGORIES,
    CITIES,
    HOURLY_LEISURE,
    HOURLY_SERVICES,
    NAME_ADJECTIVES,
    NAME_NOUNS,
    NAME_SURNAMES,
    WEEKLY_LEISURE,
    WEEKLY_SERVICES,
)

HOUR_MS = 3_600_000
DAY_MS = 86_400_000
DEFAULT_START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z, a Thursday

ExposureBoost = Callable[[str], float]

# Kind codes inside the generator: 0..6 activity kinds, 7..10 business kinds.
_N_ACT = len(ACTIVITY_KINDS)
_PAGE_VIEW, _BIZSITE, _CALL, _DIRECTIONS, _REVIEW, _TIP, _CHECKIN = range(_N_ACT)
_CREATED, _UPDATED, _CLOSED, _REOPENED = range(_N_ACT, _N_ACT + len(BUSINESS_KINDS))
_KIND_NAMES = ACTIVITY_KINDS + BUSINESS_KINDS
_RATING = (None, 1, 2, 3, 4, 5)
_NEVER = np.iinfo(np.int64).max

# Columns of the internal row arrays (int64, one row per delivered copy of an event).
_DELIV, _T, _KIND, _BIZ, _USER, _SEARCH, _RATE, _N, _BREF = range(9)
_NCOL = 9

_USER_SKEW = 1.3  # user activity: index = floor(n * U**skew): a few heavy users, a long tail
_Q_MAX = 2.5  # quality is soft-bounded: q_eff = Q_MAX * tanh(q / Q_MAX)


@dataclass(frozen=True)
class WorldConfig:
    """Every knob of the world. Same config (same seed) -> the identical event stream."""

    businesses: int = 1_000
    days: int = 60
    seed: int = 0
    start_time_ms: int = DEFAULT_START_MS
    users: int | None = None  # None: 50 per business
    cities: int = 12  # first n of sim.catalog.CITIES
    categories: int = 12  # first n of sim.catalog.CATEGORIES

    # Traffic
    views_per_business_day: float = 40.0  # mean page views per listed business and day
    session_views_mean: float = 3.5  # views per search session (geometric, >= 1)
    direct_share: float = 0.15  # sessions that land on one page without a search (search_id None)
    anonymous_share: float = 0.10  # sessions without a user_id
    view_gap_ms: float = 45_000.0  # mean time between two views of a session
    page_view_events: bool = True  # False: views still happen (and drive everything else) but are not
    # delivered, as in a review site's public export (Yelp: reviews, tips, check-ins; no views)

    # Delivery
    late_share: float = 0.01  # events delivered late ...
    late_max_ms: int = HOUR_MS  # ... by up to this much
    duplicate_share: float = 0.005  # events delivered a second time (identical, same event_id) ...
    duplicate_max_ms: int = 300_000  # ... this much later at most
    late_created_share: float = 0.1  # of the businesses opened mid-period: CREATED after first activity

    # Lifecycle
    new_business_share: float = 0.10  # businesses created during the period
    new_business_ramp_days: float = 14.0  # traffic ramps from 25 % to 100 % over this many days
    close_rate_per_day: float = 0.0005  # daily closing hazard at quality 0 ...
    close_quality_effect: float = 1.0  # ... times exp(-effect * quality)
    reopen_share: float = 0.25  # closed businesses that reopen 3..21 days later (if within the period)
    update_rate_per_day: float = 0.004  # UPDATED events per business and day

    # Hidden quality and its effects
    popularity_sigma: float = 1.0  # log-normal base popularity
    quality_sd: float = 0.8  # quality levels ~ N(0, sd)
    trend_share: float = 0.6  # businesses drifting from q0 to a new level q1 ~ N(0, sd) ...
    trend_days: tuple[float, float] = (10.0, 40.0)  # ... over this many days (uniform), starting any time
    shock_share: float = 0.08  # businesses with one step change of quality ...
    shock_size: float = 1.0  # ... of about this size (either sign)
    form_sd: float = 0.8  # short-term "form": a mean-reverting (AR(1), daily) quality component ...
    form_days: float = 6.0  # ... with this time constant in days
    buzz_rate_per_day: float = 0.03  # buzz episodes (local news, a viral post) per business and day ...
    buzz_days: tuple[float, float] = (2.0, 8.0)  # ... lasting this many days ...
    buzz_boost: tuple[float, float] = (1.5, 4.0)  # ... multiplying exposure by this much (not quality)
    view_quality_effect: float = 0.6  # exposure weight ~ exp(effect * quality)
    conversion_quality_effect: float = 0.8  # conversion probabilities ~ exp(effect * quality)
    conversion_rates: tuple[float, float, float] = (0.011, 0.006, 0.009)  # BIZSITE, CALL, DIRECTIONS at q=0
    review_rate: float = 0.004  # REVIEW per identified view (x category multiplier)
    tip_rate: float = 0.0015  # TIP per identified view (x category multiplier)
    checkin_rate: float = 0.005  # CHECKIN per identified view (x category multiplier)
    rating_mean: float = 3.6  # rating = round(mean + slope * quality + N(0, noise)), clipped to 1..5
    rating_slope: float = 0.9
    rating_noise: float = 0.9

    def __post_init__(self) -> None:
        if self.businesses < 1 or self.days < 1:
            raise ValueError("businesses and days must be >= 1")
        if not 1 <= self.cities <= len(CITIES) or not 1 <= self.categories <= len(CATEGORIES):
            raise ValueError(f"cities must be 1..{len(CITIES)}, categories 1..{len(CATEGORIES)}")
        if self.users is not None and self.users < 1:
            raise ValueError("users must be >= 1")
        for name in (
            "direct_share",
            "anonymous_share",
            "late_share",
            "duplicate_share",
            "late_created_share",
            "new_business_share",
            "reopen_share",
            "trend_share",
            "shock_share",
        ):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]")
        if self.late_max_ms < 1_000 or self.duplicate_max_ms < 100:
            raise ValueError("late_max_ms must be >= 1000 and duplicate_max_ms >= 100")
        if self.session_views_mean < 1.0 or self.views_per_business_day <= 0:
            raise ValueError("session_views_mean must be >= 1 and views_per_business_day > 0")
        if len(self.conversion_rates) != 3:
            raise ValueError("conversion_rates: three rates (BIZSITE_VISIT, CALL, DIRECTIONS)")

    @classmethod
    def sparse(cls, businesses: int = 2_000, days: int = 3 * 365, seed: int = 0, **overrides: Any) -> WorldConfig:
        """The sparse, Yelp-like preset (:data:`SPARSE`): a few delivered events per business and
        month, mostly ``REVIEW``/``TIP``/``CHECKIN``, no page views, slow dynamics (months to years).
        ``overrides`` replace any knob, the preset's included."""
        return cls(businesses=businesses, days=days, seed=seed, **{**SPARSE, **overrides})

    @property
    def n_users(self) -> int:
        return self.users if self.users is not None else max(100, 50 * self.businesses)


# The sparse preset (``WorldConfig.sparse``): the shape of real local-business data such as a Yelp
# city (about 2,000 businesses over years). Views are not delivered, and they are rare: one a day for
# a typical business, so a listing sees a few logged events a month (about 1.5 REVIEW/TIP/CHECKIN and
# 1 BIZSITE_VISIT/CALL/DIRECTIONS on average, heavy-tailed: most businesses are quiet most days and
# gaps of weeks are common). Quality moves over months (trends of 3 months to 2 years, form with a
# 45-day time constant, month-long buzz), businesses open and close over the years.
SPARSE: dict[str, Any] = dict(
    page_view_events=False,
    views_per_business_day=1.0,
    session_views_mean=1.5,
    conversion_rates=(0.012, 0.008, 0.01),
    review_rate=0.022,
    tip_rate=0.01,
    checkin_rate=0.02,
    popularity_sigma=1.2,
    trend_days=(90.0, 720.0),
    form_sd=0.5,
    form_days=45.0,
    shock_share=0.2,
    buzz_rate_per_day=0.002,
    buzz_days=(10.0, 45.0),
    buzz_boost=(1.5, 3.0),
    new_business_share=0.25,
    new_business_ramp_days=90.0,
    close_rate_per_day=0.0002,
    reopen_share=0.1,
    update_rate_per_day=0.0005,
)


class DayTruth(NamedTuple):
    """Hidden per-business truth of one simulated day, aligned with ``World.business_ids``."""

    quality: np.ndarray  # quality sampled for the day
    listed: np.ndarray  # bool: open during some part of the day
    expected_views: np.ndarray
    expected_conversions: np.ndarray  # BIZSITE_VISIT + CALL + DIRECTIONS


@dataclass
class _Day:
    q: np.ndarray
    listed: np.ndarray
    w: np.ndarray  # exposure weight
    wg: np.ndarray  # per group: total weight
    demand: np.ndarray  # per group: expected views of the day
    cw: np.ndarray  # cumulative weight in group order
    cw_before: np.ndarray  # per group: cumulative weight before the group
    glast: np.ndarray  # per group: position of its last positive-weight business
    pconv: np.ndarray  # (n, 3) BIZSITE/CALL/DIRECTIONS per view
    pother: np.ndarray  # (n, 3) REVIEW/TIP/CHECKIN per identified view


@dataclass
class _Stream:
    """Mutable state of one pass over the stream (so that a World can be replayed)."""

    n_event: int = 0
    n_search: int = 0
    buffer: np.ndarray = field(default_factory=lambda: np.empty((0, _NCOL), np.int64))
    held: dict[int, np.ndarray] = field(default_factory=dict)  # late CREATED rows by business index


class World:
    """The static world (businesses, users, lifecycles, hidden quality) and its event stream.

    The hidden truth (``quality``, ``trend``, ``expected_day``...) is for tests and reports only.
    """

    def __init__(self, cfg: WorldConfig | None = None, *, exposure_boost: ExposureBoost | None = None):
        self.cfg = cfg = cfg or WorldConfig()
        self.exposure_boost = exposure_boost
        rng = np.random.default_rng([cfg.seed, 0])
        self._cities = CITIES[: cfg.cities]
        self._cats = CATEGORIES[: cfg.categories]
        C, K, N = len(self._cities), len(self._cats), cfg.businesses
        self._K, self._G = K, C * K
        start = cfg.start_time_ms

        # Time frame: local days, batch windows aligned on the easternmost city.
        shifts = np.array([-c.utc_offset_h * HOUR_MS for c in self._cities], np.int64)
        self._min_shift = int(shifts.min())
        self._city_base = start + shifts  # local midnight of day 0, per city
        self.end_ms = start + cfg.days * DAY_MS + int(shifts.max())  # end of the last local day anywhere
        wd0 = _dt.datetime.fromtimestamp(start / 1000, _dt.UTC).weekday()
        self._weekday = [(wd0 + d) % 7 for d in range(cfg.days)]

        # Static tables
        city_share = _norm([c.share for c in self._cities])
        cat_share = _norm([k.share for k in self._cats])
        self._city_traffic = np.array([c.traffic for c in self._cities])
        self._cat_traffic = np.array([k.traffic for k in self._cats])
        self._cat_leisure = np.array([k.leisure for k in self._cats])
        self._weekly = np.array([_norm(WEEKLY_LEISURE) * 7, _norm(WEEKLY_SERVICES) * 7])
        self._hcum = [np.cumsum(_norm(HOURLY_LEISURE)), np.cumsum(_norm(HOURLY_SERVICES))]
        for h in self._hcum:
            h[-1] = 1.0

        # Businesses
        self.business_ids = [f"b{i:06d}" for i in range(N)]
        self._index = {b: i for i, b in enumerate(self.business_ids)}
        self.b_city = rng.choice(C, N, p=city_share)
        self.b_cat = rng.choice(K, N, p=cat_share)
        self.b_group = self.b_city * K + self.b_cat
        self._profiles = self._make_profiles(rng)
        self.popularity = rng.lognormal(0.0, cfg.popularity_sigma, N)
        self.q0 = rng.normal(0.0, cfg.quality_sd, N)
        period = cfg.days * DAY_MS
        trending = rng.random(N) < cfg.trend_share
        self.q1 = np.where(trending, rng.normal(0.0, cfg.quality_sd, N), self.q0)
        dur = rng.uniform(*cfg.trend_days, N) * DAY_MS
        self.trend_t0 = (start - dur / 2 + rng.random(N) * period).astype(np.int64)
        self.trend_dur = np.where(trending, dur, np.inf)
        has_shock = rng.random(N) < cfg.shock_share
        self.shock_t = np.where(has_shock, start + (rng.uniform(0.15, 0.9, N) * period).astype(np.int64), _NEVER)
        self.shock = np.where(has_shock, cfg.shock_size * rng.uniform(0.6, 1.4, N) * rng.choice([-1.0, 1.0], N), 0.0)
        # Form: AR(1) per day, sampled at day midpoints (index d + 1 is day d; one extra at each edge)
        rho = math.exp(-1.0 / cfg.form_days) if cfg.form_days > 0 else 0.0
        eps = rng.normal(0.0, cfg.form_sd, (cfg.days + 2, N))
        form = np.empty_like(eps)
        form[0] = eps[0]
        for d in range(1, cfg.days + 2):
            form[d] = rho * form[d - 1] + math.sqrt(1 - rho * rho) * eps[d]
        self.form = form
        # Buzz: exposure multipliers per day (hidden, not quality)
        self.buzz = np.ones((cfg.days, N))
        n_buzz = rng.poisson(cfg.buzz_rate_per_day * cfg.days, N)
        for i in np.flatnonzero(n_buzz).tolist():
            for _ in range(int(n_buzz[i])):
                d0 = int(rng.integers(0, cfg.days))
                d1 = d0 + int(round(rng.uniform(*cfg.buzz_days)))
                self.buzz[d0:d1, i] *= rng.uniform(*cfg.buzz_boost)

        # Lifecycle
        is_new = (rng.random(N) < cfg.new_business_share) & (cfg.days >= 4)
        new_t = start + DAY_MS + (rng.random(N) * max(1, cfg.days - 3) * DAY_MS).astype(np.int64)
        self.created = np.where(is_new, new_t, start + np.arange(N, dtype=np.int64))
        self.is_new = is_new
        self.closed, self.reopened = self._make_closures(rng)
        self._late_created = self._pick_late_created(rng)
        self._build_business_events(rng)

        # Users: contiguous segments per city, ids shuffled so heavy users are not u0000000.
        U = cfg.n_users
        counts = np.maximum(1, np.floor(city_share * U).astype(np.int64))
        self._ustart = np.concatenate([[0], np.cumsum(counts)[:-1]])
        self._ucount = counts
        self._n_users = int(counts.sum())
        perm = rng.permutation(self._n_users)
        self._uids: list[str | None] = [f"u{p:07d}" for p in perm.tolist()] + [None]

        # Groups: businesses sorted by group (for weighted draws within a group).
        self._gperm = np.argsort(self.b_group, kind="stable")
        self._gsorted = self.b_group[self._gperm]
        first_days = self._listed(0) & ~self.is_new
        n0 = np.bincount(self.b_group[first_days], minlength=self._G).astype(float)
        base = self._group_base() * n0**0.85
        mean_len = cfg.direct_share + (1 - cfg.direct_share) * cfg.session_views_mean
        self._mean_len = mean_len
        self._demand_scale = cfg.views_per_business_day * max(1, int(first_days.sum())) / max(base.sum(), 1e-9)

        # Per-business per-view rates (category part)
        conv_mult = np.array([k.conv for k in self._cats])
        self._pconv_base = np.asarray(cfg.conversion_rates)[None, :] * conv_mult[self.b_cat]
        rev = np.array([k.review for k in self._cats])[self.b_cat]
        chk = np.array([k.checkin for k in self._cats])[self.b_cat]
        self._pother = np.stack([cfg.review_rate * rev, cfg.tip_rate * rev, cfg.checkin_rate * chk], axis=1)

    # ------------------------------------------------------------------ public truth (tests/reports)

    def day_start(self, d: int) -> int:
        """UTC start of simulated day ``d`` (local midnight of the easternmost city)."""
        return self.cfg.start_time_ms + d * DAY_MS + self._min_shift

    def day_index(self, t_ms: int | np.ndarray) -> int | np.ndarray:
        """The simulated day an event time falls into (may be -1 or ``days`` at the edges)."""
        return (t_ms - self.cfg.start_time_ms - self._min_shift) // DAY_MS

    def index_of(self, business_id: str) -> int:
        return self._index[business_id]

    def quality(self, business_id: str, t_ms: int) -> float:
        """Hidden quality of a business at time ``t_ms`` (roughly -2.5..2.5; 0 is average)."""
        i = self._index[business_id]
        return float(self._quality(t_ms)[i])

    def trend(self, business_id: str) -> float:
        """Hidden average drift of quality over the period, per day (form and shocks not included)."""
        i = self._index[business_id]
        end = self.cfg.start_time_ms + self.cfg.days * DAY_MS
        return float((self._drift(end)[i] - self._drift(self.cfg.start_time_ms)[i]) / self.cfg.days)

    def lifecycle(self, business_id: str) -> tuple[int, int | None, int | None]:
        """(created_ms, closed_ms or None, reopened_ms or None)."""
        i = self._index[business_id]
        c, r = int(self.closed[i]), int(self.reopened[i])
        return int(self.created[i]), (None if c == _NEVER else c), (None if r == _NEVER else r)

    def is_open(self, business_id: str, t_ms: int) -> bool:
        i = self._index[business_id]
        return bool(self._open_at(np.array([i]), np.array([t_ms], np.int64))[0])

    def expected_day(self, d: int) -> DayTruth:
        """Expected views and conversions per business on day ``d``, without any exposure boost."""
        s = self._day(d, None)
        share = np.divide(s.w, s.wg[self.b_group], out=np.zeros_like(s.w), where=s.wg[self.b_group] > 0)
        views = s.demand[self.b_group] * share
        return DayTruth(s.q, s.listed, views, views * s.pconv.sum(axis=1))

    def expected_event_count(self) -> int:
        """Expected number of delivered events (duplicates included), without exposure boost."""
        cfg = self.cfg
        total = 0.0
        for d in range(cfg.days):
            s = self._day(d, None)
            share = np.divide(s.w, s.wg[self.b_group], out=np.zeros_like(s.w), where=s.wg[self.b_group] > 0)
            views = s.demand[self.b_group] * share
            per_view = (
                float(cfg.page_view_events) + s.pconv.sum(axis=1) + (1 - cfg.anonymous_share) * s.pother.sum(axis=1)
            )
            total += float((views * per_view).sum())
        total += len(self._bev_t)
        return int(round(total * (1 + cfg.duplicate_share)))

    # ------------------------------------------------------------------ streams

    def records(self) -> Iterator[tuple[str, dict]]:
        """``('business' | 'activity', Avro-ready record)`` in delivery order."""
        for day in self.daily_records():
            yield from day

    def daily_records(self) -> Iterator[list[tuple[str, dict]]]:
        """:meth:`records` cut into delivery days: batch ``d`` is what is delivered during
        ``[day_start(d), day_start(d + 1))``. Day ``d`` is generated only when it is requested, and
        ``exposure_boost`` is consulted then: a closed loop can change the boost between days
        (``consumer.tools.closedloop``)."""
        st = _Stream()
        for rows in self._delivered_batches(st):
            yield list(self._records_of(rows))

    def _records_of(self, rows: np.ndarray) -> Iterator[tuple[str, dict]]:
        pre, spre = f"{self.cfg.seed}-", f"{self.cfg.seed}-s"
        bids, uids, kinds = self.business_ids, self._uids, _KIND_NAMES
        _, T, KD, B, U, S, R, NN, BR = rows.T.tolist()
        for t, k, b, u, s, r, n, br in zip(T, KD, B, U, S, R, NN, BR, strict=True):
            if k < _N_ACT:
                yield (
                    "activity",
                    {
                        "event_id": f"{pre}{n}",
                        "business_id": bids[b],
                        "user_id": uids[u],
                        "event_time": t,
                        "kind": kinds[k],
                        "search_id": None if s < 0 else f"{spre}{s}",
                        "rating": _RATING[r],
                    },
                )
            else:
                p = self._bev_profile[br]
                yield (
                    "business",
                    {
                        "event_id": f"{pre}{n}",
                        "business_id": bids[b],
                        "event_time": t,
                        "kind": kinds[k],
                        "name": p[0],
                        "city": p[1],
                        "state": p[2],
                        "categories": list(p[3]),
                        "latitude": p[4],
                        "longitude": p[5],
                        "price_range": p[6],
                        "is_open": p[7],
                    },
                )

    def events(self) -> Iterator[BusinessEvent | ActivityEvent]:
        """The same stream as :meth:`records`, as ``features.events`` dataclasses."""
        for topic, r in self.records():
            if topic == "activity":
                yield ActivityEvent(**r)
            else:
                r["categories"] = tuple(r["categories"])
                yield BusinessEvent(**r)

    # ------------------------------------------------------------------ internals: static world

    def _make_profiles(self, rng: np.random.Generator) -> list[list]:
        N = self.cfg.businesses
        pattern = rng.integers(0, 5, N)
        adj = rng.integers(0, len(NAME_ADJECTIVES), N)
        noun = rng.integers(0, len(NAME_NOUNS), N)
        sur = rng.integers(0, len(NAME_SURNAMES), N)
        suf = rng.integers(0, 1 << 30, N)
        sub = rng.integers(0, 1 << 30, N)
        price = rng.choice([1, 2, 3, 4], N, p=[0.3, 0.45, 0.19, 0.06])
        dlat = rng.normal(0, 0.04, N)
        dlon = rng.normal(0, 0.05, N)
        profiles = []
        for i in range(N):
            city, cat = self._cities[self.b_city[i]], self._cats[self.b_cat[i]]
            profiles.append(
                [
                    _name(cat, int(pattern[i]), int(adj[i]), int(noun[i]), int(sur[i]), int(suf[i])),
                    city.name,
                    city.state,
                    (cat.name, cat.subcategories[int(sub[i]) % len(cat.subcategories)]),
                    round(city.lat + float(dlat[i]), 6),
                    round(city.lon + float(dlon[i]) / math.cos(math.radians(city.lat)), 6),
                    int(price[i]) if cat.priced else None,
                    True,
                ]
            )
        return profiles

    def _make_closures(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        cfg, N, D = self.cfg, self.cfg.businesses, self.cfg.days
        tmid = np.array([self.day_start(d) + DAY_MS // 2 for d in range(D)], np.int64)
        q = np.stack([self._quality(int(t)) for t in tmid])  # (D, N)
        p = 1.0 - np.exp(-cfg.close_rate_per_day * np.exp(-cfg.close_quality_effect * q))
        eligible = tmid[:, None] > self.created[None, :] + 2 * DAY_MS
        hits = (rng.random((D, N)) < p) & eligible
        any_hit = hits.any(axis=0)
        first = hits.argmax(axis=0)
        close_t = np.array([self.day_start(d) for d in range(D)], np.int64)[first]
        close_t = close_t + (rng.random(N) * DAY_MS).astype(np.int64)
        close_t = np.minimum(close_t, self.cfg.start_time_ms + D * DAY_MS - 1)
        closed = np.where(any_hit, close_t, _NEVER)
        reopen_t = closed + (rng.uniform(3, 21, N) * DAY_MS).astype(np.int64)
        reopen = (rng.random(N) < cfg.reopen_share) & any_hit & (reopen_t < self.cfg.start_time_ms + D * DAY_MS)
        reopened = np.where(reopen, reopen_t, _NEVER)
        return closed, reopened

    def _pick_late_created(self, rng: np.random.Generator) -> set[int]:
        new = np.flatnonzero(self.is_new)
        if len(new) == 0 or self.cfg.late_created_share <= 0:
            return set()
        k = min(len(new), max(1, round(self.cfg.late_created_share * len(new))))
        return set(rng.choice(new, k, replace=False).tolist())

    def _build_business_events(self, rng: np.random.Generator) -> None:
        cfg = self.cfg
        end = cfg.start_time_ms + cfg.days * DAY_MS
        n_upd = rng.poisson(cfg.update_rate_per_day * cfg.days, cfg.businesses)
        rows: list[tuple[int, int, int, tuple]] = []  # (t, business, kind, profile snapshot)
        for i, prof in enumerate(self._profiles):
            created, closed, reopened = int(self.created[i]), int(self.closed[i]), int(self.reopened[i])
            evs = [(created, _CREATED)]
            if closed != _NEVER:
                evs.append((closed, _CLOSED))
            if reopened != _NEVER:
                evs.append((reopened, _REOPENED))
            for t in (created + HOUR_MS + rng.random(int(n_upd[i])) * (end - created - HOUR_MS)).astype(np.int64):
                t = int(t)
                if t < end and not (closed <= t < reopened):
                    evs.append((t, _UPDATED))
            evs.sort()
            p = list(prof)
            cat = self._cats[self.b_cat[i]]
            for t, kind in evs:
                if kind == _UPDATED:
                    p = self._update_profile(rng, p, cat)
                elif kind == _CLOSED:
                    p[7] = False
                elif kind == _REOPENED:
                    p[7] = True
                rows.append((t, i, kind, tuple(p)))
        rows.sort(key=lambda r: (r[0], r[1], r[2]))
        self._bev_t = np.array([r[0] for r in rows], np.int64)
        self._bev_b = np.array([r[1] for r in rows], np.int64)
        self._bev_k = np.array([r[2] for r in rows], np.int64)
        self._bev_profile = [r[3] for r in rows]

    def _update_profile(self, rng: np.random.Generator, p: list, cat) -> list:
        p = list(p)
        r = rng.random()
        if cat.priced and p[6] is not None and r < 0.6:
            p[6] = p[6] + 1 if (p[6] == 1 or (p[6] < 4 and rng.random() < 0.5)) else p[6] - 1
        elif r < 0.9:
            subs = [s for s in cat.subcategories if s != p[3][1]]
            p[3] = (cat.name, subs[int(rng.integers(len(subs)))])
        else:
            p[0] = _name(cat, *(int(x) for x in rng.integers(0, 1 << 30, 5)))
        return p

    def _group_base(self) -> np.ndarray:
        g = np.arange(self._G)
        return self._city_traffic[g // self._K] * self._cat_traffic[g % self._K]

    def _drift(self, t_ms: int) -> np.ndarray:
        theta = np.clip((t_ms - self.trend_t0) / self.trend_dur, 0.0, 1.0) * (np.pi / 2)
        return np.cos(theta) * self.q0 + np.sin(theta) * self.q1

    def _quality(self, t_ms: int) -> np.ndarray:
        x = min(max((t_ms - self.day_start(0)) / DAY_MS + 0.5, 0.0), self.cfg.days + 1.0)  # form index
        i = min(int(x), self.cfg.days)
        form = self.form[i] + (x - i) * (self.form[i + 1] - self.form[i])
        raw = self._drift(t_ms) + form + np.where(t_ms >= self.shock_t, self.shock, 0.0)
        return _Q_MAX * np.tanh(raw / _Q_MAX)

    def _open_at(self, b: np.ndarray, t: np.ndarray) -> np.ndarray:
        return (t >= self.created[b]) & ~((t >= self.closed[b]) & (t < self.reopened[b]))

    def _listed(self, d: int) -> np.ndarray:
        ws, we = self.day_start(d), self.day_start(d + 1)
        return (self.created < we) & ~((self.closed <= ws) & (self.reopened >= we))

    def _day(self, d: int, boosts: np.ndarray | None) -> _Day:
        cfg = self.cfg
        t = self.day_start(d) + DAY_MS // 2
        q = self._quality(t)
        listed = self._listed(d)
        age = (t - self.created) / DAY_MS
        ramp = np.where(self.is_new, np.clip(0.25 + 0.75 * age / cfg.new_business_ramp_days, 0.25, 1.0), 1.0)
        w = self.popularity * np.exp(cfg.view_quality_effect * q) * ramp * listed * self.buzz[min(d, cfg.days - 1)]
        if boosts is not None:
            w = w * boosts
        wg = np.bincount(self.b_group, weights=w, minlength=self._G)
        n_listed = np.bincount(self.b_group[listed], minlength=self._G).astype(float)
        g = np.arange(self._G)
        wd = self._weekday[d] if d < len(self._weekday) else 0
        weekly = np.where(self._cat_leisure[g % self._K], self._weekly[0][wd], self._weekly[1][wd])
        demand = self._demand_scale * self._group_base() * n_listed**0.85 * weekly * (wg > 0)
        ws = w[self._gperm]
        cw = np.cumsum(ws)
        ends = np.searchsorted(self._gsorted, g, side="right")  # exclusive end of each group
        starts = np.searchsorted(self._gsorted, g, side="left")
        cw_before = np.where(starts > 0, cw[np.maximum(starts - 1, 0)], 0.0)
        # last positive-weight position of each group (guards float rounding at the group's end)
        pos_idx = np.where(ws > 0, np.arange(len(ws)), -1)
        run_max = np.maximum.accumulate(pos_idx) if len(ws) else pos_idx
        glast = np.where(ends > 0, run_max[np.maximum(ends - 1, 0)], 0)
        pconv = np.minimum(self._pconv_base * np.exp(cfg.conversion_quality_effect * q)[:, None], 0.5)
        return _Day(q, listed, w, wg, demand, cw, cw_before, glast, pconv, self._pother)

    # ------------------------------------------------------------------ internals: the stream

    def _boosts(self, listed: np.ndarray) -> np.ndarray | None:
        if self.exposure_boost is None:
            return None
        boosts = np.ones(self.cfg.businesses)
        for i in np.flatnonzero(listed).tolist():
            boosts[i] = max(0.0, float(self.exposure_boost(self.business_ids[i])))
        return boosts

    def _activity(self, d: int, rng: np.random.Generator, s: _Day, st: _Stream) -> np.ndarray:
        """All activity of local day ``d``: rows with event time set, not yet numbered."""
        cfg = self.cfg
        ns = rng.poisson(s.demand / self._mean_len)
        S = int(ns.sum())
        g = np.repeat(np.arange(self._G), ns)
        c, k = g // self._K, g % self._K
        u = rng.random(S)
        hour = np.where(
            self._cat_leisure[k], np.searchsorted(self._hcum[0], u, "right"), np.searchsorted(self._hcum[1], u, "right")
        )
        t0 = self._city_base[c] + d * DAY_MS + hour * HOUR_MS + rng.integers(0, HOUR_MS, S)
        direct = rng.random(S) < cfg.direct_share
        L = rng.geometric(1.0 / cfg.session_views_mean, S)
        L[direct] = 1
        anon = rng.random(S) < cfg.anonymous_share
        user = self._ustart[c] + (self._ucount[c] * rng.random(S) ** _USER_SKEW).astype(np.int64)
        user[anon] = self._n_users
        search = np.arange(st.n_search, st.n_search + S, dtype=np.int64)
        search[direct] = -1
        st.n_search += S

        # Page views
        V = int(L.sum())
        sv = np.repeat(np.arange(S), L)
        cs = np.cumsum(rng.exponential(cfg.view_gap_ms, V))
        first = np.cumsum(L) - L
        vt = t0[sv] + (cs - cs[first][sv]).astype(np.int64)
        gv = g[sv]
        target = s.cw_before[gv] + rng.random(V) * s.wg[gv]
        pos = np.minimum(np.searchsorted(s.cw, target, side="right"), s.glast[gv])
        vb = self._gperm[pos]
        ok = self._open_at(vb, vt) & (vt < self.end_ms)
        vt, vb, vu, vs = vt[ok], vb[ok], user[sv][ok], search[sv][ok]
        V = len(vt)

        # Conversions, seconds to minutes after the view
        hit = rng.random((V, 3)) < s.pconv[vb]
        iv, ik = np.nonzero(hit)
        ct = vt[iv] + 3_000 + rng.exponential(60_000, len(iv)).astype(np.int64)

        # Reviews, tips, check-ins by identified users, hours later
        hit2 = (rng.random((V, 3)) < s.pother[vb]) & (vu < self._n_users)[:, None]
        jv, jk = np.nonzero(hit2)
        lo = np.array([HOUR_MS, HOUR_MS // 2, HOUR_MS // 4])[jk]
        hi = np.array([30 * HOUR_MS, 30 * HOUR_MS, 4 * HOUR_MS])[jk]
        ot = vt[jv] + lo + (rng.random(len(jv)) * (hi - lo)).astype(np.int64)
        rating = np.rint(cfg.rating_mean + cfg.rating_slope * s.q[vb[jv]] + rng.normal(0, cfg.rating_noise, len(jv)))
        rating = np.where(jk == 0, np.clip(rating, 1, 5), 0).astype(np.int64)

        rows = np.empty((V + len(iv) + len(jv), _NCOL), np.int64)
        a, b = V, V + len(iv)
        rows[:, _DELIV] = 0
        rows[:, _N] = 0
        rows[:, _BREF] = -1
        rows[:a, _T], rows[:a, _KIND], rows[:a, _BIZ] = vt, _PAGE_VIEW, vb
        rows[:a, _USER], rows[:a, _SEARCH], rows[:a, _RATE] = vu, vs, 0
        rows[a:b, _T], rows[a:b, _KIND], rows[a:b, _BIZ] = ct, _BIZSITE + ik, vb[iv]
        rows[a:b, _USER], rows[a:b, _SEARCH], rows[a:b, _RATE] = vu[iv], vs[iv], 0
        rows[b:, _T], rows[b:, _KIND], rows[b:, _BIZ] = ot, _REVIEW + jk, vb[jv]
        rows[b:, _USER], rows[b:, _SEARCH], rows[b:, _RATE] = vu[jv], -1, rating
        later = rows[a:, _T]
        views = np.full(a, cfg.page_view_events)
        keep = np.concatenate([views, self._open_at(rows[a:, _BIZ], later) & (later < self.end_ms)])
        return rows[keep]

    def _business_rows(self, d: int) -> np.ndarray:
        lo = 0 if d == 0 else np.searchsorted(self._bev_t, self.day_start(d), "left")
        hi = len(self._bev_t) if d == self.cfg.days - 1 else np.searchsorted(self._bev_t, self.day_start(d + 1), "left")
        n = hi - lo
        rows = np.zeros((n, _NCOL), np.int64)
        rows[:, _T] = self._bev_t[lo:hi]
        rows[:, _KIND] = self._bev_k[lo:hi]
        rows[:, _BIZ] = self._bev_b[lo:hi]
        rows[:, _USER] = self._n_users
        rows[:, _SEARCH] = -1
        rows[:, _BREF] = np.arange(lo, hi)
        return rows

    def _delivered_batches(self, st: _Stream) -> Iterator[np.ndarray]:
        cfg = self.cfg
        for d in range(cfg.days):
            rng = np.random.default_rng([cfg.seed, 1, d])
            listed = self._listed(d)
            s = self._day(d, self._boosts(listed))
            rows = np.concatenate([self._activity(d, rng, s, st), self._business_rows(d)])
            rows = rows[np.argsort(rows[:, _T], kind="stable")]
            rows[:, _N] = np.arange(st.n_event, st.n_event + len(rows))
            st.n_event += len(rows)

            # Late CREATED of a few new businesses: held until their first activity is delivered.
            held_mask = rows[:, _KIND] == _CREATED
            if held_mask.any() and self._late_created:
                held_mask &= np.isin(rows[:, _BIZ], list(self._late_created))
                for row in rows[held_mask]:
                    st.held[int(row[_BIZ])] = row.copy()
                rows = rows[~held_mask]

            # Delivery: most on time, a share late, a share twice.
            late = rng.random(len(rows)) < cfg.late_share
            rows[:, _DELIV] = rows[:, _T] + np.where(late, rng.integers(1_000, cfg.late_max_ms + 1, len(rows)), 0)
            dup = rows[rng.random(len(rows)) < cfg.duplicate_share].copy()
            dup[:, _DELIV] += rng.integers(100, cfg.duplicate_max_ms + 1, len(dup))
            rows = np.concatenate([rows, dup])

            released = []
            for b in sorted(st.held):
                mine = (rows[:, _BIZ] == b) & (rows[:, _KIND] < _N_ACT)
                if mine.any():
                    row = st.held.pop(b)
                    row[_DELIV] = rows[mine, _DELIV].min() + int(rng.integers(1_000, 600_001))
                    released.append(row)
            last = d == cfg.days - 1
            if last:
                for b in sorted(st.held):
                    row = st.held.pop(b)
                    row[_DELIV] = row[_T] + cfg.late_max_ms
                    released.append(row)
            if released:
                rows = np.concatenate([rows, np.stack(released)])

            buf = np.concatenate([st.buffer, rows])
            buf = buf[np.lexsort((buf[:, _N], buf[:, _DELIV]))]
            cut = len(buf) if last else int(np.searchsorted(buf[:, _DELIV], self.day_start(d + 1), "left"))
            st.buffer = buf[cut:]
            yield buf[:cut]


def generate(
    cfg: WorldConfig | None = None, *, exposure_boost: ExposureBoost | None = None
) -> Iterator[BusinessEvent | ActivityEvent]:
    """Events of the world in delivery order (late and duplicate deliveries included)."""
    return World(cfg, exposure_boost=exposure_boost).events()


def generate_records(
    cfg: WorldConfig | None = None, *, exposure_boost: ExposureBoost | None = None
) -> Iterator[tuple[str, dict]]:
    """The same stream as :func:`generate`, as ``('business' | 'activity', Avro-ready dict)``."""
    return World(cfg, exposure_boost=exposure_boost).records()


def expected_event_count(cfg: WorldConfig | None = None) -> int:
    """Expected number of delivered events for ``cfg`` (a good estimate, not exact)."""
    return World(cfg).expected_event_count()


def _norm(xs) -> np.ndarray:
    a = np.asarray(xs, dtype=float)
    return a / a.sum()


def _name(cat, pattern: int, adj: int, noun: int, sur: int, suf: int) -> str:
    suffix = cat.suffixes[suf % len(cat.suffixes)]
    a = NAME_ADJECTIVES[adj % len(NAME_ADJECTIVES)]
    n = NAME_NOUNS[noun % len(NAME_NOUNS)]
    s = NAME_SURNAMES[sur % len(NAME_SURNAMES)]
    if pattern == 0:
        return f"{a} {n} {suffix}"
    if pattern == 1:
        return f"{s}'s {suffix}"
    if pattern == 2:
        return f"{a} {suffix}"
    if pattern == 3:
        return f"The {n} {suffix}"
    return f"{n} & {s} {suffix}"
