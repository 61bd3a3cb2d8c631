"""The long-running worker: the Kafka loop around ``consumer.pipeline``.

Reading order: ``worker`` (poll → decode → order → process → score → publish → checkpoint, and the
one error policy) → ``sink`` (predictions and dead letters out, delivery confirmed) → ``rebuild``
(state rebuilt from the input topics when a changelog was written by another feature set) →
``modelwatch`` (the served model and its hot swap) → ``metrics`` and ``health`` (Prometheus series,
``/healthz``, ``/readyz``).
"""
