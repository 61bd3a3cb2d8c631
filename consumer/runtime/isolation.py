"""Processing with the error policy's safety net: a batch that raises is re-run record by record.

A batch normally goes through ``consumer.pipeline.process.process`` in one piece. If our own code
raises on it (a bug, or a record it cannot handle), :class:`~consumer.errors.UnprocessableBatch`
leaves the batch: the worker rewinds to the last checkpoint and re-reads. Up to the last offset
of the failed batch, per input partition, records are then processed one at a time
(``process_isolated``), so the record that raises again goes to the dead-letter topic alone.
Unprocessable records in a row are counted across batches: past the limit ``process_isolated``
raises ``ProcessingHalted`` (a bug hitting every record stops the worker instead of
dead-lettering its input).
"""

from __future__ import annotations

from typing import Any

from consumer.errors import StaleState, UnprocessableBatch
from consumer.pipeline.process import BatchOutput, RowBuffer, process, process_isolated
from consumer.pipeline.store import PartitionState
from features.spec import FeatureSpec


class Isolation:
    def __init__(self, spec: FeatureSpec):
        self._spec = spec
        self._rows = RowBuffer(len(spec.names))
        # (topic, partition) -> last offset of a batch that raised: up to there, record by record.
        self._until: dict[tuple[str, int], int] = {}
        self._failed_in_a_row = 0  # unprocessable records in a row, across isolated batches

    def process(self, released: list[Any], store: dict[int, PartitionState], scorer: Any) -> BatchOutput:
        """``released`` through the broker-free core; raises ``UnprocessableBatch`` if it fails."""
        if self._until:
            return self._isolated(released, store, scorer)
        try:
            return process(released, store, scorer, spec=self._spec, rows=self._rows)
        except StaleState:
            raise
        except Exception as exc:  # noqa: BLE001 - a record our code cannot handle, or a bug
            bounds: dict[tuple[str, int], int] = {}
            for item in released:
                key = (item.topic, item.partition)
                bounds[key] = max(bounds.get(key, -1), item.offset)
            self._until = bounds
            raise UnprocessableBatch(f"{type(exc).__name__}: {exc}") from exc

    def _isolated(self, released: list[Any], store: dict[int, PartitionState], scorer: Any) -> BatchOutput:
        out = process_isolated(
            released, store, scorer, spec=self._spec, rows=self._rows, failed_before=self._failed_in_a_row
        )
        self._failed_in_a_row = out.failed_in_a_row
        for item in released:
            key = (item.topic, item.partition)
            if item.offset >= self._until.get(key, -1):
                self._until.pop(key, None)
        return out

    def forget(self, partitions: list[int]) -> None:
        """Revoked partitions: their next owner processes them normally."""
        self._until = {k: v for k, v in self._until.items() if k[1] not in partitions}
