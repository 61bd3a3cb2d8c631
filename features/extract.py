"""``extract(state, as_of) -> vector``: the features of one business as of an event time.

Values follow ``spec.names`` exactly; missing values are NaN (XGBoost treats them as missing).

``as_of`` is clamped up to the state's clock (``max_event_ms``): a state cannot answer for a time
before events it has already folded, and clamping keeps every "time since" non-negative and every
window free of events after the effective ``as_of``. The trainer folds only events up to its label
time, so for it the clamp never fires; the worker may pass the triggering event's time.

Families (W = each window, see ``spec`` for how windows map to buckets):

* ``count_<kind>_<W>``: activity events of that kind in the window;
* ``uniq_users_<W>``: estimated distinct identified visitors (linear counting, see ``state``);
* ``rate_bizsite_<W>``, ``rate_call_<W>``: (x + a) / (page views + a + b), Beta(a, b) prior;
* ``hours_since_<kind>``: since the latest event of that kind, NaN if none;
* ``hours_since_first_<kind>``: since the earliest event of that kind, NaN if none;
* ``count_<kind>_all``: lifetime count of that kind;
* ``decayed_<kind>_<H>``: for each half-life H, events of that kind weighted ``2 ** -(age / H)``,
  age counted in whole coarse buckets (days) from the bucket of ``as_of``; 0 with no events;
* ``page_view_interval_mean_h``: (last - first page view) / (page views - 1), lifetime; NaN below 2;
* ``review_count`` (lifetime) and ``rating_mean`` (of rated reviews; NaN if none);
* ``is_open``, ``price_range``, ``city_bucket`` (hash of city and state), ``category_bucket`` (hash of
  the primary, i.e. first, category): the latest profile; NaN before the first business event or
  when the attribute is empty;
* ``age_days``: since the first CREATED event, else since the first event of any kind; >= 0.
"""

from __future__ import annotations

import math

from features.errors import SpecError
from features.spec import DAY_MS, DEFAULT_SPEC, HOUR_MS, FeatureSpec, Layout
from features.state import BusinessState

NAN = math.nan
_HOUR = float(HOUR_MS)
_DAY = float(DAY_MS)


def group_key(state: BusinessState) -> str:
    """Ranking group, the market: ``"city, state|primary category"`` (``"city|..."`` when the
    profile names no state); ``"unknown|unknown"`` before the first business event. A city name
    alone is not a market: Springfield, IL and Springfield, MO must not be ranked together."""
    if not state.known:
        return "unknown|unknown"
    city = state.city or "unknown"
    if state.city and state.state_code:
        city = f"{state.city}, {state.state_code}"
    return f"{city}|{state.category or 'unknown'}"


def extract(state: BusinessState, as_of_ms: int, spec: FeatureSpec = DEFAULT_SPEC) -> list[float]:
    """The feature vector as a list of floats, in ``spec.names`` order."""
    return _values(state, as_of_ms, spec.layout)


def extract_into(state: BusinessState, as_of_ms: int, out_row, spec: FeatureSpec = DEFAULT_SPEC) -> None:
    """Write the feature vector into ``out_row``, a 1-d float32 numpy array of ``len(spec.names)``.

    Typically a row of a preallocated batch matrix: ``extract_into(st, t, batch[i])``.
    """
    lay = spec.layout
    if out_row.shape != (lay.n_features,) or out_row.dtype.char != "f":
        raise ValueError(f"out_row must be float32 of shape ({lay.n_features},), got {out_row.dtype} {out_row.shape}")
    out_row[:] = _values(state, as_of_ms, lay)


def _values(st: BusinessState, as_of: int, lay: Layout) -> list[float]:
    if st.layout is not lay and st.layout.state_tag != lay.state_tag:
        raise SpecError(f"state built with feature spec {st.layout.version}, extracted with {lay.version}")
    mx = st.max_event_ms
    t = as_of if as_of > mx else mx  # noqa: FURB136 - cheaper than max() per call
    K = lay.K
    if mx:
        cf = t // lay.gf
        fs = (
            st.fine_sums
            if cf == st.fine_head
            else _shifted(st.fine, st.fine_tot, st.fine_sums, lay.fine_windows, lay.Rf, K, st.fine_head, cf)
        )
        cc = t // lay.gc
        cs = (
            st.coarse_sums
            if cc == st.coarse_head
            else _shifted(st.coarse, st.coarse_tot, st.coarse_sums, lay.coarse_windows, lay.Rc, K, st.coarse_head, cc)
        )
        W = fs + cs
    else:
        W = [0] * ((lay.n_fine + lay.n_coarse) * K)
    offs = lay.window_offsets
    a = lay.prior_a
    ab = lay.prior_ab
    lc = lay.lc_table
    U, PV, BIZ, CALL = lay.U, lay.PV, lay.BIZ, lay.CALL

    # Must follow FeatureSpec.names exactly; the oracle tests compare every position by name.
    v = [W[i] + 0.0 for i in lay.count_index]
    v += [lc[W[o + U]] for o in offs]
    v += [(W[o + BIZ] + a) / (W[o + PV] + ab) for o in offs]
    v += [(W[o + CALL] + a) / (W[o + PV] + ab) for o in offs]
    v += [(t - x) / _HOUR if x else NAN for x in st.last_ms]
    v += [(t - x) / _HOUR if x else NAN for x in st.first_ms]
    v += [x + 0.0 for x in st.totals]
    if lay.decay_f:
        v += _decayed(st, lay, t)

    n_pv = st.totals[PV]
    v.append((st.last_ms[PV] - st.first_ms[PV]) / _HOUR / (n_pv - 1) if n_pv > 1 else NAN)
    v.append(st.totals[lay.REVIEW] + 0.0)
    v.append(st.rating_sum / st.rating_n if st.rating_n else NAN)
    if st.known:
        v.append(1.0 if st.is_open else 0.0)
        v.append(st.price_range + 0.0 if st.price_range else NAN)
        v.append(st.city_bucket + 0.0 if st.city_bucket >= 0 else NAN)
        v.append(st.category_bucket + 0.0 if st.category_bucket >= 0 else NAN)
    else:
        v += (NAN, NAN, NAN, NAN)
    born = st.created_ms or st.first_seen_ms
    v.append(((t - born) / _DAY if t > born else 0.0) if born else NAN)
    return v


def _decayed(st: BusinessState, lay: Layout, t: int) -> list[float]:
    """Decayed counts as of ``t``: the final rows' sums (see ``state``) plus the rows not final yet."""
    nk = lay.n_kinds
    if not st.max_event_ms:
        return [0.0] * (nk * len(lay.decay_f))
    acc = st.decay
    c = t // lay.gc
    R, K = lay.Rc, lay.K
    ring, tot = st.coarse, st.coarse_tot
    lo = (st.max_event_ms - lay.lateness) // lay.gc
    pending = [(b, (b % R) * K) for b in range(lo, st.coarse_head + 1) if tot[b % R]]
    out: list[float] = []
    for i, f in enumerate(lay.decay_f):
        scale = f ** (c - st.decay_epoch)
        vals = [x * scale for x in acc[i * nk : i * nk + nk]]
        for b, base in pending:
            w = f ** (c - b)
            vals = [v + x * w for v, x in zip(vals, ring[base : base + nk], strict=True)]
        out += vals
    return out


def _shifted(
    ring: list[int], tot: list[int], sums: list[int], windows: tuple, R: int, K: int, h: int, c: int
) -> list[int]:
    """Window sums as of bucket ``c > h``: the head's sums minus the rows that left each window."""
    out = sums[:]
    d = c - h
    for n, off in windows:
        if d >= n:
            out[off : off + K] = [0] * K
            continue
        for b in range(h - n + 1, c - n + 1):
            s = b % R
            if tot[s]:
                base = s * K
                for i in range(K):
                    out[off + i] -= ring[base + i]
    return out
