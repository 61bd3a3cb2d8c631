"""The worker's parts without a broker: the checkpoint's order, the inbox's release, the error
policy's isolation. The broker tests (``test_worker``, ``tests/reliability``) run them together."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from kafka import TopicPartition
from kafka.errors import KafkaError

from consumer.config import Config
from consumer.errors import CommitFailed, TransportError, UnprocessableBatch
from consumer.runtime.checkpoint import Checkpoint
from consumer.runtime.inbox import Inbox
from consumer.runtime.isolation import Isolation
from consumer.runtime.metrics import WorkerMetrics
from features.order import ACTIVITY_RANK, BUSINESS_RANK
from features.spec import DEFAULT_SPEC

CFG = Config(bootstrap="unused:9092")


class FakeSink:
    transactions = None  # at least once
    in_transaction = False

    def __init__(self, calls: list):
        self.calls = calls

    def send(self, topic, key, value, partition=None, headers=None):
        self.calls.append(("send", topic, key))

    def flush(self, timeout_s: float = 120.0):
        self.calls.append(("flush",))


class FakeConsumer:
    def __init__(self, calls: list, fail: bool = False, highwater: dict | None = None):
        self.calls, self.fail, self._hw = calls, fail, highwater or {}

    def commit(self, offsets):
        if self.fail:
            raise KafkaError("not the coordinator")
        self.calls.append(("commit", {(tp.topic, tp.partition): m.offset for tp, m in offsets.items()}))

    def committed(self, tp, timeout_ms=None):
        return None

    def highwater(self, tp):
        return self._hw.get(tp)

    def position(self, tp, timeout_ms=None):
        return 0


class DirtyPartition:
    dirty = True
    deleted: dict = {}

    def drain_changes(self):
        return [("b1", b"state")]


def test_a_checkpoint_acks_outputs_then_writes_state_then_commits():
    calls: list = []
    cp = Checkpoint(CFG, FakeConsumer(calls), FakeSink(calls), {0: DirtyPartition()}, WorkerMetrics("t"))
    cp.processed([SimpleNamespace(topic=CFG.activity_topic, partition=0, offset=41)])
    cp.run()
    assert calls == [
        ("flush",),
        ("send", CFG.changelog_topic, b"b1"),
        ("flush",),
        ("commit", {(CFG.activity_topic, 0): 42}),
    ]
    assert not cp.uncommitted and cp.committed == {TopicPartition(CFG.activity_topic, 0): 42}


def test_a_refused_commit_is_a_transport_error_and_keeps_nothing_as_committed():
    calls: list = []
    cp = Checkpoint(CFG, FakeConsumer(calls, fail=True), FakeSink(calls), {}, WorkerMetrics("t"))
    cp.processed([SimpleNamespace(topic=CFG.activity_topic, partition=0, offset=1)])
    with pytest.raises(CommitFailed) as err:
        cp.run()
    assert isinstance(err.value, TransportError)  # the loop rewinds and retries, as for any Kafka failure
    assert not cp.committed


class FakeTransactionalSink(FakeSink):
    """exactly_once: the sink commits (outputs, changelog and offsets in one transaction) or aborts."""

    def __init__(self, calls: list, fail: bool = False):
        super().__init__(calls)
        self.transactions = self
        self.fail = fail

    def commit(self, offsets, consumer):
        if self.fail:
            raise CommitFailed("test: the transaction is refused")
        self.calls.append(("commit_transaction", {(tp.topic, tp.partition): o for tp, o in offsets.items()}))

    def abort(self):
        self.calls.append(("abort",))


def test_exactly_once_a_checkpoint_is_one_transaction_and_the_consumer_commits_nothing():
    calls: list = []
    cp = Checkpoint(CFG, FakeConsumer(calls), FakeTransactionalSink(calls), {0: DirtyPartition()}, WorkerMetrics("t"))
    cp.processed([SimpleNamespace(topic=CFG.activity_topic, partition=0, offset=41)])
    cp.run()
    assert calls == [
        ("flush",),
        ("send", CFG.changelog_topic, b"b1"),
        ("flush",),
        ("commit_transaction", {(CFG.activity_topic, 0): 42}),
    ]
    assert cp.committed == {TopicPartition(CFG.activity_topic, 0): 42}


def test_exactly_once_a_failed_commit_aborts_at_the_rewind_and_forgets_what_was_committed():
    calls: list = []
    sink = FakeTransactionalSink(calls)
    cp = Checkpoint(CFG, FakeConsumer(calls), sink, {}, WorkerMetrics("t"))
    cp.processed([SimpleNamespace(topic=CFG.activity_topic, partition=0, offset=1)])
    cp.run()
    sink.fail = True
    cp.processed([SimpleNamespace(topic=CFG.activity_topic, partition=0, offset=2)])
    with pytest.raises(CommitFailed):
        cp.run()
    cp.discard()  # what the loop's rewind does
    assert calls[-1] == ("abort",)
    # After a failed commit only the broker knows what is committed: the rewind asks it.
    assert not cp.committed and not cp.uncommitted


class ListOrder:
    """The order step with records that carry their own time (no Avro)."""

    ranks = {CFG.business_topic: BUSINESS_RANK, CFG.activity_topic: ACTIVITY_RANK}

    def push(self, topic, partition, records, push, push_run=None):
        for r in records:
            push(self.ranks[topic], r.time, r.offset, (partition, r.offset))

    def forget(self, partitions):
        pass


def test_the_inbox_releases_round_robin_within_the_budget_and_rewinds_to_the_oldest_queued():
    topics = (CFG.business_topic, CFG.activity_topic)
    hw = {TopicPartition(t, p): n for t, n in zip(topics, (0, 3), strict=True) for p in (0, 1)}  # no business events
    inbox = Inbox(FakeConsumer([], highwater=hw), ListOrder(), topics)
    for p in (0, 1):
        inbox.push(TopicPartition(CFG.activity_topic, p), [SimpleNamespace(offset=o, time=o) for o in range(3)])
    first = inbox.release(4)
    assert first == [(0, 0), (0, 1), (0, 2), (1, 0)] and inbox.backlog
    # The oldest queued activity record; the business stream's fetch position (nothing queued).
    assert inbox.first_unprocessed(1) == [
        (TopicPartition(CFG.business_topic, 1), 0),
        (TopicPartition(CFG.activity_topic, 1), 1),
    ]
    assert inbox.release(4) == [(1, 1), (1, 2)] and not inbox.backlog and inbox.fully_merged()


def test_after_a_failed_batch_records_are_processed_one_by_one_up_to_its_last_offset(monkeypatch):
    import consumer.runtime.isolation as isolation_mod

    seen = []
    monkeypatch.setattr(isolation_mod, "process", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("bug")))
    monkeypatch.setattr(
        isolation_mod,
        "process_isolated",
        lambda items, *a, **k: seen.append([i.offset for i in items]) or SimpleNamespace(failed_in_a_row=0),
    )
    iso = Isolation(DEFAULT_SPEC)
    batch = [SimpleNamespace(topic="a", partition=0, offset=o) for o in (5, 6)]
    with pytest.raises(UnprocessableBatch, match="RuntimeError: bug"):
        iso.process(batch, {}, scorer=None)
    iso.process(batch[:1], {}, scorer=None)  # the re-run, isolated up to offset 6
    iso.process(batch[1:], {}, scorer=None)
    assert seen == [[5], [6]]
    with pytest.raises(UnprocessableBatch):  # past the failed batch: the normal path again
        iso.process([SimpleNamespace(topic="a", partition=0, offset=7)], {}, scorer=None)
