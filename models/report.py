"""The human report of a training run: ``report.md`` plus PNG charts, from the metadata alone.

Written into the version's folder by the trainer before the version becomes visible, so every
registered model carries the report of the decision made about it. Charts use matplotlib's
object-oriented API on an Agg canvas (no global backend switch, no display needed).
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger("streamrank.models.report")

REPORT_FILE = "report.md"
CAPTURE_CHART = "capture.png"
IMPORTANCE_CHART = "importance.png"
TOP_FEATURES = 15


def write_report(folder: str | Path, meta: Mapping[str, Any]) -> list[str]:
    """Write ``report.md`` and the charts into ``folder``; return the file names written."""
    folder = Path(folder)
    written = []
    charts: list[str] = []
    for name, fn in ((CAPTURE_CHART, capture_chart), (IMPORTANCE_CHART, importance_chart)):
        try:
            fn(meta, folder / name)
            charts.append(name)
        except Exception as exc:  # a chart must never block registering a model
            log.warning("chart %s not written: %s", name, exc)
    (folder / REPORT_FILE).write_text(render_markdown(meta, charts), encoding="utf-8")
    written.append(REPORT_FILE)
    return written + charts


# --------------------------------------------------------------------------------- markdown
def _f(v: Any, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _pct(v: Any) -> str:
    return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{100 * v:.1f} %"


def _ts(ms: Any) -> str:
    if ms is None:
        return "n/a"
    return _dt.datetime.fromtimestamp(ms / 1000, _dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def render_markdown(meta: Mapping[str, Any], charts: list[str] | tuple[str, ...] = ()) -> str:
    """The report: header, decision, validation metrics, data, training, importance, sanity failures."""
    lines = _header(meta)
    lines += _decision(meta)
    lines += _snapshot_metrics(meta, charts)
    lines += _metrics(meta, charts)
    lines += _data(meta)
    lines += _training(meta)
    lines += _importance(meta, charts)
    lines += _sanity(meta)
    return "\n".join(lines).rstrip() + "\n"


def _header(meta: Mapping[str, Any]) -> list[str]:
    fs = meta.get("feature_set", {})
    code = meta.get("code", {})
    return [
        f"# Model {meta.get('version', '(unregistered)')}",
        "",
        f"- created: {meta.get('created_at', 'n/a')}",
        f"- objective: {_objective(meta)}",
        f"- feature set: `{fs.get('version', 'n/a')}` ({len(fs.get('spec', {}).get('names', []))} features)",
        f"- code: streamrank {code.get('package', 'n/a')}, git `{code.get('git_sha') or 'n/a'}`",
        "",
    ]


def _decision(meta: Mapping[str, Any]) -> list[str]:
    promo = meta.get("promotion", {})
    lines = [
        f"## Decision: {'PROMOTED' if promo.get('promoted') else 'NOT PROMOTED'}",
        "",
        f"{promo.get('reason', '')}",
        "",
        "| gate | result | detail |",
        "|---|---|---|",
    ]
    for g in meta.get("gates", []):
        res = g.get("result") or ("skipped" if g.get("passed") is None else ("pass" if g["passed"] else "FAIL"))
        lines.append(f"| {g.get('name')} | {res} | {g.get('detail', '')} |")
    return lines


def _ci(d: Any) -> str:
    """``value [low, high]`` of an interval dict, ``n/a`` without a value."""
    if not isinstance(d, Mapping) or d.get("value") is None:
        return "n/a"
    if d.get("low") is None or d.get("high") is None:
        return _f(d["value"], 3)
    return f"{d['value']:.3f} [{d['low']:.3f}, {d['high']:.3f}]"


_SNAPSHOT_SCORERS = (
    ("model", "model"),
    ("popularity", "popularity"),
    ("recent_popularity", "recent popularity"),
    ("random", "random"),
)


def _snapshot_metrics(meta: Mapping[str, Any], charts: list[str] | tuple[str, ...]) -> list[str]:
    sm = meta.get("snapshot_metrics")
    if not sm:
        return []
    k = sm.get("k", "k")
    frame = meta.get("snapshot_frame") or {}
    boot = sm.get("bootstrap") or {}
    suff = sm.get("sufficiency") or {}
    scorers = [(key, label) for key, label in _SNAPSHOT_SCORERS if key in sm]
    if "current" in sm:
        scorers.append(("current", f"current ({(meta.get('current_model') or {}).get('version')})"))
    half_life = frame.get("half_life_ms")
    lines = [
        "",
        f"## Snapshot metrics: what the user sees (the gates judge these; top-k with k = {k})",
        "",
        "Every served business of each market (city x category) ranked at each snapshot time T, "
        "label = its conversions in (T, T + H]. "
        f"Point estimate [{100 * boot.get('level', 0.95):g} % CI], a percentile bootstrap over markets "
        f"({boot.get('samples', 'n/a')} resamples, seed {boot.get('seed', 'n/a')}).",
        "",
        "| metric | " + " | ".join(label for _, label in scorers) + " |",
        "|---|" + "---|" * len(scorers),
    ]
    for key, label in (("capture", f"top-{k} capture"), ("ndcg10", "NDCG@10"), ("auc", "AUC (per snapshot, mean)")):
        lines.append(f"| {label} | " + " | ".join(_ci((sm.get(s) or {}).get(key)) for s, _ in scorers) + " |")
    dp = sm.get("model_minus_popularity") or {}
    dr = sm.get("model_minus_recent_popularity") or {}
    lines += [
        "",
        f"- model - popularity: capture {_ci(dp.get('capture'))}, AUC {_ci(dp.get('auc'))}",
        f"- model - recent popularity: capture {_ci(dr.get('capture'))}, AUC {_ci(dr.get('auc'))}",
        f"- frame: {sm.get('n_rows', 'n/a')} (snapshot, business) rows, {sm.get('n_snapshots', 'n/a')} snapshots "
        f"from {_ts(frame.get('first_snapshot_ms'))} to {_ts(frame.get('last_snapshot_ms'))}, "
        f"{sm.get('n_markets', 'n/a')} markets, {sm.get('n_groups', 'n/a')} rankings, "
        f"{_f(sm.get('n_conversions'), 0)} conversions"
        + (
            f"; {frame['dropped_snapshots']} snapshots dropped (horizon past the data)"
            if frame.get("dropped_snapshots")
            else ""
        ),
        f"- recent popularity: conversions decayed with a half-life of {half_life / 86_400_000:g} days"
        if half_life
        else "- recent popularity: n/a",
        f"- data {'sufficient' if suff.get('enough') else 'INSUFFICIENT'} to decide: {suff.get('detail', 'n/a')}",
    ]
    if CAPTURE_CHART in charts:
        lines += ["", f"![top-k capture]({CAPTURE_CHART})"]
    return lines


def _metrics(meta: Mapping[str, Any], charts: list[str] | tuple[str, ...]) -> list[str]:
    m = meta.get("metrics", {})
    k = m.get("k", "k")
    cur = dict(meta.get("current_model") or {})
    snapshot = bool(meta.get("snapshot_metrics"))
    if snapshot:  # the current model's snapshot metrics are in the table above; its event ones here
        cur["metrics"] = cur.get("event_metrics")
    title = "Event-frame metrics (scoring moments; informational)" if snapshot else "Validation metrics"
    lines = ["", f"## {title} (top-k with k = {k})", ""]
    header = "| metric | model | popularity | random |"
    sep = "|---|---|---|---|"
    if cur.get("metrics"):
        header += f" current ({cur.get('version')}) |"
        sep += "---|"
    lines += [header, sep]
    for key, label in (("capture", f"top-{k} capture"), ("ndcg10", "NDCG@10"), ("auc", "AUC")):
        row = f"| {label} | {_f(m.get('model', {}).get(key))} | {_f(m.get('popularity', {}).get(key))} | {_f(m.get('random', {}).get(key))} |"
        if cur.get("metrics"):
            row += f" {_f(cur['metrics'].get(key))} |"
        lines.append(row)
    lines += [
        "",
        f"- lift over popularity (capture): {_f(m.get('lift_vs_popularity'), 3)}x",
        f"- lift over random (capture): {_f(m.get('lift_vs_random'), 3)}x",
        f"- evaluation frame: {m.get('n_examples', 'n/a')} (group, business) rows in {m.get('n_groups', 'n/a')} groups, "
        f"{_f(m.get('n_conversions'), 0)} next-horizon conversions",
    ]
    if cur and not cur.get("metrics"):
        lines.append(f"- current model: {cur.get('version')} not compared: {cur.get('note', '')}")
    if CAPTURE_CHART in charts and not snapshot:
        lines += ["", f"![top-k capture]({CAPTURE_CHART})"]
    return lines


def _data(meta: Mapping[str, Any]) -> list[str]:
    data = meta.get("data", {})
    rng = data.get("range") or {}
    build = data.get("build", {})
    split = data.get("split", {})
    label = data.get("label", {})
    lines = [
        "",
        "## Data",
        "",
        f"- event time: {_ts(build.get('data_min_ms'))} .. {_ts(build.get('data_end_ms'))}",
        f"- records: {build.get('records', 'n/a')} ({build.get('business_records', 'n/a')} business, "
        f"{build.get('activity_records', 'n/a')} activity, {build.get('tombstones', 0)} tombstones)",
        f"- label: conversions {', '.join(label.get('kinds', []))} within {label.get('horizon_ms', 0) / 3_600_000:g} h",
        f"- scoring moments: {build.get('scoring_moments', 'n/a')}, sampled {build.get('sampled', 'n/a')} "
        f"(rate {_f(data.get('sample_rate', meta.get('options', {}).get('sample_rate')), 3)}), dropped (incomplete label) "
        f"{build.get('dropped_incomplete', 'n/a')}, examples {build.get('examples', 'n/a')}",
        f"- split: train {split.get('train_examples', 'n/a')} examples before {_ts(split.get('train_end_ms'))}, "
        f"validation {split.get('validation_examples', 'n/a')} from {_ts(split.get('val_start_ms'))} "
        f"(gap {split.get('gap_ms', 0) / 3_600_000:g} h)",
        f"- build throughput: {_f(build.get('events_per_s'), 0)} events/s",
    ]
    offsets = rng.get("offsets") if isinstance(rng, Mapping) else None
    if offsets:
        lines += ["", "| topic | partition | offsets [start, end) |", "|---|---|---|"]
        for topic, parts in offsets.items():
            for p, span in parts.items():
                lines.append(f"| {topic} | {p} | {span} |")
    return lines


def _training(meta: Mapping[str, Any]) -> list[str]:
    tr = meta.get("training", {})
    inner = tr.get("inner_split") or {}
    ex = tr.get("examples") or {}
    lines = ["", "## Training", ""]
    if ex:
        parts = [
            f"{src} {d.get('rows', 0):,} rows in {d.get('groups', 0):,} queries "
            f"({d.get('groups_with_pairs', 0):,} with several businesses)"
            for src, d in ex.items()
            if isinstance(d, Mapping)
        ]
        lines.append(f"- examples ({meta.get('data', {}).get('examples', 'n/a')}): " + "; ".join(parts))
    if inner:
        lines.append(
            f"- rounds: {tr.get('rounds', 'n/a')}, chosen on the training period "
            f"({inner.get('rounds_from', 'n/a')}; inner train {inner.get('train_rows', 'n/a')} rows before "
            f"{_ts(inner.get('train_end_ms'))}, inner validation {inner.get('validation_rows', 'n/a')} rows from "
            f"{_ts(inner.get('val_start_ms'))}, criterion {_f(tr.get('best_score'))})"
        )
    else:
        lines.append(
            f"- best iteration: {tr.get('best_iteration', 'n/a')} of {tr.get('rounds_run', 'n/a')} rounds run, "
            f"best validation score {_f(tr.get('best_score'))}"
        )
    if tr.get("base_margin"):
        lines.append(f"- base margin: {tr['base_margin'].get('kind')} of {tr['base_margin'].get('columns')}")
    lines += [f"- fit time: {_f(tr.get('seconds'), 2)} s", f"- params: `{meta.get('params', {})}`"]
    return lines


def _importance(meta: Mapping[str, Any], charts: list[str] | tuple[str, ...]) -> list[str]:
    lines = [
        "",
        "## Feature importance (gain share)",
        "",
    ]
    imp = meta.get("importance", {})
    if IMPORTANCE_CHART in charts:
        lines += [f"![feature importance]({IMPORTANCE_CHART})", ""]
    lines += ["| feature | share |", "|---|---|"]
    for name, share in sorted(imp.items(), key=lambda kv: -kv[1])[:TOP_FEATURES]:
        lines.append(f"| {name} | {_pct(share)} |")
    shifts = meta.get("importance_shifts") or {}
    lines += ["", "### Shifts vs the previous model", ""]
    if not shifts.get("against"):
        lines.append("No previous model to compare with.")
    elif not shifts.get("shifts"):
        lines.append(f"Against {shifts['against']}: no feature moved by more than {_pct(shifts.get('threshold'))}.")
    else:
        lines += [
            f"Against {shifts['against']} (moves over {_pct(shifts.get('threshold'))}):",
            "",
            "| feature | previous | now | change |",
            "|---|---|---|---|",
        ]
        for s in shifts["shifts"]:
            lines.append(
                f"| {s['feature']} | {_pct(s['previous'])} | {_pct(s['current'])} | {100 * s['delta']:+.1f} pt |"
            )
    return lines


def _sanity(meta: Mapping[str, Any]) -> list[str]:
    failures = meta.get("sanity_failures") or []
    if not failures:
        return []
    return ["", "## Sanity failures", ""] + [f"- {f}" for f in failures]


# ----------------------------------------------------------------------------------- charts
def _canvas(w: float, h: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def capture_chart(meta: Mapping[str, Any], path: Path) -> None:
    """Top-k capture per scorer: on the snapshot frame with CI whiskers (else the event frame)."""
    sm = meta.get("snapshot_metrics")
    names: list[str] = []
    values: list[float] = []
    errs: list[tuple[float, float]] = []
    cur = meta.get("current_model") or {}
    if sm:
        k = sm.get("k", "k")
        scorers = [*_SNAPSHOT_SCORERS, ("current", f"current\n{str(cur.get('version', ''))[:15]}")]
        for key, label in scorers:
            iv = (sm.get(key) or {}).get("capture") or {}
            if iv.get("value") is None:
                continue
            v = float(iv["value"])
            lo, hi = iv.get("low"), iv.get("high")
            names.append(label.replace(" ", "\n", 1) if key == "recent_popularity" else label)
            values.append(v)
            errs.append((v - lo, hi - v) if lo is not None and hi is not None else (0.0, 0.0))
        title = f"Top-{k} capture on the validation snapshots (95 % CI)"
    else:
        m = meta.get("metrics", {})
        k = m.get("k", "k")
        for key, label in (("model", "model"), ("popularity", "popularity"), ("random", "random")):
            v = m.get(key, {}).get("capture")
            names.append(label)
            values.append(v if v is not None else 0.0)
            errs.append((0.0, 0.0))
        if cur.get("metrics") and cur["metrics"].get("capture") is not None:
            names.append(f"current\n{cur.get('version', '')[:15]}")
            values.append(cur["metrics"]["capture"])
            errs.append((0.0, 0.0))
        title = f"Top-{k} capture on validation"
    fig = _canvas(6.5, 3.5)
    ax = fig.add_subplot(1, 1, 1)
    colors = ["#2b6cb0", "#a0aec0", "#cbd5e0", "#e2e8f0", "#68d391"]
    bars = ax.bar(
        names,
        values,
        yerr=[[e[0] for e in errs], [e[1] for e in errs]],
        capsize=4,
        color=(colors * 2)[: len(names)],
        edgecolor="#4a5568",
    )
    for b, v in zip(bars, values, strict=True):
        ax.text(b.get_x() + b.get_width() / 2, v / 2, f"{100 * v:.1f}%", ha="center", va="center", fontsize=9)
    ax.set_ylabel(f"share of conversions in top-{k}")
    ax.set_ylim(0, max([v + e[1] for v, e in zip(values, errs, strict=True)] + [0.01]) * 1.2)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, format="png")


def importance_chart(meta: Mapping[str, Any], path: Path) -> None:
    importance = meta.get("importance") or {}
    shifts = meta.get("importance_shifts") or {}
    prev = shifts.get("previous_importance") or {}
    # The top features of this model, plus any that moved past the threshold (a feature that lost
    # its importance must still show up).
    top = [n for n, _ in sorted(importance.items(), key=lambda kv: -kv[1])[:TOP_FEATURES]]
    moved = [s["feature"] for s in shifts.get("shifts") or [] if s["feature"] not in top]
    names = (top + moved)[::-1]
    vals = [importance.get(n, 0.0) for n in names]
    fig = _canvas(7, max(2.5, 0.32 * len(names) + 1))
    ax = fig.add_subplot(1, 1, 1)
    y = list(range(len(names)))
    if prev:
        ax.barh([i + 0.2 for i in y], [prev.get(n, 0.0) for n in names], height=0.4, color="#cbd5e0", label="previous")
        ax.barh([i - 0.2 for i in y], vals, height=0.4, color="#2b6cb0", label="this model")
        ax.legend(loc="lower right", fontsize=8)
    else:
        ax.barh(y, vals, color="#2b6cb0")
    ax.set_yticks(y)
    ax.set_yticklabels(names, fontsize=8)
    ax.set_xlabel("share of total gain")
    ax.set_title(f"Feature importance (top {len(names)})")
    fig.tight_layout()
    fig.savefig(path, format="png")


def _objective(meta: Mapping[str, Any]) -> str:
    """The objective trained, and whether the inner split chose it (``objective="auto"``)."""
    asked = meta.get("options", {}).get("objective", "n/a")
    trained = meta.get("model", {}).get("objective") or asked
    return f"`{trained}` (chosen by the inner split)" if asked == "auto" else f"`{trained}`"
