"""``streamrank report``: how the arms of an experiment did online, next to what the trainer promised.

Inputs: the serving predictions topic, the hold-out topic and the shadow topic (whichever exist),
and the activity topic (conversions: ``LabelConfig.kinds``). Units:

* **Cells**: (arm, model version). Hold-out predictions form the ``holdout`` cell, shadow ones the
  ``shadow`` cell (the shadow scores every business: its outcome columns are the population's).
* **Online label** of a prediction: distinct conversions of its business in
  ``(as_of, as_of + H]``, ``as_of`` being the business's clock when it was scored (the features
  know everything up to it; ``event_time`` for predictions written before the field existed), as
  the trainer labels; predictions whose horizon runs past the end of the activity log are left out
  of AUC, capture and calibration (incomplete label).
* **Ranking frame** as in training (``models.evaluate``): one example per (group_key x UTC day,
  business), its latest prediction; **top-k capture** = share of the cell's next-horizon
  conversions that land in each group's top-k (within the cell: the arms split every group), and
  **online AUC** of ``conversions > 0``.
* **Calibration**: rank objectives give margins, not probabilities, so the table is a reliability
  table: per score decile (of the cell's frame), mean score, mean conversions and share converting.
  A useful model's outcome rises with the decile.
* **Conversions per business per day**: each business counts from its first prediction (its first
  exposure to the arm) to the end of the activity log. **Uplift vs hold-out** = difference of the
  means of that per-business rate between an arm and the hold-out, businesses as the units,
  with a normal (Welch) 95 % interval; the same against the first arm (A/A: should cover 0).
* **Offline**: the trainer's metrics from the registry metadata of each model version.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from consumer.config import Config
from consumer.errors import DecodeError, DiffError, ReportError, TopicNotFound

DAY_MS = 86_400_000
Z95 = 1.959963984540054


# ------------------------------------------------------------------------------------ reading
def read_prediction_topics(cfg: Config, topics: list[str]) -> list[dict[str, Any]]:
    """Predictions of every existing topic in ``topics``, one per (topic, prediction id); each
    tagged with ``_topic``."""
    from consumer.pipeline.codec import AvroCodec, FileSchemaRegistry
    from consumer.tools.topicreads import scan_topic

    codec = AvroCodec(FileSchemaRegistry(cfg.schema_registry or None), "Prediction")
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for topic in dict.fromkeys(topics):
        try:
            for rec in scan_topic(cfg, topic):
                try:
                    pred = codec.decode(rec.value, rec.topic, rec.partition, rec.offset)
                except DecodeError:
                    continue
                pred["_topic"] = topic
                out[(topic, pred["prediction_id"])] = pred
        except TopicNotFound:
            continue  # an arm's topic that was never created: nothing to report on it
        except DiffError as exc:
            raise ReportError(str(exc)) from exc
    return list(out.values())


# ------------------------------------------------------------------------------------ metrics
@dataclass
class Uplift:
    versus: str
    diff: float
    lo: float
    hi: float
    n_a: int
    n_b: int

    @property
    def excludes_zero(self) -> bool:
        return self.lo > 0 or self.hi < 0


@dataclass
class Cell:
    arm: str
    model_version: str
    topic: str
    n_predictions: int
    n_businesses: int
    conv_per_business_day: float
    frame_examples: int
    capture: float
    auc: float
    calibration: list[dict[str, float]]
    uplift_vs_holdout: Uplift | None = None
    uplift_vs_first: Uplift | None = None
    offline: dict[str, Any] | None = None
    rates: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)  # per business: the uplift's units
    pre: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)  # per business: pre-period rate

    @property
    def label(self) -> str:
        return f"{self.arm} @ {self.model_version}"


@dataclass
class Report:
    cells: list[Cell]
    k: int
    horizon_ms: int
    log_end_ms: int
    first_ms: int
    conversions: int
    start_ms: int | None = None

    def cell(self, arm: str) -> Cell:
        for c in self.cells:
            if c.arm == arm:
                return c
        raise KeyError(arm)

    def to_dict(self) -> dict[str, Any]:
        def clean(v: Any) -> Any:
            if isinstance(v, float):
                return v if math.isfinite(v) else None
            if isinstance(v, dict):
                return {k: clean(x) for k, x in v.items()}
            if isinstance(v, list):
                return [clean(x) for x in v]
            if isinstance(v, Uplift):
                return clean(v.__dict__)
            return v

        cells = [{k: clean(v) for k, v in c.__dict__.items() if k not in ("rates", "pre")} for c in self.cells]
        return {
            "k": self.k,
            "horizon_ms": self.horizon_ms,
            "log_end_ms": self.log_end_ms,
            "first_ms": self.first_ms,
            "start_ms": self.start_ms,
            "conversions": self.conversions,
            "cells": cells,
        }


MIN_EXPOSURE_DAYS = 0.5  # a business first seen at the very end says little


def conversions_per_day(conversions: float, start_ms: int, end_ms: int) -> float:
    """A business's conversion rate over its exposure ``(start_ms, end_ms]``: the unit of the uplift
    (``report`` and ``monitor`` both use it)."""
    return conversions / max((end_ms - start_ms) / DAY_MS, MIN_EXPOSURE_DAYS)


def uplift(rates: np.ndarray, versus_rates: np.ndarray, versus: str) -> Uplift:
    """The uplift estimator of ``report`` and ``monitor``: difference of the mean per-business rates,
    businesses as units, Welch normal 95 % interval."""
    return Uplift(versus, *welch(rates, versus_rates), len(rates), len(versus_rates))


def welch(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """mean(a) - mean(b) and its normal 95 % interval (unequal variances)."""
    if len(a) < 2 or len(b) < 2:
        return float("nan"), float("nan"), float("nan")
    d = float(a.mean() - b.mean())
    se = math.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
    return d, d - Z95 * se, d + Z95 * se


def _count_after(times: np.ndarray | None, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Conversions in (lo, hi] for each pair."""
    if times is None or len(times) == 0:
        return np.zeros(len(lo))
    return (np.searchsorted(times, hi, "right") - np.searchsorted(times, lo, "right")).astype(float)


def _calibration(scores: np.ndarray, y: np.ndarray, bins: int = 10) -> list[dict[str, float]]:
    if len(scores) < bins:
        return []
    order = np.argsort(scores, kind="stable")
    rows = []
    for i, idx in enumerate(np.array_split(order, bins)):
        rows.append(
            {
                "decile": i + 1,
                "n": int(len(idx)),
                "mean_score": float(scores[idx].mean()),
                "mean_conversions": float(y[idx].mean()),
                "share_converting": float((y[idx] > 0).mean()),
            }
        )
    return rows


def build_report(
    preds: list[dict[str, Any]],
    conversions: dict[str, np.ndarray],
    log_end_ms: int,
    *,
    horizon_ms: int,
    k: int = 3,
    offline: Callable[[str], dict[str, Any] | None] | None = None,
    start_ms: int | None = None,
) -> Report:
    from models.evaluate import auc, evaluation_frame, topk_capture

    if not preds:
        raise ReportError("no predictions to report on")
    cells_preds: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for p in preds:
        cells_preds[(p["arm"], p["model_version"])].append(p)
    first_ms = min(p["event_time"] for p in preds)
    cells: list[Cell] = []
    for (arm, mv), ps in cells_preds.items():
        t = np.fromiter((p["event_time"] for p in ps), np.int64, len(ps))
        # Labels start at the clock the features had (as_of), as in training; event_time for
        # predictions written before the field existed.
        lt = np.fromiter((p.get("as_of") or p["event_time"] for p in ps), np.int64, len(ps))
        s = np.fromiter((p["score"] for p in ps), np.float64, len(ps))
        biz = np.array([p["business_id"] for p in ps], dtype=object)
        y = np.zeros(len(ps))
        rows_of: dict[str, list[int]] = defaultdict(list)
        for i, b in enumerate(biz.tolist()):
            rows_of[b].append(i)
        for b, idx in rows_of.items():
            ix = np.asarray(idx)
            y[ix] = _count_after(conversions.get(b), lt[ix], lt[ix] + horizon_ms)
        complete = lt + horizon_ms <= log_end_ms
        # Per-business outcome rate from first exposure to the end of the log.
        first: dict[str, int] = {}
        for b, ti in zip(biz.tolist(), t.tolist(), strict=True):
            if ti < first.get(b, 1 << 62):
                first[b] = ti
        rates = []
        for b, t0 in first.items():
            n = float(_count_after(conversions.get(b), np.array([t0]), np.array([log_end_ms]))[0])
            rates.append(conversions_per_day(n, t0, log_end_ms))
        rates_a = np.asarray(rates)
        pre_a = np.zeros(len(first))
        if start_ms is not None:
            # Experiment window (start_ms, end]; the pre-period (first prediction, start_ms] is the
            # covariate of the variance reduction below (CUPED): popularity persists, noise does not.
            days = max((log_end_ms - start_ms) / DAY_MS, 1e-9)
            pre_days = max((start_ms - first_ms) / DAY_MS, 1e-9)
            ends, starts = np.full(len(first), log_end_ms), np.full(len(first), start_ms)
            rates_a = np.array([_count_after(conversions.get(b), starts[:1], ends[:1])[0] for b in first]) / days
            pre_a = (
                np.array([_count_after(conversions.get(b), np.array([first_ms - 1]), starts[:1])[0] for b in first])
                / pre_days
            )
        if complete.any():
            gk = np.array([f"{p['group_key']}|{p['event_time'] // DAY_MS}" for p in ps], dtype=object)[complete]
            fi = evaluation_frame(gk, biz[complete], t[complete])
            yc, sc = y[complete][fi], s[complete][fi]
            cap = topk_capture(yc, sc, gk[fi], k) if yc.sum() > 0 else float("nan")
            a = auc(yc, sc)
            cal = _calibration(sc, yc)
            n_frame = len(fi)
        else:
            cap, a, cal, n_frame = float("nan"), float("nan"), [], 0
        cells.append(
            Cell(
                arm,
                mv,
                ps[0].get("_topic", ""),
                len(ps),
                len(first),
                float(rates_a.mean()),
                n_frame,
                cap,
                a,
                cal,
                offline=offline(mv) if offline else None,
                rates=rates_a,
                pre=pre_a,
            )
        )
    order = {"holdout": 1, "shadow": 2}
    cells.sort(key=lambda c: (order.get(c.arm, 0), c.arm, c.model_version))
    serving = [c for c in cells if c.arm not in order]
    hold = [c for c in cells if c.arm == "holdout"]
    if start_ms is not None:
        units = serving + hold  # each business is in exactly one of them
        y, x = np.concatenate([c.rates for c in units]), np.concatenate([c.pre for c in units])
        theta = float(np.cov(y, x)[0, 1] / x.var(ddof=1)) if len(x) > 2 and x.var() > 0 else 0.0
        for c in units:
            c.rates = c.rates - theta * (c.pre - x.mean())
    hold_rates = np.concatenate([c.rates for c in hold]) if hold else None
    for c in serving:
        if hold_rates is not None:
            c.uplift_vs_holdout = uplift(c.rates, hold_rates, "holdout")
        if c is not serving[0]:
            base = serving[0]
            c.uplift_vs_first = uplift(c.rates, base.rates, base.label)
    n_conv = int(sum(len(v) for v in conversions.values()))
    return Report(cells, k, horizon_ms, log_end_ms, first_ms, n_conv, start_ms)


def offline_metrics(registry: Any) -> Callable[[str], dict[str, Any] | None]:
    def get(version: str) -> dict[str, Any] | None:
        try:
            meta = registry.metadata(version)
        except Exception:  # noqa: BLE001 - "random" or a version from another registry: nothing recorded
            return None
        m = meta.get("metrics") or {}
        model = m.get("model") or {}
        return {
            "capture": model.get("capture"),
            "auc": model.get("auc"),
            "ndcg10": model.get("ndcg10"),
            "k": m.get("k"),
            "lift_vs_random": m.get("lift_vs_random"),
        }

    return get


# ------------------------------------------------------------------------------------ output
def _f(v: Any, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def _iso(ms: int) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%MZ")


def _u(u: Uplift | None) -> str:
    if u is None or not math.isfinite(u.diff):
        return "-"
    star = " *" if u.excludes_zero else ""
    return f"{u.diff:+.4f} [{u.lo:+.4f}, {u.hi:+.4f}]{star}"


def to_markdown(rep: Report, png_name: str | None = "report.png") -> str:
    k = rep.k
    if rep.start_ms is None:
        window = "from first exposure to the end of the log"
    else:
        window = (
            f"from the experiment start {_iso(rep.start_ms)} to the end of the log, CUPED-adjusted with each "
            "business's rate before the start"
        )
    lines = [
        "# Experiment report",
        "",
        f"Horizon {rep.horizon_ms / 3_600_000:g} h, top-k = {k}, {rep.conversions} conversions in the activity log. "
        f"Uplift: difference in conversions per business per day ({window}), "
        "businesses as units, Welch 95 % interval; * = interval excludes 0.",
        "",
        "## Online, per arm and model",
        "",
        f"| arm | model | predictions | businesses | conv/business/day | capture@{k} | AUC | uplift vs hold-out | uplift vs first arm |",
        "|---|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for c in rep.cells:
        lines.append(
            f"| {c.arm} | {c.model_version} | {c.n_predictions} | {c.n_businesses} | {_f(c.conv_per_business_day)} | "
            f"{_f(c.capture)} | {_f(c.auc)} | {_u(c.uplift_vs_holdout)} | {_u(c.uplift_vs_first)} |"
        )
    lines += [
        "",
        "## Offline (trainer's validation) vs online",
        "",
        f"| arm | model | offline capture | online capture@{k} | offline AUC | online AUC | offline NDCG@10 |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for c in rep.cells:
        off = c.offline or {}
        lines.append(
            f"| {c.arm} | {c.model_version} | {_f(off.get('capture'))} | {_f(c.capture)} | {_f(off.get('auc'))} | "
            f"{_f(c.auc)} | {_f(off.get('ndcg10'))} |"
        )
    lines += ["", "## Calibration (reliability per score decile: mean conversions in the horizon)", ""]
    for c in rep.cells:
        if not c.calibration:
            continue
        lines.append(
            f"- **{c.label}**: " + ", ".join(f"d{r['decile']}: {r['mean_conversions']:.3f}" for r in c.calibration)
        )
    if png_name:
        lines += ["", f"![report]({png_name})"]
    return "\n".join(lines) + "\n"


def plot(rep: Report, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    for c in rep.cells:
        if c.calibration:
            ax1.plot(
                [r["decile"] for r in c.calibration],
                [r["mean_conversions"] for r in c.calibration],
                marker="o",
                label=c.label,
            )
    ax1.set_xlabel("score decile")
    ax1.set_ylabel("mean conversions in horizon")
    ax1.set_title("Calibration (reliability)")
    ax1.legend(fontsize=7)
    ups = [(c, c.uplift_vs_holdout) for c in rep.cells if c.uplift_vs_holdout is not None]
    ups = [(c, u) for c, u in ups if u is not None and math.isfinite(u.diff)]
    for i, (_c, u) in enumerate(ups):
        ax2.errorbar([u.diff], [i], xerr=[[u.diff - u.lo], [u.hi - u.diff]], fmt="o", capsize=4)
    ax2.axvline(0, color="grey", lw=1)
    ax2.set_yticks(range(len(ups)), [c.label for c, _u in ups], fontsize=7)
    ax2.set_xlabel("uplift vs hold-out (conversions / business / day)")
    ax2.set_title("Uplift, 95 % interval")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(rep: Report, out_dir: Path) -> tuple[Path, Path, str]:
    out_dir.mkdir(parents=True, exist_ok=True)
    png = out_dir / "report.png"
    plot(rep, png)
    md = to_markdown(rep, png.name)
    md_path = out_dir / "report.md"
    md_path.write_text(md, encoding="utf-8")
    (out_dir / "report.json").write_text(json.dumps(rep.to_dict(), indent=2, default=str), encoding="utf-8")
    return md_path, png, md


def run_report(
    cfg: Config,
    *,
    kinds: tuple[str, ...],
    horizon_ms: int,
    k: int = 3,
    registry: Any = None,
    start_ms: int | None = None,
) -> Report:
    from consumer.tools.topicreads import read_conversions

    preds = read_prediction_topics(cfg, [cfg.predictions_topic, cfg.holdout_topic, cfg.shadow_topic])
    conv = read_conversions(cfg, kinds)
    if conv.log_end_ms < 0:
        raise ReportError(f"no activity in {cfg.activity_topic}")
    return build_report(
        preds,
        conv.times,
        conv.log_end_ms,
        horizon_ms=horizon_ms,
        k=k,
        offline=offline_metrics(registry) if registry is not None else None,
        start_ms=start_ms,
    )
