"""Expected runs and the runs themselves.

``Expected``: what a fault-free worker produces from the input topics as they are now, computed
with the broker-free core through the worker's own order step; ``check_invariant``: the accounting
a faulty run is checked against. ``start_worker`` runs a worker as a real process (``streamrank
run``), ``ThreadedWorker`` a ``Worker`` in a thread of the test's process."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import traceback
import warnings
from collections import Counter, defaultdict
from typing import Any

from consumer.config import Config
from consumer.io.inputlog import LogRange, read_input_log
from consumer.pipeline.process import process
from features.order import merge_finished
from features.scoring import SCORED
from models.registry import ModelRegistry
from tests.kit.topics import input_offsets, read_changelog_states, read_predictions, read_topic

# What an input record may become without a prediction or a dead letter (see consumer.pipeline.process).
NON_SCORING = frozenset({"business_update", "duplicate", "late", "not_scorable", "already_applied", "business_deleted"})


class Expected:
    """What a fault-free worker produces from the input topics as they are now: predictions by id,
    the partitions' store, outcome counts and final states. ``version`` pins the model (default:
    the promoted one), so a test can promote other models meanwhile."""

    def __init__(self, cfg: Config, registry_dir: str, version: str | None = None):
        model = ModelRegistry(registry_dir).load(version)
        self.model_version = model.version
        by_part: dict[int, list] = defaultdict(list)
        self.log = LogRange()
        for rec in read_input_log(cfg, self.log):  # through the worker's order step (consumer.pipeline.order)
            by_part[rec.partition].append(rec.merge_entry(cfg.input_topics))
        self.store: dict[int, Any] = {}
        self.predictions: dict[str, dict] = {}
        self.outcomes: Counter = Counter()
        for p in sorted(by_part):
            out = process(list(merge_finished(by_part[p])), self.store, model)
            for pred in out.predictions:
                self.predictions[pred["prediction_id"]] = pred
            self.outcomes.update(out.outcomes)
        self.states = {bid: e.state for part in self.store.values() for bid, e in part.entries.items()}


def expected_run(cfg: Config, registry_dir) -> tuple[dict[str, dict], dict[int, Any], dict[str, int]]:
    """What a fault-free worker must produce with the promoted model: (predictions by id, store,
    outcomes), from the log (``Expected`` unpacked)."""
    e = Expected(cfg, registry_dir)
    return e.predictions, e.store, dict(e.outcomes)


def check_invariant(
    cfg: Config,
    expected: Expected,
    injected_bad: dict[tuple[str, int, int], str] | set | None = None,
    exactly_once: bool = False,
) -> dict[str, Any]:
    """Every input offset ended as a prediction, a dead letter or a documented non-scoring event;
    none is missing; the final changelog state is the fault-free one. ``injected_bad``: the
    coordinates (topic, partition, offset) of the bad records the test wrote, optionally mapped to
    the dead-letter reason each must carry. ``exactly_once``: besides, a read_committed reader sees
    each prediction and each dead letter once. Raises AssertionError; returns the tallies."""
    injected = dict(injected_bad) if isinstance(injected_bad, dict) else {c: None for c in (injected_bad or ())}
    offsets = input_offsets(cfg)

    got = read_predictions(cfg)
    ids = Counter(p["prediction_id"] for p in got)
    missing = expected.predictions.keys() - ids.keys()
    unexpected = ids.keys() - expected.predictions.keys()
    assert not missing, f"{len(missing)} of {len(expected.predictions)} predictions missing: " + ", ".join(
        f"{p['source_topic']}[{p['source_partition']}]@{p['source_offset']} {p['business_id']} t={p['event_time']}"
        for p in sorted(
            (expected.predictions[m] for m in missing), key=lambda p: (p["source_partition"], p["source_offset"])
        )[:12]
    )
    assert not unexpected, f"{len(unexpected)} predictions no fault-free run makes"
    if exactly_once:
        twice = [k for k, n in ids.items() if n > 1]
        assert not twice, f"exactly once: {len(twice)} predictions seen more than once, e.g. {twice[:3]}"
    for p in got:  # a re-emitted prediction (at-least-once) is the same prediction
        e = expected.predictions[p["prediction_id"]]
        assert (p["score"], p["feature_hash"]) == (e["score"], e["feature_hash"]), p["prediction_id"]
    scored = {(p["source_topic"], p["source_partition"], p["source_offset"]) for p in expected.predictions.values()}

    dls = read_topic(cfg, cfg.dead_letter_topic)
    if exactly_once:
        seen = Counter(
            (
                dict(r.headers)["dlq.source.partition"],
                dict(r.headers)["dlq.source.offset"],
                dict(r.headers)["dlq.source.topic"],
            )
            for r in dls
        )
        assert all(n == 1 for n in seen.values()), "exactly once: a dead letter seen more than once"
    dead: dict[tuple[str, int, int], str] = {}
    for r in dls:
        h = dict(r.headers)
        coord = (h["dlq.source.topic"].decode(), int(h["dlq.source.partition"]), int(h["dlq.source.offset"]))
        reason = h["dlq.reason"].decode()
        assert reason and h.get("dlq.error"), f"dead letter {coord} without a reason"
        assert dead.setdefault(coord, reason) == reason, f"{coord} dead-lettered with two reasons"
    assert dead.keys() == injected.keys(), (
        f"dead letters: {len(dead.keys() - injected.keys())} not injected, {len(injected.keys() - dead.keys())} injected but missing"
    )
    wrong = {c: (dead[c], want) for c, want in injected.items() if want is not None and dead[c] != want}
    assert not wrong, f"{len(wrong)} dead letters with the wrong reason, e.g. {list(wrong.items())[:3]}"

    assert scored <= offsets and dead.keys() <= offsets and not (scored & dead.keys())
    rest = offsets - scored - dead.keys()
    non_scoring = {k: v for k, v in expected.outcomes.items() if k != SCORED}
    assert set(non_scoring) <= NON_SCORING, f"undocumented outcomes {set(non_scoring) - NON_SCORING}"
    assert expected.outcomes.get(SCORED, 0) == len(scored)
    assert len(rest) == sum(non_scoring.values()), (
        f"{len(rest)} offsets neither scored nor dead-lettered, {sum(non_scoring.values())} non-scoring events expected"
    )

    assert read_changelog_states(cfg) == expected.states, "final state differs from the fault-free run's"
    return {
        "offsets": len(offsets),
        "predictions": len(scored),
        "prediction_records": len(got),
        "re_emitted": len(got) - len(ids),
        "dead_letters": len(dead),
        "non_scoring": dict(non_scoring),
    }


def _in_client_fetch_wait(stack: str) -> bool:
    return "kafka/consumer/fetcher.py" in stack and "kafka/net/selector.py" in stack and "event.wait()" in stack


class ThreadedWorker:
    """A ``Worker`` in a thread of this process, so a test can reach into it (metrics, sink, model holder)."""

    def __init__(self, worker: Any):
        self.worker = worker
        self.stats = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="worker", daemon=True)

    def _run(self) -> None:
        try:
            self.stats = self.worker.run()
        except BaseException as exc:  # noqa: BLE001 - reported by join()
            self.error = exc

    def start(self) -> ThreadedWorker:
        self.thread.start()
        return self

    def join(self, timeout: float, *, tolerate_client_hang: bool = False) -> Any:
        """The worker's stats once it has stopped. ``tolerate_client_hang``: a worker stuck in
        kafka-python 3.0.12's unbounded fetch wait (``Fetcher.fetch_records`` ->
        ``net.selector.run`` -> ``Event.wait()``, no timeout) is left behind with a warning
        (returns None) instead of failing: for tests whose property does not need the worker to
        stop (the thread is a daemon). Stuck anywhere else still fails."""
        self.thread.join(timeout)
        if self.thread.is_alive():  # where it is stuck says more than that it is
            frame = sys._current_frames().get(self.thread.ident or -1)
            stack = "".join(traceback.format_stack(frame)) if frame is not None else "(no frame)"
            if tolerate_client_hang and _in_client_fetch_wait(stack):
                warnings.warn(
                    f"worker left stuck in kafka-python's fetch wait after {timeout}s:\n{stack}", stacklevel=2
                )
                return None
            raise AssertionError(f"worker still running after {timeout}s; its stack:\n{stack}")
        if self.error is not None:
            raise AssertionError(f"the worker died: {self.error!r}") from self.error
        return self.stats


def worker_env(cfg: Config) -> dict[str, str]:
    """The environment of a ``streamrank run`` process on ``cfg``'s topics, group and registry."""
    env = dict(os.environ)
    env.update(
        KAFKA_BOOTSTRAP_SERVERS=cfg.bootstrap,
        STREAMRANK_BUSINESS_TOPIC=cfg.business_topic,
        STREAMRANK_ACTIVITY_TOPIC=cfg.activity_topic,
        STREAMRANK_PREDICTIONS_TOPIC=cfg.predictions_topic,
        STREAMRANK_DEAD_LETTER_TOPIC=cfg.dead_letter_topic,
        STREAMRANK_CHANGELOG_TOPIC=cfg.changelog_topic,
        STREAMRANK_GROUP=cfg.group_id,
        STREAMRANK_REGISTRY=cfg.registry_dir,
        STREAMRANK_BATCH_SIZE=str(cfg.batch_size),
        STREAMRANK_MODEL_POLL_S="0.5",
        STREAMRANK_TRANSPORT=cfg.transport,
        STREAMRANK_CHECKPOINT_INTERVAL_MS=str(cfg.checkpoint_interval_ms),
        STREAMRANK_BASELINE=cfg.baseline,
        STREAMRANK_GUARANTEE=cfg.guarantee,
        STREAMRANK_TRANSACTIONAL_ID=cfg.transactional_id,
    )
    return env


def start_worker(cfg: Config, idle_s: float = 3.0, log_path=None) -> subprocess.Popen:
    """A worker process that exits after ``idle_s`` without input."""
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "consumer.cli",
            "run",
            "--exit-when-idle",
            str(idle_s),
            "--log-level",
            os.environ.get("STREAMRANK_TEST_WORKER_LOG_LEVEL", "INFO"),
        ],
        env=worker_env(cfg),
        stdout=out,
        stderr=out,
    )
