"""The long-running worker: the Kafka loop around ``consumer.pipeline``.

Reading order: ``worker`` (the loop: poll → decode → order → process → score → publish →
checkpoint, in one short function, and the one error policy) → ``inbox`` (records received, the
per-partition head merge, release in order) → ``isolation`` (the broker-free core, re-run record by
record after a failure) → ``outputs`` (predictions and dead letters out) → ``checkpoint`` (sink
flush → changelog → commit, and why that order is safe) → ``sink`` (the producer, delivery
confirmed) → ``partitions`` (assignment, restore, rebuild, the rewinds) and ``rebalance`` (the
group's callbacks) → ``rebuild`` (state rebuilt from the input topics when a changelog was written
by another feature set) → ``idle`` (stalled fetches, exit when idle) → ``startup`` (topics, the
first model, gc) → ``stats`` → ``modelwatch`` (the served model and its hot swap) → ``metrics``
and ``health`` (Prometheus series, ``/healthz``, ``/readyz``).

Tools use the worker through its public hooks only (``Worker.ready``, ``Worker(on_batch=...)``,
``WorkerMetrics.stage_seconds_total``); nothing here imports ``consumer.tools``.
"""
