"""Measure the trainer on a simulated world: ``python -m models.bench [--businesses 1000 --days 60]``.

Prints the training-set build throughput (events/s, records already in memory, as the trainer
receives them from the log reader), the fit time, and the validation metrics. Development tool:
imports ``sim`` lazily; nothing in the trainer or the worker depends on it.
"""

from __future__ import annotations

import argparse
import time
import zlib
from typing import Any, NamedTuple


class _Record(NamedTuple):
    rank: int
    partition: int
    offset: int
    event: Any


def simulated_records(businesses: int, days: int, seed: int, partitions: int = 6) -> list[_Record]:
    from features.events import BusinessEvent
    from sim.world import WorldConfig, generate

    offsets: dict[tuple[int, int], int] = {}
    out = []
    for e in generate(WorldConfig(businesses=businesses, days=days, seed=seed)):
        rank = 0 if type(e) is BusinessEvent else 1
        p = zlib.crc32(e.business_id.encode()) % partitions
        o = offsets.get((rank, p), 0)
        offsets[(rank, p)] = o + 1
        out.append(_Record(rank, p, o, e))
    return out


def main(argv: list[str] | None = None) -> int:
    from models.evaluate import evaluate
    from models.registry import LoadedModel
    from models.rowsets import build_training_set
    from models.train import TrainOptions, event_examples, fit, frame, time_split

    ap = argparse.ArgumentParser(prog="python -m models.bench", description=__doc__.splitlines()[0])
    ap.add_argument("--businesses", type=int, default=1000)
    ap.add_argument("--days", type=int, default=60)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--sample-rate", type=float, action="append", help="repeatable (default: 0.1 and 1.0)")
    ap.add_argument("--objective", default="rank:ndcg")
    args = ap.parse_args(argv)

    t = time.perf_counter()
    records = simulated_records(args.businesses, args.days, args.seed)
    print(
        f"world {args.businesses} businesses x {args.days} days: {len(records):,} events generated in {time.perf_counter() - t:.1f} s"
    )
    for rate in args.sample_rate or [0.1, 1.0]:
        ts = build_training_set(records, sample_rate=rate)
        s = ts.stats
        print(
            f"build, sample rate {rate:g}: {s.events_per_s:,.0f} events/s ({s.seconds:.2f} s); "
            f"{s.scoring_moments:,} moments, {len(ts):,} examples, "
            f"X {ts.X.nbytes / 2**20:.0f} MiB"
        )
        opts = TrainOptions(objective=args.objective, sample_rate=rate, examples="events")
        sp = time_split(ts.as_of, ts.label_cfg.horizon_ms, opts.validation_days)
        train, val = ts.take(sp.train_idx), ts.take(sp.val_idx)
        fr = fit(event_examples(train, opts.frame), opts, ts.label_cfg.horizon_ms)
        m = LoadedModel("bench", ts_spec(ts), fr.booster)
        t = time.perf_counter()
        scores = m.score(val.X)
        dt = time.perf_counter() - t
        ev = evaluate(scores, val.y, val.groups, val.business, val.as_of, val.popularity, k=opts.top_k)
        print(
            f"fit ({opts.objective}, frame {opts.frame}: {len(frame(train, opts.frame)):,} train rows): {fr.seconds:.2f} s, "
            f"{fr.rounds} rounds (chosen on the training period); score {len(val):,} rows in {dt * 1000:.1f} ms "
            f"({len(val) / dt:,.0f} rows/s)"
        )
        print(
            f"  top-{ev.k} capture model {ev.model.capture:.3f} / popularity {ev.popularity.capture:.3f} / random "
            f"{ev.random.capture:.3f} (lift {ev.lift_vs_popularity:.2f}x, {ev.lift_vs_random:.2f}x); "
            f"NDCG@10 {ev.model.ndcg10:.3f} / {ev.popularity.ndcg10:.3f}; AUC {ev.model.auc:.3f} / {ev.popularity.auc:.3f}"
        )
    return 0


def ts_spec(ts):
    from features.spec import DEFAULT_SPEC

    assert ts.feature_set_version == DEFAULT_SPEC.version
    return DEFAULT_SPEC


if __name__ == "__main__":
    raise SystemExit(main())
