"""Experiment arms: which model scores a business, and where its predictions go.

Configuration (``Config``; env in brackets):

* ``arms`` [STREAMRANK_ARMS]: ``name:model:weight,...``; model is a registry version, ``promoted``
  (follows the promotion pointer, hot-swapped) or ``random`` (a score derived from a hash of the
  business id: a control arm for experiments, it ranks businesses in a fixed arbitrary order).
  Empty: one arm ``default`` on the promoted model (the worker's behaviour without experiments).
* ``holdout`` [STREAMRANK_HOLDOUT]: fraction of businesses held out. They are scored (with the
  promoted model) but their predictions go to ``holdout_topic``, never to the serving topic.
* ``arm_salt`` [STREAMRANK_ARM_SALT]: a new salt is a new experiment (a fresh assignment).
* ``shadow_model`` [STREAMRANK_SHADOW_MODEL]: a version (or ``promoted``) that scores every row
  and writes only to ``shadow_topic`` with ``arm="shadow"``; empty or ``none``: off.

Assignment. ``bucket(b) = blake2b(salt | b) mod 10 000``: a pure function of (salt, business id),
so it is the same on every worker, after every restart, in every replay. Buckets
``[0, holdout x 10 000)`` are the hold-out. Every bucket has an arm, chosen by *weighted rendezvous
hashing*: ``arm(k) = argmax_i  -w_i / ln(u_i(k))`` with ``u_i(k) = blake2b(salt | k | name_i)``
mapped into (0, 1); arm i then gets a share ``w_i / sum(w)`` of the buckets (in expectation; the
table of 10 000 is fixed once per configuration). A hold-out bucket's arm is simply not used.

What "moves only the buckets it must" means here, and why it holds:

1. *Weights.* Changing arm i's weight (others unchanged) moves a bucket only into or out of arm i:
   never from arm j to arm l with j, l != i. Proof: arm j's score in bucket k depends on w_j and
   the hash alone; only arm i's scores change; if neither the old nor the new argmax is i, the
   argmax is over the same, unchanged scores, hence the same arm.
2. *Adding / removing an arm* moves buckets only into the new arm / only out of the removed one
   (same argument: the other arms' scores do not change).
3. *Hold-out.* The arm of a bucket does not depend on the hold-out fraction, so changing it from
   h to h' moves exactly the buckets in ``[min, max)`` of the two edges, between the hold-out and
   their own arm; nothing moves between arms.

A contiguous layout (arm i owns ``[B_{i-1}, B_i)``) cannot give 1: raising one weight shifts every
later boundary, so businesses move between arms whose weights did not change.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from hashlib import blake2b
from typing import Any

import numpy as np

from consumer.errors import ConfigError

N_BUCKETS = 10_000
HOLDOUT = "holdout"
SHADOW = "shadow"
DEFAULT_ARM = "default"
PROMOTED = "promoted"
RANDOM = "random"


@dataclass(frozen=True)
class ArmSpec:
    name: str
    model: str  # a version, PROMOTED or RANDOM
    weight: float


@dataclass(frozen=True)
class ArmConfig:
    arms: tuple[ArmSpec, ...]
    holdout: float = 0.0
    salt: str = "streamrank"
    shadow: str | None = None  # a version, PROMOTED, or None

    @property
    def is_default(self) -> bool:
        """One promoted arm named ``default``, no hold-out, no shadow: the worker's classic behaviour."""
        return (
            len(self.arms) == 1
            and self.arms[0] == ArmSpec(DEFAULT_ARM, PROMOTED, self.arms[0].weight)
            and self.holdout == 0.0
            and self.shadow is None
        )

    @classmethod
    def parse(cls, arms: str, holdout: float = 0.0, salt: str = "streamrank", shadow: str = "") -> ArmConfig:
        specs: list[ArmSpec] = []
        for part in (p.strip() for p in arms.split(",")):
            if not part:
                continue
            fields = part.split(":")
            if len(fields) != 3:
                raise ConfigError(f"STREAMRANK_ARMS: {part!r} is not name:model:weight")
            name, model, w = (f.strip() for f in fields)
            try:
                weight = float(w)
            except ValueError as exc:
                raise ConfigError(f"STREAMRANK_ARMS: weight {w!r} of arm {name!r} is not a number") from exc
            if not name or name in (HOLDOUT, SHADOW) or not model:
                raise ConfigError(
                    f"STREAMRANK_ARMS: arm {part!r}: name must be non-empty and not {HOLDOUT!r} or {SHADOW!r}"
                )
            if not (weight > 0 and math.isfinite(weight)):
                raise ConfigError(f"STREAMRANK_ARMS: arm {name!r} has weight {w}: must be > 0")
            specs.append(ArmSpec(name, model, weight))
        if not specs:
            specs = [ArmSpec(DEFAULT_ARM, PROMOTED, 1.0)]
        if len({s.name for s in specs}) != len(specs):
            raise ConfigError(f"STREAMRANK_ARMS: duplicate arm names in {arms!r}")
        if not 0.0 <= holdout < 1.0:
            raise ConfigError(f"STREAMRANK_HOLDOUT={holdout}: must be in [0, 1)")
        sh = shadow.strip() or None
        if sh is not None and sh.lower() == "none":
            sh = None
        return cls(tuple(specs), float(holdout), salt, sh)

    @classmethod
    def from_config(cls, cfg: Any) -> ArmConfig:
        return cls.parse(cfg.arms, cfg.holdout, cfg.arm_salt, cfg.shadow_model)


def _unit(data: bytes) -> float:
    """A hash mapped into the open interval (0, 1)."""
    x = int.from_bytes(blake2b(data, digest_size=8).digest(), "big")
    return (x + 0.5) / 2.0**64


def bucket(salt: str, business_id: str) -> int:
    return int.from_bytes(blake2b(f"{salt}\x1f{business_id}".encode(), digest_size=8).digest(), "big") % N_BUCKETS


def arm_table(salt: str, arms: tuple[ArmSpec, ...] | list[ArmSpec]) -> np.ndarray:
    """Arm index of every bucket (weighted rendezvous hashing; see the module docstring)."""
    scores = np.empty((len(arms), N_BUCKETS))
    for i, a in enumerate(arms):
        u = np.array([_unit(f"{salt}\x1f{k}\x1f{a.name}".encode()) for k in range(N_BUCKETS)])
        scores[i] = -a.weight / np.log(u)
    return np.argmax(scores, axis=0).astype(np.int32)


class Assigner:
    """business id → arm name or HOLDOUT; memoised (a business keeps its arm for the config's life)."""

    def __init__(self, config: ArmConfig):
        self.config = config
        self.table = arm_table(config.salt, config.arms)
        self.holdout_buckets = int(round(config.holdout * N_BUCKETS))
        self._names = [a.name for a in config.arms]
        self._memo: dict[str, str] = {}

    def bucket(self, business_id: str) -> int:
        return bucket(self.config.salt, business_id)

    def __call__(self, business_id: str) -> str:
        arm = self._memo.get(business_id)
        if arm is None:
            k = bucket(self.config.salt, business_id)
            arm = HOLDOUT if k < self.holdout_buckets else self._names[self.table[k]]
            if len(self._memo) < 1_000_000:
                self._memo[business_id] = arm
        return arm


class RandomScorer:
    """The ``random`` arm model: a fixed pseudo-random score per business (no features used)."""

    version = RANDOM
    needs_ids = True

    def __init__(self, feature_set_version: str, salt: str = "random"):
        self.feature_set_version = feature_set_version
        self.salt = salt

    def score_ids(self, X: np.ndarray, business_ids: list[str]) -> np.ndarray:
        return np.array([_unit(f"{self.salt}\x1f{b}".encode()) for b in business_ids], dtype=np.float64)

    def score(self, X: np.ndarray) -> np.ndarray:  # without ids there is nothing to hash: a constant
        return np.full(len(X), 0.5)


def score_rows(scorer: Any, X: np.ndarray, business_ids: list[str]) -> np.ndarray:
    if getattr(scorer, "needs_ids", False):
        return scorer.score_ids(X, business_ids)
    return scorer.score(X)


class Routing:
    """What ``consumer.pipeline.process.process`` needs for one batch: arm of a business, scorer per arm
    (hold-out rows use the promoted model), and the shadow scorer."""

    def __init__(self, assign: Callable[[str], str], scorers: dict[str, Any], shadow: Any | None):
        self.assign = assign
        self.scorers = scorers
        self.shadow = shadow


class ArmModels:
    """The models of every arm. ``promoted`` arms (and the hold-out) follow the worker's
    ``ModelHolder``; fixed versions are loaded and validated once, at start."""

    def __init__(self, config: ArmConfig, registry: Any):
        self.config = config
        self.registry = registry
        self.assign = Assigner(config)
        self._fixed: dict[str, Any] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, cfg: Any, registry: Any) -> ArmModels | None:
        """None for the default configuration: the worker then takes its classic path."""
        config = ArmConfig.from_config(cfg)
        return None if config.is_default else cls(config, registry)

    def _model(self, name: str, promoted: Any) -> Any:
        if name == PROMOTED:
            return promoted
        if name == RANDOM:
            return RandomScorer(promoted.feature_set_version, self.config.salt)
        with self._lock:
            m = self._fixed.get(name)
            if m is None:
                try:
                    m = self.registry.load(name)
                    m.validate()
                except Exception as exc:
                    raise ConfigError(f"arm model {name!r} cannot be served: {exc}") from exc
                self._fixed[name] = m
        return m

    def load_fixed(self) -> None:
        """Load and validate every arm (and shadow) on a fixed version now: a worker refuses to
        start with one clear line rather than failing at its first batch."""
        names = [a.model for a in self.config.arms]
        if self.config.shadow:
            names.append(self.config.shadow)
        for name in names:
            if name not in (PROMOTED, RANDOM):
                self._model(name, None)

    def bind(self, promoted: Any) -> Routing:
        scorers = {a.name: self._model(a.model, promoted) for a in self.config.arms}
        scorers[HOLDOUT] = promoted
        shadow = self._model(self.config.shadow, promoted) if self.config.shadow else None
        return Routing(self.assign, scorers, shadow)
