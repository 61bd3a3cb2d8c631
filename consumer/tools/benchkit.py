"""The loops ``consumer.tools.bench`` measures, each in a child process, and the metrics' cost.

**Measured loops**, each in a child process of its own (``python -m consumer.tools.benchkit
SPEC``, see :class:`Child`) so that the producing/reading parent does not share their GIL:

- ``worker``: ``Worker`` over the given topics until idle, timed through its public hooks only:
  ``on_batch`` (first to last batch with records, CPU from the first one), ``ready`` (partitions
  assigned, restored and fetching: the parent starts paced input then) and the stage timers
  (``WorkerMetrics.stage_seconds_total``); its RSS once restored and at peak;
- ``passthrough``: the ceiling the Kafka client allows. The worker's transport and settings,
  records copied to another topic unchanged (same partition), flushed and committed per poll
  batch like the worker's checkpoint;
- ``restore``: a changelog read back with each transport, in a process whose collector is set up
  like a worker's (``consumer.runtime.startup.tune_gc``), then every restored state decoded.

The load generator and the latency reader are in ``consumer.tools.benchload``.

``python -m consumer.tools.bench --metrics-cost`` runs :func:`metrics_cost`: the per-batch cost of
the worker's metric updates, without a broker.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from functools import partial
from pathlib import Path
from typing import Any

from consumer.config import Config

IDLE_EXIT_S = 2.0


# ----------------------------------------------------------------------------- child processes
class Child:
    """A measured loop in its own process (same interpreter, ``python -m consumer.tools.benchkit``)."""

    def __init__(self, kind: str, cfg: Config, work: Path, output_topic: str = "", extra: Any = None):
        self.dir = Path(tempfile.mkdtemp(prefix=f"{kind}-", dir=work))
        self.out = self.dir / "out.json"
        self.ready = self.dir / "ready"
        spec = {
            "kind": kind,
            "cfg": dataclasses.asdict(cfg),
            "out": str(self.out),
            "ready": str(self.ready),
            "output_topic": output_topic,
            "extra": extra,
        }
        (self.dir / "spec.json").write_text(json.dumps(spec))
        self.proc = subprocess.Popen([sys.executable, "-m", "consumer.tools.benchkit", str(self.dir / "spec.json")])

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.ready.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"bench child exited with {self.proc.returncode} before it was ready")
            if time.monotonic() > deadline:
                self.proc.kill()
                raise RuntimeError(f"bench child not ready within {timeout_s:.0f}s")
            time.sleep(0.02)

    def result(self, timeout_s: float = 600.0) -> dict[str, Any]:
        try:
            rc = self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        if rc != 0 or not self.out.exists():
            raise RuntimeError(f"bench child {self.dir.name} failed with exit code {rc}")
        return json.loads(self.out.read_text())


def child_main(spec_path: str) -> int:
    """Run one measured loop (``passthrough``, ``worker`` or ``restore``) and write its figures as JSON."""
    from consumer import logsetup

    logsetup.setup("WARNING")
    logging.getLogger("kafka").setLevel(logging.ERROR)
    spec = json.loads(Path(spec_path).read_text())
    cfg = Config(**spec["cfg"])
    kind = spec["kind"]
    ready = Path(spec["ready"])
    if kind == "worker" and os.environ.get("STREAMRANK_BENCH_PROFILE"):
        import cProfile

        # Profiling aid (figures from a profiled run are not the bench's): cProfile stats to this path.
        prof = cProfile.Profile()
        result = prof.runcall(run_worker, cfg, ready)
        prof.dump_stats(f"{os.environ['STREAMRANK_BENCH_PROFILE']}.{ready.parent.name}")
    elif kind == "worker":
        result = run_worker(cfg, ready, warmup=(spec["extra"] or {}).get("warmup", 0))
    elif kind == "restore":
        result = run_restore(cfg, spec["output_topic"], spec["extra"])
    else:
        result = run_passthrough(cfg, spec["output_topic"], ready)
    Path(spec["out"]).write_text(json.dumps(result))
    return 0


def run_worker(cfg: Config, ready: Path, warmup: int = 0) -> dict[str, Any]:
    """The worker until idle; the throughput window is its first batch with records to the last one.

    With ``warmup``, also ``after_warmup``: the window from the end of the batch that made the
    ``warmup``-th prediction to the last batch (predictions, seconds, CPU), and ``warmup``: the
    window before it."""
    from consumer.runtime.worker import BatchTiming, Worker

    first: list[BatchTiming] = []
    last = [0.0, 0.0]  # perf_counter, process_time at the end of the last batch with records
    mark: list[tuple[float, float, int]] = []  # the same and the predictions, at the end of the warm-up
    at_ready: list[float | None] = []  # RSS once partitions are restored: the state held before the input

    def on_batch(b: BatchTiming) -> None:
        if not at_ready and (b.progressed or worker.ready.is_set()):
            at_ready.append(_rss_kb())  # restored, at most one batch folded
        if b.progressed:
            if not first:
                first.append(b)
            last[:] = [b.finished, time.process_time()]
            if warmup and not mark and worker.stats.predictions >= warmup:
                mark.append((last[0], last[1], worker.stats.predictions))
        elif not ready.exists() and worker.ready.is_set():
            ready.write_text("ready")

    worker = Worker(cfg, exit_when_idle_s=IDLE_EXIT_S, worker_id="bench", on_batch=on_batch)
    stats = worker.run()
    cpu = time.process_time() - first[0].cpu_started if first else 0.0
    consumed = sum(stats.consumed.values())
    return {
        "consumed": consumed,
        "predictions": stats.predictions,
        "batches": stats.batches,
        "seconds": (last[0] - first[0].started) if first else 0.0,
        "cpu_seconds": cpu,
        "stage_seconds": worker.metrics.stage_seconds_total(),
        "dead_letters": sum(stats.dead_letters.values()),
        "rss_kb_at_ready": at_ready[0] if at_ready else None,
        "max_rss_kb": _peak_rss_kb(),
        **_after_warmup(mark, last, first, stats.predictions),
    }


def _after_warmup(
    mark: list[tuple[float, float, int]], last: list[float], first: list[Any], predictions: int
) -> dict[str, Any]:
    if not mark or not first:
        return {}
    t, cpu, n = mark[0]
    return {
        "warmup": {"predictions": n, "seconds": t - first[0].started},
        "after_warmup": {"predictions": predictions - n, "seconds": last[0] - t, "cpu_seconds": last[1] - cpu},
    }


def _peak_rss_kb() -> float | None:
    """This process's peak resident set (``VmHWM``). Not ``getrusage``'s ``ru_maxrss``: Linux carries
    that over from the parent across fork and exec, so a child would report the bench's own peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return float(line.split()[1])
    except OSError:
        pass
    return None


def _rss_kb() -> float | None:
    """The process's resident set now (Linux ``/proc``; None elsewhere)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / 1024


def run_restore(cfg: Config, topic: str, extra: dict[str, Any]) -> dict[str, Any]:
    """Restore ``topic`` with each transport, then decode every restored state, in a process set
    up like a worker's (its garbage-collector settings): what a worker pays on assignment, and
    later on each business's next event."""
    from consumer.io.changelog import restore_partitions
    from consumer.io.transport import reader
    from consumer.runtime.startup import tune_gc

    tune_gc()
    out: dict[str, Any] = {"restore": {}}
    restored: dict[int, Any] = {}
    for tr in extra["transports"]:
        restored, rs = restore_partitions(
            partial(reader, cfg.with_overrides(transport=tr), "bench-restore"), topic, list(range(extra["partitions"]))
        )
        out["restore"][tr] = {"entities": rs.entities, "seconds": rs.seconds, "entities_per_s": rs.rate}
    t = time.perf_counter()
    n = sum(len(ps.decode_all()) for ps in restored.values())
    out["decode_entities_per_s"] = n / (time.perf_counter() - t)
    return out


def run_passthrough(cfg: Config, output_topic: str, ready: Path) -> dict[str, Any]:
    """:func:`passthrough`, telling the parent once its partitions are assigned and fetching (the
    paced input of the half-load runs starts only then, so a client's start-up, ~0.5-1 s from
    assignment to the first fetch for librdkafka on the embedded broker, is not counted as latency)."""
    from consumer.runtime.partitions import all_fetched

    def idle(consumer: Any) -> None:
        if not ready.exists() and all_fetched(consumer):
            ready.write_text("ready")

    return passthrough(cfg, cfg.group_id, output_topic, idle_exit_s=IDLE_EXIT_S, on_idle=idle)


def passthrough(
    cfg: Config, group_id: str, output_topic: str, *, idle_exit_s: float, on_idle: Any = None
) -> dict[str, Any]:
    """The ceiling the bench compares the worker with: the worker's transport and settings,
    records copied to ``output_topic`` unchanged (same partition), flushed and committed per poll
    batch like the worker's checkpoint. Stops ``idle_exit_s`` after the input runs dry;
    ``on_idle(consumer)`` is called at each empty poll once partitions are assigned."""
    from kafka import OffsetAndMetadata

    from consumer.io.transport import input_consumer, output_producer, subscribe

    consumer = input_consumer(cfg, group_id)
    producer = output_producer(cfg)
    subscribe(consumer, list(cfg.input_topics), _quiet_listener())
    consumed = 0
    first = last = None
    cpu0 = 0.0
    idle_since = time.monotonic()
    try:
        while True:
            t, c = time.perf_counter(), time.process_time()
            batch = consumer.poll(timeout_ms=cfg.poll_timeout_ms, max_records=cfg.batch_size)
            if not batch:
                if consumer.assignment():
                    if on_idle is not None:
                        on_idle(consumer)
                    if time.monotonic() - idle_since >= idle_exit_s:
                        break
                else:
                    idle_since = time.monotonic()
                continue
            if first is None:
                first, cpu0 = t, c
            send = producer.send
            offsets = {}
            for tp, recs in batch.items():
                p = tp.partition
                for r in recs:
                    send(output_topic, r.key, r.value, p)
                offsets[tp] = OffsetAndMetadata(recs[-1].offset + 1, "", -1)
                consumed += len(recs)
            producer.flush(120.0)
            consumer.commit(offsets)
            last = time.perf_counter()
            idle_since = time.monotonic()
    finally:
        consumer.close()
        producer.close()
    if first is None or last is None:
        return {"consumed": consumed, "seconds": 0.0, "cpu_seconds": 0.0}
    return {"consumed": consumed, "seconds": last - first, "cpu_seconds": time.process_time() - cpu0}


def _quiet_listener() -> Any:
    """A rebalance listener that does nothing (the passthrough keeps no state per partition)."""
    from kafka.consumer.subscription_state import ConsumerRebalanceListener

    class Quiet(ConsumerRebalanceListener):
        def on_partitions_assigned(self, assigned: Any) -> None:
            pass

        def on_partitions_revoked(self, revoked: Any) -> None:
            pass

    return Quiet()


# ----------------------------------------------------------------------------- metrics cost
def metrics_cost(batches: int = 2000, size: int = 500) -> str:
    """Cost of the worker's metric updates per batch, against a batch of ``size`` predictions."""
    from types import SimpleNamespace

    import numpy as np
    from prometheus_client.exposition import generate_latest

    from consumer.pipeline.decode import DeadLetter
    from consumer.runtime.metrics import WorkerMetrics

    rng = np.random.default_rng(1)
    now_ms = int(time.time() * 1000)
    preds = [
        {"arm": "default", "model_version": "v1", "score": float(s), "event_time": now_ms - int(d)}
        for s, d in zip(rng.normal(0, 1.5, size), rng.exponential(2000, size), strict=True)
    ]
    dls = [DeadLetter("t", 0, i, None, None, -1, "undecodable", "") for i in range(3)]
    out = SimpleNamespace(
        predictions=preds,
        dead_letters=dls,
        outcomes=Counter(scored=size, dead_letter=3, duplicate=20),
        score_seconds=0.001,
    )
    m = WorkerMetrics("bench")
    t0 = time.perf_counter()
    for _ in range(batches):
        m.heartbeat()
        m.count_consumed("activity", size)
        m.observe_fetch(0.01, 0.02)
        m.observe_batch(out, "v1", state_s=0.01, produce_s=0.02, commit_s=0.003)
        m.observe_commit({})
    per_batch = (time.perf_counter() - t0) / batches
    t0 = time.perf_counter()
    for _ in range(20):
        generate_latest(m.registry)
    exposition_ms = (time.perf_counter() - t0) / 20 * 1e3
    return (
        f"metrics per batch of {size} predictions: {per_batch * 1e6:,.0f} us ({per_batch / size * 1e9:,.0f} ns per prediction)\n"
        f"one /metrics exposition: {exposition_ms:.2f} ms"
    )


if __name__ == "__main__":
    raise SystemExit(child_main(sys.argv[1]))
