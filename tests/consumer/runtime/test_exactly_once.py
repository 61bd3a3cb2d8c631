"""Exactly once on a real broker: every checkpoint one transaction (outputs, changelog, offsets).

A run whose checkpoints fail now and then, after their predictions were acknowledged (each failure
aborts a transaction), must leave a read_committed reader with every expected prediction once and
the fault-free state; the same run at least once shows the duplicates the guarantee removes. A zombie (a worker stalled past its session while the group
moved its partitions) must commit nothing after it wakes. On a broker that cannot hide aborted
records (the embedded Tansu) exactly once refuses to start."""

from __future__ import annotations

import threading
import time

import pytest

from consumer.errors import ConfigError, DeliveryError
from consumer.io import transport
from consumer.runtime.checkpoint import Checkpoint
from consumer.runtime.startup import prepare_topics
from consumer.runtime.worker import Worker
from tests.kit.runs import Expected, ThreadedWorker, check_invariant
from tests.kit.topics import publish_world, read_predictions

pytestmark = pytest.mark.broker


@pytest.fixture
def cfg(kafka_config, registry_copy, broker):
    if not broker.is_real_kafka:
        pytest.skip("exactly once needs a broker that hides aborted records; the Tansu refusal is tested below")
    return kafka_config.with_overrides(
        registry_dir=str(registry_copy),
        batch_size=50,
        checkpoint_interval_ms=0,  # a checkpoint (a transaction) per batch
        guarantee="exactly_once",
        transactional_id=kafka_config.group_id,
    )


class FailingChangelog:
    """Every ``every``-th checkpoint fails after its outputs were acknowledged and before its
    changelog entries are sent: at least once, that window is where predictions are re-emitted."""

    def __init__(self, monkeypatch, every: int):
        self.calls = 0
        self.failed = 0
        real = Checkpoint.write_state

        def write_state(checkpoint):
            self.calls += 1
            if self.calls % every == 0 and checkpoint.uncommitted:
                self.failed += 1
                checkpoint._sink.flush()
                raise DeliveryError("test: the changelog is unavailable")
            real(checkpoint)

        monkeypatch.setattr(Checkpoint, "write_state", write_state)


@pytest.mark.parametrize(
    ("guarantee", "transport_name"),
    [("exactly_once", "kafka-python"), ("exactly_once", "confluent"), ("at_least_once", "kafka-python")],
)
def test_failed_checkpoints_re_emit_nothing_exactly_once(cfg, monkeypatch, guarantee, transport_name):
    """Exactly once: the failed checkpoints' transactions are aborted and a read_committed reader
    sees every prediction once. At least once (the control, showing the check can fail): the
    same failures re-emit predictions."""
    cfg = cfg.with_overrides(guarantee=guarantee, transport=transport_name)
    publish_world(cfg, businesses=40, days=3, seed=11)
    expected = Expected(cfg, cfg.registry_dir)
    failing = FailingChangelog(monkeypatch, every=4)
    ThreadedWorker(Worker(cfg, exit_when_idle_s=3.0, worker_id=guarantee)).start().join(180)
    assert failing.failed >= 3, f"only {failing.failed} failed checkpoints of {failing.calls}"
    if guarantee == "at_least_once":
        with pytest.raises(AssertionError, match="more than once"):
            check_invariant(cfg, expected, exactly_once=True)
        return
    assert check_invariant(cfg, expected, exactly_once=True)["re_emitted"] == 0


# One rerun: in one clean-clone CI run (of three runs of it) worker A, after its refused commit and
# rewind, never returned from poll: kafka-python 3.0.12's Fetcher waits on its IO thread without a
# timeout (net.selector.run -> Event.wait()), the hang the kept-partitions rebalance test met too.
# Since stop 26 the hang (met in both attempts of two clean-clone CI runs) is tolerated where it
# happens, after the refused commit: ThreadedWorker.join(tolerate_client_hang=True) leaves A
# stuck with a warning, and the checks below (the refusal, the invariant, the output count) run.
# The rerun stays for a hang elsewhere. A failure that repeats three times still fails the run.
@pytest.mark.flaky(reruns=2)
def test_a_zombie_commits_nothing_after_its_partitions_moved(cfg, monkeypatch):
    """Worker A stalls (a long GC pause, a stopped VM) inside a batch, between sending its outputs
    and committing them, for longer than the session timeout; B takes its partitions and finishes
    the input. When A wakes its commit is refused (KIP-447: the offsets carry A's stale generation)
    and its transaction aborted: a read_committed reader sees every prediction exactly once."""
    publish_world(cfg, businesses=40, days=3, seed=12)
    expected = Expected(cfg, cfg.registry_dir)
    stall, resumed = threading.Event(), threading.Event()
    refused: list[BaseException] = []
    real = transport.KafkaPythonTransactions.commit
    owner: dict[str, object] = {}

    def commit(output, offsets, consumer):
        if output is owner.get("a") and offsets and not stall.is_set():
            stall.set()
            resumed.wait(60)
        try:
            real(output, offsets, consumer)
        except Exception as exc:
            if output is owner.get("a"):
                refused.append(exc)
            raise

    # A stalled consumer leaves the group after max.poll.interval (kafka-python's heartbeat thread
    # keeps the session alive meanwhile); the client default of 5 minutes is too long for a test.
    from consumer.io import clients

    monkeypatch.setitem(clients.GROUP_TIMING, "max_poll_interval_ms", 8000)
    a_cfg = cfg.with_overrides(transactional_id=f"{cfg.group_id}-a")
    b_cfg = cfg.with_overrides(transactional_id=f"{cfg.group_id}-b")
    mp = pytest.MonkeyPatch()
    mp.setattr(transport.KafkaPythonTransactions, "commit", commit)
    real_init = transport.KafkaPythonTransactions.__init__

    def init(output, c, txn_id):
        real_init(output, c, txn_id)
        owner.setdefault("a", output)

    mp.setattr(transport.KafkaPythonTransactions, "__init__", init)
    try:
        a = Worker(a_cfg, exit_when_idle_s=4.0, worker_id="zombie-a")
        ta = ThreadedWorker(a).start()
        assert stall.wait(60), "worker A never reached a commit"
        b = ThreadedWorker(Worker(b_cfg, exit_when_idle_s=4.0, worker_id="b")).start()
        time.sleep(12)  # past A's max.poll.interval: the group gave every partition to B
        resumed.set()  # A wakes and tries to commit what it sent under its old generation
        b.join(180)
        # After its refused commit and rewind, A may hang in kafka-python's poll (see the
        # decorator's note); what A committed is what this test checks, not that A exits.
        ta.join(120, tolerate_client_hang=True)
    finally:
        resumed.set()
        mp.undo()
    assert refused, "the zombie's commit went through"
    check_invariant(cfg, expected, exactly_once=True)
    assert len(read_predictions(cfg)) == len(expected.predictions)


@pytest.mark.tansu_smoke  # the refusal is what this test checks on Tansu
def test_exactly_once_is_refused_where_aborted_records_would_show(kafka_config, broker):
    cfg = kafka_config.with_overrides(guarantee="exactly_once")
    if not broker.is_real_kafka:
        with pytest.raises(ConfigError, match="exactly_once"):
            prepare_topics(cfg, None)
    else:
        assert prepare_topics(cfg, None)  # Apache Kafka: accepted


def test_transactional_id_is_stable_and_per_worker():
    import socket

    from consumer.config import Config

    cfg = Config(group_id="g")
    assert transport.transactional_id(cfg) == f"g-{socket.gethostname()}"
    assert transport.transactional_id(cfg.with_overrides(transactional_id="w-3")) == "w-3"
