"""The worker's start-up steps that need no broker."""

import numpy as np

from consumer.config import Config
from consumer.runtime.startup import warm_up
from features.spec import DEFAULT_SPEC


class ZeroScorer:
    version = "vwarm"
    feature_set_version = DEFAULT_SPEC.version

    def score(self, X):
        return np.zeros(len(X))


def test_the_warm_up_runs_every_step_of_the_hot_path_on_its_made_up_business():
    """``warm_up`` must reach the kernels (bulk decode, fold, features, ids, encoding): its
    business is scored, in a scratch store, and a second warm-up finds them loaded."""
    seconds, predictions = warm_up(Config(), DEFAULT_SPEC, ZeroScorer())
    assert predictions == 2 and seconds > 0
