"""Per-partition feature state, its changelog, and restore on assignment.

Each input partition owns the states of the businesses keyed to it. At every checkpoint (each
batch once caught up, at most every ``STREAMRANK_CHECKPOINT_INTERVAL_MS`` while working off a
backlog) the changed states go to the changelog topic (same partition number, key = business_id; compacted on
real Kafka). Each changelog value is stamped with the input offsets the state reflects, one per
input topic, so a record re-read after a crash (state written, offsets not yet committed) is
recognised and not applied twice.

Changelog value layout: ``b"SR1" | business offset (int64) | activity offset (int64) | state bytes``.

In memory, a partition's decoded states are rows of one ``features.columnar.ColumnarTable``
(``PartitionState.table``), where ``process`` folds them with the compiled kernel; an ``Entry``
names its row, and ``Entry.state`` converts the row to a ``BusinessState`` and back
(``to_state``/``from_state``), so the state bytes above are ``features.state.to_bytes`` as before.

A deleted business (a tombstone on the business topic) is written in two steps. First a *deletion
marker*, the header alone: it keeps the offsets the dropped state reflected, so records re-read
after a crash (up to the tombstone, whose offsets were not committed yet) are still recognised as
applied instead of being folded into a fresh state. Once the input offsets past them are
committed, nothing can be re-read and the worker writes a null value (a real tombstone), which
compaction removes.

Restore checks each value's headers, ours and the state's (version, spec), and decodes nothing:
entries another feature set wrote (or not framed as ours) are counted in ``PartitionState.stale``,
and the worker rebuilds such a partition from the input topics (``consumer.runtime.rebuild``). A
value that fails to decode later raises ``StaleState`` (another state version or spec) or its
subclass ``CorruptChangelog`` (bytes that do not parse), naming the partition and key, for the
same treatment: the rebuild rewrites the partition's changelog, so a corrupt entry neither stops
the worker nor brings it back to the same failure.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

from consumer.errors import CorruptChangelog, StaleState
from features.columnar import ColumnarTable, from_state, to_state
from features.errors import CorruptState, StateVersionError
from features.spec import DEFAULT_SPEC, FeatureSpec
from features.state import BusinessState, from_bytes, readable, to_bytes

HEADER = struct.Struct(">3sqq")
MAGIC = b"SR1"


class Entry:
    """A business's state and the input offsets it reflects.

    Inside a :class:`PartitionState` the state lives in the partition's ``ColumnarTable`` (row
    ``row``), where the compiled fold works on it: ``entry.state`` is then a ``BusinessState`` copy
    of the row (``features.columnar.to_state``) and assigning it writes the row back
    (``from_state``). An entry outside a partition (``decode_entry``'s) holds its state itself."""

    __slots__ = ("_state", "applied", "row", "table")

    def __init__(
        self,
        state: BusinessState | None = None,
        applied: list[int] | None = None,
        *,
        table: ColumnarTable | None = None,
        row: int = -1,
    ):
        self._state = state
        # Highest input offset applied to this state, per input topic rank (business, activity).
        self.applied = applied if applied is not None else [-1, -1]
        self.table = table
        self.row = row

    @property
    def state(self) -> BusinessState:
        if self.table is not None:
            return to_state(self.table, self.row)
        assert self._state is not None, "an entry outside a partition holds its state"
        return self._state

    @state.setter
    def state(self, state: BusinessState) -> None:
        if self.table is not None:
            if state.business_id != self.table.ids[self.row]:
                raise ValueError(f"state of {state.business_id!r} assigned to the row of {self.table.ids[self.row]!r}")
            from_state(self.table, state)
        else:
            self._state = state

    def attach(self, table: ColumnarTable) -> Entry:
        """Move the state this entry holds into its business's row of ``table``."""
        if self.table is None:
            assert self._state is not None
            self.row = from_state(table, self._state)
            self.table, self._state = table, None
        return self

    def __repr__(self) -> str:
        where = f"row={self.row}" if self.table is not None else "detached"
        return f"Entry({where}, applied={self.applied})"


def encode_entry(entry: Entry) -> bytes:
    return HEADER.pack(MAGIC, entry.applied[0], entry.applied[1]) + to_bytes(entry.state)


def deletion_marker(applied: list[int]) -> bytes:
    return HEADER.pack(MAGIC, applied[0], applied[1])


def is_deletion(value: bytes | None) -> bool:
    """A changelog value that says the business has no state: a tombstone or a deletion marker."""
    return value is None or len(value) == HEADER.size


def applied_offsets(data: bytes) -> list[int]:
    """The offsets a changelog value reflects, read from its header alone (no state decode).
    ``CorruptChangelog`` if the value is shorter than the header."""
    if len(data) < HEADER.size:
        raise CorruptChangelog(f"value of {len(data)} bytes is shorter than the {HEADER.size}-byte header")
    _, b_off, a_off = HEADER.unpack_from(data)
    return [b_off, a_off]


def decode_entry(data: bytes, spec: FeatureSpec = DEFAULT_SPEC) -> Entry:
    """A changelog value as an entry. ``CorruptChangelog`` if its bytes do not parse, ``StaleState``
    if another state version or feature spec wrote it. The errors name no partition or key: the
    caller that knows them adds them (``PartitionState.restored``)."""
    if len(data) < HEADER.size:
        raise CorruptChangelog(f"value of {len(data)} bytes is shorter than the {HEADER.size}-byte header")
    magic, b_off, a_off = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise CorruptChangelog(f"value does not start with {MAGIC!r}")
    try:
        return Entry(from_bytes(data[HEADER.size :], spec), [b_off, a_off])
    except CorruptState as exc:
        raise CorruptChangelog(str(exc)) from exc
    except StateVersionError as exc:
        raise StaleState(str(exc)) from exc


@dataclass
class PartitionState:
    partition: int
    entries: dict[str, Entry] = field(default_factory=dict)
    dirty: set[str] = field(default_factory=set)
    # Restored from the changelog and not needed yet: the changelog value, decoded on the
    # business's next event (``restored``). A restore then costs the read, not a decode of every
    # business, and businesses that stay quiet are never decoded.
    encoded: dict[str, bytes] = field(default_factory=dict)
    # Deleted businesses whose deletion marker is still needed: the offsets their dropped state
    # reflected (see the module doc), until a commit covers them.
    deleted: dict[str, list[int]] = field(default_factory=dict)
    # Changelog entries found at restore that this feature set cannot read (another state version
    # or spec): the partition must be rebuilt from the input topics (``consumer.runtime.rebuild``).
    stale: int = 0
    topic: str = "changelog"  # the changelog topic it was restored from: errors name it
    spec: FeatureSpec = DEFAULT_SPEC  # the feature set its states are written in (restored ones decode with it)
    # The decoded states, one row per business (``features.columnar``): what the compiled fold
    # works on. Rows are never freed: a business deleted and seen again gets its row back, reset.
    table: ColumnarTable = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.table = ColumnarTable(self.spec)
        for entry in self.entries.values():  # entries given to the constructor (tests, tools)
            entry.attach(self.table)

    def __len__(self) -> int:
        """Businesses held, decoded or not."""
        return len(self.entries) + len(self.encoded)

    def restored(self, business_id: str) -> Entry | None:
        """The restored entry of a business not in ``entries`` yet, decoded and moved there."""
        data = self.encoded.pop(business_id, None)
        if data is None:
            return None
        try:
            entry = decode_entry(data, self.spec)
        except StaleState as exc:  # headers that passed the restore's check, a body that does not decode
            raise exc.at(partition=self.partition, business_id=business_id, topic=self.topic) from exc
        self.entries[business_id] = entry.attach(self.table)
        return entry

    def new_entry(self, business_id: str, state: BusinessState | None = None) -> Entry:
        """A fresh entry (an empty state unless ``state``); after a deletion it keeps the deleted
        state's offsets, so records that were applied before the deletion are still skipped when
        re-read. A row left by a deleted (or put back) state is reset, dedup memory included."""
        marker = self.deleted.pop(business_id, None) if self.deleted else None
        table = self.table
        if state is not None or business_id in table.rows:
            row = from_state(table, state if state is not None else BusinessState(business_id, self.spec))
        else:
            row = table.row(business_id)  # a new row is the empty state
        entry = self.entries[business_id] = Entry(
            None, marker if marker is not None else [-1, -1], table=table, row=row
        )
        return entry

    def deleted_after(self, business_id: str, rank: int, offset: int) -> bool:
        """Whether the record at ``offset`` of input ``rank`` was applied to a state since deleted."""
        marker = self.deleted.get(business_id)
        return marker is not None and offset <= marker[rank]

    def delete(self, business_id: str, offset: int) -> bool | None:
        """Apply a tombstone at business-topic ``offset``: True if a state was dropped, False if there
        was none, None if this tombstone is already reflected (re-read after a crash)."""
        entry = self.entries.get(business_id)
        if entry is not None:
            applied = entry.applied
        elif business_id in self.encoded:
            try:
                applied = applied_offsets(self.encoded[business_id])
            except StaleState as exc:
                raise exc.at(partition=self.partition, business_id=business_id, topic=self.topic) from exc
        else:
            marker = self.deleted.get(business_id)
            return None if marker is not None and offset <= marker[0] else False
        if offset <= applied[0]:
            return None  # the state was rebuilt after this tombstone: keep it
        self.entries.pop(business_id, None)
        self.encoded.pop(business_id, None)
        self.deleted[business_id] = [offset, applied[1]]
        self.dirty.add(business_id)
        return True

    def forget_deleted(self, business_committed: int | None, activity_committed: int | None) -> list[str]:
        """Deleted businesses whose offsets are all below the committed ones: their markers are no
        longer needed (nothing before them will be re-read). Removed here; the caller writes nulls."""
        gone = [
            bid
            for bid, (b_off, a_off) in self.deleted.items()
            if business_committed is not None
            and b_off < business_committed
            and (a_off < 0 or (activity_committed is not None and a_off < activity_committed))
        ]
        for bid in gone:
            del self.deleted[bid]
        return gone

    def decode_all(self) -> dict[str, Entry]:
        """Every entry, decoded (for inspection: tests, the benchmark)."""
        for business_id in list(self.encoded):
            self.restored(business_id)
        return self.entries

    def drain_changes(self) -> Iterator[tuple[str, bytes | None]]:
        """The changelog value of every business changed since the last call: its encoded state, a
        deletion marker, or None (no state and no marker needed)."""
        dirty, self.dirty = self.dirty, set()
        for business_id in sorted(dirty):
            entry = self.entries.get(business_id)
            if entry is not None:
                yield business_id, encode_entry(entry)
            elif business_id in self.deleted:
                yield business_id, deletion_marker(self.deleted[business_id])
            else:
                yield business_id, None


def from_changelog(
    partition: int, latest: dict[str, bytes | None], spec: FeatureSpec = DEFAULT_SPEC, topic: str = "changelog"
) -> PartitionState:
    """A partition's state from the latest changelog value of each key (null: no state), read
    from ``topic``.

    Each value's headers are checked (ours, then the state's version and spec), not its body: the
    full check is the decode, on the business's next event. Values that fail are counted in
    ``stale`` and kept, so the caller knows which keys the changelog held."""
    ps = PartitionState(partition, topic=topic, spec=spec)
    encoded, deleted, stale = ps.encoded, ps.deleted, 0
    for key, value in latest.items():
        if value is None:
            continue
        if not value.startswith(MAGIC):
            stale += 1
        elif len(value) == HEADER.size:
            deleted[key] = applied_offsets(value)
            continue
        elif not readable(value, spec, HEADER.size):
            stale += 1
        encoded[key] = value
    ps.stale += stale
    return ps
