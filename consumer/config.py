"""The one configuration object, read from the environment once at the entry point.

Every setting has an environment variable; command-line flags override them (see ``cli``).
Secrets (SASL password, SSL key password) are read here and never printed: ``Config.__repr__``
and ``Config.describe()`` mask them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from consumer.errors import ConfigError

SECRET_FIELDS = frozenset({"sasl_password", "ssl_password"})


# The worker's Kafka clients (consumer.io.transport).
TRANSPORTS = ("kafka-python", "confluent")
LOG_FORMATS = ("auto", "json", "text")
# What a worker serves while nothing is promoted (models.baseline); none: wait for a model.
BASELINES = ("popularity", "none")
# Delivery guarantee of the worker's outputs (consumer.runtime.checkpoint).
GUARANTEES = ("at_least_once", "exactly_once")


UNITS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def parse_duration_ms(text: str) -> int:
    """``"90s"``, ``"15m"``, ``"1h"``, ``"7d"`` (or plain milliseconds) → milliseconds."""
    t = text.strip()
    if t.isdigit() and int(t) > 0:
        return int(t)
    if len(t) < 2 or t[-1] not in UNITS or not t[:-1].isdigit() or int(t[:-1]) <= 0:
        raise ValueError(f"{text!r} is not a duration like 15m, 1h or 7d")
    return int(t[:-1]) * UNITS[t[-1]]


def parse_windows(text: str) -> tuple[tuple[str, int], ...]:
    """``"1h,24h,7d"`` → ``(("1h", 3600000), ...)``, in the order given, names as written."""
    out = []
    for part in text.split(","):
        if part.strip():
            out.append((part.strip(), parse_duration_ms(part)))
    if not out:
        raise ValueError("no windows")
    if len({n for n, _ in out}) != len(out):
        raise ValueError(f"{text!r} names a window twice")
    return tuple(out)


def _env_field(env: str, default: Any, doc: str, *, kind: type = str) -> Any:
    return field(default=default, metadata={"env": env, "doc": doc, "kind": kind})


@dataclass(frozen=True)
class Config:
    # Kafka connection
    bootstrap: str = _env_field("KAFKA_BOOTSTRAP_SERVERS", "", "Kafka bootstrap servers, host:port[,host:port]")
    client_id: str = _env_field("STREAMRANK_CLIENT_ID", "streamrank", "Kafka client.id prefix")
    security_protocol: str = _env_field(
        "KAFKA_SECURITY_PROTOCOL", "PLAINTEXT", "PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"
    )
    sasl_mechanism: str = _env_field("KAFKA_SASL_MECHANISM", "", "PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 (SASL only)")
    sasl_username: str = _env_field("KAFKA_SASL_USERNAME", "", "SASL user name")
    sasl_password: str = _env_field("KAFKA_SASL_PASSWORD", "", "SASL password (secret: never logged)")
    ssl_cafile: str = _env_field("KAFKA_SSL_CAFILE", "", "CA bundle to verify the brokers")
    ssl_certfile: str = _env_field("KAFKA_SSL_CERTFILE", "", "Client certificate (mutual TLS)")
    ssl_keyfile: str = _env_field("KAFKA_SSL_KEYFILE", "", "Client private key (mutual TLS)")
    ssl_password: str = _env_field("KAFKA_SSL_PASSWORD", "", "Password of the client key (secret: never logged)")

    # Topics
    business_topic: str = _env_field(
        "STREAMRANK_BUSINESS_TOPIC", "business-events", "Input: business profile changes (compacted)"
    )
    activity_topic: str = _env_field("STREAMRANK_ACTIVITY_TOPIC", "activity-events", "Input: user activity")
    predictions_topic: str = _env_field("STREAMRANK_PREDICTIONS_TOPIC", "predictions", "Output: predictions")
    dead_letter_topic: str = _env_field(
        "STREAMRANK_DEAD_LETTER_TOPIC", "dead-letters", "Output: records that could not be processed"
    )
    changelog_topic: str = _env_field(
        "STREAMRANK_CHANGELOG_TOPIC", "streamrank-state-changelog", "Feature-state changelog (compacted)"
    )
    partitions: int = _env_field(
        "STREAMRANK_PARTITIONS", 4, "Partitions for topics that `topics create` makes", kind=int
    )
    replication: int = _env_field(
        "STREAMRANK_REPLICATION", 1, "Replication factor for topics that `topics create` makes", kind=int
    )
    input_retention_ms: int = _env_field(
        "STREAMRANK_INPUT_RETENTION_MS",
        -1,
        "retention.ms that `topics create` gives the activity topic, the event log the trainer and replay read "
        "(-1: keep forever). Records carry their event time, so Kafka's 7-day default would delete older history "
        "minutes after it is published",
        kind=int,
    )

    # Worker
    group_id: str = _env_field("STREAMRANK_GROUP", "streamrank-worker", "Consumer group of the workers")
    batch_size: int = _env_field(
        "STREAMRANK_BATCH_SIZE", 500, "Max records per poll batch (one XGBoost call each)", kind=int
    )
    poll_timeout_ms: int = _env_field("STREAMRANK_POLL_TIMEOUT_MS", 200, "Poll timeout", kind=int)
    model_poll_s: float = _env_field(
        "STREAMRANK_MODEL_POLL_S", 5.0, "How often a worker looks for a newly promoted model", kind=float
    )
    metrics_port: int = _env_field(
        "STREAMRANK_METRICS_PORT", 0, "Port for /metrics, /healthz, /readyz (0: off)", kind=int
    )
    drift_window_s: float = _env_field(
        "STREAMRANK_DRIFT_WINDOW_S",
        900.0,
        "Seconds a drift window (streamrank_feature_psi, streamrank_score_psi) stays open once it holds "
        "STREAMRANK_DRIFT_MIN_ROWS scored rows; it closes at 200000 rows anyway",
        kind=float,
    )
    drift_min_rows: int = _env_field(
        "STREAMRANK_DRIFT_MIN_ROWS", 500, "Fewest scored rows a drift window closes with (fewer: PSI noise)", kind=int
    )
    drift_exclude: str = _env_field(
        "STREAMRANK_DRIFT_EXCLUDE",
        "age_days,hours_since_first_*,count_*_all,review_count",
        "Features never watched for drift (comma-separated shell patterns): clock features, which grow with the "
        "time the state has been folding, so their PSI measures the model's age rather than an upstream change",
    )
    log_format: str = _env_field(
        "STREAMRANK_LOG_FORMAT", "auto", "Log lines: json, text, or auto (text on a terminal, JSON otherwise)"
    )
    checkpoint_interval_ms: int = _env_field(
        "STREAMRANK_CHECKPOINT_INTERVAL_MS",
        1000,
        "Most time between checkpoints (outputs acked, state saved, offsets committed) while working off a backlog; "
        "a caught-up worker checkpoints every batch. Longer: fewer state writes, more re-processing after a crash",
        kind=int,
    )
    fetch_max_wait_ms: int = _env_field(
        "STREAMRANK_FETCH_MAX_WAIT_MS",
        20,
        "Longest a fetch waits at the broker for data. The embedded broker holds every fetch this long when any partition in it is idle",
        kind=int,
    )
    guarantee: str = _env_field(
        "STREAMRANK_GUARANTEE",
        "at_least_once",
        "at_least_once: a crash re-emits up to a checkpoint of predictions (same ids); exactly_once: each checkpoint "
        "is one Kafka transaction (outputs, changelog, input offsets), read_committed readers see every record once. "
        "Needs Apache Kafka (refused on Tansu)",
    )
    transactional_id: str = _env_field(
        "STREAMRANK_TRANSACTIONAL_ID",
        "",
        "exactly_once only: this worker's transactional.id, stable across its restarts and unique in the group "
        "(empty: STREAMRANK_GROUP-host name; set it when several workers share a host)",
    )
    transport: str = _env_field(
        "STREAMRANK_TRANSPORT",
        "kafka-python",
        "Kafka client of the worker: kafka-python, or confluent (librdkafka; pip install 'streamrank[confluent]')",
    )

    # Models and schemas
    registry_dir: str = _env_field("STREAMRANK_REGISTRY", "./registry", "Model registry directory (shared volume)")
    baseline: str = _env_field(
        "STREAMRANK_BASELINE",
        "popularity",
        "What a worker serves while no model is promoted: popularity (past conversions of STREAMRANK_CONVERSION_KINDS, "
        "model_version popularity-(feature-set version); the first promoted model replaces it through the hot swap), "
        "or none (wait for a promoted model: no predictions until then)",
    )
    schema_registry: str = _env_field(
        "STREAMRANK_SCHEMA_REGISTRY", "", "Writable schema-registry JSON file (empty: the packaged one)"
    )

    # Labels (trainer and reports)
    conversion_kinds: str = _env_field(
        "STREAMRANK_CONVERSION_KINDS", "BIZSITE_VISIT,CALL,DIRECTIONS", "Activity kinds counted as conversions"
    )
    horizon_ms: int = _env_field(
        "STREAMRANK_HORIZON_MS", 86_400_000, "Label horizon H: conversions in (t, t+H]", kind=int
    )

    # Trainer (consumer.trainer, models.buildstore)
    train_dir: str = _env_field(
        "STREAMRANK_TRAIN_DIR",
        "",
        "Trainer's working directory: its build checkpoint and example shards, so a run reads only the log "
        "after the last one (empty: STREAMRANK_REGISTRY/.train-build)",
    )
    train_workers: int = _env_field(
        "STREAMRANK_TRAIN_WORKERS", 1, "Processes building the trainer's partitions in parallel", kind=int
    )
    train_memory_mb: int = _env_field(
        "STREAMRANK_TRAIN_MEMORY_MB",
        0,
        "Training snapshots whose features exceed this many MB stay on disk and are fitted out of core "
        "(XGBoost external memory); 0: always in memory",
        kind=int,
    )
    dask_scheduler: str = _env_field(
        "STREAMRANK_DASK_SCHEDULER",
        "",
        "Build and fit on a Dask cluster: its scheduler address (tcp://host:8786), or local[:N] for a local "
        "cluster of N processes; empty: this machine (pip install 'streamrank[distributed]')",
    )
    train_window_days: int = _env_field(
        "STREAMRANK_TRAIN_WINDOW_DAYS",
        0,
        "Train and judge on the last N days of data (the state still folds the whole log); 0: all of it",
        kind=int,
    )

    # Experiments (consumer.pipeline.arms)
    arms: str = _env_field(
        "STREAMRANK_ARMS",
        "",
        "Experiment arms name:model:weight,... (model: a version, promoted or random); empty: one promoted arm",
    )
    holdout: float = _env_field(
        "STREAMRANK_HOLDOUT",
        0.0,
        "Share of businesses held out (scored to the hold-out topic, never served)",
        kind=float,
    )
    arm_salt: str = _env_field(
        "STREAMRANK_ARM_SALT", "streamrank", "Salt of the business-to-arm hash (a new salt is a new assignment)"
    )
    shadow_model: str = _env_field(
        "STREAMRANK_SHADOW_MODEL",
        "",
        "Shadow model version (or promoted) scoring everything to the shadow topic; empty: none",
    )
    holdout_topic: str = _env_field(
        "STREAMRANK_HOLDOUT_TOPIC", "predictions-holdout", "Output: predictions of hold-out businesses"
    )
    shadow_topic: str = _env_field(
        "STREAMRANK_SHADOW_TOPIC", "predictions-shadow", "Output: predictions of the shadow model"
    )

    # Business-metric monitor (consumer.monitor, `streamrank monitor`)
    monitor_group: str = _env_field(
        "STREAMRANK_MONITOR_GROUP",
        "streamrank-monitor",
        "Consumer group the monitor commits its positions under (lag tools see it; it reads every partition itself)",
    )
    monitor_windows: str = _env_field(
        "STREAMRANK_MONITOR_WINDOWS", "1h,24h,7d", "Sliding event-time windows of the monitor's metrics (s, m, h, d)"
    )
    monitor_buckets: int = _env_field(
        "STREAMRANK_MONITOR_BUCKETS",
        24,
        "Buckets per monitor window: memory, and how smoothly a window slides",
        kind=int,
    )
    monitor_top_k: int = _env_field(
        "STREAMRANK_MONITOR_TOP_K", 3, "k of the monitor's online top-k capture (report's default too)", kind=int
    )
    monitor_top_markets: int = _env_field(
        "STREAMRANK_MONITOR_TOP_MARKETS",
        20,
        "Markets the monitor labels by name (most conversions in its largest window); the rest are `other`",
        kind=int,
    )
    monitor_settle_ms: int = _env_field(
        "STREAMRANK_MONITOR_SETTLE_MS",
        60_000,
        "Event time the monitor waits behind its slowest partition before it counts a conversion (predictions "
        "published after that for earlier events are applied late)",
        kind=int,
    )
    monitor_refresh_s: float = _env_field(
        "STREAMRANK_MONITOR_REFRESH_S", 15.0, "How often the monitor recomputes its metrics", kind=float
    )

    def __repr__(self) -> str:
        return f"Config({self.describe()})"

    def describe(self) -> dict[str, Any]:
        """All settings, secrets masked: safe to log."""
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = "***" if f.name in SECRET_FIELDS and v else v
        return out

    def with_overrides(self, **overrides: Any) -> Config:
        """Apply command-line flags; ``None`` means "not given"."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

    @property
    def input_topics(self) -> tuple[str, str]:
        return (self.business_topic, self.activity_topic)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Config:
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            name = f.metadata["env"]
            if name not in env:
                continue
            raw = env[name]
            kind = f.metadata["kind"]
            try:
                values[f.name] = kind(raw)
            except ValueError as exc:
                raise ConfigError(f"{name}={raw!r} is not a valid {kind.__name__}") from exc
        cfg = cls(**values)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        if self.partitions < 1 or self.replication < 1:
            raise ConfigError("STREAMRANK_PARTITIONS and STREAMRANK_REPLICATION must be >= 1")
        if self.batch_size < 1:
            raise ConfigError("STREAMRANK_BATCH_SIZE must be >= 1")
        if self.security_protocol not in ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"):
            raise ConfigError(
                f"KAFKA_SECURITY_PROTOCOL={self.security_protocol!r} is not one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL"
            )
        if self.security_protocol.startswith("SASL") and not self.sasl_mechanism:
            raise ConfigError("KAFKA_SASL_MECHANISM is required with a SASL security protocol")
        if self.fetch_max_wait_ms < 0:
            raise ConfigError("STREAMRANK_FETCH_MAX_WAIT_MS must be >= 0")
        if self.drift_window_s < 0 or not 1 <= self.drift_min_rows <= 200_000:
            raise ConfigError("STREAMRANK_DRIFT_WINDOW_S must be >= 0, STREAMRANK_DRIFT_MIN_ROWS in 1..200000")
        if self.checkpoint_interval_ms < 0:
            raise ConfigError("STREAMRANK_CHECKPOINT_INTERVAL_MS must be >= 0")
        if self.transport not in TRANSPORTS:
            raise ConfigError(f"STREAMRANK_TRANSPORT={self.transport!r} is not one of {', '.join(TRANSPORTS)}")
        if self.log_format not in LOG_FORMATS:
            raise ConfigError(f"STREAMRANK_LOG_FORMAT={self.log_format!r} is not one of {', '.join(LOG_FORMATS)}")
        if self.guarantee not in GUARANTEES:
            raise ConfigError(f"STREAMRANK_GUARANTEE={self.guarantee!r} is not one of {', '.join(GUARANTEES)}")
        if self.baseline not in BASELINES:
            raise ConfigError(f"STREAMRANK_BASELINE={self.baseline!r} is not one of {', '.join(BASELINES)}")
        if self.horizon_ms <= 0:
            raise ConfigError("STREAMRANK_HORIZON_MS must be > 0")
        local = self.dask_scheduler.partition(":")
        if local[0] == "local" and local[2] and not local[2].isdigit():
            raise ConfigError(f"STREAMRANK_DASK_SCHEDULER={self.dask_scheduler!r}: local:N needs a number of workers")
        if self.train_workers < 1 or min(self.train_window_days, self.train_memory_mb) < 0:
            raise ConfigError("STREAMRANK_TRAIN_WORKERS must be >= 1, STREAMRANK_TRAIN_WINDOW_DAYS and _MEMORY_MB >= 0")
        if min(self.monitor_buckets, self.monitor_top_k, self.monitor_top_markets) < 1 or self.monitor_settle_ms < 0:
            raise ConfigError(
                "STREAMRANK_MONITOR_BUCKETS, _TOP_K and _TOP_MARKETS must be >= 1, STREAMRANK_MONITOR_SETTLE_MS >= 0"
            )
        if self.monitor_refresh_s <= 0:
            raise ConfigError("STREAMRANK_MONITOR_REFRESH_S must be > 0")
        try:
            parse_windows(self.monitor_windows)
        except ValueError as exc:
            raise ConfigError(f"STREAMRANK_MONITOR_WINDOWS={self.monitor_windows!r}: {exc}") from exc
        from consumer.pipeline.arms import ArmConfig

        ArmConfig.from_config(self)  # raises ConfigError naming the bad setting


def env_settings() -> list[tuple[str, str, Any]]:
    """(variable, description, default) for every setting: the README table is built from this."""
    return [(f.metadata["env"], f.metadata["doc"], f.default) for f in fields(Config)]


def markdown_table() -> str:
    """The configuration table of the README (kept in sync by a test)."""
    rows = ["| Variable | Default | Meaning |", "|---|---|---|"]
    for env, doc, default in env_settings():
        shown = f"`{default}`" if default not in ("", None) else "(empty)"
        rows.append(f"| `{env}` | {shown} | {doc} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table())


def train_dir(cfg: Config) -> str:
    """Where the trainer keeps its build (``STREAMRANK_TRAIN_DIR``, default inside the registry,
    which lists only version directories)."""
    return cfg.train_dir or os.path.join(cfg.registry_dir, ".train-build")


def drift_settings(cfg: Config) -> dict[str, Any]:
    """The worker's drift watch settings (consumer.runtime.drift.DriftWatch)."""
    exclude = tuple(p.strip() for p in cfg.drift_exclude.split(",") if p.strip())
    return {"window_s": cfg.drift_window_s, "min_rows": cfg.drift_min_rows, "exclude": exclude}


def label_config(cfg: Config) -> Any:
    """The label definition (``models.dataset.LabelConfig``) these settings describe."""
    from models.dataset import LabelConfig

    kinds = tuple(k.strip() for k in cfg.conversion_kinds.split(",") if k.strip())
    try:
        return LabelConfig(kinds=kinds, horizon_ms=cfg.horizon_ms)
    except ValueError as exc:
        raise ConfigError(
            f"conversion kinds {cfg.conversion_kinds!r} (--conversion-kinds or STREAMRANK_CONVERSION_KINDS): {exc}"
        ) from exc
