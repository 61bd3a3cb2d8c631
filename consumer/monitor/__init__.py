"""``streamrank monitor``: the business metrics of the served rankings, continuously (issue 22).

It reads the prediction topics (serving, hold-out, shadow) and the activity topic, and keeps per
arm and market, over sliding event-time windows (``STREAMRANK_MONITOR_WINDOWS``): online top-k
capture next to the popularity ranking's, conversions per business per day and the uplift vs the
hold-out (``consumer.tools.report``'s estimator, imported), the prediction-to-conversion delay and
the coverage. Reading order:

``windows`` (bucketed counters over sliding event-time windows: bounded memory) →
``core`` (no Kafka: the records in event-time order, the latest score per business as a reader of
the predictions topic ranks them, what each conversion counts; ``MonitorCore.snapshot()`` gives
every figure) →
``exposition`` (the snapshot as Prometheus metrics with bounded labels: top markets plus
``other`` and ``all``) →
``loop`` (the Kafka shell: assign every partition, rebuild from the topics on start, poll, decode,
feed the core, serve ``/metrics``, ``/healthz``, ``/readyz`` through the worker's ``MetricsServer``).

Restart: the windows are rebuilt from the topics on start (every partition read from its
beginning: the prediction topics are bounded by their retention, the activity topic is read whole,
as ``train`` reads it, so popularity is lifetime conversions); nothing is stored elsewhere.
"""
