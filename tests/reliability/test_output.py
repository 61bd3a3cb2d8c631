"""Slow or failing output: the producer cannot deliver for a while. No commit may run ahead of
delivery, and afterwards the invariant holds.

The same scenario runs against a worker with the commit deliberately moved before the produce
acknowledgement: both the commit-time check and ``check_invariant`` must catch it, which shows the
suite can fail."""

import threading
import time

import pytest
from kafka import KafkaProducer
from kafka.errors import KafkaTimeoutError
from kafka.future import Future

import consumer.runtime.worker as worker_mod
from consumer.io.clients import producer_kwargs
from consumer.pipeline.codec import AvroCodec, FileSchemaRegistry
from consumer.runtime.checkpoint import Checkpoint
from consumer.runtime.sink import Sink
from consumer.runtime.worker import Worker
from tests.kit.runs import Expected, ThreadedWorker, check_invariant
from tests.kit.topics import publish_world

pytestmark = [pytest.mark.reliability, pytest.mark.broker]

OUTAGE_S = 3.0
SLOW_FLUSH_S = 0.3


class FlakyProducer:
    """The worker's real producer, except that while ``failing`` every send fails (nothing reaches
    the broker) and flushes are slow. Acknowledged predictions are recorded by source coordinates."""

    def __init__(self, cfg):
        self.real = KafkaProducer(**producer_kwargs(cfg))
        self.cfg = cfg
        self.codec = AvroCodec(FileSchemaRegistry(), "Prediction")
        self.failing = False
        self.failed_sends = 0
        self.acked: set[tuple[str, int, int]] = set()
        self._lock = threading.Lock()

    def send(self, topic, key=None, value=None, partition=None, headers=None, **kw):
        if self.failing:
            self.failed_sends += 1
            fut = Future()
            fut.failure(KafkaTimeoutError("test: the output is unavailable"))
            return fut
        fut = self.real.send(topic, key=key, value=value, partition=partition, headers=headers, **kw)
        if topic == self.cfg.predictions_topic:
            p = self.codec.decode(value)
            coord = (p["source_topic"], p["source_partition"], p["source_offset"])

            def acked(_md, coord=coord):
                with self._lock:
                    self.acked.add(coord)

            fut.add_callback(acked)
        return fut

    def flush(self, timeout=None):
        if self.failing:
            time.sleep(SLOW_FLUSH_S)
        return self.real.flush(timeout=timeout)

    def close(self, timeout=None):
        self.real.close(timeout=timeout)


def _checkpoints(scored, producer, ahead):
    by_tp: dict[tuple[str, int], list[int]] = {}
    for t, part, o in scored:
        by_tp.setdefault((t, part), []).append(o)

    class Checked(Checkpoint):
        """At every commit: each scored record below the committed offset has its prediction acknowledged."""

        def _commit(self):
            with producer._lock:
                for (t, part), upto in self.uncommitted.items():
                    ahead.extend(
                        c
                        for c in ((t, part, o) for o in by_tp.get((t, part), ()) if o < upto)
                        if c not in producer.acked
                    )
            super()._commit()

    class CommitBeforeAck(Checked):
        def run(self):
            self._commit()  # the deliberate bug: offsets committed before the outputs are acknowledged
            t0 = time.perf_counter()
            self.write_state()
            return time.perf_counter() - t0, 0.0

    return {"correct": Checked, "commit_before_ack": CommitBeforeAck}


@pytest.mark.parametrize("variant", ["correct", "commit_before_ack"])
def test_output_failing_for_a_while_never_lets_commits_run_ahead(cfg, monkeypatch, tally, variant):
    publish_world(cfg, businesses=30, days=2, seed=81)
    expected = Expected(cfg, cfg.registry_dir)
    scored = {(p["source_topic"], p["source_partition"], p["source_offset"]) for p in expected.predictions.values()}
    producer = FlakyProducer(cfg)
    monkeypatch.setattr(worker_mod, "Sink", lambda c, wid: Sink(c, wid, producer=producer))
    ahead: list = []
    monkeypatch.setattr(worker_mod, "Checkpoint", _checkpoints(scored, producer, ahead)[variant])
    worker = Worker(cfg, exit_when_idle_s=2)
    run = ThreadedWorker(worker).start()
    deadline = time.monotonic() + 60
    while worker.stats.predictions < len(scored) // 4 and time.monotonic() < deadline and run.thread.is_alive():
        time.sleep(0.005)
    producer.failing = True
    time.sleep(OUTAGE_S)
    producer.failing = False
    stats = run.join(120)
    failures = sum(s.value for s in worker.metrics.batch_failures.collect()[0].samples if s.name.endswith("_total"))
    try:
        figures = check_invariant(cfg, expected)
        invariant_error = None
    except AssertionError as exc:
        figures, invariant_error = {}, str(exc).splitlines()[0]
    tally(
        f"failing_output[{variant}]",
        failed_sends=producer.failed_sends,
        batch_failures=failures,
        commits_ahead_of_ack=len(ahead),
        invariant_error=invariant_error,
        worker_predictions=stats.predictions,
        **figures,
    )
    assert producer.failed_sends > 0 and failures > 0, "the output never failed: the test proved nothing"
    if variant == "correct":
        assert not ahead, f"{len(ahead)} records committed before their prediction was acknowledged, e.g. {ahead[:3]}"
        assert invariant_error is None, invariant_error
    else:
        assert ahead, "the commit-time check missed a commit made before the acknowledgement"
        assert invariant_error is not None, "check_invariant missed the predictions lost by committing before the ack"
