import copy
import io
import json
import struct

import fastavro
import pytest

from consumer.errors import DecodeError, SchemaRegistryError
from consumer.pipeline.codec import HEADER, AvroCodec, FileSchemaRegistry, load_schema_file

ACTIVITY = {
    "event_id": "e1",
    "business_id": "b000001",
    "user_id": "u9",
    "event_time": 1_767_225_600_000,
    "kind": "REVIEW",
    "search_id": None,
    "rating": 4,
}


def test_round_trip_and_confluent_header():
    codec = AvroCodec(FileSchemaRegistry(), "ActivityEvent")
    data = codec.encode(ACTIVITY)
    magic, sid = HEADER.unpack_from(data)
    assert (magic, sid) == (0, codec.schema_id)
    # Any Avro reader given only the .avsc file decodes the body after the 5-byte header.
    body = fastavro.schemaless_reader(
        io.BytesIO(data[5:]), fastavro.parse_schema(load_schema_file("activity_event.avsc")), None
    )
    assert body == ACTIVITY
    assert codec.decode(data) == ACTIVITY


def test_packaged_ids_are_stable():
    reg = FileSchemaRegistry()
    assert AvroCodec(reg, "BusinessEvent").schema_id == 1
    assert AvroCodec(reg, "ActivityEvent").schema_id == 2
    assert AvroCodec(reg, "Prediction").schema_id == 4  # 3: the prediction before as_of


def test_predictions_written_before_as_of_still_decode():
    """Predictions already on a topic were written with schema id 3 (no as_of): a reader of the
    current schema decodes them, as_of null (readers then use event_time)."""
    reg = FileSchemaRegistry()
    old = AvroCodec(reg, "Prediction", schema=load_schema_file("prediction_v1.avsc"))
    assert old.schema_id == 3
    rec = {
        "prediction_id": "p",
        "business_id": "b1",
        "score": 0.5,
        "model_version": "v",
        "feature_set_version": "f",
        "source_topic": "a",
        "source_partition": 0,
        "source_offset": 7,
        "event_time": 1000,
        "scored_at": 2000,
        "group_key": "g",
        "arm": "default",
        "feature_hash": "h",
    }
    got = AvroCodec(reg, "Prediction").decode(old.encode(rec), "predictions", 0, 0)
    assert got == {**rec, "as_of": None}


def test_reader_accepts_older_writer_schema(tmp_path):
    """A record written before a field was added (with a default) decodes with the default."""
    reg = FileSchemaRegistry(tmp_path / "schemas.json")
    old = load_schema_file("activity_event.avsc")
    old["fields"] = [f for f in old["fields"] if f["name"] != "search_id"]
    old_codec = AvroCodec(reg, "ActivityEvent", schema=old)
    assert old_codec.schema_id != 2
    rec = {k: v for k, v in ACTIVITY.items() if k != "search_id"}
    data = old_codec.encode(rec)

    # A new process: the registration persisted, and the current reader resolves the old writer.
    current = AvroCodec(FileSchemaRegistry(tmp_path / "schemas.json"), "ActivityEvent")
    assert current.decode(data) == {**rec, "search_id": None}


def test_newer_writer_with_extra_field_decodes_into_current_reader(tmp_path):
    reg = FileSchemaRegistry(tmp_path / "schemas.json")
    new = copy.deepcopy(load_schema_file("activity_event.avsc"))
    new["fields"].append({"name": "device", "type": "string", "default": "web"})
    data = AvroCodec(reg, "ActivityEvent", schema=new).encode({**ACTIVITY, "device": "app"})
    assert AvroCodec(reg, "ActivityEvent").decode(data) == ACTIVITY


def test_packaged_registry_refuses_to_register_without_a_file():
    other = load_schema_file("activity_event.avsc")
    other["fields"] = other["fields"][:-1]
    with pytest.raises(SchemaRegistryError, match="STREAMRANK_SCHEMA_REGISTRY"):
        AvroCodec(FileSchemaRegistry(), "ActivityEvent", schema=other)


@pytest.mark.parametrize(
    "data, reason",
    [
        (None, "tombstone"),
        (b"\x00\x00", "shorter than"),
        (b"\x07\x00\x00\x00\x02abc", "magic byte 7"),
        (struct.pack(">bI", 0, 9999) + b"abc", "unknown schema id 9999"),
        (struct.pack(">bI", 0, 1) + b"\x02e", "events.BusinessEvent, expected streamrank.events.ActivityEvent"),
        (struct.pack(">bI", 0, 2) + b"\x02e", "undecodable"),
        (struct.pack(">bI", 0, 2) + b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", "undecodable"),
    ],
)
def test_undecodable_bytes_raise_one_error_type_naming_coordinates(data, reason):
    codec = AvroCodec(FileSchemaRegistry(), "ActivityEvent")
    with pytest.raises(DecodeError) as info:
        codec.decode(data, "activity-events", 3, 1234)
    assert "activity-events[3]@1234" in str(info.value)
    assert reason in str(info.value)
    assert info.value.offset == 1234


def test_trailing_garbage_is_refused():
    codec = AvroCodec(FileSchemaRegistry(), "ActivityEvent")
    with pytest.raises(DecodeError, match="trailing"):
        codec.decode(codec.encode(ACTIVITY) + b"\x00", "t", 0, 0)


def test_every_schema_file_is_valid_avro_and_registered():
    schema_dir = __import__("importlib").import_module("consumer.pipeline.codec").SCHEMA_DIR
    registry = json.loads((schema_dir / "registry.json").read_text())
    # Not vacuous: every .avsc shipped is registered, and the registry is not empty.
    assert {e["file"] for e in registry["schemas"].values()} == {p.name for p in schema_dir.glob("*.avsc")} != set()
    for entry in registry["schemas"].values():
        fastavro.parse_schema(load_schema_file(entry["file"]))
