"""The order step (``consumer.pipeline.order``): Kafka records → merge items, without a broker."""

from consumer.config import Config
from consumer.pipeline.codec import FileSchemaRegistry
from consumer.pipeline.decode import DeadLetter, Decoded, Decoder
from consumer.pipeline.order import RecordOrder, by_partition
from consumer.pipeline.process import Tombstone
from features.order import BUSINESS_RANK, HeadMerger, merge_finished
from sim.world import WorldConfig, generate_records
from tests.kit.records import KafkaRecord, event_codecs

CFG = Config()
REG = FileSchemaRegistry(None)
CODECS = event_codecs(CFG, REG)


def _log(businesses=12, days=1, seed=4):
    """A world as Kafka records of two partitions, with a tombstone, a wrong key, a null key and
    garbage in the middle of each stream."""
    offsets: dict = {}
    out = []

    def add(topic, p, key, value, ts):
        o = offsets.get((topic, p), 0)
        offsets[(topic, p)] = o + 1
        out.append(KafkaRecord(topic, p, o, key, value, ts))

    records = list(generate_records(WorldConfig(businesses=businesses, days=days, seed=seed)))
    for i, (kind, rec) in enumerate(records):
        topic, codec = CODECS[kind]
        p = int(rec["business_id"][1:]) % 2
        add(topic, p, rec["business_id"].encode(), codec.encode(rec), rec["event_time"])
        if i == len(records) // 2:
            add(CFG.business_topic, p, rec["business_id"].encode(), None, 0)  # tombstone
            add(topic, p, b"someone-else", codec.encode(rec), 0)  # key_mismatch
            add(topic, p, None, codec.encode(rec), 0)  # null key: key_mismatch too
            add(CFG.activity_topic, p, b"x", b"garbage", 0)  # undecodable
    return out


def test_a_valid_record_with_a_null_key_is_a_dead_letter_not_a_crash():
    topic, codec = CODECS["activity"]
    _, rec = next((k, r) for k, r in generate_records(WorldConfig(businesses=3, days=1, seed=1)) if k == "activity")
    got = Decoder(CFG, REG).decode(topic, 0, 7, None, codec.encode(rec))
    assert type(got) is DeadLetter and got.reason == "key_mismatch" and "key None" in got.detail


def test_tombstones_and_dead_letters_keep_the_time_of_the_record_before_them_across_polls():
    log = _log()
    order = RecordOrder(Decoder(CFG, REG), CFG.input_topics)
    pushed = []
    for r in log:  # one record per call: every record is at a poll boundary
        order.push(r.topic, r.partition, [r], lambda *e, p=r.partition: pushed.append((p,) + e))
    last: dict = {}
    kinds = {Decoded: 0, Tombstone: 0, DeadLetter: 0}
    for p, rank, t, _off, item in pushed:
        kinds[type(item)] += 1
        if type(item) is Decoded:
            assert t == item.event.event_time
            last[(p, rank)] = t
        else:
            assert t == last.get((p, rank), 0), item
    assert kinds[Tombstone] == 1 and kinds[DeadLetter] == 3
    assert sorted(i.reason for *_, i in pushed if type(i) is DeadLetter) == [
        "key_mismatch",
        "key_mismatch",
        "undecodable",
    ]
    # A stream forgotten (revoked, rewound) starts again from 0.
    order.forget([0, 1])
    tomb = next(r for r in log if r.value is None)
    got = []
    order.push(tomb.topic, tomb.partition, [tomb], lambda *e: got.append(e))
    assert got == [
        (BUSINESS_RANK, 0, tomb.offset, Tombstone(tomb.topic, tomb.partition, tomb.offset, tomb.key.decode()))
    ]


def test_a_finished_log_and_the_live_merge_fed_poll_by_poll_give_one_order():
    log = _log()
    parts = by_partition(log, Decoder(CFG, REG), CFG.input_topics)
    finished = {p: [(type(i).__name__, i.topic, i.offset) for i in merge_finished(items)] for p, items in parts.items()}
    order = RecordOrder(Decoder(CFG, REG), CFG.input_topics)
    mergers = {p: HeadMerger() for p in parts}
    streams = {(t, p): [r for r in log if (r.topic, r.partition) == (t, p)] for t in CFG.input_topics for p in parts}
    live = {p: [] for p in parts}
    for start in range(0, max(map(len, streams.values())), 37):  # polls of 37 records per stream
        for (t, p), recs in streams.items():
            order.push(t, p, recs[start : start + 37], mergers[p].push)
        for p, m in mergers.items():
            done = [start + 37 >= len(streams[(t, p)]) for t in CFG.input_topics]
            live[p] += [(type(i).__name__, i.topic, i.offset) for i in m.pop_ready(*done)]
    assert live == finished and sum(map(len, live.values())) == len(log)
