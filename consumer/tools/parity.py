"""Online/offline parity: do the features the worker scored equal the trainer's features?

Every prediction carries ``feature_hash``, an 8-byte blake2b of its float32 feature row (see
``consumer.pipeline.predictions.feature_hash``). Why a hash and not the vector: the vector is 45 floats (180
bytes binary, more in Avro) on every prediction on the hot path, the hash 16 hex characters; a
mismatch is still detected exactly (any changed bit changes the hash, a collision is ~2^-64), and
when a mismatch needs explaining the vector is recomputed from the log, which is the source of
truth anyway.

The check reads the input log (``consumer.io.inputlog``), merges each partition in the worker's
order (``features.order.merge_finished``), folds it with the *trainer's* fold
(``models.dataset.scoring_moments``), and at the scoring moment of each sampled prediction
extracts the row and hashes it. A sampled prediction whose source record is no scoring moment in
the trainer's fold is ``missing`` (counted as a mismatch: the two paths disagree on *whether* to
score). Mismatch rate = (different hash + missing) / sampled.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from hashlib import blake2b
from typing import Any

import numpy as np

from consumer.config import Config
from consumer.io.inputlog import read_input_log
from consumer.pipeline.predictions import feature_hash
from features.extract import extract_into
from features.order import ACTIVITY_RANK, BUSINESS_RANK, merge_finished
from features.scoring import as_of
from features.spec import DEFAULT_SPEC, FeatureSpec
from models.dataset import Tombstone, scoring_moments

Coord = tuple[str, int, int]  # (source topic, partition, offset)


@dataclass
class ParityResult:
    sampled: int = 0
    matched: int = 0
    mismatched: int = 0
    missing: int = 0
    predictions_read: int = 0
    by_topic: dict[str, list[int]] = field(default_factory=dict)  # topic -> [sampled, bad]
    examples: list[dict[str, Any]] = field(default_factory=list)  # a few mismatches, for a person

    @property
    def mismatch_rate(self) -> float:
        return (self.mismatched + self.missing) / self.sampled if self.sampled else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {
            "sampled": self.sampled,
            "matched": self.matched,
            "mismatched": self.mismatched,
            "missing": self.missing,
            "mismatch_rate": self.mismatch_rate,
            "predictions_read": self.predictions_read,
            "by_topic": self.by_topic,
            "examples": self.examples,
        }


def sample(preds: list[dict[str, Any]], n: int | None) -> list[dict[str, Any]]:
    """A deterministic sample: the ``n`` predictions with the smallest hash of their id."""
    if n is None or n >= len(preds):
        return list(preds)
    key = lambda p: blake2b(p["prediction_id"].encode(), digest_size=8).digest()  # noqa: E731
    return sorted(preds, key=key)[:n]


def replay_hashes(cfg: Config, wanted: set[Coord], spec: FeatureSpec = DEFAULT_SPEC) -> dict[Coord, str]:
    """Feature hashes at the trainer's scoring moments of the ``wanted`` source records."""
    topics = {BUSINESS_RANK: cfg.business_topic, ACTIVITY_RANK: cfg.activity_topic}
    by_part: dict[int, list[tuple[int, int, int, Any]]] = defaultdict(list)
    # The reader has dropped what the worker dead-letters and gives each record the worker's merge time.
    for rec in read_input_log(cfg):
        item = rec.event if rec.event is not None else Tombstone(rec.key)
        by_part[rec.partition].append((rec.rank, rec.merge_time, rec.offset, (rec.rank, rec.offset, item)))
    row = np.empty(len(spec.names), dtype=np.float32)
    out: dict[Coord, str] = {}
    for p, items in by_part.items():
        ordered = list(merge_finished(items))
        coords = {id(ev): (topics[rank], p, off) for rank, off, ev in ordered}
        for ev, state in scoring_moments((ev for _, _, ev in ordered), spec):
            c = coords[id(ev)]
            if c in wanted:
                extract_into(state, as_of(state), row, spec)
                out[c] = feature_hash(row)
    return out


def check_parity(
    cfg: Config,
    preds: list[dict[str, Any]],
    n: int | None = 1000,
    spec: FeatureSpec = DEFAULT_SPEC,
    progress: Callable[[str], None] | None = None,
) -> ParityResult:
    res = ParityResult(predictions_read=len(preds))
    chosen = sample(preds, n)
    res.sampled = len(chosen)
    if progress:
        progress(f"replaying the input log for {len(chosen)} sampled predictions")
    wanted = {(p["source_topic"], p["source_partition"], p["source_offset"]) for p in chosen}
    replayed = replay_hashes(cfg, wanted, spec)
    for p in chosen:
        c = (p["source_topic"], p["source_partition"], p["source_offset"])
        got = replayed.get(c)
        tally = res.by_topic.setdefault(p.get("_topic", "?"), [0, 0])
        tally[0] += 1
        if got == p["feature_hash"]:
            res.matched += 1
            continue
        tally[1] += 1
        if got is None:
            res.missing += 1
        else:
            res.mismatched += 1
        if len(res.examples) < 5:
            res.examples.append(
                {
                    "prediction_id": p["prediction_id"],
                    "business_id": p["business_id"],
                    "source": f"{c[0]}[{c[1]}]@{c[2]}",
                    "live": p["feature_hash"],
                    "replayed": got,
                }
            )
    return res


def to_markdown(res: ParityResult) -> str:
    lines = [
        "# Feature parity (worker vs trainer's fold)",
        "",
        f"- predictions read: {res.predictions_read}, sampled: {res.sampled}",
        f"- matched: {res.matched}, different hash: {res.mismatched}, not a scoring moment in the replay: {res.missing}",
        f"- **mismatch rate: {res.mismatch_rate:.4%}**",
        "",
        "| topic | sampled | mismatched |",
        "|---|---:|---:|",
    ]
    lines += [f"| {t} | {s} | {b} |" for t, (s, b) in sorted(res.by_topic.items())]
    if res.examples:
        lines += ["", "First mismatches:", ""]
        lines += [
            f"- {e['source']} ({e['prediction_id']}): live {e['live']}, replayed {e['replayed']}" for e in res.examples
        ]
    return "\n".join(lines) + "\n"
