"""The bulk prediction encoder (``consumer.pipeline.predencode``) against ``AvroCodec.encode``.

The contract under test: every row of a batch encodes to exactly the bytes the per-record fastavro
path writes for the same record, whatever the strings (unicode, empty, NUL inside), numbers (NaN
payloads, -0.0, int64 extremes) or mix of repeated and distinct values.
"""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumer.pipeline.arms import HOLDOUT, SHADOW, ArmConfig, Assigner, RandomScorer, Routing
from consumer.pipeline.codec import AvroCodec, FileSchemaRegistry
from consumer.pipeline.predencode import PredictionColumns, encode_predictions, records
from consumer.pipeline.process import process
from features.spec import DEFAULT_SPEC
from tests.kit.records import item, partition_of, world_records

CODEC = AvroCodec(FileSchemaRegistry(), "Prediction")
SID = CODEC.schema_id
FIELDS = PredictionColumns._fields
BATCH_FIELDS = ("source_topic", "scored_at")


def columns(recs: list[dict]) -> PredictionColumns:
    """The columns of records that share their topic and scoring time (as one batch's do)."""
    assert all(r["source_topic"] == recs[0]["source_topic"] and r["scored_at"] == recs[0]["scored_at"] for r in recs)
    col: dict = {f: [r[f] for r in recs] for f in FIELDS if f not in BATCH_FIELDS}
    for f in ("source_partition", "source_offset", "event_time", "as_of"):
        col[f] = np.array(col[f], dtype=np.int64)
    col["score"] = np.array(col["score"], dtype=np.float64)
    first: dict = recs[0] if recs else {"source_topic": "t", "scored_at": 0}
    return PredictionColumns(**col, source_topic=first["source_topic"], scored_at=first["scored_at"])


def check(recs: list[dict]) -> list[bytes]:
    """Bulk bytes of ``recs``, after checking each against fastavro and the codec's decoder."""
    got = encode_predictions(columns(recs), SID)
    assert got == [CODEC.encode(r) for r in recs]
    for data, r in zip(got, recs, strict=True):
        back = CODEC.decode(data, "predictions", 0, 0)
        assert struct.pack("<d", back["score"]) == struct.pack("<d", r["score"])  # NaN != NaN: compare bits
        assert {**back, "score": 0.0} == {**r, "score": 0.0}
    return got


class Sum:
    """A model that sums a row's finite features: distinct scores per row."""

    def __init__(self, version: str):
        self.version = version
        self.feature_set_version = DEFAULT_SPEC.version

    def score(self, X):
        return np.nansum(X, axis=1).astype(np.float64)


def _world_items(partitions: int = 3):
    recs = world_records(businesses=40, days=3, seed=11, partition=lambda b: partition_of(b, partitions))
    return [item(r.event, r.offset, r.partition) for r in recs]


def test_predictions_of_the_worker_encode_as_fastavro_writes_them():
    """Records as ``process`` makes them (``prediction_record``), one arm: model and feature-set
    versions repeat on every row."""
    out = process(_world_items(), {}, Sum("v20261130081500-3f2a9c1b"), clock=lambda: 1_796_086_400.123)
    assert len(out.predictions) > 100
    check(list(out.predictions))


def test_predictions_of_experiment_arms_hold_out_and_shadow():
    cfg = ArmConfig.parse("control:promoted:1,challenger:random:1", holdout=0.2, salt="s")
    promoted, challenger = Sum("v-promoted"), RandomScorer(DEFAULT_SPEC.version)
    routing = Routing(Assigner(cfg), {"control": promoted, "challenger": challenger, HOLDOUT: promoted}, Sum("v-next"))
    out = process(_world_items(), {}, routing, clock=lambda: 1_796_086_400.5)
    mixed = [*out.predictions, *out.holdout]
    assert {r["arm"] for r in mixed} == {"control", "challenger", HOLDOUT}
    assert len({r["model_version"] for r in mixed}) == 2
    check(mixed)
    assert {r["arm"] for r in out.shadow} == {SHADOW}
    check(list(out.shadow))


def test_an_empty_batch_is_an_empty_list():
    assert encode_predictions(columns([]), SID) == []


def base(**kw) -> dict:
    rec = {
        "prediction_id": "0f" * 16,
        "business_id": "b000001",
        "score": 0.25,
        "model_version": "v1",
        "feature_set_version": "fs1",
        "source_topic": "activity-events",
        "source_partition": 3,
        "source_offset": 12345,
        "event_time": 1_796_000_000_000,
        "scored_at": 1_796_000_000_500,
        "group_key": "Phoenix, AZ|Food",
        "arm": "default",
        "feature_hash": "ab" * 8,
        "as_of": 1_796_000_000_000,
    }
    return rec | kw


def test_one_row_and_values_with_nul_inside():
    """A NUL inside a value defeats the separator scan: that column falls back to per-value encoding."""
    check([base()])
    check([base(business_id="a\x00b", group_key="\x00"), base(business_id="", group_key="x\x00\x00")])
    check([base(model_version="m\x00"), base(model_version="m\x00")])


def test_string_lengths_across_varint_widths():
    lengths = [0, 1, 63, 64, 127, 128, 8191, 8192, 100_000]
    check([base(business_id="é" * k, group_key="x" * k, arm="a" * k) for k in lengths])


def test_misshapen_columns_are_refused():
    cols = columns([base(), base()])
    with pytest.raises(ValueError, match="arm"):
        encode_predictions(cols._replace(arm=["a"]), SID)
    with pytest.raises(ValueError, match="as_of"):
        encode_predictions(cols._replace(as_of=np.zeros(3, np.int64)), SID)
    with pytest.raises(TypeError, match="event_time"):
        encode_predictions(cols._replace(event_time=np.array([1.5, 2.0])), SID)


def test_the_schema_id_is_the_callers():
    (data,) = encode_predictions(columns([base()]), 0x01020304)
    assert data[:5] == b"\x00\x01\x02\x03\x04" and data[5:] == CODEC.encode(base())[5:]


LONGS = st.sampled_from([0, -1, 1, 63, 64, -64, -65, 2**31 - 1, -(2**31), 2**63 - 1, -(2**63)]) | st.integers(
    -(2**63), 2**63 - 1
)
# The bits of a double, so NaNs with any sign and payload are drawn too.
DOUBLES = (
    st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from([-0.0, math.inf, -math.inf])
    | st.integers(0, 2**64 - 1).map(lambda bits: struct.unpack("<d", struct.pack("<Q", bits))[0])
)
TEXT = st.text(max_size=12) | st.sampled_from(["", "default", "Montréal, QC|Cafés", "東京|ラーメン", "🙂"])


@st.composite
def batches(draw) -> list[dict]:
    """A batch: one topic and scoring time; per column either one value for all rows or a value per
    row drawn from a pool (few or many distinct values)."""
    n = draw(st.integers(1, 25))
    topic, scored_at = draw(TEXT), draw(LONGS)

    def column(values):
        pool = draw(st.lists(values, min_size=1, max_size=draw(st.sampled_from([1, 2, n]))))
        return draw(st.lists(st.sampled_from(pool), min_size=n, max_size=n))

    cols = {f: column(TEXT) for f in FIELDS if f not in ("score", *BATCH_FIELDS)}
    for f in ("source_partition", "source_offset", "event_time", "as_of"):
        cols[f] = column(LONGS)
    cols["score"] = column(DOUBLES)
    return [
        {f: topic if f == "source_topic" else scored_at if f == "scored_at" else cols[f][i] for f in FIELDS}
        for i in range(n)
    ]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches())
def test_generated_batches_encode_as_fastavro_writes_them(recs):
    check(recs)


def test_records_inverts_columns():
    recs = [base(), base(score=-1.5, arm="b", as_of=-7)]
    assert records(columns(recs)) == recs
