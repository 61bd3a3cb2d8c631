"""Per-business state and the fold ``update(state, event, spec) -> state``.

Event-time rules (each one is tested in ``tests/features``):

* Clock. ``max_event_ms`` is the largest event time of the accepted *activity* events (0 before the
  first one); ``watermark_ms = max_event_ms - allowed_lateness_ms``. Business events never move the
  clock: the business topic is compacted and replays at its own pace, and letting it push the
  watermark would make on-time activity look late.
* Out of order. Any arrival order in which no activity event is late gives exactly the state of
  delivery in time order. Every field is an order-free fold (counts, max, min, latest-by-key), and
  bucket rings and dedup memory expire by the clock alone, never by arrival order.
* Late. An activity event with ``event_time < watermark_ms`` on arrival is dropped and counted in
  ``late_dropped``; it changes nothing else. Business events are never late.
* Duplicates (re-deliveries: same event id, same event time). Activity event ids are kept as 64-bit
  blake2b keys, grouped by fine bucket, for buckets at or after the watermark's. That suffices: a
  duplicate has its original's event time, so either that time is at or after the watermark and
  the original's key is still held (the duplicate is skipped), or it is before the watermark and
  the duplicate is dropped as late. A duplicate thus never counts twice, but one that arrives after
  the watermark passed it adds to ``late_dropped`` (it cannot be told from a late new event). Dedup
  memory is bounded by the events of the last ``allowed_lateness_ms`` plus one fine bucket, not by
  history. Business events need no dedup: folding one twice is idempotent.
* Unknown businesses. Activity before the first business event is folded as usual, so its history
  is complete once the profile arrives; until then static features are NaN and ``is_scorable`` is
  False (the worker scores only scorable states).
* Profile and lifecycle. The profile (city, category, price, is_open) is that of the latest business
  event by ``(event_time, event-id key)``, whatever its kind, so late or replayed profile events
  cannot roll it back. The lifecycle is the latest CREATED/CLOSED/REOPENED event by the same key:
  CLOSED makes a business unscorable, a later REOPENED (or CREATED) makes it scorable again, UPDATED
  changes attributes only. Static features are the latest known profile, not a point-in-time one.
* Distinct visitors (non-empty ``user_id``) use timestamped linear counting: ``distinct_slots`` (m)
  slots, each holding the last fine bucket in which any user hashed to it was seen; a window's count
  is ``-m ln(1 - z/m)`` for the z slots seen in it. Nearly unbiased; relative standard error with
  m=256 about 4.5% up to 250 visitors, 7% at 500, 11% at 1000 (measured with the real hash, for
  random and for sequential ids); it saturates at m ln 2m (~1600). The bookkeeping itself is exact
  and order-free: a slot keeps its max bucket, and the rings count slots per bucket in an extra
  channel.
  Events with no or an empty ``user_id`` count as activity only.

* Decayed counts (``spec.half_lives_ms``). A coarse bucket b is *final* once no accepted event can
  land in it any more: ``b < (max_event_ms - allowed_lateness_ms) // coarse_bucket_ms``. Final rows
  of the coarse ring are added, in bucket order, to per-kind sums ``decay`` kept relative to an
  anchor bucket ``decay_epoch`` (a multiple of ``DECAY_EPOCH``): ``decay += row * f ** (epoch - b)``
  with f the per-bucket factor; the anchor steps one epoch at a time (``decay *= f ** DECAY_EPOCH``)
  when a row reaches it. Which rows are added, their content and the order of every float operation
  depend on the accepted events alone, never on arrival order or on how the clock jumped, so the
  sums are bit-identical for any arrival order (a decayed count is a float; this is what keeps the
  rule above exact for it). ``extract`` adds the few rows that are not final yet.

Layout: one ring per grid (see ``spec``) of ``R`` bucket rows x ``K`` channels (seven activity kinds
plus the distinct-visitor channel), ``R`` being the longest window of the grid; a per-row event total
(to skip empty rows quickly); and running sums per window as of the clock's bucket, so neither hot
path sums a window. Rows are expired by the clock only, which keeps the rings order-free.

``update`` mutates and returns the state it is given (a new one for ``None``), for speed: copy first
(``state.copy()``) to keep the old one. It has no other side effects and is deterministic. Events are
trusted to be validated (``from_record`` does it); an unknown activity kind raises ``InvalidEvent``.

Why one long module: the state's fields, its fold and its byte encoding share one layout (the ring
geometry, the slot tables, the field order the encoding writes); the fold is the worker's hottest
loop and reads that layout through module-level bindings. Split, a change to a field would have
to be made in three files that must agree bit for bit (``STATE_VERSION`` guards the encoding).
"""

from __future__ import annotations

import struct
import zlib
from array import array
from hashlib import blake2b

from features.errors import CorruptState, FeatureError, InvalidEvent, SpecError, StateVersionError
from features.events import ACTIVITY_KINDS, ActivityEvent, BusinessEvent
from features.spec import DECAY_EPOCH, DEFAULT_SPEC, FeatureSpec, Layout

# Bump when the encoding or the meaning of a folded field changes: older changelog records are then
# refused with StateVersionError, and the worker rebuilds state from the topics (``readable`` lets
# its restore find them without decoding every state).
STATE_VERSION = 2
# Slots are stored relative to a base that steps by this many fine buckets (see _slot_base).
SLOT_PERIOD = 1 << 15

_GOLD = 0x9E3779B1  # Fibonacci hashing: CRC-32 is linear, the multiply spreads its bits to the top.
_from_bytes = int.from_bytes  # bound once: it pays for the ring helper's two calls per event
_LIFECYCLE = (None, "CREATED", "CLOSED", "REOPENED")
_LIFECYCLE_CODE = {k: i for i, k in enumerate(_LIFECYCLE)}


def event_key(event_id: str) -> int:
    """Stable 64-bit key of an event id (dedup and tie-breaks)."""
    return int.from_bytes(blake2b(event_id.encode(), digest_size=8).digest(), "little")


def user_slot(user_id: str, spec: FeatureSpec = DEFAULT_SPEC) -> int:
    """The distinct-visitor slot of a user id (stable across processes)."""
    return (zlib.crc32(user_id.encode()) * _GOLD & 0xFFFFFFFF) >> spec.layout.slot_shift


def stable_bucket(text: str, buckets: int) -> int:
    """Stable hashed bucket of a normalised (stripped, case-folded) string."""
    d = blake2b(text.strip().casefold().encode(), digest_size=8).digest()
    return int.from_bytes(d, "little") % buckets


class BusinessState:
    """Everything the features of one business need; bounded whatever the history length.

    Public, read-only by convention: ``business_id``, ``max_event_ms`` (0 = no activity yet),
    ``watermark_ms``, ``late_dropped``, ``known``, ``lifecycle``, ``city``, ``state_code``,
    ``category``, ``price_range``, ``is_open``. The rest is the layout described in the module doc.
    """

    __slots__ = (  # noqa: RUF023 - grouped by meaning
        "business_id",
        "layout",
        # activity clock
        "max_event_ms",
        "late_dropped",
        "fine_head",
        "coarse_head",
        "seen_floor",
        # bucket rings: rows x channels, row event totals, running window sums at the head
        "fine",
        "fine_tot",
        "fine_sums",
        "coarse",
        "coarse_tot",
        "coarse_sums",
        # distinct visitors: last fine bucket per slot, relative to slot_base (0 = never); an array,
        # not a list, so restoring it allocates no int objects
        "slots",
        "slot_base",
        # dedup: fine bucket -> set of event keys, for buckets >= seen_floor
        "seen",
        # lifetime aggregates of accepted activity; decayed sums of final coarse rows, per
        # half-life x kind, relative to the anchor bucket decay_epoch
        "last_ms",
        "first_ms",
        "totals",
        "decay",
        "decay_epoch",
        "rating_sum",
        "rating_n",
        "first_seen_ms",
        # profile
        "known",
        "created_ms",
        "profile_ms",
        "profile_tie",
        "lifecycle",
        "lifecycle_ms",
        "lifecycle_tie",
        "city",
        "state_code",
        "category",
        "price_range",
        "is_open",
        "city_bucket",
        "category_bucket",
    )

    def __init__(self, business_id: str, spec: FeatureSpec = DEFAULT_SPEC):
        lay = spec.layout
        self.business_id = business_id
        self.layout = lay
        self.max_event_ms = 0
        self.late_dropped = 0
        self.fine_head = 0
        self.coarse_head = 0
        self.seen_floor = 0
        self.fine = [0] * (lay.Rf * lay.K)
        self.fine_tot = [0] * lay.Rf
        self.fine_sums = [0] * (lay.n_fine * lay.K)
        self.coarse = [0] * (lay.Rc * lay.K)
        self.coarse_tot = [0] * lay.Rc
        self.coarse_sums = [0] * (lay.n_coarse * lay.K)
        self.slots = array("H", bytes(2 * lay.slots))
        self.slot_base = _slot_base(0)
        self.seen: dict[int, set[int]] = {}
        n = len(lay.kinds)
        self.last_ms = [0] * n
        self.first_ms = [0] * n
        self.totals = [0] * n
        self.decay = array("d", bytes(8 * n * len(lay.decay_f)))
        self.decay_epoch = 0
        self.rating_sum = 0
        self.rating_n = 0
        self.first_seen_ms = 0
        self.known = False
        self.created_ms = 0
        self.profile_ms = 0
        self.profile_tie = 0
        self.lifecycle: str | None = None
        self.lifecycle_ms = 0
        self.lifecycle_tie = 0
        self.city = ""
        self.state_code = ""
        self.category = ""
        self.price_range: int | None = None
        self.is_open = False
        self.city_bucket = -1
        self.category_bucket = -1

    @property
    def spec(self) -> FeatureSpec:
        return self.layout.spec

    @property
    def watermark_ms(self) -> int | None:
        """Activity events earlier than this are late; None before the first activity event."""
        return self.max_event_ms - self.layout.lateness if self.max_event_ms else None

    def copy(self) -> BusinessState:
        new = BusinessState.__new__(BusinessState)
        for name in _SCALARS:
            setattr(new, name, getattr(self, name))
        for name in _LISTS:
            setattr(new, name, getattr(self, name)[:])
        new.seen = {b: set(keys) for b, keys in self.seen.items()}
        return new

    def canonical(self) -> tuple:
        """The observable content: equal canonical forms behave identically from here on.

        Slots last seen before both rings are behaviourless (no window can reach them again), so
        they read as never-seen; this is also what ``to_bytes`` writes.
        """
        return (
            tuple(getattr(self, n) for n in _SCALARS if n != "layout")
            + (self.layout.state_tag,)
            + tuple(tuple(getattr(self, n)) for n in _LISTS if n != "slots")
            + (tuple(_live_slots(self)), tuple(sorted((b, tuple(sorted(k))) for b, k in self.seen.items())))
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, BusinessState):
            return NotImplemented
        return self.canonical() == other.canonical()

    __hash__ = None  # type: ignore[assignment]  # mutable: not hashable

    def diff(self, other: BusinessState) -> list[str]:
        """Names of the fields that differ (for test failure messages)."""
        names = (
            [n for n in _SCALARS if n != "layout"]
            + ["layout.state_tag"]
            + [n for n in _LISTS if n != "slots"]
            + ["slots", "seen"]
        )
        return [n for n, a, b in zip(names, self.canonical(), other.canonical(), strict=True) if a != b]

    def __repr__(self) -> str:
        return (
            f"BusinessState({self.business_id!r}, max_event_ms={self.max_event_ms}, known={self.known}, "
            f"lifecycle={self.lifecycle}, events={sum(self.totals)}, late_dropped={self.late_dropped})"
        )


_LISTS = (
    "fine",
    "fine_tot",
    "fine_sums",
    "coarse",
    "coarse_tot",
    "coarse_sums",
    "slots",
    "last_ms",
    "first_ms",
    "totals",
    "decay",
)
_SCALARS = tuple(n for n in BusinessState.__slots__ if n not in _LISTS and n != "seen")


def _live_slots(st: BusinessState) -> list[int]:
    lay = st.layout
    lo = min(
        (st.fine_head - lay.Rf + 1) if lay.Rf else 1 << 62,
        (st.coarse_head - lay.Rc + 1) * lay.ratio if lay.Rc else 1 << 62,
    )
    lo -= st.slot_base
    return [v if v >= lo else 0 for v in st.slots]


def new_state(business_id: str, spec: FeatureSpec = DEFAULT_SPEC) -> BusinessState:
    """An empty state: no activity, no profile."""
    return BusinessState(business_id, spec)


def is_scorable(state: BusinessState) -> bool:
    """Known through a business event, and its latest lifecycle event is not CLOSED."""
    return state.known and state.lifecycle != "CLOSED"


# -- the fold ------------------------------------------------------------------------------------


def update(
    state: BusinessState | None, event: ActivityEvent | BusinessEvent, spec: FeatureSpec = DEFAULT_SPEC
) -> BusinessState:
    """Fold one event into ``state`` (mutated and returned; a new state when ``None``).

    ``spec`` must have the state parameters the state was built with (``SpecError`` otherwise).
    """
    lay = spec.layout
    cls = type(event)
    if cls is not ActivityEvent and cls is not BusinessEvent:
        raise InvalidEvent(f"not an event: {cls.__name__}")
    if state is None:
        state = BusinessState(event.business_id, spec)
    else:
        if state.layout is not lay and state.layout.state_tag != lay.state_tag:
            raise SpecError(f"state built with feature spec {state.layout.version}, updated with {lay.version}")
        if event.business_id != state.business_id:
            raise FeatureError(f"event for business {event.business_id!r} folded into state of {state.business_id!r}")
    # ``cls is`` rather than isinstance on the hot path; mypy cannot narrow on it.
    if cls is ActivityEvent:
        _fold_activity(state, event, lay)  # type: ignore[arg-type]
    else:
        _fold_business(state, event, spec)  # type: ignore[arg-type]
    return state


def _fold_activity(st: BusinessState, ev: ActivityEvent, lay: Layout) -> None:
    t = ev.event_time
    k = lay.kind_index.get(ev.kind)
    if k is None:
        raise InvalidEvent(f"activity event {ev.event_id}: unknown kind {ev.kind!r}")
    bf = t // lay.gf
    mx = st.max_event_ms
    if t > mx:
        if mx and lay.decay_f:
            f0 = (mx - lay.lateness) // lay.gc
            f1 = (t - lay.lateness) // lay.gc
            if f1 > f0:
                _settle(st, lay, f0, f1)
        st.max_event_ms = t
        if bf > st.fine_head:
            _advance_clock(st, lay, bf, t // lay.gc)
        floor = (t - lay.lateness) // lay.gf
        if floor > st.seen_floor:
            st.seen_floor = floor
            seen = st.seen
            for b in [b for b in seen if b < floor]:
                del seen[b]
    elif t < mx - lay.lateness:
        st.late_dropped += 1
        return

    key = _from_bytes(blake2b(ev.event_id.encode(), digest_size=8).digest(), "little")  # event_key, inlined
    seen = st.seen
    keys = seen.get(bf)
    if keys is None:
        seen[bf] = {key}
    elif key in keys:
        return
    else:
        keys.add(key)

    # Distinct visitors: a slot moves from its old bucket to this one only if this is later.
    moved = False
    old = 0
    uid = ev.user_id
    if uid:
        j = (zlib.crc32(uid.encode()) * _GOLD & 0xFFFFFFFF) >> lay.slot_shift
        rel = bf - st.slot_base
        prev = st.slots[j]
        if rel > prev:
            st.slots[j] = rel
            moved = True
            if prev:
                old = prev + st.slot_base

    # The same event lands in both grids; in the coarse one, a visitor seen earlier in the same
    # coarse bucket has not moved.
    _fold_ring(
        st.fine, st.fine_tot, st.fine_sums, lay.fine_windows, lay.Rf, lay.K, lay.U, st.fine_head, bf, k, moved, old
    )
    b = bf // lay.ratio
    oc = old // lay.ratio
    _fold_ring(
        st.coarse,
        st.coarse_tot,
        st.coarse_sums,
        lay.coarse_windows,
        lay.Rc,
        lay.K,
        lay.U,
        st.coarse_head,
        b,
        k,
        moved and oc != b,
        oc,
    )

    last = st.last_ms
    if t > last[k]:  # noqa: PLR1730 - cheaper than a max() call on the hot path
        last[k] = t
    st.totals[k] += 1
    first = st.first_ms
    if t < first[k] or not first[k]:
        first[k] = t
    if t < st.first_seen_ms or not st.first_seen_ms:
        st.first_seen_ms = t
    if ev.rating is not None and k == lay.REVIEW:
        st.rating_sum += ev.rating
        st.rating_n += 1


def _fold_ring(
    ring: list[int],
    tot: list[int],
    sums: list[int],
    windows: tuple,
    R: int,
    K: int,
    U: int,
    h: int,
    b: int,
    k: int,
    moved: bool,
    old: int,
) -> None:
    """Count one event of kind ``k`` in bucket ``b`` of a grid whose head is ``h``.

    ``moved``: its visitor's slot moved to ``b`` from bucket ``old`` (0: never seen) of this grid,
    so the distinct-visitor channel gains ``b`` and loses ``old`` where the ring and windows still
    hold it. Buckets that left the ring (``b <= h - R``) change nothing.
    """
    if R and b > h - R:
        s = b % R
        i = s * K
        ring[i + k] += 1
        tot[s] += 1
        if moved:
            ring[i + U] += 1
            if old > h - R:
                ring[(old % R) * K + U] -= 1
            for n, off in windows:
                if b > h - n:
                    sums[off + k] += 1
                    if old <= h - n:
                        sums[off + U] += 1
        else:
            for n, off in windows:
                if b > h - n:
                    sums[off + k] += 1


def _settle(st: BusinessState, lay: Layout, f0: int, f1: int) -> None:
    """Coarse buckets ``f0 .. f1 - 1`` became final: add their rows to the decayed sums.

    Runs before the ring slides, so those rows are still in it (the spec keeps the coarse ring
    longer than the lateness plus a bucket); buckets after the head are empty.
    """
    R, K = lay.Rc, lay.K
    ring, tot = st.coarse, st.coarse_tot
    for b in range(f0, min(f1, st.coarse_head + 1)):
        s = b % R
        if tot[s]:
            _add_final_row(st, lay, b, ring, s * K)


def _add_final_row(st: BusinessState, lay: Layout, b: int, ring: list[int], base: int) -> None:
    acc = st.decay
    nk = lay.n_kinds
    e = st.decay_epoch
    if b >= e:
        if any(acc):
            while e <= b:
                e += DECAY_EPOCH
                for i, step in enumerate(lay.decay_step):
                    for j in range(i * nk, i * nk + nk):
                        acc[j] *= step
        else:  # stepping zeros changes nothing; jump
            e = (b // DECAY_EPOCH + 1) * DECAY_EPOCH
        st.decay_epoch = e
    d = e - b
    for i, pw in enumerate(lay.decay_pow):
        w = pw[d]
        o = i * nk
        for k in range(nk):
            x = ring[base + k]
            if x:
                acc[o + k] += x * w


def _advance_clock(st: BusinessState, lay: Layout, bf: int, bc: int) -> None:
    """The clock entered fine bucket ``bf`` (and coarse ``bc``): slide rings, maybe rebase slots."""
    _advance(st.fine, st.fine_tot, st.fine_sums, lay.fine_part, lay.fine_full, lay.Rf, lay.K, st.fine_head, bf)
    st.fine_head = bf
    if bc > st.coarse_head:
        _advance(
            st.coarse,
            st.coarse_tot,
            st.coarse_sums,
            lay.coarse_part,
            lay.coarse_full,
            lay.Rc,
            lay.K,
            st.coarse_head,
            bc,
        )
        st.coarse_head = bc
    if bf - st.slot_base >= 2 * SLOT_PERIOD:
        base = _slot_base(bf)
        shift = base - st.slot_base
        st.slots = array("H", [v - shift if v > shift else 0 for v in st.slots])
        st.slot_base = base


def _slot_base(fine_head: int) -> int:
    # Slots hold buckets relative to a base that is a function of the clock alone (so equal states
    # hold equal numbers) and keeps every live value in 1..65535 for a u16 encoding.
    return (fine_head // SLOT_PERIOD - 1) * SLOT_PERIOD


def _advance(
    ring: list[int], tot: list[int], sums: list[int], part: tuple, full: tuple, R: int, K: int, h: int, h2: int
) -> None:
    """Move a grid's head from bucket ``h`` to ``h2 > h``: drop leaving rows from the window sums."""
    if not R:
        return
    d = h2 - h
    if d >= R:
        ring[:] = [0] * len(ring)
        tot[:] = [0] * R
        sums[:] = [0] * len(sums)
        return
    for n, off in part:
        if d >= n:
            sums[off : off + K] = [0] * K
            continue
        for b in range(h - n + 1, h2 - n + 1):
            s = b % R
            if tot[s]:
                base = s * K
                for c in range(K):
                    sums[off + c] -= ring[base + c]
    for b in range(h + 1, h2 + 1):
        s = b % R
        if tot[s]:
            base = s * K
            for off in full:
                for c in range(K):
                    sums[off + c] -= ring[base + c]
            ring[base : base + K] = [0] * K
            tot[s] = 0


def _fold_business(st: BusinessState, ev: BusinessEvent, spec: FeatureSpec) -> None:
    t = ev.event_time
    tie = event_key(ev.event_id)
    st.known = True
    if not st.first_seen_ms or t < st.first_seen_ms:
        st.first_seen_ms = t
    if ev.kind == "CREATED" and (not st.created_ms or t < st.created_ms):
        st.created_ms = t
    if ev.kind in _LIFECYCLE_CODE and (t, tie) > (st.lifecycle_ms, st.lifecycle_tie):
        st.lifecycle, st.lifecycle_ms, st.lifecycle_tie = ev.kind, t, tie
    if (t, tie) > (st.profile_ms, st.profile_tie):
        st.profile_ms, st.profile_tie = t, tie
        st.city = ev.city
        st.state_code = ev.state
        st.category = ev.categories[0] if ev.categories else ""
        st.price_range = ev.price_range
        st.is_open = bool(ev.is_open)
        # City names repeat across states (Springfield): bucket on both.
        st.city_bucket = stable_bucket(f"{ev.city}|{ev.state}", spec.city_buckets) if ev.city else -1
        st.category_bucket = stable_bucket(st.category, spec.category_buckets) if st.category else -1


# -- changelog encoding --------------------------------------------------------------------------
#
# header: magic "SR", state version, flags, state tag (hash of the spec's state parameters: a state
# means nothing under another layout; the priors do not matter).
# body: fixed scalars; the four strings as one utf-8 run (lengths in characters); ring rows and row
# totals at the narrowest width that holds them (flags bits 1-2); window sums u32; decayed sums f64
# (exact, so a restored state folds on bit for bit); slots u16
# (stale ones zeroed); dedup buckets (u16 offsets from seen_floor), their key counts, keys u64.
# Everything is fixed-width so decoding is a handful of C-level array calls, which is what makes
# restore fast. zlib is tried only when the body less its dedup keys (random u64s, incompressible)
# exceeds 2 KiB, as with large specs, and kept only if it saves a quarter.

_MAGIC = b"SR"
_HEADER = struct.Struct("<2sBBI")
_NK = len(ACTIVITY_KINDS)
_FIXED = struct.Struct(f"<qqqq QII {_NK}q {_NK}q {_NK}I BBBB ii qQqQ II HHHHI")
_ZLIB = 1
_WIDTHS = ("B", "H", "I")
_COMPRESS_MIN = 2048


def to_bytes(state: BusinessState) -> bytes:
    """Compact, canonical encoding for the changelog: equal states give equal bytes."""
    st = state
    lay = st.layout
    strs = (st.business_id, st.city, st.state_code, st.category)
    text = "".join(strs).encode()
    rings = st.fine + st.fine_tot + st.coarse + st.coarse_tot
    top = max(rings, default=0)
    width = 0 if top < 0x100 else 1 if top < 0x10000 else 2
    floor = st.seen_floor
    buckets = sorted(st.seen)
    keys = array("Q")
    for b in buckets:
        keys.extend(sorted(st.seen[b]))
    fixed = _FIXED.pack(
        st.max_event_ms,
        st.first_seen_ms,
        st.decay_epoch,
        st.created_ms,
        st.late_dropped,
        st.rating_sum,
        st.rating_n,
        *st.last_ms,
        *st.first_ms,
        *st.totals,
        st.known,
        _LIFECYCLE_CODE[st.lifecycle],
        st.is_open,
        st.price_range or 0,
        st.city_bucket,
        st.category_bucket,
        st.profile_ms,
        st.profile_tie,
        st.lifecycle_ms,
        st.lifecycle_tie,
        len(buckets),
        len(keys),
        *(len(x) for x in strs),
        len(text),
    )
    body = b"".join(
        (
            fixed,
            text,
            array(_WIDTHS[width], rings).tobytes(),
            array("I", st.fine_sums + st.coarse_sums).tobytes(),
            st.decay.tobytes(),
            array("H", _live_slots(st)).tobytes(),
            array("H", [b - floor for b in buckets]).tobytes(),
            array("I", [len(st.seen[b]) for b in buckets]).tobytes(),
            keys.tobytes(),
        )
    )
    flags = width << 1
    if len(body) - 8 * len(keys) >= _COMPRESS_MIN:
        packed = zlib.compress(body, 1)
        if len(packed) * 4 <= len(body) * 3:
            body, flags = packed, flags | _ZLIB
    return _HEADER.pack(_MAGIC, STATE_VERSION, flags, lay.state_tag) + body


def readable(data: bytes, spec: FeatureSpec = DEFAULT_SPEC, offset: int = 0) -> bool:
    """Whether the record at ``offset`` of ``data`` has the state version and spec :func:`from_bytes`
    accepts, judged by its header alone (no body decode: a restore checks every entry this way)."""
    if len(data) < offset + _HEADER.size:
        return False
    magic, version, _flags, tag = _HEADER.unpack_from(data, offset)
    return magic == _MAGIC and version == STATE_VERSION and tag == spec.layout.state_tag


def from_bytes(data: bytes, spec: FeatureSpec = DEFAULT_SPEC) -> BusinessState:
    """Inverse of :func:`to_bytes`. ``StateVersionError`` for another state version or spec,
    ``CorruptState`` for bytes that do not parse."""
    lay = spec.layout
    try:
        magic, version, flags, tag = _HEADER.unpack_from(data)
    except struct.error as exc:
        raise CorruptState(f"state record too short ({len(data)} bytes)") from exc
    if magic != _MAGIC or version != STATE_VERSION:
        raise StateVersionError(f"state record version {version} (magic {magic!r}); this code reads {STATE_VERSION}")
    if tag != lay.state_tag:
        raise StateVersionError(
            f"state written under another feature spec (state tag {tag:08x}, reading with {lay.state_tag:08x})"
        )
    try:
        body = zlib.decompress(data[_HEADER.size :]) if flags & _ZLIB else data[_HEADER.size :]
        return _decode(body, lay, _WIDTHS[(flags >> 1) & 3])
    except (struct.error, zlib.error, ValueError, UnicodeDecodeError, KeyError, IndexError) as exc:
        raise CorruptState(f"corrupt state record: {exc}") from exc


def _decode(body: bytes, lay: Layout, width: str) -> BusinessState:
    f = _FIXED.unpack_from(body)
    st = BusinessState.__new__(BusinessState)
    st.layout = lay
    mx, st.first_seen_ms, st.decay_epoch, st.created_ms, st.late_dropped, st.rating_sum, st.rating_n = f[:7]
    st.max_event_ms = mx
    i = 7 + _NK
    st.last_ms = list(f[7:i])
    st.first_ms = list(f[i : i + _NK])
    i += _NK
    st.totals = list(f[i : i + _NK])
    (
        known,
        life,
        is_open,
        price,
        st.city_bucket,
        st.category_bucket,
        st.profile_ms,
        st.profile_tie,
        st.lifecycle_ms,
        st.lifecycle_tie,
        n_buckets,
        n_keys,
        l_sid,
        l_city,
        l_region,
        l_cat,
        n_text,
    ) = f[i + _NK :]
    st.known = known == 1
    st.lifecycle = _LIFECYCLE[life]
    st.is_open = is_open == 1
    st.price_range = price or None

    o = _FIXED.size
    text = body[o : o + n_text].decode()
    o += n_text
    if len(text) != l_sid + l_city + l_region + l_cat:
        raise ValueError("string lengths disagree")
    st.business_id = text[:l_sid]
    j = l_sid + l_city
    st.city = text[l_sid:j]
    st.state_code = text[j : j + l_region]
    st.category = text[j + l_region :]

    K, Rf, Rc = lay.K, lay.Rf, lay.Rc
    a = array(width)
    end = o + (Rf * K + Rf + Rc * K + Rc) * a.itemsize
    a.frombytes(body[o:end])
    r = a.tolist()
    o = end
    i = Rf * K
    st.fine = r[:i]
    st.fine_tot = r[i : i + Rf]
    i += Rf
    st.coarse = r[i : i + Rc * K]
    st.coarse_tot = r[i + Rc * K :]
    a = array("I")
    nf = lay.n_fine * K
    end = o + 4 * (nf + lay.n_coarse * K)
    a.frombytes(body[o:end])
    r = a.tolist()
    o = end
    st.fine_sums = r[:nf]
    st.coarse_sums = r[nf:]

    st.decay = decay = array("d")
    end = o + 8 * _NK * len(lay.decay_f)
    decay.frombytes(body[o:end])
    o = end

    st.slots = a = array("H")
    end = o + 2 * lay.slots
    a.frombytes(body[o:end])
    o = end

    floor = (mx - lay.lateness) // lay.gf if mx else 0
    seen: dict[int, set[int]] = {}
    if n_buckets:
        bk = array("H")
        end = o + 2 * n_buckets
        bk.frombytes(body[o:end])
        o = end
        cn = array("I")
        end = o + 4 * n_buckets
        cn.frombytes(body[o:end])
        o = end
        ks = array("Q")
        end = o + 8 * n_keys
        ks.frombytes(body[o:end])
        o = end
        i = 0
        for b, c in zip(bk, cn, strict=True):
            seen[floor + b] = set(ks[i : i + c])
            i += c
    if o != len(body):
        raise ValueError(f"{len(body) - o} bytes left over")
    st.seen = seen
    st.seen_floor = floor
    st.fine_head = mx // lay.gf if mx else 0
    st.coarse_head = mx // lay.gc if mx else 0
    st.slot_base = _slot_base(st.fine_head)
    return st
