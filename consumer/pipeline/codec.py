"""Avro in the Confluent wire format: ``0x00 | schema id (4 bytes, big-endian) | Avro body``.

Standard Kafka tooling (kcat -s avro, Confluent deserializers) reads these records given the same
registry. Schema ids come from a :class:`SchemaRegistry`; the packaged :class:`FileSchemaRegistry`
holds the ids of the shipped ``.avsc`` files and can register new versions into a writable file.

Readers always decode into the *current* reader schema of their record type, so a record written
with an older writer schema (a field added since, with a default) still decodes.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import tempfile
from pathlib import Path
from typing import Any, Protocol, cast

import fastavro
from fastavro import parse_schema, schemaless_reader, schemaless_writer

from consumer.errors import DecodeError, SchemaRegistryError

SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
MAGIC = 0
HEADER = struct.Struct(">bI")
SCHEMA_FILES = {
    "BusinessEvent": "business_event.avsc",
    "ActivityEvent": "activity_event.avsc",
    "Prediction": "prediction.avsc",
}


def load_schema_file(name: str) -> dict[str, Any]:
    """The raw JSON of a packaged ``.avsc`` file."""
    return json.loads((SCHEMA_DIR / name).read_text())


def canonical(schema: dict[str, Any]) -> str:
    return json.dumps(fastavro.schema.to_parsing_canonical_form(parse_schema(schema)), sort_keys=True)


def fingerprint(schema: dict[str, Any]) -> str:
    return hashlib.sha256(canonical(schema).encode()).hexdigest()


class SchemaRegistry(Protocol):
    def register(self, subject: str, schema: dict[str, Any]) -> int: ...
    def schema(self, schema_id: int) -> dict[str, Any]: ...


class FileSchemaRegistry:
    """A schema registry kept in one JSON file (ids → schema JSON).

    With no path it serves the packaged ids read-only. With a path it starts from the packaged ids,
    persists new registrations atomically, and is safe to share between processes on one host as
    long as they only add (ids are content-addressed by fingerprint, so two processes registering
    the same schema agree).
    """

    def __init__(self, path: str | os.PathLike[str] | None = None):
        self.path = Path(path) if path else None
        self._by_id: dict[int, dict[str, Any]] = {}
        self._subjects: dict[int, str] = {}
        packaged = json.loads((SCHEMA_DIR / "registry.json").read_text())
        for sid, entry in packaged["schemas"].items():
            self._add(int(sid), entry["subject"], load_schema_file(entry["file"]))
        if self.path and self.path.exists():
            try:
                stored = json.loads(self.path.read_text())
            except (OSError, ValueError) as exc:
                raise SchemaRegistryError(f"schema registry {self.path} is unreadable: {exc}") from exc
            for sid, entry in stored.get("schemas", {}).items():
                if int(sid) not in self._by_id:
                    self._add(int(sid), entry["subject"], entry["schema"])
        self._by_fp = {fingerprint(s): i for i, s in self._by_id.items()}

    def _add(self, sid: int, subject: str, schema: dict[str, Any]) -> None:
        self._by_id[sid] = schema
        self._subjects[sid] = subject

    def register(self, subject: str, schema: dict[str, Any]) -> int:
        fp = fingerprint(schema)
        if fp in self._by_fp:
            return self._by_fp[fp]
        if self.path is None:
            raise SchemaRegistryError(
                "schema not in the packaged registry; set STREAMRANK_SCHEMA_REGISTRY to a writable file to register it"
            )
        sid = max(self._by_id) + 1
        self._add(sid, subject, schema)
        self._by_fp[fp] = sid
        self._save()
        return sid

    def schema(self, schema_id: int) -> dict[str, Any]:
        try:
            return self._by_id[schema_id]
        except KeyError:
            raise SchemaRegistryError(f"unknown schema id {schema_id}") from None

    def _save(self) -> None:
        assert self.path is not None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        doc = {"schemas": {str(i): {"subject": self._subjects[i], "schema": s} for i, s in sorted(self._by_id.items())}}
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".schemas-")
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f, indent=1)
        os.replace(tmp, self.path)


class AvroCodec:
    """Encode records of one type with its current schema; decode records of any known writer schema.

    Parsed schemas are cached per id: the per-record cost is the Avro body alone.
    """

    def __init__(
        self,
        registry: SchemaRegistry,
        record_type: str,
        schema: dict[str, Any] | None = None,
        subject: str | None = None,
    ):
        self.registry = registry
        self.record_type = record_type
        raw = schema if schema is not None else load_schema_file(SCHEMA_FILES[record_type])
        self.schema_id = registry.register(subject or f"{record_type}-value", raw)
        # fastavro types a parsed schema as str | list | dict; a record schema is always a dict.
        self._reader: dict[str, Any] = cast(dict, parse_schema(raw))
        self._header = HEADER.pack(MAGIC, self.schema_id)
        # writer id -> parsed writer schema (None for our own id: no resolution needed, faster)
        self._writers: dict[int, Any] = {self.schema_id: None}

    def encode(self, record: dict[str, Any]) -> bytes:
        buf = io.BytesIO()
        buf.write(self._header)
        schemaless_writer(buf, self._reader, record)
        return buf.getvalue()

    def decode(self, data: bytes | None, topic: str = "?", partition: int = -1, offset: int = -1) -> dict[str, Any]:
        """Decode one record. Any failure raises :class:`DecodeError` naming ``topic[partition]@offset``."""
        if data is None:
            raise DecodeError("null value (tombstone) where a record was expected", topic, partition, offset)
        if len(data) < HEADER.size:
            raise DecodeError(
                f"{len(data)} bytes: shorter than the 5-byte wire-format header", topic, partition, offset
            )
        magic, sid = HEADER.unpack_from(data)
        if magic != MAGIC:
            raise DecodeError(f"magic byte {magic} is not 0 (not Confluent wire format)", topic, partition, offset)
        try:
            writer = self._writers[sid]
        except KeyError:
            try:
                writer = cast(dict, parse_schema(self.registry.schema(sid)))
            except SchemaRegistryError as exc:
                raise DecodeError(f"unknown schema id {sid}", topic, partition, offset) from exc
            except Exception as exc:  # a registered but unparsable schema
                raise DecodeError(
                    f"schema id {sid} is not a valid Avro schema: {exc}", topic, partition, offset
                ) from exc
            if writer.get("name") != self._reader.get("name"):
                raise DecodeError(
                    f"schema id {sid} is {writer.get('name')}, expected {self._reader.get('name')}",
                    topic,
                    partition,
                    offset,
                ) from None
            self._writers[sid] = writer
        buf = io.BytesIO(data)
        buf.seek(HEADER.size)
        try:
            if writer is None:
                rec = schemaless_reader(buf, self._reader, None)
            else:
                rec = schemaless_reader(buf, writer, self._reader)
        except Exception as exc:  # fastavro raises a zoo of types on bad bytes
            raise DecodeError(
                f"Avro body undecodable: {type(exc).__name__}: {exc}"[:300], topic, partition, offset
            ) from exc
        if buf.tell() != len(data):
            raise DecodeError(f"{len(data) - buf.tell()} trailing bytes after the Avro body", topic, partition, offset)
        return cast(dict, rec)
