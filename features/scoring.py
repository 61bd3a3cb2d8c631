"""The scoring moment: which events produce a prediction, and as of when.

One rule, used by the worker (``consumer.pipeline.process``) and the trainer (``models.dataset``), so
training examples are taken exactly where serving scores:

* a business event updates the profile and is never scored (``BUSINESS_UPDATE``);
* an activity event is folded; it is then scored, as of the business's activity clock
  (``max_event_ms``, so features never use anything later), unless it was a duplicate
  (``DUPLICATE``), arrived later than the allowed lateness (``LATE``), or its business is unknown
  or closed (``NOT_SCORABLE``).

These outcome names are the documented non-scoring reasons; every input record ends as a
prediction, a dead letter, or one of them.
"""

from __future__ import annotations

from features.events import ActivityEvent, BusinessEvent
from features.spec import DEFAULT_SPEC, FeatureSpec
from features.state import BusinessState, is_scorable, update

SCORED = "scored"
BUSINESS_UPDATE = "business_update"
NOT_SCORABLE = "not_scorable"
DUPLICATE = "duplicate"
LATE = "late"
OUTCOMES = (SCORED, BUSINESS_UPDATE, NOT_SCORABLE, DUPLICATE, LATE)


def apply(
    state: BusinessState | None, event: ActivityEvent | BusinessEvent, spec: FeatureSpec = DEFAULT_SPEC
) -> tuple[BusinessState, str]:
    """Fold ``event`` (mutating ``state`` like :func:`features.state.update`) and say what it was."""
    if type(event) is BusinessEvent:
        return update(state, event, spec), BUSINESS_UPDATE
    if state is None:
        late0 = accepted0 = 0
    else:
        late0 = state.late_dropped
        accepted0 = sum(state.totals)
    state = update(state, event, spec)
    if state.late_dropped != late0:
        return state, LATE
    if sum(state.totals) == accepted0:
        return state, DUPLICATE
    if not is_scorable(state):
        return state, NOT_SCORABLE
    return state, SCORED


def as_of(state: BusinessState) -> int:
    """The time a score is made as of: the business's activity clock."""
    return state.max_event_ms
