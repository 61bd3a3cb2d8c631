"""`streamrank generate` into a real broker; an independent reader decodes every record with
fastavro and nothing but the .avsc files in the repo."""

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import fastavro
import pytest
from kafka import KafkaConsumer, TopicPartition

from consumer.io.eventfiles import read_log

pytestmark = pytest.mark.broker
SCHEMAS = Path(__file__).resolve().parents[3] / "consumer" / "pipeline" / "schemas"


def _env(cfg):
    return {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": cfg.bootstrap,
        "STREAMRANK_BUSINESS_TOPIC": cfg.business_topic,
        "STREAMRANK_ACTIVITY_TOPIC": cfg.activity_topic,
    }


def _read_all(bootstrap, topic):
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    out, deadline = [], time.monotonic() + 30
    while time.monotonic() < deadline:
        for recs in consumer.poll(timeout_ms=300).values():
            out.extend(recs)
        if all(consumer.highwater(tp) is not None and consumer.position(tp) >= consumer.highwater(tp) for tp in tps):
            break
    consumer.close()
    return out


@pytest.mark.tansu_smoke
def test_generate_writes_both_topics_readable_with_only_the_avsc_files(kafka_config):
    cfg = kafka_config
    out = subprocess.run(
        [sys.executable, "-m", "consumer.cli", "generate", "--businesses", "30", "--days", "2", "--seed", "4"],
        env=_env(cfg),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    total = int(out.stdout.split("generated ")[1].split()[0])
    seen = 0
    for topic, avsc in ((cfg.business_topic, "business_event.avsc"), (cfg.activity_topic, "activity_event.avsc")):
        schema = fastavro.parse_schema(json.loads((SCHEMAS / avsc).read_text()))
        records = _read_all(cfg.bootstrap, topic)
        assert records, topic
        for r in records:
            assert r.value[0] == 0  # Confluent magic byte
            body = io.BytesIO(r.value[5:])
            rec = fastavro.schemaless_reader(body, schema, None)
            assert body.tell() == len(r.value) - 5
            assert r.key == rec["business_id"].encode()
        seen += len(records)
    assert seen == total


def test_generate_to_a_file_is_deterministic(tmp_path):
    a, b = tmp_path / "a.avro", tmp_path / "b.avro"
    for path in (a, b):
        subprocess.run(
            [sys.executable, "-m", "consumer.cli", "generate", "--businesses", "10", "--days", "1", "--out", str(path)],
            check=True,
            capture_output=True,
            timeout=60,
        )
    ra, rb = list(read_log(a)), list(read_log(b))
    assert ra == rb and len(ra) > 100
    assert {k for k, _ in ra} == {"business", "activity"}
