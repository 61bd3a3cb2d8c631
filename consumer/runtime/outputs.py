"""A batch's records out: predictions (served, hold-out, shadow) and dead letters, through the sink.

Sent at once, acknowledged at the next checkpoint (``checkpoint``). An output topic with the
inputs' partition count gets each record in its source record's partition (``startup``): the
partition the key's hash would pick, without hashing every key again.
"""

from __future__ import annotations

from consumer.config import Config
from consumer.pipeline.codec import AvroCodec
from consumer.pipeline.predictions import encoded
from consumer.pipeline.process import BatchOutput
from consumer.runtime.sink import Sink


class Outputs:
    def __init__(self, cfg: Config, sink: Sink, codec: AvroCodec, copartitioned: set[str]):
        self._cfg = cfg
        self._sink = sink
        self._codec = codec
        self._same = copartitioned

    def send(self, out: BatchOutput) -> None:
        """Send a batch's predictions and dead letters; they are acknowledged at the next checkpoint."""
        cfg, send_many, same = self._cfg, self._sink.send_many, self._same
        for topic, preds in (
            (cfg.predictions_topic, out.predictions),
            (cfg.holdout_topic, out.holdout),
            (cfg.shadow_topic, out.shadow),
        ):
            if not preds:
                continue
            keys, values, partitions = encoded(preds, self._codec)
            send_many(topic, keys, values, partitions if topic in same else None)
        for dl in out.dead_letters:
            self._sink.dead_letter(dl, dl.partition if cfg.dead_letter_topic in same else None)
