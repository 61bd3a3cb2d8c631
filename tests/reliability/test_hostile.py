"""Hostile input: 10,000+ generated bad messages mixed into good traffic. Zero worker crashes; every
bad message is in ``dead-letters`` with the reason its category calls for; the good traffic's
outcome is the fault-free one.

The generator is seeded (printed; ``RELIABILITY_SEED`` replays it). Most categories are *valid*
Avro so they get past the byte level: written with a modified writer schema registered in the
test's schema registry (wrong types, unknown enum symbol, missing business_id), or with the right
schema and values the feature code must reject (extreme timestamps, huge strings, empty business,
a rating where none belongs)."""

import copy
import os
import random
import time
from collections import Counter

import pytest
from kafka import KafkaProducer

from consumer.io.clients import producer_kwargs
from consumer.pipeline.codec import AvroCodec, FileSchemaRegistry, load_schema_file
from consumer.runtime.worker import Worker
from sim.world import WorldConfig, generate_records
from tests.kit.runs import Expected, ThreadedWorker, check_invariant

pytestmark = [pytest.mark.reliability, pytest.mark.broker]

N_BAD = 10_200
UNDECODABLE, INVALID = "undecodable", "invalid"


def _schema_with(record_type, change):
    schema = copy.deepcopy(
        load_schema_file({"ActivityEvent": "activity_event.avsc", "BusinessEvent": "business_event.avsc"}[record_type])
    )
    change(schema["fields"])
    return schema


def _field(fields, name):
    return next(f for f in fields if f["name"] == name)


class BadFactory:
    """Category name → (topic kind, reason, make(rnd, good activity record, good business record) → (key, value))."""

    def __init__(self, cfg):
        reg = FileSchemaRegistry(cfg.schema_registry)
        self.act = AvroCodec(reg, "ActivityEvent")
        self.biz = AvroCodec(reg, "BusinessEvent")

        def time_as_string(fields):
            _field(fields, "event_time")["type"] = "string"

        def extra_kind(fields):
            _field(fields, "kind")["type"]["symbols"].append("TELEPORT")

        def no_business(fields):
            fields.remove(_field(fields, "business_id"))

        def rating_as_string(fields):
            _field(fields, "rating")["type"] = ["null", "string"]

        self.wrong_types = AvroCodec(reg, "ActivityEvent", schema=_schema_with("ActivityEvent", time_as_string))
        self.wrong_rating_type = AvroCodec(reg, "ActivityEvent", schema=_schema_with("ActivityEvent", rating_as_string))
        self.unknown_enum = AvroCodec(reg, "ActivityEvent", schema=_schema_with("ActivityEvent", extra_kind))
        self.no_business = AvroCodec(reg, "ActivityEvent", schema=_schema_with("ActivityEvent", no_business))
        self.known_ids = {
            self.act.schema_id,
            self.biz.schema_id,
            self.wrong_types.schema_id,
            self.wrong_rating_type.schema_id,
            self.unknown_enum.schema_id,
            self.no_business.schema_id,
        }

    def categories(self):
        a, b = self.act, self.biz

        def k(rec):
            return rec["business_id"].encode()

        def with_(rec, **kw):
            return {**rec, **kw}

        def random_bytes(rnd, ga, gb):
            return k(ga), rnd.randbytes(rnd.randrange(0, 300))

        def truncated(rnd, ga, gb):
            v = a.encode(with_(ga, user_id=None if rnd.random() < 0.5 else ga["user_id"]))
            return k(ga), v[: rnd.randrange(0, len(v))]

        def trailing_garbage(rnd, ga, gb):
            return k(ga), a.encode(ga) + rnd.randbytes(rnd.randrange(1, 20))

        def wrong_schema_id(rnd, ga, gb):
            v = a.encode(ga)
            sid = rnd.choice([0, 999_999, rnd.randrange(1000, 1 << 31)])
            assert sid not in self.known_ids
            return k(ga), b"\x00" + sid.to_bytes(4, "big") + v[5:]

        def other_record_type(rnd, ga, gb):
            return k(gb), b.encode(gb)  # a business event on the activity topic

        def wrong_types(rnd, ga, gb):
            if rnd.random() < 0.5:
                return k(ga), self.wrong_types.encode(with_(ga, event_time=str(ga["event_time"])))
            return k(ga), self.wrong_rating_type.encode(with_(ga, kind="REVIEW", rating="five"))

        def unknown_enum(rnd, ga, gb):
            return k(ga), self.unknown_enum.encode(with_(ga, kind="TELEPORT"))

        def missing_business_field(rnd, ga, gb):
            rec = dict(ga)
            del rec["business_id"]
            return k(ga), self.no_business.encode(rec)

        def empty_business(rnd, ga, gb):
            return b"", a.encode(with_(ga, business_id=""))

        def extreme_time(rnd, ga, gb):
            t = rnd.choice(
                [-1, -(1 << 62), 0, 946_684_799_999, 32_503_680_000_000, (1 << 63) - 1, ga["event_time"] // 1000]
            )
            return k(ga), a.encode(with_(ga, event_time=t))

        def huge_string(rnd, ga, gb):
            n = int(10 ** rnd.uniform(3.1, 5))  # 1.3 KB .. 100 KB
            field = rnd.choice(["event_id", "user_id", "search_id", "business_id"])
            rec = with_(ga, **{field: "x" * n})
            return k(rec), a.encode(rec)

        def bad_rating(rnd, ga, gb):
            if rnd.random() < 0.5:
                return k(ga), a.encode(with_(ga, kind="PAGE_VIEW", rating=rnd.randrange(1, 6)))
            return k(ga), a.encode(with_(ga, kind="REVIEW", rating=rnd.choice([0, 6, 9, -1, 1 << 30])))

        def bad_business(rnd, ga, gb):
            bad = rnd.choice(
                [
                    dict(price_range=7),
                    dict(latitude=500.0),
                    dict(longitude=float("nan")),
                    dict(name="n" * 5000),
                    dict(event_time=-5),
                    dict(categories=["c"] * 100),
                ]
            )
            return k(gb), b.encode(with_(gb, **bad))

        def business_bytes(rnd, ga, gb):
            return k(gb), rnd.randbytes(rnd.randrange(0, 200))

        act, biz = "activity", "business"
        return {
            "random_bytes": (act, UNDECODABLE, random_bytes, 1),
            "truncated_avro": (act, UNDECODABLE, truncated, 1),
            "trailing_garbage": (act, UNDECODABLE, trailing_garbage, 0.3),
            "wrong_schema_id": (act, UNDECODABLE, wrong_schema_id, 1),
            "other_record_type": (act, UNDECODABLE, other_record_type, 0.3),
            "wrong_types": (act, UNDECODABLE, wrong_types, 1),
            "unknown_enum": (act, UNDECODABLE, unknown_enum, 1),
            "missing_business_field": (act, UNDECODABLE, missing_business_field, 0.5),
            "empty_business": (act, INVALID, empty_business, 0.5),
            "extreme_time": (act, INVALID, extreme_time, 1),
            "huge_string": (act, INVALID, huge_string, 0.3),
            "bad_rating": (act, INVALID, bad_rating, 1),
            "bad_business_values": (biz, INVALID, bad_business, 0.6),
            "business_random_bytes": (biz, UNDECODABLE, business_bytes, 0.5),
        }


def test_ten_thousand_bad_messages_all_dead_lettered(cfg, tally):
    seed = int(os.environ.get("RELIABILITY_SEED", random.randrange(1 << 30)))
    print(f"hostile input: seed {seed}")
    rnd = random.Random(seed)
    factory = BadFactory(cfg)
    cats = factory.categories()
    names = sorted(cats)
    weights = [cats[n][3] for n in names]
    good = list(generate_records(WorldConfig(businesses=30, days=2, seed=71, cities=2, categories=2)))
    good_act = [r for kind, r in good if kind == "activity"]
    good_biz = [r for kind, r in good if kind == "business"]
    topics = {"activity": cfg.activity_topic, "business": cfg.business_topic}

    producer = KafkaProducer(**producer_kwargs(cfg, max_request_size=4 << 20))
    pending = []  # (future, category)
    bad_per_good = N_BAD / len(good)
    owed = 0.0
    t0 = time.perf_counter()
    for kind, rec in good:
        codec = factory.act if kind == "activity" else factory.biz
        producer.send(
            topics[kind], key=rec["business_id"].encode(), value=codec.encode(rec), timestamp_ms=rec["event_time"]
        )
        owed += bad_per_good
        while owed >= 1:
            owed -= 1
            name = rnd.choices(names, weights)[0]
            where, _, make, _ = cats[name]
            key, value = make(rnd, rnd.choice(good_act), rnd.choice(good_biz))
            pending.append((producer.send(topics[where], key=key, value=value), name))
    producer.flush()
    producer.close()
    injected, by_cat = {}, Counter()
    for fut, name in pending:
        md = fut.get(timeout=30)
        injected[(md.topic, md.partition, md.offset)] = cats[name][1]
        by_cat[name] += 1
    publish_s = time.perf_counter() - t0
    assert len(injected) >= 10_000

    expected = Expected(cfg, cfg.registry_dir)
    assert expected.log.undecodable + expected.log.invalid == len(injected)  # the log reader skips exactly these
    run = ThreadedWorker(Worker(cfg, exit_when_idle_s=3)).start()
    stats = run.join(180)  # raises if the worker died
    figures = check_invariant(cfg, expected, injected)
    tally(
        "hostile_input",
        seed=seed,
        good=len(good),
        bad=len(injected),
        by_category=dict(sorted(by_cat.items())),
        dead_letters_by_reason=dict(stats.dead_letters),
        worker_crashes=0,
        publish_s=round(publish_s, 1),
        **figures,
    )
    assert sum(stats.dead_letters.values()) == len(injected)
    assert stats.predictions == len(expected.predictions)
    assert set(by_cat) == set(names), "every category was generated"
