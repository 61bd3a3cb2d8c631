"""What a worker run did, in memory: the summary ``streamrank run --summary`` prints and tests read.

The Prometheus series (``metrics``) say the same for an operator; these are plain counters a caller
of ``Worker.run`` gets back, with the restores, rebuilds and models of the run as a list each.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from consumer.pipeline.process import BatchOutput

log = logging.getLogger("streamrank.worker")


@dataclass
class WorkerStats:
    consumed: Counter = field(default_factory=Counter)  # per topic
    outcomes: Counter = field(default_factory=Counter)
    dead_letters: Counter = field(default_factory=Counter)  # per reason
    predictions: int = 0
    batches: int = 0
    restores: list[dict[str, Any]] = field(default_factory=list)
    rebuilds: list[dict[str, Any]] = field(default_factory=list)
    models: list[dict[str, Any]] = field(default_factory=list)
    started: float = field(default_factory=time.time)
    last_progress: float = field(default_factory=time.monotonic)

    def summary(self) -> dict[str, Any]:
        return {
            "consumed": dict(self.consumed),
            "predictions": self.predictions,
            "dead_letters": dict(self.dead_letters),
            "outcomes": dict(self.outcomes),
            "batches": self.batches,
            "models": self.models,
            "restores": self.restores,
            "rebuilds": self.rebuilds,
        }

    def model_served(self, version: str) -> None:
        """A model starts serving; the first offset it scores is filled in by :meth:`account`."""
        self.models.append({"version": version, "first_scored": None})

    def account(self, out: BatchOutput, model_version: str) -> None:
        """One processed batch: counts, a log line per dead letter, the new model's first offset."""
        self.batches += 1
        self.predictions += len(out.predictions)
        self.outcomes.update(out.outcomes)
        for dl in out.dead_letters:
            self.dead_letters[dl.reason] += 1
            log.warning(
                "dead letter",
                extra={
                    "topic": dl.topic,
                    "partition": dl.partition,
                    "offset": dl.offset,
                    "reason": dl.reason,
                    "detail": dl.detail[:300],
                },
            )
        if out.predictions and self.models and self.models[-1]["first_scored"] is None:
            first = out.predictions[0]
            self.models[-1]["first_scored"] = (
                f"{first['source_topic']}[{first['source_partition']}]@{first['source_offset']}"
            )
            log.info(
                "first offset scored by model",
                extra={
                    "model_version": model_version,
                    "topic": first["source_topic"],
                    "partition": first["source_partition"],
                    "offset": first["source_offset"],
                },
            )
