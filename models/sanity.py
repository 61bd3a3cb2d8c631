"""The hand-written sanity set: business histories whose relative scores any sane model gets right.

Each ``models/sanity/*.json`` file is one case: a few businesses in one city/category, their
histories written as *activity patterns* (``per_day`` events of a kind, evenly spaced between
``from_days_ago`` and ``to_days_ago`` before ``as_of_ms``) plus business events (a ``CREATED``
``created_days_ago``, optional ``CLOSED``/``UPDATED``...), and the expected order at ``as_of_ms``:
``"expect": [["high", ">", "medium"], ...]`` (strict), optionally ``"expect_scorable"``. A
``"trigger": "PAGE_VIEW"`` (in ``defaults`` or per business; ``false`` to opt out) adds the
activity event that makes the moment a scoring moment, one minute before ``as_of``: the worker only
scores on activity, so rows without any recent event would be out of the training distribution.

Patterns expand deterministically into real :class:`BusinessEvent`/:class:`ActivityEvent` objects,
folded with the production ``features.state.update`` and read with ``features.extract.extract``, so
the check exercises the same code path as the worker.

:func:`check_sanity` returns the list of failures (empty: pass). Comparisons are strict, so a model
that learned nothing (constant scores, e.g. one trained on shuffled labels) fails, and a random
order violates at least one of the chained expectations with high probability.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from features.events import ActivityEvent, BusinessEvent
from features.extract import extract
from features.spec import DEFAULT_SPEC, FeatureSpec
from features.state import BusinessState, is_scorable, update

DAY_MS = 86_400_000
TRIGGER_BEFORE_MS = 60_000
SANITY_DIR = Path(__file__).resolve().parent / "sanity"
_OPS = {">": lambda a, b: a > b, "<": lambda a, b: a < b, ">=": lambda a, b: a >= b, "<=": lambda a, b: a <= b}


class Scorer(Protocol):
    spec: FeatureSpec

    def score(self, X: np.ndarray) -> np.ndarray: ...


DEFAULT_LABEL_KINDS = ("BIZSITE_VISIT", "CALL", "DIRECTIONS")


@dataclass(frozen=True)
class SanityCase:
    name: str
    description: str
    as_of_ms: int
    histories: dict[str, list[BusinessEvent | ActivityEvent]]  # local id -> events in time order
    expect: tuple[tuple[str, str, str], ...]
    expect_scorable: dict[str, bool]
    # The conversion kinds (label) this case's expectations assume; a case only judges models
    # trained on that label. Cases without the field assume the default label.
    labels: frozenset[str] = frozenset(DEFAULT_LABEL_KINDS)


def load_cases(directory: str | Path | None = None) -> list[SanityCase]:
    """All cases of ``directory`` (default: the packaged ``models/sanity``), by file name."""
    d = Path(directory) if directory is not None else SANITY_DIR
    files = sorted(d.glob("*.json"))
    if not files:
        raise FileNotFoundError(f"no sanity cases in {d}")
    return [parse_case(json.loads(f.read_text(encoding="utf-8")), f.stem) for f in files]


def parse_case(doc: dict[str, Any], default_name: str = "case") -> SanityCase:
    name = doc.get("name", default_name)
    as_of = int(doc["as_of_ms"])
    defaults = doc.get("defaults", {})
    histories: dict[str, list] = {}
    for b in doc["businesses"]:
        local = b["id"]
        if local in histories:
            raise ValueError(f"sanity case {name}: duplicate business id {local!r}")
        histories[local] = _history(name, as_of, {**defaults, **b})
    expect = tuple((str(a), str(op), str(c)) for a, op, c in doc.get("expect", []))
    for a, op, c in expect:
        if op not in _OPS or a not in histories or c not in histories:
            raise ValueError(f"sanity case {name}: bad expectation {[a, op, c]}")
    scorable = {str(k): bool(v) for k, v in doc.get("expect_scorable", {}).items()}
    labels = frozenset(doc.get("labels", DEFAULT_LABEL_KINDS))
    return SanityCase(name, doc.get("description", ""), as_of, histories, expect, scorable, labels)


def _history(case: str, as_of: int, b: dict[str, Any]) -> list[BusinessEvent | ActivityEvent]:
    bid = f"sanity-{case}-{b['id']}"
    profile = {
        "name": b.get("name", f"Sanity {b['id']}"),
        "city": b["city"],
        "state": b["state"],
        "categories": tuple(b["categories"]),
        "latitude": float(b["latitude"]),
        "longitude": float(b["longitude"]),
        "price_range": b.get("price_range"),
        "is_open": True,
    }
    events: list[tuple[int, int, Any]] = []
    n = 0

    def eid() -> str:
        nonlocal n
        n += 1
        return f"{bid}-{n}"

    created = as_of - int(round(float(b.get("created_days_ago", 90)) * DAY_MS))
    events.append(
        (created, 0, BusinessEvent(event_id=eid(), business_id=bid, event_time=created, kind="CREATED", **profile))
    )
    for be in b.get("business_events", []):
        t = as_of - int(round(float(be["days_ago"]) * DAY_MS))
        fields = {**profile, **{k: v for k, v in be.items() if k in profile}}
        fields["categories"] = tuple(fields["categories"])
        events.append((t, 0, BusinessEvent(event_id=eid(), business_id=bid, event_time=t, kind=be["kind"], **fields)))
    users = int(b.get("users", 0))
    u = 0
    for pat in b.get("activity", []):
        lo = as_of - int(round(float(pat["from_days_ago"]) * DAY_MS))
        hi = as_of - int(round(float(pat["to_days_ago"]) * DAY_MS))
        count = int(round(float(pat["per_day"]) * (hi - lo) / DAY_MS))
        for i in range(count):
            t = lo + int((i + 0.5) * (hi - lo) / count)
            user = None
            if users:
                user = f"{bid}-u{u % users}"
                u += 1
            events.append(
                (
                    t,
                    1,
                    ActivityEvent(
                        event_id=eid(),
                        business_id=bid,
                        user_id=user,
                        event_time=t,
                        kind=pat["kind"],
                        search_id=None,
                        rating=pat.get("rating") if pat["kind"] == "REVIEW" else None,
                    ),
                )
            )
    trigger = b.get("trigger")
    if trigger:
        # The activity event that makes this a scoring moment, a minute before as_of (the worker
        # scores on activity, so a business with no event at all is never scored in production).
        t = as_of - TRIGGER_BEFORE_MS
        events.append(
            (
                t,
                1,
                ActivityEvent(
                    event_id=eid(),
                    business_id=bid,
                    user_id=f"{bid}-trigger",
                    event_time=t,
                    kind=str(trigger),
                    search_id=None,
                    rating=None,
                ),
            )
        )
    events.sort(key=lambda x: (x[0], x[1]))
    out = [e for _, _, e in events]
    for e in out:
        e.validate()
    return out


def case_states(case: SanityCase, spec: FeatureSpec = DEFAULT_SPEC) -> dict[str, BusinessState]:
    states: dict[str, BusinessState] = {}
    for local, events in case.histories.items():
        st: BusinessState | None = None
        for e in events:
            st = update(st, e, spec)
        if st is not None:  # a case lists at least one event per business
            states[local] = st
    return states


def case_matrix(case: SanityCase, spec: FeatureSpec = DEFAULT_SPEC) -> tuple[list[str], np.ndarray, dict[str, bool]]:
    """Local ids, their feature rows at ``as_of`` (float32), and whether each is scorable."""
    states = case_states(case, spec)
    ids = list(states)
    X = np.array([extract(states[i], case.as_of_ms, spec) for i in ids], dtype=np.float32)
    return ids, X, {i: is_scorable(states[i]) for i in ids}


def check_sanity(
    model: Scorer,
    cases: Sequence[SanityCase] | None = None,
    spec: FeatureSpec | None = None,
    label_kinds: Sequence[str] | None = None,
) -> list[str]:
    """Failures of ``model`` on the sanity set (empty list: it passes).

    ``model`` needs ``score(X)`` and (unless ``spec`` is given) ``spec``. Only the cases written
    for the model's label (``label_kinds``, else the label recorded in ``model.metadata``, else
    the default) judge it; a label no case covers is a failure, never a vacuous pass.
    """
    spec = spec if spec is not None else getattr(model, "spec", DEFAULT_SPEC)
    if label_kinds is None:
        label_kinds = (getattr(model, "metadata", None) or {}).get("label", {}).get("kinds") or DEFAULT_LABEL_KINDS
    wanted = frozenset(label_kinds)
    all_cases = load_cases() if cases is None else cases
    cases = [c for c in all_cases if c.labels == wanted]
    if not cases:
        return [f"no sanity case is written for the label {sorted(wanted)}: add one to models/sanity/"]
    failures: list[str] = []
    for case in cases:
        ids, X, scorable = case_matrix(case, spec)
        try:
            scores = np.asarray(model.score(X), dtype=np.float64).reshape(-1)
        except Exception as exc:  # a model that cannot score the set fails it
            failures.append(f"{case.name}: scoring failed: {type(exc).__name__}: {exc}")
            continue
        s = dict(zip(ids, scores.tolist(), strict=True))
        for i, v in s.items():
            if not math.isfinite(v):
                failures.append(f"{case.name}: score of {i} is {v}")
        for a, op, b in case.expect:
            if not _OPS[op](s[a], s[b]):
                failures.append(f"{case.name}: expected {a} {op} {b}, got {s[a]:.6g} vs {s[b]:.6g}")
        for i, want in case.expect_scorable.items():
            if scorable.get(i) != want:
                failures.append(f"{case.name}: expected {i} {'' if want else 'not '}scorable")
    return failures
