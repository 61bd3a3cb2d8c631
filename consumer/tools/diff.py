"""Compare two prediction streams: the report a person reads before promoting a model.

Each side is a predictions topic (``topic``) or one model's predictions in it
(``topic@model_version``), optionally cut to an event-time range. Predictions are joined on their
source record ``(source_topic, source_partition, source_offset)``: two models scoring the same
replayed range line up one to one. A topic read without ``@version`` must hold one model version
only (otherwise the join would be ambiguous); duplicates of one ``prediction_id`` (a range replayed
twice) count once.

The report:

* **coverage**: predictions in A only, B only, both;
* **scores**: distribution of ``|score_B - score_A|`` over the joined predictions, share identical,
  and share with identical features (``feature_hash``): a score change with equal features is the
  model's doing; unequal features mean the inputs or the feature code differ;
* **rankings per group** (``group_key`` x UTC day of the event, the ranking groups of training):
  each business's latest score in the group on each side, Spearman rank correlation and top-k
  overlap (``|top-k(A) & top-k(B)| / min(k, n)``) per group, summarised, worst groups listed;
* **offline metrics on the same outcomes**: label of a prediction = distinct conversions
  (``LabelConfig.kinds``) of its business in ``(event_time, event_time + H]``, read from the
  activity topic; predictions whose horizon runs past the end of the activity log are left out
  (incomplete label). On the joined predictions, one example per (group, business) - its latest -
  as in training (``models.evaluate``): NDCG@10, ROC AUC, top-k capture for each model, and the
  random top-k capture for scale.

Written as ``diff.md`` + ``diff.png`` (+ ``diff.json``) into the output folder.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

from consumer.config import Config
from consumer.errors import DiffError
from consumer.tools.topicreads import Conversions, Source, read_conversions, read_predictions

DAY_MS = 86_400_000
DEFAULT_K = 3
WORST_GROUPS = 10


# ---------------------------------------------------------------------------------- compare
@dataclass
class GroupDiff:
    group: str
    businesses: int
    spearman: float
    overlap: float


@dataclass
class ModelMetrics:
    name: str
    versions: list[str]
    ndcg10: float
    auc: float
    capture: float


@dataclass
class DiffReport:
    a: str
    b: str
    k: int
    versions_a: list[str]
    versions_b: list[str]
    n_a: int
    n_b: int
    both: int
    only_a: int
    only_b: int
    abs_delta: dict[str, float] = field(default_factory=dict)  # mean, p50, p95, max
    mean_delta: float = float("nan")
    identical_share: float = float("nan")
    same_features_share: float = float("nan")
    groups: list[GroupDiff] = field(default_factory=list)
    metrics: list[ModelMetrics] = field(default_factory=list)
    random_capture: float = float("nan")
    label: dict[str, Any] = field(default_factory=dict)
    n_examples: int = 0
    n_metric_groups: int = 0
    n_conversions: float = 0.0
    incomplete_labels: int = 0
    # Kept for the chart only (not serialised).
    deltas: np.ndarray | None = field(default=None, repr=False)
    scores: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)

    def group_summary(self) -> dict[str, float]:
        rho = np.array([g.spearman for g in self.groups if math.isfinite(g.spearman)])
        ov = np.array([g.overlap for g in self.groups])
        return {
            "groups": len(self.groups),
            "groups_with_correlation": len(rho),
            "spearman_mean": float(rho.mean()) if len(rho) else float("nan"),
            "spearman_median": float(np.median(rho)) if len(rho) else float("nan"),
            "spearman_p10": float(np.percentile(rho, 10)) if len(rho) else float("nan"),
            "overlap_mean": float(ov.mean()) if len(ov) else float("nan"),
            "identical_topk_share": float((ov == 1.0).mean()) if len(ov) else float("nan"),
        }

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if k not in ("deltas", "scores", "groups")}
        d["group_summary"] = self.group_summary()
        d["worst_groups"] = [asdict(g) for g in worst_groups(self.groups)]
        return _clean(d)


def worst_groups(groups: list[GroupDiff], n: int = WORST_GROUPS) -> list[GroupDiff]:
    """Lowest top-k overlap first, then lowest correlation (undefined correlation last)."""
    return sorted(groups, key=lambda g: (g.overlap, g.spearman if math.isfinite(g.spearman) else 2.0, g.group))[:n]


def _day(t_ms: int) -> str:
    return dt.datetime.fromtimestamp(t_ms // 1000, dt.UTC).strftime("%Y-%m-%d")


def compare(
    a: list[dict[str, Any]],
    b: list[dict[str, Any]],
    conversions: Conversions,
    *,
    horizon_ms: int,
    kinds: tuple[str, ...] = (),
    k: int = DEFAULT_K,
    names: tuple[str, str] = ("A", "B"),
) -> DiffReport:
    from models.evaluate import evaluation_frame, random_topk_capture, score_metrics

    def coord(p: dict[str, Any]) -> tuple[str, int, int]:
        return (p["source_topic"], p["source_partition"], p["source_offset"])

    ia = {coord(p): p for p in a}
    ib = {coord(p): p for p in b}
    common = sorted(ia.keys() & ib.keys(), key=lambda c: (ia[c]["event_time"], c))
    rep = DiffReport(
        a=names[0],
        b=names[1],
        k=k,
        versions_a=sorted({p["model_version"] for p in a}),
        versions_b=sorted({p["model_version"] for p in b}),
        n_a=len(ia),
        n_b=len(ib),
        both=len(common),
        only_a=len(ia) - len(common),
        only_b=len(ib) - len(common),
        label={"kinds": list(kinds), "horizon_ms": int(horizon_ms), "log_end_ms": conversions.log_end_ms},
    )
    if not common:
        raise DiffError(f"{names[0]} and {names[1]} share no source record: nothing to compare")
    pa = [ia[c] for c in common]
    pb = [ib[c] for c in common]
    sa = np.fromiter((p["score"] for p in pa), dtype=np.float64, count=len(pa))
    sb = np.fromiter((p["score"] for p in pb), dtype=np.float64, count=len(pb))
    t = np.fromiter((p["event_time"] for p in pa), dtype=np.int64, count=len(pa))
    biz = np.array([p["business_id"] for p in pa], dtype=object)
    # The group is A's: the same source record gives the same group on both sides unless the
    # feature state differs, and that shows in same_features_share.
    names_g = [f"{p['group_key']}|{_day(p['event_time'])}" for p in pa]
    group_table, groups = np.unique(np.array(names_g, dtype=str), return_inverse=True)

    delta = sb - sa
    ad = np.abs(delta)
    rep.abs_delta = {
        "mean": float(ad.mean()),
        "p50": float(np.percentile(ad, 50)),
        "p95": float(np.percentile(ad, 95)),
        "max": float(ad.max()),
    }
    rep.mean_delta = float(delta.mean())
    rep.identical_share = float((sa == sb).mean())
    rep.same_features_share = float(
        np.mean([x["feature_hash"] == y["feature_hash"] for x, y in zip(pa, pb, strict=True)])
    )
    rep.deltas = delta
    rep.scores = (sa, sb)

    # Rankings: each business's latest score per group, both sides on the same predictions.
    latest = evaluation_frame(groups, biz, t)
    rep.groups = _group_diffs(group_table, groups[latest], biz[latest], sa[latest], sb[latest], k)

    # Offline metrics on the same outcomes, labelled from the clock the features had (as_of), as
    # in training and `streamrank report`; event_time for predictions written before as_of existed.
    lt = np.fromiter((p.get("as_of") or p["event_time"] for p in pa), dtype=np.int64, count=len(pa))
    complete = lt + horizon_ms <= conversions.log_end_ms
    rep.incomplete_labels = int((~complete).sum())
    y = np.array(
        [_count(conversions.times.get(bz), ti, horizon_ms) for bz, ti in zip(biz, lt, strict=True)], dtype=np.float64
    )
    sel = np.flatnonzero(complete)
    if len(sel):
        idx = sel[evaluation_frame(groups[sel], biz[sel], t[sel])]
        yf, gf = y[idx], groups[idx]
        for name, s, versions in ((names[0], sa, rep.versions_a), (names[1], sb, rep.versions_b)):
            m = score_metrics(yf, s[idx], gf, k)
            rep.metrics.append(ModelMetrics(name, versions, m.ndcg10, m.auc, m.capture))
        rep.random_capture = random_topk_capture(yf, gf, k)
        rep.n_examples = len(idx)
        rep.n_metric_groups = len(np.unique(gf))
        rep.n_conversions = float(yf.sum())
    return rep


def _count(times: np.ndarray | None, t: int, horizon_ms: int) -> int:
    if times is None:
        return 0
    return int(np.searchsorted(times, t + horizon_ms, "right") - np.searchsorted(times, t, "right"))


def _group_diffs(
    table: np.ndarray, groups: np.ndarray, biz: np.ndarray, sa: np.ndarray, sb: np.ndarray, k: int
) -> list[GroupDiff]:
    from scipy.stats import spearmanr

    out = []
    order = np.argsort(groups, kind="stable")
    g = groups[order]
    bounds = np.flatnonzero(np.r_[True, g[1:] != g[:-1], True])
    for lo, hi in pairwise(bounds):
        ix = order[lo:hi]
        n = len(ix)
        if n < 2:
            continue  # a group of one ranks nothing
        a, b, names = sa[ix], sb[ix], biz[ix].astype(str)
        rho = float("nan")
        if np.ptp(a) > 0 and np.ptp(b) > 0:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                rho = float(spearmanr(a, b).statistic)
        kk = min(k, n)
        # Ties broken by business id so the overlap does not depend on input order.
        top_a = set(names[np.lexsort((names, -a))[:kk]])
        top_b = set(names[np.lexsort((names, -b))[:kk]])
        out.append(GroupDiff(str(table[g[lo]]), n, rho, len(top_a & top_b) / kk))
    return out


# ----------------------------------------------------------------------------------- output
def _fmt(v: float | None, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return f"{v:.{digits}f}"


def to_markdown(rep: DiffReport, png_name: str | None = "diff.png") -> str:
    gs = rep.group_summary()
    lines = [
        f"# Prediction diff: {rep.a} vs {rep.b}",
        "",
        f"- **A** = `{rep.a}`: model {', '.join(rep.versions_a) or 'n/a'}",
        f"- **B** = `{rep.b}`: model {', '.join(rep.versions_b) or 'n/a'}",
        "",
        "## Coverage (joined on source topic, partition, offset)",
        "",
        "| predictions | A | B | both | A only | B only |",
        "|---|---:|---:|---:|---:|---:|",
        f"| count | {rep.n_a:,} | {rep.n_b:,} | {rep.both:,} | {rep.only_a:,} | {rep.only_b:,} |",
        "",
        "## Scores (B - A, on the joined predictions)",
        "",
        "| mean abs delta | p50 abs delta | p95 abs delta | max abs delta | mean delta | identical scores | identical features |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        (
            f"| {_fmt(rep.abs_delta.get('mean'))} | {_fmt(rep.abs_delta.get('p50'))} | {_fmt(rep.abs_delta.get('p95'))} | "
            f"{_fmt(rep.abs_delta.get('max'))} | {_fmt(rep.mean_delta)} | {_pct(rep.identical_share)} | {_pct(rep.same_features_share)} |"
        ),
        "",
        (
            "Scores of ranking objectives are margins: only their order within a group means something, "
            "so the rank comparisons below matter more than raw deltas."
        ),
        "",
        f"## Rankings per group (group_key x day; latest score per business; top-{rep.k})",
        "",
        "| groups (2+ businesses) | with correlation | Spearman mean | Spearman median | Spearman p10 | top-k overlap mean | identical top-k |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        (
            f"| {gs['groups']:,} | {gs['groups_with_correlation']:,} | {_fmt(gs['spearman_mean'], 3)} | {_fmt(gs['spearman_median'], 3)} | "
            f"{_fmt(gs['spearman_p10'], 3)} | {_fmt(gs['overlap_mean'], 3)} | {_pct(gs['identical_topk_share'])} |"
        ),
        "",
    ]
    worst = worst_groups(rep.groups)
    if worst:
        lines += [
            f"Groups that differ most (lowest top-{rep.k} overlap, then correlation):",
            "",
            "| group | businesses | Spearman | top-k overlap |",
            "|---|---:|---:|---:|",
        ]
        lines += [
            f"| {_cell(g.group)} | {g.businesses} | {_fmt(g.spearman, 3)} | {_fmt(g.overlap, 2)} |" for g in worst
        ]
        lines.append("")
    h = rep.label.get("horizon_ms", 0) / 3_600_000
    lines += [
        "## Offline metrics on the same outcomes",
        "",
        (
            f"Label: distinct conversions ({', '.join(rep.label.get('kinds', []))}) of the business in (event_time, event_time + {h:g} h], "
            f"from the activity log (ends {_iso(rep.label.get('log_end_ms'))}). One example per (group, business), its latest; "
            f"{rep.n_examples:,} examples in {rep.n_metric_groups:,} groups, {rep.n_conversions:,.0f} conversions; "
            f"{rep.incomplete_labels:,} joined predictions left out (horizon past the end of the log)."
        ),
        "",
        f"| model | versions | NDCG@10 | AUC | top-{rep.k} capture |",
        "|---|---|---:|---:|---:|",
    ]
    for m in rep.metrics:
        lines.append(f"| {m.name} | {', '.join(m.versions)} | {_fmt(m.ndcg10)} | {_fmt(m.auc)} | {_fmt(m.capture)} |")
    if len(rep.metrics) == 2:
        ma, mb = rep.metrics
        lines.append(
            f"| B - A | | {_fmt(mb.ndcg10 - ma.ndcg10)} | {_fmt(mb.auc - ma.auc)} | {_fmt(mb.capture - ma.capture)} |"
        )
    lines.append(f"| random | | | 0.5 | {_fmt(rep.random_capture)} |")
    if not rep.metrics:
        lines += ["", "No joined prediction has a complete label horizon: no offline metrics."]
    if png_name:
        lines += ["", f"![score deltas, score scatter, per-group agreement, metrics]({png_name})"]
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    """Group keys contain ``|``, the markdown column separator."""
    return text.replace("|", "\\|")


def _pct(v: float | None) -> str:
    return "n/a" if v is None or not math.isfinite(v) else f"{100 * v:.1f}%"


def _iso(ms: int | None) -> str:
    if ms is None or ms < 0:
        return "n/a"
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="seconds")


def plot(rep: DiffReport, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    ax = axes[0, 0]
    d = rep.deltas if rep.deltas is not None else np.zeros(0)
    ax.hist(d, bins=60, color="#4477aa")
    ax.set_title("score delta (B - A) per prediction")
    ax.set_xlabel("delta")
    ax = axes[0, 1]
    if rep.scores is not None:
        sa, sb = rep.scores
        if len(sa) > 20_000:  # a readable scatter; the sample is deterministic
            pick = np.random.default_rng(0).choice(len(sa), 20_000, replace=False)
            sa, sb = sa[pick], sb[pick]
        ax.scatter(sa, sb, s=3, alpha=0.3, color="#228833")
        lo, hi = float(min(sa.min(), sb.min())), float(max(sa.max(), sb.max()))
        ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8)
    ax.set_title("score B vs score A")
    ax.set_xlabel("score A")
    ax.set_ylabel("score B")
    ax = axes[1, 0]
    rho = [g.spearman for g in rep.groups if math.isfinite(g.spearman)]
    ov = [g.overlap for g in rep.groups]
    ax.hist([rho, ov], bins=20, range=(-1, 1), label=["Spearman", f"top-{rep.k} overlap"], color=["#aa3377", "#ccbb44"])
    ax.set_title("per-group agreement")
    ax.legend()
    ax = axes[1, 1]
    if rep.metrics:
        names = ["NDCG@10", "AUC", f"capture@{rep.k}"]
        x = np.arange(len(names))
        w = 0.8 / len(rep.metrics)
        for i, m in enumerate(rep.metrics):
            vals = [v if math.isfinite(v) else 0.0 for v in (m.ndcg10, m.auc, m.capture)]
            ax.bar(x + i * w, vals, w, label="AB"[i] if len(rep.metrics) == 2 else m.name)
        ax.axhline(rep.random_capture if math.isfinite(rep.random_capture) else 0, color="grey", lw=0.8, ls="--")
        ax.set_xticks(x + w * (len(rep.metrics) - 1) / 2, names)
        ax.set_ylim(0, 1.15)
        ax.legend(loc="upper right", ncols=2)
    ax.set_title("offline metrics (dashed: random capture)")
    fig.suptitle(f"A = {rep.a}   B = {rep.b}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_report(rep: DiffReport, out_dir: Path) -> tuple[Path, Path, str]:
    out_dir.mkdir(parents=True, exist_ok=True)
    md = to_markdown(rep)
    md_path, png_path = out_dir / "diff.md", out_dir / "diff.png"
    md_path.write_text(md, encoding="utf-8")
    plot(rep, png_path)
    (out_dir / "diff.json").write_text(json.dumps(rep.to_dict(), indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return md_path, png_path, md


def run_diff(
    cfg: Config,
    a: Source,
    b: Source,
    *,
    kinds: tuple[str, ...],
    horizon_ms: int,
    k: int = DEFAULT_K,
    start_ms: int | None = None,
    end_ms: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> DiffReport:
    say = progress or (lambda _msg: None)
    say(f"reading {a.label()}")
    pa = read_predictions(cfg, a, start_ms, end_ms)
    say(f"reading {b.label()}")
    pb = read_predictions(cfg, b, start_ms, end_ms)
    say(f"reading conversions from {cfg.activity_topic}")
    conv = read_conversions(cfg, kinds)
    return compare(pa, pb, conv, horizon_ms=horizon_ms, kinds=kinds, k=k, names=(a.label(), b.label()))


def _clean(o: Any) -> Any:
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {k: _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    return o
