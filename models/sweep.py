"""Model vs baselines on many simulated worlds: ``python -m models.sweep``.

Each world (``sim.world``: dense, the CLI's ``generate`` defaults, or sparse, the Yelp-like
``WorldConfig.sparse`` preset) is generated in memory and trained exactly as ``streamrank train``
trains: :func:`models.trainer.train_and_register` with the CLI's default ``TrainOptions``
(objective chosen by the inner split, snapshot examples, 7 validation days; ``--option KEY=VALUE`` changes a field) into a throw-away registry, labels as
``--conversion-kinds``/``--horizon`` would set them (dense: BIZSITE_VISIT, CALL, DIRECTIONS in 1 day;
sparse: REVIEW, TIP, CHECKIN in 30 days, the command of issue 17). One row per world: events,
examples, validation rows, validation conversions, AUC / top-k capture / NDCG@10 for the model,
popularity and random on the event frame (``outcome.evaluation``), the lifts (model - popularity;
``--event-ci``: with bootstrap 90 % intervals over validation groups), and the gates' decision.
A second table shows the snapshot frame the gates judge (``outcome.snapshot``, read through its
``to_dict()``: every served business of each market at daily snapshots, model / popularity /
recency-weighted popularity / random, lifts with the run's bootstrap intervals over markets, and
whether the frame is large enough to decide). Anything else the event evaluation reports
(``to_dict()`` keys beyond the known ones) is printed under the tables, as is.

    python -m models.sweep                     # the default worlds (a few minutes on 2 cores)
    python -m models.sweep --quick             # two tiny worlds (a smoke test)
    python -m models.sweep --world sparse:2000x2190:0 --world dense:200x14:3
    python -m models.sweep --only sparse --event-ci --json sweep.json
    python -m models.sweep --option examples=events --option base_margin=popularity

A world is ``KIND:BUSINESSESxDAYS:SEED`` (KIND ``dense`` or ``sparse``). Development tool: imports
``sim`` lazily; nothing in the trainer or the worker depends on it.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

DAY_MS = 86_400_000
DENSE_LABEL = (("BIZSITE_VISIT", "CALL", "DIRECTIONS"), DAY_MS)
SPARSE_LABEL = (("REVIEW", "TIP", "CHECKIN"), 30 * DAY_MS)
BOOTSTRAP = 200
_KNOWN_METRICS = {"k", "model", "popularity", "random", "lift_vs_popularity", "lift_vs_random"}
_KNOWN_METRICS |= {"n_examples", "n_groups", "n_conversions"}


@dataclass(frozen=True)
class WorldSpec:
    """One simulated world of the sweep, and the label it is trained for."""

    kind: str  # "dense" (generate's defaults: 12 cities x 12 categories) or "sparse" (one city)
    businesses: int
    days: int
    seed: int

    @property
    def name(self) -> str:
        return f"{self.kind}:{self.businesses}x{self.days}:{self.seed}"

    @classmethod
    def parse(cls, text: str) -> WorldSpec:
        m = re.fullmatch(r"(dense|sparse):(\d+)x(\d+):(\d+)", text.strip())
        if not m:
            raise ValueError(f"world {text!r}: expected KIND:BUSINESSESxDAYS:SEED, e.g. sparse:2000x365:1")
        return cls(m[1], int(m[2]), int(m[3]), int(m[4]))

    def config(self) -> Any:
        from sim.world import WorldConfig

        if self.kind == "sparse":
            return WorldConfig.sparse(businesses=self.businesses, days=self.days, seed=self.seed, cities=1)
        return WorldConfig(businesses=self.businesses, days=self.days, seed=self.seed)

    @property
    def label(self) -> tuple[tuple[str, ...], int]:
        return SPARSE_LABEL if self.kind == "sparse" else DENSE_LABEL


# Sizes 50..2,000 businesses, 14..365 days (and a six-year sparse world), several seeds, dense and
# sparse. Includes the 200 x 14 (seed 3) world that nothing was promoted on.
DEFAULT_WORLDS: tuple[WorldSpec, ...] = tuple(
    WorldSpec.parse(w)
    for w in (
        "dense:50x14:1",
        "dense:200x14:3",
        "dense:200x30:1",
        "dense:100x60:6",
        "dense:50x365:7",
        "dense:500x30:2",
        "dense:1000x14:4",
        "dense:2000x14:5",
        "sparse:500x180:1",
        "sparse:2000x365:2",
        "sparse:1000x730:3",
        "sparse:2000x2190:0",
    )
)
QUICK_WORLDS: tuple[WorldSpec, ...] = (WorldSpec.parse("dense:40x12:1"), WorldSpec.parse("sparse:300x120:2"))


class _Record(NamedTuple):
    rank: int
    partition: int
    offset: int
    event: Any
    key: str | None = None


def world_records(spec: WorldSpec, partitions: int = 6) -> list[_Record]:
    """The world's stream as log records (per-topic, per-partition offsets), as the trainer reads them."""
    from features.events import BusinessEvent
    from features.order import ACTIVITY_RANK, BUSINESS_RANK
    from sim.world import generate

    offsets: dict[tuple[int, int], int] = {}
    out = []
    for e in generate(spec.config()):
        rank = BUSINESS_RANK if type(e) is BusinessEvent else ACTIVITY_RANK
        p = zlib.crc32(e.business_id.encode()) % partitions
        o = offsets.get((rank, p), 0)
        offsets[(rank, p)] = o + 1
        out.append(_Record(rank, p, o, e, e.business_id))
    return out


def train_options(**overrides: Any) -> Any:
    """``streamrank train``'s options with the CLI's defaults (see ``consumer/cli/train.py``: the
    ``TrainOptions`` defaults), with ``overrides`` (``--option KEY=VALUE``)."""
    from models.train import TrainOptions

    return TrainOptions(objective="auto", start_ms=None, validation_days=7).with_(**overrides)


def parse_option(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` for a ``TrainOptions`` field; the value typed like the field's default
    (``none`` -> None)."""
    from dataclasses import fields

    from models.train import TrainOptions

    key, sep, raw = text.partition("=")
    known = {f.name: f for f in fields(TrainOptions)}
    if not sep or key not in known:
        raise ValueError(f"option {text!r}: expected KEY=VALUE with KEY one of {sorted(known)}")
    default = getattr(TrainOptions(), key)
    if raw.lower() == "none":
        return key, None
    if isinstance(default, bool):
        return key, raw.lower() in ("1", "true", "yes")
    if isinstance(default, int):
        return key, int(raw)
    if isinstance(default, float) or key == "sample_rate":
        return key, float(raw)
    return key, raw


@dataclass
class Row:
    world: str
    events: int = 0
    examples: int = 0
    val_rows: int = 0
    val_groups: int = 0
    conversions: float = 0.0
    metrics: dict[str, Any] = field(default_factory=dict)  # the outcome's evaluation.to_dict()
    extra: dict[str, Any] = field(default_factory=dict)  # evaluation keys beyond the known ones
    snapshot: dict[str, Any] | None = None  # the outcome's snapshot evaluation (what the gates judge), if any
    lift_capture_ci: tuple[float, float] | None = None
    lift_auc_ci: tuple[float, float] | None = None
    promoted: bool | None = None
    gates: str = ""
    best_iteration: int | None = None
    fit: dict[str, Any] = field(default_factory=dict)  # rounds, inner split, training rows by source
    seconds: float = 0.0
    error: str | None = None

    def metric(self, who: str, name: str) -> float:
        v = (self.metrics.get(who) or {}).get(name)
        return float("nan") if v is None else float(v)

    def lift(self, name: str) -> float:
        return self.metric("model", name) - self.metric("popularity", name)

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items()}
        d["lift_capture"] = _finite(self.lift("capture"))
        d["lift_auc"] = _finite(self.lift("auc"))
        return d


def run_world(spec: WorldSpec, *, ci: bool = False, seed: int = 0, overrides: dict[str, Any] | None = None) -> Row:
    """Generate, train as ``streamrank train`` does, and summarise one world."""
    from models.dataset import LabelConfig
    from models.errors import TrainingError
    from models.registry import ModelRegistry
    from models.trainer import train_and_register

    t0 = time.perf_counter()
    row = Row(spec.name)
    records = world_records(spec)
    row.events = len(records)
    kinds, horizon = spec.label
    label_cfg = LabelConfig(kinds=kinds, horizon_ms=horizon)
    options = train_options(**(overrides or {}))
    with tempfile.TemporaryDirectory(prefix="streamrank-sweep-") as tmp:
        registry = ModelRegistry(tmp)
        try:
            outcome = train_and_register(records, registry, label_cfg=label_cfg, options=options)
        except TrainingError as exc:
            row.error = str(exc)
            row.seconds = time.perf_counter() - t0
            return row
        ev = outcome.evaluation
        row.metrics = ev.to_dict()
        row.extra = {k: v for k, v in row.metrics.items() if k not in _KNOWN_METRICS}
        row.examples = int(getattr(outcome.build, "examples", 0))
        row.val_rows = int(getattr(ev, "n_examples", 0) or 0)
        row.val_groups = int(getattr(ev, "n_groups", 0) or 0)
        row.conversions = float(getattr(ev, "n_conversions", 0) or 0)
        row.promoted = bool(outcome.promoted)
        row.gates = ", ".join(f"{g.name}: {_gate_result(g)}" for g in outcome.gates)
        snap = getattr(outcome, "snapshot", None)
        row.snapshot = snap.to_dict() if snap is not None and hasattr(snap, "to_dict") else None
        row.best_iteration = getattr(outcome.fit, "best_iteration", None)
        fd = outcome.fit.to_dict() if hasattr(outcome.fit, "to_dict") else {}
        row.fit = {k: fd.get(k) for k in ("rounds", "rounds_run", "inner_split", "examples", "seconds")}
        if ci:
            model = registry.load(outcome.version)
            k = int(getattr(ev, "k", options.top_k))
            row.lift_capture_ci, row.lift_auc_ci = _bootstrap_lifts(records, model, label_cfg, options, k, seed)
    row.seconds = time.perf_counter() - t0
    return row


def _bootstrap_lifts(
    records: Sequence[Any], model: Any, label_cfg: Any, options: Any, k: int, seed: int
) -> tuple[tuple[float, float] | None, tuple[float, float] | None]:
    """90 % bootstrap intervals of (model - popularity) top-k capture and AUC on the validation frame
    (``models.evaluate.evaluation_frame`` of the run's time split), resampling validation groups.
    The training set is rebuilt with the run's options (deterministic: the same examples)."""
    from models.evaluate import auc, evaluation_frame, topk_capture
    from models.rowsets import build_training_set
    from models.train import time_split

    ts = build_training_set(
        records, label_cfg=label_cfg, sample_rate=options.sample_rate, seed=options.seed, start_ms=options.start_ms
    )
    sp = time_split(ts.as_of, label_cfg.horizon_ms, options.validation_days, options.gap_ms)
    val = ts.take(sp.val_idx)
    idx = evaluation_frame(val.groups, val.business, val.as_of)
    if len(idx) == 0:
        return None, None
    y = np.asarray(val.y, dtype=np.float64)[idx]
    groups = np.asarray(val.groups)[idx]
    scores = {"model": np.asarray(model.score(val.X), dtype=np.float64)[idx], "pop": np.asarray(val.popularity)[idx]}
    codes, inverse = np.unique(groups, return_inverse=True)
    G = len(codes)
    members = [np.flatnonzero(inverse == g) for g in range(G)]
    # captured conversions per group, for each ranker (a group's capture does not depend on the others)
    captured = {
        who: np.array(
            [topk_capture(y[m], s[m], np.zeros(len(m)), k) * y[m].sum() if y[m].any() else 0.0 for m in members]
        )
        for who, s in scores.items()
    }
    totals = np.array([y[m].sum() for m in members])
    rng = np.random.default_rng(seed)
    lift_cap, lift_auc = [], []
    for _ in range(BOOTSTRAP):
        pick = rng.integers(0, G, G)
        total = totals[pick].sum()
        if total > 0:
            lift_cap.append((captured["model"][pick].sum() - captured["pop"][pick].sum()) / total)
        rows = np.concatenate([members[g] for g in pick])
        a_model, a_pop = auc(y[rows], scores["model"][rows]), auc(y[rows], scores["pop"][rows])
        if math.isfinite(a_model) and math.isfinite(a_pop):
            lift_auc.append(a_model - a_pop)
    return _interval(lift_cap), _interval(lift_auc)


def _interval(xs: list[float]) -> tuple[float, float] | None:
    if len(xs) < BOOTSTRAP // 2:
        return None
    lo, hi = np.percentile(xs, [5, 95])
    return float(lo), float(hi)


# ----------------------------------------------------------------------------------- output
HEADER = (
    f"{'world':<20} {'events':>9} {'examples':>8} {'val rows':>8} {'groups':>6} {'conv':>7} | "
    f"{'AUC mod/pop/rnd':<17} | {'top-k capture mod/pop/rnd':<25} | {'NDCG@10 mod/pop/rnd':<19} | "
    f"{'lift capture [90% CI]':<24} | {'lift AUC [90% CI]':<24} | {'promoted':<8} {'s':>5}"
)


def format_row(r: Row) -> str:
    head = f"{r.world:<20} {r.events:>9,}"
    if r.error:
        return f"{head} {'':>8} {'':>8} {'':>6} {'':>7} | training refused: {r.error}  ({r.seconds:.0f}s)"

    def trio(name: str, width: int) -> str:
        return "/".join(_f(r.metric(w, name)) for w in ("model", "popularity", "random")).ljust(width)

    def lift(name: str, ci: tuple[float, float] | None) -> str:
        s = f"{r.lift(name):+.3f}" if math.isfinite(r.lift(name)) else "n/a"
        if ci:
            s += f" [{ci[0]:+.3f},{ci[1]:+.3f}]"
        return s.ljust(24)

    return (
        f"{head} {r.examples:>8,} {r.val_rows:>8,} {r.val_groups:>6,} {r.conversions:>7,.0f} | {trio('auc', 17)} | "
        f"{trio('capture', 25)} | {trio('ndcg10', 19)} | {lift('capture', r.lift_capture_ci)} | "
        f"{lift('auc', r.lift_auc_ci)} | {'yes' if r.promoted else 'no':<8} {r.seconds:>5.0f}"
    )


def summary(rows: Sequence[Row]) -> list[str]:
    ok = [r for r in rows if not r.error]
    cap = sum(r.lift("capture") >= 0 for r in ok)
    au = sum(r.lift("auc") >= 0 for r in ok)
    lines = [
        f"{len(rows)} worlds, {len(ok)} trained: model >= popularity on top-k capture in {cap}, on AUC in {au}; "
        f"promoted in {sum(bool(r.promoted) for r in ok)}",
        "lift = model - popularity on the run's event validation frame (--event-ci: 90% CI, bootstrap over "
        f"validation groups, {BOOTSTRAP} resamples); labels: dense {','.join(DENSE_LABEL[0])} in 1d, "
        f"sparse {','.join(SPARSE_LABEL[0])} in 30d",
    ]
    snap_rows = [line for line in (format_snapshot_row(r) for r in ok) if line]
    if snap_rows:
        n_enough = sum(bool(((r.snapshot or {}).get("sufficiency") or {}).get("enough")) for r in ok)
        snap_ok = [r for r in ok if r.snapshot]
        cap = sum(_snap_lift(r, "capture") >= 0 for r in snap_ok)
        au = sum(_snap_lift(r, "auc") >= 0 for r in snap_ok)
        lines += [
            "",
            "snapshot frame (what the gates judge: every served business of each market at daily snapshots; "
            "rec = recency-weighted popularity; CI over markets):",
            SNAPSHOT_HEADER,
            "-" * len(SNAPSHOT_HEADER),
            *snap_rows,
            f"snapshot frame: model >= popularity on capture in {cap}, on AUC in {au} of {len(snap_ok)}; "
            f"enough data to decide in {n_enough}",
            "",
        ]
    for r in ok:
        if r.gates:
            ex = (r.fit or {}).get("examples") or {}
            fit_rows = ", ".join(
                f"{src} {d['rows']:,} rows in {d['groups']:,} groups ({d['groups_with_pairs']:,} with pairs)"
                for src, d in ex.items()
                if isinstance(d, dict)
            )
            lines.append(
                f"  {r.world}: gates {r.gates}; rounds {(r.fit or {}).get('rounds', r.best_iteration)}"
                + (f"; fit on {fit_rows}" if fit_rows else "")
            )
        if r.extra:
            lines.append(f"  {r.world}: evaluation also reports {json.dumps(r.extra, default=str, sort_keys=True)}")
    return lines


def _gate_result(g: Any) -> str:
    result = getattr(g, "result", None)
    if result:
        return str(result)
    return "skipped" if g.passed is None else "pass" if g.passed else "FAIL"


SNAPSHOT_SCORERS = ("model", "popularity", "recent_popularity", "random")
SNAPSHOT_HEADER = (
    f"{'world':<20} {'rows':>8} {'markets':>7} {'snaps':>5} {'conv':>8} {'enough':>6} | "
    f"{'AUC mod/pop/rec/rnd':<23} | {'top-k capture mod/pop/rec/rnd':<29} | {'NDCG@10 mod/pop/rec/rnd':<23} | "
    f"{'lift capture [CI]':<24} | {'lift AUC [CI]':<24}"
)


def format_snapshot_row(r: Row) -> str | None:
    """The outcome's snapshot evaluation as one row (None when the outcome has none), read from its
    ``to_dict()``: scorers -> metric -> {value, low, high}, ``model_minus_popularity``, counts."""
    d = r.snapshot
    if not d:
        return None

    def value(scorer: str, metric: str) -> float:
        v = ((d.get(scorer) or {}).get(metric) or {}).get("value")
        return float("nan") if v is None else float(v)

    def quad(metric: str, width: int) -> str:
        return "/".join(_f(value(sc, metric)) for sc in SNAPSHOT_SCORERS).ljust(width)

    def lift(metric: str) -> str:
        iv = (d.get("model_minus_popularity") or {}).get(metric) or {}
        v, lo, hi = iv.get("value"), iv.get("low"), iv.get("high")
        if v is None:
            return "n/a".ljust(24)
        s = f"{v:+.3f}" + (f" [{lo:+.3f},{hi:+.3f}]" if lo is not None and hi is not None else "")
        return s.ljust(24)

    ndcg = next((m for m in (d.get("model") or {}) if m.startswith("ndcg")), "ndcg10")
    enough = (d.get("sufficiency") or {}).get("enough")
    return (
        f"{r.world:<20} {d.get('n_rows', 0):>8,} {d.get('n_markets', 0):>7,} {d.get('n_snapshots', 0):>5,} "
        f"{d.get('n_conversions', 0):>8,.0f} {'yes' if enough else 'no' if enough is not None else '?':>6} | "
        f"{quad('auc', 23)} | {quad('capture', 29)} | {quad(ndcg, 23)} | {lift('capture')} | {lift('auc')}"
    )


def _f(v: float) -> str:
    return f"{v:.3f}" if math.isfinite(v) else "n/a"


def _snap_lift(r: Row, metric: str) -> float:
    v = (((r.snapshot or {}).get("model_minus_popularity") or {}).get(metric) or {}).get("value")
    return float("nan") if v is None else float(v)


def _finite(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


def sweep(
    worlds: Sequence[WorldSpec],
    *,
    ci: bool = False,
    out: Callable[[str], None] = print,
    seed: int = 0,
    options: dict[str, Any] | None = None,
) -> list[Row]:
    """Run every world, printing the table as it goes; returns the rows."""
    import logging

    logging.getLogger("streamrank.models").setLevel(logging.WARNING)  # the decisions are in the rows
    out(HEADER)
    out("-" * len(HEADER))
    rows = []
    for spec in worlds:
        row = run_world(spec, ci=ci, seed=seed, overrides=options)
        out(format_row(row))
        rows.append(row)
    out("")
    for line in summary(rows):
        out(line)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m models.sweep", description=__doc__.splitlines()[0])
    ap.add_argument(
        "--world",
        action="append",
        type=WorldSpec.parse,
        metavar="KIND:BxD:SEED",
        help="a world, e.g. sparse:2000x365:1 (repeatable; default: the standard sweep)",
    )
    ap.add_argument("--quick", action="store_true", help="two tiny worlds (a smoke test)")
    ap.add_argument("--only", choices=["dense", "sparse"], help="only the dense or the sparse worlds")
    ap.add_argument("--max-businesses", type=int, help="skip worlds with more businesses")
    ap.add_argument("--no-long", action="store_true", help="skip worlds longer than a year (the six-year world)")
    ap.add_argument(
        "--event-ci",
        action="store_true",
        help="bootstrap intervals on the event frame too (rebuilds the training set; the snapshot frame has its own)",
    )
    ap.add_argument(
        "--option",
        action="append",
        type=parse_option,
        default=[],
        metavar="KEY=VALUE",
        help="a TrainOptions field for every world, e.g. examples=events or base_margin=popularity (repeatable)",
    )
    ap.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    args = ap.parse_args(argv)

    worlds = list(args.world or (QUICK_WORLDS if args.quick else DEFAULT_WORLDS))
    if args.only:
        worlds = [w for w in worlds if w.kind == args.only]
    if args.max_businesses:
        worlds = [w for w in worlds if w.businesses <= args.max_businesses]
    if args.no_long:
        worlds = [w for w in worlds if w.days <= 366]
    if not worlds:
        print("no worlds selected", file=sys.stderr)
        return 2
    t = time.perf_counter()
    if args.option:
        print("options: " + ", ".join(f"{k}={v}" for k, v in args.option))
    rows = sweep(worlds, ci=args.event_ci, options=dict(args.option))
    print(f"sweep: {len(rows)} worlds in {time.perf_counter() - t:.0f}s")
    if args.json:
        with open(args.json, "w") as fo:
            json.dump([r.to_dict() for r in rows], fo, indent=1, default=str)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
