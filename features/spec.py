"""The feature set: its parameters, its ordered names, and the version that identifies them.

A model records ``spec.to_dict()`` in its metadata; the worker rebuilds the spec with
:meth:`FeatureSpec.from_dict`, which refuses a record whose version no longer matches (the feature
code changed since training). ``version`` hashes the names, every parameter and
:data:`FEATURE_CODE_REVISION`, so two processes agree on it and any change of rules changes it.

Windows and grids. Windowed features are read from time buckets, never from raw event lists, so
state stays bounded. Windows up to ``fine_horizon_ms`` use the fine grid (hourly by default), longer
ones the coarse grid (daily). A window of length W on a grid of bucket size g is the W/g buckets
ending with the bucket that contains ``as_of``: it covers between W - g and W of history.

Decay. ``half_lives_ms`` gives exponentially decayed counts per activity kind with day-level
(coarse bucket) resolution: as of a time in coarse bucket c, an event in bucket b weighs
``2 ** -((c - b) * coarse_bucket_ms / half_life)``. Unlike windows they reach back over the whole
history in constant state (``state`` says how they stay exact and order-free).

Stable hashing. Hashed ids (city and category buckets, user slots, event-id dedup) use blake2b or
CRC-32, never Python's ``hash()``, which is salted per process and would make training and serving
disagree.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from functools import cached_property
from itertools import pairwise
from typing import Any

from features.errors import SpecError
from features.events import ACTIVITY_KINDS

# Bump whenever extraction or folding logic changes meaning, even with identical parameters:
# it is hashed into ``version``, so models trained on the old rules are refused.
FEATURE_CODE_REVISION = 2

MINUTE_MS = 60_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000

# float32 holds every integer up to 2**24 exactly; bucket ids beyond would alias in the model row.
_MAX_BUCKETS = 1 << 24
# The state encodes live fine-bucket numbers as u16 offsets (slots, dedup buckets); this bound on
# the longest window plus lateness, in fine buckets, keeps them in range with room to spare.
_MAX_FINE_SPAN = 1 << 14
# Decayed counts are stored relative to an anchor bucket that steps by this many coarse buckets.
DECAY_EPOCH = 32


def window_label(ms: int) -> str:
    """``86_400_000`` -> ``"1d"``; the largest whole unit of d/h/m/s, else ms."""
    for unit, size in (("d", DAY_MS), ("h", HOUR_MS), ("m", MINUTE_MS), ("s", 1000)):
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


@dataclass(frozen=True)
class FeatureSpec:
    """Every parameter that changes a feature value. Immutable; hashable; cheap to share."""

    windows_ms: tuple[int, ...] = (DAY_MS, 7 * DAY_MS, 28 * DAY_MS)
    allowed_lateness_ms: int = 6 * HOUR_MS
    fine_bucket_ms: int = HOUR_MS
    coarse_bucket_ms: int = DAY_MS
    fine_horizon_ms: int = DAY_MS
    city_buckets: int = 4096
    category_buckets: int = 1024
    # Linear-counting slots for distinct visitors (power of two); error figures in ``state``.
    distinct_slots: int = 256
    # Beta(a, b) prior of the conversion ratios: (x + a) / (views + a + b), prior mean a / (a + b).
    rate_prior_a: float = 1.0
    rate_prior_b: float = 9.0
    # Exponentially decayed counts per activity kind, one family per half-life: long memory for
    # sparse businesses (a few events a month) whose windows above are mostly empty.
    half_lives_ms: tuple[int, ...] = (7 * DAY_MS, 60 * DAY_MS, 365 * DAY_MS)

    def __post_init__(self) -> None:
        # from_dict hands lists and JSON numbers; normalise so equal specs compare and hash equal.
        object.__setattr__(self, "windows_ms", tuple(_int(w, "windows_ms") for w in self.windows_ms))
        object.__setattr__(self, "half_lives_ms", tuple(_int(h, "half_lives_ms") for h in self.half_lives_ms))
        for f in (
            "allowed_lateness_ms",
            "fine_bucket_ms",
            "coarse_bucket_ms",
            "fine_horizon_ms",
            "city_buckets",
            "category_buckets",
            "distinct_slots",
        ):
            object.__setattr__(self, f, _int(getattr(self, f), f))
        for f in ("rate_prior_a", "rate_prior_b"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise SpecError(f"{f} must be a positive finite number, got {v!r}")
            object.__setattr__(self, f, float(v))
        self._validate()

    def _validate(self) -> None:
        w = self.windows_ms
        if not w:
            raise SpecError("windows_ms is empty")
        if any(b <= a for a, b in pairwise(w)) or w[0] <= 0:
            raise SpecError(f"windows_ms must be positive and strictly increasing, got {w}")
        if self.allowed_lateness_ms < 0:
            raise SpecError("allowed_lateness_ms must be >= 0")
        if (
            self.fine_bucket_ms <= 0
            or self.coarse_bucket_ms % self.fine_bucket_ms
            or self.coarse_bucket_ms < self.fine_bucket_ms
        ):
            raise SpecError("coarse_bucket_ms must be a positive multiple of fine_bucket_ms")
        for x in w:
            g = self.fine_bucket_ms if x <= self.fine_horizon_ms else self.coarse_bucket_ms
            if x % g:
                raise SpecError(f"window {x} ms is not a multiple of its bucket size {g} ms")
        span = (w[-1] + self.allowed_lateness_ms) // self.fine_bucket_ms + 2
        if span >= _MAX_FINE_SPAN:
            raise SpecError(f"longest window plus lateness spans {span} fine buckets; at most {_MAX_FINE_SPAN - 1}")
        for f in ("city_buckets", "category_buckets"):
            if not 1 <= getattr(self, f) <= _MAX_BUCKETS:
                raise SpecError(f"{f} must be in 1..{_MAX_BUCKETS}")
        m = self.distinct_slots
        if m < 16 or m > 65536 or m & (m - 1):
            raise SpecError("distinct_slots must be a power of two in 16..65536")
        if len({window_label(x) for x in w}) != len(w):
            raise SpecError("two windows share a label")
        self._validate_decay()

    def _validate_decay(self) -> None:
        h = self.half_lives_ms
        if not h:
            return
        if any(b <= a for a, b in pairwise(h)) or h[0] <= 0:
            raise SpecError(f"half_lives_ms must be positive and strictly increasing, got {h}")
        if len({window_label(x) for x in h}) != len(h):
            raise SpecError("two half-lives share a label")

    # -- identity -----------------------------------------------------------------------------

    @cached_property
    def names(self) -> tuple[str, ...]:
        """Ordered feature names; ``extract`` writes values in exactly this order."""
        labels = [window_label(x) for x in self.windows_ms]
        out: list[str] = []
        for kind in ACTIVITY_KINDS:
            out += [f"count_{kind.lower()}_{lab}" for lab in labels]
        out += [f"uniq_users_{lab}" for lab in labels]
        out += [f"rate_bizsite_{lab}" for lab in labels]
        out += [f"rate_call_{lab}" for lab in labels]
        out += [f"hours_since_{kind.lower()}" for kind in ACTIVITY_KINDS]
        out += [f"hours_since_first_{kind.lower()}" for kind in ACTIVITY_KINDS]
        out += [f"count_{kind.lower()}_all" for kind in ACTIVITY_KINDS]
        for h in self.half_lives_ms:
            out += [f"decayed_{kind.lower()}_{window_label(h)}" for kind in ACTIVITY_KINDS]
        out += [
            "page_view_interval_mean_h",
            "review_count",
            "rating_mean",
            "is_open",
            "price_range",
            "city_bucket",
            "category_bucket",
            "age_days",
        ]
        return tuple(out)

    def params(self) -> dict[str, Any]:
        """Every parameter as JSON-ready data (windows as a list)."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["windows_ms"] = list(self.windows_ms)
        d["half_lives_ms"] = list(self.half_lives_ms)
        return d

    @cached_property
    def version(self) -> str:
        """12 hex chars of sha256 over names, parameters and ``FEATURE_CODE_REVISION``."""
        doc = {"revision": FEATURE_CODE_REVISION, "params": self.params(), "names": list(self.names)}
        blob = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    def state_params(self) -> dict[str, Any]:
        """The parameters per-business state depends on: all but the priors, which only extraction reads."""
        d = self.params()
        del d["rate_prior_a"], d["rate_prior_b"]
        return d

    def to_dict(self) -> dict[str, Any]:
        """Parameters plus ``version`` and ``names``, for a model's metadata."""
        return {**self.params(), "version": self.version, "names": list(self.names)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FeatureSpec:
        """Rebuild a spec; if ``d`` records ``version``/``names``, they must match this code's."""
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known - {"version", "names"}
        if unknown:
            raise SpecError(f"unknown feature spec keys: {sorted(unknown)}")
        try:
            spec = cls(**{k: v for k, v in d.items() if k in known})
        except TypeError as exc:
            raise SpecError(f"bad feature spec: {exc}") from exc
        if "names" in d and list(d["names"]) != list(spec.names):
            raise SpecError("recorded feature names differ from the names this code produces")
        if "version" in d and d["version"] != spec.version:
            raise SpecError(
                f"recorded feature set version {d['version']} != {spec.version} computed by this code "
                f"(revision {FEATURE_CODE_REVISION}): the feature code changed since the model was trained"
            )
        return spec

    # -- derived layout, used by state and extract ---------------------------------------------

    @cached_property
    def layout(self) -> Layout:
        return Layout(self)


class Layout:
    """Index arithmetic derived once per spec so the per-event code only reads plain attributes.

    A grid's ring keeps as many buckets as its longest window; each bucket row holds one counter
    per activity kind plus one distinct-visitor channel (``U``).
    """

    __slots__ = (  # noqa: RUF023 - grouped by meaning
        "spec",
        "version",
        "state_tag",
        "kinds",
        "kind_index",
        "K",
        "U",
        "PV",
        "BIZ",
        "CALL",
        "REVIEW",
        "gf",
        "gc",
        "ratio",
        "lateness",
        "Rf",
        "Rc",
        "fine_windows",
        "coarse_windows",
        "fine_part",
        "fine_full",
        "coarse_part",
        "coarse_full",
        "n_fine",
        "n_coarse",
        "slots",
        "slot_shift",
        "lc_table",
        "n_features",
        "prior_a",
        "prior_ab",
        "window_offsets",
        "count_index",
        "n_kinds",
        "decay_f",
        "decay_step",
        "decay_pow",
    )

    def __init__(self, spec: FeatureSpec):
        self.spec = spec
        self.version = spec.version
        # States built under specs with equal state parameters are interchangeable (a model retrained
        # with other priors reuses the changelog); 32 bits name them in the encoding.
        blob = json.dumps(spec.state_params(), sort_keys=True, separators=(",", ":")).encode()
        self.state_tag = int.from_bytes(hashlib.sha256(blob).digest()[:4], "big")
        self.kinds = ACTIVITY_KINDS
        self.kind_index = {k: i for i, k in enumerate(ACTIVITY_KINDS)}
        self.K = len(ACTIVITY_KINDS) + 1
        self.U = len(ACTIVITY_KINDS)
        self.PV = self.kind_index["PAGE_VIEW"]
        self.BIZ = self.kind_index["BIZSITE_VISIT"]
        self.CALL = self.kind_index["CALL"]
        self.REVIEW = self.kind_index["REVIEW"]
        self.gf = spec.fine_bucket_ms
        self.gc = spec.coarse_bucket_ms
        self.ratio = self.gc // self.gf
        self.lateness = spec.allowed_lateness_ms
        fine = [w // self.gf for w in spec.windows_ms if w <= spec.fine_horizon_ms]
        coarse = [w // self.gc for w in spec.windows_ms if w > spec.fine_horizon_ms]
        # Fine windows are a prefix of the (increasing) windows: sums of all windows concatenate
        # as fine_sums + coarse_sums in window order.
        self.fine_windows = tuple((n, i * self.K) for i, n in enumerate(fine))
        self.coarse_windows = tuple((n, i * self.K) for i, n in enumerate(coarse))
        self.Rf = max(fine, default=0)
        # Decayed counts take a coarse row once no accepted event can land in it any more (see
        # ``state``): the ring must outlive the lateness by more than a bucket, windows or not.
        need = self.lateness // self.gc + 3 if spec.half_lives_ms else 0
        self.Rc = max(*coarse, need, 0)
        self.fine_part = tuple((n, o) for n, o in self.fine_windows if n < self.Rf)
        self.fine_full = tuple(o for n, o in self.fine_windows if n == self.Rf)
        self.coarse_part = tuple((n, o) for n, o in self.coarse_windows if n < self.Rc)
        self.coarse_full = tuple(o for n, o in self.coarse_windows if n == self.Rc)
        self.n_fine = len(fine)
        self.n_coarse = len(coarse)
        m = spec.distinct_slots
        self.slots = m
        self.slot_shift = 32 - (m.bit_length() - 1)
        # Linear counting n = -m ln(1 - z/m); a full bitmap would be infinite, so cap at z = m - 1/2.
        self.lc_table = tuple(-m * math.log(1.0 - min(z, m - 0.5) / m) for z in range(m + 1))
        self.n_features = len(spec.names)
        nw = len(spec.windows_ms)
        self.window_offsets = tuple(i * self.K for i in range(nw))
        self.count_index = tuple(i * self.K + k for k in range(len(ACTIVITY_KINDS)) for i in range(nw))
        self.prior_a = spec.rate_prior_a
        self.prior_ab = spec.rate_prior_a + spec.rate_prior_b
        self.n_kinds = len(ACTIVITY_KINDS)
        # Per half-life: the decay factor of one coarse bucket, its power over one epoch of the
        # decayed sums (DECAY_EPOCH buckets), and a table of its powers 0..epoch.
        self.decay_f = tuple(2.0 ** (-self.gc / h) for h in spec.half_lives_ms)
        self.decay_step = tuple(f**DECAY_EPOCH for f in self.decay_f)
        self.decay_pow = tuple(tuple(f**d for d in range(DECAY_EPOCH + 1)) for f in self.decay_f)


def _int(v: Any, name: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v != int(v):
        raise SpecError(f"{name} must be an integer, got {v!r}")
    return int(v)


DEFAULT_SPEC = FeatureSpec()
