"""The columnar activity decoder (``consumer.pipeline.fastdecode``) against ``Decoder.decode``.

The contract under test: a record marked fast is one the slow path decodes into a ``Decoded``
with exactly the same values; and every record the slow path decodes from a canonical, ASCII,
packaged-schema encoding is fast (so the shortcut is not needlessly conservative).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumer.config import Config
from consumer.pipeline.codec import HEADER, AvroCodec, FileSchemaRegistry, load_schema_file
from consumer.pipeline.decode import DeadLetter, Decoded, Decoder
from consumer.pipeline.fastdecode import ActivityColumns, decode_activity
from features.events import ACTIVITY_KINDS, MAX_EVENT_TIME_MS, MAX_ID_LEN, MIN_EVENT_TIME_MS, ActivityEvent
from features.spec import DEFAULT_SPEC, FeatureSpec
from features.state import event_key, user_slot
from sim.world import WorldConfig, generate_records

CFG = Config()
REG = FileSchemaRegistry()
CODEC = AvroCodec(REG, "ActivityEvent")
SID = CODEC.schema_id
DECODER = Decoder(CFG, REG)
T = 1_767_225_600_000
REVIEW = ACTIVITY_KINDS.index("REVIEW")


def rec(**kw):
    base = {
        "event_id": "e1",
        "business_id": "b1",
        "user_id": "u1",
        "event_time": T,
        "kind": "REVIEW",
        "search_id": None,
        "rating": 4,
    }
    return base | kw


def slow(key, value, decoder=DECODER):
    return decoder.decode(CFG.activity_topic, 0, 0, key, value)


def check(values, keys, decoder=DECODER, spec: FeatureSpec = DEFAULT_SPEC, hash_mask: int = (1 << 64) - 1):
    """decode_activity of the batch, after checking every fast record against the slow path.
    Returns (columns, slow outcomes)."""
    cols = decode_activity(values, keys, SID, spec, hash_mask)
    arrays = [cols.fast, cols.bid_code, cols.event_time, cols.kind, cols.user_slot, cols.event_key, cols.rating]
    assert [a.dtype for a in arrays] == [np.bool_] + [np.int64] * 4 + [np.uint64, np.int64]
    assert all(a.shape == (len(values),) for a in arrays)
    outcomes = [slow(k, v, decoder) for k, v in zip(keys, values, strict=True)]
    for i, out in enumerate(outcomes):
        if not cols.fast[i]:
            assert cols.bid_code[i] == -1
            continue
        assert isinstance(out, Decoded), (i, out)
        ev = out.event
        assert isinstance(ev, ActivityEvent)
        got = (
            cols.bids[cols.bid_code[i]],
            int(cols.event_time[i]),
            ACTIVITY_KINDS[cols.kind[i]],
            int(cols.user_slot[i]),
            int(cols.event_key[i]),
            int(cols.rating[i]),
        )
        want_slot = -1 if not ev.user_id else user_slot(ev.user_id, spec)  # empty: anonymous, as activity_batch
        want = (ev.business_id, ev.event_time, ev.kind, want_slot, event_key(ev.event_id), ev.rating or 0)
        assert got == want, i
    fast_bids = [outcomes[i].event.business_id for i in np.flatnonzero(cols.fast)]
    assert cols.bids == list(dict.fromkeys(fast_bids))
    return cols, outcomes


def one(record=None, key=None, value=None) -> tuple[bool, Decoded | DeadLetter]:
    r = record if record is not None else rec()
    v = CODEC.encode(r) if value is None else value
    k = r["business_id"].encode() if key is None else key
    cols, outs = check([v], [k])
    return bool(cols.fast[0]), outs[0]


def _long(n: int) -> bytes:
    z = (n << 1) ^ (n >> 63)
    z &= (1 << 64) - 1
    out = bytearray()
    while z >= 0x80:
        out.append(z & 0x7F | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def _str(b: bytes) -> bytes:
    return _long(len(b)) + b


def raw(*, user=(1, b"u1"), time=T, kind=REVIEW, search=(0, b""), rating=(1, 4), header=None, eid=b"e1") -> bytes:
    """A hand-encoded record, for shapes the Avro writer would never produce."""
    body = _str(eid) + _str(b"b1")
    body += _long(user[0]) + (_str(user[1]) if user[0] == 1 else b"")
    body += _long(time) + _long(kind)
    body += _long(search[0]) + (_str(search[1]) if search[0] == 1 else b"")
    body += _long(rating[0]) + (_long(rating[1]) if rating[0] == 1 else b"")
    return (header if header is not None else HEADER.pack(0, SID)) + body


def _world_batch(businesses=30, days=2, seed=3):
    recs = [r for k, r in generate_records(WorldConfig(businesses=businesses, days=days, seed=seed)) if k == "activity"]
    return [CODEC.encode(r) for r in recs], [r["business_id"].encode() for r in recs]


def test_simulated_records_are_all_fast_and_equal():
    values, keys = _world_batch()
    cols, outs = check(values, keys)
    assert len(values) > 1000 and cols.fast.all()
    assert isinstance(cols, ActivityColumns) and len(cols.bids) > 1


def test_a_spec_with_other_slots_moves_user_slot():
    spec = FeatureSpec(distinct_slots=DEFAULT_SPEC.distinct_slots * 4)
    values, keys = _world_batch(businesses=5, days=1)
    cols, _ = check(values, keys, spec=spec)
    assert cols.fast.all()


def test_empty_batch_and_mismatched_lengths():
    cols = decode_activity([], [], SID)
    assert cols.fast.shape == (0,) and cols.bids == []
    with pytest.raises(ValueError):
        decode_activity([b""], [], SID)


@pytest.mark.parametrize("n", [1, 7, 8, 9, 127, 128, 129, 200, 255, MAX_ID_LEN])
def test_event_key_of_one_and_two_block_ids(n):
    """BLAKE2b in the kernel: ids ending inside, at and just past a 128-byte block."""
    fast, out = one(rec(event_id="x" * (n - 1) + "!"))
    assert fast and isinstance(out, Decoded)


def test_a_batch_mixes_fast_and_slow_records_and_groups_businesses():
    values, keys = [], []
    for i in range(3000):
        r = rec(event_id=f"e{i}", business_id=f"b{i % 997}", user_id=None if i % 4 else f"u{i}")
        values.append(CODEC.encode(r) if i % 5 else CODEC.encode(r)[:-1])
        keys.append(r["business_id"].encode())
    cols, _ = check(values, keys)
    assert cols.fast.sum() == 2400 and len(cols.bids) == 997


@pytest.mark.parametrize("bits", [0, 1, 3])
def test_business_ids_are_grouped_by_bytes_not_by_hash(bits):
    """With the hash cut to a few bits, distinct ids collide all the time: still one group each."""
    values, keys = _world_batch(businesses=40, days=1)
    cols, _ = check(values, keys, hash_mask=(1 << bits) - 1)
    assert cols.fast.all() and len(cols.bids) > 1 << bits


def _legal_edges():
    yield rec(event_time=MIN_EVENT_TIME_MS)
    yield rec(event_time=MAX_EVENT_TIME_MS - 1)
    yield rec(event_id="e" * MAX_ID_LEN, business_id="b" * MAX_ID_LEN, user_id="u" * MAX_ID_LEN)
    yield rec(search_id="s" * MAX_ID_LEN)
    yield rec(user_id="", search_id="")
    yield rec(user_id=None, rating=None)
    for k in ACTIVITY_KINDS:
        yield rec(kind=k, rating=None)
    for rating in range(1, 6):
        yield rec(rating=rating)
    yield rec(event_id="\x00", business_id="\x7f")


@pytest.mark.parametrize("r", list(_legal_edges()))
def test_legal_edges_are_fast(r):
    fast, out = one(r)
    assert fast and isinstance(out, Decoded)


INVALID = [
    rec(event_id=""),
    rec(business_id=""),
    rec(event_id="e" * (MAX_ID_LEN + 1)),
    rec(business_id="b" * (MAX_ID_LEN + 1)),
    rec(user_id="u" * (MAX_ID_LEN + 1)),
    rec(search_id="s" * (MAX_ID_LEN + 1)),
    rec(event_time=MIN_EVENT_TIME_MS - 1),
    rec(event_time=MAX_EVENT_TIME_MS),
    rec(event_time=-1),
    rec(event_time=2**63 - 1),
    rec(kind="CALL", rating=3),
    rec(rating=0),
    rec(rating=6),
    rec(rating=-1),
    rec(rating=2**31 - 1),
]


@pytest.mark.parametrize("r", INVALID)
def test_invalid_events_are_not_fast(r):
    fast, out = one(r)
    assert not fast and isinstance(out, DeadLetter) and out.reason == "invalid"


@pytest.mark.parametrize(
    "r", [rec(event_id="é"), rec(business_id="bé"), rec(user_id="ü"), rec(search_id="s\u2603"), rec(user_id="😀")]
)
def test_non_ascii_strings_go_the_slow_way(r):
    fast, out = one(r)
    assert not fast and isinstance(out, Decoded)


def test_unicode_length_counts_characters_on_the_slow_path():
    """256 two-byte characters: valid (len is in characters), 512 bytes, and not fast."""
    fast, out = one(rec(user_id="é" * MAX_ID_LEN))
    assert not fast and isinstance(out, Decoded)


GOOD = CODEC.encode(rec())


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        (b"b1", None, "undecodable"),
        (None, GOOD, "key_mismatch"),
        (b"", GOOD, "key_mismatch"),
        (b"b2", GOOD, "key_mismatch"),
        (b"b1\x00", GOOD, "key_mismatch"),
        (b"b", GOOD, "key_mismatch"),
        (b"b1", b"", "undecodable"),
        (b"b1", GOOD[:4], "undecodable"),
        (b"b1", b"\x01" + GOOD[1:], "undecodable"),
        (b"b1", GOOD[:-1], "undecodable"),
        (b"b1", GOOD + b"\x00", "undecodable"),
        (b"b1", HEADER.pack(0, 999) + GOOD[5:], "undecodable"),
        (b"b1", raw(kind=len(ACTIVITY_KINDS)), "undecodable"),
        (b"b1", raw(kind=-1), None),
        (b"b1", raw(user=(2, b"")), "undecodable"),
        (b"b1", raw(search=(2, b"")), "undecodable"),
        (b"b1", raw(rating=(3, 0)), "undecodable"),
        (b"b1", raw(user=(-1, b"")), None),
        (b"b1", raw(eid=b"e1\xff"), "undecodable"),
    ],
)
def test_broken_records_are_not_fast(key, value, reason):
    """Each case is not fast, and the slow path's verdict is the one it always gave (``None``:
    whatever fastavro makes of it, e.g. a negative union or enum index)."""
    cols, outs = check([value], [key])
    assert not cols.fast[0]
    out = outs[0]
    if reason is not None:
        assert isinstance(out, DeadLetter) and out.reason == reason


def test_hand_encoding_matches_the_writer():
    assert raw() == GOOD
    fast, out = one(value=raw())
    assert fast


USER_BRANCH = 5 + 3 + 3  # header, event_id "e1", business_id "b1"


@pytest.mark.parametrize(
    "value",
    [
        GOOD[:5] + b"\x84\x00" + GOOD[6:],  # event_id's length 2 padded to two bytes
        GOOD[:USER_BRANCH] + b"\x82\x80\x00" + GOOD[USER_BRANCH + 1 :],  # union index 1 in three bytes
        GOOD[:USER_BRANCH] + b"\x82" + b"\x80" * 8 + b"\x00" + GOOD[USER_BRANCH + 1 :],  # ... in ten
    ],
)
def test_padded_varints_are_not_fast(value):
    """Padded varints are legal to fastavro's reader, but the fast path leaves them to it."""
    assert GOOD[5] == 0x04 and GOOD[USER_BRANCH] == 0x02
    cols, outs = check([value], [b"b1"])
    assert not cols.fast[0]


def test_older_writer_schema_goes_through_schema_resolution(tmp_path):
    """A record from an older writer (no rating field) has another schema id: never fast, still
    decoded by the slow path with the reader's default."""
    reg = FileSchemaRegistry(tmp_path / "reg.json")
    old = load_schema_file("activity_event.avsc")
    old["fields"] = [f for f in old["fields"] if f["name"] != "rating"]
    writer = AvroCodec(reg, "ActivityEvent", schema=old)
    assert writer.schema_id != SID
    r = rec(rating=None)
    del r["rating"]
    value = writer.encode(r)
    cols, outs = check([value, GOOD], [b"b1", b"b1"], decoder=Decoder(CFG, reg))
    assert cols.fast.tolist() == [False, True]
    assert isinstance(outs[0], Decoded) and outs[0].event.rating is None


def test_a_batch_of_another_schema_id_is_never_fast():
    cols = decode_activity([GOOD], [b"b1"], SID + 1)
    assert not cols.fast.any()


ids = st.text(max_size=8) | st.text(alphabet=st.characters(max_codepoint=127), min_size=250, max_size=260)
times = st.sampled_from(
    [MIN_EVENT_TIME_MS - 1, MIN_EVENT_TIME_MS, MAX_EVENT_TIME_MS - 1, MAX_EVENT_TIME_MS, 0, -(2**63), 2**63 - 1]
) | st.integers(MIN_EVENT_TIME_MS - 10**6, MAX_EVENT_TIME_MS + 10**6)
records = st.fixed_dictionaries(
    {
        "event_id": ids,
        "business_id": st.sampled_from(["b1", "b2", "bé", ""]) | ids,
        "user_id": st.none() | ids,
        "event_time": times,
        "kind": st.sampled_from(ACTIVITY_KINDS),
        "search_id": st.none() | ids,
        "rating": st.none() | st.integers(-1, 7) | st.integers(-(2**31), 2**31 - 1),
    }
)
key_choice = st.sampled_from(["own", "own", "own", "none", "other"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(records, key_choice), min_size=1, max_size=30))
def test_generated_records_agree_with_the_slow_path(batch):
    values, keys = [], []
    for r, how in batch:
        values.append(CODEC.encode(r))
        keys.append({"own": r["business_id"].encode(), "none": None, "other": b"b1"}[how])
    cols, outs = check(values, keys)
    for (r, _), out, fast in zip(batch, outs, cols.fast, strict=True):
        ascii_only = all(
            s is None or s.isascii() for s in (r["event_id"], r["business_id"], r["user_id"], r["search_id"])
        )
        assert fast == (isinstance(out, Decoded) and ascii_only)


def _corrupt(data: bytes, how: str, at: int, byte: int) -> bytes:
    i = at % (len(data) + 1)
    if how == "truncate":
        return data[:i]
    if how == "insert":
        return data[:i] + bytes([byte]) + data[i:]
    if i == len(data):
        return data + bytes([byte])
    if how == "flip":
        return data[:i] + bytes([data[i] ^ (1 << (byte % 8))]) + data[i + 1 :]
    return data[:i] + bytes([byte]) + data[i + 1 :]


SAMPLE_VALUES, SAMPLE_KEYS = _world_batch(businesses=4, days=1, seed=9)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, len(SAMPLE_VALUES) - 1),
            st.lists(
                st.tuples(
                    st.sampled_from(["truncate", "insert", "flip", "set"]), st.integers(0, 200), st.integers(0, 255)
                ),
                max_size=3,
            ),
        ),
        min_size=1,
        max_size=20,
    )
)
def test_corrupted_bytes_never_raise_nor_decode_differently(edits):
    values, keys = [], []
    for pick, changes in edits:
        v = SAMPLE_VALUES[pick]
        for how, at, byte in changes:
            v = _corrupt(v, how, at, byte)
        values.append(v)
        keys.append(SAMPLE_KEYS[pick])
    check(values, keys)


def test_every_single_byte_change_of_a_record():
    """Exhaustive over one record: each position set to each byte value, and each truncation."""
    values = [GOOD[:i] + bytes([b]) + GOOD[i + 1 :] for i in range(len(GOOD)) for b in range(256)]
    values += [GOOD[:i] for i in range(len(GOOD))]
    cols, outs = check(values, [b"b1"] * len(values))
    assert cols.fast.sum() >= len(GOOD)  # at least the unchanged byte at each position
    assert not cols.fast[-len(GOOD) :].any()
